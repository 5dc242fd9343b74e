//! Layer names from ONNX node names, so a `config_list` written with the source
//! framework's names selects the same layers.
//!
//! The rule (also in the crate docs and `docs/ARCHITECTURE.md`):
//!
//! - **PyTorch** (`torch.onnx.export`) names a node by its module scope, each segment the
//!   module's full dotted name: `/features/features.0/Conv`. The layer is the segment
//!   before the op: `features.0`. A weighted op whose weight initializer is called
//!   `<module>.weight` (the state-dict name, which the dynamo exporter keeps) takes
//!   `<module>` instead, so both exporters give the same names. The dynamo exporter
//!   names nodes `node_Conv_3` but records the module path in the node's
//!   `pkg.torch.onnx.name_scopes` metadata (`['', 'stem', 'stem.2', 'hardtanh']`): the
//!   entry before the op, `stem.2`, is the layer.
//! - **tf2onnx** names a node `<model>/<layer>/<tf op>...` (`functional_1/conv1_1/
//!   convolution`): the layer is the second segment. Keras 3 traces every layer under a
//!   `<layer>_<n>` scope; when every node's layer segment carries such a suffix it is
//!   removed (`conv1_1` → `conv1`). tf2onnx folds a batch norm into the convolution
//!   before it and names the result after the batch norm, and leaves a depthwise conv
//!   unscoped (`Conv__146`), so a weighted op takes the layer of its weight or bias
//!   tensor (`functional_1/conv1_1/convolution/merged_input:0`) when one has a scope.
//! - Anything else (other producers, single-segment names) keeps the node name, and an
//!   unnamed node is `<op>_<index>` (`conv_3`).
//!
//! Names stay unique: a second node mapping to a taken name (a Keras Conv2D's fused
//! ReLU, a PyTorch module called twice) becomes `<name>.<op>` (`conv1.relu`), then
//! `<name>.<op>_1`, ...

use std::collections::HashSet;

/// Which exporter wrote the file, from `ModelProto.producer_name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Producer {
    PyTorch,
    Tf2Onnx,
    Other,
}

impl Producer {
    pub fn from_name(name: &str) -> Self {
        match name {
            "pytorch" => Producer::PyTorch,
            "tf2onnx" => Producer::Tf2Onnx,
            _ => Producer::Other,
        }
    }
}

fn segments(name: &str) -> Vec<&str> {
    name.split('/').filter(|s| !s.is_empty()).collect()
}

/// Removes one `_<digits>` suffix.
fn strip_trace_suffix(s: &str) -> &str {
    match s.rsplit_once('_') {
        Some((head, tail))
            if !head.is_empty() && !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) =>
        {
            head
        }
        _ => s,
    }
}

pub struct Namer {
    producer: Producer,
    /// Keras 3's `_<n>` tracing suffix is on every layer segment.
    strip_suffix: bool,
    used: HashSet<String>,
}

impl Namer {
    /// `node_names`: every node's name, to detect Keras 3's tracing suffix.
    pub fn new<'a>(producer: Producer, node_names: impl Iterator<Item = &'a str>) -> Self {
        let mut layer_segments = node_names
            .map(segments)
            .filter(|s| s.len() >= 3)
            .map(|s| s[1].to_string())
            .peekable();
        let strip_suffix = producer == Producer::Tf2Onnx
            && layer_segments.peek().is_some()
            && layer_segments.all(|s| strip_trace_suffix(&s) != s);
        Self {
            producer,
            strip_suffix,
            used: HashSet::new(),
        }
    }

    /// The layer a node (or tensor) name points at, if it names one.
    fn layer_of(&self, name: &str) -> Option<String> {
        let segs = segments(name);
        let layer = match (self.producer, segs.len()) {
            (_, 0) => return None,
            (Producer::Tf2Onnx, n) if n >= 3 => {
                if self.strip_suffix {
                    strip_trace_suffix(segs[1])
                } else {
                    segs[1]
                }
            }
            (Producer::PyTorch, n) if n >= 2 => segs[n - 2],
            (_, 1) => segs[0],
            (_, _) => return Some(segs.join(".")),
        };
        Some(layer.to_string())
    }

    /// The layer name a weighted op's weight initializer points at: a state-dict name
    /// `<module>.weight`, or a tf2onnx scope.
    fn layer_of_weight(&self, weight: &str) -> Option<String> {
        if let Some(module) = weight.strip_suffix(".weight") {
            if !module.is_empty() && !module.contains(['/', ':']) {
                return Some(module.to_string());
            }
        }
        match self.producer {
            Producer::Tf2Onnx if segments(weight).len() >= 3 => self.layer_of(weight),
            _ => None,
        }
    }

    /// A fresh layer name for node `index` (`op`, named `node_name`), from its
    /// parameter tensors' names (weight first), else the dynamo exporter's
    /// `name_scopes` metadata, else the node name.
    pub fn name(
        &mut self,
        index: usize,
        op: &str,
        node_name: &str,
        scopes: Option<&str>,
        params: &[&str],
    ) -> String {
        let base = params
            .iter()
            .find_map(|w| self.layer_of_weight(w))
            .or_else(|| scopes.and_then(module_of_scopes))
            .or_else(|| self.layer_of(node_name))
            .unwrap_or_else(|| format!("{}_{index}", op.to_ascii_lowercase()));
        let op = op.to_ascii_lowercase();
        let candidates = std::iter::once(base.clone())
            .chain(std::iter::once(format!("{base}.{op}")))
            .chain((1..).map(|k| format!("{base}.{op}_{k}")));
        for c in candidates {
            if self.used.insert(c.clone()) {
                return c;
            }
        }
        unreachable!("an unbounded list of candidates always has a free name")
    }

    /// A fresh name based on `name` (names the importer makes up, like `<layer>.flatten`).
    pub fn reserve(&mut self, name: &str) -> String {
        self.name(usize::MAX, "x", name, None, &[])
    }
}

/// The module in the dynamo exporter's `['', 'head', 'head.2', 'linear']`: the entry
/// before the op (`head.2`); `None` at the root (a function called in `forward`).
fn module_of_scopes(scopes: &str) -> Option<String> {
    let entries: Vec<&str> = scopes
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|e| e.trim().trim_matches(|c| c == '\'' || c == '"'))
        .collect();
    match entries.as_slice() {
        [.., module, _op] if !module.is_empty() => Some(module.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytorch_scopes_give_module_names() {
        let names = ["/features/features.0/Conv", "/classifier/Gemm"];
        let mut n = Namer::new(Producer::PyTorch, names.into_iter());
        assert_eq!(n.name(0, "Conv", names[0], None, &[]), "features.0");
        assert_eq!(
            n.name(1, "Relu", "/features/features.0/Relu", None, &[]),
            "features.0.relu"
        );
        assert_eq!(
            n.name(2, "Gemm", names[1], None, &["classifier.weight"]),
            "classifier"
        );
        assert_eq!(n.name(3, "Add", "/Add", None, &[]), "Add");
        assert_eq!(n.name(4, "Flatten", "", None, &[]), "flatten_4");
        // The dynamo exporter: state-dict weights, module paths in metadata.
        assert_eq!(
            n.name(5, "Conv", "node_Conv_3", None, &["stem.0.weight"]),
            "stem.0"
        );
        let scopes = Some("['', 'stem', 'stem.2', 'hardtanh']");
        assert_eq!(n.name(6, "Clip", "n4", scopes, &[]), "stem.2");
        assert_eq!(
            n.name(7, "Relu", "node_relu", Some("['', 'relu']"), &[]),
            "node_relu"
        );
    }

    #[test]
    fn keras3_suffixes_are_removed_only_when_every_layer_has_one() {
        let names = [
            "functional_1/conv1_1/convolution",
            "functional_1/dense_1_1/MatMul",
        ];
        let mut n = Namer::new(Producer::Tf2Onnx, names.into_iter());
        assert_eq!(n.name(0, "Conv", names[0], None, &[]), "conv1");
        assert_eq!(n.name(1, "MatMul", names[1], None, &[]), "dense_1");
        // A depthwise conv tf2onnx left unnamed: its bias tensor has the scope.
        assert_eq!(
            n.name(
                2,
                "Conv",
                "Conv__146",
                None,
                &["const_fold_opt__169", "functional_1/dw_1/Squeeze:0"]
            ),
            "dw"
        );
        let names = ["model/conv1/Conv2D", "model/dense_1/MatMul"];
        let mut n = Namer::new(Producer::Tf2Onnx, names.into_iter());
        assert_eq!(n.name(0, "Conv", names[0], None, &[]), "conv1");
        assert_eq!(n.name(1, "MatMul", names[1], None, &[]), "dense_1");
        // A folded batch norm names the conv; its weight names the layer.
        let mut n = Namer::new(Producer::Tf2Onnx, names.into_iter());
        assert_eq!(
            n.name(
                0,
                "Conv",
                "model/bn1/batchnorm/mul_1",
                None,
                &["model/conv1/convolution/merged_input:0"]
            ),
            "conv1"
        );
    }
}

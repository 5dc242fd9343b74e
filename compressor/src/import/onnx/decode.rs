//! Bytes → a checked `ModelProto`: it decodes, has a graph, targets a supported opset,
//! and has one 4-D float input with fixed channels, height and width and one output.

use prost::Message;

use super::error::{OnnxError, Place};
use crate::onnx_proto::{data_type, ModelProto, ValueInfoProto};

/// The default-domain opsets the importer reads (as `torch.onnx.export` and tf2onnx
/// write them today).
pub const OPSETS: std::ops::RangeInclusive<i64> = 11..=21;

/// The checked model and what the lowering needs to know about its input.
pub struct Decoded {
    pub model: ModelProto,
    pub opset: i64,
    /// The graph input's name and its dims `[N, d1, d2, d3]` (N: `None` if symbolic).
    pub input: String,
    pub batch: Option<i64>,
    pub dims: [usize; 3],
    pub output: String,
}

pub fn decode(bytes: &[u8], file: &str) -> Result<Decoded, OnnxError> {
    let fail = |place: Place, message: String| OnnxError {
        file: file.to_string(),
        place,
        message,
    };
    let model = ModelProto::decode(bytes).map_err(|e| {
        fail(
            Place::File,
            format!("not a readable ONNX model (truncated or corrupt protobuf: {e})"),
        )
    })?;
    let Some(graph) = &model.graph else {
        return Err(fail(
            Place::File,
            format!(
                "not an ONNX model: no graph in its {} bytes (empty, truncated or another kind of file)",
                bytes.len()
            ),
        ));
    };
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| fail(Place::File, "imports no default-domain opset".into()))?;
    if !OPSETS.contains(&opset) {
        return Err(fail(
            Place::File,
            format!(
                "opset {opset} is outside the supported range {}–{}; re-export with opset_version \
                 in that range (torch.onnx.export(..., opset_version=17), tf2onnx --opset 17)",
                OPSETS.start(),
                OPSETS.end()
            ),
        ));
    }
    // Before IR version 4 initializers were listed as inputs too.
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
        .collect();
    let [input] = inputs.as_slice() else {
        return Err(fail(
            Place::File,
            format!(
                "the graph has {} inputs ({}); sprig imports models with one image input",
                inputs.len(),
                inputs
                    .iter()
                    .map(|i| format!("`{}`", i.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    let here = || Place::Value(input.name.clone());
    let tensor = input
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .ok_or_else(|| fail(here(), "the graph input is not a tensor".into()))?;
    if tensor.elem_type != data_type::FLOAT {
        return Err(fail(
            here(),
            format!(
                "the graph input is {}; sprig imports float models (FLOAT input)",
                data_type::name(tensor.elem_type)
            ),
        ));
    }
    let shape = tensor
        .shape
        .as_ref()
        .ok_or_else(|| fail(here(), "the graph input has no shape".into()))?;
    if shape.dim.len() != 4 {
        return Err(fail(
            here(),
            format!(
                "the graph input has {} dimensions; sprig imports image models with a 4-D \
                 input [N, C, H, W] (or [N, H, W, C] transposed to NCHW first)",
                shape.dim.len()
            ),
        ));
    }
    let mut dims = [0usize; 3];
    for (k, d) in shape.dim.iter().enumerate().skip(1) {
        dims[k - 1] = match (d.dim_value, &d.dim_param) {
            (Some(v), _) if v > 0 => v as usize,
            (_, Some(p)) => {
                return Err(fail(
                    here(),
                    format!(
                        "dimension {k} of the graph input is dynamic (`{p}`); only the batch \
                         dimension (0) may be: export with a fixed image size"
                    ),
                ))
            }
            _ => {
                return Err(fail(
                    here(),
                    format!("dimension {k} of the graph input has no positive size"),
                ))
            }
        };
    }
    let batch = shape.dim[0].dim_value.filter(|&v| v > 0);
    let [output] = graph.output.as_slice() else {
        return Err(fail(
            Place::File,
            format!(
                "the graph has {} outputs; sprig imports classifiers with one output",
                graph.output.len()
            ),
        ));
    };
    Ok(Decoded {
        input: input.name.clone(),
        batch,
        dims,
        output: output.name.clone(),
        opset,
        model,
    })
}

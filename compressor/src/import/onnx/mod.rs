//! Importing float ONNX models (`torch.onnx.export`, tf2onnx) into the compressor's
//! [`Graph`], with every weight a trainable variable, so the pruners, quantizers,
//! exporters and the packed int8 runtime work on them as on a zoo model.
//!
//! `read` decodes the protobuf with the exporter's own message types
//! ([`crate::onnx_proto`]), checks the opset (11–21) and the input (one float
//! `[N, C, H, W]`, N may be symbolic, C/H/W fixed), folds initializers and `Constant`s,
//! and lowers node by node:
//!
//! | ONNX | sprig layer |
//! |------|-------------|
//! | Conv (square kernel, symmetric pads or `auto_pad`, dilation 1, any `group`) | Conv2d (depthwise when group = channels) |
//! | Gemm (`transB` 0/1, `alpha`, `beta`), MatMul with a constant weight | Linear |
//! | Add / Sub / Mul of a per-channel constant right after Conv, Gemm or MatMul (its only reader) | folded into that layer's bias / weight |
//! | Add of two tensors of one shape | Add |
//! | BatchNormalization (eval) | BatchNorm2d (ε ≠ 1e-5 moved into the running variance) |
//! | Relu; Clip(0, 6); Clip(0, ∞) | ReLU; ReLU6; ReLU |
//! | MaxPool, AveragePool (no padding) | MaxPool2d, AvgPool2d |
//! | GlobalAveragePool; ReduceMean over H, W | AdaptiveAvgPool2d (+ Flatten if `keepdims = 0`) |
//! | Flatten (axis 1); Reshape to `[N, -1]`; Squeeze of `[N, C, 1, 1]` | Flatten (a no-op reshape is dropped) |
//! | Transpose NCHW ↔ NHWC around a flatten (tf2onnx) | none: the next Gemm/MatMul's columns are reordered |
//! | Softmax as the last op | dropped (training wants logits; argmax is unchanged) |
//! | Dropout, Identity, Cast, CastLike | dropped (constants converted) |
//! | Constant, Shape → Gather/Slice → Unsqueeze → Concat | folded into constants / shape vectors |
//!
//! Layer names follow the source framework (`names.rs`): PyTorch's
//! `/features/features.0/Conv` is layer `features.0`, a Keras layer `conv1` exported by
//! tf2onnx is `conv1`, so a `config_list` with `op_names` written for the original
//! model selects the same layers. A model whose NHWC input is transposed to NCHW by its
//! first node takes NCHW in sprig.
//!
//! Anything else (another op, a dynamic C/H/W, the batch dimension used inside a shape,
//! an opset outside 11–21, a truncated or corrupt file) is an [`OnnxError`] naming the
//! file and the node (index, name, op) or value, and what is supported; never a panic
//! (`fuzz/fuzz_targets/onnx_import.rs`).

mod attributes;
mod decode;
mod error;
mod lower;
mod names;
mod shapes;
mod tensor;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

pub use decode::OPSETS;
pub use error::{OnnxError, Place};
pub use lower::SUPPORTED_OPS;

use crate::nn::Graph;

/// The largest input (C·H·W elements) imported: bigger images are beyond a
/// microcontroller's RAM anyway, and a bound keeps a corrupt file from allocating much.
pub const MAX_INPUT_ELEMENTS: usize = 1 << 22;

/// An imported model.
pub struct OnnxModel {
    pub graph: Graph,
    /// Its variables, `<layer>.weight` etc. as the zoo names them.
    pub varmap: VarMap,
    /// Size of the output (the number of classes).
    pub num_classes: usize,
    /// `producer_name` and `producer_version` of the file.
    pub producer: String,
    pub opset: i64,
    /// A trailing Softmax was left out.
    pub softmax_dropped: bool,
    /// `(ONNX node name, op, sprig layer)` of every node that became a layer.
    pub layers: Vec<(String, String, String)>,
}

/// Imports an ONNX model from `bytes`; `file` names it in errors.
pub fn read(bytes: &[u8], file: &str, device: &Device) -> Result<OnnxModel, OnnxError> {
    let decoded = decode::decode(bytes, file)?;
    let [c, h, w] = decoded.dims;
    if c.checked_mul(h)
        .and_then(|x| x.checked_mul(w))
        .is_none_or(|n| n > MAX_INPUT_ELEMENTS)
    {
        return Err(OnnxError {
            file: file.to_string(),
            place: Place::Value(decoded.input.clone()),
            message: format!(
                "input {:?} has more than {MAX_INPUT_ELEMENTS} elements per sample",
                decoded.dims
            ),
        });
    }
    let lowered = lower::lower(&decoded, file, device)?;
    // One forward pass proves the lowered graph runs (shapes agree end to end).
    let [c, h, w] = lowered.graph.input_shape();
    let ran =
        Tensor::zeros((1, c, h, w), DType::F32, device).and_then(|x| lowered.graph.forward(&x));
    if let Err(e) = ran {
        return Err(OnnxError {
            file: file.to_string(),
            place: Place::File,
            message: format!("the imported graph does not run: {e}"),
        });
    }
    Ok(OnnxModel {
        graph: lowered.graph,
        varmap: lowered.varmap,
        num_classes: lowered.output_shape[0],
        producer: format!(
            "{} {}",
            decoded.model.producer_name, decoded.model.producer_version
        )
        .trim()
        .to_string(),
        opset: decoded.opset,
        softmax_dropped: lowered.softmax_dropped,
        layers: lowered.layers,
    })
}

/// [`read`] on a file.
pub fn read_file(path: &Path, device: &Device) -> crate::Result<OnnxModel> {
    let bytes = std::fs::read(path).map_err(crate::Error::io(path))?;
    Ok(read(&bytes, &path.display().to_string(), device)?)
}

/// Whether `--model` names an ONNX file rather than a zoo model.
pub fn is_onnx_path(model: &str) -> bool {
    Path::new(model)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

//! ONNX export: the graph as an ONNX model (IR version 8, opset 13; IR version 10,
//! opset 21 when it holds 4-bit weights), with QuantizeLinear / DequantizeLinear where a
//! quantizer fake-quantizes.
//!
//! Each layer becomes one ONNX operator: Conv (pads, strides, group, kernel_shape, bias),
//! Gemm with `transB = 1` for Linear, BatchNormalization (eval, running statistics),
//! Relu, Clip(0, 6) for ReLU6, MaxPool / AveragePool, GlobalAveragePool, Flatten
//! (axis 1) and Add. Weights are the masked ones, so pruned weights are exact zeros.
//!
//! With a quantizer bound, the QDQ nodes sit exactly where [`Graph::forward_t`] applies
//! fake quantization, so onnxruntime computes what candle's eval forward computes:
//!
//! - a quantized weight is stored as int8 integers and dequantized per output channel
//!   (DequantizeLinear, axis 0, scale vector, zero points 0); weights of 4 bits or
//!   fewer (DoReFa, QAT at 4 or 2 bits, BNN's ±1) are stored as INT4, two per byte,
//!   which needs opset 21 (onnxruntime 1.18+), so only such models are written at it;
//! - a conv or linear bias is the one the eval forward adds: on its int32 grid
//!   (`round(b / (s_in · s_w[c]))` steps of `s_in · s_w[c]`) where the layer deploys as
//!   an int8 output stage ([`Graph::deployed_bias`]);
//! - a quantized input is a QuantizeLinear + DequantizeLinear pair (scalar scale, int8
//!   zero point) in front of the Conv / Gemm;
//! - a quantized output gets the pair after the layer, or after its fused ReLU / ReLU6
//!   (the layer's only consumer) when it has one;
//! - a max pool whose input is on a grid gets the same pair after it (the values
//!   are grid points already, so it changes nothing; onnxruntime's optimizer would
//!   otherwise insert its own, see `lower.rs`);
//! - activations of fewer than 8 bits are still stored as int8 (QuantizeLinear
//!   saturates to [-128, 127]), so a Clip to the narrower grid follows the
//!   DequantizeLinear.
//! - a binary (sign) output of BNNQuantizer is `Where(x ≥ 0, 1, −1)` on the layer's
//!   pre-activation, and the ReLU / ReLU6 fused after it is left out, as the forward
//!   pass bypasses it ([`crate::nn::bypassed_activation`]); 1-bit weights are the int8
//!   values ±1 with their per-channel scales.
//!
//! One known difference: QuantizeLinear rounds half to even, candle's fake quantization
//! half away from zero, so a value exactly between two grid points can land one step
//! apart. Activations whose quantizer has not been calibrated yet pass through, as in
//! the forward pass. With graph optimizations off, onnxruntime reproduces candle's eval
//! output exactly on the tests' models; its default optimizations fuse the QDQ
//! patterns into int8 kernels (QLinearConv, QGemm) that accumulate in int32 and
//! requantize per layer, which moves some outputs by a step or two
//! (`tests/onnx_roundtrip.rs` has the measured bounds). On x86 CPUs with AVX2 but no
//! VNNI those int8 kernels saturate pairs of products at int16 (onnxruntime#16105),
//! and full-range int8 weights then come out up to 127 steps off (seen on this
//! project's AMD EPYC CI machine, onnxruntime 1.31 and 1.32); `tests/onnx_check.py`
//! checks the basic optimization level there instead.

mod lower;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use prost::Message;

use super::write_atomic;
use crate::nn::Graph;
use crate::onnx_proto::{
    data_type, Dimension, GraphProto, ModelProto, OperatorSetIdProto, ValueInfoProto,
};
use crate::{Error, Result};

/// The ONNX IR version written (ONNX 1.10+).
pub const IR_VERSION: i64 = 8;
/// The default-domain operator set the nodes are written against.
pub const OPSET_VERSION: i64 = 13;
/// The IR version of a model with INT4 weights (ONNX 1.16+).
pub const INT4_IR_VERSION: i64 = 10;
/// The first opset whose DequantizeLinear takes INT4; every op sprig writes means the
/// same there as at [`OPSET_VERSION`].
pub const INT4_OPSET_VERSION: i64 = 21;
/// The symbolic batch dimension of the input and output.
const BATCH: &str = "batch";

/// Writes `graph` as an ONNX model for inputs of `input_shape` `[N, C, H, W]`.
///
/// The model's input is `input`, float `[batch, C, H, W]`, its output `output`, float
/// `[batch, ...]` (`[batch, classes]` for the zoo's classifiers); the batch dimension is
/// symbolic, so `N` only has to be positive. When a quantizer is bound, one eval forward
/// pass on a zero sample runs first so the quantizer's weight scales describe the
/// current weights (the ones an eval forward would quantize with); tracked activation
/// ranges are not touched by an eval pass.
pub fn write_onnx(graph: &Graph, path: &Path, input_shape: [usize; 4]) -> Result<()> {
    let fail = |message: String| Error::Export {
        path: path.to_path_buf(),
        message,
    };
    let [n, c, h, w] = input_shape;
    if n == 0 || c == 0 || h == 0 || w == 0 {
        return Err(fail(format!(
            "input shape {input_shape:?} has a zero dimension"
        )));
    }
    if c != graph.input_shape()[0] {
        return Err(fail(format!(
            "input shape {input_shape:?} has {c} channels, the model takes {}",
            graph.input_shape()[0]
        )));
    }
    if graph.quant().is_some() {
        if let Err(e) = refresh_quant_state(graph, [c, h, w]) {
            // The lowering names the layer whose shapes do not fit, if that is the cause.
            lower::lower(graph, path, [c, h, w])?;
            return Err(e);
        }
    }
    let lowered = lower::lower(graph, path, [c, h, w])?;
    let batch = || Dimension::param(BATCH);
    let input_dims = vec![
        batch(),
        Dimension::value(c),
        Dimension::value(h),
        Dimension::value(w),
    ];
    let output_dims = std::iter::once(batch())
        .chain(lowered.output_shape.iter().map(|&d| Dimension::value(d)))
        .collect();
    let int4 = lowered
        .initializers
        .iter()
        .any(|t| t.data_type == data_type::INT4);
    let (ir_version, opset) = if int4 {
        (INT4_IR_VERSION, INT4_OPSET_VERSION)
    } else {
        (IR_VERSION, OPSET_VERSION)
    };
    let model = ModelProto {
        ir_version,
        producer_name: "sprig".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!(
            "exported by sprig-compressor{}",
            graph.quant().map_or(String::new(), |q| format!(
                ", QDQ from {}",
                q.quantizer().name()
            ))
        ),
        graph: Some(GraphProto {
            node: lowered.nodes,
            name: "sprig".into(),
            initializer: lowered.initializers,
            input: vec![ValueInfoProto::float_tensor(lower::INPUT, input_dims)],
            output: vec![ValueInfoProto::float_tensor(lower::OUTPUT, output_dims)],
            ..Default::default()
        }),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
    };
    write_atomic(path, &model.encode_to_vec())
}

/// One eval forward pass on a zero sample, so weight scales are those of the weights
/// as they are now (an optimizer step after the last forward would leave them stale).
fn refresh_quant_state(graph: &Graph, sample_shape: [usize; 3]) -> Result<()> {
    let weight = graph.nodes().iter().find_map(|n| n.layer.weight());
    let (device, dtype) = weight.map_or((Device::Cpu, DType::F32), |w| {
        (w.device().clone(), w.dtype())
    });
    let [c, h, w] = sample_shape;
    let x = Tensor::zeros((1, c, h, w), dtype, &device)?;
    graph.forward(&x)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigList;
    use crate::models::Model;
    use crate::quant::{QatQuantizer, Quantizer};

    /// The opset a written model declares: 13 for int8 weights, 21 (IR 10) once a
    /// layer's weights are INT4.
    #[test]
    fn int4_weights_raise_the_opset() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        for (bits, ir, opset) in [(8, IR_VERSION, OPSET_VERSION), (4, 10, 21)] {
            let mut model = Model::new("lenet5", 10, &Device::Cpu, 3)?;
            let config = format!(
                r#"[{{"op_types": ["Conv2d", "Linear"], "quant_types": ["weight"], "quant_bits": {bits}}}]"#
            );
            QatQuantizer::new().compress(&mut model.graph, &ConfigList::from_json_str(&config)?)?;
            let path = dir.path().join(format!("w{bits}.onnx"));
            write_onnx(&model.graph, &path, [1, 1, 28, 28])?;
            let written = ModelProto::decode(std::fs::read(&path)?.as_slice())?;
            assert_eq!(written.ir_version, ir, "{bits}-bit");
            assert_eq!(written.opset_import[0].version, opset, "{bits}-bit");
        }
        Ok(())
    }
}

//! The deployed model on the host: images quantized as the device quantizes them, run
//! through `sprig-runtime` (the code the chip runs), compared with the candle
//! fake-quantized model; and `vectors.bin` for firmware parity checks.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use sprig_runtime::{model::first_argmax, Model, Quant};

use super::{load, PACKED_FILE};
use crate::data::{normalize_pixel, Batcher, Dataset, Order};
use crate::export::write_atomic;
use crate::nn::Graph;
use crate::{Error, Result};

/// Test vectors written by default (the first N test images).
pub const DEFAULT_VECTOR_COUNT: usize = 100;

/// The deployed int8 model against the fake-quantized float model, image by image, and
/// against the compressor's simulation of the integer arithmetic.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployReport {
    /// Images evaluated.
    pub images: usize,
    /// Top-1 accuracy of the int8 model run by `sprig-runtime`.
    pub deployed_accuracy: f32,
    /// Top-1 accuracy of the candle model with fake quantization (eval forward: float
    /// bias, one rounding per output, as QAT trains it and the ONNX export computes it).
    pub fake_quant_accuracy: f32,
    /// Fraction of images where both predict the same class.
    pub agreement: f32,
    /// Images where they predict different classes.
    pub disagreements: usize,
    /// Mean |int8 output − fake-quant output| over all outputs, in output grid steps.
    pub mean_abs_diff_steps: f64,
    /// Largest such difference.
    pub max_abs_diff_steps: f64,
    /// Fraction of outputs where the int8 value is exactly the fake-quant grid value.
    pub exact_outputs: f64,
    /// Fraction of outputs where the int8 value is exactly that of
    /// [`Graph::forward_deployed`] (the same model with int32 biases and the runtime's
    /// fixed-point requantization, simulated in candle): 1 unless the packer or a kernel
    /// computes something else than the arithmetic it claims.
    pub simulated_exact_outputs: f64,
}

impl std::fmt::Display for DeployReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "deployed int8 {:.2} % vs fake-quant {:.2} % top-1 on {} images; agreement {:.2} % \
             ({} differ); outputs off by {:.3} steps on average, {:.0} at most ({:.1} % exact; \
             {:.2} % equal to the simulated integer model)",
            100.0 * self.deployed_accuracy,
            100.0 * self.fake_quant_accuracy,
            self.images,
            100.0 * self.agreement,
            self.disagreements,
            self.mean_abs_diff_steps,
            self.max_abs_diff_steps,
            100.0 * self.exact_outputs,
            100.0 * self.simulated_exact_outputs
        )
    }
}

/// An image's pixels as the device's int8 input under the default normalization
/// (`Dataset::device_input` follows the dataset's own): `x = (pixel − 128) / 128`,
/// `q = clamp(round(x / scale) + zero_point)`, in the f32 arithmetic the fake
/// quantization uses, so both see the same integers.
pub fn quantize_image(pixels: &[u8], q: Quant) -> Vec<i8> {
    // candle's `x / scale` is `x · (1 / scale)` with the factor rounded to f32.
    let inv = (1.0 / f64::from(q.scale)) as f32;
    let zp = q.zero_point as f32;
    pixels
        .iter()
        .map(|&p| ((normalize_pixel(p) * inv).round() + zp).clamp(-128.0, 127.0) as i8)
        .collect()
}

fn run_fail(e: sprig_runtime::Error) -> Error {
    Error::Export {
        path: PACKED_FILE.into(),
        message: format!("sprig-runtime failed to run the packed model: {e}"),
    }
}

/// Checks that `model` takes `data`'s images (`[1, rows, cols, channels]`).
fn check_input(model: &Model, data: &Dataset) -> Result<()> {
    let expected = [1, data.rows as u32, data.cols as u32, data.channels as u32];
    if model.input_shape() != expected {
        return Err(Error::Export {
            path: PACKED_FILE.into(),
            message: format!(
                "the packed model takes {:?} inputs, the dataset {} has {:?}",
                model.input_shape(),
                data.name,
                expected
            ),
        });
    }
    Ok(())
}

/// The device a graph's weights live on (the CPU when it has none).
fn graph_device(graph: &Graph) -> Device {
    graph
        .nodes()
        .iter()
        .find_map(|n| n.layer.weight())
        .map_or(Device::Cpu, |w| w.device().clone())
}

/// Runs `blob` over every image of `data` with `sprig-runtime` and compares it with
/// `graph`'s eval forward (fake quantization as bound), and output for output with
/// [`Graph::forward_deployed`] (the runtime's int32 biases and fixed-point
/// requantization, simulated).
pub fn deployed_eval(graph: &Graph, blob: &[u8], data: &Dataset) -> Result<DeployReport> {
    let model = load(blob, Path::new(PACKED_FILE))?;
    check_input(&model, data)?;
    let classes = model.output_len();
    let out_q = model.output_quant();
    let mut arena = vec![0u8; model.arena_size()];
    let mut out = vec![0i8; classes];
    let (mut deployed_ok, mut fake_ok, mut agree) = (0usize, 0usize, 0usize);
    let (mut diff_sum, mut diff_max, mut exact) = (0f64, 0f64, 0usize);
    let mut simulated_exact = 0usize;
    let device = graph_device(graph);
    let mut seen = 0usize;
    for batch in Batcher::new(data, 500, Order::Sequential, &device) {
        let batch = batch?;
        let logits = rows(graph.forward(&batch.images)?, batch.len, classes)?;
        let simulated = rows(graph.forward_deployed(&batch.images)?, batch.len, classes)?;
        let rows = logits
            .chunks_exact(classes)
            .zip(simulated.chunks_exact(classes));
        for (k, (float_row, simulated_row)) in rows.enumerate() {
            let i = seen + k;
            let q = model.input_quant();
            let input = data.device_input(i, q.scale, q.zero_point);
            model.run(&mut arena, &input, &mut out).map_err(run_fail)?;
            let label = usize::from(data.labels[i]);
            let deployed = first_argmax(&out);
            let fake = first_max(float_row);
            deployed_ok += usize::from(deployed == label);
            fake_ok += usize::from(fake == label);
            agree += usize::from(deployed == fake);
            for (&q, &f) in out.iter().zip(float_row) {
                let d = (f64::from(i32::from(q) - out_q.zero_point)
                    - f64::from(f) / f64::from(out_q.scale))
                .abs();
                diff_sum += d;
                diff_max = diff_max.max(d);
                exact += usize::from(d < 1e-3);
            }
            let steps = |f: f32| f64::from(f) / f64::from(out_q.scale);
            simulated_exact += out
                .iter()
                .zip(simulated_row)
                .filter(|&(&q, &f)| {
                    (f64::from(i32::from(q) - out_q.zero_point) - steps(f)).abs() < 1e-3
                })
                .count();
        }
        seen += batch.len;
    }
    let n = seen.max(1) as f32;
    let outputs = (seen * classes).max(1) as f64;
    Ok(DeployReport {
        images: seen,
        deployed_accuracy: deployed_ok as f32 / n,
        fake_quant_accuracy: fake_ok as f32 / n,
        agreement: agree as f32 / n,
        disagreements: seen - agree,
        mean_abs_diff_steps: diff_sum / outputs,
        max_abs_diff_steps: diff_max,
        exact_outputs: exact as f64 / outputs,
        simulated_exact_outputs: simulated_exact as f64 / outputs,
    })
}

/// A batch of model outputs as `f32` rows of `classes`, or an error if the float model
/// does not give that shape.
fn rows(logits: Tensor, images: usize, classes: usize) -> Result<Vec<f32>> {
    let logits = logits.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    if logits.dims() != [images, classes] {
        return Err(Error::Export {
            path: PACKED_FILE.into(),
            message: format!(
                "the float model gives {:?} outputs, the packed model {classes} per image",
                logits.dims()
            ),
        });
    }
    Ok(logits.flatten_all()?.to_vec1::<f32>()?)
}

/// Index of the first largest value (candle's `argmax` convention, and the runtime's).
fn first_max(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// `vectors.bin` bytes: the first `count` images of `data` (all if fewer), quantized
/// onto the model's input grid, with their labels and the runtime's outputs.
pub fn test_vectors(blob: &[u8], data: &Dataset, count: usize) -> Result<Vec<u8>> {
    let model = load(blob, Path::new(PACKED_FILE))?;
    check_input(&model, data)?;
    let mut arena = vec![0u8; model.arena_size()];
    let mut vectors = Vec::with_capacity(count.min(data.len()));
    for i in 0..count.min(data.len()) {
        let q = model.input_quant();
        let input = data.device_input(i, q.scale, q.zero_point);
        let mut out = vec![0i8; model.output_len()];
        model.run(&mut arena, &input, &mut out).map_err(run_fail)?;
        vectors.push((data.labels[i], input, out));
    }
    sprig_runtime::vectors::write_vectors(model.input_len(), model.output_len(), &vectors).map_err(
        |e| Error::Export {
            path: super::VECTORS_FILE.into(),
            message: format!("encoding test vectors failed: {e}"),
        },
    )
}

/// Writes [`test_vectors`] to `path` atomically; returns how many vectors it holds.
pub fn write_vectors(blob: &[u8], data: &Dataset, count: usize, path: &Path) -> Result<usize> {
    let bytes = test_vectors(blob, data, count)?;
    write_atomic(path, &bytes)?;
    Ok(count.min(data.len()))
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use crate::config::ConfigList;
    use crate::data::{self, Batcher, Order};
    use crate::export::packed;
    use crate::models::Model;
    use crate::quant::{QatQuantizer, Quantizer};

    /// The simulated integer model (`Graph::forward_deployed`) computes what the packed
    /// model computes, output for output, at every weight width: the int32 biases and
    /// the fixed-point requantization included.
    #[test]
    fn simulated_integer_model_is_the_deployed_model_exactly() -> crate::Result<()> {
        let (train_set, test) = data::load_dir(&data::bundled_dir())?;
        let test = test.subset(100);
        for bits in [8u8, 4, 2] {
            let mut model = Model::new("lenet5", 10, &Device::Cpu, 0)?;
            let config = format!(
                r#"[{{"op_types": ["Conv2d", "Linear"], "quant_types": ["input", "weight", "output"], "quant_bits": {{"weight": {bits}, "input": 8, "output": 8}}}}]"#
            );
            QatQuantizer::new().compress(&mut model.graph, &ConfigList::from_json_str(&config)?)?;
            let batch = Batcher::new(&train_set.subset(64), 64, Order::Sequential, &Device::Cpu)
                .next()
                .expect("one batch")?;
            model.graph.forward_t(&batch.images, true)?;
            let packed = packed::pack(&model.graph)?;
            let report = packed::deployed_eval(&model.graph, &packed.blob, &test)?;
            assert_eq!(
                report.simulated_exact_outputs, 1.0,
                "{bits}-bit weights: {report}"
            );
        }
        Ok(())
    }
}

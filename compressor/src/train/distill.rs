//! Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a
//! Neural Network"): the compressed student fine-tunes against a frozen float teacher's
//! softened outputs as well as the labels,
//!
//! ```text
//! loss = α · T² · KL(softmax(teacher / T) ‖ softmax(student / T)) + (1 − α) · CE(student, labels)
//! ```
//!
//! KL is summed over classes and averaged over the batch (PyTorch's
//! `kl_div(..., reduction="batchmean")`, as NNI's and Hinton's recipes use it); T²
//! keeps the soft term's gradients on the scale of the hard term's as T grows. α = 0 is
//! plain cross-entropy (the teacher is not even run), α = 1 the soft term alone.
//!
//! The teacher is its own graph over its own copies of the weights ([`frozen_copy`]),
//! run in eval mode on the very batch the student sees, its logits detached: nothing the
//! student's optimizer does reaches it. A plan asks for distillation with a top-level
//! `"distill"` map ([`DistillSpec::from_value`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{Tensor, D};
use candle_nn::VarMap;
use serde::Serialize;
use serde_json::Value;

use crate::models::Model;
use crate::nn::Graph;
use crate::Result;

/// The keys of a plan's `distill` map.
pub const DISTILL_KEYS: [&str; 3] = ["teacher", "temperature", "alpha"];

/// Where the teacher's weights come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TeacherSource {
    /// The trained float model before compression (the run's baseline).
    Baseline,
    /// A `.safetensors` of the same architecture (as `--weights` reads it).
    Weights(PathBuf),
}

impl std::fmt::Display for TeacherSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Baseline => f.write_str("baseline"),
            Self::Weights(p) => write!(f, "{}", p.display()),
        }
    }
}

/// What a plan's `distill` map says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DistillSpec {
    pub teacher: TeacherSource,
    /// T > 0: both sides' logits are divided by it before the softmax.
    pub temperature: f64,
    /// α in [0, 1]: the soft term's weight; 1 − α is the labels'.
    pub alpha: f64,
}

impl Default for DistillSpec {
    /// `{"teacher": "baseline", "temperature": 4, "alpha": 0.5}`.
    fn default() -> Self {
        Self {
            teacher: TeacherSource::Baseline,
            temperature: 4.0,
            alpha: 0.5,
        }
    }
}

impl DistillSpec {
    /// Reads a plan's `distill` map; a key left out keeps its [`Default`]. The error is
    /// the message only (the plan reader adds the file).
    pub fn from_value(value: &Value) -> std::result::Result<Self, String> {
        let Value::Object(map) = value else {
            return Err(format!(
                "`distill` must be a map such as {{\"teacher\": \"baseline\", \
                 \"temperature\": 4, \"alpha\": 0.5}}, found {value}"
            ));
        };
        let mut spec = Self::default();
        for (key, v) in map {
            match key.as_str() {
                "teacher" => {
                    spec.teacher = match v.as_str() {
                        Some("baseline") => TeacherSource::Baseline,
                        Some(path) if path.ends_with(".safetensors") => {
                            TeacherSource::Weights(PathBuf::from(path))
                        }
                        _ => {
                            return Err(format!(
                                "`distill.teacher` must be \"baseline\" or a path to a \
                                 .safetensors file of the same model, found {v}"
                            ))
                        }
                    }
                }
                "temperature" => {
                    spec.temperature = v
                        .as_f64()
                        .filter(|t| t.is_finite() && *t > 0.0)
                        .ok_or_else(|| {
                            format!("`distill.temperature` must be a number > 0, found {v}")
                        })?
                }
                "alpha" => {
                    spec.alpha =
                        v.as_f64()
                            .filter(|a| (0.0..=1.0).contains(a))
                            .ok_or_else(|| {
                                format!("`distill.alpha` must be a number in [0, 1], found {v}")
                            })?
                }
                other => {
                    return Err(format!(
                        "unknown key `distill.{other}`; valid: {}",
                        DISTILL_KEYS.join(", ")
                    ))
                }
            }
        }
        Ok(spec)
    }

    /// What distinguishes a distilled fine-tune's checkpoints from a plain one's.
    pub fn tag(&self, teacher_fingerprint: &str) -> String {
        format!(
            "-kd-t{}-a{}-{teacher_fingerprint}",
            self.temperature, self.alpha
        )
    }
}

/// A frozen teacher and the loss's settings; [`crate::train::TrainConfig::distill`]
/// hands it to the training loop.
pub struct Distiller {
    /// The teacher: a graph of its own over copied tensors and an empty variable map,
    /// so no optimizer sees its weights.
    pub teacher: Model,
    pub temperature: f64,
    pub alpha: f64,
}

impl std::fmt::Debug for Distiller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distiller")
            .field("teacher", &self.teacher.name)
            .field("temperature", &self.temperature)
            .field("alpha", &self.alpha)
            .finish()
    }
}

impl Distiller {
    /// A frozen copy of `model` as it is now (the float baseline) as the teacher.
    pub fn new(model: &Model, temperature: f64, alpha: f64) -> Result<Self> {
        Ok(Self {
            teacher: Model {
                name: model.name.clone(),
                graph: frozen_copy(&model.graph)?,
                varmap: VarMap::new(),
                device: model.device.clone(),
            },
            temperature,
            alpha,
        })
    }

    /// The distillation loss of `student` logits on `images` with `labels`.
    pub fn loss(&self, student: &Tensor, images: &Tensor, labels: &Tensor) -> Result<Tensor> {
        if self.alpha == 0.0 {
            return Ok(candle_nn::loss::cross_entropy(student, labels)?);
        }
        let teacher = self.teacher.graph.forward_t(images, false)?.detach();
        distillation_loss(student, &teacher, labels, self.temperature, self.alpha)
    }
}

/// `α · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − α) · CE(student, labels)`,
/// KL summed over classes and averaged over the batch; logits are `[batch, classes]`.
pub fn distillation_loss(
    student: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    temperature: f64,
    alpha: f64,
) -> Result<Tensor> {
    let hard = || -> Result<Tensor> { Ok(candle_nn::loss::cross_entropy(student, labels)?) };
    if alpha == 0.0 {
        return hard();
    }
    let batch = student.dim(0)?.max(1) as f64;
    let log_p_student = candle_nn::ops::log_softmax(&(student / temperature)?, D::Minus1)?;
    let log_p_teacher = candle_nn::ops::log_softmax(&(teacher / temperature)?, D::Minus1)?;
    let kl = (log_p_teacher.exp()? * (log_p_teacher - log_p_student)?)?
        .sum_all()?
        .affine(1.0 / batch, 0.0)?;
    let soft = kl.affine(alpha * temperature * temperature, 0.0)?;
    if alpha == 1.0 {
        return Ok(soft);
    }
    Ok((soft + hard()?.affine(1.0 - alpha, 0.0)?)?)
}

/// `graph` over copies of its tensors: training the original no longer changes it. A
/// bound quantizer is dropped (the teacher computes in float); masks stay as they are.
pub fn frozen_copy(graph: &Graph) -> Result<Graph> {
    let mut copy = graph.clone();
    copy.set_quant(None);
    for node in copy.nodes_mut() {
        let state = node
            .layer
            .state()
            .into_iter()
            .map(|(suffix, t)| Ok((suffix, t.detach().copy()?)))
            .collect::<Result<BTreeMap<&str, Tensor>>>()?;
        if !state.is_empty() {
            node.layer = node.layer.with_state(&state)?;
        }
    }
    Ok(copy)
}

/// What a distilled run reports (`summary.json`'s `distill`).
#[derive(Debug, Clone, Serialize)]
pub struct DistillReport {
    /// `baseline`, or the teacher's weights file.
    pub teacher: String,
    pub temperature: f64,
    pub alpha: f64,
    /// The teacher's top-1 on the test split.
    pub teacher_accuracy: f32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn logits(rows: &[[f32; 3]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (rows.len(), 3), &Device::Cpu).unwrap()
    }

    fn scalar(t: Tensor) -> f64 {
        f64::from(t.to_scalar::<f32>().unwrap())
    }

    fn softmax(z: &[f64]) -> Vec<f64> {
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|x| (x - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|x| x / s).collect()
    }

    /// The loss by hand in f64, row by row, from the formula in the module docs.
    fn by_hand(s: &[[f32; 3]], t: &[[f32; 3]], y: &[u32], temp: f64, alpha: f64) -> f64 {
        let (mut kl, mut ce) = (0.0, 0.0);
        for ((s, t), &y) in s.iter().zip(t).zip(y) {
            let s: Vec<f64> = s.iter().map(|&x| f64::from(x)).collect();
            let t: Vec<f64> = t.iter().map(|&x| f64::from(x)).collect();
            let ps = softmax(&s.iter().map(|x| x / temp).collect::<Vec<_>>());
            let pt = softmax(&t.iter().map(|x| x / temp).collect::<Vec<_>>());
            kl += pt
                .iter()
                .zip(&ps)
                .map(|(p, q)| p * (p.ln() - q.ln()))
                .sum::<f64>();
            ce -= softmax(&s)[y as usize].ln();
        }
        let n = s.len() as f64;
        alpha * temp * temp * kl / n + (1.0 - alpha) * ce / n
    }

    const S: [[f32; 3]; 2] = [[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]];
    const T: [[f32; 3]; 2] = [[3.0, 0.0, -1.0], [0.0, 0.0, 1.0]];
    const Y: [u32; 2] = [0, 1];

    fn loss(temp: f64, alpha: f64) -> f64 {
        let labels = Tensor::new(&Y, &Device::Cpu).unwrap();
        scalar(distillation_loss(&logits(&S), &logits(&T), &labels, temp, alpha).unwrap())
    }

    #[test]
    fn matches_the_hand_computed_value() {
        // T = 1: row 1 p_t = softmax(3, 0, -1) = (0.93624, 0.04661, 0.01715), p_s =
        // softmax(2, 1, 0.1) = (0.65900, 0.24243, 0.09857): KL₁ = 0.22191; row 2 KL₂ =
        // 0.49797, so KL = 0.35994; CE = (0.41703 + 4.09567) / 2 = 2.25635 (computed in
        // f64 with Python's math module).
        let at_t1 = loss(1.0, 0.5);
        assert!((at_t1 - 0.5 * (0.35994 + 2.25635)).abs() < 1e-4, "{at_t1}");
        for (temp, alpha) in [(1.0, 0.5), (4.0, 0.5), (2.0, 0.9), (0.5, 0.3)] {
            let expected = by_hand(&S, &T, &Y, temp, alpha);
            let got = loss(temp, alpha);
            assert!(
                (got - expected).abs() < 1e-5,
                "T {temp} α {alpha}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn the_soft_term_scales_with_t_squared() {
        // α = 1 is the soft term alone: T² · KL at T.
        let kl_at = |temp: f64| by_hand(&S, &T, &Y, temp, 1.0) / (temp * temp);
        for temp in [1.0, 2.0, 4.0] {
            let got = loss(temp, 1.0);
            assert!(
                (got - temp * temp * kl_at(temp)).abs() < 1e-5,
                "T {temp}: {got}"
            );
        }
    }

    #[test]
    fn alpha_zero_is_plain_cross_entropy() {
        let labels = Tensor::new(&Y, &Device::Cpu).unwrap();
        let ce = scalar(candle_nn::loss::cross_entropy(&logits(&S), &labels).unwrap());
        assert_eq!(loss(4.0, 0.0), ce);
        assert_eq!(loss(1.0, 0.0), ce);
    }

    #[test]
    fn identical_logits_leave_only_the_hard_term() {
        let labels = Tensor::new(&Y, &Device::Cpu).unwrap();
        let got = scalar(distillation_loss(&logits(&S), &logits(&S), &labels, 4.0, 1.0).unwrap());
        assert!(got.abs() < 1e-6, "{got}");
    }

    #[test]
    fn spec_reads_defaults_and_refuses_bad_values() {
        let spec = |text: &str| DistillSpec::from_value(&serde_json::from_str(text).unwrap());
        assert_eq!(spec("{}").unwrap(), DistillSpec::default());
        let s = spec(r#"{"teacher": "t.safetensors", "temperature": 2, "alpha": 1}"#).unwrap();
        assert_eq!(s.teacher, TeacherSource::Weights("t.safetensors".into()));
        assert_eq!((s.temperature, s.alpha), (2.0, 1.0));
        for (bad, says) in [
            (
                r#"{"temperature": 0}"#,
                "`distill.temperature` must be a number > 0",
            ),
            (r#"{"temperature": -1}"#, "`distill.temperature`"),
            (r#"{"temperature": "hot"}"#, "`distill.temperature`"),
            (
                r#"{"alpha": 1.5}"#,
                "`distill.alpha` must be a number in [0, 1]",
            ),
            (r#"{"alpha": -0.1}"#, "`distill.alpha`"),
            (
                r#"{"teacher": "resnet"}"#,
                "`distill.teacher` must be \"baseline\"",
            ),
            (r#"{"teachr": "baseline"}"#, "unknown key `distill.teachr`"),
            ("4", "`distill` must be a map"),
        ] {
            let e = spec(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}

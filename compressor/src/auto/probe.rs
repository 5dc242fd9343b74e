//! Measurement of a candidate on the trained baseline: the candidate's plan applied to a
//! copy as `compress` applies it (the pruner's masks, the speedup after filter pruning,
//! the QAT binding), activation ranges calibrated on a few training batches,
//! the real exporter and arena planner run for the bytes, and the fake-quantized model
//! scored on a validation set. One-shot by default, as NNI's sensitivity analysis and
//! its simulated-annealing pruner score candidates; with [`Probe::with_fine_tune`],
//! each candidate is first fine-tuned for a few steps on a fresh copy of the baseline,
//! so that the score sees what fine-tuning recovers (a pruned layer loses much more
//! one-shot than after its trial's fine-tune; a narrow one less so).

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::space::{Candidate, SearchSpace};
use crate::compress::{speed_up, Plan, QuantizerKind};
use crate::data::{Batcher, Dataset, Order};
use crate::export::packed;
use crate::export::packed::sprig_runtime::OpKind;
use crate::models::Model;
use crate::nn::{infer_shapes, node_macs, Graph};
use crate::prune::{attach_masks, Registry};
use crate::quant;
use crate::train::{self, TrainConfig};
use crate::{Error, Result};

/// What one weighted layer costs on the chip, as the exporter stored it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerCost {
    pub name: String,
    /// `conv`, `depthwise` or `fc`: kernels of one kind share their prices.
    pub kind: String,
    /// The encoding `model.sprig` holds the weights in (`dense`, `sparse-rel8`, ...), or
    /// `binary` for a binary op (XNOR + popcount, its weights and input bits).
    pub encoding: String,
    /// Multiply-accumulates of a dense execution, and those whose weight is nonzero.
    pub macs: usize,
    pub nonzero_macs: usize,
}

/// A candidate as measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// One-shot top-1 of the fake-quantized model on the validation images.
    pub accuracy: f64,
    /// Bytes of the packed model (`model.sprig`).
    pub model_bytes: usize,
    /// Arena bytes the runtime's planner places.
    pub arena_bytes: usize,
    pub layers: Vec<LayerCost>,
}

/// The weighted layers of a packed model (a fine-tuned trial's `model.sprig`) priced as
/// [`Measurement::layers`] are: encodings and densities from the blob, and each layer's
/// dense MACs from `macs` (name and MACs of its weighted layers in op order, as the
/// trial's `summary.json` lists them; a speedup changes them).
pub fn layers_of_blob(blob: &[u8], macs: &[(String, usize)]) -> Result<Vec<LayerCost>> {
    let model = packed::sprig_runtime::Model::<'_>::from_bytes(blob)
        .map_err(|e| Error::Auto(format!("the runtime refuses a trial's model.sprig: {e}")))?;
    let stored = stored_weights(&model)?;
    if stored.len() != macs.len() {
        return Err(Error::Auto(format!(
            "a trial's model.sprig has {} weighted ops, its summary {} weighted layers",
            stored.len(),
            macs.len()
        )));
    }
    Ok((macs.iter().zip(&stored))
        .map(|((name, macs), &stored)| layer_cost(name, *macs, stored))
        .collect())
}

/// A short fine-tune of every measured candidate.
pub struct FineTune {
    /// One epoch over these images (64 per step).
    pub images: Dataset,
    pub lr: f64,
    pub seed: u64,
}

/// A fresh copy of the baseline as the probe holds it (batch norms folded, input grid
/// set), for candidates that change weights: a fine-tune, or filters cut out.
pub type FreshCopy = Box<dyn Fn() -> Result<Model>>;

/// The baseline with its calibration and validation images, ready to measure candidates
/// (each measured once; repeats come from memory).
pub struct Probe {
    model: Model,
    space: SearchSpace,
    calibration: Dataset,
    validation: Dataset,
    fresh: Option<FreshCopy>,
    fine_tune: Option<FineTune>,
    memo: RefCell<BTreeMap<String, Measurement>>,
}

impl Probe {
    /// `model` holds the trained float baseline with its batch norms folded (a training
    /// forward must not move any statistics); `calibration` sets the activation ranges,
    /// `validation` scores.
    pub fn new(
        model: Model,
        space: SearchSpace,
        calibration: Dataset,
        validation: Dataset,
    ) -> Result<Self> {
        if let Some(bn) = (model.graph.nodes().iter())
            .find(|n| n.layer.op_type() == crate::nn::OpType::BatchNorm2d)
        {
            return Err(Error::Layer {
                layer: bn.name.clone(),
                message: "fold batch norms before probing: a calibration pass would \
                          move their running statistics"
                    .into(),
            });
        }
        Ok(Self {
            model,
            space,
            calibration,
            validation,
            fresh: None,
            fine_tune: None,
            memo: RefCell::new(BTreeMap::new()),
        })
    }

    /// Where fresh copies of the baseline come from: candidates that remove filters
    /// (their channels are cut out of the weights) and fine-tuned ones need them.
    pub fn with_fresh_copies(mut self, fresh: FreshCopy) -> Self {
        self.fresh = Some(fresh);
        self
    }

    /// Fine-tunes each candidate before measuring it (see the module docs; needs
    /// [`Probe::with_fresh_copies`]).
    pub fn with_fine_tune(mut self, fine_tune: FineTune) -> Self {
        self.fine_tune = Some(fine_tune);
        self
    }

    pub fn space(&self) -> &SearchSpace {
        &self.space
    }

    /// Candidates measured so far.
    pub fn measured(&self) -> usize {
        self.memo.borrow().len()
    }

    /// Measures `candidate` (or recalls it).
    pub fn measure(&self, candidate: &Candidate) -> Result<Measurement> {
        let key = candidate.key(&self.space);
        if let Some(m) = self.memo.borrow().get(&key) {
            return Ok(m.clone());
        }
        let m = self.measure_fresh(candidate)?;
        self.memo.borrow_mut().insert(key, m.clone());
        Ok(m)
    }

    /// The packed model of `candidate` (not fine-tuned) with its layers priced, for the
    /// board runs that calibrate the instruction model.
    pub fn pack(&self, candidate: &Candidate) -> Result<(packed::Packed, Vec<LayerCost>)> {
        let model = self.build(candidate, false)?;
        let packed = packed::pack(&model.graph)?;
        let layers = layer_costs(&model.graph, &packed)?;
        Ok((packed, layers))
    }

    fn measure_fresh(&self, candidate: &Candidate) -> Result<Measurement> {
        let model = self.build(candidate, true)?;
        let packed = packed::pack(&model.graph)?;
        Ok(Measurement {
            accuracy: train::evaluate(&model, &self.validation)? as f64,
            model_bytes: packed.blob_bytes(),
            arena_bytes: packed.arena_bytes,
            layers: layer_costs(&model.graph, &packed)?,
        })
    }

    /// The baseline with `candidate`'s plan applied as `compress` applies it: the plan's
    /// pruner (through the built-in registry) and its speedup, then the quantizer; then
    /// fine-tuned (when `tune` and the probe fine-tunes) or calibrated.
    fn build(&self, candidate: &Candidate, tune: bool) -> Result<Model> {
        let tune = self.fine_tune.as_ref().filter(|_| tune);
        let plan = Plan::from_json_str(&candidate.plan(&self.space).to_string(), "candidate")?;
        let registry = Registry::builtin();
        let speedup = match &plan.pruner {
            Some(stage) => registry.speedup(&stage.algorithm, &stage.options)?,
            None => false,
        };
        // A copy of the baseline's variables when there is one to be had; else the
        // baseline's own, which only masks and a quantizer on the graph may touch.
        let (mut model, owned) = match &self.fresh {
            Some(fresh) => (fresh()?, true),
            None if tune.is_some() || speedup => {
                return Err(Error::Auto(format!(
                    "{} needs fresh copies of the baseline (Probe::with_fresh_copies)",
                    candidate.key(&self.space)
                )))
            }
            None => (self.model.clone(), false),
        };
        if let Some(stage) = &plan.pruner {
            let mut pruner = registry.make(&stage.algorithm, &stage.options)?;
            if owned {
                pruner.compress(&mut model.graph, &stage.config_list)?;
            } else {
                let layers = pruner.resolve(&model.graph, &stage.config_list)?;
                attach_masks(pruner.as_mut(), &mut model.graph, &layers)?;
            }
            if speedup {
                speed_up(&mut model)?;
            }
        }
        if let Some(stage) = &plan.quantizer {
            let quantizer = QuantizerKind::parse(&stage.algorithm)?.make();
            quant::bind(quantizer, &mut model.graph, &stage.config_list)?;
        }
        match tune {
            Some(tune) => {
                let mut cfg = TrainConfig::new(1, tune.seed);
                // A plan's own rate (a binary plan's) before the probe's.
                cfg.lr = (plan.quantizer.as_ref())
                    .and_then(|q| q.lr)
                    .unwrap_or(tune.lr);
                cfg.progress = false;
                cfg.label = "probe".into();
                // QAT's ranges are tracked while it trains: no separate calibration.
                let check = self.validation.subset(1);
                train::train(&mut model, &tune.images, &check, &cfg, None)?;
            }
            None => {
                let device = &self.model.device;
                for batch in Batcher::new(&self.calibration, 256, Order::Sequential, device) {
                    model.graph.forward_t(&batch?.images, true)?;
                }
            }
        }
        Ok(model)
    }
}

/// Each weighted op of `packed` with its encoding and MACs (dense and nonzero).
fn layer_costs(graph: &Graph, packed: &packed::Packed) -> Result<Vec<LayerCost>> {
    let shapes = infer_shapes(graph);
    let stored = stored_weights(&packed.model()?)?;
    Ok((packed.weighted_layers.iter().zip(&stored))
        .map(|(name, &stored)| {
            let macs = (graph.nodes().iter())
                .position(|n| &n.name == name)
                .map_or(0, |i| node_macs(graph, i, &shapes[i]));
            layer_cost(name, macs, stored)
        })
        .collect())
}

/// Layer `name` of `macs` dense MACs, stored as `(kind, encoding, density)`.
fn layer_cost(name: &str, macs: usize, (kind, encoding, density): StoredWeights) -> LayerCost {
    LayerCost {
        name: name.to_string(),
        kind: kind.to_string(),
        encoding: encoding.to_string(),
        macs,
        nonzero_macs: (macs as f64 * density).round() as usize,
    }
}

/// A weighted op as stored: its kind and encoding (as [`LayerCost`] names them) and its
/// density.
type StoredWeights = (&'static str, &'static str, f64);

/// Each weighted op as stored.
fn stored_weights(model: &packed::sprig_runtime::Model<'_>) -> Result<Vec<StoredWeights>> {
    let layers = model.layer_weights().map_err(|e| Error::Export {
        path: packed::PACKED_FILE.into(),
        message: format!("cannot read the weights back: {e}"),
    })?;
    Ok(layers
        .iter()
        .map(|l| {
            let kind = match l.kind {
                OpKind::DepthwiseConv2d => "depthwise",
                OpKind::FullyConnected | OpKind::BinaryFullyConnected => "fc",
                _ => "conv",
            };
            let encoding = match l.kind {
                OpKind::BinaryConv2d | OpKind::BinaryFullyConnected => "binary",
                _ => l.encoding.name(),
            };
            (kind, encoding, l.density())
        })
        .collect())
}

//! One node's operation: a closed set of layer kinds the pruners, quantizers and exporters
//! know how to walk.

use std::collections::BTreeMap;

use candle_core::{Result, Tensor};

use super::{
    Add, AvgPool2d, BatchNorm2d, Conv2d, Conv2dConfig, Flatten, GlobalAvgPool, Linear, MaxPool2d,
    OpType, ReLU, ReLU6,
};

/// State entries that are running statistics, not trained parameters (PyTorch's buffers).
pub const BUFFERS: [&str; 2] = ["running_mean", "running_var"];

/// A layer of a [`super::Graph`].
#[derive(Debug, Clone)]
pub enum Layer {
    Conv2d(Conv2d),
    Linear(Linear),
    BatchNorm2d(BatchNorm2d),
    ReLU(ReLU),
    ReLU6(ReLU6),
    MaxPool2d(MaxPool2d),
    AvgPool2d(AvgPool2d),
    GlobalAvgPool(GlobalAvgPool),
    Flatten(Flatten),
    Add(Add),
}

impl Layer {
    pub fn op_type(&self) -> OpType {
        match self {
            Layer::Conv2d(_) => OpType::Conv2d,
            Layer::Linear(_) => OpType::Linear,
            Layer::BatchNorm2d(_) => OpType::BatchNorm2d,
            Layer::ReLU(_) => OpType::ReLU,
            Layer::ReLU6(_) => OpType::ReLU6,
            Layer::MaxPool2d(_) => OpType::MaxPool2d,
            Layer::AvgPool2d(_) => OpType::AvgPool2d,
            Layer::GlobalAvgPool(_) => OpType::AdaptiveAvgPool2d,
            Layer::Flatten(_) => OpType::Flatten,
            Layer::Add(_) => OpType::Add,
        }
    }

    /// The weight tensor of a weighted layer (Conv2d, Linear).
    pub fn weight(&self) -> Option<&candle_core::Tensor> {
        match self {
            Layer::Conv2d(c) => Some(c.weight()),
            Layer::Linear(l) => Some(l.weight()),
            _ => None,
        }
    }

    /// The parameter a pruner's weight mask covers: a Conv2d or Linear weight, or a
    /// BatchNorm2d's γ.
    pub fn maskable_weight(&self) -> Option<&candle_core::Tensor> {
        match self {
            Layer::BatchNorm2d(b) => Some(b.weight()),
            other => other.weight(),
        }
    }

    /// The parameter a pruner's bias mask covers: a Conv2d or Linear bias, or a
    /// BatchNorm2d's β.
    pub fn maskable_bias(&self) -> Option<&candle_core::Tensor> {
        match self {
            Layer::Conv2d(c) => c.bias(),
            Layer::Linear(l) => l.bias(),
            Layer::BatchNorm2d(b) => Some(b.bias()),
            _ => None,
        }
    }

    /// The layer's state as PyTorch's `state_dict` names it: `(suffix, tensor)` for every
    /// parameter and running statistic (`weight`, `bias`, `running_mean`, `running_var`),
    /// stored under `<op_name>.<suffix>`.
    pub fn state(&self) -> Vec<(&'static str, &Tensor)> {
        let mut state = Vec::new();
        match self {
            Layer::Conv2d(c) => {
                state.push(("weight", c.weight()));
                state.extend(c.bias().map(|b| ("bias", b)));
            }
            Layer::Linear(l) => {
                state.push(("weight", l.weight()));
                state.extend(l.bias().map(|b| ("bias", b)));
            }
            Layer::BatchNorm2d(b) => state.extend([
                ("weight", b.weight()),
                ("bias", b.bias()),
                ("running_mean", b.running_mean()),
                ("running_var", b.running_var()),
            ]),
            _ => {}
        }
        state
    }

    /// Trained parameters (what PyTorch's `model.parameters()` counts: no running
    /// statistics).
    pub fn parameter_count(&self) -> usize {
        self.state()
            .iter()
            .filter(|(suffix, _)| !BUFFERS.contains(suffix))
            .map(|(_, t)| t.elem_count())
            .sum()
    }

    /// The same layer over `state`, named as [`Layer::state`] names it; entries left out
    /// keep their current tensor. Channel counts follow the new weight's shape (a
    /// depthwise conv stays depthwise), so a rewrite may change them.
    pub fn with_state(&self, state: &BTreeMap<&str, Tensor>) -> Result<Layer> {
        let current: BTreeMap<&str, &Tensor> = self.state().into_iter().collect();
        let get = |suffix: &str| state.get(suffix).or(current.get(suffix).copied()).cloned();
        let missing =
            |suffix: &str| candle_core::Error::Msg(format!("no `{suffix}` to rebuild from"));
        let weight = || get("weight").ok_or_else(|| missing("weight"));
        Ok(match self {
            Layer::Conv2d(c) => {
                let weight = weight()?;
                let old = c.config();
                let out = weight.dim(0)?;
                let config = if old.is_depthwise() {
                    Conv2dConfig {
                        in_channels: out,
                        out_channels: out,
                        groups: out,
                        ..*old
                    }
                } else {
                    Conv2dConfig {
                        in_channels: weight.dim(1)? * old.groups,
                        out_channels: out,
                        ..*old
                    }
                };
                Layer::Conv2d(Conv2d::from_parts(config, weight, get("bias")))
            }
            Layer::Linear(_) => Layer::Linear(Linear::from_parts(weight()?, get("bias"))?),
            Layer::BatchNorm2d(_) => Layer::BatchNorm2d(BatchNorm2d::from_parts(
                weight()?,
                get("bias").ok_or_else(|| missing("bias"))?,
                &get("running_mean").ok_or_else(|| missing("running_mean"))?,
                &get("running_var").ok_or_else(|| missing("running_var"))?,
            )?),
            other => other.clone(),
        })
    }

    /// Number of inputs the layer takes.
    pub fn arity(&self) -> usize {
        match self {
            Layer::Add(_) => 2,
            _ => 1,
        }
    }

    /// True for activations that export fuses into the layer before them.
    pub fn is_activation(&self) -> bool {
        matches!(self, Layer::ReLU(_) | Layer::ReLU6(_))
    }
}

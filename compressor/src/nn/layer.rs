//! One node's operation: a closed set of layer kinds the pruners, quantizers and exporters
//! know how to walk.

use super::{
    Add, AvgPool2d, BatchNorm2d, Conv2d, Flatten, GlobalAvgPool, Linear, MaxPool2d, OpType, ReLU,
    ReLU6,
};

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

//! Operator types, named as NNI and PyTorch name them so `config_list`s carry over.

use std::fmt;
use std::str::FromStr;

/// The type of one layer in a [`crate::nn::Graph`], spelled like PyTorch's module class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpType {
    Conv2d,
    Linear,
    BatchNorm2d,
    ReLU,
    ReLU6,
    MaxPool2d,
    AvgPool2d,
    AdaptiveAvgPool2d,
    Flatten,
    Add,
}

impl OpType {
    /// Every op type, in declaration order (used to list valid choices in errors).
    pub const ALL: [OpType; 10] = [
        OpType::Conv2d,
        OpType::Linear,
        OpType::BatchNorm2d,
        OpType::ReLU,
        OpType::ReLU6,
        OpType::MaxPool2d,
        OpType::AvgPool2d,
        OpType::AdaptiveAvgPool2d,
        OpType::Flatten,
        OpType::Add,
    ];

    /// The PyTorch / NNI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OpType::Conv2d => "Conv2d",
            OpType::Linear => "Linear",
            OpType::BatchNorm2d => "BatchNorm2d",
            OpType::ReLU => "ReLU",
            OpType::ReLU6 => "ReLU6",
            OpType::MaxPool2d => "MaxPool2d",
            OpType::AvgPool2d => "AvgPool2d",
            OpType::AdaptiveAvgPool2d => "AdaptiveAvgPool2d",
            OpType::Flatten => "Flatten",
            OpType::Add => "Add",
        }
    }

    /// Layers that own a weight tensor (the ones pruners and weight quantizers act on).
    pub fn has_weight(self) -> bool {
        matches!(self, OpType::Conv2d | OpType::Linear)
    }
}

impl fmt::Display for OpType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Returned when a string names no [`OpType`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownOpType(pub String);

impl FromStr for OpType {
    type Err = UnknownOpType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OpType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownOpType(s.to_string()))
    }
}

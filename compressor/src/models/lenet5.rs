//! LeNet-5 (LeCun et al. 1998) for 28×28×1 inputs, with ReLU and max pooling:
//! conv 6@5×5 (pad 2) → pool → conv 16@5×5 → pool → fc 120 → fc 84 → fc classes.

use candle_nn::VarBuilder;

use crate::nn::{
    Conv2d, Conv2dConfig, Flatten, Graph, Layer, Linear, MaxPool2d, Pool2dConfig, ReLU, Source,
};

pub fn build(num_classes: usize, vb: VarBuilder) -> candle_core::Result<Graph> {
    let mut g = Graph::new([1, 28, 28]);
    let pool = Pool2dConfig {
        kernel_size: 2,
        stride: 2,
    };
    let x = Source::Input;
    let x = g.push(
        "conv1",
        Layer::Conv2d(Conv2d::new(
            Conv2dConfig::new(1, 6, 5).padding(2),
            vb.pp("conv1"),
        )?),
        &[x],
    );
    let x = g.push("relu1", Layer::ReLU(ReLU), &[x]);
    let x = g.push("pool1", Layer::MaxPool2d(MaxPool2d(pool)), &[x]);
    let x = g.push(
        "conv2",
        Layer::Conv2d(Conv2d::new(Conv2dConfig::new(6, 16, 5), vb.pp("conv2"))?),
        &[x],
    );
    let x = g.push("relu2", Layer::ReLU(ReLU), &[x]);
    let x = g.push("pool2", Layer::MaxPool2d(MaxPool2d(pool)), &[x]);
    let x = g.push("flatten", Layer::Flatten(Flatten), &[x]);
    let x = g.push(
        "fc1",
        Layer::Linear(Linear::new(16 * 5 * 5, 120, vb.pp("fc1"))?),
        &[x],
    );
    let x = g.push("relu3", Layer::ReLU(ReLU), &[x]);
    let x = g.push(
        "fc2",
        Layer::Linear(Linear::new(120, 84, vb.pp("fc2"))?),
        &[x],
    );
    let x = g.push("relu4", Layer::ReLU(ReLU), &[x]);
    g.push(
        "fc3",
        Layer::Linear(Linear::new(84, num_classes, vb.pp("fc3"))?),
        &[x],
    );
    Ok(g)
}

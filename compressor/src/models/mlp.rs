//! A two-hidden-layer perceptron: flatten → fc 256 → fc 128 → fc classes.

use candle_nn::VarBuilder;

use crate::nn::{Flatten, Graph, Layer, Linear, ReLU, Source};

pub fn build(num_classes: usize, vb: VarBuilder) -> candle_core::Result<Graph> {
    let mut g = Graph::new([1, 28, 28]);
    let x = g.push("flatten", Layer::Flatten(Flatten), &[Source::Input]);
    let x = g.push(
        "fc1",
        Layer::Linear(Linear::new(28 * 28, 256, vb.pp("fc1"))?),
        &[x],
    );
    let x = g.push("relu1", Layer::ReLU(ReLU), &[x]);
    let x = g.push(
        "fc2",
        Layer::Linear(Linear::new(256, 128, vb.pp("fc2"))?),
        &[x],
    );
    let x = g.push("relu2", Layer::ReLU(ReLU), &[x]);
    g.push(
        "fc3",
        Layer::Linear(Linear::new(128, num_classes, vb.pp("fc3"))?),
        &[x],
    );
    Ok(g)
}

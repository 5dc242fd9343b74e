//! LeNet-5 (LeCun et al. 1998) for 28×28×1 inputs, with ReLU and max pooling:
//! conv 6@5×5 (pad 2) → pool → conv 16@5×5 → pool → fc 120 → fc 84 → fc classes.
//!
//! `lenet5_bn` ([`build_bn`]) is the same network with a BatchNorm2d after each
//! convolution (`conv1` → `bn1` → `relu1` → `pool1`, likewise `bn2`), the model Network
//! Slimming (`SlimPruner`) prunes.

use candle_nn::VarBuilder;

use crate::nn::{
    BatchNorm2d, Conv2d, Conv2dConfig, Flatten, Graph, Layer, Linear, MaxPool2d, Pool2dConfig,
    ReLU, Source,
};

/// LeNet-5.
pub fn build(num_classes: usize, vb: VarBuilder) -> candle_core::Result<Graph> {
    build_with(num_classes, vb, false)
}

/// LeNet-5 with a BatchNorm2d after each convolution (`lenet5_bn`).
pub fn build_bn(num_classes: usize, vb: VarBuilder) -> candle_core::Result<Graph> {
    build_with(num_classes, vb, true)
}

fn build_with(num_classes: usize, vb: VarBuilder, batch_norm: bool) -> candle_core::Result<Graph> {
    let mut g = Graph::new([1, 28, 28]);
    let pool = Pool2dConfig {
        kernel_size: 2,
        stride: 2,
    };
    // With batch norms the convolutions keep their bias although the batch norm after
    // them cancels it in training: PyTorch's LeNet-5-with-BN examples keep `nn.Conv2d`'s
    // default bias, so their `state_dict`s load with `--weights`, and folding absorbs it
    // before deployment. It also gives Slim's conv bias masks something to cover.
    let block =
        |g: &mut Graph, i: usize, cfg: Conv2dConfig, x: Source| -> candle_core::Result<Source> {
            let conv = format!("conv{i}");
            let out = cfg.out_channels;
            let mut x = g.push(&conv, Layer::Conv2d(Conv2d::new(cfg, vb.pp(&conv))?), &[x]);
            if batch_norm {
                let bn = format!("bn{i}");
                x = g.push(
                    &bn,
                    Layer::BatchNorm2d(BatchNorm2d::new(out, vb.pp(&bn))?),
                    &[x],
                );
            }
            let x = g.push(format!("relu{i}"), Layer::ReLU(ReLU), &[x]);
            Ok(g.push(format!("pool{i}"), Layer::MaxPool2d(MaxPool2d(pool)), &[x]))
        };
    let x = block(
        &mut g,
        1,
        Conv2dConfig::new(1, 6, 5).padding(2),
        Source::Input,
    )?;
    let x = block(&mut g, 2, Conv2dConfig::new(6, 16, 5), x)?;
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

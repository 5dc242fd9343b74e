//! A ResNet-8 in the style of MLPerf Tiny's image-classification model, sized for
//! 28×28×1: a 3×3 stem with 16 channels, three residual stacks (16, 32, 64 channels; the
//! last two downsample by 2 with a 1×1 projection shortcut), global average pool, fc.

use candle_nn::VarBuilder;

use crate::nn::{
    Add, BatchNorm2d, Conv2d, Conv2dConfig, Flatten, GlobalAvgPool, Graph, Layer, Linear, ReLU,
    Source,
};

fn conv_bn(
    g: &mut Graph,
    vb: &VarBuilder,
    prefix: &str,
    cfg: Conv2dConfig,
    x: Source,
) -> candle_core::Result<Source> {
    let conv = format!("{prefix}.conv");
    let bn = format!("{prefix}.bn");
    let out = cfg.out_channels;
    let x = g.push(
        &conv,
        Layer::Conv2d(Conv2d::new(cfg.no_bias(), vb.pp(&conv))?),
        &[x],
    );
    Ok(g.push(
        &bn,
        Layer::BatchNorm2d(BatchNorm2d::new(out, vb.pp(&bn))?),
        &[x],
    ))
}

pub fn build(num_classes: usize, vb: VarBuilder) -> candle_core::Result<Graph> {
    let mut g = Graph::new([1, 28, 28]);
    let x = conv_bn(
        &mut g,
        &vb,
        "stem",
        Conv2dConfig::new(1, 16, 3).padding(1),
        Source::Input,
    )?;
    let mut x = g.push("stem.relu", Layer::ReLU(ReLU), &[x]);
    let mut channels = 16;
    for (i, out) in [16usize, 32, 64].into_iter().enumerate() {
        let stack = format!("stack{}", i + 1);
        let stride = if out == channels { 1 } else { 2 };
        let y = conv_bn(
            &mut g,
            &vb,
            &format!("{stack}.block1"),
            Conv2dConfig::new(channels, out, 3)
                .stride(stride)
                .padding(1),
            x,
        )?;
        let y = g.push(format!("{stack}.relu1"), Layer::ReLU(ReLU), &[y]);
        let y = conv_bn(
            &mut g,
            &vb,
            &format!("{stack}.block2"),
            Conv2dConfig::new(out, out, 3).padding(1),
            y,
        )?;
        let shortcut = if stride == 1 {
            x
        } else {
            conv_bn(
                &mut g,
                &vb,
                &format!("{stack}.shortcut"),
                Conv2dConfig::new(channels, out, 1).stride(2),
                x,
            )?
        };
        let sum = g.push(format!("{stack}.add"), Layer::Add(Add), &[y, shortcut]);
        x = g.push(format!("{stack}.relu2"), Layer::ReLU(ReLU), &[sum]);
        channels = out;
    }
    let x = g.push("pool", Layer::GlobalAvgPool(GlobalAvgPool), &[x]);
    let x = g.push("flatten", Layer::Flatten(Flatten), &[x]);
    g.push(
        "fc",
        Layer::Linear(Linear::new(channels, num_classes, vb.pp("fc"))?),
        &[x],
    );
    Ok(g)
}

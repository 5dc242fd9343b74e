//! A depthwise-separable CNN in the style of MLPerf Tiny's DS-CNN, sized for 28×28×1:
//! a 3×3 stride-2 stem with 32 channels, three (depthwise 3×3, pointwise 1×1) blocks with
//! batch norm and ReLU, global average pool, fc.

use candle_nn::VarBuilder;

use crate::nn::{
    BatchNorm2d, Conv2d, Conv2dConfig, Flatten, GlobalAvgPool, Graph, Layer, Linear, ReLU, Source,
};

fn conv_bn_relu(
    g: &mut Graph,
    vb: &VarBuilder,
    prefix: &str,
    cfg: Conv2dConfig,
    x: Source,
) -> candle_core::Result<Source> {
    let out = cfg.out_channels;
    let x = g.push(
        format!("{prefix}.conv"),
        Layer::Conv2d(Conv2d::new(cfg.no_bias(), vb.pp(format!("{prefix}.conv")))?),
        &[x],
    );
    let x = g.push(
        format!("{prefix}.bn"),
        Layer::BatchNorm2d(BatchNorm2d::new(out, vb.pp(format!("{prefix}.bn")))?),
        &[x],
    );
    Ok(g.push(format!("{prefix}.relu"), Layer::ReLU(ReLU), &[x]))
}

pub fn build(num_classes: usize, vb: VarBuilder) -> candle_core::Result<Graph> {
    const WIDTH: usize = 32;
    let mut g = Graph::new([1, 28, 28]);
    let mut x = conv_bn_relu(
        &mut g,
        &vb,
        "stem",
        Conv2dConfig::new(1, WIDTH, 3).stride(2).padding(1),
        Source::Input,
    )?;
    for i in 1..=3 {
        let dw = Conv2dConfig::new(WIDTH, WIDTH, 3).padding(1).groups(WIDTH);
        x = conv_bn_relu(&mut g, &vb, &format!("block{i}.dw"), dw, x)?;
        x = conv_bn_relu(
            &mut g,
            &vb,
            &format!("block{i}.pw"),
            Conv2dConfig::new(WIDTH, WIDTH, 1),
            x,
        )?;
    }
    let x = g.push("pool", Layer::GlobalAvgPool(GlobalAvgPool), &[x]);
    let x = g.push("flatten", Layer::Flatten(Flatten), &[x]);
    g.push(
        "fc",
        Layer::Linear(Linear::new(WIDTH, num_classes, vb.pp("fc"))?),
        &[x],
    );
    Ok(g)
}

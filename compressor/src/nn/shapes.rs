//! Shape inference over a graph: every node's output shape and cost, without running it.

use super::{Graph, Layer, Source};

/// Output shape (without the batch dimension) of every node.
pub fn infer_shapes(graph: &Graph) -> Vec<Vec<usize>> {
    let input: Vec<usize> = graph.input_shape().to_vec();
    let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(graph.nodes().len());
    for node in graph.nodes() {
        let of = |s: &Source| match s {
            Source::Input => input.clone(),
            Source::Node(j) => shapes[*j].clone(),
        };
        let x = of(&node.inputs[0]);
        let out = match &node.layer {
            Layer::Conv2d(c) => {
                let cfg = c.config();
                vec![
                    cfg.out_channels,
                    cfg.output_size(x[1]),
                    cfg.output_size(x[2]),
                ]
            }
            Layer::Linear(l) => vec![l.out_features()],
            Layer::MaxPool2d(p) => vec![x[0], p.0.output_size(x[1]), p.0.output_size(x[2])],
            Layer::AvgPool2d(p) => vec![x[0], p.0.output_size(x[1]), p.0.output_size(x[2])],
            Layer::GlobalAvgPool(_) => vec![x[0], 1, 1],
            Layer::Flatten(_) => vec![x.iter().product()],
            Layer::BatchNorm2d(_) | Layer::ReLU(_) | Layer::ReLU6(_) | Layer::Add(_) => x,
        };
        shapes.push(out);
    }
    shapes
}

/// Multiply-accumulates of one inference of node `i` (0 for layers without weights),
/// given the inferred output shape.
pub fn node_macs(graph: &Graph, i: usize, out_shape: &[usize]) -> usize {
    match &graph.nodes()[i].layer {
        Layer::Conv2d(c) => {
            let cfg = c.config();
            out_shape.iter().product::<usize>()
                * (cfg.in_channels / cfg.groups)
                * cfg.kernel_size
                * cfg.kernel_size
        }
        Layer::Linear(l) => l.in_features() * l.out_features(),
        _ => 0,
    }
}

/// Output positions each weight of node `i` is used at (so MACs = weights × positions).
pub fn weight_reuse(graph: &Graph, i: usize, out_shape: &[usize]) -> usize {
    match &graph.nodes()[i].layer {
        Layer::Conv2d(_) => out_shape.iter().skip(1).product(),
        Layer::Linear(_) => 1,
        _ => 0,
    }
}

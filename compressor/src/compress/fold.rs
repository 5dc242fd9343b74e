//! Batch-norm folding: `conv → bn` becomes one conv with `W' = W·γ/σ` and
//! `b' = (b − μ)·γ/σ + β` (σ from the running variance), as the int8 chip runs it. QAT
//! then trains and quantizes the folded weights (Jacob et al. 2018, §3.2, with frozen
//! statistics).

use std::collections::BTreeMap;

use crate::models::Model;
use crate::nn::{Layer, Rewrite, Source};
use crate::Result;

/// Folds every BatchNorm2d whose input is a Conv2d read by nothing else. Returns the
/// names of the folded batch norms.
pub fn fold_batch_norms(model: &mut Model) -> Result<Vec<String>> {
    let mut folded = Vec::new();
    let mut rewrite = Rewrite::new(&mut model.graph, &model.varmap)?;
    while let Some((conv_i, bn_i)) = find_foldable(&rewrite) {
        let nodes = rewrite.graph().nodes();
        let bn_name = nodes[bn_i].name.clone();
        let (Layer::Conv2d(conv), Layer::BatchNorm2d(bn)) =
            (&nodes[conv_i].layer, &nodes[bn_i].layer)
        else {
            unreachable!("find_foldable returns a conv and a batch norm")
        };
        let (scale, shift) = bn.eval_scale_shift()?;
        let out = conv.config().out_channels;
        let weight = conv
            .weight()
            .broadcast_mul(&scale.reshape((out, 1, 1, 1))?)?;
        let bias = match conv.bias() {
            Some(b) => ((b * &scale)? + &shift)?,
            None => shift,
        };
        rewrite.set_state(conv_i, BTreeMap::from([("weight", weight), ("bias", bias)]))?;
        // The folded conv's pruned channels are zero already (γ = β = 0 makes the
        // folded scale and shift 0), so the batch norm's masks go with it.
        rewrite.remove_node(bn_i)?;
        folded.push(bn_name);
    }
    Ok(folded)
}

fn find_foldable(rewrite: &Rewrite) -> Option<(usize, usize)> {
    let g = rewrite.graph();
    g.nodes()
        .iter()
        .enumerate()
        .find_map(|(i, n)| match (&n.layer, n.inputs.as_slice()) {
            (Layer::BatchNorm2d(_), [Source::Node(c)])
                if matches!(g.nodes()[*c].layer, Layer::Conv2d(_))
                    && g.consumers(*c).len() == 1 =>
            {
                Some((*c, i))
            }
            _ => None,
        })
}

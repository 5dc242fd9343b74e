//! Batch-norm folding: `conv → bn` becomes one conv with `W' = W·γ/σ` and
//! `b' = (b − μ)·γ/σ + β` (σ from the running variance), as the int8 chip runs it. QAT
//! then trains and quantizes the folded weights (Jacob et al. 2018, §3.2, with frozen
//! statistics).

use candle_core::Var;

use crate::models::Model;
use crate::nn::{Layer, Source};
use crate::Result;

/// Folds every BatchNorm2d whose input is a Conv2d read by nothing else. Returns the
/// names of the folded batch norms.
pub fn fold_batch_norms(model: &mut Model) -> Result<Vec<String>> {
    let mut folded = Vec::new();
    while let Some((conv_i, bn_i)) = find_foldable(model) {
        let nodes = model.graph.nodes();
        let (conv_name, bn_name) = (nodes[conv_i].name.clone(), nodes[bn_i].name.clone());
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
        let (weight_var, bias_var) = {
            let mut vars = model
                .varmap
                .data()
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let weight_var = Var::from_tensor(&weight.detach().copy()?)?;
            let bias_var = Var::from_tensor(&bias.detach().copy()?)?;
            vars.insert(format!("{conv_name}.weight"), weight_var.clone());
            vars.insert(format!("{conv_name}.bias"), bias_var.clone());
            for suffix in ["weight", "bias", "running_mean", "running_var"] {
                vars.remove(&format!("{bn_name}.{suffix}"));
            }
            (weight_var, bias_var)
        };
        let nodes = model.graph.nodes_mut();
        if let Layer::Conv2d(conv) = &mut nodes[conv_i].layer {
            conv.set_parameters(
                weight_var.as_tensor().clone(),
                Some(bias_var.as_tensor().clone()),
            );
        }
        nodes.remove(bn_i);
        for node in nodes.iter_mut() {
            for s in node.inputs.iter_mut() {
                if let Source::Node(j) = s {
                    if *j == bn_i {
                        *j = conv_i;
                    } else if *j > bn_i {
                        *j -= 1;
                    }
                }
            }
        }
        model.graph.remove_masks(&bn_name);
        folded.push(bn_name);
    }
    Ok(folded)
}

fn find_foldable(model: &Model) -> Option<(usize, usize)> {
    let g = &model.graph;
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

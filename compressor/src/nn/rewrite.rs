//! Graph rewrites: replace a layer's tensors, remove a node, cut channels. Every pass
//! that changes a graph's structure (batch-norm folding, speedup) edits it here, so the
//! graph, the variables training and checkpoints read, and the masks stay one model.

use std::collections::BTreeMap;

use candle_core::{Tensor, Var};
use candle_nn::VarMap;

use super::{Graph, Layer, Source};
use crate::{Error, Result};

/// Which channels of a node a cut selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Its output channels: filters, a Linear's rows, a batch norm's or depthwise conv's
    /// per-channel tensors.
    Outputs,
    /// Its input channels: a conv's weight columns (dim 1), a Linear's columns. A
    /// depthwise conv's inputs are its outputs.
    Inputs,
}

/// A graph and the variables that hold its parameters, edited together.
pub struct Rewrite<'a> {
    graph: &'a mut Graph,
    varmap: &'a VarMap,
}

impl<'a> Rewrite<'a> {
    /// Rewrites `graph`, whose parameters are `varmap`'s variables. Rewrites run before a
    /// quantizer binds: its per-channel state would no longer fit.
    pub fn new(graph: &'a mut Graph, varmap: &'a VarMap) -> Result<Self> {
        if graph.quant().is_some() {
            return Err(Error::Layer {
                layer: "graph".into(),
                message: "a quantized graph cannot be rewritten; fold and speed up before \
                          the quantizer binds"
                    .into(),
            });
        }
        Ok(Self { graph, varmap })
    }

    pub fn graph(&self) -> &Graph {
        self.graph
    }

    /// Replaces the entries of node `i`'s state named in `state` (see [`Layer::state`];
    /// the others stay): each becomes a fresh variable under `<op_name>.<suffix>`, so
    /// training, checkpoints and exports read what the forward pass computes with.
    pub fn set_state(&mut self, i: usize, state: BTreeMap<&str, Tensor>) -> Result<()> {
        let name = self.graph.nodes()[i].name.clone();
        let mut held = BTreeMap::new();
        {
            let mut vars = self.varmap.data().lock().unwrap_or_else(|p| p.into_inner());
            for (suffix, tensor) in state {
                let var = Var::from_tensor(&tensor.detach().copy()?)?;
                held.insert(suffix, var.as_tensor().clone());
                vars.insert(format!("{name}.{suffix}"), var);
            }
        }
        let layer = self.graph.nodes()[i].layer.with_state(&held)?;
        self.graph.nodes_mut()[i].layer = layer;
        Ok(())
    }

    /// Removes node `i`, which must read exactly one input: its readers read that input
    /// instead. Its variables and masks go with it.
    pub fn remove_node(&mut self, i: usize) -> Result<()> {
        let node = &self.graph.nodes()[i];
        let [input] = node.inputs.as_slice() else {
            return Err(Error::Layer {
                layer: node.name.clone(),
                message: "only a node with one input can be removed".into(),
            });
        };
        let (input, name) = (*input, node.name.clone());
        {
            let mut vars = self.varmap.data().lock().unwrap_or_else(|p| p.into_inner());
            for (suffix, _) in node.layer.state() {
                vars.remove(&format!("{name}.{suffix}"));
            }
        }
        let nodes = self.graph.nodes_mut();
        nodes.remove(i);
        for node in nodes.iter_mut() {
            for s in node.inputs.iter_mut() {
                match *s {
                    Source::Node(j) if j == i => *s = input,
                    Source::Node(j) if j > i => *s = Source::Node(j - 1),
                    _ => {}
                }
            }
        }
        self.graph.remove_masks(&name);
        Ok(())
    }

    /// Keeps only channels `keep` (ascending indices) on `side` of node `i`: its tensors
    /// and its masks are cut alike, and its channel counts follow.
    pub fn keep_channels(&mut self, i: usize, side: Side, keep: &[usize]) -> Result<()> {
        let node = &self.graph.nodes()[i];
        let name = node.name.clone();
        let state = node.layer.state();
        let Some((_, first)) = state.first() else {
            return Err(Error::Layer {
                layer: name,
                message: format!("a {} has no channels to cut", node.layer.op_type()),
            });
        };
        let index = Tensor::from_vec(
            keep.iter().map(|&c| c as u32).collect::<Vec<_>>(),
            keep.len(),
            first.device(),
        )?;
        let mut cut_state = BTreeMap::new();
        for (suffix, tensor) in state {
            let axis = channel_axis(&node.layer, side, suffix).map_err(|message| Error::Layer {
                layer: name.clone(),
                message,
            })?;
            if let Some(axis) = axis {
                cut_state.insert(suffix, tensor.index_select(&index, axis)?);
            }
        }
        let cut = |mask: Option<&Tensor>, suffix| -> Result<Option<Tensor>> {
            match (mask, channel_axis(&node.layer, side, suffix)) {
                (Some(m), Ok(Some(axis))) => Ok(Some(m.index_select(&index, axis)?)),
                _ => Ok(None),
            }
        };
        let weight_mask = cut(self.graph.masks().get(&name), "weight")?;
        let bias_mask = cut(self.graph.bias_masks().get(&name), "bias")?;
        self.set_state(i, cut_state)?;
        if let Some(m) = weight_mask {
            self.graph.set_mask(&name, m);
        }
        if let Some(m) = bias_mask {
            self.graph.set_bias_mask(&name, m);
        }
        Ok(())
    }
}

/// The axis of `layer`'s state entry `suffix` that holds the channels on `side`, or
/// `None` where the entry has none (a bias on the input side); why not, for a grouped
/// conv, whose groups a cut would break.
fn channel_axis(
    layer: &Layer,
    side: Side,
    suffix: &str,
) -> std::result::Result<Option<usize>, String> {
    match (layer, side) {
        (Layer::Conv2d(c), _) if c.config().groups > 1 && !c.config().is_depthwise() => {
            Err(format!(
                "a conv with {} groups cannot lose channels",
                c.config().groups
            ))
        }
        (Layer::Conv2d(c), Side::Inputs) if !c.config().is_depthwise() => {
            Ok((suffix == "weight").then_some(1))
        }
        (Layer::Linear(_), Side::Inputs) => Ok((suffix == "weight").then_some(1)),
        // Output channels come first in every tensor; a batch norm's and a depthwise
        // conv's inputs are their outputs.
        _ => Ok(Some(0)),
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use candle_nn::VarBuilder;

    use super::*;
    use crate::nn::{Conv2d, Conv2dConfig, ReLU};

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// conv `a` (1 → 3 channels, 1×1) → ReLU → conv `b` (3 → 2, 1×1), `a`'s filter k
    /// all k + 1, `b` masked with a distinct pattern.
    fn graph(varmap: &VarMap) -> Graph {
        let vb = VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu);
        let mut g = Graph::new([1, 4, 4]);
        let a = Conv2d::new(Conv2dConfig::new(1, 3, 1), vb.pp("a")).unwrap();
        let x = g.push("a", Layer::Conv2d(a), &[Source::Input]);
        let x = g.push("relu", Layer::ReLU(ReLU), &[x]);
        let b = Conv2d::new(Conv2dConfig::new(3, 2, 1), vb.pp("b")).unwrap();
        g.push("b", Layer::Conv2d(b), &[x]);
        let vars = varmap.data().lock().unwrap();
        let filters = Tensor::new(&[1f32, 2., 3.], &Device::Cpu).unwrap();
        vars["a.weight"]
            .set(&filters.reshape((3, 1, 1, 1)).unwrap())
            .unwrap();
        drop(vars);
        let mask = Tensor::new(&[[1f32, 0., 1.], [0., 1., 1.]], &Device::Cpu).unwrap();
        g.set_mask("b", mask.reshape((2, 3, 1, 1)).unwrap());
        g
    }

    #[test]
    fn a_cut_takes_tensors_masks_and_variables_along() {
        let varmap = VarMap::new();
        let mut g = graph(&varmap);
        let mut rewrite = Rewrite::new(&mut g, &varmap).unwrap();
        rewrite.keep_channels(0, Side::Outputs, &[0, 2]).unwrap();
        rewrite.keep_channels(2, Side::Inputs, &[0, 2]).unwrap();

        let Layer::Conv2d(a) = &g.nodes()[0].layer else {
            unreachable!()
        };
        assert_eq!(values(a.weight()), [1.0, 3.0]);
        assert_eq!(a.bias().unwrap().dims(), [2]);
        assert_eq!(a.config().out_channels, 2);
        let Layer::Conv2d(b) = &g.nodes()[2].layer else {
            unreachable!()
        };
        assert_eq!((b.config().in_channels, b.config().out_channels), (2, 2));
        assert_eq!(b.bias().unwrap().dims(), [2]);
        assert_eq!(values(&g.masks()["b"]), [1.0, 1.0, 0.0, 1.0]);

        // The variables are the layers' tensors: what training updates, the graph computes.
        let vars = varmap.data().lock().unwrap();
        assert_eq!(vars["a.weight"].dims(), [2, 1, 1, 1]);
        vars["a.weight"]
            .set(
                &Tensor::new(&[5f32, 6.], &Device::Cpu)
                    .unwrap()
                    .reshape((2, 1, 1, 1))
                    .unwrap(),
            )
            .unwrap();
        drop(vars);
        let Layer::Conv2d(a) = &g.nodes()[0].layer else {
            unreachable!()
        };
        assert_eq!(values(a.weight()), [5.0, 6.0]);
        let y = g.forward(&Tensor::ones((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap());
        assert_eq!(y.unwrap().dims(), [1, 2, 4, 4]);
    }

    #[test]
    fn removing_a_node_rewires_its_readers_and_drops_its_state() {
        let varmap = VarMap::new();
        let mut g = graph(&varmap);
        Rewrite::new(&mut g, &varmap)
            .unwrap()
            .remove_node(0)
            .unwrap();
        assert_eq!(g.nodes()[0].inputs, [Source::Input]);
        assert_eq!(g.nodes()[1].inputs, [Source::Node(0)]);
        let vars = varmap.data().lock().unwrap();
        assert!(!vars.contains_key("a.weight") && !vars.contains_key("a.bias"));
        assert!(vars.contains_key("b.weight"));
    }
}

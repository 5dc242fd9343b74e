//! A quantizer attached to a graph: the resolved per-layer configs and their states.

use std::collections::BTreeMap;
use std::sync::Mutex;

use candle_core::{Result, Tensor};

use super::{QuantContext, QuantState, Quantizer};
use crate::config::{LayerConfig, QuantType};

/// One quantized layer: its config and mutable state.
#[derive(Debug)]
pub struct LayerQuant {
    pub config: LayerConfig,
    state: Mutex<QuantState>,
    implicit: bool,
}

impl LayerQuant {
    fn new(config: LayerConfig, implicit: bool) -> Self {
        Self {
            config,
            state: Mutex::new(QuantState::default()),
            implicit,
        }
    }
    /// True for a layer no `config_list` dict selected, quantized because the chip
    /// needs its output on a grid ([`crate::nn::implicit_output_grids`]).
    pub fn is_implicit(&self) -> bool {
        self.implicit
    }
    /// A copy of the current state.
    pub fn state(&self) -> QuantState {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
    /// The grid of the layer's input, as last computed (copied without cloning the state:
    /// the forward pass asks for it every step).
    pub fn input_qparams(&self) -> Option<super::QParams> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .input_qparams
    }
    /// The grid of the layer's output, as last computed.
    pub fn output_qparams(&self) -> Option<super::QParams> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .output_qparams
    }
    /// Replaces the state (restoring a checkpoint).
    pub fn set_state(&self, state: QuantState) {
        match self.state.lock() {
            Ok(mut s) => *s = state,
            Err(p) => *p.into_inner() = state,
        }
    }
}

/// The quantizer plus its layers, shared by clones of a graph.
pub struct QuantBinding {
    quantizer: Box<dyn Quantizer>,
    layers: BTreeMap<String, LayerQuant>,
}

impl std::fmt::Debug for QuantBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantBinding")
            .field("quantizer", &self.quantizer.name())
            .field("layers", &self.layers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl QuantBinding {
    pub fn new(quantizer: Box<dyn Quantizer>, configs: Vec<LayerConfig>) -> Self {
        let layers = configs
            .into_iter()
            .map(|c| (c.name.clone(), LayerQuant::new(c, false)))
            .collect();
        Self { quantizer, layers }
    }

    /// Adds layers that no dict selected but the plan quantizes anyway
    /// ([`crate::nn::implicit_output_grids`]); a layer already bound keeps its config.
    pub fn with_implicit(mut self, configs: Vec<LayerConfig>) -> Self {
        for c in configs {
            self.layers
                .entry(c.name.clone())
                .or_insert_with(|| LayerQuant::new(c, true));
        }
        self
    }

    pub fn quantizer(&self) -> &dyn Quantizer {
        self.quantizer.as_ref()
    }
    pub fn layers(&self) -> &BTreeMap<String, LayerQuant> {
        &self.layers
    }
    pub fn layer(&self, name: &str) -> Option<&LayerQuant> {
        self.layers.get(name)
    }

    fn hook(
        &self,
        name: &str,
        kind: QuantType,
        x: &Tensor,
        training: bool,
        f: impl FnOnce(&dyn Quantizer, &Tensor, &QuantContext, &mut QuantState) -> Result<Tensor>,
    ) -> Result<Tensor> {
        match self.layers.get(name) {
            Some(layer) if layer.config.quantizes(kind) => {
                let ctx = QuantContext {
                    config: &layer.config,
                    training,
                };
                let mut state = layer.state.lock().unwrap_or_else(|p| p.into_inner());
                f(self.quantizer.as_ref(), x, &ctx, &mut state)
            }
            _ => Ok(x.clone()),
        }
    }

    pub fn quantize_weight(&self, name: &str, w: &Tensor, training: bool) -> Result<Tensor> {
        self.hook(name, QuantType::Weight, w, training, |q, t, c, s| {
            q.quantize_weight(t, c, s)
        })
    }
    /// The integers and scales layer `name`'s `weight` hook puts `weight` (already
    /// masked) on ([`Quantizer::weight_integers`]); `None` where the layer's weight is not
    /// quantized or the quantizer has no integer form.
    pub fn weight_integers(
        &self,
        name: &str,
        weight: &Tensor,
    ) -> Result<Option<super::WeightIntegers>> {
        match self.layers.get(name) {
            Some(layer) if layer.config.quantizes(QuantType::Weight) => {
                let ctx = QuantContext {
                    config: &layer.config,
                    training: false,
                };
                self.quantizer.weight_integers(weight, &ctx)
            }
            _ => Ok(None),
        }
    }
    /// Whether layer `name`'s `output` hook is a sign activation that replaces the
    /// layer's fused activation ([`Quantizer::binary_output`]).
    pub fn binary_output(&self, name: &str) -> bool {
        match self.layers.get(name) {
            Some(layer) if layer.config.quantizes(QuantType::Output) => {
                self.quantizer.binary_output(&QuantContext {
                    config: &layer.config,
                    training: false,
                })
            }
            _ => false,
        }
    }

    /// Runs [`Quantizer::after_step`] on every bound layer of `graph` that has a weight
    /// and stores what it returns in the layer's weight variable (the training loop
    /// calls this after each optimizer step).
    pub fn after_step(&self, graph: &crate::nn::Graph) -> Result<()> {
        for (name, layer) in &self.layers {
            let Some(weight) = graph.node(name).and_then(|n| n.layer.weight()) else {
                continue;
            };
            let ctx = QuantContext {
                config: &layer.config,
                training: true,
            };
            if let Some(updated) = self.quantizer.after_step(weight, &ctx)? {
                candle_core::Var::from_tensor(weight)?.set(&updated)?;
            }
        }
        Ok(())
    }

    pub fn quantize_input(&self, name: &str, x: &Tensor, training: bool) -> Result<Tensor> {
        self.hook(name, QuantType::Input, x, training, |q, t, c, s| {
            q.quantize_input(t, c, s)
        })
    }
    pub fn quantize_output(&self, name: &str, x: &Tensor, training: bool) -> Result<Tensor> {
        self.hook(name, QuantType::Output, x, training, |q, t, c, s| {
            q.quantize_output(t, c, s)
        })
    }
}

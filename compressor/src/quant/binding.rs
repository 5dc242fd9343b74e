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
}

impl LayerQuant {
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
            .map(|c| {
                (
                    c.name.clone(),
                    LayerQuant {
                        config: c,
                        state: Mutex::new(QuantState::default()),
                    },
                )
            })
            .collect();
        Self { quantizer, layers }
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

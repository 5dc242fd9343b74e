//! Optimizers whose state is plain named tensors, so checkpoints can hold it and a
//! resumed run continues bit for bit: SGD with momentum (PyTorch's formulation) and AdamW
//! (Loshchilov & Hutter, decoupled weight decay).

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use serde::{Deserialize, Serialize};

/// Which optimizer, with its hyper-parameters (the learning rate comes from the schedule).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerKind {
    Sgd {
        momentum: f64,
        weight_decay: f64,
    },
    AdamW {
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
}

impl OptimizerKind {
    pub fn sgd() -> Self {
        OptimizerKind::Sgd {
            momentum: 0.9,
            weight_decay: 5e-4,
        }
    }
    pub fn adamw() -> Self {
        OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-4,
        }
    }
}

/// An optimizer over named variables.
pub struct Optimizer {
    kind: OptimizerKind,
    vars: Vec<(String, Var)>,
    /// Per-variable state tensors, keyed `<slot>.<var name>` (`momentum`, `m`, `v`).
    state: BTreeMap<String, Tensor>,
    /// Steps taken (AdamW's bias correction needs it).
    pub steps: u64,
}

impl Optimizer {
    pub fn new(kind: OptimizerKind, vars: Vec<(String, Var)>) -> Self {
        Self {
            kind,
            vars,
            state: BTreeMap::new(),
            steps: 0,
        }
    }

    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    /// One update with learning rate `lr`; variables without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        for (name, var) in &self.vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // A variable's gradient still references the forward graph it came from (candle
            // detaches only intermediate gradients): state built from it would chain every
            // step's graph to the next and keep them all alive.
            let g = &g.detach();
            let w = var.as_tensor();
            match self.kind {
                OptimizerKind::Sgd {
                    momentum,
                    weight_decay,
                } => {
                    let g = (g + (w * weight_decay)?)?;
                    let key = format!("momentum.{name}");
                    let buf = match self.state.get(&key) {
                        Some(b) => ((b * momentum)? + &g)?,
                        None => g,
                    }
                    .detach();
                    var.set(&(w - (&buf * lr)?)?)?;
                    self.state.insert(key, buf);
                }
                OptimizerKind::AdamW {
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                } => {
                    let (mk, vk) = (format!("m.{name}"), format!("v.{name}"));
                    let m = match self.state.get(&mk) {
                        Some(m) => ((m * beta1)? + (g * (1.0 - beta1))?)?,
                        None => (g * (1.0 - beta1))?,
                    };
                    let v = match self.state.get(&vk) {
                        Some(v) => ((v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?,
                        None => (g.sqr()? * (1.0 - beta2))?,
                    };
                    let m_hat = (&m / (1.0 - beta1.powi(t)))?;
                    let v_hat = (&v / (1.0 - beta2.powi(t)))?;
                    let update = (m_hat / (v_hat.sqrt()? + eps)?)?;
                    let decayed = (w * (1.0 - lr * weight_decay))?;
                    var.set(&(decayed - (update * lr)?)?)?;
                    self.state.insert(mk, m);
                    self.state.insert(vk, v);
                }
            }
        }
        Ok(())
    }

    /// The state tensors, for checkpoints.
    pub fn state(&self) -> &BTreeMap<String, Tensor> {
        &self.state
    }

    /// Restores state saved by [`Optimizer::state`].
    pub fn restore(&mut self, state: BTreeMap<String, Tensor>, steps: u64) {
        self.state = state;
        self.steps = steps;
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use super::{Optimizer, OptimizerKind};

    /// Optimizer state must not hold on to the graphs its gradients came from: a state
    /// tensor that tracks an op keeps the previous step's state, and with it every step's
    /// activations, alive (memory grew by megabytes per step until this was fixed).
    #[test]
    fn state_does_not_keep_graphs_alive() -> candle_core::Result<()> {
        for kind in [OptimizerKind::sgd(), OptimizerKind::adamw()] {
            let w = Var::from_tensor(&Tensor::new(&[1f32, -2.0, 3.0], &Device::Cpu)?)?;
            let mut opt = Optimizer::new(kind, vec![("w".into(), w.clone())]);
            let x = Tensor::new(&[0.5f32, 0.25, -1.0], &Device::Cpu)?;
            for _ in 0..3 {
                let loss = (w.as_tensor() * &x)?.sqr()?.sum_all()?;
                opt.step(&loss.backward()?, 0.1)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            }
            for (name, state) in opt.state() {
                assert!(!state.track_op(), "{kind:?}: `{name}` tracks its graph");
            }
        }
        Ok(())
    }
}

//! Optimizers whose state is plain named tensors, so checkpoints can hold it and a
//! resumed run continues bit for bit: SGD with momentum (PyTorch's formulation) and AdamW
//! (Loshchilov & Hutter, decoupled weight decay).

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::adamw_cpu::{adamw_update, AdamWStep};

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
                    let step = AdamWStep {
                        beta1,
                        beta2,
                        eps,
                        weight_decay,
                        lr,
                        t,
                    };
                    let (mk, vk) = (format!("m.{name}"), format!("v.{name}"));
                    let (m, v) = (self.state.get(&mk), self.state.get(&vk));
                    let (w, m, v) = match adamw_update(step, w, g, m, v)? {
                        Some(updated) => updated,
                        None => adamw_with_tensor_ops(step, w, g, m, v)?,
                    };
                    var.set(&w)?;
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

/// One AdamW update spelled with candle's tensor ops, for any device and dtype: new
/// `(w, m, v)` from weight `w`, gradient `g` and the moments (`None` before the first
/// step). [`adamw_update`] computes the same bits in one pass on the CPU.
pub(super) fn adamw_with_tensor_ops(
    s: AdamWStep,
    w: &Tensor,
    g: &Tensor,
    m: Option<&Tensor>,
    v: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let m = match m {
        Some(m) => ((m * s.beta1)? + (g * (1.0 - s.beta1))?)?,
        None => (g * (1.0 - s.beta1))?,
    };
    let v = match v {
        Some(v) => ((v * s.beta2)? + (g.sqr()? * (1.0 - s.beta2))?)?,
        None => (g.sqr()? * (1.0 - s.beta2))?,
    };
    let m_hat = (&m / (1.0 - s.beta1.powi(s.t)))?;
    let v_hat = (&v / (1.0 - s.beta2.powi(s.t)))?;
    let update = (m_hat / (v_hat.sqrt()? + s.eps)?)?;
    let decayed = (w * (1.0 - s.lr * s.weight_decay))?;
    Ok(((decayed - (update * s.lr)?)?, m, v))
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

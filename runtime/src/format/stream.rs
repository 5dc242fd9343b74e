//! Graph rewrite (feature `std`): stream a conv's output into the conv that reads it
//! (FORMAT.md §4, "Streamed tensors") wherever that lowers the planned arena. The
//! exporter and the TFLite importer run it after fusing and before planning; the
//! streamed model computes exactly what the stored one does.

use super::write::GraphDef;
use super::{Op, TensorKind};
use crate::model::check_stream;

impl GraphDef {
    /// Stream conv outputs, one at a time, always the one that lowers the planned
    /// arena most, until none lowers it. A candidate is an intermediate int8 tensor
    /// that the load-time checks accept as streamed, with a band as tall as its
    /// reader's window. Returns how many tensors it streams.
    pub fn stream_rows(&mut self) -> usize {
        let mut streamed = 0;
        loop {
            let Ok(current) = self.clone().plan_arena() else {
                return streamed;
            };
            let best = (0..self.tensors.len())
                .filter_map(|t| {
                    let mut trial = self.clone();
                    trial.stream(t)?;
                    let arena = trial.plan_arena().ok()?;
                    (arena < current).then_some((arena, t, trial))
                })
                .min_by_key(|(arena, t, _)| (*arena, *t));
            match best {
                Some((_, _, trial)) => {
                    *self = trial;
                    streamed += 1;
                }
                None => return streamed,
            }
        }
    }

    /// Mark tensor `t` streamed, with a band of its reader's window height (one row for
    /// an Add), if it is an int8 activation that may be (`None` leaves the graph as it
    /// was).
    fn stream(&mut self, t: usize) -> Option<()> {
        let index = u32::try_from(t).ok()?;
        let reader = self.ops.iter().find(|op| op.inputs().any(|i| i == index))?;
        let window = match reader {
            Op::Conv2d(p) => p.kernel_h,
            Op::DepthwiseConv2d(p) => p.kernel_h,
            Op::Add(_) => 1,
            _ => return None,
        };
        let tensor = self.tensors.get_mut(t)?;
        if tensor.kind != TensorKind::Activation {
            return None;
        }
        tensor.kind = TensorKind::Streamed {
            rows: u8::try_from(window).ok()?,
        };
        let height = tensor.shape.get(1).copied()?;
        // Every band checked again: this one may lengthen a chain beyond the cap.
        let accepted = window < height
            && tensor.bytes().is_ok()
            && (0..self.tensors.len()).all(|s| {
                let streamed = self
                    .tensors
                    .get(s)
                    .is_some_and(|s| s.streamed_rows().is_some());
                let s = u32::try_from(s).unwrap_or(u32::MAX);
                !streamed || check_stream(s, &self.ops, &self.tensors).is_ok()
            });
        if !accepted {
            self.tensors.get_mut(t)?.kind = TensorKind::Activation;
            return None;
        }
        Some(())
    }
}

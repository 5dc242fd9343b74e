//! Graph rewrite (feature `std`): stream a conv's output into the conv that reads it
//! (FORMAT.md §4, "Streamed tensors") wherever that lowers the planned arena. The
//! exporter and the TFLite importer run it after fusing and before planning; the
//! streamed model computes exactly what the stored one does.

use std::vec::Vec;

use super::write::GraphDef;
use super::TensorKind;
use crate::model::{band_window, check_stream};

impl GraphDef {
    /// Stream conv outputs while that lowers the planned arena: each step streams the
    /// one tensor that lowers it most or, where no single one does, the pair that does
    /// (in a downsampling ResNet block, the first conv's output and the shortcut's pay
    /// only together: either alone leaves three tensors live at the other's conv). A candidate is an intermediate int8 tensor that the load-time
    /// checks accept as streamed, with a band as tall as its reader's window. Returns
    /// how many tensors it streams.
    pub fn stream_rows(&mut self) -> usize {
        let mut streamed = 0;
        loop {
            let Ok(current) = self.clone().plan_arena() else {
                return streamed;
            };
            let singles: Vec<(u32, Vec<usize>, GraphDef)> = (0..self.tensors.len())
                .filter_map(|t| self.streamed(t).map(|(arena, g)| (arena, std::vec![t], g)))
                .collect();
            let lower = |(arena, _, _): &(u32, Vec<usize>, GraphDef)| *arena < current;
            let mut best: Vec<_> = singles.iter().filter(|c| lower(c)).cloned().collect();
            if best.is_empty() {
                best = singles
                    .iter()
                    .flat_map(|(_, first, g)| {
                        (0..self.tensors.len()).filter_map(move |t| {
                            let (arena, g) = g.streamed(t)?;
                            Some((arena, [first.as_slice(), &[t]].concat(), g))
                        })
                    })
                    .filter(lower)
                    .collect();
            }
            match best
                .into_iter()
                .min_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)))
            {
                Some((_, tensors, trial)) => {
                    *self = trial;
                    streamed += tensors.len();
                }
                None => {
                    self.grow_bands(current);
                    return streamed;
                }
            }
        }
    }

    /// Make each band as tall as the arena has room for at its step (`arena` stays the
    /// planned size): the kernels then run on more rows per call. Every step keeps a
    /// planned copy, so the graph leaves planned.
    fn grow_bands(&mut self, arena: u32) {
        for t in 0..self.tensors.len() {
            while let Some(tensor) = self.tensors.get(t) {
                let (Some(rows), Some(&height)) = (tensor.streamed_rows(), tensor.shape.get(1))
                else {
                    break;
                };
                let Ok(taller) = u8::try_from(rows + 1) else {
                    break;
                };
                let mut trial = self.clone();
                if let Some(tensor) = trial.tensors.get_mut(t) {
                    tensor.kind = TensorKind::Streamed { rows: taller };
                }
                if rows + 1 >= height || trial.plan_arena().map_or(true, |a| a > arena) {
                    break;
                }
                *self = trial;
            }
        }
    }

    /// A copy with tensor `t` streamed, and its planned arena (`None`: `t` may not be).
    fn streamed(&self, t: usize) -> Option<(u32, GraphDef)> {
        let mut trial = self.clone();
        trial.stream(t)?;
        Some((trial.plan_arena().ok()?, trial))
    }

    /// Mark tensor `t` streamed, with a band of its reader's window height (one row for
    /// an Add), if it is an int8 activation that may be. `None`: it may not, and the
    /// graph is left part-changed (callers try on a copy).
    fn stream(&mut self, t: usize) -> Option<()> {
        let index = u32::try_from(t).ok()?;
        let reader = self.ops.iter().find(|op| op.inputs().any(|i| i == index))?;
        let window = band_window(reader, index, &self.tensors)?;
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
        accepted.then_some(())
    }
}

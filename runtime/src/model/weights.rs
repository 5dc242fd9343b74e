//! What a loaded model's weighted ops store (host only): each op's encoding, bytes,
//! weight count and density, and its weights densified, for reports and tests.

use std::vec::Vec;

use super::{Model, OpKind};
use crate::error::Error;
use crate::format::packed::{self, PackedRows};
use crate::format::sparse::{self, SparseRows};
use crate::format::{Encoding, Op, OpSet};

/// One weighted op's stored weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerWeights {
    /// Index of the op.
    pub op: usize,
    /// Its kind (conv, depthwise, fully connected).
    pub kind: OpKind,
    /// How its weights are stored.
    pub encoding: Encoding,
    /// Bytes they take in the data section.
    pub bytes: usize,
    /// Rows as the encodings see them: output channels (conv, fully connected) or
    /// taps (depthwise).
    pub rows: usize,
    /// The weights in the op's dense layout (`[OC, KH, KW, C]`, `[KH, KW, OC]` or
    /// `[OUT, IN]`), zeros included.
    pub dense: Vec<i8>,
}

impl LayerWeights {
    /// Number of weights (dense count).
    pub fn count(&self) -> usize {
        self.dense.len()
    }

    /// Weights that are not zero.
    pub fn nonzero(&self) -> usize {
        self.dense.iter().filter(|&&w| w != 0).count()
    }

    /// Fraction of nonzero weights.
    pub fn density(&self) -> f64 {
        self.nonzero() as f64 / self.count().max(1) as f64
    }
}

impl<const MAX_OPS: usize, const MAX_TENSORS: usize, const OPS: OpSet>
    Model<'_, MAX_OPS, MAX_TENSORS, OPS>
{
    /// Every weighted op's weights, in op order.
    pub fn layer_weights(&self) -> Result<Vec<LayerWeights>, Error> {
        let mut layers = Vec::new();
        for (i, op) in self.ops().enumerate() {
            let Some(w) = op.weights() else { continue };
            let (_, _, yi) = op.operands();
            let x = self.tensors.get(op.inputs().next().unwrap_or(0) as usize);
            let y = self.tensors.get(yi as usize);
            let (x, y) = x.zip(y).ok_or(Error::KernelArgs)?;
            let last = |t: &crate::format::Tensor| t.shape.last().map_or(0, |&d| d as usize);
            let (rows, row_len) = match op {
                Op::Conv2d(p) | Op::Conv2dMaxPool(crate::format::Conv2dMaxPool { conv: p, .. }) => {
                    (last(y), (p.kernel_h * p.kernel_w) as usize * last(x))
                }
                Op::BinaryConv2d(p) => (last(y), (p.kernel_h * p.kernel_w) as usize * last(x)),
                Op::DepthwiseConv2d(p) => ((p.kernel_h * p.kernel_w) as usize, last(y)),
                _ => (last(y), last(x)),
            };
            let start = w.data.offset as usize;
            let bytes = self
                .data
                .get(start..start + w.data.len as usize)
                .ok_or(Error::KernelArgs)?;
            let dense = if let Some(layout) = PackedRows::new(bytes, rows, row_len, w.encoding) {
                packed::densify(&layout)
            } else if let Some(layout) = SparseRows::new(bytes, rows, w.encoding) {
                sparse::densify(&layout, rows, row_len)?
            } else {
                bytes.iter().map(|&b| b as i8).collect()
            };
            layers.push(LayerWeights {
                op: i,
                kind: op.kind(),
                encoding: w.encoding,
                bytes: bytes.len(),
                rows,
                dense,
            });
        }
        Ok(layers)
    }
}

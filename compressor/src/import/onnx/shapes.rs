//! Shape arithmetic on 1-D integer vectors whose entries may be the (symbolic) batch
//! size: what `Shape → Gather/Slice → Concat → Reshape` chains compute, as tf2onnx
//! writes them for a Keras `Flatten` and PyTorch for `x.view(x.size(0), -1)`. Folding
//! them lets a model with a dynamic batch dimension import; the batch may only end up
//! as the first entry of a `Reshape`'s shape.

use super::tensor::Const;

/// One entry of a shape vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// The batch size, unknown until run time.
    Batch,
    Known(i64),
}

/// A 1-D shape vector (or a scalar, from a `Gather` with a scalar index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dims {
    pub dims: Vec<Dim>,
    pub scalar: bool,
}

impl Dims {
    pub fn known(values: &[i64], scalar: bool) -> Self {
        Self {
            dims: values.iter().map(|&v| Dim::Known(v)).collect(),
            scalar,
        }
    }

    /// An integer constant as a shape vector (scalars and 1-D only).
    pub fn from_const(c: &Const) -> Option<Self> {
        let ints = c.ints()?;
        (c.dims.len() <= 1).then(|| Self::known(ints, c.dims.is_empty()))
    }

    fn index(&self, i: i64) -> Result<usize, String> {
        let n = self.dims.len() as i64;
        let j = if i < 0 { i + n } else { i };
        if (0..n).contains(&j) {
            Ok(j as usize)
        } else {
            Err(format!(
                "index {i} is out of range for a shape of {n} entries"
            ))
        }
    }

    /// `Gather(axis = 0)`.
    pub fn gather(&self, indices: &[i64], scalar: bool) -> Result<Self, String> {
        let dims = indices
            .iter()
            .map(|&i| self.index(i).map(|j| self.dims[j]))
            .collect::<Result<_, _>>()?;
        Ok(Self { dims, scalar })
    }

    /// `Slice` along axis 0 with a positive step.
    pub fn slice(&self, start: i64, end: i64, step: i64) -> Result<Self, String> {
        if step <= 0 {
            return Err(format!(
                "slice step {step} is not supported (positive steps are)"
            ));
        }
        let n = self.dims.len() as i64;
        let clamp = |i: i64| if i < 0 { (i + n).max(0) } else { i.min(n) };
        let (start, end) = (clamp(start), clamp(end));
        let dims = (start..end)
            .step_by(step as usize)
            .map(|i| self.dims[i as usize])
            .collect();
        Ok(Self {
            dims,
            scalar: false,
        })
    }

    /// `Concat(axis = 0)`.
    pub fn concat(parts: &[Dims]) -> Self {
        Self {
            dims: parts.iter().flat_map(|p| p.dims.iter().copied()).collect(),
            scalar: false,
        }
    }

    /// `Unsqueeze(axes = [0])` of a scalar.
    pub fn unsqueeze(&self) -> Result<Self, String> {
        if !self.scalar {
            return Err("only a scalar can be unsqueezed into a shape vector".into());
        }
        Ok(Self {
            dims: self.dims.clone(),
            scalar: false,
        })
    }
}

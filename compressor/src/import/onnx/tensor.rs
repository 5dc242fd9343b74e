//! ONNX tensors (initializers, `Constant` values) decoded into plain vectors.
//!
//! Every length is checked against the declared dims before anything is indexed, so a
//! corrupt tensor is an error message, not a panic or a huge allocation.

use crate::onnx_proto::{data_type, TensorProto};

/// A constant's elements: floats (FLOAT, DOUBLE) or integers (INT64, INT32, ...).
#[derive(Debug, Clone, PartialEq)]
pub enum ConstData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A decoded constant tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Const {
    pub dims: Vec<usize>,
    pub data: ConstData,
}

impl Const {
    /// Number of elements.
    pub fn count(&self) -> usize {
        match &self.data {
            ConstData::F32(v) => v.len(),
            ConstData::I64(v) => v.len(),
        }
    }
    /// The elements as floats (integers converted).
    pub fn floats(&self) -> Vec<f32> {
        match &self.data {
            ConstData::F32(v) => v.clone(),
            ConstData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
    /// The elements as integers, if this is an integer tensor.
    pub fn ints(&self) -> Option<&[i64]> {
        match &self.data {
            ConstData::I64(v) => Some(v),
            ConstData::F32(_) => None,
        }
    }
    /// A float scalar (or one-element tensor).
    pub fn scalar(&self) -> Option<f32> {
        (self.count() == 1).then(|| self.floats()[0])
    }
}

/// Decodes `t`, or says why it cannot be.
pub fn decode(t: &TensorProto) -> Result<Const, String> {
    if t.data_location == 1 {
        return Err("its data is stored in an external file; re-export the model with the \
                    weights inside the .onnx file (onnx.save_model(..., save_as_external_data=False))"
            .into());
    }
    let mut dims = Vec::with_capacity(t.dims.len());
    let mut count: usize = 1;
    for &d in &t.dims {
        let d =
            usize::try_from(d).map_err(|_| format!("negative dimension {d} in {:?}", t.dims))?;
        count = count
            .checked_mul(d)
            .filter(|&c| c <= 1 << 31)
            .ok_or_else(|| format!("dims {:?} are too large", t.dims))?;
        dims.push(d);
    }
    let type_name = data_type::name(t.data_type);
    let raw = |size: usize| -> Result<Option<std::slice::ChunksExact<'_, u8>>, String> {
        if t.raw_data.is_empty() {
            return Ok(None);
        }
        if t.raw_data.len() != count * size {
            return Err(format!(
                "{} bytes of {type_name} data for dims {:?} ({count} elements of {size} bytes)",
                t.raw_data.len(),
                t.dims
            ));
        }
        Ok(Some(t.raw_data.chunks_exact(size)))
    };
    let data = match t.data_type {
        data_type::FLOAT => ConstData::F32(match raw(4)? {
            Some(c) => c
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            None => t.float_data.clone(),
        }),
        data_type::DOUBLE => ConstData::F32(match raw(8)? {
            Some(c) => c
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            None => t.double_data.iter().map(|&x| x as f32).collect(),
        }),
        data_type::INT64 => ConstData::I64(match raw(8)? {
            Some(c) => c
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .collect(),
            None => t.int64_data.clone(),
        }),
        data_type::INT32 => ConstData::I64(match raw(4)? {
            Some(c) => c
                .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            None => t.int32_data.iter().map(|&x| i64::from(x)).collect(),
        }),
        data_type::INT8 => ConstData::I64(match raw(1)? {
            Some(c) => c.map(|b| i64::from(b[0] as i8)).collect(),
            None => t.int32_data.iter().map(|&x| i64::from(x)).collect(),
        }),
        data_type::UINT8 => ConstData::I64(match raw(1)? {
            Some(c) => c.map(|b| i64::from(b[0])).collect(),
            None => t.int32_data.iter().map(|&x| i64::from(x)).collect(),
        }),
        other => {
            return Err(format!(
                "data type {} is not supported (FLOAT, DOUBLE and integer tensors are)",
                data_type::name(other)
            ))
        }
    };
    let c = Const { dims, data };
    if c.count() != count {
        return Err(format!(
            "{} elements for dims {:?} ({count} expected)",
            c.count(),
            t.dims
        ));
    }
    Ok(c)
}

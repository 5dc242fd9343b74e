//! A small, bounds-checked reader for the parts of the TensorFlow Lite flatbuffer schema
//! (`schema.fbs`) the importer needs. Written by hand over the flatbuffer wire format:
//! every offset is checked against the file length with checked arithmetic, so a
//! truncated or corrupt file is an [`ImportError`], never a panic.
//!
//! Wire format in brief: the file starts with a `u32` offset to the root table, then
//! the 4-byte identifier `TFL3`. A table starts with an `i32` back-offset to its vtable
//! (`vtable = table − soffset`); the vtable holds `u16` vtable size, `u16` table size,
//! then one `u16` per field (0 = absent, else the field's offset in the table). A table,
//! vector or string field holds a `u32` offset relative to the field's own position; a
//! vector is a `u32` length followed by its elements (tables as `u32` offsets again).

use super::error::ImportError;

type Result<T> = std::result::Result<T, ImportError>;

/// TFLite's `TensorType` values the importer names.
pub mod tensor_type {
    pub const FLOAT32: u8 = 0;
    pub const INT32: u8 = 2;
    pub const INT8: u8 = 9;
}

/// A name for a `TensorType` value.
pub fn type_name(t: u8) -> &'static str {
    match t {
        0 => "float32",
        1 => "float16",
        2 => "int32",
        3 => "uint8",
        4 => "int64",
        5 => "string",
        6 => "bool",
        7 => "int16",
        8 => "complex64",
        9 => "int8",
        10 => "float64",
        11 => "complex128",
        12 => "uint64",
        15 => "uint32",
        16 => "uint16",
        17 => "int4",
        _ => "an unknown type",
    }
}

/// The file, with bounds-checked little-endian reads.
#[derive(Clone, Copy)]
struct Buf<'a>(&'a [u8]);

impl<'a> Buf<'a> {
    fn bytes(&self, pos: usize, n: usize, what: &'static str) -> Result<&'a [u8]> {
        pos.checked_add(n)
            .and_then(|end| self.0.get(pos..end))
            .ok_or(ImportError::OutOfBounds {
                what,
                offset: pos,
                len: self.0.len(),
            })
    }
    fn arr<const N: usize>(&self, pos: usize, what: &'static str) -> Result<[u8; N]> {
        let b = self.bytes(pos, N, what)?;
        <[u8; N]>::try_from(b).map_err(|_| ImportError::OutOfBounds {
            what,
            offset: pos,
            len: self.0.len(),
        })
    }
    fn u8(&self, pos: usize, what: &'static str) -> Result<u8> {
        Ok(self.arr::<1>(pos, what)?[0])
    }
    fn u16(&self, pos: usize, what: &'static str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.arr(pos, what)?))
    }
    fn u32(&self, pos: usize, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(pos, what)?))
    }
    fn i32(&self, pos: usize, what: &'static str) -> Result<i32> {
        Ok(i32::from_le_bytes(self.arr(pos, what)?))
    }
    fn i64(&self, pos: usize, what: &'static str) -> Result<i64> {
        Ok(i64::from_le_bytes(self.arr(pos, what)?))
    }
    fn u64(&self, pos: usize, what: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(pos, what)?))
    }
    fn f32(&self, pos: usize, what: &'static str) -> Result<f32> {
        Ok(f32::from_le_bytes(self.arr(pos, what)?))
    }
    fn oob(&self, what: &'static str, offset: usize) -> ImportError {
        ImportError::OutOfBounds {
            what,
            offset,
            len: self.0.len(),
        }
    }
    /// Follow the `u32` offset stored at `pos`.
    fn deref(&self, pos: usize, what: &'static str) -> Result<usize> {
        let off = self.u32(pos, what)? as usize;
        let target = pos.checked_add(off).ok_or(self.oob(what, pos))?;
        if target >= self.0.len() {
            return Err(self.oob(what, target));
        }
        Ok(target)
    }
}

/// One flatbuffer table.
#[derive(Clone, Copy)]
struct Table<'a> {
    buf: Buf<'a>,
    pos: usize,
    vtable: usize,
    vt_len: usize,
    what: &'static str,
}

impl<'a> Table<'a> {
    fn at(buf: Buf<'a>, pos: usize, what: &'static str) -> Result<Self> {
        let soff = i64::from(buf.i32(pos, what)?);
        let vtable = i64::try_from(pos)
            .ok()
            .and_then(|p| p.checked_sub(soff))
            .and_then(|v| usize::try_from(v).ok())
            .ok_or(buf.oob(what, pos))?;
        let vt_len = usize::from(buf.u16(vtable, what)?);
        buf.bytes(vtable, vt_len.max(4), what)?;
        let table_len = usize::from(buf.u16(vtable + 2, what)?);
        buf.bytes(pos, table_len.max(4), what)?;
        Ok(Table {
            buf,
            pos,
            vtable,
            vt_len,
            what,
        })
    }

    /// Position of field `id`, if present.
    fn field(&self, id: usize) -> Result<Option<usize>> {
        let entry = 4 + 2 * id;
        if entry + 2 > self.vt_len {
            return Ok(None);
        }
        let off = self.buf.u16(self.vtable + entry, self.what)?;
        Ok((off != 0).then_some(self.pos + usize::from(off)))
    }

    fn u8_or(&self, id: usize, default: u8) -> Result<u8> {
        match self.field(id)? {
            Some(p) => self.buf.u8(p, self.what),
            None => Ok(default),
        }
    }
    fn i32_or(&self, id: usize, default: i32) -> Result<i32> {
        match self.field(id)? {
            Some(p) => self.buf.i32(p, self.what),
            None => Ok(default),
        }
    }
    fn u32_or(&self, id: usize, default: u32) -> Result<u32> {
        match self.field(id)? {
            Some(p) => self.buf.u32(p, self.what),
            None => Ok(default),
        }
    }
    fn u64_or(&self, id: usize, default: u64) -> Result<u64> {
        match self.field(id)? {
            Some(p) => self.buf.u64(p, self.what),
            None => Ok(default),
        }
    }
    fn f32_or(&self, id: usize, default: f32) -> Result<f32> {
        match self.field(id)? {
            Some(p) => self.buf.f32(p, self.what),
            None => Ok(default),
        }
    }
    fn table(&self, id: usize, what: &'static str) -> Result<Option<Table<'a>>> {
        match self.field(id)? {
            Some(p) => Ok(Some(Table::at(self.buf, self.buf.deref(p, what)?, what)?)),
            None => Ok(None),
        }
    }
    /// `(first element position, count)` of a vector whose elements are `elem` bytes.
    fn vector(&self, id: usize, elem: usize, what: &'static str) -> Result<Option<(usize, usize)>> {
        let Some(p) = self.field(id)? else {
            return Ok(None);
        };
        let v = self.buf.deref(p, what)?;
        let n = self.buf.u32(v, what)? as usize;
        let start = v + 4;
        let total = n.checked_mul(elem).ok_or(self.buf.oob(what, start))?;
        self.buf.bytes(start, total, what)?;
        Ok(Some((start, n)))
    }
    fn vec_i32(&self, id: usize, what: &'static str) -> Result<Vec<i32>> {
        let Some((start, n)) = self.vector(id, 4, what)? else {
            return Ok(Vec::new());
        };
        (0..n).map(|i| self.buf.i32(start + 4 * i, what)).collect()
    }
    fn vec_f32(&self, id: usize, what: &'static str) -> Result<Vec<f32>> {
        let Some((start, n)) = self.vector(id, 4, what)? else {
            return Ok(Vec::new());
        };
        (0..n).map(|i| self.buf.f32(start + 4 * i, what)).collect()
    }
    fn vec_i64(&self, id: usize, what: &'static str) -> Result<Vec<i64>> {
        let Some((start, n)) = self.vector(id, 8, what)? else {
            return Ok(Vec::new());
        };
        (0..n).map(|i| self.buf.i64(start + 8 * i, what)).collect()
    }
    fn vec_u8(&self, id: usize, what: &'static str) -> Result<Option<&'a [u8]>> {
        match self.vector(id, 1, what)? {
            Some((start, n)) => Ok(Some(self.buf.bytes(start, n, what)?)),
            None => Ok(None),
        }
    }
    fn string(&self, id: usize, what: &'static str) -> Result<String> {
        Ok(self
            .vec_u8(id, what)?
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default())
    }
    fn tables(&self, id: usize, what: &'static str) -> Result<Vec<Table<'a>>> {
        let Some((start, n)) = self.vector(id, 4, what)? else {
            return Ok(Vec::new());
        };
        (0..n)
            .map(|i| {
                let p = start + 4 * i;
                Table::at(self.buf, self.buf.deref(p, what)?, what)
            })
            .collect()
    }
}

/// `QuantizationParameters`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Quantization {
    pub scale: Vec<f32>,
    pub zero_point: Vec<i64>,
    pub quantized_dimension: i32,
}

/// `Tensor`.
#[derive(Debug, Clone, PartialEq)]
pub struct TfTensor {
    pub shape: Vec<i32>,
    pub dtype: u8,
    pub buffer: u32,
    pub name: String,
    pub quantization: Option<Quantization>,
}

/// Builtin options, decoded for the ops the importer maps.
#[derive(Debug, Clone, PartialEq)]
pub enum Options {
    None,
    Conv2d {
        padding: u8,
        stride_w: i32,
        stride_h: i32,
        activation: u8,
        dilation_w: i32,
        dilation_h: i32,
    },
    DepthwiseConv2d {
        padding: u8,
        stride_w: i32,
        stride_h: i32,
        depth_multiplier: i32,
        activation: u8,
        dilation_w: i32,
        dilation_h: i32,
    },
    Pool2d {
        padding: u8,
        stride_w: i32,
        stride_h: i32,
        filter_w: i32,
        filter_h: i32,
        activation: u8,
    },
    FullyConnected {
        activation: u8,
        weights_format: u8,
        keep_num_dims: bool,
    },
    Softmax {
        beta: f32,
    },
    Add {
        activation: u8,
    },
    /// Options the importer does not decode (type tag kept for messages).
    Other(u8),
}

/// `Operator`.
#[derive(Debug, Clone, PartialEq)]
pub struct TfOperator {
    pub opcode_index: u32,
    pub inputs: Vec<i32>,
    pub outputs: Vec<i32>,
    pub options: Options,
}

/// `SubGraph`.
#[derive(Debug, Clone, PartialEq)]
pub struct SubGraph {
    pub tensors: Vec<TfTensor>,
    pub inputs: Vec<i32>,
    pub outputs: Vec<i32>,
    pub operators: Vec<TfOperator>,
}

/// `Model`: operator codes (resolved to builtin codes), subgraphs and buffers.
#[derive(Debug, Clone, PartialEq)]
pub struct TfModel<'a> {
    pub version: u32,
    /// Builtin operator code per operator-code entry (`max(deprecated, builtin)`), and
    /// the custom code name if any.
    pub opcodes: Vec<(i32, String)>,
    pub subgraphs: Vec<SubGraph>,
    /// Buffer contents (empty for buffers without data).
    pub buffers: Vec<&'a [u8]>,
}

/// `BuiltinOptions` union tags the importer decodes.
mod options_type {
    pub const CONV_2D: u8 = 1;
    pub const DEPTHWISE_CONV_2D: u8 = 2;
    pub const POOL_2D: u8 = 5;
    pub const FULLY_CONNECTED: u8 = 8;
    pub const SOFTMAX: u8 = 9;
    pub const ADD: u8 = 11;
}

fn read_options(t: Option<Table<'_>>, tag: u8) -> Result<Options> {
    use options_type as o;
    let Some(t) = t else {
        return Ok(if tag == 0 {
            Options::None
        } else {
            Options::Other(tag)
        });
    };
    Ok(match tag {
        o::CONV_2D => Options::Conv2d {
            padding: t.u8_or(0, 0)?,
            stride_w: t.i32_or(1, 0)?,
            stride_h: t.i32_or(2, 0)?,
            activation: t.u8_or(3, 0)?,
            dilation_w: t.i32_or(4, 1)?,
            dilation_h: t.i32_or(5, 1)?,
        },
        o::DEPTHWISE_CONV_2D => Options::DepthwiseConv2d {
            padding: t.u8_or(0, 0)?,
            stride_w: t.i32_or(1, 0)?,
            stride_h: t.i32_or(2, 0)?,
            depth_multiplier: t.i32_or(3, 0)?,
            activation: t.u8_or(4, 0)?,
            dilation_w: t.i32_or(5, 1)?,
            dilation_h: t.i32_or(6, 1)?,
        },
        o::POOL_2D => Options::Pool2d {
            padding: t.u8_or(0, 0)?,
            stride_w: t.i32_or(1, 0)?,
            stride_h: t.i32_or(2, 0)?,
            filter_w: t.i32_or(3, 0)?,
            filter_h: t.i32_or(4, 0)?,
            activation: t.u8_or(5, 0)?,
        },
        o::FULLY_CONNECTED => Options::FullyConnected {
            activation: t.u8_or(0, 0)?,
            weights_format: t.u8_or(1, 0)?,
            keep_num_dims: t.u8_or(2, 0)? != 0,
        },
        o::SOFTMAX => Options::Softmax {
            beta: t.f32_or(0, 0.0)?,
        },
        o::ADD => Options::Add {
            activation: t.u8_or(0, 0)?,
        },
        0 => Options::None,
        other => Options::Other(other),
    })
}

/// Parse a `.tflite` file (identifier, then every table the importer uses).
pub fn parse(bytes: &[u8]) -> Result<TfModel<'_>> {
    let buf = Buf(bytes);
    if bytes.len() < 8 {
        return Err(buf.oob("file header", 0));
    }
    let id = buf.arr::<4>(4, "file identifier")?;
    if &id != b"TFL3" {
        return Err(ImportError::BadIdentifier { found: id });
    }
    let root = Table::at(buf, buf.deref(0, "root table")?, "Model")?;
    let version = root.u32_or(0, 0)?;
    let opcodes = root
        .tables(1, "Model.operator_codes")?
        .iter()
        .map(|t| {
            let deprecated = i32::from(t.u8_or(0, 0)? as i8);
            let builtin = t.i32_or(3, 0)?;
            Ok((
                deprecated.max(builtin),
                t.string(1, "OperatorCode.custom_code")?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut subgraphs = Vec::new();
    for sg in root.tables(2, "Model.subgraphs")? {
        let mut tensors = Vec::new();
        for t in sg.tables(0, "SubGraph.tensors")? {
            let quantization = match t.table(4, "Tensor.quantization")? {
                Some(q) => Some(Quantization {
                    scale: q.vec_f32(2, "QuantizationParameters.scale")?,
                    zero_point: q.vec_i64(3, "QuantizationParameters.zero_point")?,
                    quantized_dimension: q.i32_or(6, 0)?,
                }),
                None => None,
            };
            tensors.push(TfTensor {
                shape: t.vec_i32(0, "Tensor.shape")?,
                dtype: t.u8_or(1, 0)?,
                buffer: t.u32_or(2, 0)?,
                name: t.string(3, "Tensor.name")?,
                quantization,
            });
        }
        let mut operators = Vec::new();
        for op in sg.tables(3, "SubGraph.operators")? {
            let tag = op.u8_or(3, 0)?;
            let options = read_options(op.table(4, "Operator.builtin_options")?, tag)?;
            operators.push(TfOperator {
                opcode_index: op.u32_or(0, 0)?,
                inputs: op.vec_i32(1, "Operator.inputs")?,
                outputs: op.vec_i32(2, "Operator.outputs")?,
                options,
            });
        }
        subgraphs.push(SubGraph {
            tensors,
            inputs: sg.vec_i32(1, "SubGraph.inputs")?,
            outputs: sg.vec_i32(2, "SubGraph.outputs")?,
            operators,
        });
    }
    let mut buffers = Vec::new();
    for b in root.tables(4, "Model.buffers")? {
        let data = b.vec_u8(0, "Buffer.data")?.unwrap_or(&[]);
        // Models over 2 GB keep buffer data after the flatbuffer (offset > 1).
        let offset = b.u64_or(1, 0)?;
        let size = b.u64_or(2, 0)?;
        let data = if data.is_empty() && offset > 1 {
            let (o, s) = (usize::try_from(offset), usize::try_from(size));
            match (o, s) {
                (Ok(o), Ok(s)) => buf.bytes(o, s, "Buffer (external data)")?,
                _ => return Err(buf.oob("Buffer (external data)", usize::MAX)),
            }
        } else {
            data
        };
        buffers.push(data);
    }
    Ok(TfModel {
        version,
        opcodes,
        subgraphs,
        buffers,
    })
}

/// TFLite's name for a builtin operator code.
pub fn op_name(code: i32) -> String {
    let name = match code {
        0 => "ADD",
        1 => "AVERAGE_POOL_2D",
        2 => "CONCATENATION",
        3 => "CONV_2D",
        4 => "DEPTHWISE_CONV_2D",
        5 => "DEPTH_TO_SPACE",
        6 => "DEQUANTIZE",
        9 => "FULLY_CONNECTED",
        14 => "LOGISTIC",
        17 => "MAX_POOL_2D",
        18 => "MUL",
        19 => "RELU",
        20 => "RELU_N1_TO_1",
        21 => "RELU6",
        22 => "RESHAPE",
        25 => "SOFTMAX",
        28 => "TANH",
        32 => "CUSTOM",
        34 => "PAD",
        39 => "TRANSPOSE",
        40 => "MEAN",
        41 => "SUB",
        43 => "SQUEEZE",
        45 => "STRIDED_SLICE",
        49 => "SPLIT",
        53 => "CAST",
        56 => "ARG_MAX",
        114 => "QUANTIZE",
        _ => return format!("builtin operator {code}"),
    };
    name.to_string()
}

/// Builtin operator codes the importer maps.
pub mod op {
    pub const ADD: i32 = 0;
    pub const AVERAGE_POOL_2D: i32 = 1;
    pub const CONV_2D: i32 = 3;
    pub const DEPTHWISE_CONV_2D: i32 = 4;
    pub const FULLY_CONNECTED: i32 = 9;
    pub const MAX_POOL_2D: i32 = 17;
    pub const RESHAPE: i32 = 22;
    pub const SOFTMAX: i32 = 25;
    pub const SQUEEZE: i32 = 43;
}

//! The subset of `onnx.proto` sprig writes (`export::onnx`) and reads
//! (`import::onnx`), as prost messages: one set of types for both directions.
//!
//! Field numbers follow `onnx/onnx.proto` (a proto2 file). Scalars are written in
//! prost's proto3 style (a default value is left out), which every ONNX reader accepts:
//! a missing `int64 i` reads as 0, exactly what was meant. `TensorShapeProto.Dimension`
//! and `TypeProto` use a `oneof` upstream; one optional field per member encodes the same.
//! Fields sprig never reads or writes (sparse initializers, subgraph attributes, training
//! info, functions) are left out: prost skips unknown fields when decoding.

/// `TensorProto.DataType` values used here.
pub mod data_type {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const DOUBLE: i32 = 11;
    /// Signed 4-bit, two per byte in `raw_data` (IR version 10, opset 21).
    pub const INT4: i32 = 22;

    /// The ONNX spelling of a data type, for error messages.
    pub fn name(t: i32) -> &'static str {
        match t {
            0 => "UNDEFINED",
            1 => "FLOAT",
            2 => "UINT8",
            3 => "INT8",
            4 => "UINT16",
            5 => "INT16",
            6 => "INT32",
            7 => "INT64",
            8 => "STRING",
            9 => "BOOL",
            10 => "FLOAT16",
            11 => "DOUBLE",
            12 => "UINT32",
            13 => "UINT64",
            16 => "BFLOAT16",
            21 => "UINT4",
            22 => "INT4",
            _ => "another type",
        }
    }
}

/// `AttributeProto.AttributeType` values used here.
pub mod attribute_type {
    pub const FLOAT: i32 = 1;
    pub const INT: i32 = 2;
    pub const STRING: i32 = 3;
    pub const TENSOR: i32 = 4;
    pub const FLOATS: i32 = 6;
    pub const INTS: i32 = 7;
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(string, tag = "3")]
    pub producer_version: String,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    /// Shapes of intermediate values (read only to name them in errors).
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    /// Empty (or `ai.onnx`) for the default operator set.
    #[prost(string, tag = "7")]
    pub domain: String,
    /// Exporter annotations; PyTorch's dynamo exporter records each node's module path
    /// under `pkg.torch.onnx.name_scopes`.
    #[prost(message, repeated, tag = "9")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    #[prost(float, repeated, tag = "7")]
    pub floats: Vec<f32>,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    /// One of [`attribute_type`]; ONNX requires it since IR version 2.
    #[prost(int32, tag = "20")]
    pub r#type: i32,
}

impl AttributeProto {
    pub fn int(name: &str, i: i64) -> Self {
        Self {
            name: name.into(),
            i,
            r#type: attribute_type::INT,
            ..Default::default()
        }
    }
    pub fn ints(name: &str, ints: Vec<i64>) -> Self {
        Self {
            name: name.into(),
            ints,
            r#type: attribute_type::INTS,
            ..Default::default()
        }
    }
    pub fn float(name: &str, f: f32) -> Self {
        Self {
            name: name.into(),
            f,
            r#type: attribute_type::FLOAT,
            ..Default::default()
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    /// FLOAT elements when `raw_data` is empty.
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    /// INT32 (and narrower integer) elements when `raw_data` is empty.
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
    /// INT64 elements when `raw_data` is empty.
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    pub name: String,
    /// Fixed-width little-endian elements.
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    /// DOUBLE elements when `raw_data` is empty.
    #[prost(double, repeated, tag = "10")]
    pub double_data: Vec<f64>,
    /// 1: the elements live in an external file (not supported by the importer).
    #[prost(int32, tag = "14")]
    pub data_location: i32,
}

impl TensorProto {
    pub fn float(name: &str, dims: &[usize], values: &[f32]) -> Self {
        Self {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type::FLOAT,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }
    pub fn int8(name: &str, dims: &[usize], values: &[i8]) -> Self {
        Self {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type::INT8,
            name: name.into(),
            raw_data: values.iter().map(|&v| v as u8).collect(),
            ..Default::default()
        }
    }
    /// INT4 elements (each in `-8..=7`) packed two per byte, the first in the low nibble,
    /// as ONNX stores 4-bit tensors; an odd count leaves the last high nibble 0.
    pub fn int4(name: &str, dims: &[usize], values: &[i8]) -> Self {
        Self {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type::INT4,
            name: name.into(),
            raw_data: values
                .chunks(2)
                .map(|pair| {
                    let nibble = |v: Option<&i8>| v.map_or(0, |&v| (v as u8) & 0x0f);
                    nibble(pair.first()) | (nibble(pair.get(1)) << 4)
                })
                .collect(),
            ..Default::default()
        }
    }
    pub fn int64(name: &str, dims: &[usize], values: &[i64]) -> Self {
        Self {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type::INT64,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

impl ValueInfoProto {
    /// A float tensor whose dims are each a size or a symbolic name.
    pub fn float_tensor(name: &str, dims: Vec<Dimension>) -> Self {
        Self {
            name: name.into(),
            r#type: Some(TypeProto {
                tensor_type: Some(TypeProtoTensor {
                    elem_type: data_type::FLOAT,
                    shape: Some(TensorShapeProto { dim: dims }),
                }),
            }),
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProto {
    /// Member `tensor_type` of the upstream `oneof value`.
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TypeProtoTensor>,
}

/// `TypeProto.Tensor`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProtoTensor {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// `TensorShapeProto.Dimension`: exactly one of the two is set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dimension {
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

impl Dimension {
    pub fn value(v: usize) -> Self {
        Self {
            dim_value: Some(v as i64),
            dim_param: None,
        }
    }
    pub fn param(name: &str) -> Self {
        Self {
            dim_value: None,
            dim_param: Some(name.into()),
        }
    }
}

//! Typed access to a node's attributes. A missing attribute is `None` (the caller
//! applies ONNX's default); one of the wrong type is an error.

use super::tensor::{self, Const};
use crate::onnx_proto::{attribute_type, AttributeProto};

pub struct Attributes<'a>(pub &'a [AttributeProto]);

impl<'a> Attributes<'a> {
    fn get(&self, name: &str, ty: i32) -> Result<Option<&'a AttributeProto>, String> {
        match self.0.iter().find(|a| a.name == name) {
            None => Ok(None),
            // Type 0 predates IR version 2's required field: trust the name.
            Some(a) if a.r#type == ty || a.r#type == 0 => Ok(Some(a)),
            Some(a) => Err(format!(
                "attribute `{name}` has type {} where {ty} was expected",
                a.r#type
            )),
        }
    }
    pub fn int(&self, name: &str) -> Result<Option<i64>, String> {
        Ok(self.get(name, attribute_type::INT)?.map(|a| a.i))
    }
    pub fn float(&self, name: &str) -> Result<Option<f32>, String> {
        Ok(self.get(name, attribute_type::FLOAT)?.map(|a| a.f))
    }
    pub fn ints(&self, name: &str) -> Result<Option<&'a [i64]>, String> {
        Ok(self
            .get(name, attribute_type::INTS)?
            .map(|a| a.ints.as_slice()))
    }
    pub fn floats(&self, name: &str) -> Result<Option<&'a [f32]>, String> {
        Ok(self
            .get(name, attribute_type::FLOATS)?
            .map(|a| a.floats.as_slice()))
    }
    pub fn string(&self, name: &str) -> Result<Option<String>, String> {
        Ok(self
            .get(name, attribute_type::STRING)?
            .map(|a| String::from_utf8_lossy(&a.s).into_owned()))
    }
    pub fn tensor(&self, name: &str) -> Result<Option<Const>, String> {
        match self.get(name, attribute_type::TENSOR)? {
            None => Ok(None),
            Some(a) => match &a.t {
                Some(t) => tensor::decode(t)
                    .map(Some)
                    .map_err(|e| format!("attribute `{name}`: {e}")),
                None => Err(format!("attribute `{name}` holds no tensor")),
            },
        }
    }
}

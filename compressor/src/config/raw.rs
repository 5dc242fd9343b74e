//! A format-neutral document tree, so JSON, TOML and YAML go through one validator.
//!
//! Parsing straight into typed structs would give serde's generic messages; parsing into
//! this tree first lets [`super::entry`] name the dict and key in every error. Unlike
//! `serde_json::Value` it keeps non-finite floats (TOML `nan`, YAML `.nan`), so a NaN
//! sparsity is reported as such instead of turning into `null`.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// One value of a parsed config document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Raw {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    List(Vec<Raw>),
    /// Keys in document order; duplicates are kept so the validator can report them.
    Map(Vec<(String, Raw)>),
}

impl Raw {
    /// A short description for "found ..." in error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Raw::Null => "null".to_string(),
            Raw::Bool(b) => format!("the boolean {b}"),
            Raw::Int(i) => format!("the integer {i}"),
            Raw::Float(f) => format!("the number {f}"),
            Raw::Str(s) => format!("the string {s:?}"),
            Raw::List(_) => "a list".to_string(),
            Raw::Map(_) => "a map".to_string(),
        }
    }

    /// Converts to JSON for algorithm-specific keys; `None` if a float is not finite
    /// or an integer does not fit JSON's 64-bit range.
    pub(crate) fn to_json(&self) -> Option<serde_json::Value> {
        use serde_json::Value;
        Some(match self {
            Raw::Null => Value::Null,
            Raw::Bool(b) => Value::Bool(*b),
            Raw::Int(i) => match (i64::try_from(*i), u64::try_from(*i)) {
                (Ok(v), _) => Value::from(v),
                (_, Ok(v)) => Value::from(v),
                _ => return None,
            },
            Raw::Float(f) => Value::Number(serde_json::Number::from_f64(*f)?),
            Raw::Str(s) => Value::String(s.clone()),
            Raw::List(items) => {
                Value::Array(items.iter().map(Raw::to_json).collect::<Option<_>>()?)
            }
            Raw::Map(pairs) => Value::Object(
                pairs
                    .iter()
                    .map(|(k, v)| Some((k.clone(), v.to_json()?)))
                    .collect::<Option<_>>()?,
            ),
        })
    }
}

/// With serde_json's `arbitrary_precision` feature (which any crate in a build can turn
/// on, e.g. defmt-decoder does), JSON numbers reach `deserialize_any` visitors as a
/// one-entry map under this key holding the number's text.
const ARBITRARY_PRECISION_NUMBER: &str = "$serde_json::private::Number";

fn number_from_digits(digits: &str) -> Option<Raw> {
    match digits.parse::<i128>() {
        Ok(i) => Some(Raw::Int(i)),
        Err(_) => digits.parse::<f64>().ok().map(Raw::Float),
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a plain value (null, boolean, number, string, list or map)")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        i128::try_from(v)
            .map(Raw::Int)
            .map_err(|_| E::custom(format!("integer {v} is too large")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }

    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Raw, D::Error> {
        Raw::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(key) = map.next_key::<Raw>()? {
            let Raw::Str(key) = key else {
                return Err(de::Error::custom(format!(
                    "map keys must be strings, found {}",
                    key.describe()
                )));
            };
            if key == ARBITRARY_PRECISION_NUMBER && pairs.is_empty() {
                let digits: String = map.next_value()?;
                return number_from_digits(&digits)
                    .ok_or_else(|| de::Error::custom(format!("`{digits}` is not a number")));
            }
            pairs.push((key, map.next_value()?));
        }
        Ok(Raw::Map(pairs))
    }
}

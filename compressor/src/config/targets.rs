//! NNI 3.x's way of saying what to compress: `target_names` (`weight`, `bias`,
//! `_input_`, `_output_`) and `quant_dtype` (`int8`, `uint4`, ...; NNI 2.x: `int`/`uint`
//! beside `quant_bits`).

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use super::QuantType;

/// One entry of `target_names`: a parameter or a module's input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Weight,
    Bias,
    Input,
    Output,
}

impl Target {
    /// Every target, in order.
    pub const ALL: [Target; 4] = [Target::Weight, Target::Bias, Target::Input, Target::Output];

    /// NNI's spelling: `weight`, `bias`, `_input_`, `_output_`.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Weight => "weight",
            Target::Bias => "bias",
            Target::Input => "_input_",
            Target::Output => "_output_",
        }
    }

    /// The v1/v2 quant type this target is (`bias` has none: sprig keeps biases in
    /// int32 at the product scale, as NNI's exporters do).
    pub fn quant_type(self) -> Option<QuantType> {
        match self {
            Target::Weight => Some(QuantType::Weight),
            Target::Input => Some(QuantType::Input),
            Target::Output => Some(QuantType::Output),
            Target::Bias => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Target::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| s.to_string())
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// `quant_dtype`: signedness, and (NNI 3.x) the bit width.
///
/// sprig's grids are affine (scale and zero point), so an unsigned `n`-bit grid has
/// the same levels as the signed one with its zero point shifted by `2^(n-1)`: `uint8`
/// and `int8` give the same model, stored signed on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantDtype {
    pub signed: bool,
    /// `None` for NNI 2.x's bare `int` / `uint` (the width comes from `quant_bits`).
    pub bits: Option<u8>,
}

impl fmt::Display for QuantDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.signed { "int" } else { "uint" })?;
        match self.bits {
            Some(b) => write!(f, "{b}"),
            None => Ok(()),
        }
    }
}

impl FromStr for QuantDtype {
    type Err = ();

    /// `int`, `uint`, `int8`, `uint4`, ... (a width from 1 to 32).
    fn from_str(s: &str) -> Result<Self, ()> {
        let (signed, digits) = match s.strip_prefix("uint") {
            Some(rest) => (false, rest),
            None => (true, s.strip_prefix("int").ok_or(())?),
        };
        let bits = match digits {
            "" => None,
            d if d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0') => {
                Some(d.parse::<u8>().map_err(|_| ())?).filter(|b| (1..=32).contains(b))
            }
            _ => return Err(()),
        };
        if !digits.is_empty() && bits.is_none() {
            return Err(());
        }
        Ok(QuantDtype { signed, bits })
    }
}

impl Serialize for QuantDtype {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtypes_of_both_generations() {
        let d = |s: &str| s.parse::<QuantDtype>();
        assert_eq!(
            d("int8"),
            Ok(QuantDtype {
                signed: true,
                bits: Some(8)
            })
        );
        assert_eq!(
            d("uint4"),
            Ok(QuantDtype {
                signed: false,
                bits: Some(4)
            })
        );
        assert_eq!(
            d("int"),
            Ok(QuantDtype {
                signed: true,
                bits: None
            })
        );
        assert_eq!(
            d("uint"),
            Ok(QuantDtype {
                signed: false,
                bits: None
            })
        );
        for bad in ["float16", "int0", "int33", "int08", "uint-4", "i8", ""] {
            assert!(d(bad).is_err(), "{bad}");
        }
        for s in ["int8", "uint2", "int"] {
            assert_eq!(d(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn target_spellings() {
        assert_eq!("_input_".parse(), Ok(Target::Input));
        assert_eq!("weight".parse(), Ok(Target::Weight));
        assert_eq!("input".parse::<Target>(), Err("input".to_string()));
        assert_eq!(Target::Bias.quant_type(), None);
        assert_eq!(Target::Output.quant_type(), Some(QuantType::Output));
    }
}

//! Resource quantities (`500m`, `2`, `1.5`, `256Mi`, `2Gi`, `10G`): one parser for
//! the whole project, exact to the milli-unit.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A non-negative amount, stored exactly in thousandths of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity {
    millis: u128,
}

/// Why a quantity string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Nothing to parse.
    #[error("must not be empty")]
    Empty,
    /// The number part is not a decimal number.
    #[error(
        "invalid quantity {0:?}: expected a number like 2, 1.5 or 500m with an optional suffix (m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei)"
    )]
    Malformed(String),
    /// The suffix is not one we know.
    #[error(
        "invalid quantity {0:?}: unknown suffix {1:?} (use m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi or Ei)"
    )]
    UnknownSuffix(String, String),
    /// More precision than a thousandth.
    #[error("invalid quantity {0:?}: finer than a thousandth (1m) cannot be represented")]
    TooPrecise(String),
    /// Too big to represent.
    #[error("invalid quantity {0:?}: too large")]
    TooLarge(String),
}

const SUFFIXES: &[(&str, u128, u128)] = &[
    // (suffix, multiplier numerator, divisor: 1 or 1000)
    ("m", 1, 1000),
    ("", 1, 1),
    ("k", 1_000, 1),
    ("M", 1_000_000, 1),
    ("G", 1_000_000_000, 1),
    ("T", 1_000_000_000_000, 1),
    ("P", 1_000_000_000_000_000, 1),
    ("E", 1_000_000_000_000_000_000, 1),
    ("Ki", 1 << 10, 1),
    ("Mi", 1 << 20, 1),
    ("Gi", 1 << 30, 1),
    ("Ti", 1 << 40, 1),
    ("Pi", 1 << 50, 1),
    ("Ei", 1 << 60, 1),
];

impl Quantity {
    /// Zero.
    pub const ZERO: Quantity = Quantity { millis: 0 };

    /// From thousandths of a unit (`from_millis(500)` is `500m`).
    pub fn from_millis(millis: u128) -> Self {
        Quantity { millis }
    }

    /// From whole units (bytes for memory and storage, cores for cpu).
    pub fn from_units(units: u64) -> Self {
        Quantity {
            millis: u128::from(units) * 1000,
        }
    }

    /// Thousandths of a unit.
    pub fn millis(self) -> u128 {
        self.millis
    }

    /// Whole units, rounded up (`1500m` → 2).
    pub fn units_ceil(self) -> u128 {
        self.millis.div_ceil(1000)
    }

    /// True when this is a whole number of units.
    pub fn is_whole(self) -> bool {
        self.millis.is_multiple_of(1000)
    }

    /// `self + other`, saturating.
    pub fn saturating_add(self, other: Quantity) -> Quantity {
        Quantity {
            millis: self.millis.saturating_add(other.millis),
        }
    }

    /// `self - other`, or zero.
    pub fn saturating_sub(self, other: Quantity) -> Quantity {
        Quantity {
            millis: self.millis.saturating_sub(other.millis),
        }
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(input: &str) -> Result<Self, QuantityError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(QuantityError::Empty);
        }
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(split);
        let number = number.strip_prefix('+').unwrap_or(number);
        let (&(_, mul, div), _) = SUFFIXES
            .iter()
            .find(|(name, _, _)| *name == suffix)
            .map(|entry| (entry, ()))
            .ok_or_else(|| {
                if suffix.starts_with('-') || number.is_empty() {
                    QuantityError::Malformed(input.to_string())
                } else {
                    QuantityError::UnknownSuffix(input.to_string(), suffix.to_string())
                }
            })?;
        let (whole, frac) = match number.split_once('.') {
            Some((w, f)) => (w, f),
            None => (number, ""),
        };
        if (whole.is_empty() && frac.is_empty())
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(QuantityError::Malformed(input.to_string()));
        }
        let too_large = || QuantityError::TooLarge(input.to_string());
        // Trailing zeros of the fraction add nothing.
        let frac = frac.trim_end_matches('0');
        // value = (whole + frac/10^len) * mul / div, in millis: * 1000. The fraction
        // (mul * 1000 / div) / 10^len is reduced first, so nothing overflows before the
        // result itself would (`340282366920938463463374607431768211455m` is u128::MAX
        // millis and must parse).
        let digits = format!("{whole}{frac}");
        let digits = digits.trim_start_matches('0');
        let mantissa: u128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| too_large())?
        };
        let scale = 10u128
            .checked_pow(u32::try_from(frac.len()).map_err(|_| too_large())?)
            .ok_or_else(too_large)?;
        let factor = mul * 1000 / div;
        let common = gcd(factor, scale);
        let numerator = mantissa
            .checked_mul(factor / common)
            .ok_or_else(too_large)?;
        let denominator = scale / common;
        if numerator % denominator != 0 {
            return Err(QuantityError::TooPrecise(input.to_string()));
        }
        Ok(Quantity {
            millis: numerator / denominator,
        })
    }
}

/// Greatest common divisor (Euclid).
fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl fmt::Display for Quantity {
    /// Canonical form: binary suffix when exact (`256Mi`), else plain units or millis.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_whole() {
            return write!(f, "{}m", self.millis);
        }
        let units = self.millis / 1000;
        if units >= 1024 {
            for (suffix, mul) in [
                ("Ei", 1u128 << 60),
                ("Pi", 1 << 50),
                ("Ti", 1 << 40),
                ("Gi", 1 << 30),
                ("Mi", 1 << 20),
                ("Ki", 1 << 10),
            ] {
                if units.is_multiple_of(mul) {
                    return write!(f, "{}{suffix}", units / mul);
                }
            }
        }
        write!(f, "{units}")
    }
}

impl PartialOrd<u64> for Quantity {
    fn partial_cmp(&self, other: &u64) -> Option<Ordering> {
        Some(self.cmp(&Quantity::from_units(*other)))
    }
}

impl PartialEq<u64> for Quantity {
    fn eq(&self, other: &u64) -> bool {
        *self == Quantity::from_units(*other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_cpu_forms() {
        assert_eq!(q("500m").millis(), 500);
        assert_eq!(q("2").millis(), 2000);
        assert_eq!(q("1.5").millis(), 1500);
        assert_eq!(q("0.001").millis(), 1);
        assert_eq!(q("0").millis(), 0);
    }

    #[test]
    fn parses_memory_forms() {
        assert_eq!(q("256Mi").units_ceil(), 256 << 20);
        assert_eq!(q("2Gi").units_ceil(), 2 << 30);
        assert_eq!(q("10G").units_ceil(), 10_000_000_000);
        assert_eq!(q("1.5Gi").units_ceil(), 3 << 29);
        assert_eq!(q("1k").units_ceil(), 1000);
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        assert!(matches!(
            "lots".parse::<Quantity>(),
            Err(QuantityError::Malformed(_))
        ));
        assert!(matches!("".parse::<Quantity>(), Err(QuantityError::Empty)));
        assert!(matches!(
            "-1".parse::<Quantity>(),
            Err(QuantityError::Malformed(_))
        ));
        assert!(matches!(
            "1.2.3".parse::<Quantity>(),
            Err(QuantityError::Malformed(_))
        ));
        assert!(matches!(
            "5Xi".parse::<Quantity>(),
            Err(QuantityError::UnknownSuffix(..))
        ));
        assert!(matches!(
            "0.0001".parse::<Quantity>(),
            Err(QuantityError::TooPrecise(_))
        ));
        assert!(matches!(
            "0.5m".parse::<Quantity>(),
            Err(QuantityError::TooPrecise(_))
        ));
        assert!(matches!(
            "99999999999999999999999999999999999999Ei".parse::<Quantity>(),
            Err(QuantityError::TooLarge(_))
        ));
    }

    /// Found by `make fuzz`: millis above u128::MAX / 1000 printed as `…m` did not parse
    /// back, and a fraction of 36+ digits with `m` overflowed `10^len * 1000` (a panic
    /// in debug builds).
    #[test]
    fn extremes_round_trip_and_long_fractions_do_not_overflow() {
        for millis in [u128::MAX, 340_282_366_920_938_463_463_374_607_431_768_212] {
            let printed = Quantity::from_millis(millis).to_string();
            assert_eq!(q(&printed).millis(), millis, "{printed}");
        }
        assert_eq!(
            q("340300000000000000000000000000000.1").to_string(),
            "340300000000000000000000000000000100m"
        );
        assert!(matches!(
            "0.000000000000000000000000000000000001m".parse::<Quantity>(),
            Err(QuantityError::TooPrecise(_))
        ));
        assert_eq!(
            q("1.0000000000000000000000000000000000000000000m").millis(),
            1
        );
        assert_eq!(
            q("1.000000000000000000001E").millis(),
            1_000_000_000_000_000_000_001
        );
        assert_eq!(q("0.0009765625Ki").millis(), 1000);
    }

    #[test]
    fn displays_canonically() {
        assert_eq!(q("500m").to_string(), "500m");
        assert_eq!(q("1024Mi").to_string(), "1Gi");
        assert_eq!(q("3").to_string(), "3");
        assert_eq!(q("1.5").to_string(), "1500m");
        assert_eq!(q(&q("1.5Gi").to_string()), q("1.5Gi"));
    }

    #[test]
    fn orders_and_compares() {
        assert!(q("500m") < q("1"));
        assert!(q("1Gi") > q("1G"));
        assert!(q("2") == 2u64);
    }
}

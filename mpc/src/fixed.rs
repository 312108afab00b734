//! Fixed-point encoding of reals into Z_2^64 and the value ranges that ops declare.
//!
//! A real `x` is encoded as `round(x · 2^f)` in two's complement modulo 2^64. The default
//! `f = 16` fractional bits: a product of two encodings carries `2f = 32` fractional bits, which
//! leaves 31 bits of magnitude (|x·y| < 2^31) below the 2^62 bound that exact truncation needs
//! (see [`crate::ops::trunc`]); LLM activations, attention scores and matmul partial sums stay far
//! below that, while the resolution 2^-16 ≈ 1.5e-5 keeps per-op errors well under the model's own
//! bf16 noise (2^-8 relative). Fewer bits (12, as in SIGMA) lose fidelity in long residual streams;
//! more bits (20+) leave too little headroom for products.

use thiserror::Error;

/// Default number of fractional bits.
pub const DEFAULT_FRAC_BITS: u32 = 16;

/// Largest magnitude (as an integer encoding) that protocols accept for any shared value: 2^62.
/// Exact truncation and comparisons need one spare bit of headroom in the 64-bit ring.
pub const MAX_ENCODED_MAGNITUDE: u64 = 1 << 62;

/// Fixed-point errors.
#[derive(Debug, Error, PartialEq)]
pub enum FixedError {
    /// The value is NaN or infinite (the value itself is not kept: inputs are private).
    #[error("value at index {index} is not finite")]
    NotFinite {
        /// its index in the input
        index: usize,
    },
    /// The value does not fit the ring or the declared range. The value itself is not kept:
    /// inputs are private (hidden states, weights) and errors end up in logs.
    #[error("value at index {index} is outside the declared range [{min}, {max}] of {what}")]
    OutOfRange {
        /// its index in the input
        index: usize,
        /// lower bound
        min: f64,
        /// upper bound
        max: f64,
        /// what declared the range
        what: &'static str,
    },
    /// Invalid number of fractional bits.
    #[error("fractional bits must be in 1..=30, got {0}")]
    BadFracBits(u32),
}

/// A closed interval of reals that an op accepts (its declared input range).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ValueRange {
    /// smallest accepted value
    pub min: f64,
    /// largest accepted value
    pub max: f64,
    /// name of the op or quantity that declares the range (for error messages)
    pub what: &'static str,
}

impl ValueRange {
    /// A symmetric range `[-bound, bound]`.
    pub const fn symmetric(bound: f64, what: &'static str) -> Self {
        Self {
            min: -bound,
            max: bound,
            what,
        }
    }

    /// Checks that every value lies inside the range, naming the first offender.
    pub fn check(&self, values: &[f64]) -> Result<(), FixedError> {
        for (index, &value) in values.iter().enumerate() {
            if !value.is_finite() {
                return Err(FixedError::NotFinite { index });
            }
            if value < self.min || value > self.max {
                return Err(FixedError::OutOfRange {
                    index,
                    min: self.min,
                    max: self.max,
                    what: self.what,
                });
            }
        }
        Ok(())
    }
}

/// Fixed-point parameters: the number of fractional bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedPoint {
    frac_bits: u32,
}

impl Default for FixedPoint {
    fn default() -> Self {
        Self {
            frac_bits: DEFAULT_FRAC_BITS,
        }
    }
}

impl FixedPoint {
    /// Fixed point with `frac_bits` fractional bits (1..=30).
    pub fn new(frac_bits: u32) -> Result<Self, FixedError> {
        if !(1..=30).contains(&frac_bits) {
            return Err(FixedError::BadFracBits(frac_bits));
        }
        Ok(Self { frac_bits })
    }

    /// Number of fractional bits `f`.
    pub fn frac_bits(&self) -> u32 {
        self.frac_bits
    }

    /// The scale `2^f` as a float.
    pub fn scale(&self) -> f64 {
        (1u64 << self.frac_bits) as f64
    }

    /// Encoding of 1.0.
    pub fn one(&self) -> u64 {
        1u64 << self.frac_bits
    }

    /// Largest real magnitude that can be encoded (2^62 / 2^f).
    pub fn max_magnitude(&self) -> f64 {
        MAX_ENCODED_MAGNITUDE as f64 / self.scale()
    }

    /// Encodes one real; errors if it is not finite or too large for the ring.
    pub fn encode(&self, x: f64) -> Result<u64, FixedError> {
        self.encode_at(x, 0)
    }

    fn encode_at(&self, x: f64, index: usize) -> Result<u64, FixedError> {
        if !x.is_finite() {
            return Err(FixedError::NotFinite { index });
        }
        let m = self.max_magnitude();
        if x.abs() >= m {
            return Err(FixedError::OutOfRange {
                index,
                min: -m,
                max: m,
                what: "fixed-point encoding",
            });
        }
        Ok(((x * self.scale()).round() as i64) as u64)
    }

    /// Encodes a slice, naming the first value that cannot be encoded.
    pub fn encode_slice(&self, xs: &[f64]) -> Result<Vec<u64>, FixedError> {
        xs.iter()
            .enumerate()
            .map(|(i, &x)| self.encode_at(x, i))
            .collect()
    }

    /// Encodes a slice after checking it against a declared range.
    pub fn encode_checked(&self, xs: &[f64], range: &ValueRange) -> Result<Vec<u64>, FixedError> {
        range.check(xs)?;
        self.encode_slice(xs)
    }

    /// Decodes one ring element (two's complement) to a real.
    pub fn decode(&self, v: u64) -> f64 {
        (v as i64) as f64 / self.scale()
    }

    /// Decodes a slice.
    pub fn decode_slice(&self, vs: &[u64]) -> Vec<f64> {
        vs.iter().map(|&v| self.decode(v)).collect()
    }

    /// Decodes a value carrying `extra` additional fractional bits (e.g. an untruncated product).
    pub fn decode_scaled(&self, v: u64, extra: u32) -> f64 {
        (v as i64) as f64 / self.scale() / (1u64 << extra) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_within_half_ulp() {
        let fx = FixedPoint::default();
        for &x in &[0.0, 1.0, -1.0, 2.5, -2.5e-3, 1234.5678, -65535.99] {
            let y = fx.decode(fx.encode(x).unwrap());
            assert!((x - y).abs() <= 0.5 / fx.scale(), "{x} -> {y}");
        }
    }

    #[test]
    fn saturation_and_nan_are_errors() {
        let fx = FixedPoint::default();
        assert!(matches!(
            fx.encode(f64::NAN),
            Err(FixedError::NotFinite { .. })
        ));
        assert!(matches!(
            fx.encode(fx.max_magnitude()),
            Err(FixedError::OutOfRange { .. })
        ));
        assert!(fx.encode(fx.max_magnitude() * 0.99).is_ok());
        assert_eq!(FixedPoint::new(0), Err(FixedError::BadFracBits(0)));
        assert_eq!(FixedPoint::new(31), Err(FixedError::BadFracBits(31)));
    }

    #[test]
    fn declared_range_names_offender() {
        let r = ValueRange::symmetric(8.0, "silu");
        assert!(r.check(&[1.0, -8.0, 8.0]).is_ok());
        match r.check(&[1.0, 9.0]) {
            Err(FixedError::OutOfRange { index, what, .. }) => {
                assert_eq!(index, 1);
                assert_eq!(what, "silu");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

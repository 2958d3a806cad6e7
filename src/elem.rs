//! The element types a corpus can store: f32, or one of two 16-bit formats that halve
//! the bytes a scan reads.
//!
//! * **f16** (IEEE binary16): 11 significant bits, values up to 65 504 (subnormals below
//!   6.1e-5). Suits unit-scale embeddings; a larger value is an error, not infinity.
//! * **bf16** (the upper half of an f32): 8 significant bits and f32's whole range.
//!
//! Converting f32 to either rounds to nearest, ties to even, so it is lossy: a stored row
//! is the rounded row, and every score is computed from the stored values (widened to f32
//! exactly), not from the f32 values given. Use f32 when the last bits matter more than
//! the memory bus.
//!
//! The scalar conversions are the `half` crate's; the scan kernels widen 16-bit rows in
//! registers (F16C or AVX-512 for f16, a 16-bit shift for bf16).

use crate::error::{Error, Result};
pub(crate) use crate::simd::Half;
pub use half::{bf16, f16};

/// How a corpus stores its values.
///
/// ```
/// use hybridvec::ElementType;
/// assert_eq!(ElementType::from_name("bf16"), Some(ElementType::Bf16));
/// assert_eq!(ElementType::F16.bytes(), 2);
/// assert_eq!(ElementType::default(), ElementType::F32);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ElementType {
    /// 32-bit IEEE floats, as given (the default).
    #[default]
    F32,
    /// 16-bit IEEE floats (binary16): rounded from f32; values beyond ±65 504 are an error.
    F16,
    /// bfloat16: f32 rounded to its upper 16 bits (8 significant bits, f32's range).
    Bf16,
}

impl ElementType {
    /// Every element type, narrowest last.
    pub const ALL: [ElementType; 3] = [ElementType::F32, ElementType::F16, ElementType::Bf16];

    /// Bytes per stored value.
    pub fn bytes(self) -> usize {
        match self {
            ElementType::F32 => 4,
            ElementType::F16 | ElementType::Bf16 => 2,
        }
    }

    /// Its name: `f32`, `f16` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            ElementType::F32 => "f32",
            ElementType::F16 => "f16",
            ElementType::Bf16 => "bf16",
        }
    }

    /// The type a name denotes (`f32`, `f16`/`float16`, `bf16`/`bfloat16`, any case).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" => Some(ElementType::F32),
            "f16" | "float16" | "fp16" => Some(ElementType::F16),
            "bf16" | "bfloat16" => Some(ElementType::Bf16),
            _ => None,
        }
    }

    /// `v` as a corpus or store of this type keeps it: `v` itself for f32, else rounded to
    /// nearest (ties to even) and widened back. A value beyond f16's range gives infinity
    /// here; the constructors refuse it ([`Error::NotRepresentable`]).
    ///
    /// ```
    /// use hybridvec::ElementType;
    /// assert_eq!(ElementType::F32.stored_value(0.1), 0.1);
    /// assert_eq!(ElementType::F16.stored_value(0.1), 0.099975586);
    /// assert_eq!(ElementType::Bf16.stored_value(1.0 + 1.0 / 256.0), 1.0); // a tie, to even
    /// ```
    pub fn stored_value(self, v: f32) -> f32 {
        match self.half() {
            None => v,
            Some(h) => h.to_f32(h.round(v)),
        }
    }

    /// The 16-bit format, or `None` for f32.
    pub(crate) fn half(self) -> Option<Half> {
        match self {
            ElementType::F32 => None,
            ElementType::F16 => Some(Half::F16),
            ElementType::Bf16 => Some(Half::Bf16),
        }
    }
}

impl std::fmt::Display for ElementType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Half {
    /// The element type this format stores.
    pub(crate) fn element(self) -> ElementType {
        match self {
            Half::F16 => ElementType::F16,
            Half::Bf16 => ElementType::Bf16,
        }
    }
}

/// Rounds row-major f32 `data` (`cols` values a row) to `half`, or
/// [`Error::NonFinite`] at the first NaN or infinity, or [`Error::NotRepresentable`] at
/// the first finite value that rounds to infinity (f16 beyond ±65 504).
pub(crate) fn encode(half: Half, data: &[f32], cols: usize) -> Result<Vec<u16>> {
    use rayon::prelude::*;
    let mut out = crate::mem::zeroed_u16(data.len());
    const CHUNK: usize = 1 << 16;
    let bad = out
        .par_chunks_mut(CHUNK)
        .zip(data.par_chunks(CHUNK))
        .enumerate()
        .filter_map(|(c, (dst, src))| {
            let mut first = None;
            for (i, (d, &v)) in dst.iter_mut().zip(src).enumerate() {
                *d = half.round(v);
                if first.is_none() && !half.to_f32(*d).is_finite() {
                    first = Some(c * CHUNK + i);
                }
            }
            first
        })
        .min();
    match bad {
        None => Ok(out),
        Some(at) => {
            let (row, col) = (at / cols.max(1), at % cols.max(1));
            let value = data[at];
            Err(if value.is_finite() {
                Error::NotRepresentable {
                    row,
                    col,
                    value,
                    element: half.element().name(),
                }
            } else {
                Error::NonFinite { row, col }
            })
        }
    }
}

/// The position of the first NaN or infinite value of 16-bit `data`, if any.
pub(crate) fn first_non_finite(half: Half, data: &[u16]) -> Option<usize> {
    use rayon::prelude::*;
    // The exponent bits all set: infinity or NaN, in both formats.
    let mask = match half {
        Half::F16 => 0x7c00u16,
        Half::Bf16 => 0x7f80u16,
    };
    data.par_chunks(1 << 16)
        .enumerate()
        .find_map_first(|(c, chunk)| {
            chunk
                .iter()
                .position(|&b| b & mask == mask)
                .map(|i| c * (1 << 16) + i)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in ElementType::ALL {
            assert_eq!(ElementType::from_name(t.name()), Some(t));
            assert_eq!(t.to_string(), t.name());
        }
        assert_eq!(ElementType::from_name("int8"), None);
        assert_eq!(ElementType::from_name(""), None);
    }

    /// Widening is exact and rounding is to nearest, ties to even, against values worked
    /// out by hand; decoding a slice agrees with one value at a time.
    #[test]
    fn conversions_round_to_nearest_even_and_widen_exactly() {
        // 1 + 2^-11 is halfway between two f16 values: ties go to the even one (1.0);
        // 1 + 3·2^-11 goes up to 1 + 2^-9.
        assert_eq!(Half::F16.to_f32(Half::F16.round(1.0 + 2f32.powi(-11))), 1.0);
        assert_eq!(
            Half::F16.to_f32(Half::F16.round(1.0 + 3.0 * 2f32.powi(-11))),
            1.0 + 2f32.powi(-9)
        );
        // bf16 keeps 8 significant bits: 1 + 2^-8 is a tie, to even (1.0).
        assert_eq!(
            Half::Bf16.to_f32(Half::Bf16.round(1.0 + 2f32.powi(-8))),
            1.0
        );
        // 3e38 is 0x7f61b1e6: its low half 0xb1e6 is past halfway, so it rounds up.
        assert_eq!(
            Half::Bf16.to_f32(Half::Bf16.round(-3.0e38)),
            -3.004_055_3e38
        );
        let v = crate::data::random_vec(1000, 3, 1);
        for h in [Half::F16, Half::Bf16] {
            let bits: Vec<u16> = v.iter().map(|&x| h.round(x)).collect();
            let mut wide = vec![f32::NAN; v.len()];
            h.decode(&bits, &mut wide);
            for ((&x, &b), &w) in v.iter().zip(&bits).zip(&wide) {
                assert_eq!(w, h.to_f32(b));
                let rel = ((w - x) / x).abs();
                let bound = if h == Half::F16 {
                    2f32.powi(-11)
                } else {
                    2f32.powi(-8)
                };
                assert!(rel <= bound, "{h:?}: {x} -> {w}");
            }
        }
    }

    #[test]
    fn encode_names_the_first_value_that_does_not_fit() {
        let mut data = vec![0.5f32; 12];
        data[7] = 70_000.0;
        data[9] = f32::NAN;
        match encode(Half::F16, &data, 4) {
            Err(Error::NotRepresentable {
                row: 1,
                col: 3,
                value,
                element: "f16",
            }) => assert_eq!(value, 70_000.0),
            other => panic!("{other:?}"),
        }
        // bf16 holds 70 000; the NaN is next.
        assert!(matches!(
            encode(Half::Bf16, &data, 4),
            Err(Error::NonFinite { row: 2, col: 1 })
        ));
        data[9] = f32::MAX; // rounds up past bf16's largest value
        assert!(matches!(
            encode(Half::Bf16, &data, 4),
            Err(Error::NotRepresentable { row: 2, col: 1, .. })
        ));
        data[9] = 1.0;
        assert_eq!(
            encode(Half::Bf16, &data, 4).unwrap()[7],
            Half::Bf16.round(70_000.0)
        );
    }

    #[test]
    fn first_non_finite_sees_both_formats_infinities_and_nans() {
        for h in [Half::F16, Half::Bf16] {
            let mut bits = vec![h.round(1.5); 200_000];
            assert_eq!(first_non_finite(h, &bits), None);
            bits[150_000] = h.round(f32::NEG_INFINITY);
            bits[199_999] = h.round(f32::NAN);
            assert_eq!(first_non_finite(h, &bits), Some(150_000));
            bits[3] = h.round(f32::NAN);
            assert_eq!(first_non_finite(h, &bits), Some(3));
        }
    }
}

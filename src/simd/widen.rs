//! 16-bit rows: the two formats, their conversions, and the streaming dot products that
//! widen rows in registers.
//!
//! The kernels read half the bytes of the f32 ones and do the same arithmetic on the
//! widened values (exact: every f16 and bf16 value is an f32), so a memory-bound scan
//! takes about half the time. They are simpler than the f32 streaming kernels: one row
//! at a time against groups of up to four queries, each 16 or 32 widened values used for
//! every query of the group, the rows prefetched ahead. Levels without such a kernel
//! (scalar, NEON, AVX2 without F16C for f16) widen a block of rows into a buffer and run
//! [`dots_rows`](super::dots_rows) on it.

use super::SimdLevel;
use half::{bf16, f16};

/// A 16-bit storage format, as raw bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Half {
    /// IEEE binary16.
    F16,
    /// bfloat16.
    Bf16,
}

impl Half {
    /// One value widened to f32 (exact).
    #[inline]
    pub(crate) fn to_f32(self, bits: u16) -> f32 {
        match self {
            Half::F16 => f16::from_bits(bits).to_f32(),
            Half::Bf16 => f32::from_bits((bits as u32) << 16),
        }
    }

    /// One value rounded to nearest, ties to even.
    #[inline]
    pub(crate) fn from_f32(self, v: f32) -> u16 {
        match self {
            Half::F16 => f16::from_f32(v).to_bits(),
            Half::Bf16 => bf16::from_f32(v).to_bits(),
        }
    }

    /// Widens `src` into `dst` (equal lengths).
    pub(crate) fn decode(self, src: &[u16], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len(), "decode lengths differ");
        match self {
            Half::F16 => {
                use half::slice::HalfFloatSliceExt;
                // Uses F16C where the CPU has it.
                bytemuck::cast_slice::<u16, f16>(src).convert_to_f32_slice(dst);
            }
            Half::Bf16 => dst
                .iter_mut()
                .zip(src)
                .for_each(|(d, &s)| *d = f32::from_bits((s as u32) << 16)),
        }
    }
}

/// [`dots_rows`](super::dots_rows) of 16-bit rows:
/// `out[q * n + r] = (widen(rows[r]) · queries[q]) * scale[r]` for the `n = scale.len()`
/// rows (`d` values each) and every query.
///
/// # Panics
/// When the lengths disagree.
pub(crate) fn dots_rows_half(
    level: SimdLevel,
    half: Half,
    rows: &[u16],
    d: usize,
    queries: &[f32],
    scale: &[f32],
    out: &mut [f32],
) {
    let n = scale.len();
    let nq = queries.len().checked_div(d).unwrap_or(out.len() / n.max(1));
    assert!(
        rows.len() == n * d && queries.len() == nq * d && out.len() == n * nq,
        "rows, queries, scale and output do not agree"
    );
    if d == 0 {
        out.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let bf = half == Half::Bf16;
        match level {
            // SAFETY: callers pass the CPU backend's level, which it checked is supported
            // (`CpuBackend::new`); the lengths agree (asserted above).
            SimdLevel::Avx512 if bf => unsafe {
                super::widen_x86::dots_rows_avx512::<true>(rows, d, queries, scale, out)
            },
            // SAFETY: as above.
            SimdLevel::Avx512 => unsafe {
                super::widen_x86::dots_rows_avx512::<false>(rows, d, queries, scale, out)
            },
            // SAFETY: as above; the bf16 kernel needs only AVX2 and FMA.
            SimdLevel::Avx2Fma if bf => unsafe {
                super::widen_x86::dots_rows_avx2::<true>(rows, d, queries, scale, out)
            },
            // SAFETY: as above, and F16C is checked here.
            SimdLevel::Avx2Fma if std::arch::is_x86_feature_detected!("f16c") => unsafe {
                super::widen_x86::dots_rows_avx2::<false>(rows, d, queries, scale, out)
            },
            _ => widened(level, half, rows, d, queries, scale, out),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    widened(level, half, rows, d, queries, scale, out)
}

/// The portable path: blocks of rows widened into a buffer (about 16 KiB, in L1), then
/// the f32 kernels.
fn widened(
    level: SimdLevel,
    half: Half,
    rows: &[u16],
    d: usize,
    queries: &[f32],
    scale: &[f32],
    out: &mut [f32],
) {
    let (n, nq) = (scale.len(), queries.len() / d);
    let block = (4096 / d).max(1);
    let mut wide = vec![0.0f32; block.min(n) * d];
    let mut part = vec![0.0f32; block.min(n) * nq];
    for start in (0..n).step_by(block) {
        let end = (start + block).min(n);
        let m = end - start;
        half.decode(&rows[start * d..end * d], &mut wide[..m * d]);
        super::dots_rows(
            level,
            &wide[..m * d],
            d,
            queries,
            &scale[start..end],
            &mut part[..m * nq],
        );
        for q in 0..nq {
            out[q * n + start..q * n + end].copy_from_slice(&part[q * m..(q + 1) * m]);
        }
    }
}

#[cfg(test)]
mod tests;

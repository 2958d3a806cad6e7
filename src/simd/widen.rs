//! 16-bit rows: the two formats, their conversions, and the streaming dot products that
//! widen rows in registers.
//!
//! The kernels read half the bytes of the f32 ones and do the same arithmetic on the
//! widened values (exact: every f16 and bf16 value is an f32), so a memory-bound scan
//! takes about half the time. They are simpler than the f32 streaming kernels: one row at
//! a time against a group of up to eight queries, each 16 or 32 widened values used for
//! every query of the group, with no software prefetch (see `widen_x86`). More queries,
//! and levels without such a kernel (scalar, NEON, AVX2 without F16C for f16), widen a
//! block of rows into a buffer and run [`dots_rows`](super::dots_rows) on it.

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
    pub(crate) fn round(self, v: f32) -> u16 {
        match self {
            Half::F16 => f16::from_f32(v).to_bits(),
            Half::Bf16 => bf16::from_f32(v).to_bits(),
        }
    }

    /// Widens `src` into `dst` (equal lengths), with the widest instructions the CPU has.
    pub(crate) fn decode(self, src: &[u16], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len(), "decode lengths differ");
        #[cfg(target_arch = "x86_64")]
        {
            use super::widen_x86::{decode_avx2, decode_avx512};
            let bf = self == Half::Bf16;
            if SimdLevel::Avx512.is_supported() {
                // SAFETY: the CPU has AVX-512F (checked on the line above).
                unsafe {
                    if bf {
                        decode_avx512::<true>(src, dst)
                    } else {
                        decode_avx512::<false>(src, dst)
                    }
                }
                return;
            }
            if SimdLevel::Avx2Fma.is_supported() && std::arch::is_x86_feature_detected!("f16c") {
                // SAFETY: the CPU has AVX2, FMA and F16C (checked on the line above).
                unsafe {
                    if bf {
                        decode_avx2::<true>(src, dst)
                    } else {
                        decode_avx2::<false>(src, dst)
                    }
                }
                return;
            }
        }
        match self {
            Half::F16 => {
                use half::slice::HalfFloatSliceExt;
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
    if super::checked_empty(rows.len(), d, queries, scale, out) {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if queries.len() / d <= FUSED_MAX_QUERIES {
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
        return;
    }
    widened(level, half, rows, d, queries, scale, out)
}

/// The most queries the fused kernels take. Past eight, a row meets more query streams
/// than one group holds, and the f32 kernels' register blocking over widened rows wins
/// (300k × 768, 2 cores, AVX-512, fused against widened: Q = 5 29 against 41 ms, Q = 8 44
/// against 56, Q = 12 71–75 against 50–52, Q = 16 93 against 61–65).
#[cfg(target_arch = "x86_64")]
const FUSED_MAX_QUERIES: usize = 8;

/// Values the f32 kernels score per call in [`widened`]: whole 3-row steps of at least
/// this many values. Per call, a slice of the next block is hinted; smaller calls spread
/// the hints thinner but cost more calls (300k × 768, Q = 16: 3 rows a call 52 ms, 6 rows
/// 54, 12 rows 57, f32 47; at D = 100, 3 rows a call took 8.6 ms against 6.5 for whole
/// blocks).
const STEP_VALUES: usize = 3 * 768;

/// Blocks of rows widened into a buffer (about 128 KiB, in L2), then the f32 kernels:
/// the portable path, and the one for more queries than the fused kernels take.
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
    let block = ((32 << 10) / d).max(1).min(n);
    thread_local! {
        /// One thread's widened rows and their scores, kept between calls.
        static BUFFERS: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
            const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    }
    BUFFERS.with_borrow_mut(|(wide, part)| {
        // The rows start on a cache line, where the f32 kernels load them whole lines at
        // a time and need no copy of the queries.
        wide.resize(block * d + 16, 0.0);
        let skip = wide.as_ptr().align_offset(64).min(16);
        let wide = &mut wide[skip..skip + block * d];
        part.resize(block * nq, 0.0);
        for start in (0..n).step_by(block) {
            let end = (start + block).min(n);
            let m = end - start;
            half.decode(&rows[start * d..end * d], &mut wide[..m * d]);
            // The next block's lines come in while this one is scored, a slice before
            // each step of rows (a burst of hints waits on the line-fill buffers): without
            // them the decode waited on memory while the kernels, reading L2, let it idle.
            let ahead = &rows[end * d..((end + block).min(n)) * d];
            let step_rows = STEP_VALUES.div_ceil(d).next_multiple_of(3);
            let steps = m.div_ceil(step_rows);
            let per = ahead.len().div_ceil(steps.max(1));
            for (i, r0) in (0..m).step_by(step_rows).enumerate() {
                let r1 = (r0 + step_rows).min(m);
                prefetch_l2(
                    ahead
                        .get(i * per..((i + 1) * per).min(ahead.len()))
                        .unwrap_or(&[]),
                );
                let s = r1 - r0;
                super::dots_rows(
                    level,
                    &wide[r0 * d..r1 * d],
                    d,
                    queries,
                    &scale[start + r0..start + r1],
                    &mut part[..s * nq],
                );
                for q in 0..nq {
                    out[q * n + start + r0..q * n + start + r1]
                        .copy_from_slice(&part[q * s..(q + 1) * s]);
                }
            }
        }
    });
}

/// Hints every line of `data` into L2. A hint never faults and has no architectural
/// effect.
fn prefetch_l2(data: &[u16]) {
    #[cfg(target_arch = "x86_64")]
    for line in data.chunks(32) {
        // SAFETY: SSE is part of the x86-64 baseline; the address is inside `data`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

#[cfg(test)]
mod tests;

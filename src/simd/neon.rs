//! NEON streaming dot products: four queries per pass over a row, like the AVX2 kernels.
//!
//! A NEON register holds 4 floats, so each query keeps four accumulators (16 floats per
//! step): sixteen independent FMA chains cover the four-cycle FMA latency of two to four
//! 128-bit pipes, and with the four row vectors they use 20 of the 32 registers.

use std::arch::aarch64::*;

/// `out[q * n + r] = (rows[r] · queries[q]) * scale[r]` for the `n = scale.len()` rows
/// (`d > 0` values each) and every query.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn dots_rows(
    rows: &[f32],
    d: usize,
    queries: &[f32],
    scale: &[f32],
    out: &mut [f32],
) {
    let n = scale.len();
    let nq = queries.len() / d;
    assert!(
        rows.len() == n * d && queries.len() == nq * d && out.len() == n * nq,
        "rows, queries, scale and output do not agree"
    );
    for (r, (row, &w)) in rows.chunks_exact(d).zip(scale).enumerate() {
        let mut q = 0;
        while q + 4 <= nq {
            let s = dot4(row, &queries[q * d..(q + 4) * d]);
            for (j, s) in s.into_iter().enumerate() {
                out[(q + j) * n + r] = s * w;
            }
            q += 4;
        }
        while q < nq {
            out[q * n + r] = dot1(row, &queries[q * d..(q + 1) * d]) * w;
            q += 1;
        }
    }
}

/// Four floats from `s[i..i + 4]`; the slice index is the bounds check, so callers need no
/// unsafe code.
#[inline]
#[target_feature(enable = "neon")]
fn load4(s: &[f32], i: usize) -> float32x4_t {
    let chunk = &s[i..i + 4];
    // SAFETY: `chunk` holds exactly 4 initialised floats; `vld1q_f32` needs only the
    // alignment of `f32`, which a `&[f32]` has.
    unsafe { vld1q_f32(chunk.as_ptr()) }
}

/// The sum of four accumulators' lanes.
#[inline]
#[target_feature(enable = "neon")]
fn hsum4(acc: [float32x4_t; 4]) -> f32 {
    vaddvq_f32(vaddq_f32(
        vaddq_f32(acc[0], acc[1]),
        vaddq_f32(acc[2], acc[3]),
    ))
}

/// One dot product with four accumulators (16 floats per iteration).
#[inline]
#[target_feature(enable = "neon")]
fn dot1(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    assert_eq!(b.len(), n);
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        for (u, acc) in acc.iter_mut().enumerate() {
            let o = i + 4 * u;
            *acc = vfmaq_f32(*acc, load4(a, o), load4(b, o));
        }
        i += 16;
    }
    while i + 4 <= n {
        acc[0] = vfmaq_f32(acc[0], load4(a, i), load4(b, i));
        i += 4;
    }
    let mut s = hsum4(acc);
    while i < n {
        s = a[i].mul_add(b[i], s);
        i += 1;
    }
    s
}

/// Four dot products of `row` against four consecutive query rows, four accumulators each,
/// so each 4-float piece of `row` is loaded once for four FMAs.
#[inline]
#[target_feature(enable = "neon")]
fn dot4(row: &[f32], q: &[f32]) -> [f32; 4] {
    let d = row.len();
    assert_eq!(q.len(), 4 * d);
    let qs = [&q[..d], &q[d..2 * d], &q[2 * d..3 * d], &q[3 * d..]];
    let mut acc = [[vdupq_n_f32(0.0); 4]; 4]; // [query][piece of the 16-float step]
    let mut i = 0;
    while i + 16 <= d {
        let r = [
            load4(row, i),
            load4(row, i + 4),
            load4(row, i + 8),
            load4(row, i + 12),
        ];
        for (acc, qj) in acc.iter_mut().zip(qs) {
            for (u, (acc, &r)) in acc.iter_mut().zip(&r).enumerate() {
                *acc = vfmaq_f32(*acc, r, load4(qj, i + 4 * u));
            }
        }
        i += 16;
    }
    while i + 4 <= d {
        let r = load4(row, i);
        for (acc, qj) in acc.iter_mut().zip(qs) {
            acc[0] = vfmaq_f32(acc[0], r, load4(qj, i));
        }
        i += 4;
    }
    let mut out = [0.0f32; 4];
    for ((o, acc), qj) in out.iter_mut().zip(acc).zip(qs) {
        let mut s = hsum4(acc);
        for t in i..d {
            s = row[t].mul_add(qj[t], s);
        }
        *o = s;
    }
    out
}

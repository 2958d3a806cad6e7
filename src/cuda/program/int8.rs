//! The certified int8 scan's candidates (`kernels/int8.cu`): every live row's interval
//! for each query from the resident int8 tier, each query's k best lower bounds by the
//! radix select, and a mask of the rows whose upper bound reaches some query's k-th best
//! lower bound. Every other row is provably outside every query's top-k, so a top-k of the
//! masked rows with the FP32 kernels is the full scan's answer, bit for bit (each row's
//! score depends on neither the other rows nor the mask).
//!
//! When not to use it: for batches past a few queries the bounds cost about as much as
//! the scan they spare (the codes are read once per eight queries, and every pair gets
//! f64 bounds), and a corpus whose rows quantise badly re-scores most of its rows.

use super::select;
use super::{grid, int, long, Arg, Buf, Elem, Extents, Kernel, Launch, Program};
use super::{MAX_K, SEGMENT, SMALL_Q, SMALL_Q_SMEM};
use crate::metric::Metric;

/// What a certified int8 scan looks like to the planner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Int8Shape {
    pub nq: usize,
    pub n: usize,
    pub dim: usize,
    /// Rows not live are cleared in a mask (their bounds are absent).
    pub masked: bool,
    /// Cosine scales a row's dot product by its inverse norm, L2 adds its bias.
    pub metric: Metric,
}

/// f32 words of one query in the program's queries input: its four bounds (scale,
/// residual, norm, coded norm), then its codes, four to a word, zero-padded.
pub(crate) fn query_words(dim: usize) -> usize {
    4 + dim.div_ceil(4)
}

/// Queries one bounds launch stages in shared memory: up to eight.
fn group(dim: usize) -> usize {
    (SMALL_Q_SMEM / (4 * query_words(dim))).min(SMALL_Q)
}

/// The candidate mask of `s` for top-`k`: `ceil(n / 32)` u32 words in
/// [`Program::scores`], bit `r % 32` of word `r / 32` set for a candidate row `r`. `None`
/// where the certificate does not apply: `k` of 0, past [`MAX_K`] or not below the row
/// count (every row is then a candidate), or rows too long for an i32 dot product or for
/// one query in shared memory.
pub(crate) fn int8_candidates(s: &Int8Shape, k: usize) -> Option<Program> {
    let (nq, n, dim) = (s.nq, s.n, s.dim);
    let g = group(dim);
    if nq == 0 || k == 0 || k > MAX_K || k >= n || dim > crate::quant::MAX_SCAN_DIM || g == 0 {
        return None;
    }
    let words = query_words(dim);
    let mut p = Program::new(Extents {
        queries: nq * words,
        inv_norms: if s.metric == Metric::Cosine { n } else { 0 },
        mask: if s.masked { n.div_ceil(32) } else { 0 },
        bias: if s.metric == Metric::L2 { n } else { 0 },
        codes: n * dim,
        code_bounds: 4 * n,
        ..Extents::default()
    });
    let (lo, hi) = (p.temp(Elem::F32, nq * n), p.temp(Elem::F32, nq * n));
    let (inv, bias) = match s.metric {
        Metric::Cosine => (Arg::Ptr(Buf::InvNorms, 0), Arg::Null),
        Metric::InnerProduct => (Arg::Null, Arg::Null),
        Metric::L2 => (Arg::Null, Arg::Ptr(Buf::Bias, 0)),
    };
    let mask = if s.masked {
        Arg::Ptr(Buf::Mask, 0)
    } else {
        Arg::Null
    };
    for q0 in (0..nq).step_by(g) {
        let qn = g.min(nq - q0);
        // Reads qn queries' words, every row's codes, bounds and factors; writes qn rows
        // of n bounds each from q0.
        p.launches.push(Launch {
            kernel: Kernel::Int8Bounds,
            grid: grid(n.div_ceil(8).clamp(1, 1 << 20), 1),
            block: 256,
            smem: (qn * words * 4) as u32,
            args: vec![
                Arg::Ptr(Buf::Queries, q0 * words),
                int(qn),
                int(dim),
                Arg::Ptr(Buf::Codes, 0),
                Arg::Ptr(Buf::CodeBounds, 0),
                inv,
                bias,
                mask,
                long(n),
                Arg::Ptr(lo, q0 * n),
                Arg::Ptr(hi, q0 * n),
                long(n),
            ],
        });
    }
    // Each query's k best lower bounds, best first.
    let segments = n.div_ceil(SEGMENT);
    let out_ld = segments * k;
    let (sel_s, sel_i) = (
        p.temp(Elem::F32, nq * out_ld),
        p.temp(Elem::I64, nq * out_ld),
    );
    select::select(
        &mut p,
        nq,
        (lo, None, None, n, n, 0),
        k,
        (sel_s, sel_i, out_ld, 0, segments),
    );
    let (floors, _) = select::merge(&mut p, nq, k, (sel_s, sel_i, out_ld), None);
    let words_out = n.div_ceil(32);
    let out = p.temp(Elem::U32, words_out);
    // Reads nq rows of n upper bounds and nq × k floors; writes every mask word.
    p.launches.push(Launch {
        kernel: Kernel::Int8Mask,
        grid: grid(words_out.div_ceil(8).clamp(1, 1 << 20), 1),
        block: 256,
        smem: 0,
        args: vec![
            Arg::Ptr(hi, 0),
            long(n),
            int(nq),
            Arg::Ptr(floors, 0),
            int(k),
            long(n),
            Arg::Ptr(out, 0),
        ],
    });
    p.scores = out;
    p.indices = out;
    Some(p)
}

/// The queries input of [`int8_candidates`] for `queries` (`dim` values each, finite):
/// each quantised as the CPU's tier scan quantises it, in [`query_words`] words.
pub(crate) fn int8_queries(queries: &[f32], dim: usize) -> Vec<f32> {
    let words = query_words(dim);
    let mut out = vec![0f32; queries.len() / dim * words];
    for (q, o) in queries.chunks_exact(dim).zip(out.chunks_exact_mut(words)) {
        let iq = crate::quant::int8::Int8Query::new(q);
        o[..4].copy_from_slice(&[iq.q.scale, iq.q.residual, iq.q.norm, iq.q.coded_norm]);
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut o[4..]);
        for (b, &c) in bytes.iter_mut().zip(&iq.codes) {
            *b = c as u8;
        }
    }
    out
}

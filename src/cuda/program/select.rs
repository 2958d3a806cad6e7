//! Selection passes: radix-select keeps the best k of each segment of candidates, pass
//! after pass, and a final sort orders each query's k.

use super::{grid, int, long, Arg, Buf, Elem, Kernel, Launch, Program, SEGMENT};

/// Merges per query `len` candidates at stride `len` in (cand_s, cand_i) (with `counts`,
/// only the first counts[q] of query q's are written) down to the best k, sorted: each
/// pass keeps k per segment of SEGMENT, until k per query remain. Requires len ≥ k.
pub(super) fn merge(
    p: &mut Program,
    nq: usize,
    k: usize,
    (cand_s, cand_i, mut len): (Buf, Buf, usize),
    mut counts: Option<Buf>,
) -> (Buf, Buf) {
    let (mut src_s, mut src_i, mut ld) = (cand_s, cand_i, len);
    while len > k {
        let out_ld = len.div_ceil(SEGMENT) * k;
        let next_s = p.temp(Elem::F32, nq * out_ld);
        let next_i = p.temp(Elem::I64, nq * out_ld);
        select(
            p,
            nq,
            (src_s, Some(src_i), counts.take(), ld, len, 0),
            k,
            (next_s, next_i, out_ld, 0, len.div_ceil(SEGMENT)),
        );
        (src_s, src_i, ld, len) = (next_s, next_i, out_ld, out_ld);
    }
    debug_assert_eq!((len, ld), (k, k));
    // Reads and writes k slots per query at stride k.
    p.launches.push(Launch {
        kernel: Kernel::SortTopK,
        grid: grid(nq, 1),
        block: 512,
        smem: 0,
        args: vec![Arg::Ptr(src_s, 0), Arg::Ptr(src_i, 0), int(k)],
    });
    (src_s, src_i)
}

/// Where a selection pass writes: k slots for each of `segments` segments, at
/// `(seg_offset + segment) · k` of rows of stride `out_ld`.
type SelectOut = (Buf, Buf, usize, usize, usize);

/// A selection launch of `kernel` over `len` candidates per query: `head` (the source's
/// arguments, up to the index base), then k and the destination, then `tail`.
fn push_select(
    p: &mut Program,
    kernel: Kernel,
    nq: usize,
    (head, len, tail): (Vec<Arg>, usize, Vec<Arg>),
    k: usize,
    (out_s, out_i, out_ld, seg_offset, segments): SelectOut,
) {
    debug_assert!(segments >= len.div_ceil(SEGMENT));
    debug_assert!((seg_offset + segments) * k <= out_ld);
    let out = vec![
        int(k),
        Arg::Ptr(out_s, 0),
        Arg::Ptr(out_i, 0),
        long(out_ld),
        long(seg_offset),
    ];
    p.launches.push(Launch {
        kernel,
        grid: grid(segments, nq),
        block: 256,
        smem: 0,
        args: [head, out, tail].concat(),
    });
}

/// One radix-select pass. Source: per query, `len` candidates at stride `ld` (or
/// `counts[q]` of them when fewer; indices, or `index_base + position`). Destination: k
/// slots for each of `segments` ≥ ceil(len / SEGMENT) segments (those past the
/// candidates all empty), at `(seg_offset + segment) · k` of rows of stride `out_ld`.
#[allow(clippy::type_complexity)]
pub(super) fn select(
    p: &mut Program,
    nq: usize,
    (scores, indices, counts, ld, len, index_base): (
        Buf,
        Option<Buf>,
        Option<Buf>,
        usize,
        usize,
        usize,
    ),
    k: usize,
    out: SelectOut,
) {
    let head = vec![
        Arg::Ptr(scores, 0),
        indices.map_or(Arg::Null, |b| Arg::Ptr(b, 0)),
        counts.map_or(Arg::Null, |b| Arg::Ptr(b, 0)),
        long(ld),
        long(len),
        long(index_base),
    ];
    push_select(p, Kernel::SelectTopK, nq, (head, len, vec![]), k, out);
}

/// [`select`] over the dot products a GEMM wrote for rows `index_base ..`, applying each
/// row's `factors` (inverse norm, bias, mask: [`Shape::row_factors`]) as it reads them.
pub(super) fn select_scored(
    p: &mut Program,
    nq: usize,
    (scores, ld, len, index_base): (Buf, usize, usize, usize),
    k: usize,
    out: SelectOut,
    factors: [Arg; 3],
) {
    let head = vec![Arg::Ptr(scores, 0), long(ld), long(len), long(index_base)];
    let tail = factors.to_vec();
    push_select(p, Kernel::SelectTopKScored, nq, (head, len, tail), k, out);
}

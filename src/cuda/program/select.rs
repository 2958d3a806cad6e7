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
    (out_s, out_i, out_ld, seg_offset, segments): (Buf, Buf, usize, usize, usize),
) {
    debug_assert!(segments >= len.div_ceil(SEGMENT));
    debug_assert!((seg_offset + segments) * k <= out_ld);
    p.launches.push(Launch {
        kernel: Kernel::SelectTopK,
        grid: grid(segments, nq),
        block: 256,
        smem: 0,
        args: vec![
            Arg::Ptr(scores, 0),
            indices.map_or(Arg::Null, |b| Arg::Ptr(b, 0)),
            counts.map_or(Arg::Null, |b| Arg::Ptr(b, 0)),
            long(ld),
            long(len),
            long(index_base),
            int(k),
            Arg::Ptr(out_s, 0),
            Arg::Ptr(out_i, 0),
            long(out_ld),
            long(seg_offset),
        ],
    });
}

/// [`select`] over the dot products a GEMM wrote for rows `index_base ..`, applying each
/// row's `factors` (inverse norm, bias, mask: [`Shape::row_factors`]) as it reads them.
pub(super) fn select_scored(
    p: &mut Program,
    nq: usize,
    (scores, ld, len, index_base): (Buf, usize, usize, usize),
    k: usize,
    (out_s, out_i, out_ld, seg_offset, segments): (Buf, Buf, usize, usize, usize),
    factors: [Arg; 3],
) {
    debug_assert!(segments >= len.div_ceil(SEGMENT));
    debug_assert!((seg_offset + segments) * k <= out_ld);
    p.launches.push(Launch {
        kernel: Kernel::SelectTopKScored,
        grid: grid(segments, nq),
        block: 256,
        smem: 0,
        args: [
            vec![
                Arg::Ptr(scores, 0),
                long(ld),
                long(len),
                long(index_base),
                int(k),
                Arg::Ptr(out_s, 0),
                Arg::Ptr(out_i, 0),
                long(out_ld),
                long(seg_offset),
            ],
            factors.to_vec(),
        ]
        .concat(),
    });
}

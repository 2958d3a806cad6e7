//! The cosine scores of a chunk of rows, into device memory: the scoring launches, which
//! the chunked top-k path reuses. Under [`Shape::gemm`] a cuBLAS GEMM computes the dot
//! products and one memory-bound pass applies each row's factor, bias and mask.

use super::{
    grid, half_format, int, long, Arg, Buf, Elem, Extents, Family, Kernel, Launch, Program, Shape,
};
use super::{MAX_GRID_Y, TILE};
use crate::cuda::Precision;

/// The queries as the GEMM reads them: the queries, or under FP16 and BF16 their 16-bit
/// copy, made by the program's first GEMM (into a scratch buffer of `nq × dim` halves).
fn gemm_queries(p: &mut Program, s: &Shape) -> Buf {
    let Some(half) = s.arithmetic().half() else {
        return Buf::Queries;
    };
    if let Some(b) = p.half_queries {
        return b;
    }
    let count = s.nq * s.dim;
    // 16-bit values, two to a u32.
    let copy = p.temp(Elem::U32, count.div_ceil(2));
    p.launches.push(Launch {
        kernel: Kernel::QueriesToHalf,
        grid: grid(count.div_ceil(256).clamp(1, 1 << 16), 1),
        block: 256,
        smem: 0,
        args: vec![
            Arg::Ptr(Buf::Queries, 0),
            long(count),
            half_format(half),
            Arg::Ptr(copy, 0),
        ],
    });
    p.half_queries = Some(copy);
    copy
}

/// Bytes of the workspace a GEMM program lends cuBLAS, at most: what it allocates for
/// itself on Hopper by default (4 MiB before), so that its choice of algorithms is not
/// narrowed on the large calls.
pub(crate) const GEMM_WORKSPACE_MAX: usize = 32 << 20;

/// The workspace cuBLAS gets for GEMMs writing `nq × rows` scores: room for one more
/// copy of the output (a split-K algorithm's partial sums), within 1 MiB ..
/// [`GEMM_WORKSPACE_MAX`]. It is a scratch buffer of the program, so the memory plan
/// counts it and cuBLAS allocates nothing behind the plan's back.
fn gemm_workspace(p: &mut Program, nq: usize, rows: usize) {
    let bytes = (4 * nq * rows).clamp(1 << 20, GEMM_WORKSPACE_MAX);
    match p.workspace {
        Some((_, have)) if have >= bytes => {}
        // Only the first GEMM of a program asks (later chunks are no larger).
        _ => p.workspace = Some((p.temp(Elem::U32, bytes / 4), bytes)),
    }
}

/// [`score`] by a GEMM: `out[at + q·ld + i]` = the dot product of query q and row
/// `row0 + i` (column-major, the rows fastest: what cuBLAS writes for C = rowsᵀ·queries),
/// then, when `apply`, the rows' factors, biases and mask applied in place (top-k
/// applies them in its first selection pass instead).
pub(super) fn score_by_gemm(
    p: &mut Program,
    s: &Shape,
    (row0, rows): (usize, usize),
    (out, at, ld): (Buf, usize, usize),
    apply: bool,
) {
    let (nq, dim) = (s.nq, s.dim);
    let b = gemm_queries(p, s);
    gemm_workspace(p, nq, rows);
    assert!(s.can_gemm(), "no GEMM of FP32 queries by 16-bit rows");
    let (kernel, a) = match s.arithmetic() {
        Precision::Fp32 => (Kernel::GemmFp32, Buf::Corpus),
        Precision::Tf32 => (Kernel::GemmTf32, Buf::Corpus),
        Precision::Fp16 => (Kernel::GemmFp16, Buf::CorpusHalf),
        Precision::Bf16 => (Kernel::GemmBf16, Buf::CorpusHalf),
    };
    // Reads rows × dim of A from row0, nq × dim of B; writes nq columns of `rows` at
    // stride ld from `at`.
    p.launches.push(Launch {
        kernel,
        grid: grid(1, 1),
        block: 32,
        smem: 0,
        args: vec![
            Arg::Ptr(a, row0 * dim),
            Arg::Ptr(b, 0),
            Arg::Ptr(out, at),
            long(rows),
            long(nq),
            int(dim),
            long(ld),
        ],
    });
    if !apply {
        return;
    }
    let [inv, bias, mask] = s.row_factors();
    if [inv, bias, mask].iter().all(|a| *a == Arg::Null) {
        return;
    }
    // Reads and writes the scores just written; reads inv, bias and mask at the rows.
    p.launches.push(Launch {
        kernel: Kernel::ApplyRowFactors,
        grid: grid((nq * rows).div_ceil(256).clamp(1, 1 << 16), 1),
        block: 256,
        smem: 0,
        args: vec![
            Arg::Ptr(out, at),
            long(ld),
            int(nq),
            long(row0),
            long(rows),
            inv,
            bias,
            mask,
        ],
    });
}

/// Scores of all queries against rows `row0 .. row0 + rows` into `out` (row stride `ld`,
/// starting at element `at`): the kernel writes `out[at + q·ld + i]`, q < nq, i < rows.
pub(super) fn score(
    p: &mut Program,
    s: &Shape,
    row0: usize,
    rows: usize,
    out: Buf,
    at: usize,
    ld: usize,
) {
    if s.gemm {
        score_by_gemm(p, s, (row0, rows), (out, at, ld), true);
        return;
    }
    let (nq, dim) = (s.nq, s.dim);
    if s.small() {
        p.launches.push(Launch {
            kernel: s.small_kernel(Family::Score),
            grid: grid(rows.div_ceil(8).clamp(1, 1 << 20), 1),
            block: 256,
            smem: (nq * dim * 4) as u32,
            args: [
                s.scoring_args(0, nq),
                vec![long(row0), long(rows), Arg::Ptr(out, at), long(ld)],
            ]
            .concat(),
        });
        return;
    }
    let kernel = s.tiled_kernel(Family::Score);
    for q0 in (0..nq).step_by(MAX_GRID_Y * TILE) {
        let qn = (nq - q0).min(MAX_GRID_Y * TILE);
        p.launches.push(Launch {
            kernel,
            // The query tiles fastest (see `hv_tile_block` in kernels/tile.cuh).
            grid: grid(rows.div_ceil(TILE) * qn.div_ceil(TILE), 1),
            block: 256,
            smem: 0,
            args: [
                s.scoring_args(q0, qn),
                vec![
                    long(row0),
                    long(rows),
                    Arg::Ptr(out, at + q0 * ld),
                    long(ld),
                ],
            ]
            .concat(),
        });
    }
}

/// The cosine scores of all queries against rows `row0 .. row0 + rows`: `nq × rows` in
/// [`Program::scores`].
pub(crate) fn cosine_chunk(s: &Shape, row0: usize, rows: usize) -> Program {
    let mut p = Program::new(Extents::of(s));
    let out = p.temp(Elem::F32, s.nq * rows);
    score(&mut p, s, row0, rows, out, 0, rows);
    p.scores = out;
    p.indices = out;
    p
}

//! The cosine scores of a chunk of rows, into device memory: the scoring launches, which
//! the chunked top-k path reuses.

use super::{grid, long, Arg, Buf, Elem, Extents, Family, Launch, Program, Shape};
use super::{MAX_GRID_Y, TILE};

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
            grid: grid(rows.div_ceil(TILE), qn.div_ceil(TILE)),
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

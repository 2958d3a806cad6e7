//! Exact top-k programs: fused warp lists for k ≤ 32, a floor from a spread sample for
//! larger k over a large corpus (with an overflow check), and chunks of scored rows
//! otherwise.

use super::cosine::{score, score_by_gemm};
use super::select::{merge, select, select_scored};
use super::{
    grid, int, long, Arg, Buf, Elem, Extents, Family, Launch, Program, Shape, FUSED_MAX_K,
    MAX_GRID_Y, MAX_K, SEGMENT, TILE,
};

/// How a top-k program finds its candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// k ≤ [`FUSED_MAX_K`]: warp lists fed straight from the scoring kernels.
    Fused,
    /// Larger k over a large corpus: the k-th best of a sample's candidates gives a
    /// floor, and scoring keeps only rows at or above it (up to `cap` per query).
    Filtered { sample: Sample, cap: usize },
    /// Rows scored `rows_per_chunk` at a time into device memory, then selected.
    Chunked,
}

/// The rows the filtered path samples for its floor: [`Sample::STRETCHES`] stretches of
/// `len` rows, spread evenly from the first row to the last, so that a corpus stored in
/// score order (appended by topic, or sorted) still gives a tight floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Sample {
    len: usize,
}

impl Sample {
    pub(super) const STRETCHES: usize = 16;

    /// The first row of stretch `g`. Requires `STRETCHES · len ≤ n / 4`: the stretches
    /// then start over (n − len) / (STRETCHES − 1) > len rows apart, and never overlap
    /// (a sample must hold distinct rows).
    fn start(&self, g: usize, n: usize) -> usize {
        (n - self.len) * g / (Self::STRETCHES - 1)
    }

    fn rows(&self) -> usize {
        Self::STRETCHES * self.len
    }
}

/// The sample and list capacity of the filtered path, or `None` when the corpus is too
/// small for it to pay: a sample over a quarter of the rows, or lists over half of them.
fn filter_sizes(n: usize, k: usize) -> Option<(Sample, usize)> {
    let want = (n / 8).max(4 * k);
    let sample = Sample {
        len: want.div_ceil(Sample::STRETCHES).div_ceil(TILE) * TILE,
    };
    // About k · n / sample rows pass on data in random order; room for four times that.
    let cap = (4 * k * n / sample.rows()).max(2 * k).div_ceil(SEGMENT) * SEGMENT;
    (4 * sample.rows() <= n && 2 * cap <= n).then_some((sample, cap))
}

/// The rows a filtered top-k over `n` rows samples for its floor, or `None` when it is
/// not filtered.
#[cfg(test)]
pub(crate) fn sampled_rows(n: usize, k: usize) -> Option<Vec<std::ops::Range<usize>>> {
    let (sample, _) = filter_sizes(n, k).filter(|_| k > FUSED_MAX_K)?;
    Some(
        (0..Sample::STRETCHES)
            .map(|g| sample.start(g, n)..sample.start(g, n) + sample.len)
            .collect(),
    )
}

/// Exact top-`k` (1 ≤ k ≤ [`MAX_K`]) of every query over the whole corpus, best first:
/// - k ≤ [`FUSED_MAX_K`]: scores never leave the chip (warp lists);
/// - larger k over a large corpus: filtered by a floor from a sample (see
///   [`Program::counts`]: the caller must check for an overflow);
/// - otherwise rows are scored `rows_per_chunk` at a time into one chunk buffer.
///
/// Requires nq ≤ 65 535 (grid y of the selection).
pub(crate) fn top_k(s: &Shape, k: usize, rows_per_chunk: usize) -> Program {
    let path = if s.gemm {
        Path::Chunked
    } else if s.fused(k) {
        Path::Fused
    } else if let Some((sample, cap)) = filter_sizes(s.n, k) {
        Path::Filtered { sample, cap }
    } else {
        Path::Chunked
    };
    build_top_k(s, k, rows_per_chunk, path)
}

/// Exact top-`k` by scoring rows `rows_per_chunk` at a time into device memory: the
/// path that always works (the fallback when the filtered path overflows).
pub(crate) fn top_k_chunked(s: &Shape, k: usize, rows_per_chunk: usize) -> Program {
    build_top_k(s, k, rows_per_chunk, Path::Chunked)
}

/// Whether a filtered program dropped candidates (a count above the capacity).
pub(crate) fn overflowed(counts: &[u32], cap: usize) -> bool {
    counts.iter().any(|&c| c as usize > cap)
}

fn build_top_k(s: &Shape, k: usize, rows_per_chunk: usize, path: Path) -> Program {
    assert!((1..=MAX_K).contains(&k) && s.nq <= MAX_GRID_Y && s.n > 0);
    let mut p = Program::new(Extents::of(s));
    let (scores, indices) = top_k_into(&mut p, s, k, rows_per_chunk, path);
    p.scores = scores;
    p.indices = indices;
    p
}

/// The grid of a fused top-k launch (one warp list per part and query).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FusedGrid {
    /// The memory-bound kernel: one part per warp, 8 warps per block.
    Small { blocks: usize },
    /// The tiled kernel: block (part, query tile) walks `seg_tiles` row tiles.
    Tiled {
        seg_tiles: usize,
        parts: usize,
        q_tiles: usize,
    },
}

impl FusedGrid {
    /// The grid for `s.n` rows, with at least `min_parts` parts where the rows allow.
    fn new(s: &Shape, min_parts: usize) -> Self {
        if s.small() {
            FusedGrid::Small {
                blocks: small_blocks(s).max(min_parts.div_ceil(8)),
            }
        } else {
            let (seg_tiles, parts, q_tiles) = tile_segments(s, min_parts);
            FusedGrid::Tiled {
                seg_tiles,
                parts,
                q_tiles,
            }
        }
    }

    fn parts(&self) -> usize {
        match *self {
            FusedGrid::Small { blocks } => blocks * 8,
            FusedGrid::Tiled { parts, .. } => parts,
        }
    }

    /// A launch on this grid of the memory-bound or the tiled kernel of `family`. Its
    /// parameters: the scoring ones, then `rows`, then (tiled only) the tiles per
    /// segment, then `tail`.
    fn launch(self, s: &Shape, family: Family, rows: Vec<Arg>, tail: Vec<Arg>) -> Launch {
        let scoring = s.scoring_args(0, s.nq);
        match self {
            FusedGrid::Small { blocks } => Launch {
                kernel: s.small_kernel(family),
                grid: grid(blocks, 1),
                block: 256,
                smem: (s.nq * s.dim * 4) as u32,
                args: [scoring, rows, tail].concat(),
            },
            FusedGrid::Tiled {
                seg_tiles,
                parts,
                q_tiles,
            } => Launch {
                kernel: s.tiled_kernel(family),
                // The query tiles fastest (see `hv_tile_block`).
                grid: grid(parts * q_tiles, 1),
                block: 256,
                smem: 0,
                args: [scoring, rows, vec![int(seg_tiles)], tail].concat(),
            },
        }
    }
}

/// Blocks of the memory-bound kernels: one part per warp, each warp ≥ 32 rows, one wave
/// of as many blocks per SM as fit ([`Shape::occupancy`]).
fn small_blocks(s: &Shape) -> usize {
    s.n.div_ceil(8 * 32)
        .clamp(1, s.occupancy.small.max(1) * s.sms.max(1))
}

/// Segments of the tiled kernels: whole tiles per block, as long as there are still
/// about a wave of blocks ([`Shape::occupancy`] per SM), and at least `min_parts`
/// segments where there are that many tiles.
/// Returns (tiles per segment, segments, query tiles).
fn tile_segments(s: &Shape, min_parts: usize) -> (usize, usize, usize) {
    let (tiles, q_tiles) = (s.n.div_ceil(TILE), s.nq.div_ceil(TILE));
    let wave = s.occupancy.tiled.max(1) * s.sms.max(1);
    let seg_tiles = (tiles * q_tiles / wave)
        .clamp(1, 64)
        .min((tiles / min_parts.max(1)).max(1));
    (seg_tiles, tiles.div_ceil(seg_tiles), q_tiles)
}

/// A fused top-`k` launch over rows `row0 .. row0 + rows`: writes
/// `cand[q·ld + col0 + part·k + j]` for q < nq, part < `grid.parts()`, j < k.
fn fused(
    p: &mut Program,
    s: &Shape,
    grid_: FusedGrid,
    (row0, rows): (usize, usize),
    k: usize,
    (cand_s, cand_i, ld, col0): (Buf, Buf, usize, usize),
) {
    let out = vec![
        int(k),
        Arg::Ptr(cand_s, col0),
        Arg::Ptr(cand_i, col0),
        long(ld),
    ];
    p.launches
        .push(grid_.launch(s, Family::TopK, vec![long(row0), long(rows)], out));
}

/// The filtered path's floor, per query: the k-th best score among the fused top-32
/// candidates of every sampled stretch. Those are k real, distinct rows, so the floor is
/// no better than the query's true k-th best. Returns the sorted `nq × k` scores.
fn sample_floor(p: &mut Program, s: &Shape, k: usize, sample: Sample) -> Buf {
    // The grid is sized as for a corpus of one stretch.
    let stretch = Shape {
        n: sample.len,
        ..*s
    };
    // Parts enough for 4k candidates, so that a part seldom holds more than 32 of the
    // sample's best k (the floor is then the sample's exact k-th best).
    let grid_ = FusedGrid::new(&stretch, (4 * k).div_ceil(FUSED_MAX_K * Sample::STRETCHES));
    let per = grid_.parts() * FUSED_MAX_K;
    let len = Sample::STRETCHES * per;
    // At least min(4k, sample / 2) ≥ 2k candidates (sample ≥ 4k, one part per tile).
    assert!(len >= k, "a sample of {len} candidates for k = {k}");
    let cand_s = p.temp(Elem::F32, s.nq * len);
    let cand_i = p.temp(Elem::I64, s.nq * len);
    for g in 0..Sample::STRETCHES {
        let rows = (sample.start(g, s.n), sample.len);
        fused(
            p,
            s,
            grid_,
            rows,
            FUSED_MAX_K,
            (cand_s, cand_i, len, g * per),
        );
    }
    merge(p, s.nq, k, (cand_s, cand_i, len), None).0
}

/// Appends the launches of a top-k over `s` and returns its result buffers: `nq × k`
/// scores and indices, best first.
fn top_k_into(
    p: &mut Program,
    s: &Shape,
    k: usize,
    rows_per_chunk: usize,
    path: Path,
) -> (Buf, Buf) {
    let (nq, n) = (s.nq, s.n);
    match path {
        Path::Fused => {
            let grid_ = FusedGrid::new(s, 1);
            let len = grid_.parts() * k;
            let cand_s = p.temp(Elem::F32, nq * len);
            let cand_i = p.temp(Elem::I64, nq * len);
            fused(p, s, grid_, (0, n), k, (cand_s, cand_i, len, 0));
            merge(p, nq, k, (cand_s, cand_i, len), None)
        }
        Path::Filtered { sample, cap } => {
            let floor = sample_floor(p, s, k, sample);
            let count = p.zeroed_temp(Elem::U32, nq);
            let cand_s = p.temp(Elem::F32, nq * cap);
            let cand_i = p.temp(Elem::I64, nq * cap);
            p.counts = Some((count, cap));
            // Reads floor[q·k + k − 1]; writes cand[q·cap + j] for j < min(count[q], cap).
            let tail = vec![
                Arg::Ptr(floor, k - 1),
                long(k),
                Arg::Ptr(count, 0),
                long(cap),
                Arg::Ptr(cand_s, 0),
                Arg::Ptr(cand_i, 0),
            ];
            let launch = FusedGrid::new(s, 1).launch(s, Family::Filter, vec![long(n)], tail);
            p.launches.push(launch);
            merge(p, nq, k, (cand_s, cand_i, cap), Some(count))
        }
        Path::Chunked => {
            let r = rows_per_chunk.clamp(1, n);
            let chunks = n.div_ceil(r);
            let segs_per_chunk = r.div_ceil(SEGMENT);
            let len = chunks * segs_per_chunk * k;
            let scores = p.temp(Elem::F32, nq * r);
            let cand_s = p.temp(Elem::F32, nq * len);
            let cand_i = p.temp(Elem::I64, nq * len);
            for c in 0..chunks {
                let row0 = c * r;
                let rows = r.min(n - row0);
                // Every chunk fills its segs_per_chunk slots of candidates, a short last
                // chunk with empty ones, so the merge never reads unwritten slots.
                let out = (cand_s, cand_i, len, c * segs_per_chunk, segs_per_chunk);
                if s.gemm {
                    // Dot products only: the selection applies the rows' factors.
                    score_by_gemm(p, s, (row0, rows), (scores, 0, rows), false);
                    let factors = s.row_factors();
                    select_scored(p, nq, (scores, rows, rows, row0), k, out, factors);
                } else {
                    score(p, s, row0, rows, scores, 0, rows);
                    select(p, nq, (scores, None, None, rows, rows, row0), k, out);
                }
            }
            merge(p, nq, k, (cand_s, cand_i, len), None)
        }
    }
}

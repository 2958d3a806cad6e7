//! Launch programs: every kernel launch of one call, as data (kernel, grid, arguments,
//! scratch buffers). The CUDA backend runs a program on the device; the emulation tests
//! run the same program through the CPU emulator of `kernels/emu`, so the launch
//! geometry, buffer offsets and merge passes are tested without a GPU.
//!
//! A program's arguments name buffers, never addresses. Each builder below states, per
//! launch, which extent of which buffer the kernel touches; the builders size the scratch
//! buffers to those extents, and [`Program::device_bytes`] is exactly what a run holds.

use super::plan::{MAX_K, SEGMENT};
use super::Precision;

/// Queries the memory-bound kernels take per launch (`HV_SMALL_Q`).
pub(crate) const SMALL_Q: usize = 8;
/// Dynamic shared memory the memory-bound kernels may use for queries.
pub(crate) const SMALL_Q_SMEM: usize = 48 * 1024;
/// The largest `k` the fused kernels keep (`HV_LIST_MAX_K`); larger `k` is filtered by a
/// sampled floor, or scored in chunks of rows into device memory over small corpora.
pub(crate) const FUSED_MAX_K: usize = 32;
/// Tile edge of the tiled kernels (`HV_TM` = `HV_TN`).
const TILE: usize = 64;
/// Grid y limit.
const MAX_GRID_Y: usize = 65535;

/// A kernel of `kernels/*.cu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    InvNorms,
    ScoreSmallQ,
    ScoreTiled,
    ScoreTiledTf32,
    SelectTopK,
    SortTopK,
    TopKSmallQ,
    TopKTiled,
    TopKTiledTf32,
    RowsToHalf,
    ScoreSmallQF16,
    ScoreTiledF16,
    TopKSmallQF16,
    TopKTiledF16,
    FilterSmallQ,
    FilterSmallQF16,
    FilterTiled,
    FilterTiledTf32,
    FilterTiledF16,
}

impl Kernel {
    pub(crate) const ALL: [Kernel; 19] = [
        Kernel::InvNorms,
        Kernel::ScoreSmallQ,
        Kernel::ScoreTiled,
        Kernel::ScoreTiledTf32,
        Kernel::SelectTopK,
        Kernel::SortTopK,
        Kernel::TopKSmallQ,
        Kernel::TopKTiled,
        Kernel::TopKTiledTf32,
        Kernel::RowsToHalf,
        Kernel::ScoreSmallQF16,
        Kernel::ScoreTiledF16,
        Kernel::TopKSmallQF16,
        Kernel::TopKTiledF16,
        Kernel::FilterSmallQ,
        Kernel::FilterSmallQF16,
        Kernel::FilterTiled,
        Kernel::FilterTiledTf32,
        Kernel::FilterTiledF16,
    ];

    /// The `extern "C"` name.
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Kernel::InvNorms => "hv_row_inv_norms",
            Kernel::ScoreSmallQ => "hv_score_small_q",
            Kernel::ScoreTiled => "hv_score_tiled",
            Kernel::ScoreTiledTf32 => "hv_score_tiled_tf32",
            Kernel::SelectTopK => "hv_select_topk",
            Kernel::SortTopK => "hv_sort_topk",
            Kernel::TopKSmallQ => "hv_topk_small_q",
            Kernel::TopKTiled => "hv_topk_tiled",
            Kernel::TopKTiledTf32 => "hv_topk_tiled_tf32",
            Kernel::RowsToHalf => "hv_rows_to_half",
            Kernel::ScoreSmallQF16 => "hv_score_small_q_f16",
            Kernel::ScoreTiledF16 => "hv_score_tiled_f16",
            Kernel::TopKSmallQF16 => "hv_topk_small_q_f16",
            Kernel::TopKTiledF16 => "hv_topk_tiled_f16",
            Kernel::FilterSmallQ => "hv_filter_small_q",
            Kernel::FilterSmallQF16 => "hv_filter_small_q_f16",
            Kernel::FilterTiled => "hv_filter_tiled",
            Kernel::FilterTiledTf32 => "hv_filter_tiled_tf32",
            Kernel::FilterTiledF16 => "hv_filter_tiled_f16",
        }
    }

    /// The `kernels/<module>.cu` that defines it.
    pub(crate) fn module(self) -> &'static str {
        match self {
            Kernel::InvNorms | Kernel::RowsToHalf => "norms",
            Kernel::ScoreSmallQ
            | Kernel::ScoreTiled
            | Kernel::ScoreTiledTf32
            | Kernel::ScoreSmallQF16
            | Kernel::ScoreTiledF16 => "score",
            Kernel::SelectTopK | Kernel::SortTopK => "topk",
            Kernel::TopKSmallQ
            | Kernel::TopKTiled
            | Kernel::TopKTiledTf32
            | Kernel::TopKSmallQF16
            | Kernel::TopKTiledF16 => "fused",
            Kernel::FilterSmallQ
            | Kernel::FilterSmallQF16
            | Kernel::FilterTiled
            | Kernel::FilterTiledTf32
            | Kernel::FilterTiledF16 => "filter",
        }
    }
}

/// A buffer a program reads or writes: the call's inputs, or its own scratch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Buf {
    /// `nq × dim` f32, unit-norm rows.
    Queries,
    /// The resident corpus, `n × dim` f32.
    Corpus,
    /// Its inverse row norms, `n` f32.
    InvNorms,
    /// The FP16 copy of the resident corpus, rows scaled to unit norm, `n × dim` u16
    /// (made for [`Precision::Fp16`]).
    CorpusF16,
    /// The live-row mask, `ceil(n / 32)` u32 (present only when the program is masked).
    Mask,
    /// Scratch buffer `i` of [`Program::temps`]. Uninitialised: every element a launch
    /// (or the result) reads, an earlier launch wrote.
    Temp(usize),
}

/// Element type of a scratch buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Elem {
    F32,
    I64,
    U32,
}

impl Elem {
    pub(crate) fn size(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::I64 => 8,
            Elem::U32 => 4,
        }
    }
}

/// One kernel argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arg {
    /// The address of element `offset` of a buffer.
    Ptr(Buf, usize),
    /// A null pointer.
    Null,
    I32(i32),
    I64(i64),
}

/// One kernel launch; `block` threads in one dimension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Launch {
    pub kernel: Kernel,
    pub grid: [u32; 3],
    pub block: u32,
    pub smem: u32,
    pub args: Vec<Arg>,
}

/// A scratch buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Temp {
    pub elem: Elem,
    pub len: usize,
    /// Zero before the first launch (counters); otherwise uninitialised.
    pub zeroed: bool,
}

/// The launches of one call, in stream order, and where its result lies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Program {
    pub temps: Vec<Temp>,
    pub launches: Vec<Launch>,
    /// Top-k: `nq × k` scores (f32) and indices (i64, −1 for none), best first.
    /// Cosine: `nq × rows` scores in `scores`; `indices` unused.
    pub scores: Buf,
    pub indices: Buf,
    /// Input bytes a run uploads per call (queries, mask).
    pub input_bytes: u64,
    /// The filtered path's per-query candidate counts (u32, `nq`) and list capacity: if
    /// any count exceeds the capacity, candidates were dropped and the result is not
    /// exact; run [`top_k_chunked`] instead (see [`overflowed`]).
    pub counts: Option<(Buf, usize)>,
}

impl Program {
    /// Device bytes a run holds at its peak: its inputs and every scratch buffer (all are
    /// allocated before the first launch). The resident corpus is not counted.
    pub(crate) fn device_bytes(&self) -> u64 {
        self.input_bytes
            + self
                .temps
                .iter()
                .map(|t| (t.len * t.elem.size()) as u64)
                .sum::<u64>()
    }

    fn temp(&mut self, elem: Elem, len: usize) -> Buf {
        self.temps.push(Temp {
            elem,
            len: len.max(1),
            zeroed: false,
        });
        Buf::Temp(self.temps.len() - 1)
    }

    fn zeroed_temp(&mut self, elem: Elem, len: usize) -> Buf {
        let b = self.temp(elem, len);
        self.temps.last_mut().expect("just pushed").zeroed = true;
        b
    }

    fn new(nq: usize, dim: usize, n: usize, masked: bool) -> Self {
        let mask = if masked { n.div_ceil(32) * 4 } else { 0 };
        Self {
            temps: Vec::new(),
            launches: Vec::new(),
            scores: Buf::Temp(0),
            indices: Buf::Temp(0),
            input_bytes: (nq * dim * 4 + mask) as u64,
            counts: None,
        }
    }
}

/// What a top-k or cosine call looks like to the planner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    pub nq: usize,
    pub n: usize,
    pub dim: usize,
    /// Rows deleted from a store view are cleared in a live mask.
    pub masked: bool,
    pub precision: Precision,
    /// Streaming multiprocessors (sizes the fused grids).
    pub sms: usize,
}

impl Shape {
    fn small(&self) -> bool {
        self.nq <= SMALL_Q && self.nq * self.dim * 4 <= SMALL_Q_SMEM
    }

    /// The parameters every scoring kernel starts with: `qn` queries from query `q0`,
    /// their dimension, the corpus, its norms and the live mask (or null).
    /// FP16 reads the unit-norm FP16 copy, and passes no norms.
    fn scoring_args(&self, q0: usize, qn: usize) -> Vec<Arg> {
        let (corpus, inv) = match self.precision {
            Precision::Fp16 => (Arg::Ptr(Buf::CorpusF16, 0), Arg::Null),
            Precision::Fp32 | Precision::Tf32 => {
                (Arg::Ptr(Buf::Corpus, 0), Arg::Ptr(Buf::InvNorms, 0))
            }
        };
        let mask = if self.masked {
            Arg::Ptr(Buf::Mask, 0)
        } else {
            Arg::Null
        };
        vec![
            Arg::Ptr(Buf::Queries, q0 * self.dim),
            int(qn),
            int(self.dim),
            corpus,
            inv,
            mask,
        ]
    }

    /// The memory-bound kernel: FP32 unless the corpus is read in FP16.
    fn small_kernel(&self, fp32: Kernel, fp16: Kernel) -> Kernel {
        match self.precision {
            Precision::Fp16 => fp16,
            Precision::Fp32 | Precision::Tf32 => fp32,
        }
    }

    /// The compute-bound kernel for this precision.
    fn tiled_kernel(&self, fp32: Kernel, tf32: Kernel, fp16: Kernel) -> Kernel {
        match self.precision {
            Precision::Fp32 => fp32,
            Precision::Tf32 => tf32,
            Precision::Fp16 => fp16,
        }
    }

    /// Whether top-k with this `k` is fused (and so ignores the chunk size).
    pub(crate) fn fused(&self, k: usize) -> bool {
        k <= FUSED_MAX_K
    }
}

fn int(v: usize) -> Arg {
    Arg::I32(i32::try_from(v).expect("a kernel count exceeds i32"))
}

fn long(v: usize) -> Arg {
    Arg::I64(v as i64)
}

fn grid(x: usize, y: usize) -> [u32; 3] {
    let x = u32::try_from(x).expect("grid x exceeds u32");
    let y = u32::try_from(y).expect("grid y exceeds u32");
    [x, y, 1]
}

/// Scores of all queries against rows `row0 .. row0 + rows` into `out` (row stride `ld`,
/// starting at element `at`): the kernel writes `out[at + q·ld + i]`, q < nq, i < rows.
fn score(p: &mut Program, s: &Shape, row0: usize, rows: usize, out: Buf, at: usize, ld: usize) {
    let (nq, dim) = (s.nq, s.dim);
    if s.small() {
        p.launches.push(Launch {
            kernel: s.small_kernel(Kernel::ScoreSmallQ, Kernel::ScoreSmallQF16),
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
    let kernel = s.tiled_kernel(
        Kernel::ScoreTiled,
        Kernel::ScoreTiledTf32,
        Kernel::ScoreTiledF16,
    );
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
    let mut p = Program::new(s.nq, s.dim, s.n, s.masked);
    let out = p.temp(Elem::F32, s.nq * rows);
    score(&mut p, s, row0, rows, out, 0, rows);
    p.scores = out;
    p.indices = out;
    p
}

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
struct Sample {
    len: usize,
}

impl Sample {
    const STRETCHES: usize = 16;

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
    let path = if s.fused(k) {
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
    let mut p = Program::new(s.nq, s.dim, s.n, s.masked);
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

    /// A launch on this grid of the memory-bound kernel `small` (FP32, FP16) or the tiled
    /// kernel `tiled` (FP32, TF32, FP16). Its parameters: the scoring ones, then `rows`,
    /// then (tiled only) the tiles per segment, then `tail`.
    fn launch(
        self,
        s: &Shape,
        (small, tiled): ([Kernel; 2], [Kernel; 3]),
        rows: Vec<Arg>,
        tail: Vec<Arg>,
    ) -> Launch {
        let scoring = s.scoring_args(0, s.nq);
        match self {
            FusedGrid::Small { blocks } => Launch {
                kernel: s.small_kernel(small[0], small[1]),
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
                kernel: s.tiled_kernel(tiled[0], tiled[1], tiled[2]),
                grid: grid(parts, q_tiles),
                block: 256,
                smem: 0,
                args: [scoring, rows, vec![int(seg_tiles)], tail].concat(),
            },
        }
    }
}

/// Blocks of the memory-bound kernels: one part per warp, each warp ≥ 32 rows, one wave
/// of three blocks per SM (`__launch_bounds__(256, 3)`).
fn small_blocks(s: &Shape) -> usize {
    s.n.div_ceil(8 * 32).clamp(1, 3 * s.sms.max(1))
}

/// Segments of the tiled kernels: whole tiles per block, as long as there are still
/// ~4 blocks per SM, and at least `min_parts` segments where there are that many tiles.
/// Returns (tiles per segment, segments, query tiles).
fn tile_segments(s: &Shape, min_parts: usize) -> (usize, usize, usize) {
    let (tiles, q_tiles) = (s.n.div_ceil(TILE), s.nq.div_ceil(TILE));
    let seg_tiles = (tiles * q_tiles / (4 * s.sms.max(1)))
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
    p.launches.push(grid_.launch(
        s,
        (
            [Kernel::TopKSmallQ, Kernel::TopKSmallQF16],
            [
                Kernel::TopKTiled,
                Kernel::TopKTiledTf32,
                Kernel::TopKTiledF16,
            ],
        ),
        vec![long(row0), long(rows)],
        out,
    ));
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
            let launch = FusedGrid::new(s, 1).launch(
                s,
                (
                    [Kernel::FilterSmallQ, Kernel::FilterSmallQF16],
                    [
                        Kernel::FilterTiled,
                        Kernel::FilterTiledTf32,
                        Kernel::FilterTiledF16,
                    ],
                ),
                vec![long(n)],
                tail,
            );
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
                score(p, s, row0, rows, scores, 0, rows);
                // Every chunk fills its segs_per_chunk slots of candidates, a short last
                // chunk with empty ones, so the merge never reads unwritten slots.
                select(
                    p,
                    nq,
                    (scores, None, None, rows, rows, row0),
                    k,
                    (cand_s, cand_i, len, c * segs_per_chunk, segs_per_chunk),
                );
            }
            merge(p, nq, k, (cand_s, cand_i, len), None)
        }
    }
}

/// Merges per query `len` candidates at stride `len` in (cand_s, cand_i) (with `counts`,
/// only the first counts[q] of query q's are written) down to the best k, sorted: each
/// pass keeps k per segment of SEGMENT, until k per query remain. Requires len ≥ k.
fn merge(
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
fn select(
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

/// The norms of `rows` resident rows starting at row `row0`: `hv_row_inv_norms` reads
/// rows × dim floats from element row0·dim of the corpus and writes `rows` floats from
/// element row0 of the norms.
pub(crate) fn inv_norms(row0: usize, rows: usize, dim: usize) -> Launch {
    Launch {
        kernel: Kernel::InvNorms,
        grid: grid((rows * 32).div_ceil(256), 1),
        block: 256,
        smem: 0,
        args: vec![
            Arg::Ptr(Buf::Corpus, row0 * dim),
            long(rows),
            int(dim),
            Arg::Ptr(Buf::InvNorms, row0),
        ],
    }
}

/// The FP16 copy of `rows` resident rows: `hv_rows_to_half` reads rows × dim floats of
/// the corpus and `rows` norms, and writes rows × dim halves of the FP16 copy.
pub(crate) fn rows_to_half(rows: usize, dim: usize) -> Launch {
    Launch {
        kernel: Kernel::RowsToHalf,
        grid: grid((rows * dim).div_ceil(256).clamp(1, 1 << 16), 1),
        block: 256,
        smem: 0,
        args: vec![
            Arg::Ptr(Buf::Corpus, 0),
            long(rows),
            int(dim),
            Arg::Ptr(Buf::InvNorms, 0),
            Arg::Ptr(Buf::CorpusF16, 0),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(nq: usize, n: usize, dim: usize) -> Shape {
        Shape {
            nq,
            n,
            dim,
            masked: false,
            precision: Precision::Fp32,
            sms: 132,
        }
    }

    #[test]
    fn every_launch_fits_the_grid_limits_and_names_existing_buffers() {
        for (nq, n, dim, k) in [
            (1, 1_000_000, 768, 10),
            (1024, 1_000_000, 768, 10),
            (1024, 1_000_000, 768, 1024),
            (4096, 100_000, 64, 32),
            (3, 17, 5, 1),
            (65535, 4097, 8, 33),
        ] {
            let s = shape(nq, n, dim);
            let p = top_k(&s, k, 1 << 16);
            for l in &p.launches {
                assert!(l.grid.iter().all(|&g| g >= 1) && l.grid[1] as usize <= MAX_GRID_Y);
                assert!(l.smem as usize <= SMALL_Q_SMEM, "{l:?}");
                for a in &l.args {
                    if let Arg::Ptr(Buf::Temp(i), off) = a {
                        assert!(*i < p.temps.len() && *off < p.temps[*i].len, "{l:?}");
                    }
                }
            }
            assert_eq!(p.launches.last().unwrap().kernel, Kernel::SortTopK);
        }
    }

    #[test]
    fn fused_top_k_holds_candidates_not_scores() {
        // 1024 × 1M scores would be 4 GB; the fused program holds candidates only.
        let p = top_k(&shape(1024, 1_000_000, 768), 10, 1 << 20);
        assert!(p.launches.iter().all(|l| l.kernel != Kernel::ScoreTiled));
        assert!(p.device_bytes() < 200 << 20, "{}", p.device_bytes());
        // Larger k over a large corpus: filtered, and its sample is fused too.
        let p = top_k(&shape(1024, 1_000_000, 768), 100, 1 << 16);
        assert!(p.counts.is_some());
        assert!(p.launches.iter().all(|l| l.kernel != Kernel::ScoreTiled));
        // Over a small corpus, larger k scores a chunk of rows into memory.
        let p = top_k(&shape(1024, 20_000, 64), 1024, 1 << 13);
        assert!(p.launches.iter().any(|l| l.kernel == Kernel::ScoreTiled));
        assert!(p.temps.iter().any(|t| t.len == 1024 << 13));
    }

    #[test]
    fn the_sample_is_distinct_rows_spread_to_both_ends() {
        for (n, k) in [
            (20_000, 40),
            (100_000, 1000),
            (1_000_000, 1024),
            (1_000_003, 33),
        ] {
            let rows = sampled_rows(n, k).expect("filtered");
            assert_eq!(rows.len(), Sample::STRETCHES);
            assert_eq!((rows[0].start, rows[rows.len() - 1].end), (0, n));
            assert!(rows.windows(2).all(|w| w[0].end < w[1].start), "{rows:?}");
            let sampled: usize = rows.iter().map(|r| r.len()).sum();
            assert!(sampled >= (n / 8).max(4 * k) && 4 * sampled <= n);
        }
        // Too few rows per k to pay, or k small enough for the warp lists.
        assert!(sampled_rows(20_000, 1024).is_none() && sampled_rows(1_000_000, 32).is_none());
    }

    #[test]
    fn large_k_over_a_large_corpus_is_filtered_and_holds_far_less() {
        let s = shape(1024, 1_000_000, 768);
        let filtered = top_k(&s, 1024, 1 << 20);
        let chunked = top_k_chunked(&s, 1024, 1 << 20);
        assert!(filtered.counts.is_some() && chunked.counts.is_none());
        assert!(filtered
            .launches
            .iter()
            .any(|l| l.kernel == Kernel::FilterTiled));
        assert!(
            filtered.device_bytes() * 3 < chunked.device_bytes(),
            "{} vs {}",
            filtered.device_bytes(),
            chunked.device_bytes()
        );
        // Too small a corpus for a sample to pay: chunked from the start.
        assert!(top_k(&shape(64, 20_000, 64), 1024, 1 << 20)
            .counts
            .is_none());
        // No overflow at the capacity, an overflow past it.
        assert!(!overflowed(&[0, 4096], 4096) && overflowed(&[4097, 0], 4096));
    }

    #[test]
    fn device_bytes_count_inputs_and_every_temp() {
        let mut s = shape(100, 50_000, 32);
        s.masked = true;
        let p = top_k(&s, 100, 8192);
        let temps: usize = p.temps.iter().map(|t| t.len * t.elem.size()).sum();
        let inputs = 100 * 32 * 4 + 50_000usize.div_ceil(32) * 4;
        assert_eq!(p.device_bytes(), (temps + inputs) as u64);
    }

    #[test]
    fn tf32_changes_only_the_tiled_kernels() {
        let mut s = shape(256, 10_000, 64);
        let fp32 = top_k(&s, 10, 4096);
        s.precision = Precision::Tf32;
        let tf32 = top_k(&s, 10, 4096);
        let kernels = |p: &Program| p.launches.iter().map(|l| l.kernel).collect::<Vec<_>>();
        assert_eq!(kernels(&fp32)[0], Kernel::TopKTiled);
        assert_eq!(kernels(&tf32)[0], Kernel::TopKTiledTf32);
        assert_eq!(kernels(&fp32)[1..], kernels(&tf32)[1..]);
        // The memory-bound path has no TF32 variant (it is bandwidth-bound).
        let small = top_k(&shape(1, 10_000, 64), 10, 4096);
        assert_eq!(small.launches[0].kernel, Kernel::TopKSmallQ);
        let mut s = shape(1, 10_000, 64);
        s.precision = Precision::Tf32;
        assert_eq!(top_k(&s, 10, 4096).launches[0].kernel, Kernel::TopKSmallQ);
    }

    #[test]
    fn fp16_reads_the_half_copy_without_norms_in_both_paths() {
        for (nq, first) in [(1, Kernel::TopKSmallQF16), (256, Kernel::TopKTiledF16)] {
            let mut s = shape(nq, 10_000, 64);
            s.precision = Precision::Fp16;
            let l = &top_k(&s, 10, 4096).launches[0];
            assert_eq!(l.kernel, first);
            assert_eq!(l.args[3..5], [Arg::Ptr(Buf::CorpusF16, 0), Arg::Null]);
        }
    }
}

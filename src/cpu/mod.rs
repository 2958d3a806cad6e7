//! The CPU backend: rayon over all cores, AVX2+FMA streaming kernels for small query
//! batches, GEMM tiles folded straight into top-k selection for large ones.
//!
//! Two strategies, picked by batch size:
//! * **Streaming** (`Q < gemm_min_queries`, or the scalar path): memory-bound. Each corpus
//!   row is read from memory once and dotted with every query while it is in L1.
//! * **Tiled** (`Q ≥ gemm_min_queries`): compute-bound. Each task scores a corpus block
//!   against a query block with a GEMM (the `gemm` crate) into a small tile that stays in
//!   cache, then folds it into per-query top-k heaps, so `top_k` never holds the `Q × N`
//!   score matrix.

pub(crate) mod select;
pub mod simd;

use crate::error::{Error, Result};
use crate::hit::Hit;
use crate::matrix::{CorpusView, Matrix, MatrixRef, Scores};
use rayon::prelude::*;
use select::TopK;
pub use simd::SimdLevel;

/// Settings of the CPU backend.
#[derive(Clone, Debug)]
pub struct CpuConfig {
    /// Worker threads; `None` means one per available core.
    pub threads: Option<usize>,
    /// Use the portable scalar kernels even where AVX2+FMA is present (and no GEMM).
    /// The environment variable `HYBRIDVEC_FORCE_SCALAR=1` does the same.
    pub force_scalar: bool,
    /// Query batches at least this large use GEMM tiles; smaller ones stream the corpus.
    pub gemm_min_queries: usize,
}

impl Default for CpuConfig {
    fn default() -> Self {
        Self { threads: None, force_scalar: false, gemm_min_queries: 16 }
    }
}

/// Corpus rows per task in the streaming path: enough work to amortise scheduling, small
/// enough that two cores stay balanced on 100k rows.
const STREAM_ROWS: usize = 2048;

/// Tile shape of the GEMM path, tuned on a 2-core Zen 3 (1 MiB L2): a corpus block of
/// `TILE_ROWS × D` stays in L2 while query blocks of `TILE_QUERIES` stream past it, and the
/// `TILE_QUERIES × TILE_ROWS` score tile fits in L2 beside it.
const TILE_ROWS: usize = 256;
const TILE_QUERIES: usize = 1024;

/// The CPU backend.
#[derive(Debug)]
pub(crate) struct CpuBackend {
    pool: rayon::ThreadPool,
    level: SimdLevel,
    gemm_min_queries: usize,
}

impl CpuBackend {
    pub(crate) fn new(cfg: &CpuConfig) -> Result<Self> {
        let threads = match cfg.threads {
            Some(0) => return Err(Error::InvalidConfig("cpu threads must be at least 1".into())),
            Some(t) => t,
            None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("hybridvec-cpu-{i}"))
            .build()
            .map_err(|e| Error::InvalidConfig(format!("cannot start CPU threads: {e}")))?;
        let forced = cfg.force_scalar
            || std::env::var("HYBRIDVEC_FORCE_SCALAR").is_ok_and(|v| v == "1" || v == "true");
        let level = if forced { SimdLevel::Scalar } else { SimdLevel::detect() };
        Ok(Self { pool, level, gemm_min_queries: cfg.gemm_min_queries.max(1) })
    }

    pub(crate) fn simd_level(&self) -> SimdLevel {
        self.level
    }

    pub(crate) fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    fn use_gemm(&self, queries: usize) -> bool {
        self.level != SimdLevel::Scalar && queries >= self.gemm_min_queries
    }

    /// Cosine scores of unit-norm `queries` against `corpus` (`Q × N`).
    pub(crate) fn cosine(&self, queries: MatrixRef<'_>, corpus: CorpusView<'_>) -> Scores {
        let (q, n) = (queries.rows(), corpus.rows());
        let mut out = Matrix::zeros(q, n);
        let dst = SendPtr(out.as_mut_slice().as_mut_ptr());
        let block = if self.use_gemm(q) { TILE_ROWS } else { STREAM_ROWS };
        self.pool.install(|| {
            (0..n.div_ceil(block)).into_par_iter().for_each(|b| {
                let rows = b * block..((b + 1) * block).min(n);
                // SAFETY: `dst` points at the `q × n` buffer of `out`, which outlives this
                // scope; task `b` writes only columns `rows` of each output row, and the
                // column ranges of different tasks are disjoint.
                unsafe { self.score_block_into(queries, corpus, rows, dst, n) };
            });
        });
        out
    }

    /// Writes `dst[i * ld + j] = cos(query i, corpus row j)` for `j` in `rows`.
    ///
    /// # Safety
    /// `dst` must be valid for writes at `i * ld + j` for every query `i` and every `j` in
    /// `rows`, and no other thread may access those elements during the call.
    unsafe fn score_block_into(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        rows: std::ops::Range<usize>,
        dst: SendPtr,
        ld: usize,
    ) {
        let q = queries.rows();
        let inv = corpus.inv_norms();
        if self.use_gemm(q) {
            // SAFETY: the caller guarantees the destination tile; operands are whole views.
            unsafe { gemm_tile(queries, corpus.matrix(), rows.clone(), dst.0.add(rows.start), ld) };
            for i in 0..q {
                for j in rows.clone() {
                    // SAFETY: inside the caller's tile.
                    unsafe { *dst.0.add(i * ld + j) *= inv[j] };
                }
            }
        } else {
            let mut tmp = vec![0.0f32; q];
            for j in rows {
                simd::dots(self.level, corpus.matrix().row(j), queries.as_slice(), &mut tmp);
                for (i, &s) in tmp.iter().enumerate() {
                    // SAFETY: inside the caller's tile.
                    unsafe { *dst.0.add(i * ld + j) = s * inv[j] };
                }
            }
        }
    }

    /// Exact top-k of unit-norm `queries` against `corpus`, best first.
    pub(crate) fn top_k(&self, queries: MatrixRef<'_>, corpus: CorpusView<'_>, k: usize) -> Vec<Vec<Hit>> {
        let (q, n) = (queries.rows(), corpus.rows());
        let gemm = self.use_gemm(q);
        let block = if gemm { TILE_ROWS } else { STREAM_ROWS };
        let fresh = || -> Vec<TopK> { (0..q).map(|_| TopK::new(k)).collect() };
        let heaps = self.pool.install(|| {
            (0..n.div_ceil(block))
                .into_par_iter()
                .fold(
                    || (fresh(), Vec::new()),
                    |(mut heaps, mut scratch), b| {
                        let rows = b * block..((b + 1) * block).min(n);
                        if gemm {
                            self.fold_tiles(queries, corpus, rows, &mut heaps, &mut scratch);
                        } else {
                            self.fold_stream(queries, corpus, rows, &mut heaps, &mut scratch);
                        }
                        (heaps, scratch)
                    },
                )
                .map(|(heaps, _)| heaps)
                .reduce(fresh, |mut a, b| {
                    for (x, y) in a.iter_mut().zip(b) {
                        x.merge(y);
                    }
                    a
                })
        });
        heaps.into_iter().map(TopK::into_sorted).collect()
    }

    fn fold_stream(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        rows: std::ops::Range<usize>,
        heaps: &mut [TopK],
        scratch: &mut Vec<f32>,
    ) {
        scratch.resize(queries.rows(), 0.0);
        let inv = corpus.inv_norms();
        for j in rows {
            simd::dots(self.level, corpus.matrix().row(j), queries.as_slice(), scratch);
            for (h, &s) in heaps.iter_mut().zip(scratch.iter()) {
                let s = s * inv[j];
                if s >= h.threshold() {
                    h.offer(j, s);
                }
            }
        }
    }

    fn fold_tiles(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        rows: std::ops::Range<usize>,
        heaps: &mut [TopK],
        tile: &mut Vec<f32>,
    ) {
        let (q, d, nb) = (queries.rows(), queries.cols(), rows.len());
        let inv = &corpus.inv_norms()[rows.clone()];
        tile.resize(TILE_QUERIES * nb, 0.0);
        for q0 in (0..q).step_by(TILE_QUERIES) {
            let qb = TILE_QUERIES.min(q - q0);
            let block = MatrixRef::new(&queries.as_slice()[q0 * d..(q0 + qb) * d], qb, d)
                .expect("query block of a valid matrix is valid");
            // SAFETY: `tile` holds at least `qb × nb` values and is written with leading
            // dimension `nb`; it is this task's own buffer.
            unsafe { gemm_tile(block, corpus.matrix(), rows.clone(), tile.as_mut_ptr(), nb) };
            for (i, h) in heaps[q0..q0 + qb].iter_mut().enumerate() {
                let scores = &tile[i * nb..(i + 1) * nb];
                let mut thr = h.threshold();
                for (j, (&s, &w)) in scores.iter().zip(inv).enumerate() {
                    let s = s * w;
                    if s >= thr {
                        h.offer(rows.start + j, s);
                        thr = h.threshold();
                    }
                }
            }
        }
    }
}

/// `dst[i * ld + (j - rows.start)] = queries[i] · corpus[j]` for `j` in `rows`, one thread.
///
/// # Safety
/// `dst` must be valid for writes at `i * ld + t` for `i < queries.rows()` and
/// `t < rows.len()`, with no concurrent access to those elements; `rows` must lie inside
/// `corpus`, whose dimension must equal the queries'.
unsafe fn gemm_tile(
    queries: MatrixRef<'_>,
    corpus: MatrixRef<'_>,
    rows: std::ops::Range<usize>,
    dst: *mut f32,
    ld: usize,
) {
    let d = queries.cols();
    debug_assert_eq!(d, corpus.cols());
    debug_assert!(rows.end <= corpus.rows());
    let c = corpus.as_slice()[rows.start * d..rows.end * d].as_ptr();
    // SAFETY: lhs is `queries` (m × d, row stride d); rhs is the corpus block read as its
    // transpose (d × nb: row stride 1, column stride d), inside `corpus`; dst validity is the
    // caller's guarantee. `read_dst = false`, so dst's old contents are never read.
    unsafe {
        gemm::gemm(
            queries.rows(),
            rows.len(),
            d,
            dst,
            1,
            ld as isize,
            false,
            queries.as_slice().as_ptr(),
            1,
            d as isize,
            c,
            d as isize,
            1,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// A raw pointer that may cross threads; users state why their accesses are disjoint.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: SendPtr is only a vehicle; every dereference has its own SAFETY argument for
// disjointness, and the pointee outlives the rayon scope that uses it.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

//! The CPU backend: rayon over all cores, streaming kernels for small query batches, and
//! score tiles folded straight into top-k selection for large ones, each at the best
//! instruction-set level the CPU has ([`SimdLevel`]).
//!
//! Two strategies, picked by batch size:
//! * **Streaming** (`Q < gemm_min_queries`, or the scalar path): memory-bound. Each corpus
//!   row is read from memory once and dotted with every query while it is in L1.
//! * **Tiled** (`Q ≥ gemm_min_queries`): compute-bound, a matrix product in tiles. Each
//!   task scores 96 corpus rows against all queries with the level's register-blocked
//!   kernel (`kernel/`: 12 × 32 on AVX-512F, 6 × 16 on AVX2) into a tile that stays in L2.
//!   `top_k` folds the tile into per-query selections, so it never holds the `Q × N` score
//!   matrix; `cosine_similarity`, which must return that matrix, scales the tile by the
//!   rows' inverse norms into it.

mod kernel;
pub(crate) mod select;
mod topk;

/// The instruction-set levels of the streaming kernels. The kernels themselves live in a
/// leaf module below this backend and the matrix types, which both use them.
pub mod simd {
    pub use crate::simd::SimdLevel;
}

use crate::backend::{Backend, BackendError, BackendKind, Rates};
use crate::error::{Error, Result};
use crate::hit::Hit;
use crate::matrix::{CorpusView, Matrix, MatrixRef, Scores};
use kernel::PackedQueries;
use rayon::prelude::*;
pub use simd::SimdLevel;
use std::ops::Range;

/// Settings of the CPU backend.
#[derive(Clone, Debug)]
pub struct CpuConfig {
    /// Worker threads; `None` means one per available core.
    pub threads: Option<usize>,
    /// Use the portable scalar kernels even where AVX2+FMA is present (and no GEMM).
    /// The environment variable `HYBRIDVEC_FORCE_SCALAR=1` does the same.
    pub force_scalar: bool,
    /// The highest instruction-set level to use; `None` means the best this CPU has
    /// ([`SimdLevel::detect`]). A level the CPU lacks is [`Error::InvalidConfig`]. The
    /// environment variable `HYBRIDVEC_SIMD` (`scalar`, `avx2`, `avx512`) caps it too.
    pub simd: Option<SimdLevel>,
    /// Query batches at least this large use GEMM tiles; smaller ones stream the corpus.
    pub gemm_min_queries: usize,
}

impl Default for CpuConfig {
    fn default() -> Self {
        Self {
            threads: None,
            force_scalar: false,
            simd: None,
            gemm_min_queries: 16,
        }
    }
}

/// The level `cfg` and the environment allow: the lowest of the configured one, the
/// `HYBRIDVEC_SIMD` one and the CPU's best; scalar when either asks for it.
fn choose_level(cfg: &CpuConfig) -> Result<SimdLevel> {
    let best = SimdLevel::detect();
    if let Some(level) = cfg.simd {
        if !level.is_supported() {
            return Err(Error::InvalidConfig(format!(
                "cpu simd level {} is not supported by this CPU (its best is {})",
                level.name(),
                best.name()
            )));
        }
    }
    let env = match std::env::var("HYBRIDVEC_SIMD") {
        Ok(v) if !v.trim().is_empty() => Some(SimdLevel::from_name(&v).ok_or_else(|| {
            Error::InvalidConfig(format!(
                "HYBRIDVEC_SIMD={v:?} is not a level (scalar, avx2 or avx512)"
            ))
        })?),
        _ => None,
    };
    let scalar = cfg.force_scalar
        || std::env::var("HYBRIDVEC_FORCE_SCALAR").is_ok_and(|v| v == "1" || v == "true");
    let level = [Some(best), cfg.simd, env]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(best);
    Ok(if scalar { SimdLevel::Scalar } else { level })
}

/// Corpus rows per task in the streaming path: enough work to amortise scheduling, small
/// enough that two cores stay balanced on 100k rows.
const STREAM_ROWS: usize = 2048;

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
            Some(0) => {
                return Err(Error::InvalidConfig(
                    "cpu threads must be at least 1".into(),
                ))
            }
            Some(t) => t,
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("hybridvec-cpu-{i}"))
            .build()
            .map_err(|e| Error::InvalidConfig(format!("cannot start CPU threads: {e}")))?;
        let level = choose_level(cfg)?;
        Ok(Self {
            pool,
            level,
            gemm_min_queries: cfg.gemm_min_queries.max(1),
        })
    }

    pub(crate) fn simd_level(&self) -> SimdLevel {
        self.level
    }

    /// Advertised peak rates for the roofline estimate: FMA lanes × cores at a nominal
    /// 2.5 GHz, and a nominal 20 GB/s of memory bandwidth. Measurements replace them.
    pub(crate) fn rates(&self) -> Rates {
        let lanes_flops = match self.level {
            SimdLevel::Avx512 => 2.0 * 2.0 * 16.0, // 2 FMA pipes × 16 lanes × 2 FLOP
            SimdLevel::Avx2Fma => 2.0 * 2.0 * 8.0,
            _ => 2.0,
        };
        Rates {
            flops: lanes_flops * 2.5e9 * self.threads() as f64,
            bytes_per_sec: 20e9,
            overhead: std::time::Duration::from_micros(5),
        }
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
        let packed = self.pack(queries);
        let block = if packed.is_some() {
            KERNEL_ROWS
        } else {
            STREAM_ROWS
        };
        self.pool.install(|| {
            (0..n.div_ceil(block))
                .into_par_iter()
                .for_each_init(Vec::new, |tile, b| {
                    let rows = b * block..((b + 1) * block).min(n);
                    // SAFETY: `dst` points at the `q × n` buffer of `out`, which outlives
                    // this scope; task `b` writes only columns `rows` of each output row,
                    // and the column ranges of different tasks are disjoint.
                    unsafe {
                        match &packed {
                            Some(p) => tile_block_into(p, corpus, rows, tile, dst, n),
                            None => self.stream_block_into(queries, corpus, rows, dst, n),
                        }
                    };
                });
        });
        out
    }

    /// The queries packed for this level's score-tile kernel, when the batch is large
    /// enough to use it and the level has one.
    fn pack(&self, queries: MatrixRef<'_>) -> Option<PackedQueries> {
        let (q, d) = (queries.rows(), queries.cols());
        self.use_gemm(q)
            .then(|| PackedQueries::new(self.level, queries.as_slice(), q, d))
            .flatten()
    }

    /// Writes `dst[i * ld + j] = cos(query i, corpus row j)` for `j` in `rows`, streaming
    /// the rows through the dot-product kernels.
    ///
    /// # Safety
    /// `dst` must be valid for writes at `i * ld + j` for every query `i` and every `j` in
    /// `rows`, and no other thread may access those elements during the call.
    unsafe fn stream_block_into(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        rows: std::ops::Range<usize>,
        dst: SendPtr,
        ld: usize,
    ) {
        let inv = corpus.inv_norms();
        let mut tmp = vec![0.0f32; queries.rows()];
        for j in rows {
            crate::simd::dots(
                self.level,
                corpus.matrix().row(j),
                queries.as_slice(),
                &mut tmp,
            );
            for (i, &s) in tmp.iter().enumerate() {
                // SAFETY: inside the caller's tile.
                unsafe { *dst.0.add(i * ld + j) = s * inv[j] };
            }
        }
    }
}

/// Corpus rows per task in the tiled paths (a multiple of the kernels' 6 and 12 rows): the
/// `KERNEL_ROWS × Q` score tile and the rows themselves stay in L2 for Q up to ~1k.
const KERNEL_ROWS: usize = 96;

/// Scores `rows` against every packed query with the score-tile kernel into `tile`:
/// `tile[r * ldt + i] = rows[r] · query i` (not yet divided by the row norms). Returns the
/// stride `ldt`.
fn tile_scores(
    packed: &PackedQueries,
    corpus: CorpusView<'_>,
    rows: Range<usize>,
    tile: &mut Vec<f32>,
) -> usize {
    let d = corpus.dim();
    // Padding the row stride past a multiple of 4 KiB keeps the kernel's output rows
    // out of one L1 set.
    let ldt = packed.padded() + packed.nr();
    tile.resize(rows.len() * ldt, 0.0);
    let data = &corpus.matrix().as_slice()[rows.start * d..rows.end * d];
    kernel::score_tile(data, d, packed, tile, ldt);
    ldt
}

/// Writes `dst[i * ld + j] = cos(query i, corpus row j)` for `j` in `rows`, scoring the
/// rows with the score-tile kernel into `tile` (scratch, reused between calls) first.
///
/// # Safety
/// `dst` must be valid for writes at `i * ld + j` for every query `i < packed` queries and
/// every `j` in `rows`, and no other thread may access those elements during the call.
unsafe fn tile_block_into(
    packed: &PackedQueries,
    corpus: CorpusView<'_>,
    rows: Range<usize>,
    tile: &mut Vec<f32>,
    dst: SendPtr,
    ld: usize,
) {
    let ldt = tile_scores(packed, corpus, rows.clone(), tile);
    let inv = &corpus.inv_norms()[rows.clone()];
    for i in 0..packed.queries() {
        for (r, &w) in inv.iter().enumerate() {
            // SAFETY: query `i` and column `rows.start + r` are inside the caller's tile.
            unsafe { *dst.0.add(i * ld + rows.start + r) = tile[r * ldt + i] * w };
        }
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

impl Backend for CpuBackend {
    fn name(&self) -> &str {
        "cpu"
    }
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }
    fn rates(&self) -> Rates {
        CpuBackend::rates(self)
    }
    fn cosine(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
    ) -> std::result::Result<Scores, BackendError> {
        Ok(CpuBackend::cosine(self, queries, corpus))
    }
    fn top_k(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        k: usize,
    ) -> std::result::Result<Vec<Vec<Hit>>, BackendError> {
        Ok(CpuBackend::top_k(self, queries, corpus, k))
    }
}

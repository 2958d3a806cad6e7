//! The CPU backend: rayon over all cores, streaming kernels for small query batches, and
//! score tiles folded straight into top-k selection for large ones, each at the best
//! instruction-set level the CPU has ([`SimdLevel`]).
//!
//! Two strategies, picked by batch size:
//! * **Streaming** (`Q < gemm_min_queries`, or the scalar path): memory-bound. Each corpus
//!   row is read from memory once and dotted with every query while it is in L1.
//! * **Tiled** (`Q ≥ gemm_min_queries`): compute-bound, a matrix product in tiles. Each
//!   task scores 96 corpus rows against all queries with the level's register-blocked
//!   kernel (`kernel/`: 12 × 32 on AVX-512F, 6 × 16 on AVX2 and on NEON) into a tile that
//!   stays in L2. `top_k` folds the tile into per-query selections, so it never holds the
//!   `Q × N` score matrix; `cosine_similarity`, which must return that matrix, scales the
//!   tile by the rows' inverse norms into it.

mod certified;
mod kernel;
mod per_query;
pub(crate) mod select;
pub(crate) mod topk;

/// The instruction-set levels of the streaming kernels. The kernels themselves live in a
/// leaf module below this backend and the matrix types, which both use them.
pub mod simd {
    pub use crate::simd::{CpuFeatures, SimdLevel};
}

use crate::backend::{Backend, BackendError, BackendKind, Rates};
use crate::corpus::CorpusView;
use crate::error::{Error, Result};
use crate::hit::Hit;
use crate::matrix::{Matrix, MatrixRef, Scores};
use kernel::PackedQueries;
use rayon::prelude::*;
pub use simd::{CpuFeatures, SimdLevel};
use std::ops::Range;

/// Settings of the CPU backend.
#[derive(Clone, Debug, Default)]
pub struct CpuConfig {
    /// Worker threads; `None` means one per available core. 0 or more than
    /// [`MAX_THREADS`] is [`Error::InvalidConfig`].
    pub threads: Option<usize>,
    /// Use the portable scalar kernels even where AVX2+FMA or NEON is present (and no GEMM).
    /// The environment variable `HYBRIDVEC_FORCE_SCALAR=1` does the same.
    pub force_scalar: bool,
    /// The highest instruction-set level to use; `None` means the best this CPU has
    /// ([`SimdLevel::detect`]). A level the CPU lacks is [`Error::InvalidConfig`].
    ///
    /// The environment variable `HYBRIDVEC_SIMD` caps it too: `scalar`, `avx2` or `avx512`
    /// on x86-64, `scalar` or `neon` on aarch64. A value above the CPU's best leaves the
    /// best (`avx512` on an AVX2 machine runs AVX2); a value that is no level, or that names
    /// a level of another architecture (`avx2` on aarch64, `neon` on x86-64), is
    /// [`Error::InvalidConfig`] naming the variable.
    pub simd: Option<SimdLevel>,
    /// Query batches at least this large use the score tiles; smaller ones stream the
    /// corpus. `None` takes the crossover measured for the level in use: 24 queries with
    /// AVX-512F (whose streaming kernel scores up to six queries per pass over four rows),
    /// 16 with AVX2.
    pub gemm_min_queries: Option<usize>,
}

/// The level `cfg` and the environment allow: the lowest of the configured one, the
/// `HYBRIDVEC_SIMD` one and the CPU's best; scalar when either asks for it. Always a level
/// this CPU supports (the kernels of any other would be undefined behaviour).
fn choose_level(cfg: &CpuConfig) -> Result<SimdLevel> {
    let scalar_env = std::env::var("HYBRIDVEC_FORCE_SCALAR").is_ok_and(|v| v == "1" || v == "true");
    let simd_env = std::env::var("HYBRIDVEC_SIMD").ok();
    choose_level_from(cfg, simd_env.as_deref(), scalar_env, SimdLevel::detect())
}

/// [`choose_level`] with the environment and the CPU's best level given.
fn choose_level_from(
    cfg: &CpuConfig,
    simd_env: Option<&str>,
    scalar_env: bool,
    best: SimdLevel,
) -> Result<SimdLevel> {
    if let Some(level) = cfg.simd {
        if !level.is_supported() {
            return Err(Error::InvalidConfig(format!(
                "cpu simd level {} is not supported by this CPU (its best is {})",
                level.name(),
                best.name()
            )));
        }
    }
    // Levels are only ordered within one architecture, so a cap must name a level of this
    // one (or scalar); then the minimum below is at most `best`, which this CPU runs, as it
    // runs every lower level of its architecture.
    let names = native_level_names();
    let env = match simd_env {
        Some(v) if !v.trim().is_empty() => match SimdLevel::from_name(v) {
            None => {
                return Err(Error::InvalidConfig(format!(
                    "HYBRIDVEC_SIMD={v:?} is not a level ({names})"
                )))
            }
            Some(level) if !level.is_native_arch() => {
                return Err(Error::InvalidConfig(format!(
                    "HYBRIDVEC_SIMD={v:?} names the {} level {}, which this {} CPU cannot \
                     run ({names})",
                    level.arch().unwrap_or("portable"),
                    level.name(),
                    std::env::consts::ARCH,
                )))
            }
            Some(level) => Some(level),
        },
        _ => None,
    };
    let level = if cfg.force_scalar || scalar_env {
        SimdLevel::Scalar
    } else {
        [Some(best), cfg.simd, env]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(best)
    };
    if !level.is_supported() {
        // Unreachable given the checks above; kept so no path hands an unsupported level
        // to the kernels.
        return Err(Error::InvalidConfig(format!(
            "cpu simd level {} is not supported by this CPU (its best is {})",
            level.name(),
            best.name()
        )));
    }
    Ok(level)
}

/// The values `HYBRIDVEC_SIMD` takes on this architecture, for error messages:
/// `scalar, avx2 or avx512` on x86-64, `scalar or neon` on aarch64.
fn native_level_names() -> String {
    let names: Vec<&str> = SimdLevel::ALL
        .into_iter()
        .filter(|l| l.is_native_arch())
        .map(|l| match l {
            SimdLevel::Avx2Fma => "avx2",
            SimdLevel::Avx512 => "avx512",
            other => other.name(),
        })
        .collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// Corpus rows per task in the streaming path: enough work to amortise scheduling, small
/// enough that two cores stay balanced on 100k rows.
const STREAM_ROWS: usize = 2048;

/// The most worker threads [`CpuConfig::threads`] may ask for: far past any CPU's cores
/// (more only oversubscribe them), and a bound on what a mistyped count can start.
pub const MAX_THREADS: usize = 4096;

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
            Some(t) if t > MAX_THREADS => {
                return Err(Error::InvalidConfig(format!(
                    "cpu threads = {t} is more than the {MAX_THREADS} this backend starts"
                )))
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
            gemm_min_queries: cfg
                .gemm_min_queries
                .unwrap_or(match level {
                    SimdLevel::Avx512 => 24,
                    _ => 16,
                })
                .max(1),
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
            SimdLevel::Neon => 2.0 * 2.0 * 4.0, // 2 FMA pipes × 4 lanes × 2 FLOP
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
                .for_each_init(Vec::new, |scratch, b| {
                    let rows = b * block..((b + 1) * block).min(n);
                    // SAFETY: `dst` points at the `q × n` buffer of `out`, which outlives
                    // this scope; task `b` writes only columns `rows` of each output row,
                    // and the column ranges of different tasks are disjoint.
                    unsafe {
                        match &packed {
                            Some(p) => tile_block_into(p, corpus, rows, scratch, dst, n),
                            None => self.stream_block_into(queries, corpus, rows, scratch, dst, n),
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
    /// the rows through the dot-product kernels (into `tmp`, scratch reused between calls).
    ///
    /// # Safety
    /// `dst` must be valid for writes at `i * ld + j` for every query `i` and every `j` in
    /// `rows`, and no other thread may access those elements during the call.
    unsafe fn stream_block_into(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        rows: std::ops::Range<usize>,
        tmp: &mut Vec<f32>,
        dst: SendPtr,
        ld: usize,
    ) {
        let (q, n) = (queries.rows(), rows.len());
        tmp.resize(q * n, 0.0);
        let inv = &corpus.inv_norms()[rows.clone()];
        corpus.scaled_dots(self.level, rows.clone(), queries.as_slice(), inv, tmp);
        if let Some(bias) = corpus.row_bias() {
            topk::add_bias_columns(tmp, &bias[rows.clone()]);
        }
        for (i, scores) in tmp.chunks_exact(n).enumerate() {
            // SAFETY: query `i`'s columns `rows` are inside the caller's tile, and `scores`
            // (scratch of this task) does not overlap the output.
            unsafe {
                std::ptr::copy_nonoverlapping(scores.as_ptr(), dst.0.add(i * ld + rows.start), n)
            };
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
    thread_local! {
        /// A 16-bit block widened, one per thread (`KERNEL_ROWS` rows, in L2 beside
        /// the tile).
        static WIDE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    // A 16-bit block is widened first, which waits on memory with no arithmetic beside
    // it: the next block (usually this thread's next) is hinted while this one is scored.
    let next = rows.end..(rows.end + rows.len()).min(corpus.rows());
    let ahead: &[u8] = match corpus.half_bits() {
        Some((_, bits)) => bytemuck::cast_slice(&bits[next.start * d..next.end * d]),
        None => &[],
    };
    WIDE.with_borrow_mut(|wide| {
        let data = corpus.rows_f32(rows, wide);
        kernel::score_tile(data, d, packed, tile, ldt, ahead);
    });
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
    let bias = corpus.row_bias().map(|b| &b[rows.clone()]);
    for i in 0..packed.queries() {
        for (r, &w) in inv.iter().enumerate() {
            let s = tile[r * ldt + i] * w + bias.map_or(0.0, |b| b[r]);
            // SAFETY: query `i` and column `rows.start + r` are inside the caller's tile.
            unsafe { *dst.0.add(i * ld + rows.start + r) = s };
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
    fn supports_metric(&self, _metric: crate::metric::Metric) -> bool {
        true
    }
    fn serves_filters(&self) -> bool {
        true
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
        if let Some(hits) = self.certified_top_k(queries, corpus, k) {
            return Ok(hits);
        }
        Ok(CpuBackend::top_k(self, queries, corpus, k, None))
    }

    fn top_k_rows(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        rows: &[usize],
        k: usize,
    ) -> std::result::Result<Vec<Vec<Hit>>, BackendError> {
        Ok(CpuBackend::top_k(self, queries, corpus, k, Some(rows)))
    }
    fn top_k_rows_per_query(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        lists: &[&[usize]],
        k: usize,
    ) -> std::result::Result<Vec<Vec<Hit>>, BackendError> {
        Ok(self.top_k_per_query(queries, corpus, lists, k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The levels of the other architecture than this one (none elsewhere).
    fn foreign_levels() -> Vec<SimdLevel> {
        SimdLevel::ALL
            .into_iter()
            .filter(|l| !l.is_native_arch())
            .collect()
    }

    #[test]
    fn a_cap_naming_another_architectures_level_is_invalid_config() {
        let best = SimdLevel::detect();
        for level in foreign_levels() {
            assert!(
                !level.is_supported(),
                "{level:?} on {}",
                std::env::consts::ARCH
            );
            for value in [level.name(), &level.name().to_ascii_uppercase()] {
                match choose_level_from(&CpuConfig::default(), Some(value), false, best) {
                    Err(Error::InvalidConfig(msg)) => assert!(
                        msg.contains("HYBRIDVEC_SIMD") && msg.contains(value),
                        "{value}: {msg}"
                    ),
                    other => {
                        panic!("HYBRIDVEC_SIMD={value}: expected InvalidConfig, got {other:?}")
                    }
                }
            }
            let cfg = CpuConfig {
                simd: Some(level),
                ..Default::default()
            };
            assert!(
                matches!(
                    choose_level_from(&cfg, None, false, best),
                    Err(Error::InvalidConfig(msg)) if msg.contains(level.name())
                ),
                "CpuConfig::simd = {level:?}"
            );
        }
    }

    #[test]
    fn the_chosen_level_is_always_supported_and_at_most_every_cap() {
        let best = SimdLevel::detect();
        let caps: Vec<Option<&str>> = [None, Some(""), Some(" ")]
            .into_iter()
            .chain(SimdLevel::ALL.iter().map(|l| Some(l.name())))
            .chain([Some("avx2"), Some("avx512")])
            .collect();
        for simd in [None].into_iter().chain(SimdLevel::ALL.map(Some)) {
            for &cap in &caps {
                for scalar in [false, true] {
                    let cfg = CpuConfig {
                        simd,
                        ..Default::default()
                    };
                    let Ok(level) = choose_level_from(&cfg, cap, scalar, best) else {
                        continue;
                    };
                    let what = format!("simd={simd:?} HYBRIDVEC_SIMD={cap:?} scalar={scalar}");
                    assert!(level.is_supported(), "{what}: chose {level:?}");
                    assert!(level <= best, "{what}: chose {level:?} above {best:?}");
                    if scalar {
                        assert_eq!(level, SimdLevel::Scalar, "{what}");
                    }
                    if let Some(l) = simd {
                        assert!(level <= l, "{what}: chose {level:?}");
                    }
                    if let Some(l) = cap.and_then(SimdLevel::from_name) {
                        assert!(level <= l, "{what}: chose {level:?}");
                    }
                }
            }
        }
        // Every supported level can be asked for, and is what one gets.
        for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
            let got = choose_level_from(&CpuConfig::default(), Some(level.name()), false, best);
            assert_eq!(got.unwrap(), level);
        }
    }

    #[test]
    fn a_bad_value_lists_this_architectures_levels() {
        let best = SimdLevel::detect();
        let Err(Error::InvalidConfig(msg)) =
            choose_level_from(&CpuConfig::default(), Some("avx9000"), false, best)
        else {
            panic!("avx9000 accepted");
        };
        assert!(
            msg.contains("HYBRIDVEC_SIMD") && msg.contains("avx9000"),
            "{msg}"
        );
        let want = match std::env::consts::ARCH {
            "x86_64" => "scalar, avx2 or avx512",
            "aarch64" => "scalar or neon",
            _ => "scalar",
        };
        assert!(msg.contains(want), "{msg}");
    }
}

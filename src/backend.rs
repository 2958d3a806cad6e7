//! What the executor needs from a device: the [`Backend`] trait.
//!
//! The executor owns validation (shapes, NaN, `k`), query normalisation, dispatch,
//! chunking and fallback. A backend only computes, on inputs that are already checked,
//! and says why it could not ([`BackendError`]).
//!
//! This module sits below every backend and names none of them: the CPU backend
//! (`cpu/`) and the CUDA backend (`cuda/backend.rs`) each implement the trait in their
//! own folder, and the executor above them sees only `dyn Backend`. The trait and
//! [`BackendError`] are public API: an application may bring a backend of its own to
//! [`HybridExecutor::with_accelerator`](crate::HybridExecutor::with_accelerator) (tests
//! do, to inject speed and faults), and every [`BackendError`] tells the executor what
//! to do next ([`BackendError::try_elsewhere`]).

use crate::corpus::CorpusView;
use crate::error::Error;
use crate::hit::Hit;
use crate::matrix::{MatrixRef, Scores};
use crate::metric::Metric;
use std::fmt;
use std::time::Duration;

/// Which side of the hybrid executor a backend is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendKind {
    /// The host CPU (always present).
    Cpu,
    /// An accelerator (a CUDA GPU, or a test's stand-in for one).
    Gpu,
}

impl BackendKind {
    /// `"cpu"` or `"gpu"`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Gpu => "gpu",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backend's advertised peak rates, for the roofline estimate of shapes never measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    /// Peak arithmetic, FLOP/s.
    pub flops: f64,
    /// Peak memory bandwidth, bytes/s.
    pub bytes_per_sec: f64,
    /// Fixed cost per call (launches, transfers of the queries, synchronisation).
    pub overhead: Duration,
}

impl Rates {
    /// Estimated time of a `queries × rows × dim` call: the slower of arithmetic and
    /// streaming the corpus once, plus the fixed overhead.
    pub fn estimate(&self, queries: usize, rows: usize, dim: usize) -> Duration {
        let flops = 2.0 * queries as f64 * rows as f64 * dim as f64;
        let bytes = 4.0 * (rows as f64 + queries as f64) * dim as f64;
        let secs = (flops / self.flops.max(1.0)).max(bytes / self.bytes_per_sec.max(1.0));
        self.overhead + Duration::from_secs_f64(secs)
    }
}

/// Why a backend could not answer.
#[derive(Debug)]
#[non_exhaustive]
pub enum BackendError {
    /// The device cannot serve now (gone, driver error, not initialised): try elsewhere.
    Unavailable {
        /// Why, for people.
        reason: String,
    },
    /// Not enough device memory for this call. The executor retries in smaller chunks,
    /// then elsewhere.
    OutOfMemory {
        /// Bytes the call needed.
        requested: u64,
    },
    /// The corpus itself does not fit in device memory. Smaller query chunks cannot
    /// help, so the executor goes straight to another backend.
    CorpusTooLarge {
        /// Bytes the resident corpus needed.
        requested: u64,
    },
    /// A kernel failed to launch or run: try elsewhere.
    LaunchFailed {
        /// Why, for people.
        reason: String,
    },
    /// This backend does not serve this call (a `k` or dimension beyond its kernels):
    /// run it elsewhere. Not a failure: it never counts against the backend's health.
    Unsupported {
        /// Why, for people.
        reason: String,
    },
    /// An error that another backend would hit too (a bug, bad input): returned as is.
    Fatal(Error),
}

impl BackendError {
    /// Whether running the call on another backend may succeed.
    pub fn try_elsewhere(&self) -> bool {
        !matches!(self, BackendError::Fatal(_))
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Unavailable { reason } => write!(f, "unavailable: {reason}"),
            BackendError::OutOfMemory { requested } => {
                write!(f, "out of device memory ({requested} bytes requested)")
            }
            BackendError::CorpusTooLarge { requested } => {
                write!(
                    f,
                    "the corpus does not fit in device memory ({requested} bytes)"
                )
            }
            BackendError::LaunchFailed { reason } => write!(f, "launch failed: {reason}"),
            BackendError::Unsupported { reason } => write!(f, "unsupported: {reason}"),
            BackendError::Fatal(e) => write!(f, "{e}"),
        }
    }
}

/// A device that computes cosine scores and top-k.
///
/// Inputs are checked before a backend sees them: `queries` rows have unit norm (or are
/// zero), their width equals `corpus.dim()`, every value is finite, and
/// `1 <= k <= corpus.rows()`. A backend must return exactly one result per query row:
/// the executor checks, and a wrong count is an error ([`Error::ChunkResultMismatch`]),
/// never retried.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Device name, for reports and for keying exported measurements.
    fn name(&self) -> &str;

    /// Which side of the executor this backend is.
    fn kind(&self) -> BackendKind;

    /// Advertised peak rates, used until the executor has measured a shape.
    fn rates(&self) -> Rates;

    /// The `Q × N` cosine scores.
    fn cosine(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
    ) -> Result<Scores, BackendError>;

    /// The `k` best corpus rows per query, best first (ties: lower index first).
    fn top_k(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        k: usize,
    ) -> Result<Vec<Vec<Hit>>, BackendError>;

    /// [`top_k`](Self::top_k) among only the corpus rows `rows` (ascending, distinct,
    /// each below `corpus.rows()`), read by index: a filtered search whose cost follows
    /// `rows.len()`. `1 <= k <= rows.len()`. Hits carry corpus row indices. The default
    /// does not serve it.
    fn top_k_rows(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        rows: &[usize],
        k: usize,
    ) -> Result<Vec<Vec<Hit>>, BackendError> {
        let _ = (queries, corpus, rows, k);
        Err(BackendError::Unsupported {
            reason: format!("{} does not search gathered rows", self.name()),
        })
    }

    /// [`top_k_rows`](Self::top_k_rows) with one list of rows per query: query `i`'s best
    /// `min(k, lists[i].len())` among `lists[i]` (each ascending and distinct, none
    /// empty). The default runs query by query; the CPU reads each row once for all the
    /// queries that allow it.
    fn top_k_rows_per_query(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        lists: &[&[usize]],
        k: usize,
    ) -> Result<Vec<Vec<Hit>>, BackendError> {
        let mut out = Vec::with_capacity(lists.len());
        for (i, rows) in lists.iter().enumerate() {
            let one = queries.row_range(i..i + 1);
            out.extend(self.top_k_rows(one, corpus, rows, k.min(rows.len()))?);
        }
        Ok(out)
    }

    /// Whether this backend scores `metric`. Only then does it get views of that metric:
    /// [`CorpusView::metric`] names it, the row factors come in
    /// [`CorpusView::inv_norms`] and [`CorpusView::row_bias`] (`score = dot · factor +
    /// bias`), and the queries come as given for L2 and scaled to unit norm for inner
    /// product (the same ranking). The default serves cosine only; the executor runs the
    /// other metrics on the CPU.
    fn supports_metric(&self, metric: Metric) -> bool {
        metric == Metric::Cosine
    }

    /// The most hits a query this backend selects in one call (`k` of
    /// [`top_k`](Self::top_k) and its filtered forms); `None` where any `k` is served. A
    /// larger `k` gets [`BackendError::Unsupported`]. The executor's exact metrics ask for
    /// more candidates than hits, so they keep their first request within this.
    fn max_k(&self) -> Option<usize> {
        None
    }

    /// Whether this backend serves filtered search: [`top_k`](Self::top_k) over a view
    /// whose rows masked out have a NaN factor in [`CorpusView::inv_norms`], and
    /// [`top_k_rows`](Self::top_k_rows). The executor sends filtered calls only to
    /// backends that do. The default is `false`.
    fn serves_filters(&self) -> bool {
        false
    }

    /// Into how many passes over the corpus this backend's memory plan split the last
    /// call made on this thread (then forgotten); `None` where it does not plan.
    fn take_corpus_passes(&self) -> Option<usize> {
        None
    }

    /// Frees the memory this backend keeps between calls to make the next call cheap
    /// (the CUDA backend's per-stream scratch), but not the resident corpus. The default
    /// keeps nothing, so it does nothing.
    fn release_cached_memory(&self) {}

    /// How this backend scores large batches now, for
    /// [`CudaStatus::Available::gemm`](crate::CudaStatus::Available), which can change
    /// while it runs (a cuBLAS that fails is dropped); `None` where it does not say.
    fn gemm_description(&self) -> Option<String> {
        None
    }
}

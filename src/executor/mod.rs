//! The executor: validates a call, picks a backend, runs it.

use crate::cpu::{CpuBackend, CpuConfig, SimdLevel};
use crate::cuda::{self, CudaStatus};
use crate::error::{Error, Result};
use crate::hit::Hit;
use crate::matrix::{normalize, CorpusView, MatrixRef, Scores};
use crate::warm::{StoreHit, WarmStore};

/// Which backend may serve calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DevicePolicy {
    /// The GPU when it is usable and worth it, the CPU otherwise.
    #[default]
    Auto,
    /// Always the CPU.
    Cpu,
    /// Always the GPU; without a usable one, [`HybridExecutor::new`] fails with
    /// [`Error::CudaUnavailable`] instead of falling back.
    Cuda,
}

/// How to build a [`HybridExecutor`].
#[derive(Clone, Debug, Default)]
pub struct ExecutorConfig {
    /// Which backend may serve.
    pub device: DevicePolicy,
    /// CPU backend settings.
    pub cpu: CpuConfig,
}

/// What this executor can use.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// CPU model name, as the OS reports it.
    pub cpu_model: String,
    /// Kernels the CPU backend uses.
    pub simd: SimdLevel,
    /// CPU worker threads.
    pub threads: usize,
    /// GPU status, with the reason when it is unavailable.
    pub cuda: CudaStatus,
}

/// The entry point: cosine similarity and exact top-k between a query batch and a corpus.
///
/// Build one and reuse it: it owns the CPU thread pool. It is `Send + Sync`; concurrent
/// calls share the pool.
#[derive(Debug)]
pub struct HybridExecutor {
    cpu: CpuBackend,
    cuda: CudaStatus,
    policy: DevicePolicy,
}

impl HybridExecutor {
    /// Starts the backends allowed by `config`.
    ///
    /// Errors: [`Error::CudaUnavailable`] (with the reason) for [`DevicePolicy::Cuda`] when no
    /// usable GPU is present; [`Error::InvalidConfig`] for unusable settings.
    pub fn new(config: ExecutorConfig) -> Result<Self> {
        let cuda = cuda::probe();
        if let (DevicePolicy::Cuda, CudaStatus::Unavailable { reason }) = (config.device, &cuda) {
            return Err(Error::CudaUnavailable {
                reason: reason.clone(),
            });
        }
        let cpu = CpuBackend::new(&config.cpu)?;
        Ok(Self {
            cpu,
            cuda,
            policy: config.device,
        })
    }

    /// What this executor runs on.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            cpu_model: cpu_model(),
            simd: self.cpu.simd_level(),
            threads: self.cpu.threads(),
            cuda: self.cuda.clone(),
        }
    }

    /// The policy this executor was built with.
    pub fn policy(&self) -> DevicePolicy {
        self.policy
    }

    /// Cosine similarity of every query with every corpus row: a `Q × N` row-major matrix.
    ///
    /// Errors: [`Error::DimensionMismatch`] when the query dimension differs from the
    /// corpus's, [`Error::NonFinite`] for NaN/inf in `queries`.
    pub fn cosine_similarity<'c>(
        &self,
        queries: MatrixRef<'_>,
        corpus: impl Into<CorpusView<'c>>,
    ) -> Result<Scores> {
        let corpus = corpus.into();
        let unit = prepare_queries(queries, corpus)?;
        let unit = MatrixRef::new(&unit, queries.rows(), queries.cols())?;
        let _span = tracing::debug_span!(
            "cosine_similarity",
            backend = "cpu",
            q = unit.rows(),
            n = corpus.rows(),
            d = corpus.dim()
        )
        .entered();
        Ok(self.cpu.cosine(unit, corpus))
    }

    /// The `k` corpus rows most similar to each query, best first (ties: lower index first).
    /// `k` larger than the corpus returns every row.
    ///
    /// Errors: [`Error::InvalidK`] for `k = 0`, plus those of
    /// [`cosine_similarity`](Self::cosine_similarity).
    pub fn top_k<'c>(
        &self,
        queries: MatrixRef<'_>,
        corpus: impl Into<CorpusView<'c>>,
        k: usize,
    ) -> Result<Vec<Vec<Hit>>> {
        let corpus = corpus.into();
        if k == 0 {
            return Err(Error::InvalidK {
                k,
                rows: corpus.rows(),
            });
        }
        let unit = prepare_queries(queries, corpus)?;
        let unit = MatrixRef::new(&unit, queries.rows(), queries.cols())?;
        let _span = tracing::debug_span!(
            "top_k",
            backend = "cpu",
            q = unit.rows(),
            n = corpus.rows(),
            d = corpus.dim(),
            k
        )
        .entered();
        Ok(self.cpu.top_k(unit, corpus, k.min(corpus.rows())))
    }
}

impl HybridExecutor {
    /// [`top_k`](Self::top_k) over the visible rows of a [`WarmStore`], read in place;
    /// deleted and superseded rows never appear. Hits carry the records' ids.
    ///
    /// Errors: those of `top_k`, and [`Error::EmptyInput`] when the store has no visible rows.
    pub fn top_k_store(
        &self,
        queries: MatrixRef<'_>,
        store: &WarmStore,
        k: usize,
    ) -> Result<Vec<Vec<StoreHit>>> {
        let corpus = store.corpus();
        let view = corpus.view().ok_or(Error::EmptyInput {
            what: "store has no records",
        })?;
        let hits = self.top_k(queries, view, k)?;
        hits.into_iter()
            .map(|hs| {
                hs.into_iter()
                    .map(|h| {
                        Ok(StoreHit {
                            id: store.id_of(h.index as u64)?,
                            row: h.index as u64,
                            score: h.score,
                        })
                    })
                    .collect()
            })
            .collect()
    }
}

/// Checks the queries against the corpus and returns them scaled to unit norm (zero rows
/// stay zero, so they score 0 against everything).
fn prepare_queries(queries: MatrixRef<'_>, corpus: CorpusView<'_>) -> Result<Vec<f32>> {
    if queries.cols() != corpus.dim() {
        return Err(Error::DimensionMismatch {
            expected: corpus.dim(),
            got: queries.cols(),
        });
    }
    queries.check_finite()?;
    let mut unit = queries.as_slice().to_vec();
    unit.chunks_exact_mut(queries.cols()).for_each(normalize);
    Ok(unit)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

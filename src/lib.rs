//! # hybridvec
//!
//! Cosine similarity and exact top-k between a batch of query vectors and a corpus of
//! embeddings, computed on all CPU cores or on an NVIDIA GPU when one is usable (found at
//! run time; the CUDA path has not yet been verified on a GPU), for any dimension.
//!
//! Use it when you need **exact** answers over a corpus that fits in memory: a
//! re-ranking stage, a small-to-medium vector store, an evaluation harness. Do not use it
//! as an approximate-nearest-neighbour index over billions of vectors: every call scans the
//! whole corpus (which is what makes it exact).
//!
//! ## Quick start
//!
//! ```
//! use hybridvec::{Corpus, ExecutorConfig, HybridExecutor, MatrixRef};
//!
//! let dim = 4;
//! let corpus = Corpus::new(vec![1.0, 0.0, 0.0, 0.0,   0.0, 1.0, 0.0, 0.0,   1.0, 1.0, 0.0, 0.0], dim)?;
//! let exec = HybridExecutor::new(ExecutorConfig::default())?;
//! let queries = [1.0, 0.1, 0.0, 0.0];
//! let hits = exec.top_k(MatrixRef::new(&queries, 1, dim)?, &corpus, 2)?;
//! assert_eq!(hits[0][0].index, 0);
//! assert_eq!(hits[0][1].index, 2);
//! # Ok::<(), hybridvec::Error>(())
//! ```
//!
//! ## Semantics
//! * Cosine similarity is `q·c / (‖q‖‖c‖)`; a zero vector scores 0 against everything.
//! * NaN or infinity in an input is [`Error::NonFinite`]; corpus values are checked once,
//!   when the [`Corpus`] is built (which also caches the row norms). A non-zero corpus row
//!   with a norm outside `[1e-30, 1e30]` is [`Error::NormOutOfRange`]: f32 cannot score it
//!   reliably. Queries of any finite magnitude work (they are normalised in f64).
//! * A corpus (or a store) may keep its vectors as f16 or bf16 ([`ElementType`],
//!   [`Corpus::with_element_type`]): half the bytes for every scan to read. Rounding to
//!   16 bits is lossy; scores are exact with respect to the stored values.
//! * Top-k is exact, best first; equal scores are ordered by lower corpus index. `k` larger
//!   than the corpus returns every row; `k = 0` is [`Error::InvalidK`].
//!
//! ## Features and environment
//! | what | effect |
//! |---|---|
//! | AVX-512F, or AVX2 + FMA on x86-64; NEON on aarch64 (detected at run time) | the score-tile kernels (12 × 32, 6 × 16, 6 × 16) and streaming kernels use the best the CPU has; otherwise portable scalar code ([`SimdLevel`], reported by [`HybridExecutor::capabilities`]) |
//! | `HYBRIDVEC_SIMD=scalar\|avx2\|avx512` (x86-64), `scalar\|neon` (aarch64), or [`CpuConfig::simd`] | cap the level (a level the CPU lacks, or one of another architecture, is [`Error::InvalidConfig`]) |
//! | `HYBRIDVEC_FORCE_SCALAR=1` or [`CpuConfig::force_scalar`] | force the portable scalar path |
//! | CUDA | `libcuda` loaded at run time; without a usable device [`DevicePolicy::Cuda`] is [`Error::CudaUnavailable`] with the reason, and `Auto` uses the CPU |
//! | [`CudaConfig::precision`] | [`Precision::Tf32`] runs large batches on the tensor cores; [`Precision::Fp16`] and [`Precision::Bf16`] also stream a 16-bit copy of the corpus (scores within 2e-3 for TF32 and FP16, 1e-2 for BF16) |
//!
//! The library emits `tracing` spans and never installs a subscriber.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

// Dependencies point down, in layers (`tests/layering.rs` checks it): `error`, `hit`,
// `mem`, `simd` at the bottom; then `data` and `matrix`, `input`; then `backend` (the
// trait every device implements); then the devices `cpu` and `cuda` and the store `warm`,
// none of which knows the others; the `executor` on top.
mod backend;
mod corpus;
pub mod cpu;
pub mod cuda;
pub mod data;
mod elem;
mod error;
mod executor;
mod hit;
pub mod input;
mod matrix;
mod mem;
pub mod merge;
pub mod metric;
mod quant;
mod sharded;
mod simd;
pub mod warm;

pub use backend::{Backend, BackendError, BackendKind, Rates};
pub use corpus::{Corpus, CorpusView};
pub use cpu::{CpuConfig, CpuFeatures, SimdLevel};
pub use cuda::{CudaConfig, CudaStatus, GemmPath, Precision};
pub use elem::{bf16, f16, ElementType};
pub use error::{Error, Result};
pub use executor::{
    BackendCallStats, BackendMetrics, BreakerState, Bucket, Capabilities, Decision, DevicePolicy,
    DispatchPolicy, ExecutionReport, ExecutorConfig, ExecutorStats, FallbackAction, FallbackStep,
    Filter, FilterPlan, HybridExecutor, MetricsSnapshot, Op, PerformanceTracker, RangeResult,
    Reason, SearchOptions, Shape, StoreRangeResult, TrackerConfig,
};
pub use hit::Hit;
pub use matrix::{Matrix, MatrixRef, Scores, MAX_NORM, MIN_NORM};
pub use merge::{merge_top_k, ShardHit};
pub use metric::Metric;
pub use quant::CERTIFIED_MAX_QUERIES;
pub use warm::{
    DamagedRecord, Record, Recovery, RowId, StoreConfig, StoreCorpus, StoreHit, StoreStats,
    TierDamage, WarmStore, MAX_DIM as MAX_STORE_DIM,
};

//! The one public error type. Its variants are the same with and without a GPU.

use std::path::PathBuf;

/// Everything that can go wrong in hybridvec.
///
/// Variants are structured so callers can match on the cause instead of parsing text.
/// The enum is `#[non_exhaustive]`: the CUDA backend and the warm tier add variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two inputs that must share a dimension do not.
    #[error("dimension mismatch: expected {expected}, got {got}")]
    DimensionMismatch {
        /// The dimension the call required (the corpus's, usually).
        expected: usize,
        /// The dimension it was given.
        got: usize,
    },
    /// A buffer's length is not `rows × cols`.
    #[error("invalid shape: {rows} rows × {cols} columns needs {} values, got {len}", rows.saturating_mul(*cols))]
    InvalidShape {
        /// Rows asked for.
        rows: usize,
        /// Columns asked for.
        cols: usize,
        /// Values actually supplied.
        len: usize,
    },
    /// An input with no rows or no columns (an empty corpus, an empty query batch, dimension 0).
    #[error("empty input: {what}")]
    EmptyInput {
        /// Which input was empty.
        what: &'static str,
    },
    /// `k` must be at least 1. `k` larger than the corpus is allowed and returns every row.
    #[error("invalid k = {k} (corpus has {rows} rows); k must be at least 1")]
    InvalidK {
        /// The `k` that was asked for.
        k: usize,
        /// Rows in the corpus.
        rows: usize,
    },
    /// A NaN or infinite value in an input.
    #[error("non-finite value at row {row}, column {col}")]
    NonFinite {
        /// Row of the first non-finite value.
        row: usize,
        /// Column of the first non-finite value.
        col: usize,
    },
    /// A corpus row whose norm is so small or so large that f32 arithmetic cannot score it
    /// reliably (see [`MIN_NORM`](crate::MIN_NORM) and [`MAX_NORM`](crate::MAX_NORM)).
    #[error("row {row} has norm {norm:e}, outside the supported range [1e-30, 1e30] (zero rows are fine)")]
    NormOutOfRange {
        /// The row.
        row: usize,
        /// Its Euclidean norm.
        norm: f64,
    },
    /// The CUDA backend cannot be used; the reason says why (no driver, no device, not built...).
    #[error("CUDA unavailable: {reason}")]
    CudaUnavailable {
        /// Why CUDA cannot serve this call.
        reason: String,
    },
    /// The accelerator ran out of memory even for the smallest chunk, and the policy
    /// (`DevicePolicy::Cuda`) forbids running elsewhere.
    #[error("{backend}: out of device memory ({requested} bytes requested) at the smallest chunk")]
    DeviceOutOfMemory {
        /// The backend's name.
        backend: String,
        /// Bytes the last attempt needed.
        requested: u64,
    },
    /// The accelerator failed (a launch or device error), and the policy
    /// (`DevicePolicy::Cuda`) forbids running elsewhere.
    #[error("{backend} failed: {reason}")]
    BackendFailed {
        /// The backend's name.
        backend: String,
        /// What went wrong.
        reason: String,
    },
    /// A chunked call returned the wrong number of results for one chunk.
    #[error("chunk {chunk} returned {got} results, expected {expected}")]
    ChunkResultMismatch {
        /// Index of the chunk.
        chunk: usize,
        /// Results the chunk had to return.
        expected: usize,
        /// Results it returned.
        got: usize,
    },
    /// An input file could not be parsed.
    #[error("bad input file {path}: {reason}")]
    BadInputFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A store file is damaged: a checksum, length or offset read from disk is wrong.
    #[error("corrupt store file {file} at offset {offset}: {reason}")]
    CorruptStore {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the bad data in that file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The store was written by a newer format version than this build reads.
    #[error(
        "store format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedVersion {
        /// Version in the file.
        found: u32,
        /// Version this build understands.
        supported: u32,
    },
    /// Another writer holds the store; open it read-only instead.
    #[error("store {dir} is locked by another writer")]
    StoreLocked {
        /// The store directory.
        dir: PathBuf,
    },
    /// An earlier write-back failed, so the store refuses further writes: after a failed
    /// fsync the kernel may have dropped dirty pages, and retrying could report data as
    /// durable that is not. Reopen the store to continue from its last durable state.
    #[error("store is poisoned by an earlier failure ({reason}); reopen it")]
    StorePoisoned {
        /// The first failure.
        reason: String,
    },
    /// A row number that holds no readable record.
    #[error("row {row} holds no record")]
    NoSuchRow {
        /// The row asked for.
        row: u64,
    },
    /// A write to a store opened read-only.
    #[error("store is open read-only")]
    ReadOnly,
    /// An operating-system I/O error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The configuration is not usable (for example zero threads).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

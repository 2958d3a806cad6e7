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
    /// A finite value that the corpus's element type cannot hold: it would round to
    /// infinity (f16 holds up to ±65 504, bf16 up to about ±3.39e38).
    #[error("value {value} at row {row}, column {col} is out of {element} range")]
    NotRepresentable {
        /// Row of the first such value.
        row: usize,
        /// Its column.
        col: usize,
        /// The value.
        value: f32,
        /// The element type's name (`f16`, `bf16`).
        element: &'static str,
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
    /// `create` found a store already in the directory (another process may have created
    /// it a moment before): open it instead.
    #[error("{dir} already holds a store; open it instead of creating one")]
    StoreExists {
        /// The store directory.
        dir: PathBuf,
    },
    /// The store file this writer holds is no longer the one in the directory (it was
    /// deleted or replaced behind the writer's back). The store is poisoned: nothing written
    /// since the last flush is acknowledged.
    #[error("{file} was replaced or removed while this writer held it; nothing after the last flush was made durable")]
    StoreReplaced {
        /// The store file.
        file: PathBuf,
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
    /// A buffer the call needs is larger than the memory this machine (or the process's
    /// memory limit) has available; nothing was allocated.
    #[error("{what} needs {bytes} bytes, more than the {available} bytes of memory available")]
    InsufficientMemory {
        /// What the buffer was for.
        what: String,
        /// Bytes it needs (`u64::MAX` when the size overflows).
        bytes: u64,
        /// Bytes available when it was checked.
        available: u64,
    },
    /// The values are too large for a metric's scores to be held in f32: an inner
    /// product or a squared L2 distance beyond `f32::MAX` (about 3.4e38).
    #[error("{metric} scores out of f32 range: {reason}")]
    ScoreOutOfRange {
        /// The metric's short name (`ip`, `l2`).
        metric: &'static str,
        /// Which query or row, and its magnitude.
        reason: String,
    },
    /// A filter names a row the corpus does not have.
    #[error("filter names row {index}, but the corpus has {rows} rows")]
    FilterOutOfRange {
        /// The row named.
        index: usize,
        /// Rows in the corpus (or the store's view).
        rows: usize,
    },
    /// A filter names an id that is not in the store (never put, or deleted).
    #[error("filter names id {id:?}, which is not in the store")]
    UnknownId {
        /// The id.
        id: String,
    },
    /// An operating-system I/O error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// An operating-system I/O error on a named file or directory.
    #[error("{}: {source}", path.display())]
    FileIo {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The configuration is not usable (for example zero threads).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

impl Error {
    /// The operating-system error behind [`Error::Io`] or [`Error::FileIo`], if this is one:
    /// match on its `kind()` or `raw_os_error()` without caring whether a path came with it.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            Error::Io(e) | Error::FileIo { source: e, .. } => Some(e),
            _ => None,
        }
    }

    /// Wraps an I/O error with the path it happened on: `map_err(Error::at(&path))`.
    pub fn at(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::FileIo {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! The warm tier: a durable, concurrent, memory-mapped embedding store.
//!
//! A store is a directory:
//! * `store.hv` — a checksummed header (magic, format version, dimension, chunk sizes)
//!   and two alternating superblock slots recording the committed row count and content
//!   length (`format`);
//! * `vec-NNNNNN.chunk` — vectors, slot `i` = row `i` (a row may straddle two files);
//! * `meta-NNNNNN.chunk` — 32 bytes of metadata per row: state word, CRC-32C, content
//!   offset and lengths, inverse norm;
//! * `blob-NNNNNN.chunk` — ids and contents, append-only;
//! * `LOCK` — `flock`ed by the one writer;
//! * `tier.hv`, `i8code-NNNNNN.chunk`, `i8bound-NNNNNN.chunk` — the int8 scan tier, when
//!   the store has one ([`WarmStore::build_int8_tier`]).
//!
//! Chunk files are created whole and mapped once at fixed addresses (`region`), so the
//! committed rows read in place as one row-major matrix. Their sizes are set in bytes: the
//! first is small (64 KiB by default) and each later one doubles the region, up to a cap
//! (1 GiB), so a store's disk use stays within twice its data plus a small constant
//! (`format`). A record of a million dimensions is 4 MiB on disk, not a 65 GB file.
//!
//! **Writes.** [`WarmStore::put`] reserves a row and content bytes with one `fetch_add`
//! each — the only shared step; there is no lock around copying data. It writes the
//! vector, id, content and metadata, then publishes the record by storing its state word
//! last. The visible length advances only over a contiguous run of published rows. A second
//! `put` of the same id **supersedes** the first (the higher row wins); [`WarmStore::delete`]
//! writes a tombstone. Superseded and deleted rows stay in the files and are masked out of
//! searches.
//!
//! **Durability.** Nothing is durable until [`WarmStore::flush`] returns: it writes back
//! the new rows' data first and the superblock after, so nothing durable points past data
//! that is not. On open the store recovers to the newest valid superblock; rows past it
//! (a torn tail) are ignored and overwritten. A failed write-back poisons the store.
//!
//! **Where things are.** This file holds the types; each concern has its own file:
//! `lifecycle` (create, open, recovery, the writer's hold on the store), `write` (put,
//! delete, growth, flush), `read` (records by id or row, the corpus view), `record` (one
//! record's bytes in place, and their checksum check), `index` (id → row), `live` (the
//! live mask), `salvage` (damaged records and the quarantine), `format` (the
//! on-disk layout and chunk sizes), `region` (chunk files mapped at fixed addresses),
//! `sync` (every durability call), `watermark` (row reservation and visibility) and
//! `tier` (the int8 scan tier's files, when the store has one).

mod format;
mod index;
mod lifecycle;
mod live;
mod read;
mod record;
mod region;
mod salvage;
mod sync;
#[cfg(test)]
mod sync_failure_tests;
mod tier;
#[cfg(test)]
mod tier_tests;
mod watermark;
mod write;

use crate::elem::ElementType;
use live::LiveBits;
use parking_lot::Mutex;
pub use read::StoreCorpus;
use region::Region;
pub use salvage::{DamagedRecord, Recovery};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
pub use tier::TierDamage;
use watermark::Watermark;

/// The row a record occupies (its slot in the vector files).
pub type RowId = u64;

/// How to create a store.
///
/// ```
/// let config = hybridvec::StoreConfig::new(768); // 64 KiB first chunks, doubling to 1 GiB
/// assert_eq!((config.first_chunk_bytes, config.max_chunk_bytes), (64 << 10, 1 << 30));
/// ```
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Vector dimension (fixed for the store's life), 1 to [`MAX_DIM`].
    pub dim: usize,
    /// Bytes of the first chunk file of each region (vectors, metadata, contents); a power
    /// of two, at least 4096.
    pub first_chunk_bytes: usize,
    /// The largest chunk file: chunks double the region until they reach this size; a
    /// power of two, from `first_chunk_bytes` to 16 GiB.
    pub max_chunk_bytes: usize,
}

impl StoreConfig {
    /// Defaults for `dim`: 64 KiB first chunks, doubling up to 1 GiB.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            first_chunk_bytes: 64 << 10,
            max_chunk_bytes: 1 << 30,
        }
    }
}

/// One stored record.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The caller's id.
    pub id: String,
    /// The row it occupies.
    pub row: RowId,
    /// The embedding.
    pub embedding: Vec<f32>,
    /// The content stored beside it.
    pub content: Vec<u8>,
}

/// Counters read without locks (atomic shadow counters updated by writers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreStats {
    /// Live records (ids whose latest record is a put).
    pub records: u64,
    /// Rows visible to readers (a contiguous published prefix).
    pub visible_rows: u64,
    /// Rows reserved by writers (some may still be being written).
    pub reserved_rows: u64,
    /// Rows made durable by the last successful flush.
    pub durable_rows: u64,
    /// Bytes of vectors in visible rows.
    pub vector_bytes: u64,
    /// Bytes of ids and contents reserved so far.
    pub content_bytes: u64,
    /// Rows the mapped chunk files can hold.
    pub capacity_rows: u64,
}

/// A search result from a store: the record's id, row and cosine score.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreHit {
    /// The record's id.
    pub id: String,
    /// Its row.
    pub row: RowId,
    /// Cosine similarity to the query.
    pub score: f32,
}

/// The largest vector dimension a store takes (a 4 MiB row), checked before anything is
/// created. Larger embeddings belong in a corpus file, not a store.
pub const MAX_DIM: usize = 1 << 20;

/// Address space reserved per region. Nothing is committed until chunks are mapped; this
/// only bounds the store: at most 512 GiB of vectors and 256 GiB of ids and contents.
const VECTOR_SPACE: usize = 1 << 39;
const CONTENT_SPACE: usize = 1 << 38;

/// The warm-tier store. Share it between threads by reference or in an `Arc`: every
/// method takes `&self`.
pub struct WarmStore {
    dir: PathBuf,
    dim: usize,
    /// How the vectors are stored, and the bytes of one row.
    element: ElementType,
    row_bytes: usize,
    writable: bool,
    vectors: Region,
    metas: Region,
    blobs: Region,
    /// Rows reserved (`fetch_add`) and rows visible (contiguous published prefix).
    rows: Watermark<AtomicU64>,
    blob_tail: AtomicU64,
    durable_rows: AtomicU64,
    live_records: AtomicU64,
    /// Unique per open store in this process: a device keeps its copy under it.
    identity: u64,
    /// Derived, in-memory: bit per row, set while the row is the latest put of its id.
    live: LiveBits,
    index: index::IdIndex,
    grow_lock: Mutex<()>,
    flush_state: Mutex<FlushState>,
    poisoned: AtomicBool,
    poison_reason: Mutex<Option<String>>,
    store_file: File,
    /// The writer's locks and the identity of its store file; `None` when read-only.
    hold: Option<lifecycle::WriterHold>,
    /// Records left out at open (quarantined, or damaged under a salvage).
    quarantined: Vec<DamagedRecord>,
    /// The most rows the vector region's reservation holds.
    max_rows: usize,
    /// The int8 scan tier, when the store has one (`tier`), and what its open found.
    tier: Option<tier::StoreTier>,
    tier_damage: Option<TierDamage>,
}

struct FlushState {
    generation: u64,
    rows: u64,
    blob_len: u64,
}

impl std::fmt::Debug for WarmStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmStore")
            .field("dir", &self.dir)
            .field("dim", &self.dim)
            .field("stats", &self.stats())
            .finish()
    }
}

impl WarmStore {
    /// The vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// How the store keeps its vectors (see [`WarmStore::create_with_element`]).
    pub fn element_type(&self) -> ElementType {
        self.element
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Live records (ids whose latest record is a put). Lock-free.
    pub fn len(&self) -> u64 {
        self.live_records.load(Ordering::Relaxed)
    }

    /// True when no id is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lock-free counters; never races with growth.
    pub fn stats(&self) -> StoreStats {
        let visible = self.rows.visible.load(Ordering::Acquire);
        StoreStats {
            records: self.live_records.load(Ordering::Relaxed),
            visible_rows: visible,
            reserved_rows: self.rows.next.load(Ordering::Relaxed),
            durable_rows: self.durable_rows.load(Ordering::Relaxed),
            vector_bytes: visible * self.row_bytes as u64,
            content_bytes: self.blob_tail.load(Ordering::Relaxed),
            capacity_rows: (self.vectors.mapped_bytes() / self.row_bytes) as u64,
        }
    }
}

fn vectors_capacity_rows(space: usize, row_bytes: usize) -> usize {
    (space / row_bytes).min(1 << 32)
}

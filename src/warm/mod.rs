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
//! * `LOCK` — `flock`ed by the one writer.
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
//! **Where things are.** This file holds the types and the raw accessors; each concern has
//! its own file: `lifecycle` (create, open, recovery, the writer's hold on the store),
//! `write` (put, delete, growth, flush), `read` (records by id or row, the corpus view),
//! `live` (the live mask), `salvage` (damaged records and the quarantine), `format` (the
//! on-disk layout and chunk sizes), `region` (chunk files mapped at fixed addresses),
//! `sync` (every durability call) and `watermark` (row reservation and visibility).

mod format;
mod lifecycle;
mod live;
mod read;
mod region;
mod salvage;
mod sync;
#[cfg(test)]
mod sync_failure_tests;
mod watermark;
mod write;

use crate::error::{Error, Result};
use format::{META_BYTES, STATE_PUT, STATE_TOMBSTONE};
use live::LiveBits;
use parking_lot::{Mutex, RwLock};
pub use read::StoreCorpus;
use region::Region;
pub use salvage::{DamagedRecord, Recovery};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
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
const INDEX_SHARDS: usize = 64;

/// One shard of the id index. foldhash is seeded per process (ids come from callers, so
/// collisions must not be forgeable) and several times faster than SipHash on short ids.
type IdIndex = HashMap<Box<str>, RowId, foldhash::fast::RandomState>;

/// The warm-tier store. Share it between threads by reference or in an `Arc`: every
/// method takes `&self`.
pub struct WarmStore {
    dir: PathBuf,
    dim: usize,
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
    index: Vec<RwLock<IdIndex>>,
    grow_lock: Mutex<()>,
    flush_state: Mutex<FlushState>,
    poisoned: AtomicBool,
    poison_reason: Mutex<Option<String>>,
    store_file: File,
    /// The writer's locks and the identity of its store file; `None` when read-only.
    hold: Option<lifecycle::WriterHold>,
    /// Records left out at open (quarantined, or damaged under a salvage).
    quarantined: Vec<DamagedRecord>,
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
            vector_bytes: visible * (self.dim as u64) * 4,
            content_bytes: self.blob_tail.load(Ordering::Relaxed),
            capacity_rows: (self.vectors.mapped_bytes() / (self.dim * 4)) as u64,
        }
    }

    /// Word `w` (0..8) of row `row`'s metadata entry, which must be mapped.
    fn meta_word(&self, row: u64, w: usize) -> &AtomicU32 {
        let at = row as usize * META_BYTES + w * 4;
        assert!(
            w < 8 && at + 4 <= self.metas.mapped_bytes(),
            "metadata of row {row} not mapped"
        );
        // SAFETY: in bounds of mapped chunks (asserted), 4-byte aligned (page-aligned base,
        // 32-byte entries), and every access to metadata words goes through atomics.
        unsafe { &*(self.metas.base().add(at) as *const AtomicU32) }
    }

    fn meta(&self, row: u64) -> Meta {
        let w = |i| self.meta_word(row, i).load(Ordering::Acquire);
        Meta {
            state: w(0),
            crc: w(1),
            off: w(2) as u64 | (w(3) as u64) << 32,
            id_len: w(4),
            content_len: w(5),
            inv_norm: f32::from_bits(w(6)),
        }
    }

    /// Bytes `[at, at + len)` of the content region, which the caller has checked are
    /// inside published (immutable) data.
    fn blob(&self, at: u64, len: u32) -> &[u8] {
        let (at, len) = (at as usize, len as usize);
        assert!(
            at.checked_add(len)
                .is_some_and(|e| e <= self.blobs.mapped_bytes()),
            "content range out of bounds"
        );
        // SAFETY: in bounds (asserted); published bytes are never written again.
        unsafe { std::slice::from_raw_parts(self.blobs.base().add(at), len) }
    }

    fn vector(&self, row: u64) -> &[f32] {
        let end = (row as usize)
            .checked_add(1)
            .and_then(|r| r.checked_mul(self.dim * 4));
        assert!(
            end.is_some_and(|e| e <= self.vectors.mapped_bytes()),
            "row {row} not mapped"
        );
        // SAFETY: in bounds (asserted), 4-byte aligned, and a published row is never written
        // again.
        unsafe {
            std::slice::from_raw_parts(
                self.vectors
                    .base()
                    .cast::<f32>()
                    .add(row as usize * self.dim),
                self.dim,
            )
        }
    }

    fn read_id(&self, m: &Meta) -> Result<String> {
        String::from_utf8(self.blob(m.off, m.id_len).to_vec()).map_err(|_| Error::CorruptStore {
            file: self.blobs.locate(m.off as usize).0,
            offset: self.blobs.locate(m.off as usize).1,
            reason: "record id is not UTF-8".into(),
        })
    }

    /// Checks one committed row: state, bounds, checksum.
    fn validate(&self, row: u64, blob_len: u64) -> Result<()> {
        let corrupt = |reason: String| {
            let (file, offset) = self.metas.locate(row as usize * META_BYTES);
            Error::CorruptStore {
                file,
                offset,
                reason: format!("row {row}: {reason}"),
            }
        };
        let m = self.meta(row);
        if m.state != STATE_PUT && m.state != STATE_TOMBSTONE {
            return Err(corrupt(format!("bad state word {}", m.state)));
        }
        let end = m.off.checked_add(m.id_len as u64 + m.content_len as u64);
        if m.id_len == 0 || end.is_none_or(|e| e > blob_len) {
            return Err(corrupt(format!(
                "id/content [{}, +{}+{}) outside committed content",
                m.off, m.id_len, m.content_len
            )));
        }
        let id = self.blob(m.off, m.id_len);
        let content = self.blob(m.off + m.id_len as u64, m.content_len);
        let vbytes: &[u8] = bytemuck::cast_slice(self.vector(row));
        if format::record_crc(m.state, m.inv_norm, vbytes, id, content) != m.crc {
            // The checksum covers the metadata entry, the vector and the id and content:
            // name where each of them lies.
            let name = |(f, o): (PathBuf, u64)| {
                let f = f.file_name().map(|n| n.to_string_lossy().into_owned());
                format!("{} at {o}", f.unwrap_or_default())
            };
            let row_bytes = self.dim * 4;
            return Err(corrupt(format!(
                "checksum mismatch over its metadata, its vector ({}) and its id and content ({})",
                name(self.vectors.locate(row as usize * row_bytes)),
                name(self.blobs.locate(m.off as usize)),
            )));
        }
        Ok(())
    }

    fn shard(&self, id: &str) -> &RwLock<IdIndex> {
        let h = crc32c::crc32c(id.as_bytes()) as usize;
        &self.index[h % INDEX_SHARDS]
    }

    /// Makes `row` the record of `id` unless a newer row already is; keeps the live mask
    /// and the live count in step, under the shard lock.
    fn index_publish(&self, row: RowId, id: &str, state: u32) {
        let mut shard = self.shard(id).write();
        let prev = shard.get(id).copied();
        if prev.is_some_and(|p| p > row) {
            return; // a newer record of this id won already
        }
        if let Some(p) = prev {
            if self.live.clear(p) {
                self.live_records.fetch_sub(1, Ordering::Relaxed);
            }
        }
        match shard.get_mut(id) {
            Some(r) => *r = row,
            None => {
                shard.insert(id.into(), row);
            }
        }
        if state == STATE_PUT {
            self.live.set(row);
            self.live_records.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Meta {
    state: u32,
    crc: u32,
    off: u64,
    id_len: u32,
    content_len: u32,
    inv_norm: f32,
}

fn vectors_capacity_rows(space: usize, row_bytes: usize) -> usize {
    (space / row_bytes).min(1 << 32)
}

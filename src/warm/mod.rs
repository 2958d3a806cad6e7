//! The warm tier: a durable, concurrent, memory-mapped embedding store.
//!
//! A store is a directory:
//! * `store.hv` — a checksummed header (magic, format version, dimension, chunk sizes)
//!   and two alternating superblock slots recording the committed row count and content
//!   length ([`format`]);
//! * `vec-NNNNNN.chunk` — vectors, slot `i` = row `i` (a row may straddle two files);
//! * `meta-NNNNNN.chunk` — 32 bytes of metadata per row: state word, CRC-32C, content
//!   offset and lengths, inverse norm;
//! * `blob-NNNNNN.chunk` — ids and contents, append-only;
//! * `LOCK` — `flock`ed by the one writer.
//!
//! Chunk files are created whole and mapped once at fixed addresses ([`region`]), so the
//! committed rows read in place as one row-major matrix. Their sizes are set in bytes: the
//! first is small (64 KiB by default) and each later one doubles the region, up to a cap
//! (1 GiB), so a store's disk use stays within twice its data plus a small constant
//! ([`format`]). A record of a million dimensions is 4 MiB on disk, not a 65 GB file.
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

mod format;
mod lifecycle;
mod region;
mod salvage;
mod sync;
#[cfg(test)]
mod sync_failure_tests;
mod watermark;

use crate::error::{Error, Result};
use crate::matrix::{CorpusView, MatrixRef, Origin, MAX_NORM, MIN_NORM};
use format::{Superblock, META_BYTES, STATE_EMPTY, STATE_PUT, STATE_TOMBSTONE};
use parking_lot::{Mutex, RwLock};
use region::Region;
pub use salvage::{DamagedRecord, Recovery};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
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

/// The most a region is grown ahead of the bytes writers have reserved.
const GROW_AHEAD_MAX: usize = 1 << 20;

/// How far ahead of what writers need `region` is grown: a quarter of its last chunk, at
/// most [`GROW_AHEAD_MAX`]. Bounded, so disk use stays within twice the data plus a
/// constant; large enough that growth (a fallocate and two fsyncs) rarely stalls a put.
fn grow_ahead(region: &Region) -> usize {
    (region.last_chunk_bytes() / 4).min(GROW_AHEAD_MAX)
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

    /// Stores `embedding` and `content` under `id` and returns the row it occupies. A
    /// record already stored under `id` is superseded. Not durable until [`flush`](Self::flush).
    ///
    /// Errors: [`Error::DimensionMismatch`], [`Error::NonFinite`], [`Error::NormOutOfRange`],
    /// [`Error::EmptyInput`] for an empty id, [`Error::ReadOnly`], [`Error::StorePoisoned`],
    /// and I/O errors (a full disk) when the store must grow.
    pub fn put(&self, id: &str, embedding: &[f32], content: &[u8]) -> Result<RowId> {
        if embedding.len() != self.dim {
            return Err(Error::DimensionMismatch {
                expected: self.dim,
                got: embedding.len(),
            });
        }
        // One pass: a NaN or infinity makes the f64 sum non-finite (finite f32 squares
        // cannot overflow it), and only then is the culprit located.
        let sum_squares = crate::cpu::simd::sum_squares_f64(embedding);
        if !sum_squares.is_finite() {
            if let Some(col) = crate::matrix::first_non_finite(embedding) {
                return Err(Error::NonFinite { row: 0, col });
            }
        }
        let norm = sum_squares.sqrt();
        if norm != 0.0 && !(MIN_NORM..=MAX_NORM).contains(&norm) {
            return Err(Error::NormOutOfRange { row: 0, norm });
        }
        let inv = if norm == 0.0 {
            0.0
        } else {
            (1.0 / norm) as f32
        };
        self.append(STATE_PUT, id, embedding, content, inv)
    }

    /// Deletes `id` by writing a tombstone; returns whether a live record was deleted.
    pub fn delete(&self, id: &str) -> Result<bool> {
        let existed = self.get_row(id).is_some();
        let zeros = vec![0.0f32; self.dim];
        self.append(STATE_TOMBSTONE, id, &zeros, &[], 0.0)?;
        Ok(existed)
    }

    fn check_writable(&self) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly);
        }
        if self.poisoned.load(Ordering::Acquire) {
            let reason = self.poison_reason.lock().clone().unwrap_or_default();
            return Err(Error::StorePoisoned { reason });
        }
        Ok(())
    }

    fn poison(&self, e: &Error) {
        let mut r = self.poison_reason.lock();
        if r.is_none() {
            *r = Some(e.to_string());
        }
        self.poisoned.store(true, Ordering::Release);
    }

    fn append(
        &self,
        state: u32,
        id: &str,
        embedding: &[f32],
        content: &[u8],
        inv_norm: f32,
    ) -> Result<RowId> {
        self.check_writable()?;
        if id.is_empty() {
            return Err(Error::EmptyInput {
                what: "record id is empty",
            });
        }
        let id_len =
            u32::try_from(id.len()).map_err(|_| Error::InvalidConfig("id too long".into()))?;
        let content_len = u32::try_from(content.len())
            .map_err(|_| Error::InvalidConfig("content over 4 GiB".into()))?;
        // The reservations: the only steps writers share.
        let row = self.rows.reserve();
        let blob_bytes = id.len() as u64 + content.len() as u64;
        let off = self.blob_tail.fetch_add(blob_bytes, Ordering::Relaxed);
        // A failure from here on leaves a reserved row that can never be published, so the
        // visible length could not pass it: poison, and let a reopen recover.
        let r = self.ensure_capacity(row, off + blob_bytes);
        if let Err(e) = r {
            self.poison(&e);
            return Err(e);
        }
        let vbytes: &[u8] = bytemuck::cast_slice(embedding);
        let row_bytes = self.dim * 4;
        // SAFETY: `row` was reserved by this thread alone (fetch_add), so no other thread
        // writes its vector bytes, and no reader reads them before the state word below is
        // published; ensure_capacity mapped the chunk holding them.
        unsafe { self.copy_in(&self.vectors, row as usize * row_bytes, vbytes) };
        // SAFETY: `[off, off + blob_bytes)` was reserved by this thread alone, likewise.
        unsafe {
            self.copy_in(&self.blobs, off as usize, id.as_bytes());
            self.copy_in(&self.blobs, off as usize + id.len(), content);
        }
        let crc = format::record_crc(state, inv_norm, vbytes, id.as_bytes(), content);
        self.meta_word(row, 1).store(crc, Ordering::Relaxed);
        self.meta_word(row, 2).store(off as u32, Ordering::Relaxed);
        self.meta_word(row, 3)
            .store((off >> 32) as u32, Ordering::Relaxed);
        self.meta_word(row, 4).store(id_len, Ordering::Relaxed);
        self.meta_word(row, 5).store(content_len, Ordering::Relaxed);
        self.meta_word(row, 6)
            .store(inv_norm.to_bits(), Ordering::Relaxed);
        // Publish: everything above happens-before any reader that sees this state.
        self.meta_word(row, 0).store(state, Ordering::SeqCst);
        self.index_publish(row, id, state);
        self.advance_visible();
        Ok(row)
    }

    /// Moves the visible length over every contiguous published row (see [`watermark`]).
    fn advance_visible(&self) -> u64 {
        if !self.writable {
            // No writers in a read-only handle; rows past the committed ones may hold torn
            // data from before a crash and must never become visible.
            return self.rows.visible.load(Ordering::Acquire);
        }
        self.rows.advance(|row| {
            (row as usize + 1) * META_BYTES <= self.metas.mapped_bytes()
                && self.meta_word(row, 0).load(Ordering::SeqCst) != STATE_EMPTY
        })
    }

    /// Makes sure row `row` and content bytes up to `blob_end` are mapped. Growth starts
    /// once a writer comes within [`grow_ahead`] of a region's end, so its fsyncs rarely
    /// stall a put: one writer grows (`try_lock`) while the others go on writing into
    /// mapped space. Only a writer that finds no room at all waits for the lock. A failure
    /// part-way (say the metadata chunk after the vector chunk) is caught up by the next
    /// call.
    fn ensure_capacity(&self, row: u64, blob_end: u64) -> Result<()> {
        let rows = row as usize + 1;
        let needs = [
            (&self.vectors, rows * self.dim * 4),
            (&self.metas, rows * META_BYTES),
            (&self.blobs, blob_end as usize),
        ];
        if needs
            .iter()
            .all(|(r, need)| r.mapped_bytes() >= need + grow_ahead(r))
        {
            return Ok(());
        }
        let needed = needs.iter().any(|(r, need)| r.mapped_bytes() < *need);
        let _g = if needed {
            self.grow_lock.lock()
        } else {
            match self.grow_lock.try_lock() {
                Some(g) => g,
                None => return Ok(()), // another writer is growing already
            }
        };
        for (region, need) in needs {
            region.grow_to(need + grow_ahead(region))?;
        }
        Ok(())
    }

    /// # Safety
    /// `[at, at + bytes.len())` must lie in mapped chunks of `region`, be written by no
    /// other thread, and be read by none until the record is published.
    unsafe fn copy_in(&self, region: &Region, at: usize, bytes: &[u8]) {
        debug_assert!(at + bytes.len() <= region.mapped_bytes());
        // SAFETY: the caller's contract.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), region.base().add(at), bytes.len())
        };
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

    fn get_row(&self, id: &str) -> Option<RowId> {
        let row = *self.shard(id).read().get(id)?;
        self.live.get(row).then_some(row)
    }

    /// The live record stored under `id`, checksum-verified.
    pub fn get(&self, id: &str) -> Result<Option<Record>> {
        let Some(row) = self.get_row(id) else {
            return Ok(None);
        };
        self.read_record(row).map(Some)
    }

    /// Checks that `row` holds a published record this handle may read: below the rows
    /// reserved in this process (a read-only handle: below its committed rows, since rows
    /// past them may hold torn data from before a crash), mapped, and published.
    fn check_published(&self, row: RowId) -> Result<()> {
        let limit = if self.writable {
            self.rows.next.load(Ordering::Acquire)
        } else {
            self.rows.visible.load(Ordering::Acquire)
        };
        let mapped = (row as usize)
            .checked_add(1)
            .and_then(|r| r.checked_mul(META_BYTES))
            .is_some_and(|e| e <= self.metas.mapped_bytes());
        if row >= limit || !mapped || self.meta_word(row, 0).load(Ordering::Acquire) == STATE_EMPTY
        {
            return Err(Error::NoSuchRow { row });
        }
        Ok(())
    }

    /// The record in `row` (live or not), checksum-verified. [`Error::NoSuchRow`] for a row
    /// that holds no record.
    pub fn read_record(&self, row: RowId) -> Result<Record> {
        self.check_published(row)?;
        // A random row is cold: ask for all of its cache lines at once, so the checksum
        // pass waits for one memory round trip instead of one per line.
        prefetch(bytemuck::cast_slice(self.vector(row)));
        self.validate(row, self.blobs.mapped_bytes() as u64)?;
        let m = self.meta(row);
        Ok(Record {
            id: self.read_id(&m)?,
            row,
            embedding: self.vector(row).to_vec(),
            content: self.blob(m.off + m.id_len as u64, m.content_len).to_vec(),
        })
    }

    /// The id of the record in `row` (bounds-checked, not checksummed: search hits use it).
    pub fn id_of(&self, row: RowId) -> Result<String> {
        self.check_published(row)?;
        let m = self.meta(row);
        let in_bounds = m
            .off
            .checked_add(m.id_len as u64)
            .is_some_and(|e| e <= self.blobs.mapped_bytes() as u64);
        if !in_bounds || m.id_len == 0 {
            let (file, offset) = self.metas.locate(row as usize * META_BYTES);
            return Err(Error::CorruptStore {
                file,
                offset,
                reason: format!(
                    "row {row}: id [{}, +{}) outside the content files",
                    m.off, m.id_len
                ),
            });
        }
        self.read_id(&m)
    }

    /// Makes every put and delete that returned before this call durable. Data is written
    /// back first, the superblock after. On failure the store is poisoned (see
    /// [`Error::StorePoisoned`]) and the last durable state stays intact on disk.
    pub fn flush(&self) -> Result<u64> {
        self.check_writable()?;
        let mut st = self.flush_state.lock();
        let r = self.flush_locked(&mut st);
        if let Err(e) = &r {
            self.poison(e);
        }
        r
    }

    fn flush_locked(&self, st: &mut FlushState) -> Result<u64> {
        // Every put that returned before this call has a row below `target`; rows below it
        // still being written by other threads finish without taking any lock we hold.
        let target = self.rows.next.load(Ordering::SeqCst);
        loop {
            self.advance_visible();
            if self.rows.visible.load(Ordering::SeqCst) >= target {
                break;
            }
            self.check_writable()?; // a writer that failed poisons the store
            std::thread::yield_now();
        }
        let rows = self.rows.visible.load(Ordering::SeqCst);
        if rows == st.rows {
            return Ok(rows);
        }
        let (mut lo, mut hi) = (u64::MAX, st.blob_len);
        for row in st.rows..rows {
            let m = self.meta(row);
            lo = lo.min(m.off);
            hi = hi.max(m.off + m.id_len as u64 + m.content_len as u64);
        }
        let row_bytes = (self.dim * 4) as u64;
        self.vectors
            .sync_range((st.rows * row_bytes) as usize, (rows * row_bytes) as usize)?;
        self.metas
            .sync_range(st.rows as usize * META_BYTES, rows as usize * META_BYTES)?;
        self.blobs.sync_range(lo as usize, hi as usize)?;
        let sb = Superblock {
            generation: st.generation + 1,
            rows,
            blob_len: hi,
        };
        // Never acknowledge into a file the directory no longer names.
        self.check_still_ours()?;
        let slot = format::SLOT_OFFSETS[(sb.generation % 2) as usize];
        self.store_file
            .write_all_at(&sb.encode(), slot as u64)
            .map_err(Error::at(&self.dir.join(format::STORE_FILE)))?;
        sync::file_data(&self.store_file, &self.dir.join(format::STORE_FILE))?;
        *st = FlushState {
            generation: sb.generation,
            rows,
            blob_len: hi,
        };
        self.durable_rows.store(rows, Ordering::Release);
        Ok(rows)
    }

    /// A zero-copy view of the visible rows for searching, with deleted and superseded
    /// rows masked out: their inverse norm is NaN, which no top-k selection accepts, and
    /// their bit in the view's live mask is clear.
    pub fn corpus(&self) -> StoreCorpus<'_> {
        let rows = self.advance_visible() as usize;
        let mut inv_norms = Vec::with_capacity(rows);
        let mut live = vec![0u32; rows.div_ceil(32)];
        // One pass, a 64-row word of live bits at a time: the norms and the mask agree
        // even while other threads delete.
        for (w, pair) in live.chunks_mut(2).enumerate() {
            let row0 = w * 64;
            let valid = (rows - row0).min(64);
            // Rows past the view (puts in flight) are left out of its mask too.
            let bits = self.live.load_word(row0 as u64) & (u64::MAX >> (64 - valid));
            for i in 0..valid {
                let r = (row0 + i) as u64;
                inv_norms.push(if bits & (1 << i) != 0 {
                    // Only the inverse-norm word: this runs once per row per search.
                    f32::from_bits(self.meta_word(r, 6).load(Ordering::Relaxed))
                } else {
                    f32::NAN
                });
            }
            for (h, word) in pair.iter_mut().enumerate() {
                *word = (bits >> (32 * h)) as u32;
            }
        }
        // All live when every row's bit is set (bits past the last row are clear).
        let all_live = live
            .iter()
            .enumerate()
            .all(|(i, &word)| word.count_ones() as usize == (rows - 32 * i).min(32));
        // SAFETY: rows below the visible length are published and never written again, and
        // they lie in mapped chunks, which are contiguous in the reserved range.
        let data = unsafe {
            std::slice::from_raw_parts(self.vectors.base().cast::<f32>(), rows * self.dim)
        };
        StoreCorpus {
            store: self,
            data,
            inv_norms,
            live: (!all_live).then_some(live),
        }
    }
}

/// Hints the CPU to start loading every cache line of `bytes`. Changes nothing else.
#[inline]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: prefetch never faults and has no architectural effect; SSE is part of the
        // x86-64 baseline, and the address lies inside a live slice anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
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

/// The visible rows of a [`WarmStore`] as a searchable corpus.
pub struct StoreCorpus<'s> {
    store: &'s WarmStore,
    data: &'s [f32],
    inv_norms: Vec<f32>,
    /// One bit per row, set for a live row; `None` when every row is live.
    live: Option<Vec<u32>>,
}

impl<'s> StoreCorpus<'s> {
    /// Rows in the view (live or not).
    pub fn rows(&self) -> usize {
        self.inv_norms.len()
    }

    /// Whether row `i` is live (the latest put of its id).
    pub fn is_live(&self, i: usize) -> bool {
        !self.inv_norms[i].is_nan()
    }

    /// The store the view reads.
    pub fn store(&self) -> &'s WarmStore {
        self.store
    }

    /// The view for the backends; `None` when the store has no visible rows.
    pub fn view(&self) -> Option<CorpusView<'_>> {
        let m = MatrixRef::new(self.data, self.rows(), self.store.dim).ok()?;
        Some(CorpusView::from_parts(
            m,
            &self.inv_norms,
            self.live.as_deref(),
            Origin::Store(self.store.identity),
        ))
    }
}

/// One bit per row in an anonymous mapping sized for the store's maximum: pages are
/// zero until touched, so it never needs to grow (and never moves).
struct LiveBits {
    words: *mut AtomicU64,
    len: usize,
}

// SAFETY: all access is through atomics; the mapping lives as long as the value.
unsafe impl Send for LiveBits {}
// SAFETY: as above.
unsafe impl Sync for LiveBits {}

impl LiveBits {
    fn new(rows: usize) -> Result<Self> {
        let len = rows.div_ceil(64).max(1);
        // SAFETY: a fresh anonymous mapping; MAP_NORESERVE commits pages only when touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::Io(std::io::Error::last_os_error()));
        }
        Ok(Self {
            words: p.cast(),
            len,
        })
    }

    fn word(&self, row: u64) -> (&AtomicU64, u64) {
        let i = (row / 64) as usize;
        assert!(i < self.len);
        // SAFETY: in bounds (asserted) of our mapping, which is zero-initialised and 8-aligned.
        (unsafe { &*self.words.add(i) }, 1u64 << (row % 64))
    }

    fn get(&self, row: u64) -> bool {
        let (w, bit) = self.word(row);
        w.load(Ordering::Acquire) & bit != 0
    }

    /// The 64 bits of rows `row - row % 64 ..`, bit i for row `row - row % 64 + i`.
    fn load_word(&self, row: u64) -> u64 {
        self.word(row).0.load(Ordering::Acquire)
    }

    fn set(&self, row: u64) {
        let (w, bit) = self.word(row);
        w.fetch_or(bit, Ordering::AcqRel);
    }

    /// Clears the bit; returns whether it was set.
    fn clear(&self, row: u64) -> bool {
        let (w, bit) = self.word(row);
        w.fetch_and(!bit, Ordering::AcqRel) & bit != 0
    }
}

impl Drop for LiveBits {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no references outlive `self`.
        unsafe {
            libc::munmap(self.words.cast(), self.len * 8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{StoreConfig, WarmStore};
    use crate::data;

    #[test]
    fn the_view_mask_agrees_with_the_norms_across_word_boundaries() {
        let dir = std::env::temp_dir().join(format!("hybridvec-mask-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = StoreConfig {
            dim: 4,
            first_chunk_bytes: 4096,
            max_chunk_bytes: 8192,
        };
        let s = WarmStore::create(&dir, config).unwrap();
        for i in 0..200u64 {
            s.put(&format!("id-{i}"), &data::random_vec(4, 7, i), b"")
                .unwrap();
        }
        assert!(s.corpus().view().unwrap().live_mask().is_none());
        for i in [0, 31, 32, 63, 64, 130, 199] {
            assert!(s.delete(&format!("id-{i}")).unwrap());
        }
        // A supersede masks the old row and appends a live one.
        s.put("id-5", &data::random_vec(4, 8, 5), b"").unwrap();
        let corpus = s.corpus();
        let view = corpus.view().unwrap();
        let mask = view.live_mask().expect("rows were deleted");
        // 200 puts, 7 tombstones, the new id-5.
        assert_eq!((view.rows(), mask.len()), (208, 7));
        let mut masked = Vec::new();
        for r in 0..208 {
            let bit = mask[r / 32] >> (r % 32) & 1 == 1;
            assert_eq!(bit, corpus.is_live(r), "row {r}");
            assert_eq!(bit, !view.inv_norms()[r].is_nan(), "row {r}");
            if !bit {
                masked.push(r);
            }
        }
        let tombstones = 200..207;
        let want: Vec<usize> = [0, 5, 31, 32, 63, 64, 130, 199]
            .into_iter()
            .chain(tombstones)
            .collect();
        assert_eq!(masked, want);
        assert_eq!(mask[6] >> 16, 0, "no bits past the last row");
        drop(corpus);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

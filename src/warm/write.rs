//! Writing: `put` and `delete` (reserve, copy, publish), growth of the chunk files, and
//! `flush` (data first, the superblock after). See the module docs of [`super`] for the
//! protocol.

use super::format::{self, Superblock, META_BYTES, STATE_EMPTY, STATE_PUT, STATE_TOMBSTONE};
use super::region::Region;
use super::{sync, FlushState, RowId, WarmStore};
use crate::error::{Error, Result};
use crate::matrix::{MAX_NORM, MIN_NORM};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

/// The most a region is grown ahead of the bytes writers have reserved.
const GROW_AHEAD_MAX: usize = 1 << 20;

/// How far ahead of what writers need `region` is grown: a quarter of its last chunk, at
/// most [`GROW_AHEAD_MAX`]. Bounded, so disk use stays within twice the data plus a
/// constant; large enough that growth (a fallocate and two fsyncs) rarely stalls a put.
fn grow_ahead(region: &Region) -> usize {
    (region.last_chunk_bytes() / 4).min(GROW_AHEAD_MAX)
}

impl WarmStore {
    /// Stores `embedding` and `content` under `id` and returns the row it occupies. A
    /// record already stored under `id` is superseded. Not durable until [`flush`](Self::flush).
    ///
    /// Errors: [`Error::DimensionMismatch`], [`Error::NonFinite`], [`Error::NormOutOfRange`],
    /// [`Error::EmptyInput`] for an empty id, [`Error::ReadOnly`], [`Error::StorePoisoned`],
    /// and I/O errors (a full disk) when the store must grow; for a 16-bit store,
    /// [`Error::NotRepresentable`] for a value that rounds to infinity (f16 holds up to
    /// ±65 504). A 16-bit store keeps each value rounded to nearest (ties to even).
    pub fn put(&self, id: &str, embedding: &[f32], content: &[u8]) -> Result<RowId> {
        if embedding.len() != self.dim {
            return Err(Error::DimensionMismatch {
                expected: self.dim,
                got: embedding.len(),
            });
        }
        // The norm is the stored row's: the rounded values for a 16-bit store.
        let bits;
        let (vbytes, sum_squares): (&[u8], f64) = match self.element.half() {
            None => {
                // One pass: a NaN or infinity makes the f64 sum non-finite (finite f32
                // squares cannot overflow it), and only then is the culprit located.
                let sum_squares = crate::simd::sum_squares_f64(embedding);
                if !sum_squares.is_finite() {
                    if let Some(col) = crate::matrix::first_non_finite(embedding) {
                        return Err(Error::NonFinite { row: 0, col });
                    }
                }
                (bytemuck::cast_slice(embedding), sum_squares)
            }
            Some(half) => {
                bits = crate::elem::encode(half, embedding, self.dim)?;
                let mut wide = vec![0.0f32; self.dim];
                half.decode(&bits, &mut wide);
                (
                    bytemuck::cast_slice(&bits),
                    crate::simd::sum_squares_f64(&wide),
                )
            }
        };
        let norm = sum_squares.sqrt();
        if norm != 0.0 && !(MIN_NORM..=MAX_NORM).contains(&norm) {
            return Err(Error::NormOutOfRange { row: 0, norm });
        }
        let inv = if norm == 0.0 {
            0.0
        } else {
            (1.0 / norm) as f32
        };
        self.append(STATE_PUT, id, vbytes, content, inv)
    }

    /// Deletes `id` by writing a tombstone; returns whether a live record was deleted.
    pub fn delete(&self, id: &str) -> Result<bool> {
        let existed = self.get_row(id).is_some();
        let zeros = vec![0u8; self.row_bytes];
        self.append(STATE_TOMBSTONE, id, &zeros, &[], 0.0)?;
        Ok(existed)
    }

    pub(super) fn check_writable(&self) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly);
        }
        if self.poisoned.load(Ordering::Acquire) {
            let reason = self.poison_reason.lock().clone().unwrap_or_default();
            return Err(Error::StorePoisoned { reason });
        }
        Ok(())
    }

    pub(super) fn poison(&self, e: &Error) {
        let mut r = self.poison_reason.lock();
        if r.is_none() {
            *r = Some(e.to_string());
        }
        self.poisoned.store(true, Ordering::Release);
    }

    pub(super) fn append(
        &self,
        state: u32,
        id: &str,
        vbytes: &[u8],
        content: &[u8],
        inv_norm: f32,
    ) -> Result<RowId> {
        debug_assert_eq!(vbytes.len(), self.row_bytes);
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
        let row_bytes = self.row_bytes;
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
        if let Some(tier) = &self.tier {
            let mut buf = vec![0.0f32; self.dim];
            // SAFETY: `row` is this thread's alone and unpublished; ensure_capacity mapped
            // its tier entry.
            unsafe { self.write_tier_row(tier, row, vbytes, crc, &mut buf) };
        }
        // Publish: everything above happens-before any reader that sees this state.
        self.meta_word(row, 0).store(state, Ordering::SeqCst);
        self.index_publish(row, id, state);
        self.advance_visible();
        Ok(row)
    }

    /// Moves the visible length over every contiguous published row (see `watermark`).
    pub(super) fn advance_visible(&self) -> u64 {
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
    pub(super) fn ensure_capacity(&self, row: u64, blob_end: u64) -> Result<()> {
        let rows = row as usize + 1;
        let tier = self.tier.as_ref().map(|t| t.extents(rows, self.dim));
        let needs = [
            (&self.vectors, rows * self.row_bytes),
            (&self.metas, rows * META_BYTES),
            (&self.blobs, blob_end as usize),
        ];
        let needs = || needs.iter().chain(tier.iter().flatten());
        if needs().all(|(r, need)| r.mapped_bytes() >= need + grow_ahead(r)) {
            return Ok(());
        }
        let needed = needs().any(|(r, need)| r.mapped_bytes() < *need);
        let _g = if needed {
            self.grow_lock.lock()
        } else {
            match self.grow_lock.try_lock() {
                Some(g) => g,
                None => return Ok(()), // another writer is growing already
            }
        };
        for (region, need) in needs() {
            region.grow_to(need + grow_ahead(region))?;
        }
        Ok(())
    }

    /// # Safety
    /// `[at, at + bytes.len())` must lie in mapped chunks of `region`, be written by no
    /// other thread, and be read by none until the record is published.
    pub(super) unsafe fn copy_in(&self, region: &Region, at: usize, bytes: &[u8]) {
        debug_assert!(at + bytes.len() <= region.mapped_bytes());
        // SAFETY: the caller's contract.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), region.base().add(at), bytes.len())
        };
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

    pub(super) fn flush_locked(&self, st: &mut FlushState) -> Result<u64> {
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
        let row_bytes = self.row_bytes as u64;
        self.vectors
            .sync_range((st.rows * row_bytes) as usize, (rows * row_bytes) as usize)?;
        self.metas
            .sync_range(st.rows as usize * META_BYTES, rows as usize * META_BYTES)?;
        self.blobs.sync_range(lo as usize, hi as usize)?;
        if let Some(tier) = &self.tier {
            let old = tier.extents(st.rows as usize, self.dim);
            for ((region, from), (_, to)) in
                old.into_iter().zip(tier.extents(rows as usize, self.dim))
            {
                region.sync_range(from, to)?;
            }
        }
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
}

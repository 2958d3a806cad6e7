//! Reading: records by id or row (checksum-verified) and the zero-copy corpus view that
//! searches read in place.

use super::format::{META_BYTES, STATE_EMPTY};
use super::{Record, RowId, WarmStore};
use crate::corpus::{CorpusView, Origin};
use crate::elem::Half;
use crate::error::{Error, Result};
use crate::matrix::MatrixRef;
use crate::quant::tier::TierRef;
use std::sync::atomic::Ordering;

impl WarmStore {
    pub(super) fn get_row(&self, id: &str) -> Option<RowId> {
        let row = self.index.row_of(id)?;
        self.live.get(row).then_some(row)
    }

    /// The row of the live record stored under `id`, or `None` when no live record has
    /// that id.
    pub fn row_of(&self, id: &str) -> Option<RowId> {
        self.get_row(id)
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
    pub(super) fn check_published(&self, row: RowId) -> Result<()> {
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
        crate::mem::prefetch(self.vector_bytes(row));
        self.validate(row, self.blobs.mapped_bytes() as u64)?;
        let m = self.meta(row);
        Ok(Record {
            id: self.read_id(&m)?,
            row,
            embedding: self.embedding(row),
            content: self.blob(m.off + m.id_len as u64, m.content_len).to_vec(),
        })
    }

    /// The stored bytes of the vector in `row` (live or not), checksum-verified: `dim`
    /// values of the store's [`element_type`](Self::element_type), in this machine's byte
    /// order (little-endian on every platform the store runs on). [`Error::NoSuchRow`]
    /// for a row that holds no record.
    pub fn read_raw(&self, row: RowId) -> Result<Vec<u8>> {
        self.check_published(row)?;
        self.validate(row, self.blobs.mapped_bytes() as u64)?;
        Ok(self.vector_bytes(row).to_vec())
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
        // they lie in mapped chunks, which are contiguous in the reserved range; the base
        // is page-aligned, so aligned for f32 and u16.
        let data = unsafe {
            let base = self.vectors.base();
            match self.element.half() {
                None => StoredRows::F32(std::slice::from_raw_parts(
                    base.cast::<f32>(),
                    rows * self.dim,
                )),
                Some(half) => StoredRows::Half(
                    std::slice::from_raw_parts(base.cast::<u16>(), rows * self.dim),
                    half,
                ),
            }
        };
        StoreCorpus {
            store: self,
            tier: self.tier_view(rows),
            data,
            inv_norms,
            live: (!all_live).then_some(live),
            decoded: std::sync::OnceLock::new(),
        }
    }
}

/// The rows a [`StoreCorpus`] reads in place.
enum StoredRows<'s> {
    F32(&'s [f32]),
    Half(&'s [u16], Half),
}

/// The visible rows of a [`WarmStore`] as a searchable corpus.
pub struct StoreCorpus<'s> {
    store: &'s WarmStore,
    /// The int8 tier of the rows, when the store has one.
    tier: Option<TierRef<'s>>,
    data: StoredRows<'s>,
    /// A 16-bit store's rows widened, made only if [`CorpusView::matrix`] is called.
    decoded: std::sync::OnceLock<Vec<f32>>,
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
        let origin = Origin::Store(self.store.identity);
        match self.data {
            StoredRows::F32(data) => {
                let m = MatrixRef::new(data, self.rows(), self.store.dim).ok()?;
                Some(
                    CorpusView::from_parts(m, &self.inv_norms, self.live.as_deref(), origin)
                        .with_int8_tier(self.tier),
                )
            }
            StoredRows::Half(bits, half) => (self.rows() > 0).then(|| {
                CorpusView::from_half_parts(
                    (bits, half, &self.decoded),
                    self.store.dim,
                    &self.inv_norms,
                    self.live.as_deref(),
                    origin,
                )
                .with_int8_tier(self.tier)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::data;
    use crate::warm::{StoreConfig, WarmStore};

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

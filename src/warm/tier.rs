//! The store's int8 scan tier: every row's int8 codes and bounds (`quant::int8`) kept in
//! files beside the vectors, so that a certified search scans a quarter of an f32 row's
//! bytes per row and reads from the vector files only the candidates it re-scores.
//!
//! ```text
//! tier.hv               magic "HVTIER8\0", version u32 (1), dim u32, first_chunk_bytes u64,
//!                       max_chunk_bytes u64, crc32c u32 (over the bytes before it)
//! i8code-NNNNNN.chunk   row r's dim codes at r·dim (a row may straddle two files)
//! i8bound-NNNNNN.chunk  row r's 32 bytes at 32·r: scale, residual bound, norm bound and
//!                       coded-norm bound (f32), check u32, three reserved words (zero)
//! ```
//! The chunk files double in size as the store's other regions do (`format`).
//!
//! **Building.** [`WarmStore::build_int8_tier`] quantises every row on all cores into
//! fresh chunk files, writes them back, and only then puts `tier.hv` in place (temporary
//! name, fsync, rename, fsync of the directory). A crash before that leaves no `tier.hv`,
//! and the store opens untiered, as it was.
//!
//! **Writes.** Once a store has a tier, `put` and `delete` write the row's codes and
//! bounds before they publish the record, and `flush` writes them back with the vectors,
//! before the superblock: every row a superblock commits, the tier covers durably.
//!
//! **Checks.** A row's check word is a CRC-32C over its record's checksum, its bounds and
//! its codes. It fails for torn or damaged tier bytes, and for codes left over from an
//! earlier record of the same row (a torn tail's). The tier is derived from the vectors,
//! so damage to it costs time, never data: an open checks every committed row; a writer
//! re-quantises the rows that fail from their checksum-verified vectors (the whole tier
//! when `tier.hv` or a chunk file is damaged) and writes them back before the open
//! returns; a read-only handle searches without the tier (exactly, only slower).
//! [`WarmStore::int8_tier_damage`] says what an open found.
//!
//! When not to use a tier: for a store searched mostly by large batches on a CPU without
//! AVX-512 VNNI (the certified scan then serves up to
//! [`CERTIFIED_MAX_QUERIES`](crate::CERTIFIED_MAX_QUERIES) queries a call), mostly with
//! filters (which scan in full), or written far more often than searched: each put
//! quantises its row (ingest ran 19% slower at 768 dimensions) and the tier adds
//! `dim + 32` bytes a row on disk.

use super::format::ChunkSizes;
use super::region::Region;
use super::{sync, RowId, WarmStore};
use crate::error::{Error, Result};
use crate::quant::int8::{quantise, Quantised};
use crate::quant::tier::{TierBounds, TierRef};
use rayon::prelude::*;
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering;

/// The file whose presence says the store has a tier.
pub(super) const TIER_FILE: &str = "tier.hv";
const TIER_MAGIC: &[u8; 8] = b"HVTIER8\0";
const TIER_VERSION: u32 = 1;
const CODE_PREFIX: &str = "i8code";
const BOUND_PREFIX: &str = "i8bound";
const BOUNDS_BYTES: usize = std::mem::size_of::<TierBounds>();

/// What an open found wrong with a store's int8 tier. Nothing stored is lost: the tier is
/// derived from the vectors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierDamage {
    /// Committed rows whose tier entries failed their checks (every row when `tier.hv`
    /// or a tier chunk file was damaged or missing).
    pub rows: u64,
    /// The first problem found: file and reason.
    pub reason: String,
    /// True when this (writable) handle rebuilt the damaged entries and kept the tier;
    /// false when a read-only handle searches without it.
    pub rebuilt: bool,
}

/// A store's tier files, mapped.
pub(super) struct StoreTier {
    codes: Region,
    bounds: Region,
}

/// The contents of `tier.hv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TierHeader {
    dim: u32,
    first: u64,
    max: u64,
}

impl TierHeader {
    fn encode(&self) -> [u8; 36] {
        let mut b = [0u8; 36];
        b[..8].copy_from_slice(TIER_MAGIC);
        b[8..12].copy_from_slice(&TIER_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.dim.to_le_bytes());
        b[16..24].copy_from_slice(&self.first.to_le_bytes());
        b[24..32].copy_from_slice(&self.max.to_le_bytes());
        let crc = crc32c::crc32c(&b[..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// The header in `b`, or why it is not one for a store of dimension `dim`.
    fn decode(b: &[u8], dim: usize) -> std::result::Result<Self, String> {
        if b.len() != 36 {
            return Err(format!("{} bytes, expected 36", b.len()));
        }
        if &b[..8] != TIER_MAGIC {
            return Err("bad magic".into());
        }
        let word = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let long = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        if crc32c::crc32c(&b[..32]) != word(32) {
            return Err("checksum mismatch".into());
        }
        if word(8) != TIER_VERSION {
            return Err(format!("unsupported tier version {}", word(8)));
        }
        let h = TierHeader {
            dim: word(12),
            first: long(16),
            max: long(24),
        };
        if h.dim as usize != dim {
            return Err(format!("dimension {} but the store's is {dim}", h.dim));
        }
        let ok = |v: u64| {
            v.is_power_of_two()
                && (super::format::MIN_CHUNK_BYTES..=super::format::MAX_CHUNK_BYTES).contains(&v)
        };
        if !ok(h.first) || !ok(h.max) || h.first > h.max {
            return Err(format!("implausible chunk sizes {} and {}", h.first, h.max));
        }
        Ok(h)
    }

    fn sizes(&self) -> ChunkSizes {
        ChunkSizes::Doubling {
            first: self.first as usize,
            max: self.max as usize,
        }
    }
}

/// A row's check word: over its record's checksum, its bounds and its codes.
fn tier_check(record_crc: u32, q: &Quantised, codes: &[i8]) -> u32 {
    let mut head = [0u8; 20];
    head[..4].copy_from_slice(&record_crc.to_le_bytes());
    for (i, v) in [q.scale, q.residual, q.norm, q.coded_norm]
        .into_iter()
        .enumerate()
    {
        head[4 + 4 * i..8 + 4 * i].copy_from_slice(&v.to_bits().to_le_bytes());
    }
    let c = crc32c::crc32c(&head);
    crc32c::crc32c_append(c, bytemuck::cast_slice(codes))
}

impl StoreTier {
    /// Reserves the tier's regions for up to `max_rows` rows of `dim` codes.
    fn reserve(
        dir: &Path,
        sizes: ChunkSizes,
        dim: usize,
        max_rows: usize,
        writable: bool,
    ) -> Result<Self> {
        let codes =
            Region::reserve(dir, CODE_PREFIX, sizes, max_rows * dim, writable)?.with_huge_pages();
        let bounds = Region::reserve(dir, BOUND_PREFIX, sizes, max_rows * BOUNDS_BYTES, writable)?;
        Ok(Self { codes, bounds })
    }

    /// The regions, and the bytes of each that `rows` rows of `dim` codes fill.
    pub(super) fn extents(&self, rows: usize, dim: usize) -> [(&Region, usize); 2] {
        [
            (&self.codes, rows * dim),
            (&self.bounds, rows * BOUNDS_BYTES),
        ]
    }

    /// Row `row`'s bounds, which must be mapped.
    fn bounds_of(&self, row: usize) -> TierBounds {
        assert!((row + 1) * BOUNDS_BYTES <= self.bounds.mapped_bytes());
        // SAFETY: in bounds of mapped chunks (asserted), aligned (page-aligned base, 32-byte
        // records), and any bit pattern is a valid `TierBounds`; an unaligned-free plain
        // read of a row no other thread writes (written before publication, or at open).
        unsafe {
            self.bounds
                .base()
                .add(row * BOUNDS_BYTES)
                .cast::<TierBounds>()
                .read()
        }
    }

    /// Row `row`'s codes, which must be mapped.
    fn codes_of(&self, row: usize, dim: usize) -> &[i8] {
        assert!((row + 1) * dim <= self.codes.mapped_bytes());
        // SAFETY: in bounds (asserted); the row is not being written (as above).
        unsafe { std::slice::from_raw_parts(self.codes.base().add(row * dim).cast(), dim) }
    }
}

impl WarmStore {
    /// Whether searches of this store scan its int8 tier first (see
    /// [`build_int8_tier`](Self::build_int8_tier)).
    pub fn has_int8_tier(&self) -> bool {
        self.tier.is_some()
    }

    /// What the open found wrong with the store's int8 tier, if anything: entries a
    /// writer rebuilt, or damage for which a read-only handle searches without the tier.
    pub fn int8_tier_damage(&self) -> Option<&TierDamage> {
        self.tier_damage.as_ref()
    }

    /// Builds the store's int8 scan tier, and keeps it from then on: every row also as
    /// int8 codes with certified bounds, in files beside the vectors (`dim + 32` bytes a
    /// row), built on all cores and durable when this returns. Unfiltered top-k searches
    /// on the CPU (any metric; batches past
    /// [`CERTIFIED_MAX_QUERIES`](crate::CERTIFIED_MAX_QUERIES) queries where the CPU has
    /// AVX-512 VNNI) then scan the codes and re-score with the f32 kernels only the rows that can be in
    /// the top-k: the answers are the full scan's, bit for bit
    /// ([`Corpus::with_int8_tier`](crate::Corpus::with_int8_tier) explains the
    /// certificate). A store that has a tier already keeps it.
    ///
    /// Crash-safe: the tier counts only once it covers every row durably, so a crash
    /// part-way leaves the store as it was (and the next writer's open removes the partial
    /// files). Errors: [`Error::ReadOnly`], [`Error::StorePoisoned`], and I/O errors (a
    /// full disk, naming the file), which leave the store untiered and usable, its partial
    /// tier files removed.
    ///
    /// ```
    /// use hybridvec::{data, StoreConfig, WarmStore};
    /// # let dir = std::env::temp_dir().join(format!("hv-doc-tier-{}", std::process::id()));
    /// let mut store = WarmStore::create(&dir, StoreConfig::new(64))?;
    /// store.build_int8_tier()?; // on an empty store: every put keeps the tier up to date
    /// for i in 0..1000 {
    ///     store.put(&format!("id-{i}"), &data::random_vec(64, 7, i), b"")?;
    /// }
    /// store.flush()?;
    /// assert!(store.has_int8_tier());
    /// # drop(store); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), hybridvec::Error>(())
    /// ```
    pub fn build_int8_tier(&mut self) -> Result<()> {
        self.check_writable()?;
        if self.tier.is_some() {
            return Ok(());
        }
        // No put is in flight (`&mut self`): every reserved row is published.
        let rows = self.advance_visible() as usize;
        match self.build_tier(rows) {
            Ok(tier) => {
                self.tier = Some(tier);
                Ok(())
            }
            Err(e) => {
                // Give the space back (a full disk is the likely cause); best effort, as a
                // later writer's open clears what is left.
                let _ = remove_tier_files(&self.dir);
                Err(e)
            }
        }
    }

    /// The chunk sizes of a new tier: the store's own, or the defaults for a version-1
    /// store (fixed chunks).
    fn tier_header(&self) -> TierHeader {
        let (first, max) = match self.vectors.sizes() {
            ChunkSizes::Doubling { first, max } => (first as u64, max as u64),
            ChunkSizes::Fixed(_) => (64 << 10, 1 << 30),
        };
        TierHeader {
            dim: self.dim as u32,
            first,
            max,
        }
    }

    /// Writes a tier for rows `0..rows` into fresh chunk files and commits it with
    /// `tier.hv`; any earlier tier files are removed first (`tier.hv` before its chunks).
    fn build_tier(&self, rows: usize) -> Result<StoreTier> {
        remove_tier_files(&self.dir)?;
        let header = self.tier_header();
        let tier = StoreTier::reserve(&self.dir, header.sizes(), self.dim, self.max_rows, true)?;
        for (region, bytes) in tier.extents(rows, self.dim) {
            region.grow_to(bytes)?;
        }
        self.write_tier_rows(&tier, (0..rows).into_par_iter());
        for (region, bytes) in tier.extents(rows, self.dim) {
            region.sync_range(0, bytes)?;
        }
        sync::replace_file(&self.dir, TIER_FILE, &header.encode())?;
        Ok(tier)
    }

    /// Quantises `rows` (mapped, each written by no other thread) into `tier`, in parallel.
    fn write_tier_rows(&self, tier: &StoreTier, rows: impl ParallelIterator<Item = usize>) {
        rows.for_each_init(
            || vec![0.0f32; self.dim],
            |buf, r| {
                let crc = self.meta_word(r as u64, 1).load(Ordering::Acquire);
                // SAFETY: the caller's contract: row `r` is mapped in both regions and no
                // other thread writes it; readers read it only once the tier is in use.
                unsafe {
                    self.write_tier_row(tier, r as u64, self.vector_bytes(r as u64), crc, buf)
                };
            },
        );
    }

    /// Quantises the stored row `vbytes` (of record checksum `record_crc`) into row `row`
    /// of `tier`, widening it through `buf` (`dim` values).
    ///
    /// # Safety
    /// Row `row` must lie in mapped chunks of both tier regions, be written by no other
    /// thread, and be read by none until this returns and the row is published.
    pub(super) unsafe fn write_tier_row(
        &self,
        tier: &StoreTier,
        row: RowId,
        vbytes: &[u8],
        record_crc: u32,
        buf: &mut [f32],
    ) {
        let (row, dim) = (row as usize, self.dim);
        self.widen_row(vbytes, buf);
        debug_assert!((row + 1) * dim <= tier.codes.mapped_bytes());
        // SAFETY: the caller's contract: these bytes are mapped and ours alone.
        let codes: &mut [i8] =
            unsafe { std::slice::from_raw_parts_mut(tier.codes.base().add(row * dim).cast(), dim) };
        // A damaged vector (left out of searches) may hold anything; the tier needs
        // finite values, and the row is never a candidate.
        let q = if buf.iter().all(|v| v.is_finite()) {
            quantise(buf, codes)
        } else {
            codes.fill(0);
            quantise(&[], &mut [])
        };
        let mut bounds = TierBounds::new(q);
        bounds.check = tier_check(record_crc, &q, codes);
        // SAFETY: as above.
        unsafe {
            self.copy_in(
                &tier.bounds,
                row * BOUNDS_BYTES,
                bytemuck::bytes_of(&bounds),
            )
        };
    }

    /// The stored row `vbytes` as f32 values in `out`.
    fn widen_row(&self, vbytes: &[u8], out: &mut [f32]) {
        match (
            self.element.half(),
            bytemuck::try_cast_slice::<u8, u16>(vbytes),
        ) {
            (None, _) => {
                for (o, b) in out.iter_mut().zip(vbytes.chunks_exact(4)) {
                    *o = f32::from_ne_bytes(b.try_into().expect("4 bytes"));
                }
            }
            (Some(half), Ok(bits)) => half.decode(bits, out),
            (Some(half), Err(_)) => {
                for (o, b) in out.iter_mut().zip(vbytes.chunks_exact(2)) {
                    *o = half.to_f32(u16::from_ne_bytes([b[0], b[1]]));
                }
            }
        }
    }

    /// Whether row `row`'s tier entry passes its check against its record.
    fn tier_row_ok(&self, tier: &StoreTier, row: usize) -> bool {
        let b = tier.bounds_of(row);
        let crc = self.meta_word(row as u64, 1).load(Ordering::Acquire);
        b.reserved == [0; 3] && tier_check(crc, &b.q, tier.codes_of(row, self.dim)) == b.check
    }

    /// Opens the tier of a store whose `rows` committed records have been verified (those
    /// left out are in `self.quarantined`), checking every row's entry; see the module
    /// docs for what is done about damage.
    pub(super) fn open_tier(&mut self, rows: usize) -> Result<()> {
        let path = self.dir.join(TIER_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A writer clears what a build cut short left (harmless, but disk space).
                if self.writable {
                    if let Err(e) = remove_tier_files(&self.dir) {
                        tracing::warn!("leaving stray int8 tier files: {e}");
                    }
                }
                return Ok(());
            }
            Err(e) => return Err(Error::at(&path)(e)),
        };
        let whole = |reason: String| TierDamage {
            rows: rows as u64,
            reason,
            rebuilt: false,
        };
        let damage = match TierHeader::decode(&bytes, self.dim) {
            Err(reason) => whole(format!("{}: {reason}", path.display())),
            Ok(header) => {
                let tier = StoreTier::reserve(
                    &self.dir,
                    header.sizes(),
                    self.dim,
                    self.max_rows,
                    self.writable,
                )?;
                let mut replaced = Vec::new();
                for (region, bytes) in tier.extents(rows, self.dim) {
                    replaced.extend(region.map_existing(region.chunks_for(bytes), true)?);
                }
                let left_out: HashSet<RowId> = self.quarantined.iter().map(|d| d.row).collect();
                let bad: Vec<usize> = (0..rows)
                    .into_par_iter()
                    .filter(|&r| !left_out.contains(&(r as u64)) && !self.tier_row_ok(&tier, r))
                    .collect();
                match bad.first() {
                    None => {
                        self.tier = Some(tier);
                        return Ok(());
                    }
                    Some(&first) => {
                        let reason = replaced.into_iter().next().unwrap_or_else(|| {
                            let (file, offset) = tier.codes.locate(first * self.dim);
                            format!(
                                "row {first}: tier entry fails its check ({} at {offset}, or its bounds)",
                                file.display()
                            )
                        });
                        if self.writable {
                            self.write_tier_rows(&tier, bad.par_iter().copied());
                            for (region, bytes) in tier.extents(rows, self.dim) {
                                region.sync_range(0, bytes)?;
                            }
                            self.tier = Some(tier);
                            self.tier_damage = Some(TierDamage {
                                rows: bad.len() as u64,
                                reason,
                                rebuilt: true,
                            });
                            tracing::warn!("int8 tier: rebuilt {} damaged entries", bad.len());
                            return Ok(());
                        }
                        TierDamage {
                            rows: bad.len() as u64,
                            reason,
                            rebuilt: false,
                        }
                    }
                }
            }
        };
        if self.writable {
            self.tier = Some(self.build_tier(rows)?);
            self.tier_damage = Some(TierDamage {
                rebuilt: true,
                ..damage
            });
            tracing::warn!("int8 tier rebuilt whole");
        } else {
            tracing::warn!("int8 tier not used: {}", damage.reason);
            self.tier_damage = Some(damage);
        }
        Ok(())
    }

    /// The tier of the first `rows` rows, for searching.
    pub(super) fn tier_view(&self, rows: usize) -> Option<TierRef<'_>> {
        let tier = self.tier.as_ref()?;
        let dim = self.dim;
        assert!(
            rows * dim <= tier.codes.mapped_bytes()
                && rows * BOUNDS_BYTES <= tier.bounds.mapped_bytes()
        );
        // SAFETY: in bounds of mapped chunks (asserted), which are contiguous in each
        // region's reservation; the entries of published rows are never written again
        // while the store is shared; the bases are page-aligned, so aligned for
        // `TierBounds`, and any bit pattern is a valid one.
        unsafe {
            let codes = std::slice::from_raw_parts(tier.codes.base().cast::<i8>(), rows * dim);
            let bounds = std::slice::from_raw_parts(tier.bounds.base().cast::<TierBounds>(), rows);
            Some(TierRef::new(dim, codes, bounds))
        }
    }
}

/// Removes a tier's files: `tier.hv` first (durably), so no crash leaves it beside
/// partial chunk files, then the chunk files and any temporary ones.
fn remove_tier_files(dir: &Path) -> Result<()> {
    let marker = dir.join(TIER_FILE);
    match std::fs::remove_file(&marker) {
        Ok(()) => sync::dir(dir)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::at(&marker)(e)),
    }
    for entry in std::fs::read_dir(dir).map_err(Error::at(dir))? {
        let entry = entry.map_err(Error::at(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = name == format!(".{TIER_FILE}.tmp")
            || [CODE_PREFIX, BOUND_PREFIX]
                .iter()
                .any(|p| name.starts_with(&format!("{p}-")) || name.starts_with(&format!(".{p}-")));
        if ours {
            std::fs::remove_file(entry.path()).map_err(Error::at(&entry.path()))?;
        }
    }
    Ok(())
}

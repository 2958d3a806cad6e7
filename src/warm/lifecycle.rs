//! Creating, opening and recovering a store, and the writer's exclusive hold on it.
//!
//! **One writer.** A writer holds two `flock`s: on `LOCK` (what older builds take) and on
//! `store.hv` itself. The second survives a deleted `LOCK` file: a writer that comes after
//! the deletion makes a new `LOCK` and locks it, but still finds `store.hv` locked.
//!
//! **Exclusive creation.** `create` takes `LOCK`, writes the new store file whole under a
//! name no other process uses, locks that file, and only then gives it the name
//! `store.hv` with `link`, which fails rather than replace an existing name. Of two
//! processes creating the same store, exactly one wins; the other gets
//! [`Error::StoreLocked`] or [`Error::StoreExists`], and the store is born locked by its
//! creator. (The older scheme checked for `store.hv`, wrote a fixed temporary name and
//! renamed it over `store.hv`: a late creator replaced the winner's file, and the winner
//! went on acknowledging flushes into a file that no longer had a name.)
//!
//! The locks belong to the open file, so a child process holds them too from its fork
//! until its exec closes the (close-on-exec) descriptors. A program that spawns processes
//! while it opens and closes stores can therefore see a brief [`Error::StoreLocked`] on a
//! reopen: retry it.
//!
//! **The file stays the file.** A writer records the identity (device, inode) of the
//! `store.hv` it holds. Each flush checks that the directory still names that file before
//! it acknowledges anything; a store whose file was replaced or removed is poisoned with
//! [`Error::StoreReplaced`].

use super::format::{self, Header, Layout, Superblock, META_BYTES, STATE_EMPTY};
use super::index::IdIndex;
use super::live::LiveBits;
use super::region::Region;
use super::salvage::{self, DamagedRecord, Quarantine, Recovery};
use super::watermark::Watermark;
use super::RowId;
use super::{
    sync, vectors_capacity_rows, FlushState, StoreConfig, WarmStore, CONTENT_SPACE, VECTOR_SPACE,
};
use crate::corpus::next_identity;
use crate::elem::ElementType;
use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The file that marks a directory as a store, and the writers' lock beside it.
const LOCK_FILE: &str = "LOCK";

/// What the writer holds for as long as it lives: both locks, and the identity of the
/// `store.hv` it locked.
pub(super) struct WriterHold {
    _lock_file: File,
    file_id: (u64, u64),
}

impl WarmStore {
    /// Creates a new store in `dir` (created if missing; must not already hold a store).
    ///
    /// Creation is exclusive: of several processes or threads creating the same store at
    /// once, one succeeds and the others get [`Error::StoreLocked`] or
    /// [`Error::StoreExists`]. A crash leaves either no store or a complete empty one.
    pub fn create(dir: impl AsRef<Path>, config: StoreConfig) -> Result<Self> {
        Self::create_with_element(dir, config, ElementType::F32)
    }

    /// [`create`](Self::create), for a store that keeps its vectors as `element`: f32,
    /// or f16 or bf16 for half the bytes (each value rounded to nearest on
    /// [`put`](Self::put); see [`ElementType`]). Searches read the stored rows and score
    /// them exactly as stored; [`get`](Self::get) widens them back to f32, and
    /// [`read_raw`](Self::read_raw) gives the stored bytes.
    ///
    /// ```
    /// use hybridvec::{ElementType, StoreConfig, WarmStore};
    /// # let dir = std::env::temp_dir().join(format!("hv-doc-f16-{}", std::process::id()));
    /// let store = WarmStore::create_with_element(&dir, StoreConfig::new(3), ElementType::F16)?;
    /// store.put("a", &[0.1, 0.2, 0.3], b"")?;
    /// let got = store.get("a")?.unwrap().embedding; // the f16 values, widened
    /// assert_eq!(got, [0.099975586, 0.19995117, 0.30004883]);
    /// assert_eq!(store.element_type(), ElementType::F16);
    /// # drop(store); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), hybridvec::Error>(())
    /// ```
    pub fn create_with_element(
        dir: impl AsRef<Path>,
        config: StoreConfig,
        element: ElementType,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        config.validate()?;
        let header = Header {
            dim: config.dim as u32,
            layout: Layout::Doubling {
                first: config.first_chunk_bytes as u64,
                max: config.max_chunk_bytes as u64,
            },
            element,
        };
        std::fs::create_dir_all(dir).map_err(Error::at(dir))?;
        let lock_file = lock_dir(dir)?;
        let path = dir.join(format::STORE_FILE);
        if path.symlink_metadata().is_ok() {
            return Err(Error::StoreExists {
                dir: dir.to_path_buf(),
            });
        }
        let mut image = vec![0u8; format::STORE_FILE_LEN];
        image[..36].copy_from_slice(&header.encode());
        image[format::SLOT_OFFSETS[0]..format::SLOT_OFFSETS[0] + 36]
            .copy_from_slice(&Superblock::default().encode());
        // A name of this process's own (O_EXCL), locked before it has its real name, so the
        // store is never seen unlocked.
        let tmp = dir.join(format!(
            ".store.hv.{}.{}.tmp",
            std::process::id(),
            next_identity()
        ));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(Error::at(&tmp))?;
        let placed = (|| {
            if !try_flock(&f).map_err(Error::at(&tmp))? {
                return Err(Error::StoreLocked {
                    dir: dir.to_path_buf(),
                });
            }
            f.write_all_at(&image, 0).map_err(Error::at(&tmp))?;
            sync::file(&f, &tmp)?;
            // link(2) never replaces: the loser of a race gets EEXIST.
            std::fs::hard_link(&tmp, &path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::StoreExists {
                        dir: dir.to_path_buf(),
                    }
                } else {
                    Error::FileIo {
                        path: path.clone(),
                        source: e,
                    }
                }
            })
        })();
        let _ = std::fs::remove_file(&tmp);
        placed?;
        sync::dir(dir)?;
        Self::open_locked(dir, lock_file, f, Recovery::Strict)
    }

    /// Opens an existing store for reading and writing. Fails with [`Error::StoreLocked`]
    /// when another writer has it open, and with [`Error::CorruptStore`] (file, offset,
    /// reason) at a damaged record; [`open_with`](Self::open_with) can salvage instead.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, Recovery::Strict)
    }

    /// [`open`](Self::open), with damaged records treated as `recovery` says. With
    /// [`Recovery::Salvage`] the damaged records are left out, recorded in the store's
    /// quarantine file (durably, before this returns) and listed by
    /// [`quarantined`](Self::quarantined); everything else is kept.
    ///
    /// ```no_run
    /// use hybridvec::{Recovery, WarmStore};
    /// let store = WarmStore::open_with("embeddings", Recovery::Salvage)?;
    /// for d in store.quarantined() {
    ///     eprintln!("left out row {} ({:?}): {}", d.row, d.id, d.reason);
    /// }
    /// # Ok::<(), hybridvec::Error>(())
    /// ```
    pub fn open_with(dir: impl AsRef<Path>, recovery: Recovery) -> Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join(format::STORE_FILE);
        check_present(dir, &path)?;
        let lock_file = lock_dir(dir)?;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(Error::at(&path))?;
        if !try_flock(&f).map_err(Error::at(&path))? {
            return Err(Error::StoreLocked {
                dir: dir.to_path_buf(),
            });
        }
        Self::open_locked(dir, lock_file, f, recovery)
    }

    /// Opens a store and checks its dimension: [`Error::DimensionMismatch`] otherwise.
    pub fn open_with_dim(dir: impl AsRef<Path>, dim: usize) -> Result<Self> {
        let s = Self::open(dir)?;
        if s.dim != dim {
            return Err(Error::DimensionMismatch {
                expected: dim,
                got: s.dim,
            });
        }
        Ok(s)
    }

    /// Opens a store read-only, as of its last durable flush. Works while a writer holds it.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_read_only_with(dir, Recovery::Strict)
    }

    /// [`open_read_only`](Self::open_read_only), with damaged records treated as
    /// `recovery` says. A read-only salvage leaves them out in memory and writes nothing.
    pub fn open_read_only_with(dir: impl AsRef<Path>, recovery: Recovery) -> Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join(format::STORE_FILE);
        check_present(dir, &path)?;
        let f = File::open(&path).map_err(Error::at(&path))?;
        Self::open_file(dir, f, None, recovery)
    }

    /// The dimension and element type of the store in `dir`, from its header alone
    /// (checksum-verified; nothing else is read or opened).
    pub fn read_shape(dir: impl AsRef<Path>) -> Result<(usize, ElementType)> {
        let dir = dir.as_ref();
        let path = dir.join(format::STORE_FILE);
        check_present(dir, &path)?;
        let f = File::open(&path).map_err(Error::at(&path))?;
        let mut head = [0u8; 64];
        let n = f.read_at(&mut head, 0).map_err(Error::at(&path))?;
        let header = Header::decode(&head[..n], &path)?;
        Ok((header.dim as usize, header.element))
    }

    /// The records this store leaves out: quarantined by an earlier repair, or found
    /// damaged by a salvaging open. Empty for a sound store.
    pub fn quarantined(&self) -> &[DamagedRecord] {
        &self.quarantined
    }

    /// The writer's open, once `f` (the store file) is locked: checks that `f` is still
    /// the file the directory names (a creator may have replaced it between our open and
    /// our lock in older builds; anyone may have since).
    fn open_locked(dir: &Path, lock_file: File, f: File, recovery: Recovery) -> Result<Self> {
        let file_id = file_id(&f.metadata().map_err(Error::at(dir))?);
        let hold = WriterHold {
            _lock_file: lock_file,
            file_id,
        };
        hold.check(&dir.join(format::STORE_FILE))?;
        Self::open_file(dir, f, Some(hold), recovery)
    }

    fn open_file(
        dir: &Path,
        store_file: File,
        hold: Option<WriterHold>,
        recovery: Recovery,
    ) -> Result<Self> {
        let path = dir.join(format::STORE_FILE);
        let writable = hold.is_some();
        let mut image = vec![0u8; format::STORE_FILE_LEN];
        let len = store_file.metadata().map_err(Error::at(&path))?.len();
        if len != format::STORE_FILE_LEN as u64 {
            return Err(Error::CorruptStore {
                file: path,
                offset: len,
                reason: format!(
                    "store file is {len} bytes, expected {}",
                    format::STORE_FILE_LEN
                ),
            });
        }
        store_file
            .read_exact_at(&mut image, 0)
            .map_err(Error::at(&path))?;
        let header = Header::decode(&image, &path)?;
        let (slot, sb) = Superblock::newest(&image).ok_or_else(|| Error::CorruptStore {
            file: path.clone(),
            offset: format::SLOT_OFFSETS[0] as u64,
            reason: "no valid superblock".into(),
        })?;
        let dim = header.dim as usize;
        let row_bytes = header.row_bytes();
        let [vec_sizes, meta_sizes, blob_sizes] = header.chunk_sizes();
        let vector_space = VECTOR_SPACE.max(vec_sizes.len(0));
        let vectors =
            Region::reserve(dir, "vec", vec_sizes, vector_space, writable)?.with_huge_pages();
        let max_rows = vectors_capacity_rows(vector_space, row_bytes);
        let metas = Region::reserve(dir, "meta", meta_sizes, max_rows * META_BYTES, writable)?;
        let blobs = Region::reserve(dir, "blob", blob_sizes, CONTENT_SPACE, writable)?;
        let bad_sb = |reason: &str| Error::CorruptStore {
            file: path.clone(),
            offset: format::SLOT_OFFSETS[slot] as u64,
            reason: reason.to_string(),
        };
        if sb.rows > max_rows as u64 || sb.blob_len > CONTENT_SPACE as u64 {
            return Err(bad_sb("superblock lengths exceed the store's limits"));
        }
        let (rows, blob_len) = (sb.rows as usize, sb.blob_len as usize);
        let salvage = recovery == Recovery::Salvage;
        let mut replaced = vectors.map_existing(vectors.chunks_for(rows * row_bytes), salvage)?;
        replaced.extend(metas.map_existing(metas.chunks_for(rows * META_BYTES), salvage)?);
        replaced.extend(blobs.map_existing(blobs.chunks_for(blob_len), salvage)?);
        for r in &replaced {
            tracing::warn!("salvage: {r}; the records it held are left out");
        }
        let mut store = Self {
            dir: dir.to_path_buf(),
            dim,
            element: header.element,
            row_bytes,
            writable,
            vectors,
            metas,
            blobs,
            rows: Watermark {
                next: AtomicU64::new(sb.rows),
                visible: AtomicU64::new(sb.rows),
            },
            blob_tail: AtomicU64::new(sb.blob_len),
            durable_rows: AtomicU64::new(sb.rows),
            live_records: AtomicU64::new(0),
            identity: next_identity(),
            live: LiveBits::new(max_rows)?,
            index: IdIndex::new(),
            grow_lock: Mutex::new(()),
            flush_state: Mutex::new(FlushState {
                generation: sb.generation,
                rows: sb.rows,
                blob_len: sb.blob_len,
            }),
            poisoned: AtomicBool::new(false),
            poison_reason: Mutex::new(None),
            store_file,
            hold,
            quarantined: Vec::new(),
            max_rows,
            tier: None,
            tier_damage: None,
        };
        let quarantine = salvage::read(dir)?;
        let (content_end, damaged) = store.recover(rows, blob_len, &quarantine, recovery)?;
        // Flush records exactly the end of the committed records' content, so anything
        // else is a forged or damaged superblock (and could point into a chunk that was
        // only grown ahead, never written). Records left out may have been the last.
        let left_out = !damaged.is_empty();
        if content_end > sb.blob_len || (!left_out && content_end != sb.blob_len) {
            return Err(bad_sb(&format!(
                "superblock content length {} but the committed records end at {content_end}",
                sb.blob_len
            )));
        }
        // A writable salvage makes its verdict stick before anything else is written.
        let newly_found = damaged.iter().filter(|d| !d.earlier);
        if writable && newly_found.clone().next().is_some() {
            let mut all = quarantine.clone();
            all.extend(newly_found.map(|d| (d.row, d.id.clone())));
            salvage::write(dir, &all)?;
        }
        store.quarantined = damaged;
        store.open_tier(rows)?;
        if !writable && store.tier.is_some() {
            // Searches read the vectors only where the tier's candidates are, scattered:
            // reading ahead around each would read (and cache) far more than they need.
            store.vectors.advise_random();
        }
        if writable {
            store.clear_uncommitted_rows(sb.rows);
        }
        tracing::debug!(
            dir = %dir.display(),
            rows,
            writable,
            left_out = store.quarantined.len(),
            "opened store, every committed record verified"
        );
        Ok(store)
    }

    /// Validates every committed record not in `quarantine` and rebuilds the id index and
    /// the live mask. Strict: the first damaged record fails the open. Salvage: every
    /// damaged record is left out. Returns where the kept records' ids and contents end,
    /// and every record left out (quarantined earlier or found now), by row.
    fn recover(
        &self,
        rows: usize,
        blob_len: usize,
        quarantine: &Quarantine,
        recovery: Recovery,
    ) -> Result<(u64, Vec<DamagedRecord>)> {
        use rayon::prelude::*;
        let check = |row: usize| {
            let row = row as u64;
            if quarantine.contains_key(&row) {
                return None;
            }
            self.validate(row, blob_len as u64).err().map(|e| (row, e))
        };
        // Checksums on all cores; the index is then rebuilt in row order so the newest
        // record of each id wins, exactly as it did when the records were written.
        let found: Vec<(RowId, Error)> = match recovery {
            Recovery::Strict => match (0..rows).into_par_iter().find_map_first(check) {
                Some((_, e)) => return Err(e),
                None => Vec::new(),
            },
            Recovery::Salvage => (0..rows).into_par_iter().filter_map(check).collect(),
        };
        let mut left_out: BTreeMap<RowId, DamagedRecord> = quarantine
            .range(..rows as u64)
            .map(|(&row, id)| {
                let reason = "quarantined by an earlier repair".to_string();
                let id = id.clone();
                (
                    row,
                    DamagedRecord {
                        row,
                        id,
                        reason,
                        earlier: true,
                    },
                )
            })
            .collect();
        for (row, e) in found {
            let reason = e.to_string();
            let id = self.readable_id(row);
            let earlier = false;
            left_out.insert(
                row,
                DamagedRecord {
                    row,
                    id,
                    reason,
                    earlier,
                },
            );
        }
        let mut content_end = 0;
        for row in 0..rows as u64 {
            // A record left out is as if never written. Its id is not trusted to mask
            // anything: the damage may be in the id itself, and a damaged "rec-65" read
            // as "rec-64" must not hide the intact rec-64.
            if left_out.contains_key(&row) {
                continue;
            }
            let m = self.meta(row);
            let id = self.read_id(&m)?;
            self.index_publish(row, &id, m.state);
            content_end = content_end.max(m.off + m.id_len as u64 + m.content_len as u64);
        }
        Ok((content_end, left_out.into_values().collect()))
    }

    /// The id stored for `row` when its metadata points at readable UTF-8 inside the
    /// mapped content (it may still be damaged: the checksum covers it with the rest).
    fn readable_id(&self, row: RowId) -> Option<String> {
        let m = self.meta(row);
        let end = m.off.checked_add(m.id_len as u64)?;
        if m.id_len == 0 || end > self.blobs.mapped_bytes() as u64 {
            return None;
        }
        self.read_id(&m).ok()
    }

    /// Rows past the committed length may hold published-looking state words from before a
    /// crash; clears them so a new writer's row is never visible early. Runs only once the
    /// open has succeeded: a failed open changes nothing on disk.
    ///
    /// Chunk files past the committed ones (grown ahead, or data of a newer generation
    /// whose superblock was lost) are left alone: growth renames a fresh file over them,
    /// so they are never read, and nothing is deleted here.
    fn clear_uncommitted_rows(&self, rows: u64) {
        let end = (self.metas.mapped_bytes() / META_BYTES) as u64;
        for row in rows..end {
            self.meta_word(row, 0).store(STATE_EMPTY, Ordering::SeqCst);
        }
    }

    /// Fails with [`Error::StoreReplaced`] when the directory no longer names the store
    /// file this writer holds. Read-only handles check nothing.
    pub(super) fn check_still_ours(&self) -> Result<()> {
        match &self.hold {
            Some(hold) => hold.check(&self.dir.join(format::STORE_FILE)),
            None => Ok(()),
        }
    }
}

impl WriterHold {
    fn check(&self, path: &Path) -> Result<()> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if file_id(&m) == self.file_id => Ok(()),
            Ok(_) => Err(Error::StoreReplaced {
                file: path.to_path_buf(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::StoreReplaced {
                file: path.to_path_buf(),
            }),
            Err(e) => Err(Error::at(path)(e)),
        }
    }
}

impl StoreConfig {
    /// Checks the configuration before anything is created.
    fn validate(&self) -> Result<()> {
        if self.dim == 0 {
            return Err(Error::EmptyInput {
                what: "store dimension 0",
            });
        }
        if self.dim > super::MAX_DIM {
            return Err(Error::InvalidConfig(format!(
                "store dimension {} is over the maximum {}",
                self.dim,
                super::MAX_DIM
            )));
        }
        let ok = |v: usize| {
            v.is_power_of_two()
                && (format::MIN_CHUNK_BYTES..=format::MAX_CHUNK_BYTES).contains(&(v as u64))
        };
        if !ok(self.first_chunk_bytes)
            || !ok(self.max_chunk_bytes)
            || self.first_chunk_bytes > self.max_chunk_bytes
        {
            return Err(Error::InvalidConfig(format!(
                "chunk sizes must be powers of two with 4096 <= first_chunk_bytes <= max_chunk_bytes <= 16 GiB, got {} and {}",
                self.first_chunk_bytes, self.max_chunk_bytes
            )));
        }
        Ok(())
    }
}

/// `Error::Io` of kind `NotFound`, naming the directory, when it holds no store file.
fn check_present(dir: &Path, path: &Path) -> Result<()> {
    match path.symlink_metadata() {
        Ok(_) => Ok(()),
        // `Io` with NotFound, as ever, for callers that match on it; the text names the
        // directory.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "{} holds no store ({} missing)",
                dir.display(),
                format::STORE_FILE
            ),
        ))),
        Err(e) => Err(Error::at(path)(e)),
    }
}

/// Opens (creating if needed) and locks `dir/LOCK`: [`Error::StoreLocked`] when another
/// writer holds it.
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(Error::at(&path))?;
    if !try_flock(&f).map_err(Error::at(&path))? {
        return Err(Error::StoreLocked {
            dir: dir.to_path_buf(),
        });
    }
    Ok(f)
}

/// Takes `f`'s exclusive `flock` without waiting; `Ok(false)` when another open file
/// description holds it.
fn try_flock(f: &File) -> std::io::Result<bool> {
    // SAFETY: flock on a descriptor we own; it touches no memory.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

fn file_id(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

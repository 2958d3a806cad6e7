//! A growable, never-moving memory region made of chunk files.
//!
//! The region reserves a large range of address space up front (`PROT_NONE`, no memory
//! committed) and maps chunk `i` at `base + start(i)` with `MAP_FIXED`, where the chunk
//! sizes follow the store's [`ChunkSizes`] (doubling from a small first chunk, or fixed in
//! old stores). Chunks are mapped once and never moved, remapped or truncated, so a pointer
//! into a mapped chunk stays valid for the region's whole life, and consecutive chunks are
//! contiguous in memory: the vector region reads as one row-major matrix, even where a row
//! straddles two chunk files.

use super::format::ChunkSizes;
use super::sync;
use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A reserved address range with chunk files mapped at its start.
pub(crate) struct Region {
    /// Start of the usable range: the reservation rounded up to [`HUGE_PAGE`].
    base: *mut u8,
    /// What `mmap` returned, and its length (the usable range plus alignment slack).
    mapping: *mut u8,
    mapping_len: usize,
    reserved: usize,
    /// Whether chunks are advised for transparent huge pages (`MADV_HUGEPAGE`).
    huge_pages: bool,
    sizes: ChunkSizes,
    /// Chunks mapped so far, and the bytes they hold; only grow, under the store's growth
    /// lock (`mapped` is stored after `mapped_bytes`).
    mapped: AtomicUsize,
    mapped_bytes: AtomicUsize,
    writable: bool,
    dir: PathBuf,
    prefix: &'static str,
}

// SAFETY: the region owns its mapping; all mutation of mapped bytes goes through raw
// pointers whose users guarantee disjointness (each slot has one writer), and the mapping
// itself changes only by appending chunks (never moving or unmapping until drop).
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Reserves `reserved` bytes of address space (rounded up to a chunk boundary) for
    /// chunks of `sizes` (multiples of the page size) named `{prefix}-{index:06}.chunk` in
    /// `dir`.
    pub(crate) fn reserve(
        dir: &Path,
        prefix: &'static str,
        sizes: ChunkSizes,
        reserved: usize,
        writable: bool,
    ) -> Result<Self> {
        assert!(sizes.len(0) > 0 && sizes.len(0).is_multiple_of(page_size()));
        let reserved = sizes.start(sizes.chunks_for(reserved.max(1)));
        let mapping_len = reserved + HUGE_PAGE;
        // SAFETY: an anonymous PROT_NONE mapping at an address of the kernel's choosing
        // touches no existing memory; MAP_NORESERVE commits nothing.
        let mapping = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapping_len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if mapping == libc::MAP_FAILED {
            return Err(Error::Io(std::io::Error::last_os_error()));
        }
        let mapping: *mut u8 = mapping.cast();
        // Chunks start on a huge-page boundary, so the kernel can back them with huge folios
        // mapped whole (file offsets of chunks are multiples of the chunk size).
        let base = mapping.wrapping_add(mapping.align_offset(HUGE_PAGE));
        Ok(Self {
            base,
            mapping,
            mapping_len,
            reserved,
            huge_pages: false,
            sizes,
            mapped: AtomicUsize::new(0),
            mapped_bytes: AtomicUsize::new(0),
            writable,
            dir: dir.to_path_buf(),
            prefix,
        })
    }

    /// Advises every chunk mapped from now on for transparent huge pages. For the vector
    /// files this cuts write faults several times over (a fault maps a huge folio, not one
    /// 4 KiB page) and TLB misses in searches; the cost is that a flush writes back whole dirty
    /// folios, which suits large sequential appends.
    pub(crate) fn with_huge_pages(mut self) -> Self {
        self.huge_pages = true;
        self
    }

    /// Advises the chunks mapped so far for random reads: no huge pages and no read-around
    /// (`MADV_NOHUGEPAGE`, `MADV_RANDOM`), so a fault reads the page it needs, not the 2 MiB
    /// or more around it. For the vectors of a read-only store with an int8 tier, whose
    /// searches read scattered candidates' rows.
    pub(crate) fn advise_random(&self) {
        let bytes = self.mapped_bytes();
        if bytes == 0 {
            return;
        }
        for advice in [libc::MADV_NOHUGEPAGE, libc::MADV_RANDOM] {
            // SAFETY: `[base, base + bytes)` is this region's mapped chunks; the advice only
            // changes how the kernel pages them in, not their contents, and a failure is
            // harmless (the pages are read as before), so the result is ignored.
            unsafe { libc::madvise(self.base.cast(), bytes, advice) };
        }
    }

    /// How the region's chunks are sized.
    pub(crate) fn sizes(&self) -> ChunkSizes {
        self.sizes
    }

    pub(crate) fn chunk_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}-{i:06}.chunk", self.prefix))
    }

    /// Bytes currently backed by mapped chunks.
    pub(crate) fn mapped_bytes(&self) -> usize {
        self.mapped_bytes.load(Ordering::Acquire)
    }

    /// The chunk file holding byte `at` of the region, and the offset of `at` in it (for
    /// error messages).
    pub(crate) fn locate(&self, at: usize) -> (PathBuf, u64) {
        let i = self.sizes.chunk_of(at);
        (self.chunk_path(i), (at - self.sizes.start(i)) as u64)
    }

    /// How many chunks hold the region's first `bytes` bytes.
    pub(crate) fn chunks_for(&self, bytes: usize) -> usize {
        self.sizes.chunks_for(bytes)
    }

    /// The size of the last mapped chunk (the first chunk's size when none is mapped).
    pub(crate) fn last_chunk_bytes(&self) -> usize {
        self.sizes.len(self.chunks().saturating_sub(1))
    }

    /// Maps chunks (creating them) until at least `bytes` bytes are mapped. Callers
    /// serialise growth.
    pub(crate) fn grow_to(&self, bytes: usize) -> Result<()> {
        while self.mapped_bytes() < bytes {
            self.grow()?;
        }
        Ok(())
    }

    pub(crate) fn chunks(&self) -> usize {
        self.mapped.load(Ordering::Acquire)
    }

    pub(crate) fn base(&self) -> *mut u8 {
        self.base
    }

    /// Creates chunk file `chunks()` whole (fallocate, temp name, fsync, rename, fsync of
    /// the directory) and maps it. Callers serialise growth.
    pub(crate) fn grow(&self) -> Result<()> {
        self.make_chunk(None)
    }

    /// Creates chunk file `chunks()` whole and maps it: zeros, or with `salvaged` (the
    /// damaged file of that chunk) as much of its bytes as fit, and the damaged file kept
    /// as `<name>.damaged`.
    fn make_chunk(&self, salvaged: Option<&File>) -> Result<()> {
        let i = self.chunks();
        let (_, len) = self.check_fits(i)?; // before any file is made
        let path = self.chunk_path(i);
        let tmp = self.dir.join(format!(".{}-{i:06}.tmp", self.prefix));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(Error::at(&tmp))?;
        let filled = allocate(&f, len, &tmp)
            .and_then(|()| match salvaged {
                Some(old) => copy_prefix(old, &f, len, &path, &tmp),
                None => Ok(()),
            })
            .and_then(|()| sync::file(&f, &tmp));
        if let Err(e) = filled {
            let _ = std::fs::remove_file(&tmp); // give the space back; nothing refers to it
            return Err(e);
        }
        if salvaged.is_some() {
            let kept = PathBuf::from(format!("{}.damaged", path.display()));
            std::fs::rename(&path, &kept).map_err(Error::at(&path))?;
        }
        std::fs::rename(&tmp, &path).map_err(Error::at(&path))?;
        sync::dir(&self.dir)?;
        self.map_chunk(i, &f, &path)
    }

    /// Maps existing chunk files `0..n`, checking each has exactly its chunk size (a short
    /// file would fault on access instead of failing here).
    ///
    /// With `salvage`, a chunk file that is missing or of the wrong size does not fail: its
    /// place holds what is left of the file and reads as zeros past that, so the records
    /// whose bytes were lost fail their checksums and are left out like any other damage.
    /// A writable region makes that stick: a chunk of the right size is made with the
    /// file's surviving bytes (created whole, as growth does), and the bad file is kept as
    /// `<name>.damaged`. A read-only region maps the file's pages and anonymous zeros after
    /// them, and writes nothing. Returns what was replaced, one line per chunk.
    pub(crate) fn map_existing(&self, n: usize, salvage: bool) -> Result<Vec<String>> {
        let mut replaced = Vec::new();
        for i in 0..n {
            let path = self.chunk_path(i);
            let opened = OpenOptions::new()
                .read(true)
                .write(self.writable)
                .open(&path);
            let problem = match &opened {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Some((0, "chunk file missing".to_string()))
                }
                Err(_) => None,
                Ok(f) => {
                    let len = f.metadata().map_err(Error::at(&path))?.len();
                    let want = self.sizes.len(i) as u64;
                    (len != want)
                        .then(|| (len, format!("chunk file is {len} bytes, expected {want}")))
                }
            };
            match (problem, opened) {
                (None, Ok(f)) => self.map_chunk(i, &f, &path)?,
                (None, Err(e)) => return Err(Error::at(&path)(e)),
                (Some((offset, reason)), _) if !salvage => {
                    return Err(Error::CorruptStore {
                        file: path,
                        offset,
                        reason,
                    })
                }
                (Some((_, reason)), _) => {
                    replaced.push(format!("{}: {reason}", path.display()));
                    self.replace_damaged(i, &path)?;
                }
            }
        }
        Ok(replaced)
    }

    /// Puts what is left of chunk `i` (`path`, missing or of the wrong size) in its place,
    /// zeros past the end of what is left; see [`map_existing`](Self::map_existing).
    fn replace_damaged(&self, i: usize, path: &Path) -> Result<()> {
        let old = File::open(path).ok();
        if self.writable {
            return self.make_chunk(old.as_ref());
        }
        let (start, len) = self.check_fits(i)?;
        let old_len = match &old {
            Some(f) => f.metadata().map_err(Error::at(path))?.len() as usize,
            None => 0,
        };
        // The file's pages as far as it reaches (the page holding its end reads zeros past
        // it), anonymous zeros after.
        let from_file = old_len.next_multiple_of(page_size()).min(len);
        if let (Some(f), true) = (&old, from_file > 0) {
            // SAFETY: `base + start .. + from_file` lies inside our own PROT_NONE
            // reservation (checked above) and is not yet mapped (chunks are mapped in order,
            // once), so MAP_FIXED replaces only reserved pages that no reference points into.
            // Every page mapped holds file bytes (the last one partly), so none faults.
            let p = unsafe {
                libc::mmap(
                    self.base.add(start).cast(),
                    from_file,
                    libc::PROT_READ,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    f.as_raw_fd(),
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(Error::at(path)(std::io::Error::last_os_error()));
            }
        }
        if from_file < len {
            // SAFETY: as above for `base + start + from_file .. + (len - from_file)`, the
            // rest of the chunk's place. An anonymous private mapping reads as zeros and is
            // never written (PROT_READ).
            let p = unsafe {
                libc::mmap(
                    self.base.add(start + from_file).cast(),
                    len - from_file,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(Error::at(path)(std::io::Error::last_os_error()));
            }
        }
        self.mapped_bytes.store(start + len, Ordering::Release);
        self.mapped.store(i + 1, Ordering::Release);
        Ok(())
    }

    /// [`Error::InvalidConfig`] unless chunk `i` fits in the reservation.
    fn check_fits(&self, i: usize) -> Result<(usize, usize)> {
        let (start, len) = (self.sizes.start(i), self.sizes.len(i));
        if start + len > self.reserved {
            return Err(Error::InvalidConfig(format!(
                "store is full: {} would end at byte {}, past the {} bytes this region can address",
                self.chunk_path(i).display(),
                start + len,
                self.reserved
            )));
        }
        Ok((start, len))
    }

    fn map_chunk(&self, i: usize, f: &File, path: &Path) -> Result<()> {
        if i != self.chunks() {
            return Err(Error::InvalidConfig(
                "chunks must be mapped in order".into(),
            ));
        }
        let (start, len) = self.check_fits(i)?;
        let prot = if self.writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: `base + start .. + len` lies inside our own PROT_NONE reservation (checked
        // above) and is not yet mapped (chunks are mapped in order, once), so MAP_FIXED
        // replaces only reserved pages that no reference points into. The file is exactly
        // `len` long (checked or allocated by the caller), so every mapped page is backed.
        let p = unsafe {
            libc::mmap(
                self.base.add(start).cast(),
                len,
                prot,
                libc::MAP_SHARED | libc::MAP_FIXED,
                f.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::at(path)(std::io::Error::last_os_error()));
        }
        if self.huge_pages {
            // Advice only: kernels without THP for files answer EINVAL and stay on 4 KiB pages.
            // SAFETY: `p` is the chunk just mapped, `len` long; madvise changes no contents.
            let _ = unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
        }
        self.mapped_bytes.store(start + len, Ordering::Release);
        self.mapped.store(i + 1, Ordering::Release);
        Ok(())
    }

    /// Writes back dirty pages of `[start, end)` (byte offsets) and waits for the device.
    pub(crate) fn sync_range(&self, start: usize, end: usize) -> Result<()> {
        let end = end.min(self.mapped_bytes());
        if start >= end {
            return Ok(());
        }
        let page = page_size();
        let s = start / page * page;
        // SAFETY: `[s, end)` lies inside mapped chunks (clamped to `mapped_bytes` above), which
        // are shared file mappings this region owns, and `s` is page-aligned.
        let files = self.dir.join(format!("{}-*.chunk", self.prefix));
        // SAFETY: as above.
        unsafe { sync::mapping(self.base.add(s), end - s, &files) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: we own the whole reservation (mapped chunks included); nothing borrowed
        // from it outlives the region, because views borrow the store that owns it.
        unsafe {
            libc::munmap(self.mapping.cast(), self.mapping_len);
        }
    }
}

/// The x86-64 and aarch64 (4 KiB granule) PMD size: the alignment of chunk mappings.
const HUGE_PAGE: usize = 2 << 20;

pub(crate) fn page_size() -> usize {
    4096
}

/// Copies the first `len` bytes of `from` (fewer where it is shorter) into `to`.
fn copy_prefix(from: &File, to: &File, len: usize, from_path: &Path, to_path: &Path) -> Result<()> {
    let mut buf = vec![0u8; (1 << 20).min(len)];
    let mut at = 0u64;
    while (at as usize) < len {
        let want = buf.len().min(len - at as usize);
        let n = from
            .read_at(&mut buf[..want], at)
            .map_err(Error::at(from_path))?;
        if n == 0 {
            break;
        }
        to.write_all_at(&buf[..n], at).map_err(Error::at(to_path))?;
        at += n as u64;
    }
    Ok(())
}

/// Reserves the file's blocks now, so a full disk is an error here and not a SIGBUS on a
/// later write through the mapping.
fn allocate(f: &File, len: usize, path: &Path) -> Result<()> {
    // SAFETY: plain syscall on an open descriptor.
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as libc::off_t) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
        // SAFETY: as above; posix_fallocate writes zeros where the filesystem lacks fallocate.
        let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, len as libc::off_t) };
        if rc == 0 {
            return Ok(());
        }
        return Err(Error::at(path)(std::io::Error::from_raw_os_error(rc)));
    }
    Err(Error::at(path)(err))
}

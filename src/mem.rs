//! Large buffers backed by transparent huge pages where the OS allows it.
//!
//! A corpus scan touches hundreds of MiB; with 4 KiB pages the TLB misses cost several
//! percent of memory bandwidth. Linux set to `madvise` mode gives huge pages only to ranges
//! that ask before they are first touched, so we ask right after allocating.

use crate::error::{Error, Result};

/// A zero-filled `Vec<f32>` of `len` values whose pages are advised as huge pages.
pub(crate) fn zeroed_f32(len: usize) -> Vec<f32> {
    let v = vec![0.0f32; len];
    advise_huge(v.as_ptr() as usize, len * std::mem::size_of::<f32>());
    v
}

/// A zero-filled `Vec<u16>` of `len` values (16-bit rows) whose pages are advised as huge
/// pages.
pub(crate) fn zeroed_u16(len: usize) -> Vec<u16> {
    let v = vec![0u16; len];
    advise_huge(v.as_ptr() as usize, len * std::mem::size_of::<u16>());
    v
}

/// Int8 codes in memory, zero-filled, starting on a cache line and advised as huge pages:
/// a scan's 64-byte loads of rows whose length is a multiple of 64 then never straddle two
/// lines (a plain large allocation starts 16 bytes past a page, and every such load cost
/// two).
///
/// The codes live in an anonymous map: the kernel hands out zero pages as they are first
/// written, so a tier built on all cores faults its pages in on all of them, and nothing
/// writes the zeros first (on one core, that took 0.95 s of a 1M × 768 build's 2.0).
#[derive(Debug)]
pub(crate) struct LineCodes {
    store: Store,
    len: usize,
}

/// Where [`LineCodes`] keeps its bytes.
#[derive(Debug)]
enum Store {
    /// A page-aligned anonymous map.
    Mapped(memmap2::MmapMut),
    /// Cache lines on the heap: empty codes, or where the map failed.
    Lines(Vec<Line>),
}

/// 64 codes on a cache line of their own.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
struct Line([i8; 64]);

// SAFETY: `repr(C)`, 64 bytes of i8 at alignment 64, so no padding; every bit pattern is
// valid and all-zero is one.
unsafe impl bytemuck::Zeroable for Line {}
// SAFETY: as above; `Copy`, no pointers.
unsafe impl bytemuck::Pod for Line {}

impl LineCodes {
    /// `len` zero codes.
    pub(crate) fn zeroed(len: usize) -> Self {
        let bytes = len.div_ceil(64) * 64;
        if bytes > 0 {
            if let Ok(map) = memmap2::MmapMut::map_anon(bytes) {
                // Advised before the first write, so the faults take huge pages.
                advise_huge(map.as_ptr() as usize, bytes);
                return Self {
                    store: Store::Mapped(map),
                    len,
                };
            }
        }
        // Advised before the zeros are written: an aligned `alloc_zeroed` writes them
        // itself (no `calloc` past 16-byte alignment), which faulted in small pages.
        let n = bytes / 64;
        let mut lines: Vec<Line> = Vec::with_capacity(n);
        advise_huge(lines.as_ptr() as usize, n * 64);
        lines.resize(n, Line([0; 64]));
        Self {
            store: Store::Lines(lines),
            len,
        }
    }

    /// The codes.
    pub(crate) fn as_slice(&self) -> &[i8] {
        let bytes: &[u8] = match &self.store {
            Store::Mapped(map) => map,
            Store::Lines(lines) => bytemuck::cast_slice(lines),
        };
        &bytemuck::cast_slice::<u8, i8>(bytes)[..self.len]
    }

    /// The codes, to write.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [i8] {
        let bytes: &mut [u8] = match &mut self.store {
            Store::Mapped(map) => map,
            Store::Lines(lines) => bytemuck::cast_slice_mut(lines),
        };
        &mut bytemuck::cast_slice_mut::<u8, i8>(bytes)[..self.len]
    }
}

impl Clone for LineCodes {
    fn clone(&self) -> Self {
        let mut copy = Self::zeroed(self.len);
        copy.as_mut_slice().copy_from_slice(self.as_slice());
        copy
    }
}

/// Advises the whole huge pages inside `data` as huge pages. For a buffer already
/// written, the kernel collapses them in the background (khugepaged), if at all.
pub(crate) fn advise_huge_pages<T>(data: &[T]) {
    advise_huge(data.as_ptr() as usize, std::mem::size_of_val(data));
}

#[cfg(target_os = "linux")]
fn advise_huge(addr: usize, bytes: usize) {
    const HUGE: usize = 2 << 20;
    if bytes < 4 * HUGE {
        return;
    }
    // Only whole huge pages inside the allocation are advised.
    let start = addr.next_multiple_of(HUGE);
    let end = (addr + bytes) / HUGE * HUGE;
    if end > start {
        // SAFETY: `[start, end)` lies inside the live allocation of `v`. MADV_HUGEPAGE only
        // changes how the kernel backs the range; contents and validity are unaffected, and
        // a failure (e.g. THP disabled) is harmless, so the result is ignored.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_addr: usize, _bytes: usize) {}

/// Hints the CPU to start loading every cache line of `data`, so that a cold row read by
/// index costs one memory round trip instead of one per line. Changes nothing else; a
/// no-op off x86-64.
#[inline]
pub(crate) fn prefetch<T>(data: &[T]) {
    prefetch_lines(data)
}

/// Asks the kernel to start reading every page of the byte ranges `(address, length)`
/// (ascending) from their files now, all at once (`MADV_WILLNEED`), so that touching them
/// then waits for one round of I/O instead of a fault and a read-around for each. For
/// scattered rows of a mapped store; on memory that is already resident it does nothing.
/// A failure is harmless (the pages are read on touch), so it is ignored.
pub(crate) fn will_need(ranges: impl Iterator<Item = (usize, usize)>) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let mut pending: Option<(usize, usize)> = None;
        let advise = |(start, end): (usize, usize)| {
            // SAFETY: `[start, end)` covers pages of a live mapping the caller reads (its
            // ranges rounded out to page boundaries, which stay inside the mapping).
            // MADV_WILLNEED only schedules reads; contents and validity are unaffected.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_WILLNEED) };
        };
        for (addr, len) in ranges.filter(|r| r.1 > 0) {
            let (start, end) = (addr / PAGE * PAGE, (addr + len).next_multiple_of(PAGE));
            pending = match pending {
                Some((s, e)) if start <= e => Some((s, e.max(end))),
                Some(run) => {
                    advise(run);
                    Some((start, end))
                }
                None => Some((start, end)),
            };
        }
        if let Some(run) = pending {
            advise(run);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = ranges;
}

fn prefetch_lines<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let (start, bytes) = (data.as_ptr().cast::<i8>(), std::mem::size_of_val(data));
        for offset in (0..bytes).step_by(64) {
            // SAFETY: prefetch never faults and has no architectural effect; SSE is part of
            // the x86-64 baseline, and `start + offset` lies inside the live slice `data`.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    start.add(offset),
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// A zero-filled `Vec<f32>` of `rows × cols` values for `what`, or a typed error when the
/// size overflows or is more than the memory available: a request too large to serve
/// fails here, instead of aborting in the allocator or being killed on first touch.
pub(crate) fn try_zeroed_f32(rows: usize, cols: usize, what: &str) -> Result<Vec<f32>> {
    let bytes = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(std::mem::size_of::<f32>()));
    check_available(bytes, what)?;
    let len = rows * cols;
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| Error::InsufficientMemory {
            what: what.to_string(),
            bytes: (len * 4) as u64,
            available: available_bytes(),
        })?;
    // Advise before the zeros are written: the first touch decides the page size.
    advise_huge(v.as_ptr() as usize, len * std::mem::size_of::<f32>());
    v.resize(len, 0.0);
    Ok(v)
}

/// Requests up to this size skip [`check_available`]'s look at the memory.
const UNCHECKED_BYTES: usize = 16 << 20;

/// [`Error::InsufficientMemory`] unless `bytes` (`None`: overflowed) fit in the memory
/// available now.
pub(crate) fn check_available(bytes: Option<usize>, what: &str) -> Result<()> {
    // Reading the kernel's figures costs tens of µs (an open and a formatted read of
    // `/proc/meminfo`, and the cgroup's files), a third of a small call; a request this
    // small is not worth it: where it cannot be served, nothing else can be either.
    if bytes.is_some_and(|b| b <= UNCHECKED_BYTES) {
        return Ok(());
    }
    let available = available_bytes();
    match bytes {
        Some(b) if (b as u64) <= available => Ok(()),
        _ => Err(Error::InsufficientMemory {
            what: what.to_string(),
            bytes: bytes.map_or(u64::MAX, |b| b as u64),
            available,
        }),
    }
}

/// Memory this process can still take: the kernel's `MemAvailable`, lowered to the
/// cgroup's limit less its usage where one is set. `u64::MAX` where neither is known.
pub(crate) fn available_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
        line.split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kb| kb * 1024)
    });
    let read = |p: &str| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    // cgroup v2, then v1; "max" or an absurd v1 limit parses as none.
    let cgroup = [
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ]
    .iter()
    .find_map(|(limit, usage)| Some(read(limit)?.saturating_sub(read(usage)?)));
    [meminfo, cgroup]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(u64::MAX)
}

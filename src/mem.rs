//! Large buffers backed by transparent huge pages where the OS allows it.
//!
//! A corpus scan touches hundreds of MiB; with 4 KiB pages the TLB misses cost several
//! percent of memory bandwidth. Linux set to `madvise` mode gives huge pages only to ranges
//! that ask before they are first touched, so we ask right after allocating.

/// A zero-filled `Vec<f32>` of `len` values whose pages are advised as huge pages.
pub(crate) fn zeroed_f32(len: usize) -> Vec<f32> {
    let v = vec![0.0f32; len];
    advise_huge(v.as_ptr() as usize, len * std::mem::size_of::<f32>());
    v
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

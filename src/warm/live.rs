//! The live mask: one bit per row, set while the row is the latest put of its id.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};

/// One bit per row in an anonymous mapping sized for the store's maximum: pages are
/// zero until touched, so it never needs to grow (and never moves).
pub(super) struct LiveBits {
    words: *mut AtomicU64,
    len: usize,
}

// SAFETY: all access is through atomics; the mapping lives as long as the value.
unsafe impl Send for LiveBits {}
// SAFETY: as above.
unsafe impl Sync for LiveBits {}

impl LiveBits {
    pub(super) fn new(rows: usize) -> Result<Self> {
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

    pub(super) fn get(&self, row: u64) -> bool {
        let (w, bit) = self.word(row);
        w.load(Ordering::Acquire) & bit != 0
    }

    /// The 64 bits of rows `row - row % 64 ..`, bit i for row `row - row % 64 + i`.
    pub(super) fn load_word(&self, row: u64) -> u64 {
        self.word(row).0.load(Ordering::Acquire)
    }

    pub(super) fn set(&self, row: u64) {
        let (w, bit) = self.word(row);
        w.fetch_or(bit, Ordering::AcqRel);
    }

    /// Clears the bit; returns whether it was set.
    pub(super) fn clear(&self, row: u64) -> bool {
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

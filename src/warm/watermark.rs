//! Row reservation and the visible-length watermark, written once over an atomic trait so
//! the store runs it on `std` atomics and the loom model runs the very same code.
//!
//! * `reserve` hands out rows with one `fetch_add`: two writers can never get the same row
//!   (the load-then-increment allocator this replaces could, and the model shows it).
//! * `advance` moves the visible length over every contiguous published row. Any thread may
//!   advance for the others; readers and `flush` advance too, so a row published while
//!   another thread was advancing is picked up by the next call at the latest.

use std::sync::atomic::Ordering;

/// The operations the protocol needs from a 64-bit atomic.
pub(crate) trait Atomic64 {
    fn load(&self, order: Ordering) -> u64;
    fn fetch_add(&self, v: u64, order: Ordering) -> u64;
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64>;
}

impl Atomic64 for std::sync::atomic::AtomicU64 {
    fn load(&self, order: Ordering) -> u64 {
        self.load(order)
    }
    fn fetch_add(&self, v: u64, order: Ordering) -> u64 {
        self.fetch_add(v, order)
    }
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        self.compare_exchange(current, new, success, failure)
    }
}

/// Reserved rows and the visible (contiguous published) prefix.
pub(crate) struct Watermark<A> {
    pub(crate) next: A,
    pub(crate) visible: A,
}

impl<A: Atomic64> Watermark<A> {
    /// A fresh row for one writer.
    pub(crate) fn reserve(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Advances the visible length while row `visible` is published. `published(row)` must
    /// load the row's state with at least Acquire, and writers must store it with at least
    /// Release after writing the row, so a reader that sees the new length sees the data.
    pub(crate) fn advance(&self, published: impl Fn(u64) -> bool) -> u64 {
        loop {
            let w = self.visible.load(Ordering::SeqCst);
            if !published(w) {
                return w;
            }
            let _ = self
                .visible
                .compare_exchange(w, w + 1, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod loom_model {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::{AtomicU32, AtomicU64};
    use loom::sync::Arc;

    impl Atomic64 for AtomicU64 {
        fn load(&self, order: Ordering) -> u64 {
            AtomicU64::load(self, order)
        }
        fn fetch_add(&self, v: u64, order: Ordering) -> u64 {
            AtomicU64::fetch_add(self, v, order)
        }
        fn compare_exchange(&self, c: u64, n: u64, s: Ordering, f: Ordering) -> Result<u64, u64> {
            AtomicU64::compare_exchange(self, c, n, s, f)
        }
    }

    const ROWS: usize = 3;

    /// Every interleaving with up to three preemptions: enough for the two-writer races
    /// (the duplicate row needs one, the skipped row two) while keeping the model fast.
    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(f);
    }

    /// Rows of a tiny store: the payload (a plain cell, so loom flags unsynchronised
    /// access) and the state word published last.
    struct Slots {
        data: [UnsafeCell<u64>; ROWS],
        state: [AtomicU32; ROWS],
    }

    // SAFETY: the protocol under test is what makes access to `data` exclusive; loom's
    // UnsafeCell checks every access and fails the model on a race.
    unsafe impl Sync for Slots {}

    impl Slots {
        fn new() -> Self {
            Self {
                data: std::array::from_fn(|_| UnsafeCell::new(0)),
                state: std::array::from_fn(|_| AtomicU32::new(0)),
            }
        }
        fn published(&self, row: u64) -> bool {
            (row as usize) < ROWS && self.state[row as usize].load(Ordering::Acquire) == 1
        }
    }

    fn write(slots: &Slots, row: u64, value: u64) {
        // SAFETY: `row` was reserved by this thread alone; readers touch it only after the
        // Release store below is seen through the watermark.
        slots.data[row as usize].with_mut(|p| unsafe { *p = value });
        slots.state[row as usize].store(1, Ordering::Release);
    }

    /// Two writers and a reader: rows are distinct, a reader never sees a row below the
    /// watermark unwritten, and after everyone is done one more advance covers every row.
    #[test]
    fn reservation_publication_and_watermark() {
        model(|| {
            let wm = Arc::new(Watermark {
                next: AtomicU64::new(0),
                visible: AtomicU64::new(0),
            });
            let slots = Arc::new(Slots::new());
            let writers: Vec<_> = (0..2u64)
                .map(|t| {
                    let (wm, slots) = (wm.clone(), slots.clone());
                    loom::thread::spawn(move || {
                        let row = wm.reserve();
                        write(&slots, row, 100 + t);
                        wm.advance(|r| slots.published(r));
                        row
                    })
                })
                .collect();
            let reader = {
                let (wm, slots) = (wm.clone(), slots.clone());
                loom::thread::spawn(move || {
                    let visible = wm.advance(|r| slots.published(r));
                    for r in 0..visible as usize {
                        // SAFETY: rows below the watermark are published and never written again.
                        let v = slots.data[r].with(|p| unsafe { *p });
                        assert!(
                            v == 100 || v == 101,
                            "row {r} visible before it was written"
                        );
                    }
                })
            };
            let mut rows: Vec<u64> = writers.into_iter().map(|h| h.join().unwrap()).collect();
            reader.join().unwrap();
            rows.sort_unstable();
            assert_eq!(rows, vec![0, 1], "two writers got the same row");
            assert_eq!(
                wm.advance(|r| slots.published(r)),
                2,
                "a published row was never made visible"
            );
        });
    }

    /// The allocator that shipped elsewhere: read the count, write, then increment. Loom
    /// must find the interleaving where both writers take the same row.
    #[test]
    #[should_panic]
    fn load_then_increment_allocator_is_caught() {
        model(|| {
            let next = Arc::new(AtomicU64::new(0));
            let slots = Arc::new(Slots::new());
            let writers: Vec<_> = (0..2u64)
                .map(|t| {
                    let (next, slots) = (next.clone(), slots.clone());
                    loom::thread::spawn(move || {
                        let row = next.load(Ordering::Relaxed);
                        write(&slots, row, 100 + t);
                        next.store(row + 1, Ordering::Relaxed);
                        row
                    })
                })
                .collect();
            let rows: Vec<u64> = writers.into_iter().map(|h| h.join().unwrap()).collect();
            assert_ne!(rows[0], rows[1], "two writers got the same row");
        });
    }
}

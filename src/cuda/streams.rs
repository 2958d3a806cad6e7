//! Streams reused from call to call, and the ordering rule that lets the backend run
//! without cudarc's per-buffer event tracking.
//!
//! cudarc, once a context has more than one stream, records an event on every buffer at
//! every use and makes the next stream wait on it: 12 events created and destroyed, 16
//! records and 25 waits per top-k call on the emulated driver, about 60 % of the call's
//! driver calls. The backend turns that off ([`CudaContext::disable_event_tracking`]) and
//! orders its streams itself, by one rule: **a buffer used by more than one stream is
//! complete before it is shared, and outlives every use.**
//! * A call's own buffers (queries, mask, scratch, results) are allocated, used and freed
//!   on the call's stream only, so the stream orders them.
//! * A shared buffer (the resident corpus, its norms, FP16 copy and L2 biases) is written
//!   on one stream, which is synchronised before the buffer is published.
//! * A call holds its `Arc` of the shared buffers until its stream has finished
//!   ([`CallStream::done_guard`], declared after them, so it drops first, on every way
//!   out), so the last holder frees them only when no stream still reads them.
//! * A stream that finished a call ([`CallStream::finish`]) is not waited for again.
//!
//! A stream goes back to the pool only after it synchronised without an error, with its
//! [`CallScratch`] (arena, pinned buffer, timing events): a call on a pooled stream
//! allocates nothing.

use super::error::launch_failed;
use super::scratch::CallScratch;
use crate::backend::BackendError;
use cudarc::driver::{sys, CudaContext, CudaStream};
use parking_lot::Mutex;
use std::cell::{Cell, RefCell, RefMut};
use std::ops::Deref;
use std::sync::Arc;

/// Idle streams kept, at most: enough for as many concurrent callers as a machine has
/// reasons to run; more are created for a burst and destroyed after it.
const MAX_IDLE: usize = 16;

/// The backend's idle streams.
pub(super) struct StreamPool {
    ctx: Arc<CudaContext>,
    idle: Mutex<Vec<(Arc<CudaStream>, CallScratch)>>,
    /// The largest arena an idle stream keeps.
    arena_keep: usize,
}

impl StreamPool {
    /// A pool whose idle streams keep arenas of up to `arena_keep` bytes.
    pub(super) fn new(ctx: Arc<CudaContext>, arena_keep: usize) -> Self {
        Self {
            ctx,
            idle: Mutex::new(Vec::new()),
            arena_keep,
        }
    }

    /// A stream for one call: an idle one, or a new one.
    pub(super) fn take(&self) -> Result<CallStream<'_>, BackendError> {
        let (stream, scratch) = match self.idle.lock().pop() {
            Some(s) => s,
            None => (
                self.ctx.new_stream().map_err(launch_failed)?,
                CallScratch::new(),
            ),
        };
        Ok(CallStream {
            pool: self,
            stream: Some(stream),
            scratch: RefCell::new(scratch),
            finished: Cell::new(false),
            raw_queued: Cell::new(false),
        })
    }

    /// Frees the arenas and pinned buffers of the idle streams, and waits for the frees,
    /// so that a call that needs more memory than is free finds theirs free too.
    pub(super) fn release_idle_scratch(&self) {
        let mut idle = self.idle.lock();
        for (stream, scratch) in idle.iter_mut() {
            if scratch.release() {
                let _ = stream.synchronize();
            }
        }
    }
}

/// A stream lent to one call: back to the pool when dropped, once it has finished its
/// work without an error (a stream whose work failed is destroyed instead).
pub(super) struct CallStream<'a> {
    pool: &'a StreamPool,
    stream: Option<Arc<CudaStream>>,
    scratch: RefCell<CallScratch>,
    /// Whether [`finish`](Self::finish) waited for the call's work without an error.
    finished: Cell<bool>,
    /// Whether work was queued through [`Self::raw`] since the last wait.
    raw_queued: Cell<bool>,
}

impl CallStream<'_> {
    /// Waits for the call's queued work; after success, neither [`Self::done_guard`] nor
    /// the return to the pool waits again (work queued later is only frees, which the
    /// stream orders before anything the next call queues).
    pub(super) fn finish(&self) -> Result<(), BackendError> {
        // SAFETY: the stream is live (this value holds it).
        unsafe { cudarc::driver::result::stream::synchronize(self.cu_stream()) }
            .map_err(launch_failed)?;
        self.finished.set(true);
        self.raw_queued.set(false);
        Ok(())
    }

    /// The driver's handle, to queue work on directly (the caller has bound the context
    /// to this thread); marks the call as having work to wait for.
    pub(super) fn raw(&self) -> sys::CUstream {
        self.finished.set(false);
        self.raw_queued.set(true);
        self.cu_stream()
    }

    /// The stream's scratch, for a call that has bound the context. Before the host
    /// writes the pinned buffer ([`CallScratch::prepare`]), [`Self::idle_scratch`].
    pub(super) fn scratch(&self) -> RefMut<'_, CallScratch> {
        self.scratch.borrow_mut()
    }

    /// The stream's scratch once the stream is idle: waits first if work was queued
    /// since the last wait.
    pub(super) fn idle_scratch(&self) -> Result<RefMut<'_, CallScratch>, BackendError> {
        if self.raw_queued.get() {
            self.finish()?;
        }
        Ok(self.scratch.borrow_mut())
    }

    /// A guard that waits for the call's work when dropped, unless the call
    /// [`finish`](Self::finish)ed: declare it after the shared buffers the work reads
    /// (see the module docs), so that it drops before them on every way out.
    pub(super) fn done_guard(&self) -> DoneGuard<'_, '_> {
        DoneGuard(self)
    }
}

/// See [`CallStream::done_guard`].
pub(super) struct DoneGuard<'s, 'p>(&'s CallStream<'p>);

impl Drop for DoneGuard<'_, '_> {
    fn drop(&mut self) {
        if !self.0.finished.get() {
            let _ = self.0.synchronize();
        }
    }
}

impl Deref for CallStream<'_> {
    type Target = Arc<CudaStream>;
    fn deref(&self) -> &Arc<CudaStream> {
        // Taken only in `drop`.
        self.stream.as_ref().expect("a lent stream")
    }
}

impl Drop for CallStream<'_> {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        let mut scratch = std::mem::replace(self.scratch.get_mut(), CallScratch::new());
        if self.finished.get() || stream.synchronize().is_ok() {
            scratch.keep(self.pool.arena_keep);
            let mut idle = self.pool.idle.lock();
            if idle.len() < MAX_IDLE {
                idle.push((stream, scratch));
            }
        } else {
            scratch.abandon();
        }
    }
}

/// Waits for a stream's queued work when dropped, ignoring its error (the caller already
/// returns one, or has waited and checked). Declared after the buffers that work reads,
/// so that it drops first: shared buffers are not freed, and pinned ones not reused,
/// while a queued copy or kernel still reads them.
pub(super) struct WaitOnDrop<'a>(pub(super) &'a CudaStream);

impl Drop for WaitOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.synchronize();
    }
}

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
//! A stream goes back to the pool only after it synchronised without an error.

use super::error::launch_failed;
use crate::backend::BackendError;
use cudarc::driver::{CudaContext, CudaStream};
use parking_lot::Mutex;
use std::cell::Cell;
use std::ops::Deref;
use std::sync::Arc;

/// Idle streams kept, at most: enough for as many concurrent callers as a machine has
/// reasons to run; more are created for a burst and destroyed after it.
const MAX_IDLE: usize = 16;

/// The backend's idle streams.
pub(super) struct StreamPool {
    ctx: Arc<CudaContext>,
    idle: Mutex<Vec<Arc<CudaStream>>>,
}

impl StreamPool {
    pub(super) fn new(ctx: Arc<CudaContext>) -> Self {
        Self {
            ctx,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A stream for one call: an idle one, or a new one.
    pub(super) fn take(&self) -> Result<CallStream<'_>, BackendError> {
        let stream = match self.idle.lock().pop() {
            Some(s) => s,
            None => self.ctx.new_stream().map_err(launch_failed)?,
        };
        Ok(CallStream {
            pool: self,
            stream: Some(stream),
            finished: Cell::new(false),
        })
    }
}

/// A stream lent to one call: back to the pool when dropped, once it has finished its
/// work without an error (a stream whose work failed is destroyed instead).
pub(super) struct CallStream<'a> {
    pool: &'a StreamPool,
    stream: Option<Arc<CudaStream>>,
    /// Whether [`finish`](Self::finish) waited for the call's work without an error.
    finished: Cell<bool>,
}

impl CallStream<'_> {
    /// Waits for the call's queued work; after success, neither [`Self::done_guard`] nor
    /// the return to the pool waits again (work queued later is only frees, which the
    /// stream orders before anything the next call queues).
    pub(super) fn finish(&self) -> Result<(), BackendError> {
        self.synchronize().map_err(launch_failed)?;
        self.finished.set(true);
        Ok(())
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
        if self.finished.get() || stream.synchronize().is_ok() {
            let mut idle = self.pool.idle.lock();
            if idle.len() < MAX_IDLE {
                idle.push(stream);
            }
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

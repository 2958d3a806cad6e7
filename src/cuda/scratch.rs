//! What a pooled stream keeps from call to call, so that a call on a resident corpus
//! costs a few driver calls (one upload, its launches, one read-back, one wait) rather
//! than an allocation and a free per buffer:
//! - a device **arena**, the one allocation a call's program runs in (laid out by
//!   [`Layout`]), grown when a call needs more and kept up to [`CallScratch::keep`];
//! - a **pinned host buffer** that stages the call's inputs for one upload and receives
//!   its results in one read-back, kept up to [`PINNED_MAX`] (larger inputs and results
//!   are copied straight from and into pageable memory, which the driver stages itself);
//! - two **timing events** for the device time of a call;
//! - its **cuBLAS handle**, bound to the stream, made by the first GEMM.
//!
//! The stream orders everything a call queues, and the host touches the pinned buffer
//! only while the stream is idle (after [`CallScratch::prepare`], which waits if it is
//! not, and before the upload; after the wait that ends the call, for the results).

use super::cublas::{Cublas, CublasHandle};
use super::error::{launch_failed, oom_or_launch};
use super::program::{Layout, ALIGN};
use crate::backend::BackendError;
use cudarc::driver::sys::{self, CUevent_flags};
use cudarc::driver::{result, CudaContext, CudaEvent, CudaSlice, CudaStream, DevicePtr};
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::Arc;

/// The largest pinned buffer a stream keeps (inputs or results beyond it are copied
/// through pageable memory).
pub(super) const PINNED_MAX: usize = 32 << 20;
/// The smallest pinned buffer allocated: enough for most calls, so it seldom grows.
const PINNED_MIN: usize = 256 << 10;

/// Page-locked host memory from `cuMemHostAlloc`, freed with its context bound.
pub(super) struct PinnedBytes {
    ctx: Arc<CudaContext>,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer is plain host memory owned by this value alone; nothing in it is
// tied to the thread that allocated it (`cuMemFreeHost` may run on any thread with the
// context bound, which `drop` does).
unsafe impl Send for PinnedBytes {}

impl PinnedBytes {
    /// `len` bytes (> 0). The caller has bound `ctx` to this thread.
    fn alloc(ctx: &Arc<CudaContext>, len: usize) -> Result<Self, BackendError> {
        // SAFETY: the context is current (the caller bound it); the bytes are only ever
        // read as u8 after a copy or a write of ours filled them.
        let raw = unsafe { result::malloc_host(len, 0) }.map_err(|e| oom_or_launch(e, 0))?;
        let ptr = NonNull::new(raw.cast::<u8>()).ok_or_else(|| BackendError::LaunchFailed {
            reason: "cuMemHostAlloc returned null".into(),
        })?;
        Ok(Self {
            ctx: Arc::clone(ctx),
            ptr,
            len,
        })
    }
}

impl Drop for PinnedBytes {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // SAFETY: `ptr` came from `cuMemHostAlloc` and is freed once, here; every copy
        // that used it has finished (a stream whose wait failed leaks its buffer
        // instead: `CallScratch::abandon`).
        let _ = unsafe { result::free_host(self.ptr.as_ptr().cast()) };
    }
}

/// Where a call's results went: the pinned buffer, or pageable memory when they did not
/// fit it.
enum Results {
    None,
    /// The pinned buffer holds the arena's bytes from this offset on.
    Pinned(usize),
    /// These bytes are the arena's from this offset on.
    Owned(usize, Vec<u8>),
}

/// A pooled stream's arena, pinned buffer and timing events. See the module docs.
pub(super) struct CallScratch {
    /// This stream's cuBLAS handle, made by its first GEMM.
    cublas: Option<CublasHandle>,
    arena: Option<CudaSlice<u8>>,
    pinned: Option<PinnedBytes>,
    timing: Option<(CudaEvent, CudaEvent)>,
    results: Results,
}

impl CallScratch {
    pub(super) fn new() -> Self {
        Self {
            cublas: None,
            arena: None,
            pinned: None,
            timing: None,
            results: Results::None,
        }
    }

    /// Bytes the arena holds now.
    pub(super) fn arena_bytes(&self) -> usize {
        self.arena.as_ref().map_or(0, CudaSlice::len)
    }

    /// Frees the arena (on its stream, which orders the free after its work) and the
    /// pinned buffer (of an idle stream); returns whether there was an arena.
    pub(super) fn release(&mut self) -> bool {
        self.pinned = None;
        self.cublas = None;
        self.arena.take().is_some()
    }

    /// What a stream keeps when it goes back to the pool idle: an arena of at most
    /// `arena_max` bytes, a pinned buffer of at most [`PINNED_MAX`].
    pub(super) fn keep(&mut self, arena_max: usize) {
        if self.arena_bytes() > arena_max {
            self.arena = None;
        }
        self.results = Results::None;
    }

    /// Gives up the pinned buffer without freeing it: a stream whose wait failed may
    /// still have a copy queued that reads or writes it.
    pub(super) fn abandon(&mut self) {
        if let Some(p) = self.pinned.take() {
            std::mem::forget(p);
        }
    }

    /// This stream's cuBLAS handle (made on first use, bound to `stream`), taken out for
    /// one program; give it back with [`Self::put_cublas`].
    pub(super) fn take_cublas(
        &mut self,
        lib: &Arc<Cublas>,
        stream: sys::CUstream,
    ) -> Result<CublasHandle, BackendError> {
        match self.cublas.take() {
            Some(h) => Ok(h),
            None => lib.handle(stream),
        }
    }

    /// Makes this stream's cuBLAS handle now, unless it has one.
    pub(super) fn ensure_cublas(
        &mut self,
        lib: &Arc<Cublas>,
        stream: sys::CUstream,
    ) -> Result<(), BackendError> {
        if self.cublas.is_none() {
            self.cublas = Some(lib.handle(stream)?);
        }
        Ok(())
    }

    /// Keeps `h` for the stream's next GEMM.
    pub(super) fn put_cublas(&mut self, h: CublasHandle) {
        self.cublas = Some(h);
    }

    /// Readies the arena and the pinned buffer for `layout` on `stream` (idle, with the
    /// context bound) and returns the arena's device address.
    pub(super) fn prepare(
        &mut self,
        stream: &Arc<CudaStream>,
        layout: &Layout,
    ) -> Result<u64, BackendError> {
        if self.arena_bytes() < layout.total {
            // Freed and allocated in stream order: the pool may hand back the same bytes.
            self.arena = None;
            // SAFETY: the arena holds bytes, every pattern of which is valid; a program
            // reads nothing it did not write, and the inputs are copied in.
            let arena = unsafe { stream.alloc::<u8>(layout.total.max(ALIGN)) }
                .map_err(|e| oom_or_launch(e, layout.total as u64))?;
            self.arena = Some(arena);
        }
        let staged = layout.inputs_end.max(layout.results.len());
        let have = self.pinned.as_ref().map_or(0, |p| p.len);
        if staged <= PINNED_MAX && have < staged {
            self.pinned = None;
            let len = staged.next_power_of_two().clamp(PINNED_MIN, PINNED_MAX);
            self.pinned = Some(PinnedBytes::alloc(stream.context(), len)?);
        }
        self.results = Results::None;
        let arena = self.arena.as_ref().expect("allocated above");
        let (base, _no_tracking) = arena.device_ptr(stream);
        Ok(base)
    }

    /// Queues the upload of the call's inputs into the arena at `base`, laid out as
    /// `layout` says: one copy through the pinned buffer when they fit it, else one
    /// from each pageable slice.
    pub(super) fn upload(
        &mut self,
        stream: sys::CUstream,
        base: u64,
        layout: &Layout,
        queries: &[f32],
        mask: Option<&[u32]>,
    ) -> Result<(), BackendError> {
        let mask = mask.unwrap_or(&[]);
        let queries_bytes: &[u8] = bytemuck::cast_slice(queries);
        let mask_bytes: &[u8] = bytemuck::cast_slice(mask);
        let oom = |e| oom_or_launch(e, layout.inputs_end as u64);
        match self.pinned.as_mut().filter(|p| p.len >= layout.inputs_end) {
            Some(p) => {
                // SAFETY: the stream is idle (`prepare`), so no copy reads the pinned
                // buffer now; it holds `inputs_end` bytes (checked above), and the
                // layout places the queries and the mask inside them.
                let host = unsafe { std::slice::from_raw_parts_mut(p.ptr.as_ptr(), p.len) };
                host[layout.queries..layout.queries + queries_bytes.len()]
                    .copy_from_slice(queries_bytes);
                host[layout.mask..layout.mask + mask_bytes.len()].copy_from_slice(mask_bytes);
                // SAFETY: the arena holds `layout.total ≥ inputs_end` bytes from `base`;
                // the pinned source lives until the stream's work is done (it is freed
                // only after a successful wait, and leaked otherwise).
                unsafe {
                    sys::cuMemcpyHtoDAsync_v2(
                        base,
                        p.ptr.as_ptr().cast(),
                        layout.inputs_end,
                        stream,
                    )
                }
                .result()
                .map_err(oom)?;
            }
            None => {
                for (at, bytes) in [(layout.queries, queries_bytes), (layout.mask, mask_bytes)] {
                    if bytes.is_empty() {
                        continue;
                    }
                    // SAFETY: the destination lies inside the arena (the layout sizes
                    // it); a pageable source is staged by the driver before the call
                    // returns.
                    unsafe { result::memcpy_htod_async(base + at as u64, bytes, stream) }
                        .map_err(oom)?;
                }
            }
        }
        Ok(())
    }

    /// Queues the read-back of `range` of the arena at `base` (the call's results):
    /// into the pinned buffer when they fit it (readable after the stream's wait), else
    /// into pageable memory (done when this returns).
    pub(super) fn read_back(
        &mut self,
        stream: sys::CUstream,
        base: u64,
        range: Range<usize>,
    ) -> Result<(), BackendError> {
        let src = base + range.start as u64;
        match self.pinned.as_ref().filter(|p| p.len >= range.len()) {
            Some(p) => {
                // SAFETY: the range lies inside the arena (the layout's results); the
                // pinned buffer holds `range.len()` bytes and is read by the host only
                // after the stream's wait.
                unsafe {
                    sys::cuMemcpyDtoHAsync_v2(p.ptr.as_ptr().cast(), src, range.len(), stream)
                }
                .result()
                .map_err(launch_failed)?;
                self.results = Results::Pinned(range.start);
            }
            None => {
                let mut host = vec![0u8; range.len()];
                // SAFETY: as above; a copy into pageable memory is done when it returns.
                unsafe { result::memcpy_dtoh_async(&mut host, src, stream) }
                    .map_err(launch_failed)?;
                self.results = Results::Owned(range.start, host);
            }
        }
        Ok(())
    }

    /// Bytes `range` of the arena, inside the range [`Self::read_back`] copied, as
    /// `T`s; empty when nothing was read back. Call only after the stream's wait.
    pub(super) fn results<T: bytemuck::Pod>(&self, range: Range<usize>) -> Vec<T> {
        let (first, bytes): (usize, &[u8]) = match &self.results {
            Results::None => return Vec::new(),
            Results::Owned(first, v) => (*first, v),
            Results::Pinned(first) => match &self.pinned {
                // SAFETY: the stream's wait finished the copy into the buffer, and
                // nothing writes it until the next call's `prepare`.
                Some(p) => (*first, unsafe {
                    std::slice::from_raw_parts(p.ptr.as_ptr(), p.len)
                }),
                None => return Vec::new(),
            },
        };
        range
            .start
            .checked_sub(first)
            .and_then(|at| bytes.get(at..at + range.len()))
            .map_or_else(Vec::new, |b| {
                b.chunks_exact(size_of::<T>())
                    .map(bytemuck::pod_read_unaligned)
                    .collect()
            })
    }

    /// Records the timing event `which` (0: start, 1: end) on `stream`, creating both
    /// on first use.
    pub(super) fn mark(
        &mut self,
        stream: &Arc<CudaStream>,
        which: usize,
    ) -> Result<(), BackendError> {
        if self.timing.is_none() {
            let ctx = stream.context();
            let new = || ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT));
            self.timing = Some((new().map_err(launch_failed)?, new().map_err(launch_failed)?));
        }
        let (start, end) = self.timing.as_ref().expect("created above");
        let event = if which == 0 { start } else { end };
        // SAFETY: both handles are live events of the stream's context.
        unsafe { result::event::record(event.cu_event(), stream.cu_stream()) }
            .map_err(launch_failed)
    }

    /// Milliseconds between the two timing events (after the stream's wait).
    pub(super) fn elapsed_ms(&self) -> Option<f32> {
        let (start, end) = self.timing.as_ref()?;
        // SAFETY: both are live events, recorded and complete (the stream waited).
        unsafe { result::event::elapsed(start.cu_event(), end.cu_event()) }.ok()
    }
}

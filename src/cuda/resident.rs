//! The device-resident corpus: uploaded once through pinned staging buffers, extended in
//! place when the same store has grown, and its 16-bit copy made on the first
//! [`Precision::Fp16`](super::Precision::Fp16) or [`Precision::Bf16`](super::Precision::Bf16)
//! call.
//!
//! The inverse row norms are the host's, uploaded beside the rows: the host sums squares
//! in f64, so rows with norms far from 1 (1e-25, 1e25: their f32 sums of squares
//! underflow or overflow) score on the device as they do on the CPU.

use super::error::{corpus_oom, launch_failed};
use super::launch::{self, Bound, Kernels};
use super::program;
use super::streams::WaitOnDrop;
use super::Half;
use crate::backend::BackendError;
use crate::corpus::{CorpusView, Origin};
use cudarc::driver::{CudaContext, CudaEvent, CudaSlice, CudaStream, DriverError};
use parking_lot::Mutex;
use rayon::prelude::*;
use std::sync::Arc;

/// Bytes of each pinned staging buffer the corpus upload cycles through, at most.
const STAGE_BYTES: usize = 32 << 20;
/// ... and at least: smaller uploads take one buffer, larger ones at least four rounds,
/// so that the buffers' reuse (and its wait) runs for any corpus over 256 KiB.
const MIN_STAGE_BYTES: usize = 64 << 10;

/// A corpus copy on the device, with the host's inverse norms.
pub(super) struct Resident {
    origin: Origin,
    rows: usize,
    dim: usize,
    data: CudaSlice<f32>,
    inv: CudaSlice<f32>,
    /// The 16-bit copy (unit-norm rows) and its format, made on the first call that
    /// reads it.
    half: Mutex<Option<(Half, Arc<CudaSlice<u16>>)>>,
    /// L2's row biases `−‖row‖²/2` of the first rows, uploaded on the first L2 call.
    bias: Mutex<Option<Arc<CudaSlice<f32>>>>,
}

/// The one corpus copy a backend keeps between calls.
#[derive(Default)]
pub(super) struct ResidentSlot(Mutex<Option<Arc<Resident>>>);

impl ResidentSlot {
    /// The device copy of `corpus`: reused when it is the same corpus, extended by the
    /// appended rows when it is the same store grown, uploaded otherwise.
    pub(super) fn get(
        &self,
        ctx: &Arc<CudaContext>,
        corpus: CorpusView<'_>,
        stream: &Arc<CudaStream>,
    ) -> Result<Arc<Resident>, BackendError> {
        let mut slot = self.0.lock();
        if let Some(r) = slot.as_ref() {
            if r.origin == corpus.origin() && r.dim == corpus.dim() && r.rows >= corpus.rows() {
                return Ok(Arc::clone(r));
            }
        }
        let (n, dim) = (corpus.rows(), corpus.dim());
        let keep = match (slot.as_ref(), corpus.origin()) {
            (Some(r), Origin::Store(_)) if r.origin == corpus.origin() && r.dim == dim => r.rows,
            _ => 0,
        };
        let bytes = (n * dim * 4 + n * 4) as u64;
        // Drop the old copy first unless its rows are reused.
        let old = if keep > 0 { slot.take() } else { None };
        *slot = None;
        // Dropped before `old` on every way out: the old copy is freed from its own
        // stream, so this one must have finished reading it.
        let _copied = WaitOnDrop(stream);
        // SAFETY: every element of both is written below (a device copy of the kept rows
        // and an upload of the rest) before any kernel reads it.
        let (data, inv) = unsafe { (stream.alloc::<f32>(n * dim), stream.alloc::<f32>(n)) };
        let (mut data, mut inv) = (
            data.map_err(|e| corpus_oom(e, bytes))?,
            inv.map_err(|e| corpus_oom(e, bytes))?,
        );
        if let Some(old) = &old {
            stream
                .memcpy_dtod(
                    &old.data.slice(..keep * dim),
                    &mut data.slice_mut(..keep * dim),
                )
                .map_err(launch_failed)?;
            stream
                .memcpy_dtod(&old.inv.slice(..keep), &mut inv.slice_mut(..keep))
                .map_err(launch_failed)?;
        }
        if old.is_some() {
            // Before the old copy goes (see `_copied`), here to free its memory for the
            // upload.
            stream.synchronize().map_err(launch_failed)?;
        }
        drop(old);
        upload(
            ctx,
            &corpus.matrix().as_slice()[keep * dim..],
            &mut data,
            keep * dim,
            stream,
        )
        .map_err(|e| corpus_oom(e, bytes))?;
        upload(
            ctx,
            &corpus.cosine_inv_norms()[keep..],
            &mut inv,
            keep,
            stream,
        )
        .map_err(|e| corpus_oom(e, bytes))?;
        let r = Resident {
            origin: corpus.origin(),
            rows: n,
            dim,
            data,
            inv,
            half: Mutex::new(None),
            bias: Mutex::new(None),
        };
        // Other calls use the copy from their own streams: finish writing it first.
        stream.synchronize().map_err(launch_failed)?;
        let r = Arc::new(r);
        *slot = Some(Arc::clone(&r));
        Ok(r)
    }
}

impl Resident {
    /// This copy's buffers for a program to run against, with its 16-bit copy when the
    /// program reads it (a call adds its L2 biases and its arena).
    pub(super) fn bound<'a>(&'a self, corpus_half: Option<&'a CudaSlice<u16>>) -> Bound<'a> {
        Bound {
            corpus: Some(&self.data),
            inv_norms: Some(&self.inv),
            corpus_half,
            bias: None,
            arena: (0, 0),
        }
    }

    /// The 16-bit copy of this corpus in format `half`, made (and kept with it, in place
    /// of one in the other format) on first use.
    pub(super) fn half(
        &self,
        kernels: &Kernels,
        stream: &Arc<CudaStream>,
        half: Half,
    ) -> Result<Arc<CudaSlice<u16>>, BackendError> {
        let res = self;
        let mut slot = res.half.lock();
        if let Some((_, h)) = slot.as_ref().filter(|(format, _)| *format == half) {
            return Ok(Arc::clone(h));
        }
        // Free the other format's copy before making this one.
        *slot = None;
        let format = half;
        let len = res.rows * res.dim;
        let half = stream
            .alloc_zeros::<u16>(len)
            .map_err(|e| corpus_oom(e, (len * 2) as u64))?;
        let copy = program::rows_to_half(res.rows, res.dim, format);
        // `alloc_zeros` bound the context to this thread.
        let layout = copy.layout();
        launch::run(
            kernels,
            stream,
            stream.cu_stream(),
            &copy,
            &layout,
            res.bound(Some(&half)),
            None,
        )?;
        // Other calls read it from their own streams.
        stream.synchronize().map_err(launch_failed)?;
        let half = Arc::new(half);
        *slot = Some((format, Arc::clone(&half)));
        Ok(half)
    }
}

impl Resident {
    /// L2's biases `−‖row‖²/2` of `corpus`'s rows (summed in f64 on the host, as the
    /// CPU's are, from the rows themselves: a row deleted later keeps its bias, and the
    /// live mask leaves it out), uploaded on first use and kept with this copy. A view
    /// of more rows than the kept biases cover uploads them again.
    pub(super) fn bias(
        &self,
        corpus: CorpusView<'_>,
        stream: &Arc<CudaStream>,
    ) -> Result<Arc<CudaSlice<f32>>, BackendError> {
        let mut slot = self.bias.lock();
        if let Some(b) = slot.as_ref().filter(|b| b.len() >= corpus.rows()) {
            return Ok(Arc::clone(b));
        }
        let m = corpus.matrix();
        let host: Vec<f32> = (0..m.rows())
            .into_par_iter()
            .map(|r| (-0.5 * crate::simd::sum_squares_f64(m.row(r))) as f32)
            .collect();
        let bias = stream
            .clone_htod(&host)
            .map_err(|e| corpus_oom(e, (host.len() * 4) as u64))?;
        // Other calls read it from their own streams.
        stream.synchronize().map_err(launch_failed)?;
        let bias = Arc::new(bias);
        *slot = Some(Arc::clone(&bias));
        Ok(bias)
    }
}

/// Copies `host` to `data[at..]` through two pinned staging buffers, so that filling one
/// overlaps the copy out of the other.
fn upload(
    ctx: &Arc<CudaContext>,
    host: &[f32],
    data: &mut CudaSlice<f32>,
    at: usize,
    stream: &Arc<CudaStream>,
) -> Result<(), DriverError> {
    if host.is_empty() {
        return Ok(());
    }
    let stage_len = host
        .len()
        .div_ceil(4)
        .clamp(MIN_STAGE_BYTES / 4, STAGE_BYTES / 4)
        .min(host.len());
    // SAFETY: a staging buffer is fully written before each copy out of it, and only
    // the written prefix is copied.
    let mut stages = unsafe {
        [
            ctx.alloc_pinned::<f32>(stage_len)?,
            ctx.alloc_pinned::<f32>(stage_len)?,
        ]
    };
    // Dropped before the buffers (declared after them), on every way out: an early return
    // must not free a buffer a queued copy still reads.
    let _drain = WaitOnDrop(stream);
    let mut in_flight: [Option<CudaEvent>; 2] = [None, None];
    for (i, part) in host.chunks(stage_len).enumerate() {
        let s = i % 2;
        // The copy out of this stage two rounds ago must be done before it is refilled.
        if let Some(done) = in_flight[s].take() {
            done.synchronize()?;
        }
        let buf = &mut stages[s].as_mut_slice()?[..part.len()];
        buf.copy_from_slice(part);
        let from = at + i * stage_len;
        stream.memcpy_htod(&*buf, &mut data.slice_mut(from..from + part.len()))?;
        in_flight[s] = Some(stream.record_event(None)?);
    }
    for done in in_flight.into_iter().flatten() {
        done.synchronize()?;
    }
    Ok(())
}

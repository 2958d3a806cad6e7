//! The device-resident corpus: uploaded once through pinned staging buffers, extended in
//! place when the same store has grown. An f32 corpus gets its 16-bit copy on the first
//! [`Precision::Fp16`](super::Precision::Fp16) or [`Precision::Bf16`](super::Precision::Bf16)
//! call. A corpus stored in FP16 or BF16 is kept as stored, half the bytes, with no f32
//! copy: the kernels widen its rows as they read them.
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
use cudarc::driver::{
    CudaContext, CudaEvent, CudaSlice, CudaStream, DeviceRepr, DriverError, ValidAsZeroBits,
};
use parking_lot::Mutex;
use rayon::prelude::*;
use std::sync::Arc;

/// Bytes of each pinned staging buffer the corpus upload cycles through, at most.
const STAGE_BYTES: usize = 32 << 20;
/// ... and at least: smaller uploads take one buffer, larger ones at least four rounds,
/// so that the buffers' reuse (and its wait) runs for any corpus over 256 KiB.
const MIN_STAGE_BYTES: usize = 64 << 10;

/// The rows of a resident corpus, as the host stores them.
enum Rows {
    /// An f32 corpus.
    F32(CudaSlice<f32>),
    /// A corpus stored in 16 bits, in this format: its bits as stored.
    Stored(Half, Arc<CudaSlice<u16>>),
}

/// A corpus copy on the device, with the host's inverse norms.
pub(super) struct Resident {
    origin: Origin,
    rows: usize,
    dim: usize,
    data: Rows,
    inv: CudaSlice<f32>,
    /// An f32 corpus's 16-bit copy (unit-norm rows) and its format, made on the first
    /// call that reads it.
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
        let (n, dim) = (corpus.rows(), corpus.dim());
        let stored = corpus.half_bits().map(|(h, bits)| (Half::from(h), bits));
        let format = stored.map(|(h, _)| h);
        let same =
            |r: &Resident| r.origin == corpus.origin() && r.dim == dim && r.stored() == format;
        if let Some(r) = slot.as_ref().filter(|r| same(r) && r.rows >= n) {
            return Ok(Arc::clone(r));
        }
        let keep = match (slot.as_ref(), corpus.origin()) {
            (Some(r), origin) if origin.appends() && same(r) => r.rows,
            _ => 0,
        };
        let elem = if format.is_some() { 2 } else { 4 };
        let bytes = (n * dim * elem + n * 4) as u64;
        // Drop the old copy first unless its rows are reused.
        let old = if keep > 0 { slot.take() } else { None };
        *slot = None;
        // Dropped before `old` on every way out: the old copy is freed from its own
        // stream, so this one must have finished reading it.
        let _copied = WaitOnDrop(stream);
        let oom = |e| corpus_oom(e, bytes);
        let old_rows = old.as_ref().map(|o| &o.data);
        // SAFETY: the rows past `keep` (of each below) are uploaded before any kernel reads
        // them.
        let mut inv =
            unsafe { alloc_keeping(stream, n, old.as_ref().map(|o| &o.inv), keep) }.map_err(oom)?;
        let data = match stored {
            None => {
                let old = match old_rows {
                    Some(Rows::F32(d)) => Some(d),
                    _ => None,
                };
                // SAFETY: as above.
                Rows::F32(unsafe { alloc_keeping(stream, n * dim, old, keep * dim) }.map_err(oom)?)
            }
            Some((h, _)) => {
                let old = match old_rows {
                    Some(Rows::Stored(_, d)) => Some(&**d),
                    _ => None,
                };
                // SAFETY: as above.
                let data = unsafe { alloc_keeping(stream, n * dim, old, keep * dim) };
                Rows::Stored(h, Arc::new(data.map_err(oom)?))
            }
        };
        if old.is_some() {
            // Before the old copy goes (see `_copied`), here to free its memory for the
            // upload.
            stream.synchronize().map_err(launch_failed)?;
        }
        drop(old);
        let mut data = data;
        match (&mut data, stored) {
            (Rows::F32(d), _) => upload(
                ctx,
                &corpus.matrix().as_slice()[keep * dim..],
                d,
                keep * dim,
                stream,
            ),
            (Rows::Stored(_, d), Some((_, bits))) => {
                let d = Arc::get_mut(d).expect("a new copy has one owner");
                upload(ctx, &bits[keep * dim..], d, keep * dim, stream)
            }
            (Rows::Stored(..), None) => unreachable!("16-bit rows come from a 16-bit view"),
        }
        .map_err(oom)?;
        upload(
            ctx,
            &corpus.cosine_inv_norms()[keep..],
            &mut inv,
            keep,
            stream,
        )
        .map_err(oom)?;
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
        let corpus = match &self.data {
            Rows::F32(d) => Some(d),
            Rows::Stored(..) => None,
        };
        Bound {
            corpus,
            inv_norms: Some(&self.inv),
            corpus_half,
            bias: None,
            codes: None,
            code_bounds: None,
            arena: (0, 0),
        }
    }

    /// The format of a corpus kept as stored in 16 bits; `None` for f32.
    pub(super) fn stored(&self) -> Option<Half> {
        match &self.data {
            Rows::F32(_) => None,
            Rows::Stored(h, _) => Some(*h),
        }
    }

    /// The 16-bit rows the kernels read: a 16-bit corpus's own, whatever `half` asks;
    /// for an f32 corpus, its unit-norm copy in format `half`, made (and kept with it, in
    /// place of one in the other format) on first use.
    pub(super) fn half(
        &self,
        kernels: &Kernels,
        stream: &Arc<CudaStream>,
        half: Half,
    ) -> Result<Arc<CudaSlice<u16>>, BackendError> {
        if let Rows::Stored(_, bits) = &self.data {
            return Ok(Arc::clone(bits));
        }
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
        let bias = Arc::new(row_biases(corpus, stream)?);
        *slot = Some(Arc::clone(&bias));
        Ok(bias)
    }
}

/// L2's biases `−‖row‖²/2` of `corpus`'s rows, summed in f64 on the host as the CPU's
/// are (row by row as stored: a 16-bit corpus is not widened whole), on the device.
pub(super) fn row_biases(
    corpus: CorpusView<'_>,
    stream: &Arc<CudaStream>,
) -> Result<CudaSlice<f32>, BackendError> {
    let host: Vec<f32> = (0..corpus.rows())
        .into_par_iter()
        .map_init(Vec::new, |row, r| {
            row.clear();
            corpus.push_row_f32(r, row);
            (-0.5 * crate::simd::sum_squares_f64(row)) as f32
        })
        .collect();
    let bias = stream
        .clone_htod(&host)
        .map_err(|e| corpus_oom(e, (host.len() * 4) as u64))?;
    // Other calls read it from their own streams.
    stream.synchronize().map_err(launch_failed)?;
    Ok(bias)
}

/// A new device buffer of `len` elements whose first `keep` are `old`'s, copied on the
/// device (queued on `stream`): the kept part of a copy that grows. A failed copy comes
/// back as the driver's error, as a failed allocation does.
///
/// # Safety
/// Elements `keep..len` are written (say by [`upload`]) before any kernel reads them.
pub(super) unsafe fn alloc_keeping<T: DeviceRepr>(
    stream: &Arc<CudaStream>,
    len: usize,
    old: Option<&CudaSlice<T>>,
    keep: usize,
) -> Result<CudaSlice<T>, DriverError> {
    // SAFETY: the first `keep` elements are copied below, and the caller writes the rest
    // (this function's contract).
    let mut new = unsafe { stream.alloc::<T>(len) }?;
    if let Some(old) = old.filter(|_| keep > 0) {
        stream.memcpy_dtod(&old.slice(..keep), &mut new.slice_mut(..keep))?;
    }
    Ok(new)
}

/// Copies `host` to `data[at..]` through two pinned staging buffers, so that filling one
/// overlaps the copy out of the other.
pub(super) fn upload<T: DeviceRepr + ValidAsZeroBits + Copy>(
    ctx: &Arc<CudaContext>,
    host: &[T],
    data: &mut CudaSlice<T>,
    at: usize,
    stream: &Arc<CudaStream>,
) -> Result<(), DriverError> {
    if host.is_empty() {
        return Ok(());
    }
    let stage_len = host
        .len()
        .div_ceil(4)
        .clamp(
            MIN_STAGE_BYTES / size_of::<T>(),
            STAGE_BYTES / size_of::<T>(),
        )
        .min(host.len());
    // SAFETY: a staging buffer is fully written before each copy out of it, and only
    // the written prefix is copied.
    let mut stages = unsafe {
        [
            ctx.alloc_pinned::<T>(stage_len)?,
            ctx.alloc_pinned::<T>(stage_len)?,
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

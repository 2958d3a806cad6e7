//! A corpus's int8 tier kept on the device apart from its rows (see `program::int8`):
//! the codes, each row's bounds and the rows' inverse norms, about a quarter of the f32
//! rows' bytes. Kept apart so that the device proves a certified search's candidates even
//! where the rows themselves do not fit beside the tier; the backend then scores the
//! candidates alone, gathered and uploaded for the call.

use super::error::{corpus_oom, launch_failed};
use super::launch::Bound;
use super::resident::{alloc_keeping, row_biases, upload};
use super::streams::WaitOnDrop;
use crate::backend::BackendError;
use crate::corpus::{CorpusView, Origin};
use crate::quant::tier::TierRef;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use parking_lot::Mutex;
use std::sync::Arc;

/// An int8 tier on the device.
pub(super) struct Int8Copy {
    origin: Origin,
    rows: usize,
    dim: usize,
    codes: CudaSlice<i8>,
    /// Four f32 a row: scale, residual bound, norm bound, coded-norm bound.
    bounds: CudaSlice<f32>,
    /// The rows' cosine inverse norms (the host's).
    inv: CudaSlice<f32>,
    /// L2's row biases, uploaded on the first L2 call.
    bias: Mutex<Option<Arc<CudaSlice<f32>>>>,
}

/// The one int8 tier a backend keeps between calls.
#[derive(Default)]
pub(super) struct Int8Slot(Mutex<Option<Arc<Int8Copy>>>);

impl Int8Slot {
    /// The device copy of `corpus`'s int8 `tier`: reused when it is the same corpus with
    /// as many rows; extended by the appended rows when it is the same store grown (the
    /// kept rows copied on the device, as `ResidentSlot` does); uploaded whole otherwise
    /// (the old one freed first).
    pub(super) fn get(
        &self,
        ctx: &Arc<CudaContext>,
        corpus: CorpusView<'_>,
        tier: TierRef<'_>,
        stream: &Arc<CudaStream>,
    ) -> Result<Arc<Int8Copy>, BackendError> {
        let mut slot = self.0.lock();
        let (n, dim) = (tier.rows(), corpus.dim());
        if let Some(c) = slot
            .as_ref()
            .filter(|c| c.origin == corpus.origin() && c.rows == n && c.dim == dim)
        {
            return Ok(Arc::clone(c));
        }
        // A store's rows below the kept copy's count never change: keep them.
        let keep = match slot.as_ref() {
            Some(c) if corpus.origin().appends() && c.origin == corpus.origin() && c.dim == dim => {
                c.rows.min(n)
            }
            _ => 0,
        };
        // Calls in flight hold their own reference to the old copy.
        let old = slot.take().filter(|_| keep > 0);
        let (codes, bounds) = (tier.codes(), tier.bounds_f32());
        let inv = corpus.cosine_inv_norms();
        let oom = |e| corpus_oom(e, (codes.len() + 4 * (bounds.len() + inv.len())) as u64);
        // Dropped before `old` on every way out: its copies out of the old buffers (on
        // this stream) must have run before they are freed.
        let _copied = WaitOnDrop(stream);
        let per_row = bounds.len() / n.max(1);
        let old = old.as_deref();
        // SAFETY: the rest of each (past the kept rows, copied on the device) is
        // uploaded below before any kernel reads it.
        let (mut c, mut b, mut v) = unsafe {
            (
                alloc_keeping(
                    stream,
                    codes.len().max(1),
                    old.map(|o| &o.codes),
                    keep * dim,
                )
                .map_err(oom)?,
                alloc_keeping(
                    stream,
                    bounds.len().max(1),
                    old.map(|o| &o.bounds),
                    keep * per_row,
                )
                .map_err(oom)?,
                alloc_keeping(stream, inv.len().max(1), old.map(|o| &o.inv), keep).map_err(oom)?,
            )
        };
        upload(ctx, &codes[keep * dim..], &mut c, keep * dim, stream).map_err(oom)?;
        upload(
            ctx,
            &bounds[keep * per_row..],
            &mut b,
            keep * per_row,
            stream,
        )
        .map_err(oom)?;
        upload(ctx, &inv[keep..], &mut v, keep, stream).map_err(oom)?;
        // Other calls read it from their own streams.
        stream.synchronize().map_err(launch_failed)?;
        let copy = Arc::new(Int8Copy {
            origin: corpus.origin(),
            rows: n,
            dim,
            codes: c,
            bounds: b,
            inv: v,
            bias: Mutex::new(None),
        });
        *slot = Some(Arc::clone(&copy));
        Ok(copy)
    }
}

impl Int8Copy {
    /// L2's row biases of `corpus` (the rows this tier codes), uploaded on first use.
    pub(super) fn bias(
        &self,
        corpus: CorpusView<'_>,
        stream: &Arc<CudaStream>,
    ) -> Result<Arc<CudaSlice<f32>>, BackendError> {
        let mut slot = self.bias.lock();
        if let Some(b) = slot.as_ref() {
            return Ok(Arc::clone(b));
        }
        let bias = Arc::new(row_biases(corpus, stream)?);
        *slot = Some(Arc::clone(&bias));
        Ok(bias)
    }

    /// The buffers an int8 program runs against (a call adds its arena).
    pub(super) fn bound<'a>(&'a self, bias: Option<&'a CudaSlice<f32>>) -> Bound<'a> {
        Bound {
            corpus: None,
            inv_norms: Some(&self.inv),
            corpus_half: None,
            bias,
            codes: Some(&self.codes),
            code_bounds: Some(&self.bounds),
            arena: (0, 0),
        }
    }
}

//! The CUDA backend: a device-resident corpus, the kernels of `kernels/*.cu`, chunking
//! planned from free device memory. Every driver call goes through `cudarc`, loaded at run
//! time; nothing here runs unless [`super::start`] found a usable device.

use super::plan::{self, MAX_K, SEGMENT};
use crate::executor::{Backend, BackendError, BackendKind, Rates};
use crate::hit::Hit;
use crate::matrix::{CorpusView, MatrixRef, Origin, Scores};
use cudarc::driver::sys::{CUdevice_attribute, CUresult};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DriverError, LaunchConfig, PushKernelArg,
};
use parking_lot::Mutex;
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// Queries the memory-bound scorer takes per launch (`HV_SMALL_Q`).
const SMALL_Q: usize = 8;
/// Shared memory the small-batch scorer may use for queries.
const SMALL_Q_SMEM: usize = 48 * 1024;

thread_local! {
    static LAST_DEVICE_TIME: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// Device time (CUDA events around the upload check, kernels and copies) of the last
/// `top_k` this thread ran on the CUDA backend, taken (the next call returns `None` until
/// another one ran).
pub fn take_device_time() -> Option<Duration> {
    LAST_DEVICE_TIME.with(Cell::take)
}

struct Kernels {
    inv_norms: CudaFunction,
    score_small_q: CudaFunction,
    score_tiled: CudaFunction,
    select_topk: CudaFunction,
    sort_topk: CudaFunction,
}

/// A corpus copy on the device, with the inverse norms computed there.
struct Resident {
    origin: Origin,
    rows: usize,
    dim: usize,
    data: CudaSlice<f32>,
    inv: CudaSlice<f32>,
}

/// The GPU side of the hybrid executor.
pub(crate) struct CudaBackend {
    ctx: Arc<CudaContext>,
    name: String,
    total_memory: u64,
    kernels: Kernels,
    resident: Mutex<Option<Arc<Resident>>>,
    rates: Rates,
    /// Share of free memory a call may plan to use.
    margin: f64,
    /// Pretend at most this much is free (tests of chunking under pressure).
    budget: Option<u64>,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("name", &self.name)
            .field("total_memory", &self.total_memory)
            .finish()
    }
}

fn oom_or_launch(e: DriverError, requested: u64) -> BackendError {
    if e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        BackendError::OutOfMemory { requested }
    } else {
        BackendError::LaunchFailed {
            reason: e.to_string(),
        }
    }
}

fn launch_failed(e: DriverError) -> BackendError {
    oom_or_launch(e, 0)
}

impl CudaBackend {
    /// Opens device 0 and loads the kernels. Errors are reasons, for `CudaUnavailable`.
    pub(crate) fn open(margin: f64, budget: Option<u64>) -> std::result::Result<Self, String> {
        let ctx = CudaContext::new(0).map_err(|e| format!("cannot create a CUDA context: {e}"))?;
        let name = ctx.name().map_err(|e| format!("device name: {e}"))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| format!("compute capability: {e}"))?;
        if major < 8 {
            return Err(format!(
                "{name} has compute capability {major}.{minor}; the kernels need 8.0 or newer"
            ));
        }
        let total_memory = ctx.total_mem().map_err(|e| format!("memory size: {e}"))? as u64;
        let load = |file: &str, func: &str| -> std::result::Result<CudaFunction, String> {
            let (_, image, is_ptx) = KERNEL_IMAGES
                .iter()
                .find(|(n, _, _)| *n == file)
                .ok_or_else(|| format!("kernel image {file} missing from the build"))?;
            let ptx = if *is_ptx {
                let text = std::str::from_utf8(&image[..image.len() - 1])
                    .map_err(|e| format!("{file}.ptx is not text: {e}"))?;
                cudarc::nvrtc::Ptx::from_src(text)
            } else {
                cudarc::nvrtc::Ptx::from_binary(image.to_vec())
            };
            let module = ctx
                .load_module(ptx)
                .map_err(|e| format!("loading {file} ({KERNEL_BUILD}): {e}"))?;
            module
                .load_function(func)
                .map_err(|e| format!("kernel {func}: {e}"))
        };
        let kernels = Kernels {
            inv_norms: load("norms", "hv_row_inv_norms")?,
            score_small_q: load("score", "hv_score_small_q")?,
            score_tiled: load("score", "hv_score_tiled")?,
            select_topk: load("topk", "hv_select_topk")?,
            sort_topk: load("topk", "hv_sort_topk")?,
        };
        let attr = |a| ctx.attribute(a).unwrap_or(0) as f64;
        let sms = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
        let clock_khz = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_CLOCK_RATE);
        let mem_khz = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE);
        let bus_bits = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH);
        let rates = Rates {
            // 128 FP32 lanes per SM, 2 FLOP per FMA.
            flops: (sms * 128.0 * 2.0 * clock_khz * 1e3).max(1e12),
            // Double data rate.
            bytes_per_sec: (2.0 * mem_khz * 1e3 * bus_bits / 8.0).max(1e11),
            overhead: Duration::from_micros(30),
        };
        Ok(Self {
            ctx,
            name,
            total_memory,
            kernels,
            resident: Mutex::new(None),
            rates,
            margin,
            budget,
        })
    }

    pub(crate) fn device_name(&self) -> &str {
        &self.name
    }

    pub(crate) fn total_memory(&self) -> u64 {
        self.total_memory
    }

    fn free_memory(&self) -> Result<u64, BackendError> {
        let (free, _) = self.ctx.mem_get_info().map_err(launch_failed)?;
        Ok(self.budget.map_or(free as u64, |b| b.min(free as u64)))
    }

    /// The device copy of `corpus`: reused when it is the same corpus, extended by the
    /// appended rows when it is the same store grown, uploaded otherwise.
    fn resident(
        &self,
        corpus: CorpusView<'_>,
        stream: &Arc<CudaStream>,
    ) -> Result<Arc<Resident>, BackendError> {
        let mut slot = self.resident.lock();
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
        // SAFETY: every element is written below (a device copy of the kept rows and an
        // upload of the rest) before any kernel reads it.
        let mut data =
            unsafe { stream.alloc::<f32>(n * dim) }.map_err(|e| oom_or_launch(e, bytes))?;
        let mut inv = stream
            .alloc_zeros::<f32>(n)
            .map_err(|e| oom_or_launch(e, bytes))?;
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
        drop(old);
        // The appended rows, through pinned staging buffers of 32 MiB.
        let host = corpus.matrix().as_slice();
        let stage_len = (32 << 20) / 4 / dim.max(1) * dim.max(1);
        // SAFETY: the staging buffer is fully written before each copy out of it.
        let mut stage = unsafe { self.ctx.alloc_pinned::<f32>(stage_len.max(dim)) }
            .map_err(|e| oom_or_launch(e, bytes))?;
        let mut at = keep * dim;
        while at < n * dim {
            let len = stage_len.min(n * dim - at);
            let buf = stage.as_mut_slice().map_err(launch_failed)?;
            buf[..len].copy_from_slice(&host[at..at + len]);
            stream
                .memcpy_htod(&buf[..len], &mut data.slice_mut(at..at + len))
                .map_err(launch_failed)?;
            // The copy from pinned memory is asynchronous: finish it before the staging
            // buffer is refilled.
            stream.synchronize().map_err(launch_failed)?;
            at += len;
        }
        let new_rows = (n - keep) as i64;
        if new_rows > 0 {
            let data_view = data.slice(keep * dim..);
            let mut inv_view = inv.slice_mut(keep..);
            let dim_i = dim as i32;
            let blocks = (new_rows as u64 * 32).div_ceil(256) as u32;
            let cfg = LaunchConfig {
                grid_dim: (blocks, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut b = stream.launch_builder(&self.kernels.inv_norms);
            b.arg(&data_view)
                .arg(&new_rows)
                .arg(&dim_i)
                .arg(&mut inv_view);
            // SAFETY: hv_row_inv_norms(x, rows, dim, inv) reads rows × dim floats of
            // `data_view` and writes `rows` floats of `inv_view`; both views hold exactly
            // that many elements, and the argument types match the kernel's signature.
            unsafe { b.launch(cfg) }.map_err(launch_failed)?;
        }
        let r = Arc::new(Resident {
            origin: corpus.origin(),
            rows: n,
            dim,
            data,
            inv,
        });
        *slot = Some(Arc::clone(&r));
        Ok(r)
    }

    /// The live-row mask of a store view (one bit per row), or `None` when every row is live.
    fn live_mask(corpus: CorpusView<'_>) -> Option<Vec<u32>> {
        if !matches!(corpus.origin(), Origin::Store(_)) {
            return None;
        }
        let inv = corpus.inv_norms();
        if !inv.iter().any(|x| x.is_nan()) {
            return None;
        }
        let mut bits = vec![0u32; inv.len().div_ceil(32)];
        for (i, x) in inv.iter().enumerate() {
            if !x.is_nan() {
                bits[i / 32] |= 1 << (i % 32);
            }
        }
        Some(bits)
    }

    /// Scores `queries` against rows `row0 .. row0 + rows` into `out` (`Q × rows`, stride `rows`).
    #[allow(clippy::too_many_arguments)]
    fn score_chunk(
        &self,
        stream: &CudaStream,
        queries: &CudaSlice<f32>,
        nq: usize,
        res: &Resident,
        mask: Option<&CudaSlice<u32>>,
        row0: usize,
        rows: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), BackendError> {
        let dim = res.dim;
        let (dim_i, row0_i, rows_i, ld) = (dim as i32, row0 as i64, rows as i64, rows as i64);
        let null: u64 = 0;
        let small = nq <= SMALL_Q && nq * dim * 4 <= SMALL_Q_SMEM;
        if small {
            let nq_i = nq as i32;
            let cfg = LaunchConfig {
                grid_dim: (rows.div_ceil(8).min(1 << 20) as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: (nq * dim * 4) as u32,
            };
            let mut b = stream.launch_builder(&self.kernels.score_small_q);
            b.arg(queries)
                .arg(&nq_i)
                .arg(&dim_i)
                .arg(&res.data)
                .arg(&res.inv);
            match mask {
                Some(m) => b.arg(m),
                None => b.arg(&null),
            };
            b.arg(&row0_i).arg(&rows_i).arg(out).arg(&ld);
            // SAFETY: hv_score_small_q reads nq × dim query floats (staged in nq·dim·4
            // bytes of dynamic shared memory, requested above and ≤ 48 KiB), rows
            // row0..row0+rows of the resident corpus and its norms (row0 + rows ≤
            // res.rows), the mask when non-null (one bit per resident row), and writes
            // nq × rows floats at stride `rows` into `out`, which holds at least that many.
            unsafe { b.launch(cfg) }.map_err(launch_failed)?;
        } else {
            for q0 in (0..nq).step_by(65535 * 64) {
                let qn = (nq - q0).min(65535 * 64);
                let qn_i = qn as i32;
                let cfg = LaunchConfig {
                    grid_dim: (rows.div_ceil(64) as u32, qn.div_ceil(64) as u32, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                };
                let qv = queries.slice(q0 * dim..(q0 + qn) * dim);
                let mut ov = out.slice_mut(q0 * rows..(q0 + qn) * rows);
                let mut b = stream.launch_builder(&self.kernels.score_tiled);
                b.arg(&qv)
                    .arg(&qn_i)
                    .arg(&dim_i)
                    .arg(&res.data)
                    .arg(&res.inv);
                match mask {
                    Some(m) => b.arg(m),
                    None => b.arg(&null),
                };
                b.arg(&row0_i).arg(&rows_i).arg(&mut ov).arg(&ld);
                // SAFETY: as for the small scorer: hv_score_tiled reads qn × dim query
                // floats of `qv`, rows row0..row0+rows of the resident corpus and norms,
                // and writes qn × rows floats at stride `rows` into `ov`, which holds
                // exactly that; out-of-range tile elements are guarded in the kernel.
                unsafe { b.launch(cfg) }.map_err(launch_failed)?;
            }
        }
        Ok(())
    }

    /// One radix-select pass: each query's `len` candidates (stride `ld`) → `k` per
    /// segment of [`SEGMENT`], written at `seg_offset` segments into rows of `out_ld`.
    #[allow(clippy::too_many_arguments)]
    fn select(
        &self,
        stream: &CudaStream,
        nq: usize,
        scores: &CudaSlice<f32>,
        indices: Option<&CudaSlice<i64>>,
        ld: usize,
        len: usize,
        index_base: usize,
        k: usize,
        out_scores: &mut CudaSlice<f32>,
        out_indices: &mut CudaSlice<i64>,
        out_ld: usize,
        seg_offset: usize,
    ) -> Result<(), BackendError> {
        let segs = len.div_ceil(SEGMENT);
        let null: u64 = 0;
        let (ld, len, base, k_i, out_ld, seg_offset) = (
            ld as i64,
            len as i64,
            index_base as i64,
            k as i32,
            out_ld as i64,
            seg_offset as i64,
        );
        let cfg = LaunchConfig {
            grid_dim: (segs as u32, nq as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = stream.launch_builder(&self.kernels.select_topk);
        b.arg(scores);
        match indices {
            Some(i) => b.arg(i),
            None => b.arg(&null),
        };
        b.arg(&ld).arg(&len).arg(&base).arg(&k_i);
        b.arg(out_scores)
            .arg(out_indices)
            .arg(&out_ld)
            .arg(&seg_offset);
        // SAFETY: hv_select_topk reads `len` candidates per query at stride `ld` (and the
        // same layout of indices when given), nq rows in all, within `scores`; it writes
        // k slots for each of its `segs` segments at (seg_offset + s) · k of each output
        // row of stride out_ld, and callers size the outputs as nq × out_ld with
        // (seg_offset + segs) · k ≤ out_ld. nq ≤ 65535 (grid y) is checked by the caller.
        unsafe { b.launch(cfg) }.map_err(launch_failed)?;
        Ok(())
    }

    fn top_k_device(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        k: usize,
    ) -> Result<Vec<Vec<Hit>>, BackendError> {
        let (nq, n, dim) = (queries.rows(), corpus.rows(), corpus.dim());
        if k > MAX_K {
            return Err(BackendError::Unsupported {
                reason: format!("k = {k} > {MAX_K}"),
            });
        }
        if nq > 65535 {
            return Err(BackendError::OutOfMemory {
                requested: (nq * dim * 4) as u64,
            });
        }
        let stream = self.ctx.new_stream().map_err(launch_failed)?;
        let start = stream
            .record_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(launch_failed)?;
        let res = self.resident(corpus, &stream)?;
        let plan = plan::plan(self.free_memory()?, self.margin, nq, n, dim, Some(k))
            .map_err(|requested| BackendError::OutOfMemory { requested })?;
        let oom = |e| oom_or_launch(e, plan.bytes);
        let q_dev = stream.clone_htod(queries.as_slice()).map_err(oom)?;
        let mask = match Self::live_mask(corpus) {
            Some(bits) => Some(stream.clone_htod(&bits).map_err(oom)?),
            None => None,
        };
        let r = plan.rows_per_chunk;
        let mut scores = stream.alloc_zeros::<f32>(nq * r).map_err(oom)?;
        let segs_per_chunk = r.div_ceil(SEGMENT);
        let total_segs = plan.chunks * segs_per_chunk;
        let cand_ld = total_segs * k;
        let mut cand_s = stream.alloc_zeros::<f32>(nq * cand_ld).map_err(oom)?;
        let mut cand_i = stream.alloc_zeros::<i64>(nq * cand_ld).map_err(oom)?;
        let mut seg_offset = 0;
        for c in 0..plan.chunks {
            let row0 = c * r;
            let rows = r.min(n - row0);
            self.score_chunk(
                &stream,
                &q_dev,
                nq,
                &res,
                mask.as_ref(),
                row0,
                rows,
                &mut scores,
            )?;
            self.select(
                &stream,
                nq,
                &scores,
                None,
                rows,
                rows,
                row0,
                k,
                &mut cand_s,
                &mut cand_i,
                cand_ld,
                seg_offset,
            )?;
            seg_offset += segs_per_chunk;
        }
        // Merge until one segment (k candidates) per query remains.
        let (mut len, mut ld) = (cand_ld, cand_ld);
        while len > k {
            let segs = len.div_ceil(SEGMENT);
            let out_ld = segs * k;
            let mut next_s = stream.alloc_zeros::<f32>(nq * out_ld).map_err(oom)?;
            let mut next_i = stream.alloc_zeros::<i64>(nq * out_ld).map_err(oom)?;
            self.select(
                &stream,
                nq,
                &cand_s,
                Some(&cand_i),
                ld,
                len,
                0,
                k,
                &mut next_s,
                &mut next_i,
                out_ld,
                0,
            )?;
            (cand_s, cand_i, len, ld) = (next_s, next_i, out_ld, out_ld);
        }
        let k_i = k as i32;
        let cfg = LaunchConfig {
            grid_dim: (nq as u32, 1, 1),
            block_dim: (512, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = stream.launch_builder(&self.kernels.sort_topk);
        b.arg(&mut cand_s).arg(&mut cand_i).arg(&k_i);
        // SAFETY: after the merges each query has exactly k candidates at stride k
        // (len == ld == k), so hv_sort_topk's nq blocks each read and write k ≤ 1024 slots.
        unsafe { b.launch(cfg) }.map_err(launch_failed)?;
        let s = stream.clone_dtoh(&cand_s).map_err(launch_failed)?;
        let idx = stream.clone_dtoh(&cand_i).map_err(launch_failed)?;
        let end = stream
            .record_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(launch_failed)?;
        stream.synchronize().map_err(launch_failed)?;
        if let Ok(ms) = start.elapsed_ms(&end) {
            LAST_DEVICE_TIME.with(|t| t.set(Some(Duration::from_secs_f64(ms as f64 / 1e3))));
        }
        Ok((0..nq)
            .map(|q| {
                (0..k)
                    .filter(|&j| idx[q * k + j] >= 0)
                    .map(|j| Hit {
                        index: idx[q * k + j] as usize,
                        score: s[q * k + j],
                    })
                    .collect()
            })
            .collect())
    }

    fn cosine_device(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
    ) -> Result<Scores, BackendError> {
        let (nq, n, dim) = (queries.rows(), corpus.rows(), corpus.dim());
        let stream = self.ctx.new_stream().map_err(launch_failed)?;
        let res = self.resident(corpus, &stream)?;
        let plan = plan::plan(self.free_memory()?, self.margin, nq, n, dim, None)
            .map_err(|requested| BackendError::OutOfMemory { requested })?;
        let oom = |e| oom_or_launch(e, plan.bytes);
        let q_dev = stream.clone_htod(queries.as_slice()).map_err(oom)?;
        let mask = match Self::live_mask(corpus) {
            Some(bits) => Some(stream.clone_htod(&bits).map_err(oom)?),
            None => None,
        };
        let mut scores = stream
            .alloc_zeros::<f32>(nq * plan.rows_per_chunk)
            .map_err(oom)?;
        let parts = plan::process_in_chunks(n, plan.rows_per_chunk, nq, |range| {
            let rows = range.len();
            self.score_chunk(
                &stream,
                &q_dev,
                nq,
                &res,
                mask.as_ref(),
                range.start,
                rows,
                &mut scores,
            )
            .map_err(|e| crate::error::Error::BackendFailed {
                backend: self.name.clone(),
                reason: e.to_string(),
            })?;
            let host = stream.clone_dtoh(&scores.slice(..nq * rows)).map_err(|e| {
                crate::error::Error::BackendFailed {
                    backend: self.name.clone(),
                    reason: e.to_string(),
                }
            })?;
            Ok(host)
        })
        .map_err(BackendError::Fatal)?;
        let mut out = vec![0f32; nq * n];
        let mut row0 = 0;
        for part in parts {
            let rows = part.len() / nq.max(1);
            for q in 0..nq {
                out[q * n + row0..q * n + row0 + rows]
                    .copy_from_slice(&part[q * rows..(q + 1) * rows]);
            }
            row0 += rows;
        }
        Scores::new(out, nq, n).map_err(BackendError::Fatal)
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> BackendKind {
        BackendKind::Gpu
    }
    fn rates(&self) -> Rates {
        self.rates
    }
    fn cosine(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
    ) -> Result<Scores, BackendError> {
        self.cosine_device(queries, corpus)
    }
    fn top_k(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        k: usize,
    ) -> Result<Vec<Vec<Hit>>, BackendError> {
        self.top_k_device(queries, corpus, k)
    }
}

//! The CUDA backend: a device-resident corpus, the kernels of `kernels/*.cu`, chunking
//! planned from free device memory. Every driver call goes through `cudarc`, loaded at run
//! time; nothing here runs unless [`super::start`] found a usable device.

use super::plan::{self, MAX_K};
use super::program::{self, Arg, Buf, Elem, Kernel, Launch, Program, Shape};
use super::{CudaConfig, Precision};
use crate::executor::{Backend, BackendError, BackendKind, Rates};
use crate::hit::Hit;
use crate::matrix::{CorpusView, MatrixRef, Origin, Scores};
use cudarc::driver::sys::{CUdevice_attribute, CUevent_flags, CUresult};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr, DriverError,
    LaunchConfig, PushKernelArg, SyncOnDrop,
};
use parking_lot::Mutex;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// Bytes of each pinned staging buffer the corpus upload cycles through.
const STAGE_BYTES: usize = 32 << 20;

thread_local! {
    static LAST_DEVICE_TIME: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// Device time (CUDA events around the upload check, kernels and copies) of the last
/// `top_k` this thread ran on the CUDA backend, taken (the next call returns `None` until
/// another one ran).
pub fn take_device_time() -> Option<Duration> {
    LAST_DEVICE_TIME.with(Cell::take)
}

/// Every kernel of [`Kernel::ALL`], loaded.
struct Kernels(HashMap<&'static str, CudaFunction>);

impl Kernels {
    fn get(&self, k: Kernel) -> &CudaFunction {
        // Every kernel is loaded in `open`, or `open` failed.
        &self.0[k.symbol()]
    }
}

/// A corpus copy on the device, with the inverse norms computed there.
struct Resident {
    origin: Origin,
    rows: usize,
    dim: usize,
    data: CudaSlice<f32>,
    inv: CudaSlice<f32>,
    /// The FP16 copy (unit-norm rows), made on the first [`Precision::Fp16`] call.
    half: Mutex<Option<Arc<CudaSlice<u16>>>>,
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
    precision: Precision,
    sms: usize,
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

/// An allocation for the resident corpus (or its FP16 copy) failed: out of memory there
/// is [`BackendError::CorpusTooLarge`], which no smaller query chunk can mend.
fn corpus_oom(e: DriverError, requested: u64) -> BackendError {
    match oom_or_launch(e, requested) {
        BackendError::OutOfMemory { requested } => BackendError::CorpusTooLarge { requested },
        other => other,
    }
}

fn launch_failed(e: DriverError) -> BackendError {
    oom_or_launch(e, 0)
}

fn timing_event(stream: &CudaStream) -> Result<CudaEvent, BackendError> {
    stream
        .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
        .map_err(launch_failed)
}

/// A top-k program's results on the host.
struct TopKResult {
    scores: Vec<f32>,
    indices: Vec<i64>,
    /// The filtered path's candidate counts, and its list capacity.
    counts: Option<(Vec<u32>, usize)>,
}

/// A program's scratch buffer on the device.
enum Scratch {
    F32(CudaSlice<f32>),
    I64(CudaSlice<i64>),
    U32(CudaSlice<u32>),
}

/// The device buffers a program's [`Buf`] names refer to.
struct Bound<'a> {
    queries: Option<&'a CudaSlice<f32>>,
    corpus: &'a Resident,
    half: Option<&'a CudaSlice<u16>>,
    mask: Option<&'a CudaSlice<u32>>,
    temps: &'a [Scratch],
}

/// A kernel argument's value, as the kernel declares it (pointers are u64).
enum Value {
    U64(u64),
    I32(i32),
    I64(i64),
}

impl Bound<'_> {
    /// The device address of element `offset` of `buf`, with cudarc's stream-ordering
    /// guard (drop it after the launch is queued). Offsets past the end are refused.
    fn address<'s>(
        &'s self,
        buf: Buf,
        offset: usize,
        stream: &'s CudaStream,
    ) -> Result<(u64, SyncOnDrop<'s>), BackendError> {
        fn at<'s, T>(
            s: &'s CudaSlice<T>,
            offset: usize,
            stream: &'s CudaStream,
        ) -> Option<(u64, SyncOnDrop<'s>)> {
            (offset < s.len()).then(|| {
                let (ptr, guard) = s.device_ptr(stream);
                (ptr + (offset * std::mem::size_of::<T>()) as u64, guard)
            })
        }
        let found = match buf {
            Buf::Queries => self.queries.and_then(|q| at(q, offset, stream)),
            Buf::Corpus => at(&self.corpus.data, offset, stream),
            Buf::InvNorms => at(&self.corpus.inv, offset, stream),
            Buf::CorpusF16 => self.half.and_then(|h| at(h, offset, stream)),
            Buf::Mask => self.mask.and_then(|m| at(m, offset, stream)),
            Buf::Temp(i) => match self.temps.get(i) {
                Some(Scratch::F32(s)) => at(s, offset, stream),
                Some(Scratch::I64(s)) => at(s, offset, stream),
                Some(Scratch::U32(s)) => at(s, offset, stream),
                None => None,
            },
        };
        found.ok_or_else(|| BackendError::LaunchFailed {
            reason: format!("launch program names {buf:?}[{offset}], which is not bound"),
        })
    }
}

impl CudaBackend {
    /// Opens device 0 and loads the kernels. Errors are reasons, for `CudaUnavailable`.
    pub(crate) fn open(config: &CudaConfig) -> std::result::Result<Self, String> {
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
        let mut modules = HashMap::new();
        let mut kernels = HashMap::new();
        for kernel in Kernel::ALL {
            let file = kernel.module();
            if !modules.contains_key(file) {
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
                modules.insert(file, module);
            }
            let func = modules[file]
                .load_function(kernel.symbol())
                .map_err(|e| format!("kernel {}: {e}", kernel.symbol()))?;
            kernels.insert(kernel.symbol(), func);
        }
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
            kernels: Kernels(kernels),
            resident: Mutex::new(None),
            rates,
            margin: config.memory_margin,
            budget: config.memory_budget,
            precision: config.precision,
            sms: (sms as usize).max(1),
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
        let mut data = unsafe { stream.alloc::<f32>(n * dim) }.map_err(|e| corpus_oom(e, bytes))?;
        let mut inv = stream
            .alloc_zeros::<f32>(n)
            .map_err(|e| corpus_oom(e, bytes))?;
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
        self.upload(
            &corpus.matrix().as_slice()[keep * dim..],
            &mut data,
            keep * dim,
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
        };
        if n > keep {
            let bound = Bound {
                queries: None,
                corpus: &r,
                half: None,
                mask: None,
                temps: &[],
            };
            self.launch(stream, &program::inv_norms(keep, n - keep, dim), &bound)?;
        }
        // Other calls use the copy from their own streams: finish writing it first.
        stream.synchronize().map_err(launch_failed)?;
        let r = Arc::new(r);
        *slot = Some(Arc::clone(&r));
        Ok(r)
    }

    /// The FP16 copy of `res`, made (and kept with it) on first use.
    fn half(
        &self,
        res: &Resident,
        stream: &Arc<CudaStream>,
    ) -> Result<Arc<CudaSlice<u16>>, BackendError> {
        let mut slot = res.half.lock();
        if let Some(h) = slot.as_ref() {
            return Ok(Arc::clone(h));
        }
        let len = res.rows * res.dim;
        let half = stream
            .alloc_zeros::<u16>(len)
            .map_err(|e| corpus_oom(e, (len * 2) as u64))?;
        let bound = Bound {
            queries: None,
            corpus: res,
            half: Some(&half),
            mask: None,
            temps: &[],
        };
        self.launch(stream, &program::rows_to_half(res.rows, res.dim), &bound)?;
        // Other calls read it from their own streams.
        stream.synchronize().map_err(launch_failed)?;
        let half = Arc::new(half);
        *slot = Some(Arc::clone(&half));
        Ok(half)
    }

    /// Copies `host` to `data[at..]` through two pinned staging buffers, so that filling
    /// one overlaps the copy out of the other.
    fn upload(
        &self,
        host: &[f32],
        data: &mut CudaSlice<f32>,
        at: usize,
        stream: &Arc<CudaStream>,
    ) -> Result<(), DriverError> {
        if host.is_empty() {
            return Ok(());
        }
        let stage_len = (STAGE_BYTES / 4).min(host.len());
        // SAFETY: a staging buffer is fully written before each copy out of it, and only
        // the written prefix is copied.
        let mut stages = unsafe {
            [
                self.ctx.alloc_pinned::<f32>(stage_len)?,
                self.ctx.alloc_pinned::<f32>(stage_len)?,
            ]
        };
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

    /// Queues one launch of a program on `stream`.
    fn launch(
        &self,
        stream: &CudaStream,
        l: &Launch,
        bound: &Bound<'_>,
    ) -> Result<(), BackendError> {
        let mut guards = Vec::with_capacity(l.args.len());
        let mut values = Vec::with_capacity(l.args.len());
        for arg in &l.args {
            values.push(match *arg {
                Arg::Ptr(buf, offset) => {
                    let (ptr, guard) = bound.address(buf, offset, stream)?;
                    guards.push(guard);
                    Value::U64(ptr)
                }
                Arg::Null => Value::U64(0),
                Arg::I32(v) => Value::I32(v),
                Arg::I64(v) => Value::I64(v),
            });
        }
        let cfg = LaunchConfig {
            grid_dim: (l.grid[0], l.grid[1], l.grid[2]),
            block_dim: (l.block, 1, 1),
            shared_mem_bytes: l.smem,
        };
        let mut b = stream.launch_builder(self.kernels.get(l.kernel));
        for v in &values {
            match v {
                Value::U64(x) => b.arg(x),
                Value::I32(x) => b.arg(x),
                Value::I64(x) => b.arg(x),
            };
        }
        // SAFETY: the kernel's parameters are, in order, the program's arguments: a
        // pointer (u64) for Ptr/Null, int for I32, long long for I64 (the emulation tests
        // check every kernel's parameter sizes against its programs). Every pointer is an
        // element of a live buffer of this call (`address` refuses others), and the
        // program builders size each buffer to the extent the kernel reads or writes from
        // that element (program.rs states it per launch; the emulation tests run every
        // program shape against guard zones). Dynamic shared memory is at most 48 KiB.
        unsafe { b.launch(cfg) }.map_err(launch_failed)?;
        drop(guards);
        Ok(())
    }

    /// Runs `p`: allocates its scratch buffers, queues its launches on `stream`, and
    /// returns the scratch buffers (still being written until `stream` syncs).
    fn run(
        &self,
        stream: &Arc<CudaStream>,
        p: &Program,
        queries: &CudaSlice<f32>,
        corpus: &Resident,
        mask: Option<&CudaSlice<u32>>,
    ) -> Result<Vec<Scratch>, BackendError> {
        let half = match self.precision {
            Precision::Fp16 => Some(self.half(corpus, stream)?),
            Precision::Fp32 | Precision::Tf32 => None,
        };
        let oom = |e| oom_or_launch(e, p.device_bytes());
        // No zero fill: it would cost a pass over the largest buffer per call, and a
        // program reads no scratch element before a launch of its own wrote it (the
        // emulation tests start scratch as garbage that would outscore every real
        // candidate, and check the results).
        let temps = p
            .temps
            .iter()
            .map(|t| match (t.elem, t.zeroed) {
                (Elem::F32, false) => {
                    // SAFETY: uninitialised f32s are still f32s (every bit pattern is
                    // one), and the program writes each element before reading it.
                    unsafe { stream.alloc::<f32>(t.len) }.map(Scratch::F32)
                }
                (Elem::I64, false) => {
                    // SAFETY: as for f32: every bit pattern is an i64.
                    unsafe { stream.alloc::<i64>(t.len) }.map(Scratch::I64)
                }
                (Elem::F32, true) => stream.alloc_zeros::<f32>(t.len).map(Scratch::F32),
                (Elem::I64, true) => stream.alloc_zeros::<i64>(t.len).map(Scratch::I64),
                (Elem::U32, _) => stream.alloc_zeros::<u32>(t.len).map(Scratch::U32),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(oom)?;
        let bound = Bound {
            queries: Some(queries),
            corpus,
            half: half.as_deref(),
            mask,
            temps: &temps,
        };
        for l in &p.launches {
            self.launch(stream, l, &bound)?;
        }
        Ok(temps)
    }

    fn shape(&self, nq: usize, corpus: CorpusView<'_>, masked: bool) -> Shape {
        Shape {
            nq,
            n: corpus.rows(),
            dim: corpus.dim(),
            masked,
            precision: self.precision,
            sms: self.sms,
        }
    }

    /// Plans (the largest chunk of the `n` rows whose program fits), runs and reads back
    /// one top-k program built by `build(rows_per_chunk)`.
    fn top_k_program(
        &self,
        stream: &Arc<CudaStream>,
        n: usize,
        build: impl Fn(usize) -> Program,
        (queries, res, mask): (&CudaSlice<f32>, &Resident, Option<&CudaSlice<u32>>),
    ) -> Result<TopKResult, BackendError> {
        let plan = plan::plan(self.free_memory()?, self.margin, n, |r| {
            build(r).device_bytes()
        })
        .map_err(|requested| BackendError::OutOfMemory { requested })?;
        let prog = build(plan.rows_per_chunk);
        let temps = self.run(stream, &prog, queries, res, mask)?;
        let read = |b: Buf| match b {
            Buf::Temp(i) => Some(&temps[i]),
            _ => None,
        };
        let (Some(Scratch::F32(scores)), Some(Scratch::I64(indices))) =
            (read(prog.scores), read(prog.indices))
        else {
            unreachable!("top-k results are f32 scores and i64 indices in scratch");
        };
        let counts = match prog.counts.map(|(b, cap)| (read(b), cap)) {
            Some((Some(Scratch::U32(c)), cap)) => {
                Some((stream.clone_dtoh(c).map_err(launch_failed)?, cap))
            }
            Some(_) => unreachable!("counts are u32 scratch"),
            None => None,
        };
        Ok(TopKResult {
            scores: stream.clone_dtoh(scores).map_err(launch_failed)?,
            indices: stream.clone_dtoh(indices).map_err(launch_failed)?,
            counts,
        })
    }

    fn top_k_device(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        k: usize,
    ) -> Result<Vec<Vec<Hit>>, BackendError> {
        let nq = queries.rows();
        if k > MAX_K {
            return Err(BackendError::Unsupported {
                reason: format!("k = {k} > {MAX_K}"),
            });
        }
        if nq > 65535 {
            // The selection's grid holds 65 535 queries: the executor halves the batch.
            return Err(BackendError::OutOfMemory {
                requested: (nq * queries.cols() * 4) as u64,
            });
        }
        let stream = self.ctx.new_stream().map_err(launch_failed)?;
        let start = timing_event(&stream)?;
        let res = self.resident(corpus, &stream)?;
        let mask_bits = corpus.live_mask();
        let shape = self.shape(nq, corpus, mask_bits.is_some());
        let q_dev = stream
            .clone_htod(queries.as_slice())
            .map_err(|e| oom_or_launch(e, (nq * queries.cols() * 4) as u64))?;
        let mask = match mask_bits {
            Some(bits) => Some(
                stream
                    .clone_htod(bits)
                    .map_err(|e| oom_or_launch(e, (bits.len() * 4) as u64))?,
            ),
            None => None,
        };
        let mut result = self.top_k_program(
            &stream,
            shape.n,
            |r| program::top_k(&shape, k, r),
            (&q_dev, &res, mask.as_ref()),
        )?;
        if let Some((counts, cap)) = &result.counts {
            if program::overflowed(counts, *cap) {
                // The sample's floor let more rows through than the lists hold (data far
                // from random order): redo the call the way that always fits.
                tracing::debug!(k, "filtered top-k overflowed; scoring in chunks instead");
                result = self.top_k_program(
                    &stream,
                    shape.n,
                    |r| program::top_k_chunked(&shape, k, r),
                    (&q_dev, &res, mask.as_ref()),
                )?;
            }
        }
        let (s, idx) = (result.scores, result.indices);
        let end = timing_event(&stream)?;
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
        let (nq, n) = (queries.rows(), corpus.rows());
        let stream = self.ctx.new_stream().map_err(launch_failed)?;
        let res = self.resident(corpus, &stream)?;
        let mask_bits = corpus.live_mask();
        let shape = self.shape(nq, corpus, mask_bits.is_some());
        let plan = plan::plan(self.free_memory()?, self.margin, n, |r| {
            program::cosine_chunk(&shape, 0, r).device_bytes()
        })
        .map_err(|requested| BackendError::OutOfMemory { requested })?;
        let oom = |e| oom_or_launch(e, plan.bytes);
        let q_dev = stream.clone_htod(queries.as_slice()).map_err(oom)?;
        let mask = match mask_bits {
            Some(bits) => Some(stream.clone_htod(bits).map_err(oom)?),
            None => None,
        };
        let failed = |e: BackendError| crate::error::Error::BackendFailed {
            backend: self.name.clone(),
            reason: e.to_string(),
        };
        let parts = plan::process_in_chunks(n, plan.rows_per_chunk, nq, |range| {
            let prog = program::cosine_chunk(&shape, range.start, range.len());
            let temps = self
                .run(&stream, &prog, &q_dev, &res, mask.as_ref())
                .map_err(failed)?;
            let Scratch::F32(scores) = &temps[0] else {
                unreachable!("cosine scores are f32");
            };
            stream
                .clone_dtoh(&scores.slice(..nq * range.len()))
                .map_err(|e| failed(launch_failed(e)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_embeds_every_kernel_module() {
        for k in Kernel::ALL {
            assert!(
                KERNEL_IMAGES
                    .iter()
                    .any(|(name, image, _)| *name == k.module() && !image.is_empty()),
                "{} ({}.cu) is not in the build",
                k.symbol(),
                k.module()
            );
        }
    }
}

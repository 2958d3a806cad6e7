//! The CUDA backend: [`CudaBackend`] and its [`Backend`] implementation. A call uploads
//! its queries (and a store's live mask), plans its chunk size from free device memory,
//! builds a launch program and runs it on a stream lent by the pool (`streams`, which
//! also says how streams are ordered), against the corpus copy kept resident between
//! calls. Every driver call goes through `cudarc`, loaded at run time; nothing here runs
//! unless [`super::start`] found a usable device.

use super::cublas::Cublas;
use super::error::{self, launch_failed};
use super::gemm_choice::{Choice, GemmChoice, GemmPath};
use super::launch::{self, Kernels};
use super::plan;
use super::program::{self, Buf, Layout, Occupancy, Program, Shape, MAX_K};
use super::resident::{Resident, ResidentSlot};
use super::resident_int8::Int8Slot;
use super::streams::{CallStream, StreamPool};
use super::{CudaConfig, Precision};
use crate::backend::{Backend, BackendError, BackendKind, Rates};
use crate::corpus::CorpusView;
use crate::hit::Hit;
use crate::matrix::{MatrixRef, Scores};
use crate::metric::Metric;
use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

mod certified;

thread_local! {
    static LAST_DEVICE_TIME: Cell<Option<Duration>> = const { Cell::new(None) };
    /// Passes over the corpus of the last call on this thread
    /// ([`Backend::take_corpus_passes`]).
    static LAST_CORPUS_PASSES: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Device time (CUDA events around the upload of the queries, the kernels and the
/// read-back; not the corpus's upload) of the last `top_k` this thread ran on the CUDA
/// backend, taken (the next call returns `None` until
/// another one ran). With several devices, the first device's share of the call: the
/// others run on threads of their own.
pub fn take_device_time() -> Option<Duration> {
    LAST_DEVICE_TIME.with(Cell::take)
}

/// The GPU side of the hybrid executor.
pub(crate) struct CudaBackend {
    ctx: Arc<CudaContext>,
    name: String,
    total_memory: u64,
    kernels: Kernels,
    resident: ResidentSlot,
    /// The int8 tier of the last certified call's corpus.
    int8: Int8Slot,
    streams: StreamPool,
    rates: Rates,
    /// Share of free memory a call may plan to use.
    margin: f64,
    /// Pretend at most this much is free (tests of chunking under pressure).
    budget: Option<u64>,
    precision: Precision,
    sms: usize,
    /// cuBLAS, or why not.
    cublas: Result<Arc<Cublas>, String>,
    /// Why cuBLAS stopped serving (a handle could not be made), once it has.
    cublas_failed: parking_lot::Mutex<Option<String>>,
    gemm_path: GemmPath,
    gemm_choice: GemmChoice,
    /// Blocks per SM of the scoring kernels, from the occupancy API.
    occupancy: Occupancy,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("name", &self.name)
            .field("total_memory", &self.total_memory)
            .finish()
    }
}

/// What one call runs against: its inputs on the host (queries, and the live mask for a
/// store with deletes, or a filter), and the resident corpus with its 16-bit copy (under
/// [`Precision::Fp16`] and [`Precision::Bf16`]) and L2's row biases.
struct CallBuffers<'a> {
    queries: &'a [f32],
    mask: Option<&'a [u32]>,
    corpus: &'a Resident,
    half: Option<&'a CudaSlice<u16>>,
    bias: Option<&'a CudaSlice<f32>>,
}

impl CallBuffers<'_> {
    /// The shared device buffers a program runs against.
    fn shared(&self) -> launch::Bound<'_> {
        launch::Bound {
            bias: self.bias,
            ..self.corpus.bound(self.half)
        }
    }

    /// The inputs a program uploads: the queries, and the live mask.
    fn inputs(&self) -> (&[f32], Option<&[u32]>) {
        (self.queries, self.mask)
    }
}

/// A top-k program's results on the host.
struct TopKResult {
    scores: Vec<f32>,
    indices: Vec<i64>,
    /// The filtered path's candidate counts, and its list capacity.
    counts: Option<(Vec<u32>, usize)>,
}

impl CudaBackend {
    /// Opens device `ordinal` and loads the kernels. Errors are reasons, for
    /// `CudaUnavailable`.
    pub(crate) fn open(config: &CudaConfig, ordinal: usize) -> std::result::Result<Self, String> {
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| format!("cannot create a CUDA context: {}", error::describe(&e)))?;
        // SAFETY: before any buffer exists; the backend orders its streams itself, by the
        // rule in `streams`' module docs.
        unsafe { ctx.disable_event_tracking() };
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
        let kernels = Kernels::load(&ctx, (major as u32, minor as u32))?;
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
            // Measured below, once the backend can run a program.
            overhead: Duration::from_micros(30),
        };
        let mut backend = Self {
            // An idle stream keeps an arena of up to 1/256 of the device (at least
            // 16 MiB): every call of moderate size then allocates nothing.
            streams: StreamPool::new(
                Arc::clone(&ctx),
                ((total_memory / 256) as usize).max(16 << 20),
            ),
            ctx,
            name,
            total_memory,
            kernels,
            resident: ResidentSlot::default(),
            int8: Int8Slot::default(),
            rates,
            margin: config.memory_margin,
            budget: config.memory_budget,
            precision: config.precision,
            sms: (sms as usize).max(1),
            cublas: match config.gemm {
                GemmPath::OwnKernels => Err("off (GemmPath::OwnKernels)".into()),
                GemmPath::Measured | GemmPath::Cublas => Cublas::load(),
            },
            gemm_path: config.gemm,
            cublas_failed: parking_lot::Mutex::new(None),
            gemm_choice: GemmChoice::new(),
            occupancy: Occupancy::default(),
        };
        backend.occupancy = backend.kernels.occupancy();
        if let Err(why) = &backend.cublas {
            tracing::debug!(why, "cuBLAS not used");
        }
        match backend.call_overhead() {
            Ok(t) => backend.rates.overhead = t,
            Err(e) => tracing::debug!(error = %e, "call overhead not measured; assuming 30 µs"),
        }
        Ok(backend)
    }

    /// How batches of more than 8 queries are scored, for `info`.
    pub(crate) fn gemm_description(&self) -> String {
        if let Some(why) = self.cublas_failed.lock().as_ref() {
            return format!("own kernels: cuBLAS failed ({why})");
        }
        match (&self.cublas, self.gemm_path) {
            (Ok(lib), GemmPath::Cublas) => format!("{}, always", lib.describe(None)),
            (Ok(lib), _) => format!(
                "{}, or the own kernels where measured faster (top-k)",
                lib.describe(None)
            ),
            (Err(why), _) => format!("own kernels: {why}"),
        }
    }

    /// How a call of `nq` queries (a fused top-k when `fused`; a full score matrix when
    /// `None`) is scored, on `stream` (with the context bound): a stream's cuBLAS handle
    /// is made here, and a cuBLAS that cannot make one is not used again (the own
    /// kernels serve, and `info` says why).
    fn gemm_choice(&self, stream: &CallStream<'_>, nq: usize, fused: Option<bool>) -> Choice {
        let Ok(lib) = &self.cublas else {
            return Choice::Own;
        };
        if self.cublas_failed.lock().is_some() || nq <= program::SMALL_Q {
            return Choice::Own;
        }
        let choice = match (self.gemm_path, fused) {
            (GemmPath::OwnKernels, _) => Choice::Own,
            (GemmPath::Cublas, _) | (GemmPath::Measured, None) => Choice::Gemm,
            (GemmPath::Measured, Some(fused)) => self.gemm_choice.pick(nq, fused),
        };
        if choice == Choice::Own {
            return choice;
        }
        match stream.scratch().ensure_cublas(lib, stream.cu_stream()) {
            Ok(()) => choice,
            Err(e) => {
                tracing::warn!(error = %e, "cuBLAS cannot make a handle; the own kernels serve");
                *self.cublas_failed.lock() = Some(e.to_string());
                Choice::Own
            }
        }
    }

    /// One top-k over `shape` (the filtered path redone in chunks when it overflowed),
    /// timed on the device: the result and its seconds.
    fn timed_top_k(
        &self,
        stream: &CallStream<'_>,
        shape: &Shape,
        k: usize,
        call: &CallBuffers<'_>,
    ) -> Result<(TopKResult, Option<f64>), BackendError> {
        // The device time starts after any upload of the corpus and the cuBLAS handle.
        stream.scratch().mark(stream, 0)?;
        let mut result =
            self.top_k_program(stream, shape.n, |r| program::top_k(shape, k, r), call)?;
        if let Some((counts, cap)) = &result.counts {
            if program::overflowed(counts, *cap) {
                // The sample's floor let more rows through than the lists hold (data far
                // from random order): redo the call the way that always fits.
                tracing::debug!(k, "filtered top-k overflowed; scoring in chunks instead");
                result = self.top_k_program(
                    stream,
                    shape.n,
                    |r| program::top_k_chunked(shape, k, r),
                    call,
                )?;
            }
        }
        let secs = stream.scratch().elapsed_ms().map(|ms| ms as f64 / 1e3);
        Ok((result, secs))
    }

    /// The fixed cost of a call, measured when the backend opened.
    pub(crate) fn call_overhead_measured(&self) -> Duration {
        self.rates.overhead
    }

    pub(crate) fn total_memory(&self) -> u64 {
        self.total_memory
    }

    /// Which kernel images the device loaded ("sm_90 cubin", "PTX (JIT)", ...).
    pub(crate) fn kernel_images(&self) -> String {
        self.kernels.describe()
    }

    /// Bytes a call may plan with: free device memory plus `held` (the call's arena,
    /// freed in stream order before a larger one is allocated), capped by the budget.
    fn free_memory(&self, held: usize) -> Result<u64, BackendError> {
        let (free, _) = self.ctx.mem_get_info().map_err(launch_failed)?;
        let free = free as u64 + held as u64;
        Ok(self.budget.map_or(free, |b| b.min(free)))
    }

    /// The program `build(rows_per_chunk)` for this call, and its rows per chunk: over all `n` rows at once when
    /// that fits the stream's arena (no memory query), else the largest chunk that fits
    /// what is free, after the idle streams have given back their arenas.
    fn fit(
        &self,
        stream: &CallStream<'_>,
        n: usize,
        build: impl Fn(usize) -> Program,
    ) -> Result<(Program, usize), BackendError> {
        let held = stream.scratch().arena_bytes();
        let whole = build(n);
        if whole.device_bytes() <= held as u64 {
            note_corpus_passes(1);
            return Ok((whole, n));
        }
        self.streams.release_idle_scratch();
        let plan = plan::plan(self.free_memory(held)?, self.margin, n, |r| {
            build(r).device_bytes()
        })
        .map_err(|requested| BackendError::OutOfMemory { requested })?;
        note_corpus_passes(plan.chunks);
        Ok((build(plan.rows_per_chunk), plan.rows_per_chunk))
    }

    /// Queues `p` on the call's stream against the `shared` buffers: readies the arena
    /// (and uploads `inputs`, the queries and live mask, when given), then the launches
    /// and the read-back of the results. Returns the layout.
    fn queue(
        &self,
        stream: &CallStream<'_>,
        p: &Program,
        shared: launch::Bound<'_>,
        inputs: Option<(&[f32], Option<&[u32]>)>,
    ) -> Result<Layout, BackendError> {
        let layout = p.layout();
        let mut scratch = stream.idle_scratch()?;
        let base = scratch.prepare(stream, &layout)?;
        let raw = stream.raw();
        if let Some((queries, mask)) = inputs {
            scratch.upload(raw, base, &layout, queries, mask)?;
        }
        let bound = launch::Bound {
            arena: (base, scratch.arena_bytes()),
            ..shared
        };
        let needs_gemm = p.launches().iter().any(|l| l.kernel().gemm().is_some());
        let handle = match (&self.cublas, needs_gemm) {
            (Ok(lib), true) => Some(scratch.take_cublas(lib, raw)?),
            _ => None,
        };
        let ran = launch::run(
            &self.kernels,
            stream,
            raw,
            p,
            &layout,
            bound,
            handle.as_ref(),
        );
        if let Some(h) = handle {
            scratch.put_cublas(h);
        }
        ran?;
        scratch.read_back(raw, base, layout.results.clone())?;
        Ok(layout)
    }

    /// The fixed cost of a call, for the dispatcher's estimate: the median of five
    /// timed round trips of the smallest program (an upload, three launches, a read-back
    /// and the wait), after one to warm up.
    fn call_overhead(&self) -> Result<Duration, BackendError> {
        let stream = self.streams.take()?;
        self.ctx.bind_to_thread().map_err(launch_failed)?;
        let _done = stream.done_guard();
        let p = program::round_trip(3);
        let shared = launch::Bound {
            corpus: None,
            inv_norms: None,
            corpus_half: None,
            bias: None,
            codes: None,
            code_bounds: None,
            arena: (0, 0),
        };
        let mut times = Vec::with_capacity(6);
        for _ in 0..6 {
            let t = std::time::Instant::now();
            self.queue(&stream, &p, shared, Some((&[0.0], None)))?;
            stream.finish()?;
            times.push(t.elapsed());
        }
        times.remove(0);
        times.sort();
        Ok(times[times.len() / 2])
    }

    /// The 16-bit rows the kernels read: a 16-bit corpus's own, or an f32 corpus's copy
    /// under [`Precision::Fp16`] and [`Precision::Bf16`] (made on first use); `None`
    /// otherwise. A call takes it before it plans, so the plan sees the memory it holds.
    fn half_copy(
        &self,
        corpus: &Resident,
        stream: &Arc<CudaStream>,
    ) -> Result<Option<Arc<CudaSlice<u16>>>, BackendError> {
        corpus
            .stored()
            .or(self.precision.half())
            .map(|half| corpus.half(&self.kernels, stream, half))
            .transpose()
    }

    /// The shape of a call over `corpus` (kept on the device as `res`). A GEMM is asked
    /// for only where cuBLAS can score it ([`Shape::can_gemm`]).
    fn shape(
        &self,
        nq: usize,
        corpus: CorpusView<'_>,
        res: &Resident,
        masked: bool,
        gemm: bool,
    ) -> Shape {
        let s = Shape {
            nq,
            n: corpus.rows(),
            dim: corpus.dim(),
            masked,
            metric: corpus.metric(),
            precision: self.precision,
            stored: res.stored(),
            sms: self.sms,
            gemm: false,
            occupancy: self.occupancy,
        };
        Shape {
            gemm: gemm && s.can_gemm(),
            ..s
        }
    }

    /// Plans, runs and reads back one top-k program built by `build(rows_per_chunk)`
    /// (see [`Self::fit`]), ending with the stream's wait.
    fn top_k_program(
        &self,
        stream: &CallStream<'_>,
        n: usize,
        build: impl Fn(usize) -> Program,
        call: &CallBuffers<'_>,
    ) -> Result<TopKResult, BackendError> {
        let (prog, _) = self.fit(stream, n, build)?;
        let layout = self.queue(stream, &prog, call.shared(), Some(call.inputs()))?;
        stream.scratch().mark(stream, 1)?;
        stream.finish()?;
        let scratch = stream.scratch();
        let whole = |b: Buf, size: usize| match b {
            Buf::Temp(i) => layout.temp_range(b, prog.temps()[i].len(), size),
            _ => None,
        };
        let (Some(scores), Some(indices)) = (whole(prog.scores(), 4), whole(prog.indices(), 8))
        else {
            unreachable!("top-k results are f32 scores and i64 indices in scratch");
        };
        let counts = prog.counts().map(|(b, cap)| {
            let range = whole(b, 4).expect("counts are u32 scratch");
            (scratch.results::<u32>(range), cap)
        });
        Ok(TopKResult {
            scores: scratch.results(scores),
            indices: scratch.results(indices),
            counts,
        })
    }

    /// L2's row biases for a view of `corpus` (kept with the resident copy), `None` for
    /// the other metrics.
    fn bias(
        &self,
        res: &Resident,
        corpus: CorpusView<'_>,
        stream: &Arc<CudaStream>,
    ) -> Result<Option<Arc<CudaSlice<f32>>>, BackendError> {
        match corpus.metric() {
            Metric::L2 => res.bias(corpus, stream).map(Some),
            Metric::Cosine | Metric::InnerProduct => Ok(None),
        }
    }

    /// Top-k over the rows of `corpus` that `mask_bits` keeps (its own live mask when
    /// `None`).
    fn top_k_device(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        k: usize,
        mask_bits: Option<&[u32]>,
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
        let stream = self.streams.take()?;
        // Once per call: the work below goes to the driver directly.
        self.ctx.bind_to_thread().map_err(launch_failed)?;
        let res = self.resident.get(&self.ctx, corpus, &stream)?;
        let half = self.half_copy(&res, &stream)?;
        let bias = self.bias(&res, corpus, &stream)?;
        let _done = stream.done_guard();
        let mask_bits = mask_bits.or(corpus.live_mask());
        let fused = k <= program::FUSED_MAX_K;
        let call = CallBuffers {
            queries: queries.as_slice(),
            mask: mask_bits,
            corpus: &res,
            half: half.as_deref(),
            bias: bias.as_deref(),
        };
        let shape = |gemm| self.shape(nq, corpus, &res, mask_bits.is_some(), gemm);
        let choice = match shape(false).can_gemm() {
            true => self.gemm_choice(&stream, nq, Some(fused)),
            false => Choice::Own,
        };
        let (result, secs) = match choice {
            Choice::Own => self.timed_top_k(&stream, &shape(false), k, &call)?,
            Choice::Gemm => self.timed_top_k(&stream, &shape(true), k, &call)?,
            Choice::Measure => {
                // The bucket's first call: both ways, the faster's answer, kept from now on.
                let own = self.timed_top_k(&stream, &shape(false), k, &call)?;
                let gemm = self.timed_top_k(&stream, &shape(true), k, &call)?;
                let (o, g) = (own.1.unwrap_or(f64::MAX), gemm.1.unwrap_or(f64::MAX));
                let gemm_won = self.gemm_choice.record(nq, fused, o, g);
                tracing::debug!(
                    nq,
                    fused,
                    own_secs = o,
                    gemm_secs = g,
                    gemm_won,
                    "GEMM or own"
                );
                if gemm_won {
                    gemm
                } else {
                    own
                }
            }
        };
        let (s, idx) = (result.scores, result.indices);
        if s.len() < nq * k || idx.len() < nq * k {
            return Err(BackendError::LaunchFailed {
                reason: format!(
                    "read back {} scores and {} indices for {nq} queries × k = {k}",
                    s.len(),
                    idx.len()
                ),
            });
        }
        if let Some(secs) = secs {
            LAST_DEVICE_TIME.with(|t| t.set(Some(Duration::from_secs_f64(secs))));
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
        let stream = self.streams.take()?;
        self.ctx.bind_to_thread().map_err(launch_failed)?;
        let res = self.resident.get(&self.ctx, corpus, &stream)?;
        let half = self.half_copy(&res, &stream)?;
        let bias = self.bias(&res, corpus, &stream)?;
        let _done = stream.done_guard();
        let mask_bits = corpus.live_mask();
        let gemm = self.shape(nq, corpus, &res, mask_bits.is_some(), true).gemm
            && self.gemm_choice(&stream, nq, None) != Choice::Own;
        let shape = self.shape(nq, corpus, &res, mask_bits.is_some(), gemm);
        let call = CallBuffers {
            queries: queries.as_slice(),
            mask: mask_bits,
            corpus: &res,
            half: half.as_deref(),
            bias: bias.as_deref(),
        };
        let (_, rows_per_chunk) = self.fit(&stream, n, |r| program::cosine_chunk(&shape, 0, r))?;
        // A chunk's driver error keeps its kind (out of memory halves the batch or moves
        // it to the CPU, as for top-k); only a wrong count is fatal. Every chunk's inputs
        // lie where the first one uploaded them (see `program::Layout`).
        let mut chunk_error = None;
        let mut first = true;
        let parts = plan::process_in_chunks(n, rows_per_chunk, nq, |range| {
            let prog = program::cosine_chunk(&shape, range.start, range.len());
            let part = self
                .queue(
                    &stream,
                    &prog,
                    call.shared(),
                    std::mem::take(&mut first).then(|| call.inputs()),
                )
                .and_then(|layout| {
                    stream.finish()?;
                    let scores = layout
                        .temp_range(prog.scores(), nq * range.len(), 4)
                        .expect("cosine scores are f32 scratch");
                    Ok(stream.scratch().results::<f32>(scores))
                });
            part.map_err(|e| {
                let reason = e.to_string();
                chunk_error = Some(e);
                crate::error::Error::BackendFailed {
                    backend: self.name.clone(),
                    reason,
                }
            })
        });
        let parts = match parts {
            Ok(parts) => parts,
            Err(e) => return Err(chunk_error.unwrap_or(BackendError::Fatal(e))),
        };
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

/// Records `passes` for [`Backend::take_corpus_passes`], keeping the most of one call's
/// programs.
fn note_corpus_passes(passes: usize) {
    LAST_CORPUS_PASSES.with(|p| p.set(Some(p.get().unwrap_or(0).max(passes))));
}

impl Backend for CudaBackend {
    fn release_cached_memory(&self) {
        self.streams.release_idle_scratch();
    }

    fn gemm_description(&self) -> Option<String> {
        Some(CudaBackend::gemm_description(self))
    }

    fn take_corpus_passes(&self) -> Option<usize> {
        LAST_CORPUS_PASSES.with(Cell::take)
    }

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
        if let Some(first) = error::device_lost() {
            return Err(error::lost_error(first));
        }
        self.cosine_device(queries, corpus)
    }
    fn top_k(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        k: usize,
    ) -> Result<Vec<Vec<Hit>>, BackendError> {
        if let Some(first) = error::device_lost() {
            return Err(error::lost_error(first));
        }
        match self.certified_top_k(queries, corpus, k) {
            Ok(Some(hits)) => return Ok(hits),
            Ok(None) => {}
            // The full scan answers the same; a lost device fails it too.
            Err(e) => tracing::debug!(error = %e, "int8 candidates failed; scanning in full"),
        }
        self.top_k_device(queries, corpus, k, None)
    }

    /// The rows by a masked scan of the whole resident corpus: a device streams it
    /// faster than it could gather rows by index.
    fn top_k_rows(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        rows: &[usize],
        k: usize,
    ) -> Result<Vec<Vec<Hit>>, BackendError> {
        if let Some(first) = error::device_lost() {
            return Err(error::lost_error(first));
        }
        let live = corpus.live_mask();
        let mut bits = vec![0u32; corpus.rows().div_ceil(32)];
        for &r in rows {
            if live.is_none_or(|l| l[r / 32] >> (r % 32) & 1 == 1) {
                bits[r / 32] |= 1 << (r % 32);
            }
        }
        self.top_k_device(queries, corpus, k, Some(&bits))
    }

    /// Cosine at every precision; inner product and L2 in FP32 only, whose error the
    /// executor's certificate bounds (the FP16 copy holds unit-norm rows, and TF32
    /// rounds past that bound).
    fn supports_metric(&self, metric: Metric) -> bool {
        metric == Metric::Cosine || self.precision == Precision::Fp32
    }

    fn serves_filters(&self) -> bool {
        true
    }

    fn max_k(&self) -> Option<usize> {
        Some(MAX_K)
    }
}

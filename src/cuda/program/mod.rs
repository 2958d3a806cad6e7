//! Launch programs: every kernel launch of one call, as data (kernel, grid, arguments,
//! scratch buffers). The CUDA backend runs a program on the device; the emulation tests
//! run the same program through the CPU emulator of `kernels/emu`, so the launch
//! geometry, buffer offsets and merge passes are tested without a GPU.
//!
//! A program's arguments name buffers, never addresses. Each builder states, per launch,
//! which extent of which buffer the kernel touches; the builders size the scratch buffers
//! to those extents, and [`Program::device_bytes`] is exactly what a run holds.
//!
//! One file per operation: [`cosine`] (scores into memory), [`top_k`] (fused, filtered
//! and chunked top-k), [`int8`] (the certified int8 scan's candidates), [`select`] (the radix-select and sort passes that merge
//! candidates), [`norms`] (the resident corpus's norms and 16-bit copy); [`kernel`] is the
//! table of the kernels they launch; [`layout`] places a program's inputs, scratch and
//! results in the one device allocation a call runs in; `cost` (tests only) counts what a
//! program moves and computes.

mod cosine;
#[cfg(test)]
pub(crate) mod cost;
mod int8;
mod kernel;
mod layout;
mod norms;
mod select;
#[cfg(test)]
mod tests;
mod top_k;

pub(crate) use cosine::cosine_chunk;
pub(crate) use int8::{int8_candidates, int8_queries, Int8Shape};
pub(crate) use kernel::{Family, GemmKind, Kernel};
pub(crate) use layout::{Layout, ALIGN};
// The device's norms kernel serves the emulation tests; the backend uploads the host's.
#[cfg(test)]
pub(crate) use norms::inv_norms;
pub(crate) use norms::rows_to_half;
#[cfg(test)]
pub(crate) use top_k::sampled_rows;
pub(crate) use top_k::{overflowed, top_k, top_k_chunked};

use super::{Half, Precision};
use crate::metric::Metric;

/// Candidates one top-k selection block reduces (must match `HV_SEG` in `kernels/topk.cu`).
pub(crate) const SEGMENT: usize = 4096;
/// The largest `k` the kernels select (`HV_MAX_K`).
pub(crate) const MAX_K: usize = 1024;
/// Queries the memory-bound kernels take per launch (`HV_SMALL_Q`).
pub(crate) const SMALL_Q: usize = 8;
/// Dynamic shared memory the memory-bound kernels may use for queries.
pub(crate) const SMALL_Q_SMEM: usize = 48 * 1024;
/// The largest `k` the fused kernels keep (`HV_LIST_MAX_K`); larger `k` is filtered by a
/// sampled floor, or scored in chunks of rows into device memory over small corpora.
pub(crate) const FUSED_MAX_K: usize = 32;
/// Tile edge of the tiled kernels (`HV_TM` = `HV_TN`).
pub(super) const TILE: usize = 64;
/// Grid y limit.
pub(super) const MAX_GRID_Y: usize = 65535;

/// A buffer a program reads or writes: the call's inputs, or its own scratch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Buf {
    /// `nq × dim` f32, unit-norm rows.
    Queries,
    /// The resident corpus, `n × dim` f32.
    Corpus,
    /// Its inverse row norms, `n` f32.
    InvNorms,
    /// The 16-bit rows, `n × dim` u16 (FP16 or BF16 bits): the corpus as stored
    /// ([`Shape::stored`]), or for an f32 corpus its copy with rows scaled to unit norm
    /// (made for [`Precision::Fp16`] and [`Precision::Bf16`]).
    CorpusHalf,
    /// The live-row mask, `ceil(n / 32)` u32 (present only when the program is masked).
    Mask,
    /// L2's row biases `−‖row‖²/2`, `n` f32 (present only when the program scores L2).
    Bias,
    /// The resident int8 tier's codes, `n × dim` i8 (the certified scan, `int8`).
    Codes,
    /// Its rows' bounds, `n × 4` f32: scale, residual bound, norm bound, coded-norm bound.
    CodeBounds,
    /// Scratch buffer `i` of [`Program::temps`]. Uninitialised: every element a launch
    /// (or the result) reads, an earlier launch wrote.
    Temp(usize),
}

/// Element type of a scratch buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Elem {
    F32,
    I64,
    U32,
}

impl Elem {
    pub(crate) fn size(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::I64 => 8,
            Elem::U32 => 4,
        }
    }
}

/// One kernel argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arg {
    /// The address of element `offset` of a buffer.
    Ptr(Buf, usize),
    /// A null pointer.
    Null,
    I32(i32),
    I64(i64),
}

/// One kernel launch; `block` threads in one dimension.
///
/// # Invariants
/// Only the builders of this module make one (the fields are private), and each keeps:
/// - `args` are the kernel's parameters in order and kind (a pointer for `Ptr` and
///   `Null`, `int` for `I32`, `long long` for `I64`);
/// - from each `Ptr(buf, offset)` the kernel reads or writes only an extent that lies
///   inside `buf` as its [`Program`] sizes it (scratch buffers by [`Program::temps`],
///   other buffers by [`Program::extents`]), as the builder states per launch;
/// - `smem` is at most [`SMALL_Q_SMEM`], and the grid within the device limits.
///
/// The emulation tests check the first two for every kernel and program shape (parameter
/// sizes, and guard zones around every buffer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Launch {
    kernel: Kernel,
    grid: [u32; 3],
    block: u32,
    smem: u32,
    args: Vec<Arg>,
}

impl Launch {
    /// The kernel launched.
    pub(crate) fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Blocks in x, y, z.
    pub(crate) fn grid(&self) -> [u32; 3] {
        self.grid
    }

    /// Threads per block (one dimension).
    pub(crate) fn block(&self) -> u32 {
        self.block
    }

    /// Dynamic shared memory, bytes.
    pub(crate) fn smem(&self) -> u32 {
        self.smem
    }

    /// The kernel's arguments, in order.
    pub(crate) fn args(&self) -> &[Arg] {
        &self.args
    }
}

/// A scratch buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Temp {
    elem: Elem,
    len: usize,
    zeroed: bool,
}

impl Temp {
    /// Element type.
    pub(crate) fn elem(&self) -> Elem {
        self.elem
    }

    /// Elements (at least 1).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Zero before the first launch (counters); otherwise uninitialised.
    pub(crate) fn zeroed(&self) -> bool {
        self.zeroed
    }
}

/// Elements of each buffer other than scratch (the call's inputs and the resident
/// corpus's copies) that a program's launches reach: a run must bind buffers at least
/// this long (the device backend checks before the first launch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Extents {
    /// f32 elements of [`Buf::Queries`].
    pub(crate) queries: usize,
    /// f32 elements of [`Buf::Corpus`].
    pub(crate) corpus: usize,
    /// f32 elements of [`Buf::InvNorms`].
    pub(crate) inv_norms: usize,
    /// u16 elements of [`Buf::CorpusHalf`].
    pub(crate) corpus_half: usize,
    /// u32 elements of [`Buf::Mask`].
    pub(crate) mask: usize,
    /// f32 elements of [`Buf::Bias`].
    pub(crate) bias: usize,
    /// i8 elements of [`Buf::Codes`].
    pub(crate) codes: usize,
    /// f32 elements of [`Buf::CodeBounds`].
    pub(crate) code_bounds: usize,
}

impl Extents {
    /// What a scoring program over the whole of `s` reads: the 16-bit rows (the corpus as
    /// stored, or the unit-norm copy) instead of the f32 corpus; only cosine reads the
    /// norms (not of the unit-norm copy), only L2 the biases.
    fn of(s: &Shape) -> Self {
        let half = s.half_rows().is_some();
        let rows = |half_reads: bool| if half_reads == half { s.n } else { 0 };
        let [inv, ..] = s.row_factors();
        Self {
            queries: s.nq * s.dim,
            corpus: rows(false) * s.dim,
            inv_norms: if inv == Arg::Null { 0 } else { s.n },
            corpus_half: rows(true) * s.dim,
            mask: if s.masked { s.n.div_ceil(32) } else { 0 },
            bias: if s.metric == Metric::L2 { s.n } else { 0 },
            codes: 0,
            code_bounds: 0,
        }
    }
}

/// The launches of one call, in stream order, and where its result lies.
///
/// # Invariants
/// Only the builders of this module make one (the fields are private), so holding a
/// `Program` proves that a builder made it, and with it every [`Launch`] invariant:
/// each pointer argument names a scratch buffer of [`temps`](Self::temps), or another
/// buffer no longer than [`extents`](Self::extents) says, with the kernel's whole extent
/// inside it,
/// and every scratch element a launch reads is written by an earlier launch (or the
/// buffer is [zeroed](Temp::zeroed)). This is what makes a device run memory-safe once
/// the bound buffers are at least [`extents`](Self::extents) long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Program {
    temps: Vec<Temp>,
    launches: Vec<Launch>,
    scores: Buf,
    indices: Buf,
    extents: Extents,
    counts: Option<(Buf, usize)>,
    /// The 16-bit copy of the queries a GEMM program makes (see `cosine`).
    half_queries: Option<Buf>,
    /// The scratch buffer a GEMM program lends cuBLAS as its workspace, and its bytes.
    workspace: Option<(Buf, usize)>,
}

impl Program {
    /// Scratch buffers, allocated before the first launch.
    pub(crate) fn temps(&self) -> &[Temp] {
        &self.temps
    }

    /// Launches, in stream order.
    pub(crate) fn launches(&self) -> &[Launch] {
        &self.launches
    }

    /// Top-k: `nq × k` scores (f32), best first. Cosine: `nq × rows` scores.
    pub(crate) fn scores(&self) -> Buf {
        self.scores
    }

    /// Top-k: `nq × k` indices (i64, −1 for none), in the order of the scores. Cosine:
    /// unused.
    pub(crate) fn indices(&self) -> Buf {
        self.indices
    }

    /// The least length of each buffer other than scratch that a run must bind.
    pub(crate) fn extents(&self) -> Extents {
        self.extents
    }

    /// The filtered path's per-query candidate counts (u32, `nq`) and list capacity: if
    /// any count exceeds the capacity, candidates were dropped and the result is not
    /// exact; run [`top_k_chunked`] instead (see [`overflowed`]).
    pub(crate) fn counts(&self) -> Option<(Buf, usize)> {
        self.counts
    }

    /// The scratch buffer cuBLAS gets as its workspace (and its bytes), for a program
    /// with GEMM steps: set on the handle before the first (`cublasSetWorkspace`).
    pub(crate) fn gemm_workspace(&self) -> Option<(Buf, usize)> {
        self.workspace
    }

    /// Device bytes a run holds at its peak: its inputs and every scratch buffer, as laid
    /// out in its arena ([`Layout::total`]). The resident corpus is not counted.
    pub(crate) fn device_bytes(&self) -> u64 {
        self.layout().total as u64
    }

    fn temp(&mut self, elem: Elem, len: usize) -> Buf {
        self.temps.push(Temp {
            elem,
            len: len.max(1),
            zeroed: false,
        });
        Buf::Temp(self.temps.len() - 1)
    }

    fn zeroed_temp(&mut self, elem: Elem, len: usize) -> Buf {
        let b = self.temp(elem, len);
        self.temps.last_mut().expect("just pushed").zeroed = true;
        b
    }

    /// An empty program over buffers of `extents`.
    fn new(extents: Extents) -> Self {
        Self {
            temps: Vec::new(),
            launches: Vec::new(),
            scores: Buf::Temp(0),
            indices: Buf::Temp(0),
            extents,
            counts: None,
            half_queries: None,
            workspace: None,
        }
    }
}

/// Blocks per SM of the scoring kernels, as the device's occupancy API reports them for
/// their block size (the least over each class's variants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Occupancy {
    /// The memory-bound kernels (256 threads, up to 48 KiB of queries).
    pub small: usize,
    /// The tiled kernels (256 threads).
    pub tiled: usize,
}

impl Default for Occupancy {
    /// What the kernels' launch bounds ask for, where the device was not asked: two
    /// blocks per SM of each (the fused ones are bounded to two).
    fn default() -> Self {
        Self { small: 2, tiled: 2 }
    }
}

/// What a top-k or cosine call looks like to the planner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    pub nq: usize,
    pub n: usize,
    pub dim: usize,
    /// Rows deleted from a store view, or left out by a filter, are cleared in a live
    /// mask.
    pub masked: bool,
    /// What the kernels score: cosine scales by the inverse norms, inner product by
    /// nothing, L2 adds the biases (FP16 and BF16 serve cosine only).
    pub metric: Metric,
    pub precision: Precision,
    /// The corpus is kept on the device as stored in 16 bits, with no f32 copy: the
    /// kernels widen its rows to f32 as they read them. `None`: an f32 corpus.
    pub stored: Option<Half>,
    /// Streaming multiprocessors (sizes the fused grids).
    pub sms: usize,
    /// Blocks of the scoring kernels that fit on one SM at once (the occupancy API's
    /// answer on the device), which sizes the grids to whole waves.
    pub occupancy: Occupancy,
    /// Score through cuBLAS: GEMM steps, then the rows' factors applied in one pass;
    /// top-k then scores rows in chunks into memory and selects (the fused and filtered
    /// paths belong to the own kernels).
    pub gemm: bool,
}

impl Shape {
    pub(super) fn small(&self) -> bool {
        self.nq <= SMALL_Q && self.nq * self.dim * 4 <= SMALL_Q_SMEM
    }

    /// The 16-bit rows the scoring kernels read: the corpus as stored ([`Shape::stored`]),
    /// else the unit-norm copy a 16-bit precision reads; `None`: the f32 corpus.
    pub(crate) fn half_rows(&self) -> Option<Half> {
        self.stored.or(self.precision.half())
    }

    /// Whether the rows read are the unit-norm 16-bit copy (so no norms scale them).
    fn unit_rows(&self) -> bool {
        self.stored.is_none() && self.precision.half().is_some()
    }

    /// The arithmetic of the compute-bound kernels: the precision's, except over a corpus
    /// stored in 16 bits, which multiplies on the tensor cores only for cosine in its own
    /// format (the precision's rounding), and in FP32 otherwise (TF32 included: its
    /// products of 16-bit rows would differ from FP32's only by the queries' rounding).
    pub(crate) fn arithmetic(&self) -> Precision {
        match self.stored {
            Some(h) if self.precision.half() != Some(h) || self.metric != Metric::Cosine => {
                Precision::Fp32
            }
            _ => self.precision,
        }
    }

    /// Whether cuBLAS can score this shape: not FP32 arithmetic over a corpus stored in 16
    /// bits (cuBLAS multiplies operands of one type).
    pub(crate) fn can_gemm(&self) -> bool {
        self.stored.is_none() || self.arithmetic().half().is_some()
    }

    /// The parameters every scoring kernel starts with: `qn` queries from query `q0`,
    /// their dimension, the rows ([`Shape::half_rows`]), then their norms (cosine; null
    /// for inner product and for the unit-norm copy), or for the L2 kernels the row
    /// biases, and the live mask (or null).
    pub(super) fn scoring_args(&self, q0: usize, qn: usize) -> Vec<Arg> {
        let corpus = match self.half_rows() {
            Some(_) => Arg::Ptr(Buf::CorpusHalf, 0),
            None => Arg::Ptr(Buf::Corpus, 0),
        };
        let factors = match self.row_factors() {
            [inv, Arg::Null, _] => inv,
            [_, bias, _] => bias,
        };
        vec![
            Arg::Ptr(Buf::Queries, q0 * self.dim),
            int(qn),
            int(self.dim),
            corpus,
            factors,
            self.row_factors()[2],
        ]
    }

    /// What turns a row's dot product into its score, as kernel arguments: its inverse
    /// norm (cosine), its bias (L2), the live mask; null for each the call has not (the
    /// unit-norm 16-bit copy's rows need no norms).
    pub(super) fn row_factors(&self) -> [Arg; 3] {
        debug_assert!(
            !self.unit_rows() || self.metric == Metric::Cosine,
            "the unit-norm copy serves cosine only"
        );
        let (inv, bias) = match self.metric {
            _ if self.unit_rows() => (Arg::Null, Arg::Null),
            Metric::InnerProduct => (Arg::Null, Arg::Null),
            Metric::Cosine => (Arg::Ptr(Buf::InvNorms, 0), Arg::Null),
            Metric::L2 => (Arg::Null, Arg::Ptr(Buf::Bias, 0)),
        };
        let mask = if self.masked {
            Arg::Ptr(Buf::Mask, 0)
        } else {
            Arg::Null
        };
        [inv, bias, mask]
    }

    /// The memory-bound kernel of `family` over the rows read; L2 adds the row biases.
    pub(super) fn small_kernel(&self, family: Family) -> Kernel {
        family.small(self.half_rows(), self.metric == Metric::L2)
    }

    /// The compute-bound kernel of `family` for these rows, arithmetic and metric.
    pub(super) fn tiled_kernel(&self, family: Family) -> Kernel {
        family.tiled(
            self.half_rows(),
            self.arithmetic(),
            self.metric == Metric::L2,
        )
    }

    /// Whether top-k with this `k` is fused (and so ignores the chunk size).
    pub(crate) fn fused(&self, k: usize) -> bool {
        k <= FUSED_MAX_K
    }
}

/// The smallest program: `launches` sorts of one zeroed candidate, for the fixed cost of
/// a call (an upload of one query value, the launches, a read-back), which the backend
/// measures when it opens.
pub(crate) fn round_trip(launches: usize) -> Program {
    let mut p = Program::new(Extents {
        queries: 1,
        ..Extents::default()
    });
    let (s, i) = (p.zeroed_temp(Elem::F32, 1), p.zeroed_temp(Elem::I64, 1));
    for _ in 0..launches {
        p.launches.push(Launch {
            kernel: Kernel::SortTopK,
            grid: grid(1, 1),
            block: 512,
            smem: 0,
            args: vec![Arg::Ptr(s, 0), Arg::Ptr(i, 0), int(1)],
        });
    }
    (p.scores, p.indices) = (s, i);
    p
}

pub(super) fn int(v: usize) -> Arg {
    Arg::I32(i32::try_from(v).expect("a kernel count exceeds i32"))
}

pub(super) fn long(v: usize) -> Arg {
    Arg::I64(v as i64)
}

/// The `bf16` argument of the 16-bit conversion kernels: 0 for FP16, 1 for BF16.
pub(super) fn half_format(half: Half) -> Arg {
    Arg::I32(i32::from(half == Half::Bf16))
}

pub(super) fn grid(x: usize, y: usize) -> [u32; 3] {
    let x = u32::try_from(x).expect("grid x exceeds u32");
    let y = u32::try_from(y).expect("grid y exceeds u32");
    [x, y, 1]
}

//! Running a launch program ([`Program`]) on the device: the embedded kernel images and
//! their loaded functions, and the launches themselves, queued straight to the driver
//! (one call each; the caller binds the context once per call). This is the one place
//! that turns a program's buffer names into addresses, and the one `unsafe` launch; it
//! knows programs and device buffers, not the backend.

use super::cublas::{CublasHandle, Gemm, Operands};
use super::error::launch_failed;
use super::images::{self, ImageForm};
use super::program::{
    Arg, Buf, Family, GemmKind, Kernel, Launch, Layout, Occupancy, Program, SMALL_Q_SMEM,
};
use crate::backend::BackendError;
use cudarc::driver::{result, sys, CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

/// Every kernel of [`Kernel::ALL`], loaded, and the image form each kernel file loaded
/// from.
pub(super) struct Kernels {
    functions: HashMap<&'static str, CudaFunction>,
    forms: Vec<(&'static str, ImageForm)>,
}

impl Kernels {
    /// Loads every kernel's module into `ctx`, for a device of compute capability `cc`
    /// (see [`images`]). Errors are reasons, for `CudaUnavailable`.
    pub(super) fn load(
        ctx: &Arc<CudaContext>,
        cc: (u32, u32),
    ) -> std::result::Result<Self, String> {
        let mut modules = HashMap::new();
        let mut functions = HashMap::new();
        let mut forms = Vec::new();
        for kernel in Kernel::ALL {
            let file = kernel.module();
            if !modules.contains_key(file) {
                let (module, form) = images::load(ctx, file, cc)?;
                modules.insert(file, module);
                forms.push((file, form));
            }
            let func = modules[file]
                .load_function(kernel.symbol())
                .map_err(|e| format!("kernel {}: {e}", kernel.symbol()))?;
            functions.insert(kernel.symbol(), func);
        }
        Ok(Kernels { functions, forms })
    }

    /// Which images loaded, for people: "sm_90 cubin" when every file loaded the same
    /// form, else each file's.
    pub(super) fn describe(&self) -> String {
        let first = self.forms.first().map(|(_, f)| *f);
        if self.forms.iter().all(|(_, f)| Some(*f) == first) {
            return first.map_or_else(String::new, ImageForm::describe);
        }
        let each: Vec<String> = self
            .forms
            .iter()
            .map(|(file, f)| format!("{file}: {}", f.describe()))
            .collect();
        each.join(", ")
    }

    /// Blocks per SM of the scoring kernels, from the occupancy API (256 threads; the
    /// memory-bound kernels with their most dynamic shared memory): the least over each
    /// class. A class the device does not answer for keeps the default.
    pub(super) fn occupancy(&self) -> Occupancy {
        let least = |kernels: &[Kernel], smem: usize| {
            kernels
                .iter()
                .map(|k| {
                    self.get(*k)
                        .occupancy_max_active_blocks_per_multiprocessor(256, smem, None)
                        .ok()
                        .filter(|&b| b > 0)
                        .map(|b| b as usize)
                })
                .collect::<Option<Vec<usize>>>()
                .and_then(|v| v.into_iter().min())
        };
        let small: Vec<Kernel> = [Family::Score, Family::TopK, Family::Filter]
            .iter()
            .flat_map(|f| f.all_small())
            .collect();
        let tiled: Vec<Kernel> = [Family::Score, Family::TopK, Family::Filter]
            .iter()
            .flat_map(|f| f.all_tiled())
            .collect();
        let default = Occupancy::default();
        let found = Occupancy {
            small: least(&small, SMALL_Q_SMEM).unwrap_or(default.small),
            tiled: least(&tiled, 0).unwrap_or(default.tiled),
        };
        tracing::debug!(?found, "blocks per SM");
        found
    }

    fn get(&self, k: Kernel) -> &CudaFunction {
        // Every kernel is loaded in `load`, or the backend did not open.
        &self.functions[k.symbol()]
    }
}

/// The device buffers a program's [`Buf`] names refer to: the shared ones (the resident
/// corpus and its copies; `None` for those the call has not got), and the call's arena,
/// which holds its inputs and scratch as the program's [`Layout`] places them.
#[derive(Clone, Copy)]
pub(super) struct Bound<'a> {
    pub(super) corpus: Option<&'a CudaSlice<f32>>,
    pub(super) inv_norms: Option<&'a CudaSlice<f32>>,
    pub(super) corpus_half: Option<&'a CudaSlice<u16>>,
    /// L2's row biases.
    pub(super) bias: Option<&'a CudaSlice<f32>>,
    /// The resident int8 tier: codes and row bounds.
    pub(super) codes: Option<&'a CudaSlice<i8>>,
    pub(super) code_bounds: Option<&'a CudaSlice<f32>>,
    /// The arena's device address and length in bytes (0 when the call has none).
    pub(super) arena: (u64, usize),
}

impl Bound<'_> {
    /// Whether every shared buffer is at least as long as `p` needs (a missing one counts
    /// as empty), and the arena holds its layout. A program built for another shape than
    /// the bound buffers fails here.
    fn covers(&self, p: &Program, layout: &Layout) -> bool {
        let need = p.extents();
        let len = |l: Option<usize>| l.unwrap_or(0);
        len(self.corpus.map(|b| b.len())) >= need.corpus
            && len(self.inv_norms.map(|b| b.len())) >= need.inv_norms
            && len(self.corpus_half.map(|b| b.len())) >= need.corpus_half
            && len(self.bias.map(|b| b.len())) >= need.bias
            && len(self.codes.map(|b| b.len())) >= need.codes
            && len(self.code_bounds.map(|b| b.len())) >= need.code_bounds
            && self.arena.1 >= layout.total
    }

    /// The device address of element `offset` of `buf`. Offsets past the buffer's end
    /// (the program's extent for the inputs, its size for scratch) are refused.
    fn address(
        &self,
        p: &Program,
        layout: &Layout,
        buf: Buf,
        offset: usize,
        stream: &CudaStream,
    ) -> Result<u64, BackendError> {
        fn at<T>(s: &CudaSlice<T>, offset: usize, stream: &CudaStream) -> Option<u64> {
            // No tracking guard to keep: the backend turned cudarc's event tracking off.
            (offset < s.len()).then(|| s.device_ptr(stream).0 + (offset * size_of::<T>()) as u64)
        }
        let in_arena = |start: usize, len: usize, elem: usize| {
            (offset < len).then(|| self.arena.0 + (start + offset * elem) as u64)
        };
        let extents = p.extents();
        let found = match buf {
            Buf::Queries => in_arena(layout.queries, extents.queries, 4),
            Buf::Mask => in_arena(layout.mask, extents.mask, 4),
            Buf::Corpus => self.corpus.and_then(|c| at(c, offset, stream)),
            Buf::InvNorms => self.inv_norms.and_then(|v| at(v, offset, stream)),
            Buf::CorpusHalf => self.corpus_half.and_then(|h| at(h, offset, stream)),
            Buf::Bias => self.bias.and_then(|b| at(b, offset, stream)),
            Buf::Codes => self.codes.and_then(|b| at(b, offset, stream)),
            Buf::CodeBounds => self.code_bounds.and_then(|b| at(b, offset, stream)),
            Buf::Temp(i) => p
                .temps()
                .get(i)
                .and_then(|t| in_arena(layout.temps[i], t.len(), t.elem().size())),
        };
        found.ok_or_else(|| BackendError::LaunchFailed {
            reason: format!("launch program names {buf:?}[{offset}], which is not bound"),
        })
    }
}

/// A kernel argument's value, as the kernel declares it (pointers are u64).
enum Value {
    U64(u64),
    I32(i32),
    I64(i64),
}

/// Queues `p` on `stream` (the driver's handle, with the context bound to this thread)
/// against `bound`: zeroes the scratch buffers it wants zeroed, then queues its
/// launches. The results are in the arena once `stream` has done them. Refuses, before
/// anything is queued, buffers shorter than the program reaches.
pub(super) fn run(
    kernels: &Kernels,
    stream: &CudaStream,
    raw: sys::CUstream,
    p: &Program,
    layout: &Layout,
    bound: Bound<'_>,
    cublas: Option<&CublasHandle>,
) -> Result<(), BackendError> {
    if !bound.covers(p, layout) {
        return Err(BackendError::LaunchFailed {
            reason: format!(
                "a launch program needs buffers of {:?} and {} arena bytes, more than \
                 those bound",
                p.extents(),
                layout.total
            ),
        });
    }
    // Only counters are zeroed: a zero fill of the rest would cost a pass over the
    // largest buffer per call, and a program reads no scratch element before a launch of
    // its own wrote it (the emulation tests start scratch as garbage that would outscore
    // every real candidate, and check the results).
    for (i, t) in p.temps().iter().enumerate().filter(|(_, t)| t.zeroed()) {
        let at = bound.arena.0 + layout.temps[i] as u64;
        // SAFETY: the buffer lies inside the arena (`covers` checked its length against
        // the layout, which places every scratch buffer inside `total`).
        unsafe { result::memset_d8_async(at, 0, t.len() * t.elem().size(), raw) }
            .map_err(launch_failed)?;
    }
    if let (Some((buf, bytes)), Some(handle)) = (p.gemm_workspace(), cublas) {
        handle.set_workspace(bound.address(p, layout, buf, 0, stream)?, bytes)?;
    }
    for l in p.launches() {
        match l.kernel().gemm() {
            Some(kind) => gemm(kind, stream, l, p, layout, &bound, cublas)?,
            None => launch(kernels, stream, raw, l, p, layout, &bound)?,
        }
    }
    Ok(())
}

/// Queues a GEMM step through cuBLAS (its arguments: A, B, C, m, n, k, ldc).
fn gemm(
    kind: GemmKind,
    stream: &CudaStream,
    l: &Launch,
    p: &Program,
    layout: &Layout,
    bound: &Bound<'_>,
    cublas: Option<&CublasHandle>,
) -> Result<(), BackendError> {
    let Some(handle) = cublas else {
        return Err(BackendError::LaunchFailed {
            reason: "a GEMM step, and no cuBLAS".into(),
        });
    };
    let a = l.args();
    let ptr = |i: usize| match a.get(i) {
        Some(&Arg::Ptr(buf, offset)) => bound.address(p, layout, buf, offset, stream),
        _ => Err(malformed()),
    };
    let count = |i: usize| match a.get(i) {
        Some(&Arg::I64(v)) => usize::try_from(v).map_err(|_| malformed()),
        Some(&Arg::I32(v)) => usize::try_from(v).map_err(|_| malformed()),
        _ => Err(malformed()),
    };
    let g = Gemm {
        operands: match kind {
            GemmKind::Fp32 => Operands::Fp32,
            GemmKind::Tf32 => Operands::Tf32,
            GemmKind::Fp16 => Operands::Fp16,
            GemmKind::Bf16 => Operands::Bf16,
        },
        a: ptr(0)?,
        b: ptr(1)?,
        c: ptr(2)?,
        m: count(3)?,
        n: count(4)?,
        k: count(5)?,
        ldc: count(6)?,
    };
    handle.gemm(&g)
}

fn malformed() -> BackendError {
    BackendError::LaunchFailed {
        reason: "a GEMM step with malformed arguments".into(),
    }
}

/// Queues one launch of a program whose buffers `bound` covers (checked by `run`).
fn launch(
    kernels: &Kernels,
    stream: &CudaStream,
    raw: sys::CUstream,
    l: &Launch,
    p: &Program,
    layout: &Layout,
    bound: &Bound<'_>,
) -> Result<(), BackendError> {
    let mut values = Vec::with_capacity(l.args().len());
    for arg in l.args() {
        values.push(match *arg {
            Arg::Ptr(buf, offset) => Value::U64(bound.address(p, layout, buf, offset, stream)?),
            Arg::Null => Value::U64(0),
            Arg::I32(v) => Value::I32(v),
            Arg::I64(v) => Value::I64(v),
        });
    }
    let mut params: Vec<*mut c_void> = values
        .iter_mut()
        .map(|v| match v {
            Value::U64(x) => (x as *mut u64).cast(),
            Value::I32(x) => (x as *mut i32).cast(),
            Value::I64(x) => (x as *mut i64).cast(),
        })
        .collect();
    let [x, y, z] = l.grid();
    // SAFETY: `l` is a launch of a `Program`, and only the program builders make one
    // (private fields), so the invariants under `# Invariants` of `Launch` and
    // `Program` hold: the kernel's parameters are, in order, the launch's arguments (a
    // pointer (u64) for Ptr/Null, int for I32, long long for I64), and from each pointer
    // the kernel reaches only an extent inside its buffer as the program sizes it.
    // Here, every pointer is an element of a live buffer of this call (`address` refuses
    // others): the arena holds the program's layout, and `run` checked that every shared
    // buffer is at least as long as the program's extents. `params` points at `values`,
    // both live until the driver has copied them (at the call, as it does). Dynamic
    // shared memory is at most 48 KiB. The emulation tests check the parameter sizes and
    // run every program shape against guard zones.
    unsafe {
        result::launch_kernel(
            kernels.get(l.kernel()).cu_function(),
            (x, y, z),
            (l.block(), 1, 1),
            l.smem(),
            raw,
            &mut params,
        )
    }
    .map_err(launch_failed)
}

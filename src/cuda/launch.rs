//! Running a launch program ([`Program`]) on the device: the embedded kernel images and
//! their loaded functions, the scratch buffers a program names, and the launches
//! themselves. This is the one place that turns a program's buffer names into addresses,
//! and the one `unsafe` launch; it knows programs and device buffers, not the backend.

use super::error::{launch_failed, oom_or_launch};
use super::images::{self, ImageForm};
use super::program::{Arg, Buf, Elem, Kernel, Launch, Program};
use crate::backend::BackendError;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
    SyncOnDrop,
};
use std::collections::HashMap;
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

    fn get(&self, k: Kernel) -> &CudaFunction {
        // Every kernel is loaded in `load`, or the backend did not open.
        &self.functions[k.symbol()]
    }
}

/// A program's scratch buffer on the device.
pub(super) enum Scratch {
    F32(CudaSlice<f32>),
    I64(CudaSlice<i64>),
    U32(CudaSlice<u32>),
}

/// The device buffers a program's [`Buf`] names other than scratch refer to; `None` for
/// those the call has not got.
#[derive(Clone, Copy)]
pub(super) struct Bound<'a> {
    pub(super) queries: Option<&'a CudaSlice<f32>>,
    pub(super) corpus: &'a CudaSlice<f32>,
    pub(super) inv_norms: &'a CudaSlice<f32>,
    pub(super) corpus_f16: Option<&'a CudaSlice<u16>>,
    pub(super) mask: Option<&'a CudaSlice<u32>>,
    /// L2's row biases.
    pub(super) bias: Option<&'a CudaSlice<f32>>,
}

/// [`Bound`] with the program's scratch buffers.
struct Buffers<'a> {
    bound: Bound<'a>,
    temps: &'a [Scratch],
}

impl Bound<'_> {
    /// Whether every buffer is at least as long as `p` needs (a missing one counts as
    /// empty). A program built for another shape than the bound buffers fails here.
    fn covers(&self, p: &Program) -> bool {
        let need = p.extents();
        let len = |l: Option<usize>| l.unwrap_or(0);
        len(self.queries.map(|b| b.len())) >= need.queries
            && self.corpus.len() >= need.corpus
            && self.inv_norms.len() >= need.inv_norms
            && len(self.corpus_f16.map(|b| b.len())) >= need.corpus_f16
            && len(self.mask.map(|b| b.len())) >= need.mask
            && len(self.bias.map(|b| b.len())) >= need.bias
    }
}

/// A kernel argument's value, as the kernel declares it (pointers are u64).
enum Value {
    U64(u64),
    I32(i32),
    I64(i64),
}

impl Buffers<'_> {
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
            Buf::Queries => self.bound.queries.and_then(|q| at(q, offset, stream)),
            Buf::Corpus => at(self.bound.corpus, offset, stream),
            Buf::InvNorms => at(self.bound.inv_norms, offset, stream),
            Buf::CorpusF16 => self.bound.corpus_f16.and_then(|h| at(h, offset, stream)),
            Buf::Mask => self.bound.mask.and_then(|m| at(m, offset, stream)),
            Buf::Bias => self.bound.bias.and_then(|b| at(b, offset, stream)),
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

/// Runs `p` on `stream` against `bound`: allocates its scratch buffers, queues its
/// launches, and returns the scratch buffers (still being written until `stream` syncs).
/// Refuses, before any launch, buffers shorter than the program reaches.
pub(super) fn run(
    kernels: &Kernels,
    stream: &Arc<CudaStream>,
    p: &Program,
    bound: Bound<'_>,
) -> Result<Vec<Scratch>, BackendError> {
    if !bound.covers(p) {
        return Err(BackendError::LaunchFailed {
            reason: format!(
                "a launch program needs buffers of {:?}, longer than those bound",
                p.extents()
            ),
        });
    }
    let oom = |e| oom_or_launch(e, p.device_bytes());
    // No zero fill: it would cost a pass over the largest buffer per call, and a
    // program reads no scratch element before a launch of its own wrote it (the
    // emulation tests start scratch as garbage that would outscore every real
    // candidate, and check the results).
    let temps = p
        .temps()
        .iter()
        .map(|t| match (t.elem(), t.zeroed()) {
            (Elem::F32, false) => {
                // SAFETY: uninitialised f32s are still f32s (every bit pattern is
                // one), and the program writes each element before reading it.
                unsafe { stream.alloc::<f32>(t.len()) }.map(Scratch::F32)
            }
            (Elem::I64, false) => {
                // SAFETY: as for f32: every bit pattern is an i64.
                unsafe { stream.alloc::<i64>(t.len()) }.map(Scratch::I64)
            }
            (Elem::F32, true) => stream.alloc_zeros::<f32>(t.len()).map(Scratch::F32),
            (Elem::I64, true) => stream.alloc_zeros::<i64>(t.len()).map(Scratch::I64),
            (Elem::U32, _) => stream.alloc_zeros::<u32>(t.len()).map(Scratch::U32),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(oom)?;
    let buffers = Buffers {
        bound,
        temps: &temps,
    };
    for l in p.launches() {
        launch(kernels, stream, l, &buffers)?;
    }
    Ok(temps)
}

/// Queues one launch of a program whose buffers `buffers` cover (checked by `run`).
fn launch(
    kernels: &Kernels,
    stream: &CudaStream,
    l: &Launch,
    buffers: &Buffers<'_>,
) -> Result<(), BackendError> {
    let mut guards = Vec::with_capacity(l.args().len());
    let mut values = Vec::with_capacity(l.args().len());
    for arg in l.args() {
        values.push(match *arg {
            Arg::Ptr(buf, offset) => {
                let (ptr, guard) = buffers.address(buf, offset, stream)?;
                guards.push(guard);
                Value::U64(ptr)
            }
            Arg::Null => Value::U64(0),
            Arg::I32(v) => Value::I32(v),
            Arg::I64(v) => Value::I64(v),
        });
    }
    let [x, y, z] = l.grid();
    let cfg = LaunchConfig {
        grid_dim: (x, y, z),
        block_dim: (l.block(), 1, 1),
        shared_mem_bytes: l.smem(),
    };
    let mut b = stream.launch_builder(kernels.get(l.kernel()));
    for v in &values {
        match v {
            Value::U64(x) => b.arg(x),
            Value::I32(x) => b.arg(x),
            Value::I64(x) => b.arg(x),
        };
    }
    // SAFETY: `l` is a launch of a `Program`, and only the program builders make one
    // (private fields), so the invariants under `# Invariants` of `Launch` and
    // `Program` hold: the kernel's parameters are, in order, the launch's arguments (a
    // pointer (u64) for Ptr/Null, int for I32, long long for I64), and from each pointer
    // the kernel reaches only an extent inside its buffer as the program sizes it.
    // Here, every pointer is an element of a live buffer of this call (`address` refuses
    // others); scratch buffers were allocated at the program's sizes, and `run` checked
    // that every other bound buffer is at least as long as the program's extents.
    // Dynamic shared memory is at most 48 KiB. The emulation tests check the
    // parameter sizes and run every program shape against guard zones.
    unsafe { b.launch(cfg) }.map_err(launch_failed)?;
    drop(guards);
    Ok(())
}

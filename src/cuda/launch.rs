//! Running a launch program ([`Program`]) on the device: the embedded kernel images and
//! their loaded functions, the scratch buffers a program names, and the launches
//! themselves. This is the one place that turns a program's buffer names into addresses,
//! and the one `unsafe` launch; it knows programs and device buffers, not the backend.

use super::error::{launch_failed, oom_or_launch};
use super::program::{Arg, Buf, Elem, Kernel, Launch, Program};
use crate::backend::BackendError;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
    SyncOnDrop,
};
use std::collections::HashMap;
use std::sync::Arc;

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// Every kernel of [`Kernel::ALL`], loaded.
pub(super) struct Kernels(HashMap<&'static str, CudaFunction>);

impl Kernels {
    /// Loads every kernel's module (the embedded PTX or cubin) into `ctx`. Errors are
    /// reasons, for `CudaUnavailable`.
    pub(super) fn load(ctx: &Arc<CudaContext>) -> std::result::Result<Self, String> {
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
                let module = ctx.load_module(ptx).map_err(|e| {
                    let log = jit_error_log(ctx, image);
                    let log = if log.is_empty() {
                        "the driver wrote no JIT log".to_string()
                    } else {
                        format!("JIT log: {log}")
                    };
                    format!("loading {file} ({KERNEL_BUILD}): {e}; {log}")
                })?;
                modules.insert(file, module);
            }
            let func = modules[file]
                .load_function(kernel.symbol())
                .map_err(|e| format!("kernel {}: {e}", kernel.symbol()))?;
            kernels.insert(kernel.symbol(), func);
        }
        Ok(Kernels(kernels))
    }

    fn get(&self, k: Kernel) -> &CudaFunction {
        // Every kernel is loaded in `load`, or the backend did not open.
        &self.0[k.symbol()]
    }
}

/// The driver's JIT error log for a module `image` that failed to load (PTX text with
/// its NUL, or a cubin), or `""`.
///
/// cudarc makes a [`cudarc::driver::CudaModule`] only through its own `load_module`,
/// which calls `cuModuleLoadData` and keeps no log; so a failed load is tried once more
/// through `cuModuleLoadDataEx` with an error log buffer, for the error's text. (The
/// same image fails the same way: the log is the JIT's reason.)
fn jit_error_log(ctx: &Arc<CudaContext>, image: &[u8]) -> String {
    use cudarc::driver::sys;
    use std::ffi::c_void;
    if ctx.bind_to_thread().is_err() {
        return String::new();
    }
    let mut log = vec![0u8; 16 << 10];
    let mut options = [
        sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
        sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
    ];
    // The size option's value is the number itself, in the pointer's place.
    let mut values: [*mut c_void; 2] = [log.as_mut_ptr().cast(), log.len() as *mut c_void];
    let mut module: sys::CUmodule = std::ptr::null_mut();
    // SAFETY: `image` is a whole module image (NUL-terminated PTX or an ELF cubin) that
    // outlives the call; the two options name a writable buffer of `log.len()` bytes and
    // its size, as `cuModuleLoadDataEx` documents; `module` receives a handle, unloaded
    // below if the load succeeds after all. The context is current on this thread.
    let loaded = unsafe {
        sys::cuModuleLoadDataEx(
            &mut module,
            image.as_ptr().cast(),
            options.len() as u32,
            options.as_mut_ptr(),
            values.as_mut_ptr(),
        )
    };
    if loaded == sys::CUresult::CUDA_SUCCESS {
        // SAFETY: `module` was just loaded and nothing else holds it.
        unsafe { sys::cuModuleUnload(module) };
    }
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    String::from_utf8_lossy(&log[..end]).trim().to_string()
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

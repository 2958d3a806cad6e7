//! cuBLAS, loaded at run time like the driver: the GEMM steps of a program
//! ([`Kernel::gemm`](super::program::Kernel::gemm)) run through `cublasGemmEx`, which
//! picks Hopper's wgmma/TMA kernels that the own tiled kernels do not match. Nothing is
//! linked: a machine without cuBLAS runs the own kernels, and `info` says why.
//!
//! Where it looks, in order (the first that loads and has every entry point wins):
//! 1. `HYBRIDVEC_CUBLAS`, a path or a library name: when set, nothing else is tried;
//! 2. the CUDA 13 and 12 names (`libcublas.so.13`, `libcublas.so.12`, `libcublas.so`) in
//!    the loader's search path (`LD_LIBRARY_PATH`, the ld cache), which also finds a
//!    cuBLAS this process already loaded under that name;
//! 3. `$CUDA_PATH/lib64` and `/usr/local/cuda/lib64`;
//! 4. the `nvidia/*/lib` folders of Python's NVIDIA wheels (PyTorch brings them), under
//!    `$VIRTUAL_ENV`, `$CONDA_PREFIX`, every `PYTHONPATH` entry, `~/.local`, `/usr/local`
//!    and `/usr`.
//!
//! A handle serves one stream at a time (cuBLAS handles are not meant to be shared across
//! threads): each pooled stream makes its own on first use and keeps it.

use crate::backend::BackendError;
use cudarc::driver::sys::CUstream;
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::Arc;

type Handle = *mut c_void;
type Status = i32;

/// `cublasOperation_t`.
const OP_N: i32 = 0;
const OP_T: i32 = 1;
/// `cudaDataType_t`.
const R_32F: i32 = 0;
const R_16F: i32 = 2;
const R_16BF: i32 = 14;
/// `cublasComputeType_t`.
const COMPUTE_32F: i32 = 68;
const COMPUTE_32F_PEDANTIC: i32 = 69;
const COMPUTE_32F_FAST_TF32: i32 = 77;
/// `CUBLAS_GEMM_DEFAULT`.
const GEMM_DEFAULT: i32 = -1;

type CreateFn = unsafe extern "C" fn(*mut Handle) -> Status;
type DestroyFn = unsafe extern "C" fn(Handle) -> Status;
type SetStreamFn = unsafe extern "C" fn(Handle, CUstream) -> Status;
type GetVersionFn = unsafe extern "C" fn(Handle, *mut i32) -> Status;
type SetWorkspaceFn = unsafe extern "C" fn(Handle, *mut c_void, usize) -> Status;
#[allow(clippy::type_complexity)]
type GemmExFn = unsafe extern "C" fn(
    Handle,
    i32,
    i32,
    i32,
    i32,
    i32,
    *const c_void,
    *const c_void,
    i32,
    i32,
    *const c_void,
    i32,
    i32,
    *const c_void,
    *mut c_void,
    i32,
    i32,
    i32,
    i32,
) -> Status;

/// A loaded cuBLAS: its entry points, where it came from, and its version.
pub(super) struct Cublas {
    create: CreateFn,
    destroy: DestroyFn,
    set_stream: SetStreamFn,
    gemm_ex: GemmExFn,
    get_version: GetVersionFn,
    /// `cublasSetWorkspace_v2` (cuBLAS 11.4 and newer; without it, cuBLAS allocates its
    /// workspace itself, outside the memory plan).
    set_workspace: Option<SetWorkspaceFn>,
    /// Where it loaded from, for people.
    pub(super) source: String,
    /// FP32 GEMMs in pedantic mode: `NVIDIA_TF32_OVERRIDE` is set, which would otherwise
    /// let cuBLAS round FP32 operands to TF32.
    pedantic_fp32: bool,
    /// Keeps the entry points valid (dropped last).
    _lib: libloading::Library,
}

impl std::fmt::Debug for Cublas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cublas")
            .field("source", &self.source)
            .finish()
    }
}

/// The operands of a GEMM step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Operands {
    Fp32,
    Tf32,
    Fp16,
    Bf16,
}

/// One GEMM step: `C[j·ldc + i] = Σ_t A[i·k + t] · B[j·k + t]` for i < m, j < n, that
/// is C (column-major, m × n) = Aᵀ·B with A the `m` corpus rows and B the `n` queries,
/// each row of `k` values (device addresses).
#[derive(Clone, Copy, Debug)]
pub(super) struct Gemm {
    pub(super) operands: Operands,
    pub(super) a: u64,
    pub(super) b: u64,
    pub(super) c: u64,
    pub(super) m: usize,
    pub(super) n: usize,
    pub(super) k: usize,
    pub(super) ldc: usize,
}

fn candidates() -> Result<Vec<PathBuf>, String> {
    if let Some(v) = std::env::var_os("HYBRIDVEC_CUBLAS") {
        if v.is_empty() {
            return Err("HYBRIDVEC_CUBLAS is set but empty".into());
        }
        return Ok(vec![PathBuf::from(v)]);
    }
    const NAMES: [&str; 3] = ["libcublas.so.13", "libcublas.so.12", "libcublas.so"];
    let mut out: Vec<PathBuf> = NAMES.iter().map(PathBuf::from).collect();
    let mut dirs = Vec::new();
    if let Some(cuda) = std::env::var_os("CUDA_PATH") {
        let cuda = PathBuf::from(cuda);
        dirs.push(cuda.join("lib64"));
        dirs.push(cuda.join("lib"));
    }
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    for site in python_site_dirs() {
        // nvidia/cublas/lib (CUDA 12 wheels), nvidia/cu13/lib (CUDA 13 wheels), ...
        if let Ok(entries) = std::fs::read_dir(site.join("nvidia")) {
            let mut found: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path().join("lib"))
                .filter(|p| p.is_dir())
                .collect();
            found.sort();
            dirs.extend(found);
        }
    }
    for dir in dirs {
        for name in NAMES {
            let p = dir.join(name);
            if p.exists() {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// Python package folders worth a look: site-packages and dist-packages under the
/// active environments and the usual prefixes, and `PYTHONPATH`.
fn python_site_dirs() -> Vec<PathBuf> {
    let mut prefixes: Vec<PathBuf> = ["VIRTUAL_ENV", "CONDA_PREFIX"]
        .iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .collect();
    if let Some(home) = std::env::var_os("HOME") {
        prefixes.push(Path::new(&home).join(".local"));
    }
    prefixes.push(PathBuf::from("/usr/local"));
    prefixes.push(PathBuf::from("/usr"));
    let mut out: Vec<PathBuf> = std::env::var_os("PYTHONPATH")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    for prefix in prefixes {
        let Ok(entries) = std::fs::read_dir(prefix.join("lib")) else {
            continue;
        };
        let mut pythons: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
            .map(|e| e.path())
            .collect();
        pythons.sort();
        for py in pythons {
            out.push(py.join("site-packages"));
            out.push(py.join("dist-packages"));
        }
    }
    out
}

impl Cublas {
    /// Finds and loads cuBLAS (see the module docs). Errors are reasons, for `info`.
    pub(super) fn load() -> Result<Arc<Self>, String> {
        let mut tried = Vec::new();
        for path in candidates()? {
            match Self::open(&path) {
                Ok(c) => return Ok(Arc::new(c)),
                // The loader's message names the file already; ours do not.
                Err(e) if e.starts_with(&path.display().to_string()) => tried.push(e),
                Err(e) => tried.push(format!("{}: {e}", path.display())),
            }
        }
        Err(if tried.len() == 1 {
            tried.remove(0)
        } else {
            format!("no cuBLAS found (tried {})", tried.join("; "))
        })
    }

    fn open(path: &Path) -> Result<Self, String> {
        // SAFETY: loading runs the library's initialisers; cuBLAS's (like any library the
        // CUDA toolkit or a wheel ships) only set up its own state.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| {
            // The loader's own words ("cannot open shared object file: No such file ...").
            match std::error::Error::source(&e) {
                Some(why) => why.to_string(),
                None => e.to_string(),
            }
        })?;
        fn sym<T: Copy>(lib: &libloading::Library, name: &str) -> Result<T, String> {
            // SAFETY: each name is looked up with the C signature cuBLAS declares for it
            // (cublas_api.h, CUDA 11 to 13); the library outlives the copies (`_lib`).
            unsafe { lib.get::<T>(name.as_bytes()) }
                .map(|s| *s)
                .map_err(|_| format!("has no {name}"))
        }
        let create = sym::<CreateFn>(&lib, "cublasCreate_v2")?;
        let destroy = sym::<DestroyFn>(&lib, "cublasDestroy_v2")?;
        let set_stream = sym::<SetStreamFn>(&lib, "cublasSetStream_v2")?;
        let gemm_ex = sym::<GemmExFn>(&lib, "cublasGemmEx")?;
        let get_version = sym::<GetVersionFn>(&lib, "cublasGetVersion_v2")?;
        let set_workspace = sym::<SetWorkspaceFn>(&lib, "cublasSetWorkspace_v2").ok();
        let tf32_override = std::env::var("NVIDIA_TF32_OVERRIDE").is_ok_and(|v| v != "0");
        Ok(Self {
            create,
            destroy,
            set_stream,
            gemm_ex,
            get_version,
            set_workspace,
            source: path.display().to_string(),
            pedantic_fp32: tf32_override,
            _lib: lib,
        })
    }

    /// A handle bound to `stream`; the caller has bound the context to this thread.
    pub(super) fn handle(self: &Arc<Self>, stream: CUstream) -> Result<CublasHandle, BackendError> {
        let mut h: Handle = std::ptr::null_mut();
        // SAFETY: `h` is a valid out-pointer; cublasCreate allocates on the current
        // context (bound by the caller).
        check("cublasCreate", unsafe { (self.create)(&mut h) })?;
        let handle = CublasHandle {
            lib: Arc::clone(self),
            raw: h,
        };
        // SAFETY: a live handle and a live stream of the current context.
        check("cublasSetStream", unsafe { (self.set_stream)(h, stream) })?;
        Ok(handle)
    }

    /// "cuBLAS 12.8.4 (path)", from a handle's version, or the path alone.
    pub(super) fn describe(&self, handle: Option<&CublasHandle>) -> String {
        let mut v = 0;
        let version = handle.and_then(|h| {
            // SAFETY: a live handle and a valid out-pointer.
            (unsafe { (self.get_version)(h.raw, &mut v) } == 0).then_some(v)
        });
        match version {
            Some(v) => format!(
                "cuBLAS {}.{}.{} ({})",
                v / 10000,
                v / 100 % 100,
                v % 100,
                self.source
            ),
            None => format!("cuBLAS ({})", self.source),
        }
    }
}

fn check(what: &str, status: Status) -> Result<(), BackendError> {
    match status {
        0 => Ok(()),
        // CUBLAS_STATUS_ALLOC_FAILED: its workspace did not fit.
        3 => Err(BackendError::OutOfMemory { requested: 0 }),
        s => Err(BackendError::LaunchFailed {
            reason: format!("{what} failed (cublasStatus {s})"),
        }),
    }
}

/// A cuBLAS handle bound to one stream; destroyed when dropped.
pub(super) struct CublasHandle {
    lib: Arc<Cublas>,
    raw: Handle,
}

// SAFETY: a handle is used by one thread at a time (it belongs to one pooled stream's
// scratch, which one call holds); cuBLAS allows a handle to move between threads.
unsafe impl Send for CublasHandle {}

impl CublasHandle {
    /// Lends cuBLAS `bytes` of device memory at `ptr` as its workspace for the GEMMs that
    /// follow, in place of one it would allocate itself (a no-op where the library lacks
    /// the call). The caller has bound the context, and keeps the memory for those GEMMs
    /// until they ran: the program's scratch, in the arena of the handle's stream.
    pub(super) fn set_workspace(&self, ptr: u64, bytes: usize) -> Result<(), BackendError> {
        let Some(set) = self.lib.set_workspace else {
            return Ok(());
        };
        // SAFETY: a live handle; `ptr` is a device allocation of at least `bytes`,
        // 256-byte aligned (the arena's layout), which stays allocated while the GEMMs of
        // this program are queued or run (the arena is reallocated only on an idle
        // stream, and every program sets its own workspace before its first GEMM).
        check("cublasSetWorkspace", unsafe {
            set(self.raw, ptr as *mut c_void, bytes)
        })
    }

    /// Queues `g` on the handle's stream. The caller has bound the context, and `g`'s
    /// addresses hold the extents it names (see [`Gemm`]).
    pub(super) fn gemm(&self, g: &Gemm) -> Result<(), BackendError> {
        let int = |v: usize, what: &str| {
            i32::try_from(v).map_err(|_| BackendError::LaunchFailed {
                reason: format!("a GEMM's {what} = {v} exceeds cuBLAS's int"),
            })
        };
        let (m, n, k, ldc) = (
            int(g.m, "m")?,
            int(g.n, "n")?,
            int(g.k, "k")?,
            int(g.ldc, "ldc")?,
        );
        let (elem, compute) = match g.operands {
            Operands::Fp32 if self.lib.pedantic_fp32 => (R_32F, COMPUTE_32F_PEDANTIC),
            Operands::Fp32 => (R_32F, COMPUTE_32F),
            Operands::Tf32 => (R_32F, COMPUTE_32F_FAST_TF32),
            Operands::Fp16 => (R_16F, COMPUTE_32F),
            Operands::Bf16 => (R_16BF, COMPUTE_32F),
        };
        let (alpha, beta) = (1.0f32, 0.0f32);
        // SAFETY: the handle is live and bound to the call's stream; A holds m rows of k
        // elements and B n rows of k (lda = ldb = k, transposed A), C holds n columns of
        // ldc ≥ m floats: the program's builder sized each extent (`score_by_gemm`), and
        // `launch::run` checked the buffers against the program. alpha and beta are host
        // scalars (the default pointer mode), read before the call returns.
        let status = unsafe {
            (self.lib.gemm_ex)(
                self.raw,
                OP_T,
                OP_N,
                m,
                n,
                k,
                (&alpha as *const f32).cast(),
                g.a as *const c_void,
                elem,
                k,
                g.b as *const c_void,
                elem,
                k,
                (&beta as *const f32).cast(),
                g.c as *mut c_void,
                R_32F,
                ldc,
                compute,
                GEMM_DEFAULT,
            )
        };
        check("cublasGemmEx", status)
    }
}

impl Drop for CublasHandle {
    fn drop(&mut self) {
        // SAFETY: a live handle, destroyed once; cublasDestroy waits for its work.
        let _ = unsafe { (self.lib.destroy)(self.raw) };
    }
}

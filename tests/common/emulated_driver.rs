//! The emulated CUDA driver (`kernels/emu/driver.cpp` with the kernels of `emu.cpp`),
//! built with the system C++ compiler and loaded into this process, so that the backend
//! finds it as the driver (`libcuda.so.1`, behind the driver guard, or by cudarc's own
//! search where the guard is off) and the whole CUDA backend runs on the CPU.
//!
//! It must be loaded before anything asks for the driver: every test of a test binary
//! that uses it calls [`driver`] first. The driver's state (memory, faults, the sticky
//! error) is one per process; tests that change it hold [`Driver::exclusive`].
//!
//! Without a C++ compiler [`driver`] prints a skip line and returns `None`, unless
//! `HYBRIDVEC_REQUIRE_EMULATOR` is set (CI sets it), which makes that a failure.

#[path = "../../src/cuda/emulated/build_key.rs"]
mod build_key;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

type ConfigureFn = unsafe extern "C" fn(u64, u32, u64);
type FailAllocationFn = unsafe extern "C" fn(i64);
type FailLaunchFn = unsafe extern "C" fn(i64, i32);
type FailCopyFn = unsafe extern "C" fn(i64, i32);
type FailModuleLoadFn = unsafe extern "C" fn(i64);
type SetComputeCapabilityFn = unsafe extern "C" fn(i32, i32);
type RecoverFn = unsafe extern "C" fn();
type CountersFn = unsafe extern "C" fn(*mut u64);
type LiveHandlesFn = unsafe extern "C" fn() -> i64;
type FailCreateFn = unsafe extern "C" fn(i32);
type SetDeviceCountFn = unsafe extern "C" fn(i32);
type DeviceLiveBytesFn = unsafe extern "C" fn(i32) -> u64;
type HtodBytesFn = unsafe extern "C" fn() -> u64;

/// The loaded driver's controls.
pub struct Driver {
    path: PathBuf,
    configure: ConfigureFn,
    fail_allocation: FailAllocationFn,
    fail_launch: FailLaunchFn,
    fail_copy: FailCopyFn,
    fail_module_load: FailModuleLoadFn,
    set_compute_capability: SetComputeCapabilityFn,
    recover: RecoverFn,
    counters: CountersFn,
    set_device_count: SetDeviceCountFn,
    device_live_bytes: DeviceLiveBytesFn,
    htod_bytes: HtodBytesFn,
    cublas_path: PathBuf,
    cublas_live_handles: LiveHandlesFn,
    cublas_gemms: LiveHandlesFn,
    cublas_gemms_with_workspace: LiveHandlesFn,
    cublas_fail_create: FailCreateFn,
    lock: Mutex<()>,
}

/// What the driver counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counters {
    /// Device allocations not yet freed.
    pub live_allocations: u64,
    /// Their bytes, as charged against the device's memory.
    pub live_bytes: u64,
    /// Pinned host allocations not yet freed.
    pub live_host_allocations: u64,
    /// Driver calls so far.
    pub calls: u64,
    /// Kernel launches so far.
    pub launches: u64,
}

/// Device memory the tests start with: 4 GiB, as the driver's own default.
pub const DEFAULT_TOTAL: u64 = 4 << 30;
/// Streams' largest random delay before each piece of work, in µs.
pub const DEFAULT_DELAY_US: u32 = 50;

impl Driver {
    /// The shared library, for `LD_PRELOAD` in a child process.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The emulated cuBLAS (`kernels/emu/cublas.cpp`), loaded in this process under
    /// CUDA 13's soname, for `HYBRIDVEC_CUBLAS` in a child process.
    pub fn cublas_path(&self) -> &Path {
        &self.cublas_path
    }

    /// cuBLAS handles made and not yet destroyed.
    pub fn cublas_live_handles(&self) -> i64 {
        // SAFETY: cublas.cpp defines it with this C signature; it takes no pointers.
        unsafe { (self.cublas_live_handles)() }
    }

    /// While `on`, every cublasCreate of the emulated cuBLAS fails.
    pub fn cublas_fail_create(&self, on: bool) {
        // SAFETY: as above.
        unsafe { (self.cublas_fail_create)(on as i32) }
    }

    /// GEMMs the emulated cuBLAS queued so far.
    pub fn cublas_gemms(&self) -> i64 {
        // SAFETY: as above.
        unsafe { (self.cublas_gemms)() }
    }

    /// Of those, the GEMMs that ran with a workspace the backend lent (cublasSetWorkspace),
    /// which the emulated cuBLAS scribbles over before computing.
    pub fn cublas_gemms_with_workspace(&self) -> i64 {
        // SAFETY: as above.
        unsafe { (self.cublas_gemms_with_workspace)() }
    }

    /// Holds the driver's state for one test: the device memory, the streams' delays and
    /// the faults are set back to the defaults and any sticky error is cleared when the
    /// guard is taken and again when it drops.
    pub fn exclusive(&self) -> Exclusive<'_> {
        let guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.reset();
        Exclusive {
            driver: self,
            _guard: guard,
        }
    }

    fn reset(&self) {
        // SAFETY: driver.cpp defines these with these C signatures; they take no pointers.
        unsafe {
            (self.recover)();
            (self.configure)(DEFAULT_TOTAL, DEFAULT_DELAY_US, 0);
            (self.cublas_fail_create)(0);
        }
    }

    /// Device memory live on device `ordinal` (as charged against its memory), once every
    /// stream has run what it was given.
    pub fn device_live_bytes(&self, ordinal: i32) -> u64 {
        // SAFETY: driver.cpp defines it with this C signature; it takes no pointers.
        unsafe { (self.device_live_bytes)(ordinal) }
    }

    /// Bytes copied from the host to any device so far (queued copies included).
    pub fn htod_bytes(&self) -> u64 {
        // SAFETY: driver.cpp defines it with this C signature; it takes no pointers.
        unsafe { (self.htod_bytes)() }
    }

    /// The driver's counters now.
    pub fn counters(&self) -> Counters {
        let mut c = [0u64; 5];
        // SAFETY: hvemu_counters writes exactly five u64 values.
        unsafe { (self.counters)(c.as_mut_ptr()) };
        Counters {
            live_allocations: c[0],
            live_bytes: c[1],
            live_host_allocations: c[2],
            calls: c[3],
            launches: c[4],
        }
    }
}

/// One test's hold on the driver's state (see [`Driver::exclusive`]).
pub struct Exclusive<'a> {
    driver: &'a Driver,
    _guard: MutexGuard<'a, ()>,
}

impl Exclusive<'_> {
    /// Sets the device's total memory (`cuMemGetInfo` reports it less the live bytes).
    pub fn set_total_memory(&self, bytes: u64) {
        // SAFETY: see `Driver::reset`.
        unsafe { (self.driver.configure)(bytes, DEFAULT_DELAY_US, 0) };
    }

    /// The `n`-th device allocation from now (1: the next) fails with
    /// `CUDA_ERROR_OUT_OF_MEMORY`.
    pub fn fail_allocation(&self, n: i64) {
        // SAFETY: see `Driver::reset`.
        unsafe { (self.driver.fail_allocation)(n) };
    }

    /// The `n`-th launch from now fails with `code`, which then sticks to every call.
    pub fn fail_launch(&self, n: i64, code: i32) {
        // SAFETY: see `Driver::reset`.
        unsafe { (self.driver.fail_launch)(n, code) };
    }

    /// The `n`-th memory copy from now fails with `code` and queues nothing; the error
    /// does not stick.
    pub fn fail_copy(&self, n: i64, code: i32) {
        // SAFETY: see `Driver::reset`.
        unsafe { (self.driver.fail_copy)(n, code) };
    }

    /// Module loads from the `n`-th from now on fail with `CUDA_ERROR_INVALID_PTX` and a
    /// JIT error log naming `hvemu_fail_module_load`.
    pub fn fail_module_load(&self, n: i64) {
        // SAFETY: see `Driver::reset`.
        unsafe { (self.driver.fail_module_load)(n) };
    }

    /// How many devices the driver reports (1 to 8; 1 again when the guard drops). Each
    /// has its own context and memory of the same total; backends started before keep
    /// the devices they opened.
    pub fn set_device_count(&self, n: i32) {
        // SAFETY: see `Driver::reset`.
        unsafe { (self.driver.set_device_count)(n) };
    }

    /// The compute capability the device reports (9.0 until the guard drops); a cubin
    /// for another architecture fails to load, as on a GPU.
    pub fn set_compute_capability(&self, major: i32, minor: i32) {
        // SAFETY: see `Driver::reset`.
        unsafe { (self.driver.set_compute_capability)(major, minor) };
    }
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        self.driver.reset();
    }
}

/// A shared library of `sources` (under `kernels/emu`) with `soname`, in `dir`: built once
/// for these sources (into a file of its own, then renamed, so that test binaries running
/// at once never load a half-written one).
fn build(dir: &Path, stem: &str, soname: &str, sources: &[&str]) -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let out = dir.join(format!(
        "{stem}-{:016x}.so",
        build_key::sources_key(&cxx, soname)
    ));
    if out.is_file() {
        return Ok(out);
    }
    let partial = out.with_extension(format!("{}.partial", std::process::id()));
    let status = Command::new(&cxx)
        .args(["-std=c++17", "-O2", "-shared", "-fPIC", "-pthread"])
        .args(["-Wall", "-Wextra", "-Werror"])
        .args(["-Wno-unknown-pragmas", "-Wno-unused-parameter"])
        // Fibers switch stacks with _longjmp, which the fortified variant refuses.
        .arg("-U_FORTIFY_SOURCE")
        .arg(format!("-Wl,-soname,{soname}"))
        .arg("-o")
        .arg(&partial)
        .args(sources.iter().map(|s| root.join("kernels/emu").join(s)))
        .arg("-ldl")
        .status()
        .map_err(|e| format!("{cxx}: {e}"))?;
    if !status.success() {
        panic!("the emulated {soname} failed to compile ({cxx}: {status}); see the output above");
    }
    std::fs::rename(&partial, &out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(out)
}

/// Builds and loads the emulated driver once per process; `None` (after a skip line)
/// where no C++ compiler exists and `HYBRIDVEC_REQUIRE_EMULATOR` is unset.
pub fn driver() -> Option<&'static Driver> {
    static DRIVER: OnceLock<Option<Driver>> = OnceLock::new();
    DRIVER
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("emulated-driver");
            std::fs::create_dir_all(&dir).expect("create the emulated driver's directory");
            // The driver's soname: the driver guard needs "libcuda.so.1", and a loaded
            // object with that soname answers it (cudarc also tries the name, last). The
            // emulated cuBLAS takes CUDA 13's, which the backend's search tries first.
            let built = build(
                &dir,
                "libcuda-emulated",
                "libcuda.so.1",
                &["emu.cpp", "driver.cpp"],
            )
            .and_then(|path| {
                build(
                    &dir,
                    "libcublas-emulated",
                    "libcublas.so.13",
                    &["cublas.cpp"],
                )
                .map(|cublas| (path, cublas))
            });
            let (path, cublas_path) = match built {
                Ok(paths) => paths,
                Err(e) => {
                    if std::env::var_os("HYBRIDVEC_REQUIRE_EMULATOR").is_some() {
                        panic!("no C++ compiler for the emulated CUDA driver: {e}");
                    }
                    eprintln!("SKIP (no C++ compiler for the emulated CUDA driver): {e}");
                    return None;
                }
            };
            // SAFETY: the library was built from kernels/emu; loading it runs no
            // initialisers beyond the C++ runtime's.
            let lib = unsafe { libloading::Library::new(&path) }.expect("load the driver");
            // SAFETY: as above; after the driver, whose symbols it looks up when used.
            let cublas =
                unsafe { libloading::Library::new(&cublas_path) }.expect("load the cuBLAS");
            // SAFETY: driver.cpp defines each symbol with exactly this C signature.
            let driver = unsafe {
                Driver {
                    configure: *lib.get::<ConfigureFn>(b"hvemu_configure\0").unwrap(),
                    fail_allocation: *lib
                        .get::<FailAllocationFn>(b"hvemu_fail_allocation\0")
                        .unwrap(),
                    fail_launch: *lib.get::<FailLaunchFn>(b"hvemu_fail_launch\0").unwrap(),
                    fail_copy: *lib.get::<FailCopyFn>(b"hvemu_fail_copy\0").unwrap(),
                    fail_module_load: *lib
                        .get::<FailModuleLoadFn>(b"hvemu_fail_module_load\0")
                        .unwrap(),
                    set_compute_capability: *lib
                        .get::<SetComputeCapabilityFn>(b"hvemu_set_compute_capability\0")
                        .unwrap(),
                    recover: *lib.get::<RecoverFn>(b"hvemu_recover\0").unwrap(),
                    counters: *lib.get::<CountersFn>(b"hvemu_counters\0").unwrap(),
                    set_device_count: *lib
                        .get::<SetDeviceCountFn>(b"hvemu_set_device_count\0")
                        .unwrap(),
                    device_live_bytes: *lib
                        .get::<DeviceLiveBytesFn>(b"hvemu_device_live_bytes\0")
                        .unwrap(),
                    htod_bytes: *lib.get::<HtodBytesFn>(b"hvemu_htod_bytes\0").unwrap(),
                    cublas_live_handles: *cublas
                        .get::<LiveHandlesFn>(b"hvemu_cublas_live_handles\0")
                        .unwrap(),
                    cublas_gemms: *cublas
                        .get::<LiveHandlesFn>(b"hvemu_cublas_gemms\0")
                        .unwrap(),
                    cublas_gemms_with_workspace: *cublas
                        .get::<LiveHandlesFn>(b"hvemu_cublas_gemms_with_workspace\0")
                        .unwrap(),
                    cublas_fail_create: *cublas
                        .get::<FailCreateFn>(b"hvemu_cublas_fail_create\0")
                        .unwrap(),
                    path: path.clone(),
                    cublas_path: cublas_path.clone(),
                    lock: Mutex::new(()),
                }
            };
            // Loaded for the rest of the process: cudarc and the backend keep symbols.
            std::mem::forget(lib);
            std::mem::forget(cublas);
            driver.reset();
            Some(driver)
        })
        .as_ref()
}

//! The driver guard: result codes newer than the bindings become `CUDA_ERROR_UNKNOWN`.
//!
//! cudarc declares `CUresult` as a Rust enum of the codes its bindings know (CUDA 12.0
//! here, the oldest driver the backend serves). A newer driver can return a code added
//! since, and a value outside the enum is undefined behaviour the moment cudarc's
//! binding returns it: no check on our side of the call could help. So the check sits
//! on the driver's side. `kernels/guard/driver_guard.c`, built by `build.rs` and
//! embedded here, is a small library whose soname is `libcuda.so`, the first name
//! cudarc asks the dynamic loader for. Loaded before cudarc's first driver call, it is
//! the library cudarc binds to: each entry point hybridvec calls forwards to the driver
//! (`libcuda.so.1`, which it needs) and turns an unknown code into 999
//! (`CUDA_ERROR_UNKNOWN`), keeping the raw code for the message ([`unknown_code_note`]).
//! `CUDA_ERROR_UNKNOWN` is sticky ([`super::error`]): the device is retired for the
//! process, as after any error that leaves the context in doubt.
//!
//! The guard is loaded from memory (`memfd_create`), so it needs no writable or
//! executable directory. When it cannot load (no C compiler at build time, not Linux, no
//! driver, or `HYBRIDVEC_CUDA_GUARD=0`), cudarc opens the driver itself, as before: the
//! backend works, and only the unknown-code case is unguarded.

use std::ffi::c_uint;
use std::sync::OnceLock;

include!(concat!(env!("OUT_DIR"), "/driver_guard.rs"));

type LastUnknownFn = unsafe extern "C" fn() -> c_uint;

struct Guard {
    /// Kept loaded for the process: cudarc holds pointers into it.
    _lib: libloading::Library,
    last_unknown: LastUnknownFn,
}

static GUARD: OnceLock<Result<Guard, String>> = OnceLock::new();

/// Loads the guard once per process, before anything touches the driver. Returns why it
/// is not in front of the driver, if it is not (the backend then works unguarded).
pub(super) fn install() -> Result<(), &'static str> {
    GUARD
        .get_or_init(load)
        .as_ref()
        .map(|_| ())
        .map_err(String::as_str)
}

/// " (the driver returned code N, ...)" when the guard replaced a code, else "".
pub(super) fn unknown_code_note() -> String {
    let Some(Ok(guard)) = GUARD.get() else {
        return String::new();
    };
    // SAFETY: `hv_guard_last_unknown` takes nothing and reads an atomic.
    match unsafe { (guard.last_unknown)() } {
        0 => String::new(),
        code => format!(
            " (the driver returned code {code}, which this build's CUDA bindings do not \
             know)"
        ),
    }
}

fn load() -> Result<Guard, String> {
    if DRIVER_GUARD.is_empty() {
        return Err("not built (no C compiler at build time, or not Linux)".into());
    }
    if std::env::var_os("HYBRIDVEC_CUDA_GUARD").is_some_and(|v| v == "0") {
        return Err("disabled by HYBRIDVEC_CUDA_GUARD=0".into());
    }
    let (_file, path) = in_memory_file(DRIVER_GUARD)?;
    let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL;
    // SAFETY: the library is the guard built by build.rs; its only initialisers are the C
    // runtime's, and loading it loads the driver (`libcuda.so.1`), which any CUDA use
    // loads too. It stays loaded for the process.
    let lib = unsafe { libloading::os::unix::Library::open(Some(&path), flags) }.map_err(|e| {
        match std::error::Error::source(&e) {
            // The loader's own words: which library was missing.
            Some(why) => format!("cannot load: {why}"),
            None => format!("cannot load: {e}"),
        }
    })?;
    let lib = libloading::Library::from(lib);
    // SAFETY: driver_guard.c defines both with exactly these C signatures.
    let (open, last_unknown) = unsafe {
        let open = *lib
            .get::<unsafe extern "C" fn() -> std::ffi::c_int>(b"hv_guard_open\0")
            .map_err(|e| e.to_string())?;
        let last = *lib
            .get::<LastUnknownFn>(b"hv_guard_last_unknown\0")
            .map_err(|e| e.to_string())?;
        (open, last)
    };
    // SAFETY: called once, inside `GUARD`'s initialisation, before any driver call (every
    // use of the driver goes through `super::start`, which installs the guard first, and
    // the OnceLock orders those uses after this call).
    if unsafe { open() } != 0 {
        return Err("the driver library (libcuda.so.1) is not loaded".into());
    }
    Ok(Guard {
        _lib: lib,
        last_unknown,
    })
}

/// `bytes` as a file that `dlopen` can map: an anonymous memory file, named by its
/// descriptor under /proc/self/fd while the returned file is open.
fn in_memory_file(bytes: &[u8]) -> Result<(std::fs::File, std::path::PathBuf), String> {
    use std::io::Write as _;
    use std::os::fd::FromRawFd as _;
    // SAFETY: the name is a NUL-terminated string; the call has no other inputs.
    let fd = unsafe { libc::memfd_create(c"hybridvec-cuda-guard".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(bytes)
        .map_err(|e| format!("write the guard: {e}"))?;
    Ok((file, format!("/proc/self/fd/{fd}").into()))
}

//! The kernel images embedded in the build, and which one a device loads.
//!
//! Without `nvcc` the build embeds, per kernel file, an sm_80 and an sm_90 cubin
//! (machine code, assembled by PyPI's `ptxas` and checked in) and the PTX they came from.
//! A device loads the cubin of its own major version with the highest minor at or below
//! its own (sm_80 code runs on 8.6 and 8.9; sm_90 on 9.0), with no JIT at start-up; any
//! other device (10.x, 12.x), or one whose driver refuses the cubin, gets the PTX, which
//! the driver compiles. With `nvcc` there is one fatbin per file and the driver picks.
//!
//! A load that fails is tried once more through `cuModuleLoadDataEx` with an error log
//! buffer, so the JIT's own words end up in the reason.

use cudarc::driver::{CudaContext, CudaModule};
use std::sync::Arc;

/// How an embedded image was built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ImageForm {
    /// Machine code for `sm_<n>` (80: sm_80).
    Cubin(u32),
    /// PTX text with its NUL, compiled by the driver at load time.
    Ptx,
    /// An nvcc fatbin (machine code for the build's architectures, and PTX).
    #[allow(dead_code)] // named only by the generated listing of an nvcc build
    Fatbin,
}

impl ImageForm {
    /// Whether a device of compute capability `major.minor` runs this machine code (SASS
    /// is compatible within a major version, from its minor up).
    fn runs_on(self, (major, minor): (u32, u32)) -> bool {
        match self {
            ImageForm::Cubin(sm) => sm / 10 == major && sm % 10 <= minor,
            ImageForm::Ptx | ImageForm::Fatbin => true,
        }
    }

    /// For people: "sm_90 cubin", "PTX (JIT)", "fatbin".
    pub(super) fn describe(self) -> String {
        match self {
            ImageForm::Cubin(sm) => format!("sm_{sm} cubin"),
            ImageForm::Ptx => "PTX (JIT)".into(),
            ImageForm::Fatbin => "fatbin".into(),
        }
    }
}

/// One embedded image of one kernel file.
pub(super) struct KernelImage {
    /// The kernel file ("fused" for `kernels/fused.cu`).
    pub(super) module: &'static str,
    pub(super) form: ImageForm,
    pub(super) bytes: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// The images of `module` a device of capability `cc` may load, best first: its cubin
/// (the highest that runs on it), then the PTX or fatbin.
fn candidates(module: &str, cc: (u32, u32)) -> Vec<&'static KernelImage> {
    let mut found: Vec<_> = KERNEL_IMAGES
        .iter()
        .filter(|i| i.module == module && i.form.runs_on(cc))
        .collect();
    found.sort_by_key(|i| match i.form {
        ImageForm::Cubin(sm) => (0, u32::MAX - sm),
        ImageForm::Fatbin | ImageForm::Ptx => (1, 0),
    });
    found
}

/// Loads kernel file `module` into `ctx` for a device of capability `cc`: the best image
/// that loads, and its form. Errors are reasons, with every failed image's error and the
/// JIT log.
pub(super) fn load(
    ctx: &Arc<CudaContext>,
    module: &str,
    cc: (u32, u32),
) -> Result<(Arc<CudaModule>, ImageForm), String> {
    let mut failures = Vec::new();
    for image in candidates(module, cc) {
        let source = match image.form {
            ImageForm::Ptx => match std::str::from_utf8(&image.bytes[..image.bytes.len() - 1]) {
                Ok(text) => cudarc::nvrtc::Ptx::from_src(text),
                Err(e) => {
                    failures.push(format!("PTX is not text: {e}"));
                    continue;
                }
            },
            ImageForm::Cubin(_) | ImageForm::Fatbin => {
                cudarc::nvrtc::Ptx::from_binary(image.bytes.to_vec())
            }
        };
        match ctx.load_module(source) {
            Ok(m) => {
                if !failures.is_empty() {
                    tracing::debug!(module, failed = ?failures, "kernel image fell back");
                }
                return Ok((m, image.form));
            }
            Err(e) => {
                let log = jit_error_log(ctx, image.bytes);
                let log = if log.is_empty() {
                    "the driver wrote no JIT log".to_string()
                } else {
                    format!("JIT log: {log}")
                };
                failures.push(format!("{}: {e}; {log}", image.form.describe()));
            }
        }
    }
    if failures.is_empty() {
        failures.push("no image in this build".into());
    }
    Err(format!(
        "loading {module} ({KERNEL_BUILD}): {}",
        failures.join("; then ")
    ))
}

/// The driver's JIT error log for a module `image` that failed to load (PTX text with
/// its NUL, or a cubin), or `""`.
///
/// cudarc makes a [`CudaModule`] only through its own `load_module`, which calls
/// `cuModuleLoadData` and keeps no log; so a failed load is tried once more through
/// `cuModuleLoadDataEx` with an error log buffer, for the error's text. (The same image
/// fails the same way: the log is the JIT's reason.)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn forms(cc: (u32, u32)) -> Vec<ImageForm> {
        candidates("fused", cc).iter().map(|i| i.form).collect()
    }

    #[test]
    fn the_build_embeds_every_kernel_module() {
        use crate::cuda::program::Kernel;
        for k in Kernel::ALL {
            assert!(
                KERNEL_IMAGES
                    .iter()
                    .any(|i| i.module == k.module() && !i.bytes.is_empty()),
                "{} ({}.cu) is not in the build",
                k.symbol(),
                k.module()
            );
        }
    }

    #[test]
    fn each_device_gets_the_machine_code_it_runs_then_the_fallback() {
        if KERNEL_IMAGES.iter().any(|i| i.form == ImageForm::Fatbin) {
            assert_eq!(forms((9, 0)), [ImageForm::Fatbin]);
            return;
        }
        assert_eq!(forms((9, 0)), [ImageForm::Cubin(90), ImageForm::Ptx]);
        assert_eq!(forms((8, 0)), [ImageForm::Cubin(80), ImageForm::Ptx]);
        assert_eq!(forms((8, 9)), [ImageForm::Cubin(80), ImageForm::Ptx]);
        assert_eq!(forms((10, 0)), [ImageForm::Ptx]);
        assert_eq!(forms((12, 0)), [ImageForm::Ptx]);
        // Every kernel file has its PTX, NUL-terminated, and both cubins as ELF.
        for name in ["filter", "fused", "int8", "norms", "score", "topk"] {
            let of = |f| {
                KERNEL_IMAGES
                    .iter()
                    .find(|i| i.module == name && i.form == f)
            };
            assert_eq!(of(ImageForm::Ptx).unwrap().bytes.last(), Some(&0));
            for sm in [80, 90] {
                assert!(of(ImageForm::Cubin(sm))
                    .unwrap()
                    .bytes
                    .starts_with(b"\x7fELF"));
            }
        }
    }
}

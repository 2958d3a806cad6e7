//! Driver errors, mapped to what the executor does next ([`BackendError`]): out of memory
//! for a call's own buffers is [`BackendError::OutOfMemory`] (smaller query chunks may
//! fit), out of memory for the resident corpus is [`BackendError::CorpusTooLarge`] (they
//! cannot), and anything else is [`BackendError::LaunchFailed`] (run it elsewhere).
//!
//! Some errors are sticky: after an illegal address or a failed launch the context is
//! lost, and every later driver call of the process fails the same way. The first such
//! error retires the device for the rest of the process ([`device_lost`]): no call and no
//! probe touches the driver again, so `Auto` answers from the CPU at once instead of
//! retrying a dead device call after call.

use crate::backend::BackendError;
use cudarc::driver::sys::CUresult;
use cudarc::driver::DriverError;
use std::sync::OnceLock;

/// The sticky error that retired the device, once one has.
static LOST: OnceLock<String> = OnceLock::new();

/// Why the device is unusable for the rest of the process, if a sticky error said so.
pub(crate) fn device_lost() -> Option<&'static str> {
    LOST.get().map(String::as_str)
}

/// Errors after which the CUDA context is lost for the process (the driver API's
/// documentation of each: "the context cannot be used, so it must be destroyed (and a new
/// one should be created)"); an unknown error is treated the same way.
fn is_sticky(code: CUresult) -> bool {
    use CUresult::*;
    matches!(
        code,
        CUDA_ERROR_ILLEGAL_ADDRESS
            | CUDA_ERROR_LAUNCH_TIMEOUT
            | CUDA_ERROR_HARDWARE_STACK_ERROR
            | CUDA_ERROR_ILLEGAL_INSTRUCTION
            | CUDA_ERROR_MISALIGNED_ADDRESS
            | CUDA_ERROR_INVALID_ADDRESS_SPACE
            | CUDA_ERROR_INVALID_PC
            | CUDA_ERROR_LAUNCH_FAILED
            | CUDA_ERROR_ECC_UNCORRECTABLE
            | CUDA_ERROR_CONTEXT_IS_DESTROYED
            | CUDA_ERROR_UNKNOWN
    )
}

/// The driver error in words, with the raw code where the driver guard replaced one
/// unknown to the bindings.
pub(super) fn describe(e: &DriverError) -> String {
    #[cfg(target_os = "linux")]
    if e.0 == CUresult::CUDA_ERROR_UNKNOWN {
        return format!("{e}{}", super::guard::unknown_code_note());
    }
    e.to_string()
}

/// A call's allocation or launch failed, having asked for `requested` device bytes.
pub(super) fn oom_or_launch(e: DriverError, requested: u64) -> BackendError {
    if e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        return BackendError::OutOfMemory { requested };
    }
    let sticky = is_sticky(e.0);
    let e = describe(&e);
    if sticky {
        let first = LOST.get_or_init(|| e.clone());
        tracing::warn!(error = %first, "CUDA device lost; the CPU serves from now on");
        return BackendError::LaunchFailed {
            reason: format!("{e} (sticky: the device is not used again in this process)"),
        };
    }
    BackendError::LaunchFailed { reason: e }
}

/// The error of a call to a device that an earlier sticky error retired.
pub(super) fn lost_error(first: &str) -> BackendError {
    BackendError::Unavailable {
        reason: format!(
            "the device failed earlier with a sticky error ({first}) and is not used again \
             in this process"
        ),
    }
}

/// An allocation for the resident corpus (or its FP16 copy) failed: out of memory there
/// is [`BackendError::CorpusTooLarge`], which no smaller query chunk can mend.
pub(super) fn corpus_oom(e: DriverError, requested: u64) -> BackendError {
    match oom_or_launch(e, requested) {
        BackendError::OutOfMemory { requested } => BackendError::CorpusTooLarge { requested },
        other => other,
    }
}

/// A driver call that allocates nothing failed.
pub(super) fn launch_failed(e: DriverError) -> BackendError {
    oom_or_launch(e, 0)
}

//! Driver errors, mapped to what the executor does next ([`BackendError`]): out of memory
//! for a call's own buffers is [`BackendError::OutOfMemory`] (smaller query chunks may
//! fit), out of memory for the resident corpus is [`BackendError::CorpusTooLarge`] (they
//! cannot), and anything else is [`BackendError::LaunchFailed`] (run it elsewhere).

use crate::backend::BackendError;
use cudarc::driver::sys::CUresult;
use cudarc::driver::DriverError;

/// A call's allocation or launch failed, having asked for `requested` device bytes.
pub(super) fn oom_or_launch(e: DriverError, requested: u64) -> BackendError {
    if e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        BackendError::OutOfMemory { requested }
    } else {
        BackendError::LaunchFailed {
            reason: e.to_string(),
        }
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

//! The CUDA backend's home. This build carries no CUDA backend yet, so the probe reports
//! why CUDA cannot serve and every call runs on the CPU; nothing here links CUDA, so the
//! crate builds without a toolkit.

/// Whether CUDA can serve calls, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CudaStatus {
    /// A usable device.
    Available {
        /// Device name as the driver reports it.
        device: String,
        /// Total device memory in bytes.
        total_memory: u64,
    },
    /// CUDA cannot serve; `reason` is meant for people ("no libcuda found", ...).
    Unavailable {
        /// Why.
        reason: String,
    },
}

impl CudaStatus {
    /// True when a device can serve calls.
    pub fn is_available(&self) -> bool {
        matches!(self, CudaStatus::Available { .. })
    }
}

/// Probes for a usable device. Never panics.
pub(crate) fn probe() -> CudaStatus {
    CudaStatus::Unavailable {
        reason: "this build of hybridvec has no CUDA backend (CPU only)".to_string(),
    }
}

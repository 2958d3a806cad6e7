//! The CUDA backend's home: the run-time probe, its settings, and the backend itself.
//!
//! `cudarc` loads `libcuda` at run time, so the crate builds with no toolkit and starts
//! with no driver. The probe goes step by step — is the driver library present, how many
//! devices, can a context be made, do the kernels load — and every failure becomes
//! [`CudaStatus::Unavailable`] with the reason. `cudarc` panics when a library or symbol
//! is missing, so nothing else touches the driver before the probe has succeeded, and
//! the probe itself runs under `catch_unwind`.
//!
//! The rooms, from the call down: `backend` (the `Backend` implementation and
//! each call's flow), `plan` (chunk sizes from free memory), `program` (every launch of a
//! call, as data), `launch` (a program run on a stream), `images` (the embedded cubins
//! and PTX, and which one a device loads), `guard` (the driver guard, loaded before the
//! driver: result codes newer than the bindings), `resident` (the corpus kept on the
//! device) and `resident_int8` (its int8 tier), `streams` and `scratch` (streams reused from call to call, each with the
//! memory a call runs in), `cublas` (cuBLAS loaded at run time, for the GEMM steps) and
//! `gemm_choice` (when a batch takes them), and `error` (driver errors mapped to what
//! the executor does next). The emulation tests (`emulated`) run the same programs on
//! the CPU.

mod backend;
mod cublas;
#[cfg(test)]
mod emulated;
mod error;
mod gemm_choice;
#[cfg(target_os = "linux")]
mod guard;
mod images;
mod launch;
pub(crate) mod plan;
pub(crate) mod program;
mod resident;
mod resident_int8;
mod scratch;
mod streams;

pub use backend::take_device_time;
pub(crate) use backend::CudaBackend;
pub use gemm_choice::GemmPath;

use crate::backend::Backend;
use crate::sharded::ShardedBackend;
use std::sync::Arc;

/// Whether CUDA can serve calls, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CudaStatus {
    /// A usable device.
    Available {
        /// Device name as the driver reports it.
        device: String,
        /// Total device memory in bytes.
        total_memory: u64,
        /// The kernel images the device loaded ("sm_90 cubin", "PTX (JIT)", "fatbin");
        /// empty for an accelerator the application brought.
        kernels: String,
        /// The fixed cost of a call (an upload, three launches, a read-back and the
        /// wait), measured when the backend opened; `None` for an accelerator the
        /// application brought.
        call_overhead: Option<std::time::Duration>,
        /// How batches of more than 8 queries are scored: "cuBLAS 12.8.4 (path), or the
        /// own kernels where measured faster", or "own kernels: " and why not cuBLAS;
        /// empty for an accelerator the application brought.
        gemm: String,
        /// How many devices serve: with more than one, each call splits the corpus's rows
        /// between them and merges their answers (see [`CudaConfig::devices`]); 1 for an
        /// accelerator the application brought.
        devices: usize,
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

/// Arithmetic of the CUDA backend's compute-bound kernels (batches above 8 queries).
///
/// Under TF32, memory-bound calls (up to 8 queries) still run in FP32: they wait on
/// memory, not on arithmetic, so a cheaper product would not make them faster. FP16 and
/// BF16 halve the bytes they read, so they serve them too.
///
/// A corpus stored in FP16 or BF16 is kept on the device as stored, with no copy: under
/// every precision but its own format's, it is scored in FP32 arithmetic on its widened
/// rows (exact for the stored values); under its own format's, cosine runs on the tensor
/// cores from the stored rows.
///
/// FP16 or BF16? Both copies hold unit-norm rows, so FP16's narrow range never matters
/// here, and its three more mantissa bits make it eight times as accurate; BF16 is for
/// callers who want the arithmetic of models trained in it. On the H200 both run at the
/// same tensor-core rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Exact FP32 products and sums, as on the CPU (relative error < 1e-5). The default.
    #[default]
    Fp32,
    /// Products on the tensor cores from operands rounded to TF32 (10 mantissa bits),
    /// summed in FP32. A cosine score is off by at most about 2⁻¹⁰ ≈ 1e-3 (each operand
    /// is within 2⁻¹¹ relative, and |q·x| ≤ ‖q‖‖x‖), so top-k may swap rows whose
    /// scores are that close. Several times the FP32 throughput on sm_80 and newer.
    Tf32,
    /// The corpus is kept on the device a second time, in FP16 with every row scaled to
    /// unit norm (half the bytes of FP32, so memory-bound calls stream half as much), and
    /// the compute-bound kernels multiply FP16 operands on the tensor cores, summing in
    /// FP32. A score is off by at most about 2⁻¹⁰ ≈ 1e-3, as with TF32. The FP16 copy
    /// takes `N × D × 2` more device bytes.
    Fp16,
    /// As [`Precision::Fp16`], in BF16 (8 significant bits, FP32's exponent range): each
    /// operand is within 2⁻⁸ relative, so a cosine score is off by at most about
    /// 2⁻⁷ ≈ 8e-3. The BF16 copy takes `N × D × 2` more device bytes.
    Bf16,
}

/// The 16-bit corpus copy a [`Precision`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Half {
    Fp16,
    Bf16,
}

impl From<crate::elem::Half> for Half {
    fn from(h: crate::elem::Half) -> Self {
        match h {
            crate::elem::Half::F16 => Half::Fp16,
            crate::elem::Half::Bf16 => Half::Bf16,
        }
    }
}

impl Precision {
    /// Largest absolute error of a cosine score against the exact value, as documented.
    pub fn score_tolerance(self) -> f32 {
        match self {
            Precision::Fp32 => 1e-5,
            Precision::Tf32 | Precision::Fp16 => 2e-3,
            Precision::Bf16 => 1e-2,
        }
    }

    /// The 16-bit copy of the corpus this precision reads, if any.
    pub(crate) fn half(self) -> Option<Half> {
        match self {
            Precision::Fp32 | Precision::Tf32 => None,
            Precision::Fp16 => Some(Half::Fp16),
            Precision::Bf16 => Some(Half::Bf16),
        }
    }
}

/// Settings of the CUDA backend.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CudaConfig {
    /// Share of the free device memory a call plans to use. Default 0.8.
    pub memory_margin: f64,
    /// Plan as if at most this many bytes were free (to test or cap chunking). Default none.
    pub memory_budget: Option<u64>,
    /// Arithmetic of the compute-bound kernels. Default [`Precision::Fp32`].
    pub precision: Precision,
    /// Whether batches of more than 8 queries are scored by cuBLAS's GEMM (loaded at run
    /// time; see `HYBRIDVEC_CUBLAS` in the README). Default [`GemmPath::Measured`].
    pub gemm: GemmPath,
    /// Use at most this many devices, the first ones in the driver's order
    /// (`CUDA_VISIBLE_DEVICES` picks which the driver shows). Default `None`: all of them.
    /// With more than one, every call gives each device a share of the corpus's rows
    /// (kept resident on that device) and merges the answers, which are the ones a single
    /// device would give. `Some(0)` is [`Error::InvalidConfig`](crate::Error::InvalidConfig).
    pub devices: Option<usize>,
}

impl Default for CudaConfig {
    fn default() -> Self {
        Self {
            memory_margin: 0.8,
            memory_budget: None,
            precision: Precision::Fp32,
            gemm: GemmPath::Measured,
            devices: None,
        }
    }
}

/// A started CUDA side: what it reports, and the backend the executor calls (one
/// device's, or one over several, [`ShardedBackend`]).
pub(crate) struct Started {
    pub(crate) status: CudaStatus,
    pub(crate) backend: Arc<dyn Backend>,
}

/// What a started set of devices reports, `backend` serving them.
fn status_of(devices: &[Arc<CudaBackend>], backend: &dyn Backend) -> CudaStatus {
    let first = &devices[0];
    CudaStatus::Available {
        device: backend.name().to_string(),
        total_memory: devices.iter().map(|d| d.total_memory()).sum(),
        kernels: first.kernel_images(),
        call_overhead: devices.iter().map(|d| d.call_overhead_measured()).max(),
        gemm: first.gemm_description(),
        devices: devices.len(),
    }
}

/// Probes for usable devices and opens them (all, or the first [`CudaConfig::devices`]):
/// a device that cannot open is left out, and only when none opens is the CUDA side
/// unavailable (with every device's reason). Never panics.
pub(crate) fn start(config: &CudaConfig) -> Result<Started, String> {
    if std::env::var_os("HYBRIDVEC_NO_CUDA").is_some() {
        return Err("disabled by HYBRIDVEC_NO_CUDA".into());
    }
    if let Some(first) = error::device_lost() {
        return Err(format!(
            "the device failed earlier in this process with a sticky error ({first})"
        ));
    }
    let config = *config;
    std::panic::catch_unwind(move || {
        #[cfg(target_os = "linux")]
        match guard::install() {
            Ok(()) => tracing::debug!("CUDA driver guard in front of libcuda.so.1"),
            Err(why) => tracing::debug!(why, "CUDA driver guard not in front of the driver"),
        }
        // SAFETY: is_culib_present only tries to dlopen the driver library's candidate
        // names and reports whether one loaded; it calls no CUDA function.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(
                "no libcuda found (the NVIDIA driver is not installed or not on the \
                        library path)"
                    .to_string(),
            );
        }
        let count = cudarc::driver::CudaContext::device_count()
            .map_err(|e| format!("the CUDA driver failed to start: {}", error::describe(&e)))?;
        if count < 1 {
            return Err("the CUDA driver reports no device".to_string());
        }
        let wanted = config
            .devices
            .map_or(count as usize, |m| m.min(count as usize));
        let mut opened = Vec::new();
        let mut reasons = Vec::new();
        for ordinal in 0..wanted {
            match CudaBackend::open(&config, ordinal) {
                Ok(b) => opened.push(Arc::new(b)),
                Err(why) if wanted == 1 => reasons.push(why),
                Err(why) => reasons.push(format!("device {ordinal}: {why}")),
            }
        }
        if opened.is_empty() {
            return Err(reasons.join("; "));
        }
        if !reasons.is_empty() {
            tracing::warn!(
                reasons = reasons.join("; "),
                serving = opened.len(),
                "CUDA devices left out"
            );
        }
        let backend: Arc<dyn Backend> = match opened.len() {
            1 => Arc::clone(&opened[0]) as Arc<dyn Backend>,
            _ => Arc::new(ShardedBackend::new(
                opened
                    .iter()
                    .map(|b| Arc::clone(b) as Arc<dyn Backend>)
                    .collect(),
            )),
        };
        let status = status_of(&opened, backend.as_ref());
        Ok(Started { status, backend })
    })
    .unwrap_or_else(|_| {
        Err("the CUDA driver library is incomplete (a symbol failed to load)".into())
    })
}

/// Probes without keeping the device (for `info` under `DevicePolicy::Cpu`).
pub(crate) fn probe() -> CudaStatus {
    match start(&CudaConfig::default()) {
        Ok(started) => started.status,
        Err(reason) => CudaStatus::Unavailable { reason },
    }
}

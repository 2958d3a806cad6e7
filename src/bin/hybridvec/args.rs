//! The value types of the command line's flags (clap `ValueEnum`s), each with the library
//! type it stands for, and the parsers of the numeric flags that clap's own cannot check.

use clap::ValueEnum;
use hybridvec::{DevicePolicy, ElementType, GemmPath, Metric, Precision};

/// Which backend serves (`--backend`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Backend {
    Auto,
    Cpu,
    Cuda,
}

impl From<Backend> for DevicePolicy {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Auto => DevicePolicy::Auto,
            Backend::Cpu => DevicePolicy::Cpu,
            Backend::Cuda => DevicePolicy::Cuda,
        }
    }
}

/// What to rank by (`--metric`): cosine, inner product, or squared L2 distance (smallest
/// first).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum MetricArg {
    Cos,
    Ip,
    L2,
}

impl From<MetricArg> for Metric {
    fn from(m: MetricArg) -> Self {
        match m {
            MetricArg::Cos => Metric::Cosine,
            MetricArg::Ip => Metric::InnerProduct,
            MetricArg::L2 => Metric::L2,
        }
    }
}

/// How a filtered search reads the corpus (`--filter-plan`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum FilterPlanArg {
    Auto,
    Gather,
    Mask,
}

impl From<FilterPlanArg> for hybridvec::FilterPlan {
    fn from(p: FilterPlanArg) -> Self {
        match p {
            FilterPlanArg::Auto => hybridvec::FilterPlan::Auto,
            FilterPlanArg::Gather => hybridvec::FilterPlan::Gather,
            FilterPlanArg::Mask => hybridvec::FilterPlan::Mask,
        }
    }
}

/// Arithmetic of the GPU's compute-bound kernels (`--precision`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum PrecisionArg {
    /// Exact FP32 (the default).
    Fp32,
    /// TF32 tensor cores (scores within 2e-3).
    Tf32,
    /// An FP16 copy of the corpus, FP16 tensor cores (scores within 2e-3).
    Fp16,
    /// A BF16 copy of the corpus, BF16 tensor cores (scores within 1e-2).
    Bf16,
}

/// How `bench` holds the corpus (`--dtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum DtypeArg {
    /// f32 rows, scanned in full.
    F32,
    /// f16 rows (rounded from the f32 data), scanned in full: half the bytes.
    F16,
    /// bf16 rows (rounded from the f32 data), scanned in full: half the bytes.
    Bf16,
    /// f32 rows and an int8 scan tier: top-k on the CPU scans the tier and re-scores
    /// only the rows it cannot rule out (the answer is the f32 scan's, exactly). Batches
    /// of every size with AVX-512 VNNI, up to 24 queries with AVX2, else up to 4; larger
    /// batches scan in full.
    Int8,
}

/// How `ingest` stores vectors (`--dtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum StoreDtypeArg {
    /// 32-bit floats, as given.
    F32,
    /// 16-bit IEEE floats (values up to ±65 504).
    F16,
    /// bfloat16 (8 significant bits, f32's range).
    Bf16,
}

impl From<StoreDtypeArg> for ElementType {
    fn from(d: StoreDtypeArg) -> Self {
        match d {
            StoreDtypeArg::F32 => ElementType::F32,
            StoreDtypeArg::F16 => ElementType::F16,
            StoreDtypeArg::Bf16 => ElementType::Bf16,
        }
    }
}

/// How the GPU scores batches of more than 8 queries (`--gemm`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum GemmArg {
    /// cuBLAS or the own kernels, whichever the device measures faster.
    Measured,
    /// Always cuBLAS (when it is found).
    Cublas,
    /// Never cuBLAS.
    Own,
}

impl From<GemmArg> for GemmPath {
    fn from(g: GemmArg) -> Self {
        match g {
            GemmArg::Measured => GemmPath::Measured,
            GemmArg::Cublas => GemmPath::Cublas,
            GemmArg::Own => GemmPath::OwnKernels,
        }
    }
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::Fp32 => Precision::Fp32,
            PrecisionArg::Tf32 => Precision::Tf32,
            PrecisionArg::Fp16 => Precision::Fp16,
            PrecisionArg::Bf16 => Precision::Bf16,
        }
    }
}

/// A count flag's value: a whole number of at least 1 (clap names the flag in the error).
pub(crate) fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A `--filter` value: a fraction above 0 and at most 1.
pub(crate) fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        Ok(_) => Err("must be above 0 and at most 1".into()),
        Err(e) => Err(e.to_string()),
    }
}

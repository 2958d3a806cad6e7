//! The kernels of `kernels/*.cu` that programs launch: their symbols and modules; and the
//! GEMM steps, which cuBLAS runs (the emulator runs them on the host).

use crate::cuda::{Half, Precision};

/// A kernel of `kernels/*.cu`, or a GEMM step of cuBLAS ([`Kernel::gemm`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    InvNorms,
    ScoreSmallQ,
    ScoreTiled,
    ScoreTiledTf32,
    SelectTopK,
    SortTopK,
    TopKSmallQ,
    TopKTiled,
    TopKTiledTf32,
    RowsToHalf,
    ScoreSmallQF16,
    ScoreTiledF16,
    TopKSmallQF16,
    TopKTiledF16,
    FilterSmallQ,
    FilterSmallQF16,
    FilterTiled,
    FilterTiledTf32,
    FilterTiledF16,
    ScoreSmallQL2,
    ScoreTiledL2,
    TopKSmallQL2,
    TopKTiledL2,
    FilterSmallQL2,
    FilterTiledL2,
    ApplyRowFactors,
    QueriesToHalf,
    SelectTopKScored,
    ScoreSmallQBf16,
    ScoreTiledBf16,
    TopKSmallQBf16,
    TopKTiledBf16,
    FilterSmallQBf16,
    FilterTiledBf16,
    ScoreSmallQL2F16,
    ScoreTiledFp32F16,
    ScoreTiledL2F16,
    TopKSmallQL2F16,
    TopKTiledFp32F16,
    TopKTiledL2F16,
    FilterSmallQL2F16,
    FilterTiledFp32F16,
    FilterTiledL2F16,
    ScoreSmallQL2Bf16,
    ScoreTiledFp32Bf16,
    ScoreTiledL2Bf16,
    TopKSmallQL2Bf16,
    TopKTiledFp32Bf16,
    TopKTiledL2Bf16,
    FilterSmallQL2Bf16,
    FilterTiledFp32Bf16,
    FilterTiledL2Bf16,
    Int8Bounds,
    Int8Mask,
    /// cuBLAS: scores = corpus rows · queries, FP32 (arguments: A = rows, B = queries,
    /// C = scores, m = rows, n = queries, k = dim, ldc).
    GemmFp32,
    /// The same on TF32 tensor cores.
    GemmTf32,
    /// The same from FP16 operands (the FP16 corpus copy and FP16 queries).
    GemmFp16,
    /// The same from BF16 operands.
    GemmBf16,
}

/// The operand types of a GEMM step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GemmKind {
    Fp32,
    Tf32,
    Fp16,
    Bf16,
}

impl Kernel {
    /// Every kernel of `kernels/*.cu` (the GEMM steps are cuBLAS's).
    pub(crate) const ALL: [Kernel; 54] = [
        Kernel::InvNorms,
        Kernel::ScoreSmallQ,
        Kernel::ScoreTiled,
        Kernel::ScoreTiledTf32,
        Kernel::SelectTopK,
        Kernel::SortTopK,
        Kernel::TopKSmallQ,
        Kernel::TopKTiled,
        Kernel::TopKTiledTf32,
        Kernel::RowsToHalf,
        Kernel::ScoreSmallQF16,
        Kernel::ScoreTiledF16,
        Kernel::TopKSmallQF16,
        Kernel::TopKTiledF16,
        Kernel::FilterSmallQ,
        Kernel::FilterSmallQF16,
        Kernel::FilterTiled,
        Kernel::FilterTiledTf32,
        Kernel::FilterTiledF16,
        Kernel::ScoreSmallQL2,
        Kernel::ScoreTiledL2,
        Kernel::TopKSmallQL2,
        Kernel::TopKTiledL2,
        Kernel::FilterSmallQL2,
        Kernel::FilterTiledL2,
        Kernel::ApplyRowFactors,
        Kernel::QueriesToHalf,
        Kernel::SelectTopKScored,
        Kernel::ScoreSmallQBf16,
        Kernel::ScoreTiledBf16,
        Kernel::TopKSmallQBf16,
        Kernel::TopKTiledBf16,
        Kernel::FilterSmallQBf16,
        Kernel::FilterTiledBf16,
        Kernel::ScoreSmallQL2F16,
        Kernel::ScoreTiledFp32F16,
        Kernel::ScoreTiledL2F16,
        Kernel::TopKSmallQL2F16,
        Kernel::TopKTiledFp32F16,
        Kernel::TopKTiledL2F16,
        Kernel::FilterSmallQL2F16,
        Kernel::FilterTiledFp32F16,
        Kernel::FilterTiledL2F16,
        Kernel::ScoreSmallQL2Bf16,
        Kernel::ScoreTiledFp32Bf16,
        Kernel::ScoreTiledL2Bf16,
        Kernel::TopKSmallQL2Bf16,
        Kernel::TopKTiledFp32Bf16,
        Kernel::TopKTiledL2Bf16,
        Kernel::FilterSmallQL2Bf16,
        Kernel::FilterTiledFp32Bf16,
        Kernel::FilterTiledL2Bf16,
        Kernel::Int8Bounds,
        Kernel::Int8Mask,
    ];

    /// The GEMM a step runs, for the GEMM steps.
    pub(crate) fn gemm(self) -> Option<GemmKind> {
        match self {
            Kernel::GemmFp32 => Some(GemmKind::Fp32),
            Kernel::GemmTf32 => Some(GemmKind::Tf32),
            Kernel::GemmFp16 => Some(GemmKind::Fp16),
            Kernel::GemmBf16 => Some(GemmKind::Bf16),
            _ => None,
        }
    }

    /// The `extern "C"` name.
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Kernel::InvNorms => "hv_row_inv_norms",
            Kernel::ScoreSmallQ => "hv_score_small_q",
            Kernel::ScoreTiled => "hv_score_tiled",
            Kernel::ScoreTiledTf32 => "hv_score_tiled_tf32",
            Kernel::SelectTopK => "hv_select_topk",
            Kernel::SortTopK => "hv_sort_topk",
            Kernel::TopKSmallQ => "hv_topk_small_q",
            Kernel::TopKTiled => "hv_topk_tiled",
            Kernel::TopKTiledTf32 => "hv_topk_tiled_tf32",
            Kernel::RowsToHalf => "hv_rows_to_half",
            Kernel::ScoreSmallQF16 => "hv_score_small_q_f16",
            Kernel::ScoreTiledF16 => "hv_score_tiled_f16",
            Kernel::TopKSmallQF16 => "hv_topk_small_q_f16",
            Kernel::TopKTiledF16 => "hv_topk_tiled_f16",
            Kernel::FilterSmallQ => "hv_filter_small_q",
            Kernel::FilterSmallQF16 => "hv_filter_small_q_f16",
            Kernel::FilterTiled => "hv_filter_tiled",
            Kernel::FilterTiledTf32 => "hv_filter_tiled_tf32",
            Kernel::FilterTiledF16 => "hv_filter_tiled_f16",
            Kernel::ScoreSmallQL2 => "hv_score_small_q_l2",
            Kernel::ScoreTiledL2 => "hv_score_tiled_l2",
            Kernel::TopKSmallQL2 => "hv_topk_small_q_l2",
            Kernel::TopKTiledL2 => "hv_topk_tiled_l2",
            Kernel::FilterSmallQL2 => "hv_filter_small_q_l2",
            Kernel::FilterTiledL2 => "hv_filter_tiled_l2",
            Kernel::ApplyRowFactors => "hv_apply_row_factors",
            Kernel::QueriesToHalf => "hv_queries_to_half",
            Kernel::SelectTopKScored => "hv_select_topk_scored",
            Kernel::GemmFp32 => "hv_gemm_fp32",
            Kernel::GemmTf32 => "hv_gemm_tf32",
            Kernel::GemmFp16 => "hv_gemm_fp16",
            Kernel::GemmBf16 => "hv_gemm_bf16",
            Kernel::ScoreSmallQBf16 => "hv_score_small_q_bf16",
            Kernel::ScoreTiledBf16 => "hv_score_tiled_bf16",
            Kernel::TopKSmallQBf16 => "hv_topk_small_q_bf16",
            Kernel::TopKTiledBf16 => "hv_topk_tiled_bf16",
            Kernel::FilterSmallQBf16 => "hv_filter_small_q_bf16",
            Kernel::FilterTiledBf16 => "hv_filter_tiled_bf16",
            Kernel::ScoreSmallQL2F16 => "hv_score_small_q_l2_f16",
            Kernel::ScoreTiledFp32F16 => "hv_score_tiled_fp32_f16",
            Kernel::ScoreTiledL2F16 => "hv_score_tiled_l2_f16",
            Kernel::TopKSmallQL2F16 => "hv_topk_small_q_l2_f16",
            Kernel::TopKTiledFp32F16 => "hv_topk_tiled_fp32_f16",
            Kernel::TopKTiledL2F16 => "hv_topk_tiled_l2_f16",
            Kernel::FilterSmallQL2F16 => "hv_filter_small_q_l2_f16",
            Kernel::FilterTiledFp32F16 => "hv_filter_tiled_fp32_f16",
            Kernel::FilterTiledL2F16 => "hv_filter_tiled_l2_f16",
            Kernel::ScoreSmallQL2Bf16 => "hv_score_small_q_l2_bf16",
            Kernel::ScoreTiledFp32Bf16 => "hv_score_tiled_fp32_bf16",
            Kernel::ScoreTiledL2Bf16 => "hv_score_tiled_l2_bf16",
            Kernel::TopKSmallQL2Bf16 => "hv_topk_small_q_l2_bf16",
            Kernel::TopKTiledFp32Bf16 => "hv_topk_tiled_fp32_bf16",
            Kernel::TopKTiledL2Bf16 => "hv_topk_tiled_l2_bf16",
            Kernel::FilterSmallQL2Bf16 => "hv_filter_small_q_l2_bf16",
            Kernel::FilterTiledFp32Bf16 => "hv_filter_tiled_fp32_bf16",
            Kernel::FilterTiledL2Bf16 => "hv_filter_tiled_l2_bf16",
            Kernel::Int8Bounds => "hv_int8_bounds",
            Kernel::Int8Mask => "hv_int8_mask",
        }
    }

    /// The `kernels/<module>.cu` that defines it.
    pub(crate) fn module(self) -> &'static str {
        match self {
            Kernel::InvNorms | Kernel::RowsToHalf | Kernel::QueriesToHalf => "norms",
            Kernel::Int8Bounds | Kernel::Int8Mask => "int8",
            Kernel::GemmFp32 | Kernel::GemmTf32 | Kernel::GemmFp16 | Kernel::GemmBf16 => "cublas",
            Kernel::ScoreSmallQ
            | Kernel::ScoreTiled
            | Kernel::ScoreTiledTf32
            | Kernel::ScoreSmallQF16
            | Kernel::ScoreTiledF16
            | Kernel::ScoreSmallQBf16
            | Kernel::ScoreTiledBf16
            | Kernel::ScoreSmallQL2
            | Kernel::ScoreTiledL2
            | Kernel::ScoreSmallQL2F16
            | Kernel::ScoreTiledFp32F16
            | Kernel::ScoreTiledL2F16
            | Kernel::ScoreSmallQL2Bf16
            | Kernel::ScoreTiledFp32Bf16
            | Kernel::ScoreTiledL2Bf16
            | Kernel::ApplyRowFactors => "score",
            Kernel::SelectTopK | Kernel::SortTopK | Kernel::SelectTopKScored => "topk",
            Kernel::TopKSmallQ
            | Kernel::TopKTiled
            | Kernel::TopKTiledTf32
            | Kernel::TopKSmallQF16
            | Kernel::TopKTiledF16
            | Kernel::TopKSmallQBf16
            | Kernel::TopKTiledBf16
            | Kernel::TopKSmallQL2
            | Kernel::TopKTiledL2
            | Kernel::TopKSmallQL2F16
            | Kernel::TopKTiledFp32F16
            | Kernel::TopKTiledL2F16
            | Kernel::TopKSmallQL2Bf16
            | Kernel::TopKTiledFp32Bf16
            | Kernel::TopKTiledL2Bf16 => "fused",
            Kernel::FilterSmallQ
            | Kernel::FilterSmallQF16
            | Kernel::FilterTiled
            | Kernel::FilterTiledTf32
            | Kernel::FilterTiledF16
            | Kernel::FilterSmallQBf16
            | Kernel::FilterTiledBf16
            | Kernel::FilterSmallQL2
            | Kernel::FilterTiledL2
            | Kernel::FilterSmallQL2F16
            | Kernel::FilterTiledFp32F16
            | Kernel::FilterTiledL2F16
            | Kernel::FilterSmallQL2Bf16
            | Kernel::FilterTiledFp32Bf16
            | Kernel::FilterTiledL2Bf16 => "filter",
        }
    }
}

/// The scoring kernels, by what they do with the scores; each comes in variants by the
/// corpus element, the arithmetic and the metric ([`Shape::small_kernel`](super::Shape)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    /// Scores into memory (`score.cu`).
    Score,
    /// Top-k fused with scoring (`fused.cu`).
    TopK,
    /// Rows at or above a floor (`filter.cu`).
    Filter,
}

impl Family {
    /// Every memory-bound kernel of the family.
    pub(crate) fn all_small(self) -> Vec<Kernel> {
        let mut v: Vec<Kernel> = [None, Some(Half::Fp16), Some(Half::Bf16)]
            .into_iter()
            .flat_map(|rows| [false, true].map(|l2| self.small(rows, l2)))
            .collect();
        v.dedup();
        v
    }

    /// Every compute-bound kernel of the family.
    pub(crate) fn all_tiled(self) -> Vec<Kernel> {
        let mut v = Vec::new();
        for rows in [None, Some(Half::Fp16), Some(Half::Bf16)] {
            for arithmetic in [
                Precision::Fp32,
                Precision::Tf32,
                Precision::Fp16,
                Precision::Bf16,
            ] {
                for l2 in [false, true] {
                    let k = self.tiled(rows, arithmetic, l2);
                    if !v.contains(&k) {
                        v.push(k);
                    }
                }
            }
        }
        v
    }

    /// The memory-bound kernel over rows of `rows` (f32 when `None`), with L2's biases
    /// when `l2`. Its products and sums are FP32 whatever the rows.
    pub(crate) fn small(self, rows: Option<Half>, l2: bool) -> Kernel {
        use Kernel::*;
        match (self, rows, l2) {
            (Family::Score, None, false) => ScoreSmallQ,
            (Family::Score, None, true) => ScoreSmallQL2,
            (Family::Score, Some(Half::Fp16), false) => ScoreSmallQF16,
            (Family::Score, Some(Half::Fp16), true) => ScoreSmallQL2F16,
            (Family::Score, Some(Half::Bf16), false) => ScoreSmallQBf16,
            (Family::Score, Some(Half::Bf16), true) => ScoreSmallQL2Bf16,
            (Family::TopK, None, false) => TopKSmallQ,
            (Family::TopK, None, true) => TopKSmallQL2,
            (Family::TopK, Some(Half::Fp16), false) => TopKSmallQF16,
            (Family::TopK, Some(Half::Fp16), true) => TopKSmallQL2F16,
            (Family::TopK, Some(Half::Bf16), false) => TopKSmallQBf16,
            (Family::TopK, Some(Half::Bf16), true) => TopKSmallQL2Bf16,
            (Family::Filter, None, false) => FilterSmallQ,
            (Family::Filter, None, true) => FilterSmallQL2,
            (Family::Filter, Some(Half::Fp16), false) => FilterSmallQF16,
            (Family::Filter, Some(Half::Fp16), true) => FilterSmallQL2F16,
            (Family::Filter, Some(Half::Bf16), false) => FilterSmallQBf16,
            (Family::Filter, Some(Half::Bf16), true) => FilterSmallQL2Bf16,
        }
    }

    /// The compute-bound kernel over rows of `rows` (f32 when `None`) in `arithmetic`:
    /// L2 (biases) and FP32 widen 16-bit rows and multiply in FP32; TF32 reads f32 rows,
    /// FP16 and BF16 rows of their own format (tensor cores).
    pub(crate) fn tiled(self, rows: Option<Half>, arithmetic: Precision, l2: bool) -> Kernel {
        use Kernel::*;
        let [fp32, tf32, fp16, bf16, l2_32, fp32_f16, fp32_bf16, l2_f16, l2_bf16] = match self {
            Family::Score => [
                ScoreTiled,
                ScoreTiledTf32,
                ScoreTiledF16,
                ScoreTiledBf16,
                ScoreTiledL2,
                ScoreTiledFp32F16,
                ScoreTiledFp32Bf16,
                ScoreTiledL2F16,
                ScoreTiledL2Bf16,
            ],
            Family::TopK => [
                TopKTiled,
                TopKTiledTf32,
                TopKTiledF16,
                TopKTiledBf16,
                TopKTiledL2,
                TopKTiledFp32F16,
                TopKTiledFp32Bf16,
                TopKTiledL2F16,
                TopKTiledL2Bf16,
            ],
            Family::Filter => [
                FilterTiled,
                FilterTiledTf32,
                FilterTiledF16,
                FilterTiledBf16,
                FilterTiledL2,
                FilterTiledFp32F16,
                FilterTiledFp32Bf16,
                FilterTiledL2F16,
                FilterTiledL2Bf16,
            ],
        };
        match (rows, arithmetic, l2) {
            (None, _, true) => l2_32,
            (Some(Half::Fp16), _, true) => l2_f16,
            (Some(Half::Bf16), _, true) => l2_bf16,
            (Some(Half::Fp16), Precision::Fp16, false) => fp16,
            (Some(Half::Bf16), Precision::Bf16, false) => bf16,
            (Some(Half::Fp16), _, false) => fp32_f16,
            (Some(Half::Bf16), _, false) => fp32_bf16,
            (None, Precision::Tf32, false) => tf32,
            (None, _, false) => fp32,
        }
    }
}

//! The kernels of `kernels/*.cu` that programs launch: their symbols and modules; and the
//! GEMM steps, which cuBLAS runs (the emulator runs them on the host).

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
    pub(crate) const ALL: [Kernel; 34] = [
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
        }
    }

    /// The `kernels/<module>.cu` that defines it.
    pub(crate) fn module(self) -> &'static str {
        match self {
            Kernel::InvNorms | Kernel::RowsToHalf | Kernel::QueriesToHalf => "norms",
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
            | Kernel::TopKTiledL2 => "fused",
            Kernel::FilterSmallQ
            | Kernel::FilterSmallQF16
            | Kernel::FilterTiled
            | Kernel::FilterTiledTf32
            | Kernel::FilterTiledF16
            | Kernel::FilterSmallQBf16
            | Kernel::FilterTiledBf16
            | Kernel::FilterSmallQL2
            | Kernel::FilterTiledL2 => "filter",
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
    /// The memory-bound kernel: FP32, FP16, BF16, L2.
    pub(crate) fn small(self) -> [Kernel; 4] {
        match self {
            Family::Score => [
                Kernel::ScoreSmallQ,
                Kernel::ScoreSmallQF16,
                Kernel::ScoreSmallQBf16,
                Kernel::ScoreSmallQL2,
            ],
            Family::TopK => [
                Kernel::TopKSmallQ,
                Kernel::TopKSmallQF16,
                Kernel::TopKSmallQBf16,
                Kernel::TopKSmallQL2,
            ],
            Family::Filter => [
                Kernel::FilterSmallQ,
                Kernel::FilterSmallQF16,
                Kernel::FilterSmallQBf16,
                Kernel::FilterSmallQL2,
            ],
        }
    }

    /// The compute-bound kernel: FP32, TF32, FP16, BF16, L2.
    pub(crate) fn tiled(self) -> [Kernel; 5] {
        match self {
            Family::Score => [
                Kernel::ScoreTiled,
                Kernel::ScoreTiledTf32,
                Kernel::ScoreTiledF16,
                Kernel::ScoreTiledBf16,
                Kernel::ScoreTiledL2,
            ],
            Family::TopK => [
                Kernel::TopKTiled,
                Kernel::TopKTiledTf32,
                Kernel::TopKTiledF16,
                Kernel::TopKTiledBf16,
                Kernel::TopKTiledL2,
            ],
            Family::Filter => [
                Kernel::FilterTiled,
                Kernel::FilterTiledTf32,
                Kernel::FilterTiledF16,
                Kernel::FilterTiledBf16,
                Kernel::FilterTiledL2,
            ],
        }
    }
}

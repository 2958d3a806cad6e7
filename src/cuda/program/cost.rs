//! What a program asks of the device: bytes moved to and from device memory and FLOPs,
//! per launch, read off the launch itself (its kernel, grid and arguments), and the
//! least time those take at a device's ceilings. This is the "expected figures" model of
//! the README's CUDA section: a bound on paper, not a measurement. It assumes that the
//! corpus comes from device memory on every pass over it (it is far larger than L2),
//! the queries once (they stay in L2), and that every FLOP runs at the precision's peak:
//! real kernels take longer. It says which of the two bounds each launch, and so where a
//! design loses against another at the same ceilings.
//!
//! Counted:
//! - scoring kernels: the corpus rows (FP16 copies at 2 bytes a value) once (the
//!   memory-bound kernels make one pass for all their queries; the tiled ones run the
//!   query tiles of a part side by side, so the other query tiles read the rows from
//!   L2), their norms or biases and the live mask with them, the
//!   queries, the scores a `score` kernel writes and the candidates a fused kernel
//!   writes; `2 · queries · rows · dim` FLOPs;
//! - selection passes: every candidate's score (and index) read once, `k` per segment
//!   written; the final sort reads and writes `k` per query.
//!
//! Not counted: the candidates a filter kernel writes (as many as pass its floor, known
//! only on the device; at most its capacity), and the host's copies.

use super::{Arg, Family, Kernel, Launch, Program};
use crate::cuda::Precision;

/// Bytes moved and FLOPs done.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Cost {
    /// Bytes read from or written to device memory.
    pub(crate) bytes: f64,
    /// Floating-point operations (a multiply-add is two).
    pub(crate) flops: f64,
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            bytes: self.bytes + o.bytes,
            flops: self.flops + o.flops,
        }
    }
}

/// A device's ceilings: memory bandwidth, and dense FLOP rates by precision.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ceilings {
    pub(crate) bytes_per_sec: f64,
    pub(crate) fp32_flops: f64,
    pub(crate) tf32_flops: f64,
    pub(crate) fp16_flops: f64,
    pub(crate) bf16_flops: f64,
}

/// NVIDIA H200 (SXM): 4.8 TB/s of HBM3e; 67 TFLOP/s FP32, 495 TF32 and 990 FP16 and BF16
/// on the tensor cores (dense).
pub(crate) const H200: Ceilings = Ceilings {
    bytes_per_sec: 4.8e12,
    fp32_flops: 67e12,
    tf32_flops: 495e12,
    fp16_flops: 990e12,
    bf16_flops: 990e12,
};

impl Ceilings {
    /// The FLOP rate a kernel of `precision` can reach.
    pub(crate) fn flops(&self, precision: Precision) -> f64 {
        match precision {
            Precision::Fp32 => self.fp32_flops,
            Precision::Tf32 => self.tf32_flops,
            Precision::Fp16 => self.fp16_flops,
            Precision::Bf16 => self.bf16_flops,
        }
    }

    /// The least time `c` takes: its bytes at the bandwidth or its FLOPs at the rate,
    /// whichever is longer.
    pub(crate) fn secs(&self, c: Cost, precision: Precision) -> f64 {
        (c.bytes / self.bytes_per_sec).max(c.flops / self.flops(precision))
    }
}

/// How a scoring kernel reads the corpus.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// One pass for all its queries; each block loads them.
    Small,
    /// One pass per query tile; each block loads its tile.
    Tiled,
}

/// What a scoring kernel does with the scores.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    Score,
    TopK,
    Filter,
}

fn scoring(kernel: Kernel) -> Option<(Scan, Output, f64)> {
    let families = [
        (Family::Score, Output::Score),
        (Family::TopK, Output::TopK),
        (Family::Filter, Output::Filter),
    ];
    let (scan, out) = families.into_iter().find_map(|(f, out)| {
        if f.all_small().contains(&kernel) {
            Some((Scan::Small, out))
        } else if f.all_tiled().contains(&kernel) {
            Some((Scan::Tiled, out))
        } else {
            None
        }
    })?;
    // The kernels that read 16-bit rows are named for their format.
    let sym = kernel.symbol();
    let elem = if sym.ends_with("_f16") || sym.ends_with("_bf16") {
        2.0
    } else {
        4.0
    };
    Some((scan, out, elem))
}

/// An integer argument, as f64 (0 when it is not one).
fn num(a: Option<&Arg>) -> f64 {
    match a {
        Some(Arg::I32(v)) => *v as f64,
        Some(Arg::I64(v)) => *v as f64,
        _ => 0.0,
    }
}

fn present(a: Option<&Arg>) -> bool {
    matches!(a, Some(Arg::Ptr(..)))
}

/// What one launch moves and computes (see the module docs).
pub(crate) fn launch_cost(l: &Launch) -> Cost {
    let a = l.args();
    let [gx, gy, _] = l.grid().map(f64::from);
    if let Some((scan, out, elem)) = scoring(l.kernel()) {
        // The scoring parameters (`Shape::scoring_args`): queries, their count, the
        // dimension, the corpus, its factors, the mask; then the rows: (row0, rows), or
        // (n) for the filters.
        let (qn, dim) = (num(a.get(1)), num(a.get(2)));
        let rows = match out {
            Output::Filter => num(a.get(6)),
            Output::Score | Output::TopK => num(a.get(7)),
        };
        // The tiled grids run the query tiles of a part side by side (`hv_tile_block`):
        // the rows come from DRAM once and from L2 for the other query tiles (the model
        // assumes L2 holds what the resident blocks share: a tile of rows per part).
        let q_tiles = (qn / 64.0).ceil().max(1.0);
        let passes = 1.0;
        let per_row = dim * elem
            + if present(a.get(4)) { 4.0 } else { 0.0 }
            + if present(a.get(5)) { 1.0 / 8.0 } else { 0.0 };
        // Every block loads its queries, but they are few enough to stay in L2: counted
        // once.
        let queries = qn * dim * 4.0;
        let written = match out {
            Output::Score => qn * rows * 4.0,
            // (index 8 bytes, score 4) per candidate: k per part (one per block of the
            // tiled kernels, one per warp of the memory-bound ones) and query.
            Output::TopK => {
                let (parts, k) = match scan {
                    Scan::Small => (gx * 8.0, num(a.get(8))),
                    Scan::Tiled => (gx / q_tiles, num(a.get(9))),
                };
                parts * qn * k * 12.0
            }
            Output::Filter => 0.0,
        };
        return Cost {
            bytes: passes * rows * per_row + queries + written,
            flops: 2.0 * qn * rows * dim,
        };
    }
    match l.kernel() {
        Kernel::SelectTopK => {
            // grid (segments, queries); args: scores, indices, counts, ld, len, base, k.
            let (len, k) = (num(a.get(4)), num(a.get(6)));
            let per = if present(a.get(1)) { 12.0 } else { 4.0 };
            Cost {
                bytes: gy * (len * per + gx * k * 12.0),
                flops: 0.0,
            }
        }
        Kernel::SelectTopKScored => {
            // grid (segments, queries); args: scores, ld, len, base, k, ...: the scores
            // and each row's factors read once.
            let (len, k) = (num(a.get(2)), num(a.get(4)));
            Cost {
                bytes: gy * (len * 4.0 + gx * k * 12.0) + len * 8.0,
                flops: 0.0,
            }
        }
        Kernel::SortTopK => Cost {
            bytes: gx * num(a.get(2)) * 12.0 * 2.0,
            flops: 0.0,
        },
        Kernel::GemmFp32 | Kernel::GemmTf32 | Kernel::GemmFp16 | Kernel::GemmBf16 => {
            // args: A, B, C, m (rows), n (queries), k (dim), ldc. cuBLAS reads each
            // operand about once (its tiles stay in L2 and shared memory) and writes C.
            let (m, n, k) = (num(a.get(3)), num(a.get(4)), num(a.get(5)));
            let elem = match l.kernel() {
                Kernel::GemmFp16 | Kernel::GemmBf16 => 2.0,
                _ => 4.0,
            };
            Cost {
                bytes: (m + n) * k * elem + m * n * 4.0,
                flops: 2.0 * m * n * k,
            }
        }
        Kernel::ApplyRowFactors => {
            // args: out, ld, nq, row0, rows, inv, bias, mask: each score read and written.
            let (nq, rows) = (num(a.get(2)), num(a.get(4)));
            Cost {
                bytes: nq * rows * 8.0 + rows * 4.0,
                flops: 0.0,
            }
        }
        Kernel::QueriesToHalf => Cost {
            bytes: num(a.get(1)) * 6.0,
            flops: 0.0,
        },
        // The resident copy's own passes (not part of a search call).
        _ => Cost::default(),
    }
}

/// The sum over a program's launches.
pub(crate) fn program_cost(p: &Program) -> Cost {
    p.launches()
        .iter()
        .map(launch_cost)
        .fold(Cost::default(), |s, c| s + c)
}

/// The least time a program takes at `ceil`: each launch at its own bound, in stream
/// order.
pub(crate) fn program_secs(p: &Program, ceil: &Ceilings, precision: Precision) -> f64 {
    p.launches()
        .iter()
        .map(|l| ceil.secs(launch_cost(l), precision))
        .sum()
}

/// The same call as a GEMM into a `nq × n` score matrix and a top-k over it, the way
/// `torch.mm` + `torch.topk` (and FAISS's and cuVS's GPU brute force) do it: the GEMM
/// reads the corpus and queries once and writes the scores; the top-k reads them and
/// writes `k` per query. Two launches, each at its own bound (see [`torch_secs`]).
/// `elem` is the corpus's bytes per value.
pub(crate) fn gemm_then_select(
    nq: usize,
    n: usize,
    dim: usize,
    k: usize,
    elem: usize,
) -> [Cost; 2] {
    let (q, n, d) = (nq as f64, n as f64, dim as f64);
    [
        Cost {
            bytes: q * d * elem as f64 + n * d * elem as f64 + q * n * 4.0,
            flops: 2.0 * q * n * d,
        },
        Cost {
            bytes: q * n * 4.0 + q * k as f64 * 12.0,
            flops: 0.0,
        },
    ]
}

/// The least time of [`gemm_then_select`] at `ceil`: its two launches in stream order.
pub(crate) fn torch_secs(parts: [Cost; 2], ceil: &Ceilings, precision: Precision) -> f64 {
    parts.iter().map(|c| ceil.secs(*c, precision)).sum()
}

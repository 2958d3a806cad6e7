//! Every top-k path on the emulator against the f64 reference: fused (small batches and
//! tiles), filtered by a sampled floor (and its fallback), chunked, reduced precision,
//! deleted rows and exact ties.

use super::{
    emulator, inputs, seed, stored_inputs, unit, with_emulator, Emulator, HostBuf, Inputs,
};
use crate::cuda::program::{self, Buf, Program, Shape};
use crate::cuda::Precision;
use crate::data;
use crate::elem::Half as Stored;
use crate::metric::Metric;

/// Each query's score of each row under `metric`, in f64: cosine, the inner product, or
/// L2's `q·c − ‖c‖²/2`, which the kernels rank by.
fn reference(metric: Metric, q: &[f32], c: &[f32], dim: usize) -> Vec<Vec<f64>> {
    if metric == Metric::Cosine {
        return data::cosine_reference(q, c, dim);
    }
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    q.chunks(dim)
        .map(|qr| {
            c.chunks(dim)
                .map(|cr| match metric {
                    Metric::L2 => dot(qr, cr) - dot(cr, cr) / 2.0,
                    _ => dot(qr, cr),
                })
                .collect()
        })
        .collect()
}

/// Rows of the cases that take the filtered path: the fewest it takes (its candidate
/// lists, a 4096-row segment at least, may hold up to half the rows), so that each case
/// costs the emulator least. The cases assert the path they take.
const FILTERED_ROWS: usize = 2 * program::SEGMENT;

struct Case {
    nq: usize,
    n: usize,
    dim: usize,
    k: usize,
    precision: Precision,
    /// Rows per chunk of the unfused path.
    chunk: usize,
    /// Every `delete`-th row deleted (0: none).
    delete: usize,
    /// The path the program must take, when the case is about one.
    expect: Option<Taken>,
    /// Every row 7i + 3 a copy of row 3, and query 0 its direction, to make exact ties.
    duplicates: bool,
    /// Every row the filtered path samples pointing away from query 0, so that its
    /// floor lets every row through.
    adversarial: bool,
    /// The rows in ascending order of their score for query 0 (the best last).
    sorted: bool,
    /// What the kernels score (inner product and L2 in FP32 only).
    metric: Metric,
    /// Scored by GEMM steps (cuBLAS on a device) instead of the own kernels.
    gemm: bool,
    /// The corpus kept as stored in this 16-bit format (no f32 copy); `None`: f32.
    stored: Option<Stored>,
}

impl Case {
    fn new(nq: usize, n: usize, dim: usize, k: usize) -> Self {
        Self {
            nq,
            n,
            dim,
            k,
            precision: Precision::Fp32,
            chunk: 4096,
            delete: 0,
            duplicates: false,
            adversarial: false,
            sorted: false,
            expect: None,
            metric: Metric::Cosine,
            gemm: false,
            stored: None,
        }
    }
}

/// Which way an emulated top-k went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Taken {
    /// Fused, or chunked from the start.
    Direct,
    /// Filtered by a sampled floor, within the lists' capacity.
    Filtered,
    /// Filtered, overflowed, and redone in chunks (as the backend does).
    FellBack,
}

/// The backend's top-k on the emulator, as `CudaBackend::top_k_device` runs it: the
/// program for the shape, and the chunked one when a filtered program overflows.
fn emulated_top_k(
    emu: &Emulator,
    shape: &Shape,
    k: usize,
    chunk: usize,
    inputs: &mut Inputs,
    seed: u64,
) -> (Vec<f32>, Vec<i64>, Taken) {
    let read = |p: &Program, temps: &[HostBuf]| {
        let (Buf::Temp(si), Buf::Temp(ii)) = (p.scores(), p.indices()) else {
            unreachable!("top-k results are scratch")
        };
        (temps[si].get::<f32>(), temps[ii].get::<i64>())
    };
    let p = program::top_k(shape, k, chunk);
    let temps = emu.run(&p, inputs, seed);
    let Some((Buf::Temp(ci), cap)) = p.counts() else {
        let (s, i) = read(&p, &temps);
        return (s, i, Taken::Direct);
    };
    if !program::overflowed(&temps[ci].get::<u32>(), cap) {
        let (s, i) = read(&p, &temps);
        return (s, i, Taken::Filtered);
    }
    let p = program::top_k_chunked(shape, k, chunk);
    let temps = emu.run(&p, inputs, seed);
    let (s, i) = read(&p, &temps);
    (s, i, Taken::FellBack)
}

/// Runs the backend's top-k program for `case` on the emulator and checks it against the
/// f64 reference: the right count, scores within the precision's tolerance, best first
/// with ties by lower row, and no row left out that beats a returned one by more than
/// the tolerance.
fn check_top_k(emu: &Emulator, case: &Case) {
    let seed = seed();
    let Case { nq, n, dim, k, .. } = *case;
    let mut c = data::random_matrix(n, dim, seed);
    if case.duplicates {
        // Every row 7i + 3 is row 3, and so is query 0: its best score is held by
        // ~n/7 rows, more than k, so only the lowest of them may be returned. Other
        // queries meet the tie at random places.
        for r in (10..n).step_by(7) {
            c.copy_within(3 * dim..4 * dim, r * dim);
        }
    }
    let mut q = unit(&data::random_matrix(nq, dim, seed ^ 1), dim);
    if case.duplicates {
        // L2's nearest rows are the copies themselves; cosine's, any multiple of them.
        let row3 = &c[3 * dim..4 * dim];
        match case.metric {
            Metric::L2 => q[..dim].copy_from_slice(row3),
            _ => q[..dim].copy_from_slice(&unit(row3, dim)),
        }
    }
    if case.adversarial {
        let sampled = program::sampled_rows(n, k).expect("an adversarial case is filtered");
        for r in sampled.into_iter().flatten() {
            for (x, &qv) in c[r * dim..(r + 1) * dim].iter_mut().zip(&q[..dim]) {
                *x = -qv;
            }
        }
    }
    if case.sorted {
        let dot = |r: usize| -> f64 {
            let row = &c[r * dim..(r + 1) * dim];
            let norm = row.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
            row.iter()
                .zip(&q[..dim])
                .map(|(&x, &y)| x as f64 * y as f64)
                .sum::<f64>()
                / norm
        };
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| dot(a).total_cmp(&dot(b)));
        c = order
            .iter()
            .flat_map(|&r| c[r * dim..(r + 1) * dim].to_vec())
            .collect();
    }
    let live: Vec<bool> = (0..n)
        .map(|r| case.delete == 0 || r % case.delete != 1)
        .collect();
    let masked = case.delete != 0;
    let (mut inp, c) = match case.stored {
        None => (
            inputs(
                emu,
                &q,
                &c,
                dim,
                masked.then_some(&live[..]),
                case.precision,
            ),
            c,
        ),
        // The reference is the stored values'.
        Some(half) => stored_inputs(&q, &c, dim, masked.then_some(&live[..]), half),
    };
    if case.metric == Metric::L2 {
        let bias: Vec<f32> = c
            .chunks(dim)
            .map(|r| (-0.5 * r.iter().map(|&x| x as f64 * x as f64).sum::<f64>()) as f32)
            .collect();
        inp.bias = Some(HostBuf::from(&bias));
    }
    let shape = Shape {
        nq,
        n,
        dim,
        masked,
        precision: case.precision,
        stored: case.stored.map(Into::into),
        metric: case.metric,
        sms: 2,
        gemm: case.gemm,
        occupancy: Default::default(),
    };
    let (scores, idx, path) = emulated_top_k(emu, &shape, k, case.chunk, &mut inp, seed);
    if let Some(want) = case.expect {
        assert_eq!(path, want, "seed {seed}: the path taken");
    }
    let want = reference(case.metric, &q, &c, dim);
    // Inner product and L2: the f32 bound the executor's certificate uses, doubled.
    let max_norm = c
        .chunks(dim)
        .map(|r| r.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt())
        .fold(0.0, f64::max);
    let tol = match case.metric {
        Metric::Cosine => shape.arithmetic().score_tolerance() as f64,
        _ => {
            2.0 * (dim + 8) as f64 * f64::from(f32::EPSILON) / 2.0
                * (max_norm + max_norm * max_norm)
        }
    };
    let ctx = format!(
        "seed {seed}, Q={nq} N={n} D={dim} k={k} {:?} {} chunk {} delete {} dup {} stored {:?}",
        case.precision, case.metric, case.chunk, case.delete, case.duplicates, case.stored
    );
    let live_rows = live.iter().filter(|&&l| l).count();
    for qi in 0..nq {
        let w = &want[qi];
        let got: Vec<(usize, f32)> = (0..k)
            .filter(|&j| idx[qi * k + j] >= 0)
            .map(|j| (idx[qi * k + j] as usize, scores[qi * k + j]))
            .collect();
        assert_eq!(got.len(), k.min(live_rows), "{ctx} query {qi}: hit count");
        assert!(
            (0..k).all(|j| (idx[qi * k + j] >= 0) == (j < got.len())),
            "{ctx}: absent slots must come last"
        );
        let mut seen = vec![false; n];
        for (j, &(row, s)) in got.iter().enumerate() {
            assert!(
                row < n && live[row],
                "{ctx} query {qi}: row {row} is not live"
            );
            assert!(!seen[row], "{ctx} query {qi}: row {row} twice");
            seen[row] = true;
            assert!(
                (s as f64 - w[row]).abs() <= tol,
                "{ctx} query {qi} rank {j}: score {s} vs exact {}",
                w[row]
            );
            if j > 0 {
                let (prev_row, prev) = got[j - 1];
                assert!(
                    prev > s || (prev == s && prev_row < row),
                    "{ctx} query {qi}: rank {j} out of order ({prev_row}: {prev}, {row}: {s})"
                );
            }
        }
        // Nothing left out beats the last hit by more than twice the tolerance.
        let last = got.last().map_or(f64::NEG_INFINITY, |&(r, _)| w[r]);
        for r in (0..n).filter(|&r| live[r] && !seen[r]) {
            assert!(
                w[r] <= last + 2.0 * tol,
                "{ctx} query {qi}: row {r} ({}) missing, last hit {last}",
                w[r]
            );
        }
        if case.duplicates {
            // Equal rows score bit-equal: the lower ones must win the tie.
            let copies: Vec<usize> = (3..n).step_by(7).filter(|&r| live[r]).collect();
            for &(row, _) in &got {
                if let Some(at) = copies.iter().position(|&c| c == row) {
                    let skipped = copies[..at].iter().find(|&&c| !seen[c]);
                    assert!(
                        skipped.is_none(),
                        "{ctx} query {qi}: row {row} kept over {skipped:?}"
                    );
                }
            }
            // (Inner product favours longer rows over the copies.)
            if qi == 0 && case.metric != Metric::InnerProduct {
                let first = &copies[..copies.len().min(k)];
                let rows: Vec<usize> = got.iter().map(|&(r, _)| r).collect();
                assert_eq!(rows[..first.len()], first[..], "{ctx}: query 0");
            }
        }
    }
}

#[test]
fn fused_small_batch_top_k_matches_the_reference() {
    let emu = with_emulator!();
    for (nq, dim, k) in [(1, 16, 10), (3, 17, 1), (8, 12, 32)] {
        check_top_k(emu, &Case::new(nq, 5000, dim, k));
    }
}

#[test]
fn fused_tiled_top_k_matches_the_reference() {
    let emu = with_emulator!();
    for (nq, n, dim, k) in [(70, 3000, 24, 10), (9, 700, 8, 32), (64, 200, 33, 1)] {
        check_top_k(emu, &Case::new(nq, n, dim, k));
    }
}

#[test]
fn tf32_fp16_and_bf16_top_k_are_within_their_documented_tolerance() {
    let emu = with_emulator!();
    for precision in [Precision::Tf32, Precision::Fp16, Precision::Bf16] {
        // Tiled (fused), small-batch (fused; FP16 and BF16 read the 16-bit copy), unfused.
        for (nq, n, dim, k) in [(70, 3000, 24, 10), (9, 700, 40, 32), (3, 2000, 16, 10)] {
            check_top_k(
                emu,
                &Case {
                    precision,
                    ..Case::new(nq, n, dim, k)
                },
            );
        }
        check_top_k(
            emu,
            &Case {
                precision,
                delete: 5,
                ..Case::new(20, 5000, 8, 50)
            },
        );
    }
}

#[test]
fn unfused_top_k_over_several_chunks_matches_the_reference() {
    let emu = with_emulator!();
    // k above the fused limit: scores in chunks of 4096 rows, then merge passes.
    check_top_k(emu, &Case::new(9, 9000, 16, 100));
    // Chunks of two segments, the last one short: its missing segment must read as empty.
    check_top_k(
        emu,
        &Case {
            chunk: 8192,
            ..Case::new(9, 9000, 16, 100)
        },
    );
    check_top_k(emu, &Case::new(2, 5000, 8, 1000));
    // More k than rows: every row, in order.
    check_top_k(emu, &Case::new(3, 700, 8, 1024));
}

#[test]
fn large_k_filtered_by_a_sampled_floor_matches_the_reference() {
    let emu = with_emulator!();
    for (nq, k, precision) in [
        (2, 40, Precision::Fp32),
        (70, 100, Precision::Fp32),
        (9, 64, Precision::Tf32),
        (3, 50, Precision::Fp16),
        (70, 64, Precision::Bf16),
    ] {
        check_top_k(
            emu,
            &Case {
                precision,
                expect: Some(Taken::Filtered),
                ..Case::new(nq, FILTERED_ROWS, 8, k)
            },
        );
    }
    // With deletes and exact ties at the floor.
    check_top_k(
        emu,
        &Case {
            delete: 3,
            duplicates: true,
            expect: Some(Taken::Filtered),
            ..Case::new(2, FILTERED_ROWS, 8, 40)
        },
    );
}

#[test]
fn a_corpus_in_score_order_is_still_filtered() {
    // A sample of the first rows would see only query 0's worst rows and let every row
    // through; stretches spread to the last row see its best.
    let emu = with_emulator!();
    for nq in [1, 9] {
        check_top_k(
            emu,
            &Case {
                sorted: true,
                expect: Some(Taken::Filtered),
                ..Case::new(nq, FILTERED_ROWS, 8, 40)
            },
        );
    }
}

#[test]
fn a_floor_that_lets_too_much_through_falls_back_to_chunks() {
    let emu = with_emulator!();
    for nq in [1, 9] {
        check_top_k(
            emu,
            &Case {
                adversarial: true,
                expect: Some(Taken::FellBack),
                ..Case::new(nq, FILTERED_ROWS, 8, 40)
            },
        );
    }
}

/// The paths past the fused kernels for the cases `case` makes (a metric, a stored
/// format): filtered by a sampled floor and chunked, each for small batches and tiles,
/// then deleted rows with exact ties.
fn check_unfused_paths(emu: &Emulator, case: &dyn Fn(usize, usize, usize, usize) -> Case) {
    for nq in [2, 9] {
        check_top_k(
            emu,
            &Case {
                expect: Some(Taken::Filtered),
                ..case(nq, FILTERED_ROWS, 8, 40)
            },
        );
    }
    check_top_k(emu, &case(3, 5000, 8, 100));
    check_top_k(emu, &case(9, 6000, 16, 100));
    check_top_k(
        emu,
        &Case {
            delete: 4,
            duplicates: true,
            ..case(16, 3000, 16, 20)
        },
    );
}

#[test]
fn inner_product_and_l2_match_the_reference_on_every_path() {
    let emu = with_emulator!();
    for metric in [Metric::InnerProduct, Metric::L2] {
        let case = |nq, n, dim, k| Case {
            metric,
            ..Case::new(nq, n, dim, k)
        };
        // Fused: small batches and tiles.
        check_top_k(emu, &case(3, 3000, 17, 10));
        check_top_k(emu, &case(70, 1500, 24, 10));
        if metric == Metric::InnerProduct {
            // Cosine's kernels with no norms: the paths above are enough. L2's are its
            // own, so it runs them all.
            continue;
        }
        check_unfused_paths(emu, &case);
    }
}

#[test]
fn deleted_rows_are_never_returned() {
    let emu = with_emulator!();
    for (nq, k) in [(2, 10), (20, 10), (2, 64)] {
        check_top_k(
            emu,
            &Case {
                delete: 4,
                ..Case::new(nq, 3000, 16, k)
            },
        );
    }
}

#[test]
fn exact_ties_keep_the_lower_row() {
    let emu = with_emulator!();
    for (nq, k, precision) in [
        (1, 20, Precision::Fp32),
        (16, 20, Precision::Fp32),
        (70, 20, Precision::Tf32),
        (70, 20, Precision::Fp16),
        (2, 20, Precision::Fp16),
        (70, 20, Precision::Bf16),
        (2, 20, Precision::Bf16),
        (2, 200, Precision::Fp32),
    ] {
        check_top_k(
            emu,
            &Case {
                duplicates: true,
                precision,
                ..Case::new(nq, 3000, 16, k)
            },
        );
    }
}

#[test]
fn gemm_scored_top_k_matches_the_reference_at_every_precision_metric_and_mask() {
    let emu = with_emulator!();
    let cases = [
        (Precision::Fp32, Metric::Cosine),
        (Precision::Fp32, Metric::InnerProduct),
        (Precision::Fp32, Metric::L2),
        (Precision::Tf32, Metric::Cosine),
        (Precision::Fp16, Metric::Cosine),
        (Precision::Bf16, Metric::Cosine),
    ];
    for (precision, metric) in cases {
        for (nq, n, dim, k, chunk, delete) in [
            (3, 700, 16, 10, 4096, 0),
            (70, 5000, 24, 40, 2048, 3),
            (9, 3000, 33, 1, 1000, 0),
        ] {
            check_top_k(
                emu,
                &Case {
                    precision,
                    metric,
                    chunk,
                    delete,
                    gemm: true,
                    expect: Some(Taken::Direct),
                    ..Case::new(nq, n, dim, k)
                },
            );
        }
    }
}

#[test]
fn a_corpus_stored_in_16_bits_is_scored_as_stored_with_no_f32_copy() {
    // The inputs hold no f32 corpus (a program reading one fails), and the reference is
    // the stored values': FP32 arithmetic on them is within FP32's tolerance of it.
    let emu = with_emulator!();
    for stored in [Stored::F16, Stored::Bf16] {
        for metric in [Metric::Cosine, Metric::InnerProduct, Metric::L2] {
            let case = |nq, n, dim, k| Case {
                metric,
                stored: Some(stored),
                ..Case::new(nq, n, dim, k)
            };
            // Fused: small batches (16-byte loads, and scalar ones at D = 17) and tiles.
            check_top_k(emu, &case(3, 3000, 17, 10));
            check_top_k(emu, &case(5, 2000, 24, 10));
            check_top_k(emu, &case(70, 1500, 24, 10));
            check_top_k(emu, &case(20, 900, 13, 32));
            check_unfused_paths(emu, &case);
        }
        // Cosine at the precision of its own format: the tensor-core tiles and the GEMM
        // read the stored rows (not unit-norm: scaled by their norms).
        let precision = match stored {
            Stored::F16 => Precision::Fp16,
            Stored::Bf16 => Precision::Bf16,
        };
        for gemm in [false, true] {
            check_top_k(
                emu,
                &Case {
                    precision,
                    stored: Some(stored),
                    gemm,
                    delete: 3,
                    ..Case::new(70, 3000, 24, 10)
                },
            );
        }
        // Another 16-bit precision, or TF32: FP32 arithmetic on the stored rows.
        for precision in [Precision::Tf32, Precision::Fp16, Precision::Bf16] {
            check_top_k(
                emu,
                &Case {
                    precision,
                    stored: Some(stored),
                    ..Case::new(70, 1500, 24, 10)
                },
            );
        }
    }
}

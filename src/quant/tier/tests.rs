use super::*;
use crate::data;
use crate::quant::ScanLevel;

/// Inverse norms as the corpus computes them (f64 sums), 0 for a zero row.
fn inverse_norms(rows: &[f32], dim: usize) -> Vec<f32> {
    rows.chunks(dim)
        .map(|r| {
            let n = r.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
            if n == 0.0 {
                0.0
            } else {
                (1.0 / n) as f32
            }
        })
        .collect()
}

/// L2's factors for rows of inverse norms `inv` (NaN: not live): scale 1 and bias
/// −‖x‖²/2, NaN for a row not live.
fn l2_factors(inv: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let live = |i: f32, v: f32| if i.is_nan() { f32::NAN } else { v };
    let ones = inv.iter().map(|&i| live(i, 1.0)).collect();
    let bias = inv
        .iter()
        .map(|&i| live(i, (-0.5 / (i as f64 * i as f64)) as f32))
        .collect();
    (ones, bias)
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    v.iter().map(|&x| (x as f64 / n) as f32).collect()
}

#[test]
fn rows_that_are_not_live_are_never_candidates() {
    let (n, dim) = (200, 16);
    let rows = data::random_matrix(n, dim, 41);
    let tier = Int8Tier::build(&rows, dim);
    let mut inv = inverse_norms(&rows, dim);
    for r in (0..n).step_by(2) {
        inv[r] = f32::NAN;
    }
    let q = unit(&rows[3 * dim..4 * dim]);
    let c = tier
        .view()
        .candidates(&q, &inv, None, 10, ScanLevel::Avx512Vnni)
        .remove(0);
    assert!(c.len() >= 10 && c.iter().all(|r| r % 2 == 1), "{c:?}");
    assert!(c.contains(&3));
    // More k than live rows: every live row.
    assert_eq!(
        tier.view()
            .candidates(&q, &inv, None, 150, ScanLevel::Avx512Vnni)[0]
            .len(),
        n / 2
    );
    assert!(tier
        .view()
        .candidates(&q, &inv, None, 0, ScanLevel::Avx512Vnni)[0]
        .is_empty());
}

/// The batched scan (when the CPU has it; past 24 queries) finds exactly the candidates
/// the portable per-query scan finds, query by query, for cosine and L2 factors, rows not
/// live, and dimensions that are not multiples of four.
#[test]
fn batched_candidates_are_the_per_query_ones() {
    for (n, dim) in [(5000, 77), (3000, 64), (700, 3)] {
        let rows = data::random_matrix(n, dim, 90 + dim as u64);
        let tier = Int8Tier::build(&rows, dim);
        let mut inv = inverse_norms(&rows, dim);
        for r in (0..n).step_by(13) {
            inv[r] = f32::NAN;
        }
        let (ones, bias) = l2_factors(&inv);
        for nq in [25, 40] {
            let mut qs = data::random_matrix(nq, dim, 91);
            qs[..dim].copy_from_slice(&rows[2 * dim..3 * dim]);
            let qs: Vec<f32> = qs.chunks(dim).flat_map(unit).collect();
            for (b, k) in [(None, 10), (Some(&bias[..]), 10), (None, 1), (None, 200)] {
                let scale = if b.is_some() { &ones } else { &inv };
                let all = tier
                    .view()
                    .candidates(&qs, scale, b, k, ScanLevel::Avx512Vnni);
                for (j, q) in qs.chunks(dim).enumerate() {
                    let one = tier
                        .view()
                        .candidates(q, scale, b, k, ScanLevel::Portable)
                        .remove(0);
                    assert_eq!(all[j], one, "n {n} D {dim} Q {nq} query {j} k {k}");
                }
            }
        }
    }
}

/// The candidates of one to 24 queries (through the few-query scan, AVX-512 VNNI's and
/// AVX2's where the CPU has them, in one to three groups) are exactly the portable scan's, for cosine and L2 factors, rows not live, ties,
/// and row counts and dimensions that leave partial kernel calls and chunks.
#[test]
#[cfg_attr(
    not(target_arch = "x86_64"),
    ignore = "the x86 scans' test: elsewhere both sides are the portable scan"
)]
fn few_query_candidates_are_the_portable_ones() {
    for (n, dim) in [
        (4096 + 4099, 77),
        (3001, 64),
        (703, 3),
        (2050, 130),
        (1500, 768),
    ] {
        let mut rows = data::random_matrix(n, dim, 70 + dim as u64);
        // Exact copies of row 5: tied scores across kernel calls.
        for r in [6, 17, n - 1] {
            rows.copy_within(5 * dim..6 * dim, r * dim);
        }
        let tier = Int8Tier::build(&rows, dim);
        let mut inv = inverse_norms(&rows, dim);
        for r in (0..n).step_by(11) {
            inv[r] = f32::NAN;
        }
        let (ones, bias) = l2_factors(&inv);
        for nq in [1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 24] {
            let mut qs = data::random_matrix(nq, dim, 71 + nq as u64);
            qs[..dim].copy_from_slice(&rows[5 * dim..6 * dim]);
            let qs: Vec<f32> = qs.chunks(dim).flat_map(unit).collect();
            let quantised: Vec<Int8Query> = qs.chunks(dim).map(Int8Query::new).collect();
            let bounds = ScanBounds::new(dim, &quantised);
            for (scale, b, k) in [
                (&inv, None, 10),
                (&ones, Some(&bias[..]), 10),
                (&inv, None, 1),
                (&ones, None, 300),
            ] {
                let pairs = Pairs {
                    tier: tier.view().as_rows(),
                    qs: &quantised,
                    bounds: &bounds,
                    metric: (scale, b),
                };
                let portable = scan_each(&pairs, k);
                for level in [ScanLevel::Avx512Vnni, ScanLevel::Avx2] {
                    let got = tier.view().candidates(&qs, scale, b, k, level);
                    assert_eq!(got, portable, "{level:?}: n {n} D {dim} Q {nq} k {k}");
                    assert!(got.iter().all(|c| c.len() >= k.min(n - n.div_ceil(11))));
                }
            }
        }
    }
}

use crate::corpus::Corpus;
use crate::cpu::{CpuBackend, CpuConfig};
use crate::data;
use crate::matrix::MatrixRef;
use crate::metric::{Metric, RowScoring};
use crate::quant::tier::Int8Tier;
use crate::quant::{take_rescored, ScanLevel};

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    v.iter().map(|&x| (x as f64 / n) as f32).collect()
}

/// Clusters: `n` rows around 8 centres, each a centre plus noise of `spread`.
fn clustered(n: usize, dim: usize, spread: f32, seed: u64) -> Vec<f32> {
    let centres = data::random_matrix(8, dim, seed);
    let noise = data::random_matrix(n, dim, seed ^ 7);
    (0..n)
        .flat_map(|r| {
            let c = &centres[(r % 8) * dim..(r % 8 + 1) * dim];
            let e = &noise[r * dim..(r + 1) * dim];
            c.iter()
                .zip(e)
                .map(|(&c, &e)| c + spread * e)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// For each query (alone, and all of them in calls of up to four) and k: the CPU's
/// certified top-k over the int8 tier is the full scan's, bit for bit (indices and
/// scores), on every SIMD level the CPU has and on scalar code. Returns the candidate
/// counts.
fn check_identical(name: &str, rows: Vec<f32>, dim: usize, queries: &[Vec<f32>]) -> Vec<usize> {
    let plain = Corpus::new(rows, dim).unwrap();
    let tiered = plain.clone().with_int8_tier();
    let tier = Int8Tier::build(plain.matrix().as_slice(), dim);
    let tier = tier.view();
    assert_eq!(tier.rows(), plain.rows());
    let units: Vec<Vec<f32>> = queries.iter().map(|q| unit(q)).collect();
    let mut counts = Vec::new();
    // Inner product and L2 as the executor asks for them: unit queries for inner product,
    // the queries as given for L2, over views scoring `dot · scale + bias`.
    let inv = plain.view().inv_norms().to_vec();
    for metric in Metric::ALL {
        let scoring = RowScoring::new(metric, &inv);
        let asked: Vec<Vec<f32>> = match metric {
            Metric::L2 => queries.to_vec(),
            _ => units.clone(),
        };
        let corpora = (&plain, &tiered);
        check_metric(
            name,
            metric,
            &asked,
            dim,
            &tier,
            corpora,
            |c| match &scoring {
                Some(s) => c.view().scored_by(metric, s),
                None => c.view(),
            },
            &mut counts,
        );
    }
    counts
}

/// [`check_identical`] for one metric's views (`view` of a corpus).
#[allow(clippy::too_many_arguments)]
fn check_metric<'c>(
    name: &str,
    metric: Metric,
    units: &[Vec<f32>],
    dim: usize,
    tier: &crate::quant::tier::TierRef<'_>,
    (plain, tiered): (&'c Corpus, &'c Corpus),
    view: impl Fn(&'c Corpus) -> crate::corpus::CorpusView<'c>,
    counts: &mut Vec<usize>,
) {
    use crate::backend::Backend;
    let name = &format!("{name} {metric}");
    for force_scalar in [false, true] {
        let cpu = CpuBackend::new(&CpuConfig {
            force_scalar,
            ..Default::default()
        })
        .unwrap();
        let bits = |h: &[Vec<crate::hit::Hit>]| {
            h.iter()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.index, h.score.to_bits()))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        let mut calls: Vec<Vec<f32>> = units.to_vec();
        for group in units.chunks(crate::quant::CERTIFIED_MAX_QUERIES) {
            calls.push(group.concat());
        }
        for (ci, flat) in calls.iter().enumerate() {
            let nq = flat.len() / dim;
            let m = MatrixRef::new(flat, nq, dim).unwrap();
            for k in [1, 10, 100] {
                let k = k.min(plain.rows());
                for (qi, q) in flat.chunks(dim).enumerate() {
                    let cands = tier
                        .candidates(
                            q,
                            view(plain).inv_norms(),
                            view(plain).row_bias(),
                            k,
                            ScanLevel::Avx512Vnni,
                        )
                        .remove(0);
                    assert!(
                        cands.len() >= k,
                        "{name}: {} candidates for k = {k}",
                        cands.len()
                    );
                    assert!(
                        cands.windows(2).all(|w| w[0] < w[1]),
                        "{name}: not ascending"
                    );
                    if nq == 1 && metric == Metric::Cosine {
                        counts.push(cands.len());
                    }
                    let _ = qi;
                }
                take_rescored();
                assert!(Backend::top_k(&cpu, m, view(plain), k).is_ok());
                assert_eq!(take_rescored(), None, "{name}: a corpus without a tier");
                // The full scan of the same rows (at the same addresses: on AVX-512 a
                // row's summation order follows its offset in a cache line).
                let full = CpuBackend::top_k(&cpu, m, view(tiered), k, None);
                let certified = Backend::top_k(&cpu, m, view(tiered), k).unwrap();
                let rescored = take_rescored();
                assert!(rescored.is_some(), "{name}: the tier was not used");
                assert_eq!(
                    bits(&certified),
                    bits(&full),
                    "{name} call {ci} (Q = {nq}) k = {k} scalar {force_scalar}: {rescored:?} rescored"
                );
            }
        }
    }
}

fn queries(dim: usize, seed: u64, rows: &[f32]) -> Vec<Vec<f32>> {
    let mut q: Vec<Vec<f32>> = data::random_matrix(3, dim, seed)
        .chunks(dim)
        .map(<[f32]>::to_vec)
        .collect();
    // A row itself, and a row slightly moved.
    q.push(rows[5 * dim..6 * dim].to_vec());
    q.push(rows[9 * dim..10 * dim].iter().map(|v| v + 1e-3).collect());
    q
}

#[test]
fn certified_candidates_give_the_full_scan_on_random_data() {
    for (n, dim) in [
        (3000, 768),
        (2000, 37),
        (3000, 32),
        (1000, 16),
        (1000, 64),
        (500, 1),
        (1000, 4),
    ] {
        let rows = data::random_matrix(n, dim, 11 + dim as u64);
        let q = queries(dim, 12, &rows);
        let counts = check_identical("random", rows, dim, &q);
        // Well-spread data prunes: the tier is only worth having if it does.
        if dim >= 37 {
            let most = counts.iter().max().unwrap();
            assert!(
                *most < n / 2,
                "D = {dim}: up to {most} of {n} rows re-scored"
            );
        }
    }
}

#[test]
fn certified_candidates_give_the_full_scan_on_clustered_and_near_duplicate_data() {
    let dim = 96;
    for spread in [0.3, 1e-3, 1e-6] {
        let rows = clustered(2000, dim, spread, 21);
        let q = queries(dim, 22, &rows);
        check_identical(&format!("clusters spread {spread}"), rows, dim, &q);
    }
    // Exact duplicates (ties at every rank, lower index first) and zero rows.
    let mut rows = data::random_matrix(300, dim, 23);
    let first = rows[..dim].to_vec();
    for r in (0..300).step_by(3) {
        rows[r * dim..(r + 1) * dim].copy_from_slice(&first);
    }
    for r in (1..300).step_by(7) {
        rows[r * dim..(r + 1) * dim].fill(0.0);
    }
    let q = queries(dim, 24, &rows);
    check_identical("duplicates and zeros", rows, dim, &q);
}

/// Every row within the bound of every other: all are candidates, and still exact.
#[test]
fn when_every_row_is_within_the_bound_every_row_is_a_candidate_and_exact() {
    let dim = 64;
    let base = data::random_matrix(1, dim, 31);
    let noise = data::random_matrix(400, dim, 32);
    let rows: Vec<f32> = (0..400)
        .flat_map(|r| {
            base.iter()
                .zip(&noise[r * dim..(r + 1) * dim])
                .map(|(&b, &e)| b + 1e-7 * e)
                .collect::<Vec<_>>()
        })
        .collect();
    let q = vec![base.clone()];
    let counts = check_identical("adversarial", rows, dim, &q);
    assert!(counts.iter().all(|&c| c == 400), "{counts:?}");
}

/// Zero rows score exactly 0, and every other row scores below it: the top-k is a run of
/// ties at 0, the lower indices first, and each tied row's interval is a single point.
#[test]
fn zero_rows_tied_at_the_top_keep_the_lower_indices() {
    let dim = 48;
    let q = data::random_matrix(1, dim, 51);
    let noise = data::random_matrix(600, dim, 52);
    let mut rows: Vec<f32> = (0..600)
        .flat_map(|r| {
            q.iter()
                .zip(&noise[r * dim..(r + 1) * dim])
                .map(|(&q, &e)| -q + 0.1 * e)
                .collect::<Vec<_>>()
        })
        .collect();
    for r in (7..600).step_by(50) {
        rows[r * dim..(r + 1) * dim].fill(0.0);
    }
    check_identical("zero rows on top", rows, dim, &[q]);
}

/// A batch at the limit, its queries scanned together over the codes.
#[test]
fn batches_up_to_the_limit_give_the_full_scan() {
    let (n, dim) = (2500, 96);
    let rows = clustered(n, dim, 0.5, 61);
    let q: Vec<Vec<f32>> = data::random_matrix(crate::quant::CERTIFIED_MAX_QUERIES, dim, 62)
        .chunks(dim)
        .map(<[f32]>::to_vec)
        .collect();
    check_identical("a batch", rows, dim, &q);
}

/// Batches of every size past the per-query limit through the VNNI scans, bit for bit the
/// full scan's: the streaming kernels' batches re-scored in place, the score tiles' (in
/// groups of 32 queries, the last one larger) gathered; for every metric, on random rows
/// of a dimension that is not a multiple of four, clusters, and duplicates with zero rows
/// and deleted rows. At the AVX2 level batches up to `FEW_MAX_QUERIES` go through its
/// few-query scan; larger ones, and every one on the portable scan, scan in full.
#[test]
fn batches_of_every_size_give_the_full_scan_bit_for_bit() {
    use crate::backend::Backend;
    let cpu = CpuBackend::new(&CpuConfig::default()).unwrap();
    let mut dup = data::random_matrix(600, 33, 73);
    let first = dup[..33].to_vec();
    for r in (0..600).step_by(4) {
        dup[r * 33..(r + 1) * 33].copy_from_slice(&first);
    }
    for r in (1..600).step_by(9) {
        dup[r * 33..(r + 1) * 33].fill(0.0);
    }
    let sets = [
        ("random", data::random_matrix(3000, 100, 71), 100),
        ("random-32", data::random_matrix(3000, 32, 75), 32),
        ("clusters", clustered(2000, 64, 1e-3, 72), 64),
        ("duplicates", dup, 33),
    ];
    let bits = |h: &[Vec<crate::hit::Hit>]| -> Vec<Vec<(usize, u32)>> {
        h.iter()
            .map(|h| h.iter().map(|h| (h.index, h.score.to_bits())).collect())
            .collect()
    };
    for (name, rows, dim) in sets {
        let n = rows.len() / dim;
        let plain = Corpus::new(rows.clone(), dim).unwrap();
        let tiered = plain.clone().with_int8_tier();
        let level = cpu.scan_level(dim);
        // Some rows deleted: a NaN factor, as a store's view has.
        let mut inv = plain.view().inv_norms().to_vec();
        for r in (3..n).step_by(11) {
            inv[r] = f32::NAN;
        }
        let live: Vec<u32> = (0..n.div_ceil(32))
            .map(|w| {
                (0..32)
                    .filter(|b| w * 32 + b < n && !inv[w * 32 + b].is_nan())
                    .fold(0u32, |m, b| m | 1 << b)
            })
            .collect();
        for metric in Metric::ALL {
            let scoring = RowScoring::new(metric, &inv);
            let masked = tiered.view().masked(&inv, &live);
            let view = match &scoring {
                Some(s) => masked.scored_by(metric, s),
                None => masked,
            };
            // The portable scan serves none of these sizes, so two of them show it (each
            // other size would compare the full scan with itself).
            let sizes: &[usize] = match level {
                ScanLevel::Portable => &[5, 130],
                _ => &[5, 8, 15, 16, 17, 24, 33, 64, 70, 130],
            };
            for &nq in sizes {
                let mut flat = data::random_matrix(nq, dim, 74 + nq as u64);
                flat[..dim].copy_from_slice(&rows[7 * dim..8 * dim]);
                if metric != Metric::L2 {
                    flat = flat.chunks(dim).flat_map(unit).collect();
                }
                let m = MatrixRef::new(&flat, nq, dim).unwrap();
                for k in [1, 10, 100] {
                    let full = CpuBackend::top_k(&cpu, m, view, k, None);
                    take_rescored();
                    let certified = Backend::top_k(&cpu, m, view, k).unwrap();
                    let rescored = take_rescored();
                    let what = format!("{name} {metric} Q = {nq} k = {k}");
                    // VNNI serves every batch, AVX2 up to FEW_MAX_QUERIES, the portable
                    // scan none of these sizes (all past CERTIFIED_MAX_QUERIES).
                    let served = match level {
                        ScanLevel::Avx512Vnni => true,
                        ScanLevel::Avx2 => nq <= crate::quant::FEW_MAX_QUERIES,
                        ScanLevel::Portable => false,
                    };
                    assert_eq!(rescored.is_some(), served, "{what}: {rescored:?}");
                    assert_eq!(
                        bits(&certified),
                        bits(&full),
                        "{what}: {rescored:?} rescored"
                    );
                }
            }
        }
    }
}

//! The int8 scan tier through the public API and the CLI: a tiered corpus answers cosine
//! top-k exactly as the plain one does (the unit tests in `src/quant/` check bit identity
//! with the full scan of the same rows; here, against an f64 reference), re-scoring few
//! rows, and the CLI's `bench --dtype int8` reports them.

mod common;

use common::reference::{reference_scores, reference_top_k};
use common::{run, stdout};
use hybridvec::{
    data, Corpus, DevicePolicy, ExecutorConfig, HybridExecutor, MatrixRef, CERTIFIED_MAX_QUERIES,
};

fn cpu() -> HybridExecutor {
    HybridExecutor::new(ExecutorConfig {
        device: DevicePolicy::Cpu,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn a_tiered_corpus_answers_as_the_reference_and_rescores_few_rows() {
    let ex = cpu();
    // Past the per-query limit the tier serves every batch where the VNNI scans run, and
    // up to 24 queries at the AVX2 level.
    let features = hybridvec::CpuFeatures::detect();
    let level = hybridvec::SimdLevel::detect();
    let batched = features.avx512vnni && features.avx512bw && level == hybridvec::SimdLevel::Avx512;
    let avx2 = matches!(
        level,
        hybridvec::SimdLevel::Avx512 | hybridvec::SimdLevel::Avx2Fma
    );
    let served = |q: usize| q <= CERTIFIED_MAX_QUERIES || batched || (avx2 && q <= 24);
    for (n, d, seed) in [(5000, 128, 1), (3000, 33, 2)] {
        let rows = data::random_matrix(n, d, seed);
        let corpus = Corpus::new(rows.clone(), d).unwrap().with_int8_tier();
        assert!(corpus.int8_tier_bytes().unwrap() >= n * d);
        for q in [1, 2, 3, 4, 5, 8, 40] {
            let qv = data::random_matrix(q, d, seed * 10 + q as u64);
            let m = MatrixRef::new(&qv, q, d).unwrap();
            let want = reference_scores(&qv, &rows, d);
            for k in [1, 10, 100] {
                let (hits, report) = ex.top_k_with_report(m, &corpus, k).unwrap();
                match report.rescored {
                    Some(r) => {
                        assert!(served(q), "Q = {q} used the tier");
                        // The union of the queries' candidates: few per query.
                        assert!(
                            r >= k && r < q * n / 8,
                            "Q = {q} k = {k}: {r} of {n} re-scored"
                        );
                    }
                    None => assert!(!served(q), "Q = {q} did not use the tier"),
                }
                for (i, h) in hits.iter().enumerate() {
                    let got: Vec<usize> = h.iter().map(|h| h.index).collect();
                    assert_eq!(
                        got,
                        reference_top_k(&want[i], k),
                        "Q = {q} k = {k} query {i}"
                    );
                    for h in h {
                        assert!((h.score as f64 - want[i][h.index]).abs() < 1e-5);
                    }
                }
            }
        }
    }
}

#[test]
fn bench_with_the_int8_dtype_reports_the_rows_rescored() {
    let args = [
        "bench",
        "--backend",
        "cpu",
        "--queries",
        "1",
        "--corpus",
        "20000",
        "--dim",
        "64",
        "--k",
        "10",
        "--repeat",
        "2",
        "--json",
        "--dtype",
        "int8",
    ];
    let o = run(&args);
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["dtype"], "int8");
    let rescored = v["rescored"].as_u64().expect("a count");
    assert!((10..20_000).contains(&rescored), "{v}");
    assert!(v["tier_bytes"].as_u64().unwrap() >= 20_000 * 64);
    // f32 says so too, and uses no tier.
    let o = run(&args[..args.len() - 2]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        (v["dtype"].as_str(), v["rescored"].is_null()),
        (Some("f32"), true)
    );
    // f16 keeps the rows in half the bytes, and uses no tier.
    let mut f16_args = args[..args.len() - 1].to_vec();
    f16_args.push("f16");
    let o = run(&f16_args);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        (
            v["dtype"].as_str(),
            v["rescored"].is_null(),
            v["corpus_bytes"].as_u64()
        ),
        (Some("f16"), true, Some(20_000 * 64 * 2))
    );
    // A dtype not served is refused by name.
    let o = run(&["bench", "--dtype", "int4"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--dtype"));
}

/// Inner product and L2 through the tier: the same hits (indices and score bits) as the
/// plain corpus, which match the f64 reference; the tier re-scores few rows. Rows of very
/// different norms, and near-duplicates, where L2's expanded form cancels.
#[test]
fn inner_product_and_l2_through_the_tier_match_the_plain_corpus_and_the_reference() {
    use common::reference::metric64;
    use hybridvec::{Metric, SearchOptions};
    let ex = cpu();
    let (n, d) = (4000, 64);
    let mut rows = data::random_matrix(n, d, 31);
    for (r, row) in rows.chunks_exact_mut(d).enumerate() {
        let scale = [0.01f32, 1.0, 30.0][r % 3];
        row.iter_mut().for_each(|v| *v *= scale);
    }
    let base = rows[..d].to_vec();
    for r in 1..20 {
        for (j, v) in rows[r * d..(r + 1) * d].iter_mut().enumerate() {
            *v = base[j] + 1e-4 * (r * j % 7) as f32;
        }
    }
    let plain = Corpus::new(rows.clone(), d).unwrap();
    let tiered = plain.clone().with_int8_tier();
    for metric in [Metric::InnerProduct, Metric::L2] {
        let options = SearchOptions::new(metric);
        for q in 1..=CERTIFIED_MAX_QUERIES {
            let mut qv = data::random_matrix(q, d, 40 + q as u64);
            qv[..d].copy_from_slice(&rows[5 * d..6 * d]); // a near-duplicate of row 0's cluster
            let m = MatrixRef::new(&qv, q, d).unwrap();
            for k in [1, 10, 50] {
                let (got, report) = ex.search_with_report(m, &tiered, k, &options).unwrap();
                let (want, plain_report) = ex.search_with_report(m, &plain, k, &options).unwrap();
                let r = report.rescored.expect("the tier was used");
                assert!(
                    r >= k && r < q * n / 4,
                    "{metric} Q = {q} k = {k}: {r} re-scored"
                );
                assert_eq!(plain_report.rescored, None);
                let bits = |h: &[Vec<hybridvec::Hit>]| -> Vec<Vec<(usize, u32)>> {
                    h.iter()
                        .map(|h| h.iter().map(|h| (h.index, h.score.to_bits())).collect())
                        .collect()
                };
                assert_eq!(bits(&got), bits(&want), "{metric} Q = {q} k = {k}");
                for (i, hits) in got.iter().enumerate() {
                    let query = &qv[i * d..(i + 1) * d];
                    let mut reference: Vec<(usize, f64)> = (0..n)
                        .map(|r| (r, metric64(metric, query, &rows[r * d..(r + 1) * d])))
                        .collect();
                    reference.sort_by(|a, b| match metric {
                        Metric::L2 => a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)),
                        _ => b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)),
                    });
                    let want: Vec<usize> = reference[..k].iter().map(|r| r.0).collect();
                    let got_rows: Vec<usize> = hits.iter().map(|h| h.index).collect();
                    assert_eq!(got_rows, want, "{metric} Q = {q} k = {k} query {i}");
                    for h in hits {
                        let exact = metric64(metric, query, &rows[h.index * d..(h.index + 1) * d]);
                        assert_eq!(h.score, exact as f32, "{metric}: row {}", h.index);
                    }
                }
            }
        }
    }
}

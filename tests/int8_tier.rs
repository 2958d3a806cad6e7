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
    for (n, d, seed) in [(5000, 128, 1), (3000, 33, 2)] {
        let rows = data::random_matrix(n, d, seed);
        let corpus = Corpus::new(rows.clone(), d).unwrap().with_int8_tier();
        assert!(corpus.int8_tier_bytes().unwrap() >= n * d);
        for q in 1..=CERTIFIED_MAX_QUERIES + 1 {
            let qv = data::random_matrix(q, d, seed * 10 + q as u64);
            let m = MatrixRef::new(&qv, q, d).unwrap();
            let want = reference_scores(&qv, &rows, d);
            for k in [1, 10, 100] {
                let (hits, report) = ex.top_k_with_report(m, &corpus, k).unwrap();
                // Up to the limit every CPU streams (the score tiles start at 16 or 24);
                // past it the tier is never used.
                match report.rescored {
                    Some(r) => {
                        assert!(q <= CERTIFIED_MAX_QUERIES, "Q = {q} used the tier");
                        // The union of the queries' candidates: few per query.
                        assert!(
                            r >= k && r < q * n / 8,
                            "Q = {q} k = {k}: {r} of {n} re-scored"
                        );
                    }
                    None => assert!(q > CERTIFIED_MAX_QUERIES, "Q = {q} did not use the tier"),
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

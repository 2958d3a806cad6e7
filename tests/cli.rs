//! Tests of the `hybridvec` binary: exit codes, output formats, and answers checked against
//! an f64 reference.

mod common;

use common::reference::{cosine64, reference_top_k};
use common::{cli, run, stderr, stdout, TempDir};
use hybridvec::{data, input, DevicePolicy, Error, ExecutorConfig, HybridExecutor, Matrix};
use serde_json::Value;
use std::path::Path;
use std::process::Output;

/// Asserts success and no panic, with both streams in the message otherwise.
fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success() && !stderr(o).contains("panicked"),
        "{what}: status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// Why CUDA cannot serve here, or `None` (after a skip line) where a device serves: the
/// checks of the no-GPU messages have nothing to check on a GPU machine.
fn cuda_reason() -> Option<String> {
    match HybridExecutor::new(ExecutorConfig {
        device: DevicePolicy::Cuda,
        ..Default::default()
    }) {
        Err(Error::CudaUnavailable { reason }) => Some(reason),
        Ok(_) => {
            eprintln!("SKIP the no-GPU message checks: a CUDA device serves here");
            None
        }
        Err(other) => panic!("expected CudaUnavailable or a device, got {other:?}"),
    }
}

/// The CLI as on a machine without a usable GPU: on one with a device, CUDA is switched
/// off for the child (`HYBRIDVEC_NO_CUDA`), so the CPU-only answers hold there too.
fn cli_without_gpu() -> std::process::Command {
    let mut c = common::cli();
    if cuda_reason().is_none() {
        c.env("HYBRIDVEC_NO_CUDA", "1");
    }
    c
}

#[test]
fn info_reports_cuda_unavailable_with_reason() {
    let Some(want) = cuda_reason() else { return };
    let o = run(&["info"]);
    assert_ok(&o, "info");
    let out = stdout(&o);
    let line = out
        .lines()
        .find(|l| l.starts_with("cuda:"))
        .unwrap_or_else(|| panic!("no line starting 'cuda:' in:\n{out}"));
    let (_, reason) = line
        .split_once("unavailable:")
        .unwrap_or_else(|| panic!("no 'unavailable:' in {line:?}"));
    assert!(!reason.trim().is_empty(), "no reason in {line:?}");
    assert!(line.contains(&want), "{line:?}");
}

#[test]
fn info_json_is_one_object() {
    let Some(want) = cuda_reason() else { return };
    let o = run(&["info", "--json"]);
    assert_ok(&o, "info --json");
    let v: Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    assert_eq!(v["cuda"], "unavailable");
    assert_eq!(v["cuda_reason"].as_str(), Some(want.as_str()));
    assert!(v["threads"].as_u64().unwrap_or(0) >= 1, "{v}");
    // The kernel set in use, and the extensions the compressed tiers will dispatch on.
    let level = hybridvec::SimdLevel::detect();
    assert_eq!(v["simd"], level.name(), "{v}");
    assert_eq!(v["kernels"], level.kernels(), "{v}");
    let features: Vec<&str> = v["cpu_features"]
        .as_array()
        .unwrap_or_else(|| panic!("no cpu_features list in {v}"))
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(features, hybridvec::CpuFeatures::detect().names(), "{v}");
}

#[test]
fn hybridvec_simd_caps_the_level_and_a_bad_value_is_exit_2() {
    let level = |value: &str| {
        let o = cli()
            .args(["info", "--json"])
            .env("HYBRIDVEC_SIMD", value)
            .output()
            .unwrap();
        assert_ok(&o, "info --json");
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        v["simd"].as_str().unwrap().to_string()
    };
    assert_eq!(level("scalar"), "scalar");
    let best = hybridvec::SimdLevel::detect().name();
    // A cap above what the CPU has leaves the CPU's best; a level of another architecture
    // is an error (below).
    let foreign: &[&str] = if cfg!(target_arch = "x86_64") {
        assert_eq!(level("avx512"), best);
        if hybridvec::SimdLevel::Avx2Fma.is_supported() {
            assert_eq!(level("avx2"), "avx2+fma");
        }
        &["neon"]
    } else if cfg!(target_arch = "aarch64") {
        assert_eq!(level("neon"), best);
        &["avx2", "avx512"]
    } else {
        &["avx2", "avx512", "neon"]
    };
    for &bad in ["avx9000", "-1", "1e9"].iter().chain(foreign) {
        let o = cli()
            .args(["info"])
            .env("HYBRIDVEC_SIMD", bad)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "HYBRIDVEC_SIMD={bad}");
        assert!(
            stderr(&o).contains("HYBRIDVEC_SIMD") && stderr(&o).contains(bad),
            "HYBRIDVEC_SIMD={bad}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn bench_on_cuda_fails_with_code_2_and_reason() {
    let Some(want) = cuda_reason() else { return };
    let o = run(&[
        "bench",
        "--backend",
        "cuda",
        "--queries",
        "2",
        "--corpus",
        "100",
        "--dim",
        "8",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "stderr:\n{err}");
    assert!(!err.contains("panicked"), "stderr:\n{err}");
    assert!(err.contains(&want), "reason missing from stderr:\n{err}");
}

fn bench_json(k: usize) {
    let k_arg = k.to_string();
    let args = [
        "bench",
        "--json",
        "--queries",
        "3",
        "--corpus",
        "1000",
        "--dim",
        "17",
        "--k",
        &k_arg,
        "--repeat",
        "3",
    ];
    let o = cli_without_gpu()
        .args(args)
        .output()
        .expect("run hybridvec");
    assert_ok(&o, &args.join(" "));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one JSON line, got:\n{out}");
    let v: Value = serde_json::from_str(lines[0]).expect("valid JSON");
    let obj = v.as_object().expect("a JSON object");
    for key in [
        "backend",
        "queries",
        "corpus",
        "dim",
        "k",
        "median_secs",
        "gflops",
    ] {
        assert!(obj.contains_key(key), "missing {key:?} in {v}");
    }
    assert!(
        v["backend"].as_str().is_some_and(|b| b.starts_with("cpu")),
        "{v}"
    );
    // `auto` (the default) says why: here no accelerator is usable.
    assert_eq!(v["reason"].as_str(), Some("no_accelerator"), "{v}");
    assert_eq!(v["runs_on"]["cpu"].as_u64(), Some(3), "{v}");
    assert_eq!(v["queries"].as_u64(), Some(3), "{v}");
    assert_eq!(v["corpus"].as_u64(), Some(1000), "{v}");
    assert_eq!(v["dim"].as_u64(), Some(17), "{v}");
    assert_eq!(v["k"].as_u64(), Some(k as u64), "{v}");
    let median = v["median_secs"].as_f64().expect("median_secs is a number");
    assert!(median.is_finite() && median > 0.0, "{v}");
    let gflops = v["gflops"].as_f64().expect("gflops is a number");
    assert!(gflops.is_finite() && gflops > 0.0, "{v}");
    // gflops is 2·Q·N·D over the median time.
    let expect = 2.0 * 3.0 * 1000.0 * 17.0 / median / 1e9;
    assert!((gflops - expect).abs() <= 1e-6 * expect, "{v}");
}

#[test]
fn bench_json_top_k() {
    bench_json(5);
}

#[test]
fn bench_json_k0_times_cosine() {
    bench_json(0);
}

#[test]
fn bench_range_takes_per_query_filters_and_more_rows_than_the_corpus() {
    // The threshold comes from query 0 alone, with its own list; a row count past the
    // corpus admits every row, filtered or not.
    let filtered = ["--filter", "0.5", "--filter-per-query"];
    for (rows, filter) in [
        ("5", &filtered[..]),
        ("5000", &filtered[..]),
        ("5000", &[][..]),
    ] {
        let mut args = vec!["bench", "--json", "--queries", "3", "--corpus", "1000"];
        args.extend(["--dim", "8", "--range-rows", rows, "--repeat", "1"]);
        args.extend(filter);
        let o = cli_without_gpu()
            .args(&args)
            .output()
            .expect("run hybridvec");
        assert_ok(&o, &args.join(" "));
        let v: Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON line");
        assert_eq!(v["range_rows"].as_u64(), rows.parse().ok(), "{v}");
    }
}

#[test]
fn query_json_matches_f64_reference() {
    let dir = TempDir::new("cli-query");
    let (n, q, d, k) = (500, 4, 19, 3);
    let corpus = Matrix::new(data::random_matrix(n, d, 81), n, d).unwrap();
    let queries = Matrix::new(data::random_matrix(q, d, 82), q, d).unwrap();
    let corpus_path = dir.path("corpus.npy");
    let queries_path = dir.path("queries.fvecs");
    input::write_npy(&corpus_path, &corpus).unwrap();
    input::write_fvecs(&queries_path, &queries).unwrap();

    let o = run(&[
        "query",
        "--corpus",
        corpus_path.to_str().unwrap(),
        "--input",
        queries_path.to_str().unwrap(),
        "--k",
        "3",
        "--json",
    ]);
    assert_ok(&o, "query --json");
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), q, "one line per query:\n{out}");
    for (i, line) in lines.iter().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let obj = v.as_object().expect("object");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["hits", "query"], "{line}");
        assert_eq!(v["query"].as_u64(), Some(i as u64), "{line}");
        let hits = v["hits"].as_array().expect("hits is an array");
        assert_eq!(hits.len(), k, "{line}");

        let qv = queries.row(i);
        let scores: Vec<f64> = (0..n).map(|j| cosine64(qv, corpus.row(j))).collect();
        let want = reference_top_k(&scores, n);
        for (rank, h) in hits.iter().enumerate() {
            let mut hk: Vec<&str> = h
                .as_object()
                .expect("hit object")
                .keys()
                .map(String::as_str)
                .collect();
            hk.sort_unstable();
            assert_eq!(hk, ["index", "score"], "{line}");
            let index = h["index"].as_u64().expect("index") as usize;
            let score = h["score"].as_f64().expect("score");
            assert!(index < n, "{line}");
            assert!((score - scores[index]).abs() <= 1e-5, "rank {rank}: {line}");
            assert!(
                index == want[rank] || (scores[index] - scores[want[rank]]).abs() <= 2e-5,
                "rank {rank}: got {index}, reference {} ({line})",
                want[rank]
            );
        }
    }
}

#[test]
fn query_metric_ip_and_l2_match_the_f64_reference_and_a_bad_metric_is_exit_2() {
    let dir = TempDir::new("cli-query-metric");
    let (n, q, d, k) = (400, 3, 13, 5);
    let corpus = Matrix::new(data::random_matrix(n, d, 84), n, d).unwrap();
    let queries = Matrix::new(data::random_matrix(q, d, 85), q, d).unwrap();
    let corpus_path = dir.path("corpus.npy");
    let queries_path = dir.path("queries.npy");
    input::write_npy(&corpus_path, &corpus).unwrap();
    input::write_npy(&queries_path, &queries).unwrap();
    let args = |metric: &'static str| {
        vec![
            "query".to_string(),
            "--corpus".into(),
            corpus_path.to_str().unwrap().into(),
            "--input".into(),
            queries_path.to_str().unwrap().into(),
            "--k".into(),
            k.to_string(),
            "--metric".into(),
            metric.into(),
            "--json".into(),
        ]
    };
    for metric in ["ip", "l2"] {
        let a = args(metric);
        let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert_ok(&o, metric);
        let out = stdout(&o);
        for (i, line) in out.lines().enumerate() {
            let v: Value = serde_json::from_str(line).unwrap();
            let qv = queries.row(i);
            let mut want: Vec<(usize, f64)> = (0..n)
                .map(|j| {
                    let c = corpus.row(j);
                    let s: f64 = if metric == "ip" {
                        qv.iter().zip(c).map(|(&a, &b)| a as f64 * b as f64).sum()
                    } else {
                        qv.iter()
                            .zip(c)
                            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                            .sum()
                    };
                    (j, s)
                })
                .collect();
            // Inner product: largest first; L2: the smallest squared distance first.
            want.sort_by(|a, b| {
                let o = a.1.total_cmp(&b.1);
                if metric == "ip" { o.reverse() } else { o }.then(a.0.cmp(&b.0))
            });
            let hits = v["hits"].as_array().expect("hits");
            assert_eq!(hits.len(), k, "{line}");
            for (rank, h) in hits.iter().enumerate() {
                let index = h["index"].as_u64().unwrap() as usize;
                let score = h["score"].as_f64().unwrap();
                assert_eq!(index, want[rank].0, "{metric} rank {rank}: {line}");
                assert!(
                    (score - want[rank].1).abs() <= 1e-6 * want[rank].1.abs(),
                    "{metric} rank {rank}: {line}"
                );
            }
        }
    }
    for bad in ["", "cosine2", "-1"] {
        let mut a = args("ip");
        a[8] = bad.to_string();
        let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(o.status.code(), Some(2), "--metric {bad:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        // clap takes `-1` for a flag and names it instead.
        let named = if bad == "-1" { "'-1'" } else { "--metric" };
        assert!(err.contains(named), "--metric {bad:?}: {err}");
    }
}

#[test]
fn query_filters_by_rows_and_ids_and_names_a_bad_filter_file() {
    let dir = TempDir::new("cli-query-filter");
    let (n, d) = (300usize, 6usize);
    let corpus = Matrix::new(data::random_matrix(n, d, 86), n, d).unwrap();
    let corpus_path = dir.path("corpus.npy");
    input::write_npy(&corpus_path, &corpus).unwrap();
    let rows_path = dir.path("rows.txt");
    std::fs::write(&rows_path, "250\n\n3\r\n77\n3\n").unwrap();
    let base = |extra: &[&str]| {
        let mut a = vec![
            "query",
            "--corpus",
            corpus_path.to_str().unwrap(),
            "--random",
            "3",
            "--k",
            "10",
            "--json",
        ];
        a.extend_from_slice(extra);
        run(&a)
    };
    // Rows: every hit is allowed, and k past the allowed set gives all three.
    let o = base(&[
        "--filter-rows",
        rows_path.to_str().unwrap(),
        "--metric",
        "l2",
    ]);
    assert_ok(&o, "--filter-rows");
    for line in stdout(&o).lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let mut got: Vec<u64> = v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["index"].as_u64().unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(got, [3, 77, 250], "{line}");
    }
    // Bad files: exit 2, naming the file (and the line).
    for (name, text, says) in [
        ("past.txt", "1\n300\n", "row 300"),
        ("word.txt", "1\nabc\n", "line 2"),
        ("neg.txt", "-4\n", "line 1"),
    ] {
        let path = dir.path(name);
        std::fs::write(&path, text).unwrap();
        let o = base(&["--filter-rows", path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{name}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(name) && err.contains(says), "{name}: {err}");
    }
    let o = base(&["--filter-rows", dir.path("missing.txt").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.txt"));
    // Ids need a store.
    let ids_path = dir.path("ids.txt");
    std::fs::write(&ids_path, "rec-4\nrec-9\n").unwrap();
    let o = base(&["--filter-ids", ids_path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    // Against a store: only the listed ids, and an unknown id names the file.
    let store = dir.path("store");
    let o = run(&[
        "ingest",
        "--store",
        store.to_str().unwrap(),
        "--dim",
        "6",
        "--random",
        "50",
    ]);
    assert_ok(&o, "ingest");
    let q = |ids: &Path| {
        run(&[
            "query",
            "--store",
            store.to_str().unwrap(),
            "--random",
            "2",
            "--k",
            "5",
            "--json",
            "--filter-ids",
            ids.to_str().unwrap(),
        ])
    };
    let o = q(&ids_path);
    assert_ok(&o, "--filter-ids");
    for line in stdout(&o).lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let mut got: Vec<&str> = v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(got, ["rec-4", "rec-9"], "{line}");
    }
    std::fs::write(&ids_path, "rec-4\nrec-999\n").unwrap();
    let o = q(&ids_path);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ids.txt") && err.contains("rec-999"), "{err}");
}

#[test]
fn query_random_and_text_output() {
    let dir = TempDir::new("cli-query-random");
    let corpus = Matrix::new(data::random_matrix(50, 8, 83), 50, 8).unwrap();
    let path = dir.path("c.fvecs");
    input::write_fvecs(&path, &corpus).unwrap();
    let o = run(&[
        "query",
        "--corpus",
        path.to_str().unwrap(),
        "--random",
        "2",
        "--k",
        "60",
    ]);
    assert_ok(&o, "query --random");
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for (i, l) in lines.iter().enumerate() {
        let rest = l
            .strip_prefix(&format!("query {i}: "))
            .unwrap_or_else(|| panic!("{l}"));
        // k = 60 > N = 50 gives all 50 rows.
        assert_eq!(rest.split_whitespace().count(), 50, "{l}");
    }
}

fn assert_fails_naming(o: &Output, file: &Path) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr:\n{err}");
    assert!(!err.contains("panicked"), "stderr:\n{err}");
    let name = file.to_str().unwrap();
    assert!(err.contains(name), "stderr does not name {name}:\n{err}");
}

#[test]
fn truncated_npy_corpus_is_exit_2_naming_the_file() {
    let dir = TempDir::new("cli-truncated");
    let corpus = Matrix::new(data::random_matrix(20, 6, 84), 20, 6).unwrap();
    let path = dir.path("corpus.npy");
    input::write_npy(&path, &corpus).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
    let o = run(&[
        "query",
        "--corpus",
        path.to_str().unwrap(),
        "--random",
        "1",
        "--k",
        "3",
    ]);
    assert_fails_naming(&o, &path);
}

#[test]
fn query_dimension_mismatch_is_exit_2() {
    let dir = TempDir::new("cli-mismatch");
    let corpus_path = dir.path("c.npy");
    let queries_path = dir.path("q.fvecs");
    input::write_npy(
        &corpus_path,
        &Matrix::new(data::random_matrix(10, 6, 85), 10, 6).unwrap(),
    )
    .unwrap();
    input::write_fvecs(
        &queries_path,
        &Matrix::new(data::random_matrix(2, 7, 86), 2, 7).unwrap(),
    )
    .unwrap();
    let o = run(&[
        "query",
        "--corpus",
        corpus_path.to_str().unwrap(),
        "--input",
        queries_path.to_str().unwrap(),
        "--k",
        "3",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "stderr:\n{err}");
    // Which side is which: the query file by name, the corpus by name, both dimensions.
    for want in [
        queries_path.to_str().unwrap(),
        "queries have dimension 7",
        corpus_path.to_str().unwrap(),
        "dimension 6",
    ] {
        assert!(err.contains(want), "{want:?} not in stderr:\n{err}");
    }
    assert!(!err.contains("panicked"), "stderr:\n{err}");
}

#[test]
fn demo_runs_the_four_workloads() {
    let o = run(&["demo"]);
    assert_ok(&o, "demo");
    let out = stdout(&o);
    for w in ["single", "small-batch", "large-batch", "gpu-large"] {
        assert!(
            out.lines().any(|l| l.starts_with(w)),
            "demo output has no {w} line:\n{out}"
        );
    }
    assert!(out.contains("matches an f64 reference"), "{out}");
    for metric in ["ip", "l2"] {
        assert!(
            out.lines().any(
                |l| l.trim_start().starts_with(&format!("--metric {metric}"))
                    && l.contains("matches an f64 reference")
            ),
            "demo output has no checked --metric {metric} line:\n{out}"
        );
    }
}

#[test]
fn store_commands_ingest_get_verify_and_query() {
    let dir = std::env::temp_dir().join(format!("hybridvec-cli-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = dir.to_str().unwrap();
    let o = run(&[
        "ingest",
        "--store",
        store,
        "--dim",
        "8",
        "--random",
        "300",
        "--seed",
        "5",
        "--flush-every",
        "100",
    ]);
    assert_ok(&o, "ingest");
    assert_eq!(
        stdout(&o).lines().collect::<Vec<_>>(),
        vec!["flushed 100", "flushed 200", "flushed 300"]
    );

    let o = run(&["get", "--store", store, "--id", "rec-7", "--json"]);
    assert_ok(&o, "get");
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let (_, emb, content) = data::random_record(5, 7, 8);
    let got: Vec<f32> = v["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(got, emb);
    assert_eq!(v["content_len"], content.len());
    let missing = run(&["get", "--store", store, "--id", "rec-300"]);
    assert_eq!(missing.status.code(), Some(1), "a missing id exits 1");

    let o = run(&["verify", "--store", store, "--expect-seed", "5", "--json"]);
    assert_ok(&o, "verify");
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["records"].as_u64()),
        (Some(true), Some(300))
    );
    let wrong = run(&["verify", "--store", store, "--expect-seed", "6", "--json"]);
    assert_eq!(
        wrong.status.code(),
        Some(1),
        "a seed mismatch fails verification"
    );

    let o = run(&[
        "query", "--store", store, "--random", "2", "--k", "3", "--json",
    ]);
    assert_ok(&o, "query --store");
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["query"], i);
        let hits = l["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 3);
        assert!(hits
            .iter()
            .all(|h| h["id"].as_str().unwrap().starts_with("rec-")));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without a reachable libcuda (this machine), or with CUDA switched off
/// (`HYBRIDVEC_NO_CUDA`, which works on a GPU machine too), `auto` runs on the CPU and
/// nothing panics.
#[test]
fn without_libcuda_auto_runs_on_the_cpu() {
    let args = [
        "bench",
        "--json",
        "--queries",
        "2",
        "--corpus",
        "500",
        "--dim",
        "8",
        "--repeat",
        "1",
    ];
    let mut runs = vec![("HYBRIDVEC_NO_CUDA", Some("1"))];
    if cuda_reason().is_some_and(|r| r.contains("no libcuda")) {
        runs.push(("HYBRIDVEC_NO_CUDA", None));
    } else {
        eprintln!("SKIP the no-libcuda run: libcuda is reachable here");
    }
    for (var, value) in runs {
        let mut cmd = common::cli();
        cmd.args(args);
        match value {
            Some(v) => cmd.env(var, v),
            None => cmd.env_remove(var),
        };
        let o = cmd.output().unwrap();
        assert_ok(&o, &format!("{var}={value:?} {}", args.join(" ")));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
        let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert!(v["backend"].as_str().unwrap().starts_with("cpu"), "{v}");
        assert_eq!(v["reason"].as_str(), Some("no_accelerator"), "{v}");
    }
}

/// `--precision` reaches the GPU configuration and the JSON; the CPU ignores it (it is
/// always FP32), so here the answer is the CPU's. A bad value is a usage error.
#[test]
fn bench_takes_a_gpu_precision() {
    for p in ["fp32", "tf32", "fp16"] {
        let args = [
            "bench",
            "--json",
            "--queries",
            "16",
            "--corpus",
            "300",
            "--dim",
            "8",
            "--repeat",
            "1",
            "--precision",
            p,
        ];
        let o = run(&args);
        assert_ok(&o, &args.join(" "));
        let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(v["precision"].as_str(), Some(p), "{v}");
    }
    let o = run(&["bench", "--precision", "fp8"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("fp8"), "{}", stderr(&o));
}

/// `ingest --int8-tier` (on a new store, and on demand on an existing one) and
/// `query --store --json`, whose lines say how many rows each query re-scored; the hits
/// are those of the same store without the tier. Damage to the tier: `verify` fails and
/// names it, `query` searches without it (same hits), `repair` rebuilds it.
#[test]
fn ingest_int8_tier_and_query_store_say_rescored_with_unchanged_hits() {
    let dir = std::env::temp_dir().join(format!("hybridvec-cli-tier-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (tiered, plain) = (dir.join("tiered"), dir.join("plain"));
    let (tiered, plain) = (tiered.to_str().unwrap(), plain.to_str().unwrap());
    let ingest = |store: &str, extra: &[&str]| {
        let mut args = vec![
            "ingest", "--store", store, "--dim", "32", "--random", "3000", "--seed", "3",
        ];
        args.extend_from_slice(extra);
        let o = run(&args);
        assert_ok(&o, "ingest");
    };
    ingest(tiered, &["--int8-tier"]);
    ingest(plain, &[]);
    let query = |store: &str| -> (Vec<Value>, Vec<Value>, String) {
        let o = run(&[
            "query", "--store", store, "--random", "5", "--seed", "4", "--k", "10", "--json",
        ]);
        assert_ok(&o, "query --store");
        let lines: Vec<Value> = stdout(&o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5);
        let hits = lines.iter().map(|l| l["hits"].clone()).collect();
        let rescored = lines.iter().map(|l| l["rescored"].clone()).collect();
        (hits, rescored, stderr(&o))
    };
    let (want, none, _) = query(plain);
    assert!(none.iter().all(Value::is_null), "{none:?}");
    let (got, rescored, _) = query(tiered);
    assert_eq!(got, want);
    for r in &rescored {
        let r = r.as_u64().unwrap_or_else(|| panic!("rescored {r}"));
        assert!((10..3000).contains(&r), "rescored {r}");
    }
    // On demand, on the existing untiered store.
    let o = run(&[
        "ingest",
        "--store",
        plain,
        "--dim",
        "32",
        "--random",
        "0",
        "--int8-tier",
    ]);
    assert_ok(&o, "ingest --int8-tier on an existing store");
    let (got, rescored, _) = query(plain);
    assert_eq!(got, want);
    assert!(rescored.iter().all(Value::is_u64), "{rescored:?}");

    // Damage one code byte.
    let chunk = dir.join("tiered").join("i8code-000001.chunk");
    let mut bytes = std::fs::read(&chunk).unwrap();
    bytes[77] ^= 0x21;
    std::fs::write(&chunk, bytes).unwrap();
    let o = run(&["verify", "--store", tiered]);
    assert_eq!(o.status.code(), Some(1), "verify must fail: {}", stdout(&o));
    assert!(stdout(&o).contains("int8 tier"), "{}", stdout(&o));
    let (got, rescored, err) = query(tiered);
    assert_eq!(got, want);
    assert!(rescored.iter().all(Value::is_null), "{rescored:?}");
    assert!(err.contains("int8 tier") && err.contains("repair"), "{err}");
    let o = run(&["repair", "--store", tiered, "--json"]);
    assert_ok(&o, "repair");
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["int8_tier_rebuilt"], 1);
    let o = run(&["verify", "--store", tiered, "--expect-seed", "3", "--json"]);
    assert_ok(&o, "verify after repair");
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["int8_tier"].as_bool()),
        (Some(true), Some(true))
    );
    let (got, rescored, _) = query(tiered);
    assert_eq!(got, want);
    assert!(rescored.iter().all(Value::is_u64), "{rescored:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

//! The CLI as a hostile user drives it: random flag values for every subcommand (huge,
//! negative, zero, non-numeric), output to a full disk and a closed pipe, inputs that are
//! missing, empty, of the wrong dimension or hold NaN, and a demo stopped midway. It never
//! panics, never aborts, exits 2 with a message that names the file or flag, and a failed
//! command leaves nothing behind.

mod common;

use common::{cli, run, stderr, stdout, TempDir};
use hybridvec::{data, input, Matrix};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// Asserts the process ended by itself with status 0, 1 or 2, and without a panic.
fn assert_no_crash(o: &Output, what: &str) {
    use std::os::unix::process::ExitStatusExt;
    let err = stderr(o);
    assert!(
        matches!(o.status.code(), Some(0..=2)),
        "{what}: status {:?} (signal {:?})\nstderr:\n{err}",
        o.status,
        o.status.signal()
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{what}: panicked\n{err}"
    );
}

/// Asserts exit status 2 and a message on stderr containing every one of `words`.
fn assert_fails_saying(o: &Output, words: &[&str], what: &str) {
    assert_no_crash(o, what);
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{what}: {err}");
    for w in words {
        assert!(err.contains(w), "{what}: {w:?} not in:\n{err}");
    }
}

/// Runs `args` with a deadline: a command that hangs is a failure too.
fn run_bounded(args: &[String], limit: Duration) -> Output {
    let mut child = cli()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hybridvec");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().expect("output");
            panic!(
                "hybridvec {} ran over {limit:?}\nstderr:\n{}",
                args.join(" "),
                stderr(&o)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A store `s` in `tmp` holding `ingest --random n` records of dimension 8 (seed 7).
fn ingested(tmp: &TempDir, n: u64) -> std::path::PathBuf {
    let store = tmp.path("s");
    let o = run(&[
        "ingest",
        "--store",
        store.to_str().unwrap(),
        "--dim",
        "8",
        "--random",
        &n.to_string(),
    ]);
    assert!(o.status.success(), "set-up ingest: {}", stderr(&o));
    store
}

fn write_npy(path: &Path, rows: usize, dim: usize, seed: u64) {
    let m = Matrix::new(data::random_matrix(rows, dim, seed), rows, dim).unwrap();
    input::write_npy(path, &m).unwrap();
}

/// Flag values a user might type, or mistype.
const VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "-0",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775808",
    "1000000000000",
    "4294967297",
    "abc",
    "",
    "1.5",
    "1e3",
    "0x10",
    "NaN",
    "--json",
];

#[test]
fn no_flag_value_makes_any_subcommand_panic_abort_or_hang() {
    let tmp = TempDir::new("fuzz");
    let store = tmp.path("store");
    let store_s = store.to_str().unwrap().to_string();
    let o = run(&[
        "ingest", "--store", &store_s, "--dim", "8", "--random", "40",
    ]);
    assert_no_crash(&o, "set-up ingest");
    assert!(o.status.success(), "{}", stderr(&o));
    let corpus = tmp.path("c.npy");
    write_npy(&corpus, 30, 8, 1);
    let short = tmp.path("short.fvecs");
    std::fs::write(&short, [1u8, 0, 0]).unwrap();
    let paths: Vec<String> = [
        corpus.to_str().unwrap(),
        short.to_str().unwrap(),
        tmp.dir().to_str().unwrap(),
        "/dev/null",
        "/nonexistent/x.npy",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let new_store = |n: usize| tmp.path(&format!("new-{n}")).to_str().unwrap().to_string();
    // (subcommand and base flags, flags to fuzz one at a time). Base flags keep each run
    // small; a fuzzed flag replaces its base value.
    let s = |v: &[&str]| -> Vec<String> { v.iter().map(|x| x.to_string()).collect() };
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            s(&[
                "bench",
                "--queries",
                "2",
                "--corpus",
                "50",
                "--dim",
                "8",
                "--k",
                "3",
                "--repeat",
                "2",
                "--json",
            ]),
            vec![
                "--queries",
                "--corpus",
                "--dim",
                "--k",
                "--repeat",
                "--seed",
                "--backend",
                "--precision",
            ],
        ),
        (
            s(&["query", "--store", &store_s, "--random", "2", "--k", "3"]),
            vec!["--random", "--seed", "--k", "--backend", "--store"],
        ),
        (
            s(&[
                "query",
                "--corpus",
                corpus.to_str().unwrap(),
                "--random",
                "2",
                "--k",
                "3",
            ]),
            vec!["--random", "--k", "--corpus"],
        ),
        (
            s(&["ingest", "--store", "NEW", "--dim", "8", "--random", "5"]),
            vec!["--dim", "--random", "--seed", "--flush-every"],
        ),
        (
            s(&[
                "ingest",
                "--store",
                "NEW",
                "--dim",
                "8",
                "--input",
                corpus.to_str().unwrap(),
            ]),
            vec!["--dim", "--input", "--flush-every"],
        ),
        (
            s(&["get", "--store", &store_s, "--id", "rec-1"]),
            vec!["--id", "--store"],
        ),
        (
            s(&["verify", "--store", &store_s, "--expect-seed", "7"]),
            vec!["--expect-seed", "--store"],
        ),
        (s(&["info"]), vec!["--json"]),
    ];
    let mut runs = Vec::new();
    for (base, flags) in &cases {
        for flag in flags {
            let path_flag = matches!(*flag, "--store" | "--corpus" | "--input");
            let values: Vec<String> = if path_flag {
                paths.clone()
            } else {
                VALUES.iter().map(|v| v.to_string()).collect()
            };
            for v in values {
                let mut args = base.clone();
                match args.iter().position(|a| a == flag) {
                    Some(i) if i + 1 < args.len() && !args[i + 1].starts_with("--") => {
                        args[i + 1] = v
                    }
                    Some(_) => args.push(v),
                    None => args.extend([flag.to_string(), v]),
                }
                runs.push(args);
            }
        }
    }
    // Every ingest gets a store directory of its own.
    for (n, args) in runs.iter_mut().enumerate() {
        for a in args.iter_mut() {
            if a == "NEW" {
                *a = new_store(n);
            }
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(args) = runs.get(i) else { return };
                let o = run_bounded(args, Duration::from_secs(120));
                assert_no_crash(&o, &format!("hybridvec {}", args.join(" ")));
            });
        }
    });
    eprintln!("{} runs, none panicked, aborted or hung", runs.len());
}

#[test]
fn huge_counts_and_dimensions_are_refused_with_exit_2() {
    let tmp = TempDir::new("huge");
    let store = ingested(&tmp, 10);
    let store_s = store.to_str().unwrap();
    for (args, words) in [
        (
            vec![
                "query",
                "--store",
                store_s,
                "--k",
                "3",
                "--random",
                "18446744073709551615",
            ],
            vec!["18446744073709551615", "bytes"],
        ),
        (
            vec![
                "query",
                "--store",
                store_s,
                "--k",
                "3",
                "--random",
                "1000000000000",
            ],
            vec!["1000000000000", "memory"],
        ),
        (
            vec!["bench", "--dim", "18446744073709551615"],
            vec!["18446744073709551615"],
        ),
        (
            vec![
                "bench",
                "--queries",
                "4000000000",
                "--corpus",
                "10",
                "--dim",
                "8",
            ],
            vec!["4000000000", "memory"],
        ),
        (
            vec![
                "ingest", "--store", store_s, "--dim", "1000000", "--random", "2",
            ],
            vec!["--dim"],
        ),
        (
            vec![
                "ingest", "--store", store_s, "--dim", "2000000", "--random", "2",
            ],
            vec!["--dim", "1048576"],
        ),
        (
            vec![
                "ingest",
                "--store",
                store_s,
                "--dim",
                "8",
                "--random",
                "1000000000000000",
            ],
            vec!["--random", "free"],
        ),
    ] {
        let o = run(&args);
        assert_fails_saying(&o, &words, &args.join(" "));
    }
    // The refused ingests changed nothing.
    let o = run(&["verify", "--store", store_s, "--expect-seed", "7"]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).starts_with("10 records, ok"), "{}", stdout(&o));
}

#[test]
fn output_to_a_full_disk_is_exit_2_naming_standard_output() {
    let tmp = TempDir::new("devfull");
    let store = ingested(&tmp, 20);
    let store_s = store.to_str().unwrap();
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    for args in [
        vec!["info"],
        vec!["info", "--json"],
        vec!["query", "--store", store_s, "--random", "2", "--k", "3"],
        vec![
            "query", "--store", store_s, "--random", "2", "--k", "3", "--json",
        ],
        vec!["verify", "--store", store_s],
        vec!["get", "--store", store_s, "--id", "rec-3"],
        vec!["get", "--store", store_s, "--id", "rec-3", "--json"],
        vec![
            "bench",
            "--queries",
            "1",
            "--corpus",
            "20",
            "--dim",
            "8",
            "--repeat",
            "1",
        ],
        vec!["ingest", "--store", store_s, "--dim", "8", "--random", "3"],
    ] {
        let o = cli().args(&args).stdout(full()).output().unwrap();
        assert_fails_saying(&o, &["standard output"], &args.join(" "));
    }
}

#[test]
fn output_to_a_closed_pipe_is_exit_2_not_a_panic() {
    let tmp = TempDir::new("pipe");
    let store = ingested(&tmp, 20);
    let store_s = store.to_str().unwrap();
    let mut child = cli()
        .args(["query", "--store", store_s, "--random", "2000", "--k", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away at once
    let o = child.wait_with_output().unwrap();
    assert_fails_saying(&o, &["standard output"], "query into a closed pipe");
}

/// Every way an `ingest` can fail before its first flush: it exits 2 naming the cause, and
/// the directory is as it was (absent, or empty), so the corrected retry works.
#[test]
fn a_failed_ingest_leaves_nothing_behind() {
    let tmp = TempDir::new("failed-ingest");
    let nine = tmp.path("nine.npy");
    write_npy(&nine, 20, 9, 3);
    let empty = tmp.path("empty.npy");
    std::fs::write(&empty, b"").unwrap();
    let short = tmp.path("short.fvecs");
    std::fs::write(&short, [8u8, 0, 0]).unwrap();
    let mut nan = data::random_matrix(20, 8, 4);
    nan[7 * 8 + 3] = f32::NAN;
    let nan_file = tmp.path("nan.npy");
    input::write_npy(&nan_file, &Matrix::new(nan, 20, 8).unwrap()).unwrap();
    let mut big = data::random_matrix(20, 8, 5);
    big[11 * 8] = 1e31;
    let big_file = tmp.path("big-norm.npy");
    input::write_npy(&big_file, &Matrix::new(big, 20, 8).unwrap()).unwrap();
    let missing = tmp.path("missing.npy");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let cases: Vec<(String, Vec<String>)> = vec![
        (
            s(&nine),
            vec![s(&nine), "dimension 9".into(), "--dim is 8".into()],
        ),
        (s(&missing), vec![s(&missing)]),
        (s(&empty), vec![s(&empty)]),
        (s(&short), vec![s(&short), "truncated".into()]),
        (
            s(&nan_file),
            vec![s(&nan_file), "row 7".into(), "column 3".into()],
        ),
        (
            s(&big_file),
            vec![s(&big_file), "row 11".into(), "norm".into()],
        ),
        (s(tmp.dir()), vec![s(tmp.dir())]),
    ];
    for (n, (input_path, words)) in cases.iter().enumerate() {
        for pre_existing in [false, true] {
            let store = tmp.path(&format!("store-{n}-{pre_existing}"));
            if pre_existing {
                std::fs::create_dir(&store).unwrap();
            }
            let ctx = format!("ingest --input {input_path} (dir existed: {pre_existing})");
            let o = run(&[
                "ingest",
                "--store",
                store.to_str().unwrap(),
                "--dim",
                "8",
                "--input",
                input_path,
            ]);
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            assert_fails_saying(&o, &words, &ctx);
            if pre_existing {
                let left: Vec<_> = std::fs::read_dir(&store).unwrap().collect();
                assert!(left.is_empty(), "{ctx}: left {left:?}");
            } else {
                assert!(!store.exists(), "{ctx}: left the store directory");
            }
        }
    }
    // The retry with the right dimension now works.
    let store = tmp.path("store-0-false");
    let o = run(&[
        "ingest",
        "--store",
        store.to_str().unwrap(),
        "--dim",
        "9",
        "--input",
        &s(&nine),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "flushed 20");
}

#[test]
fn messages_name_the_side_and_the_flags() {
    let tmp = TempDir::new("messages");
    let store = ingested(&tmp, 5);
    let store_s = store.to_str().unwrap();
    // The store's dimension against --dim.
    let o = run(&["ingest", "--store", store_s, "--dim", "9", "--random", "5"]);
    assert_fails_saying(
        &o,
        &["--dim is 9", "store", "dimension 8"],
        "ingest --dim 9",
    );
    // The store's dimension against the queries'.
    let q = tmp.path("q.npy");
    write_npy(&q, 2, 9, 1);
    let o = run(&[
        "query",
        "--store",
        store_s,
        "--input",
        q.to_str().unwrap(),
        "--k",
        "2",
    ]);
    assert_fails_saying(
        &o,
        &[
            q.to_str().unwrap(),
            "queries have dimension 9",
            "store",
            "dimension 8",
        ],
        "query dim 9 against a dim-8 store",
    );
    // No source at all: both flags are named.
    let o = run(&["query", "--random", "1", "--k", "1"]);
    assert_fails_saying(&o, &["--store", "--corpus"], "query without a source");
    // A missing store names its directory.
    let gone = tmp.path("gone");
    let o = run(&["verify", "--store", gone.to_str().unwrap()]);
    assert_fails_saying(&o, &[gone.to_str().unwrap()], "verify a missing store");
}

/// `bench` with a zero count names the flag, instead of an empty-input error about a
/// matrix the user never named.
#[test]
fn bench_with_a_zero_count_names_the_flag() {
    for flag in ["--queries", "--corpus", "--dim"] {
        let o = run(&["bench", flag, "0", "--repeat", "1"]);
        assert_fails_saying(&o, &[flag, "at least 1"], &format!("bench {flag} 0"));
    }
}

#[test]
fn query_store_opens_and_verifies_the_store_once() {
    let tmp = TempDir::new("open-once");
    let store = ingested(&tmp, 5);
    let store_s = store.to_str().unwrap();
    let o = cli()
        .args(["query", "--store", store_s, "--random", "1", "--k", "2"])
        .env("RUST_LOG", "hybridvec=debug")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let opens = stderr(&o).matches("opened store").count();
    assert_eq!(opens, 1, "{}", stderr(&o));
}

#[test]
fn verify_against_another_seed_summarises() {
    let tmp = TempDir::new("verify-summary");
    let store = ingested(&tmp, 300);
    let store_s = store.to_str().unwrap();
    let o = run(&["verify", "--store", store_s, "--expect-seed", "8"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.starts_with("300 records, 300 errors"), "{out}");
    assert!(out.lines().count() <= 12, "one line per record:\n{out}");
    assert!(out.contains("and 290 more"), "{out}");
}

/// The demo removes its store when interrupted (Ctrl-C, SIGTERM, SIGHUP).
#[test]
fn an_interrupted_demo_removes_its_store() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let child = cli()
            .arg("demo")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("hybridvec-demo-{}", child.id()));
        let start = Instant::now();
        // Wait until the store holds data (its first vector chunk exists).
        while !dir.join("vec-000000.chunk").exists() {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the demo never created {}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: signalling our own child, which is still running (not yet waited for).
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let o = child.wait_with_output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(128 + sig),
            "signal {sig}: {}",
            stderr(&o)
        );
        assert!(!dir.exists(), "signal {sig}: {} left behind", dir.display());
    }
}

/// Ctrl-C during an ingest: before its first acknowledged flush, the store it created is
/// removed; after one, everything acknowledged stays.
#[test]
fn an_interrupted_ingest_removes_only_what_nothing_acknowledged() {
    use std::io::{BufRead, BufReader};
    let tmp = TempDir::new("ingest-interrupted");
    // No flush until the end: interrupted, it leaves nothing.
    let store = tmp.path("never-flushed");
    let child = cli()
        .args(["ingest", "--store", store.to_str().unwrap(), "--dim", "16"])
        .args(["--random", "100000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !store.join("vec-000000.chunk").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no store was created"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    // SAFETY: signalling our own child, which is still running (not yet waited for).
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert_eq!(stdout(&o), "", "it acknowledged something");
    assert!(!store.exists(), "the unacknowledged store was left behind");
    // Flushing as it goes: what it acknowledged survives the interrupt.
    let store = tmp.path("flushing");
    let mut child = cli()
        .args(["ingest", "--store", store.to_str().unwrap(), "--dim", "16"])
        .args([
            "--random",
            "100000000",
            "--flush-every",
            "500",
            "--seed",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert_eq!(first, "flushed 500");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let acknowledged = lines
        .map_while(Result::ok)
        .filter_map(|l| {
            l.strip_prefix("flushed ")
                .and_then(|n| n.parse::<u64>().ok())
        })
        .last()
        .unwrap_or(500);
    assert_eq!(child.wait().unwrap().code(), Some(128 + libc::SIGTERM));
    let s = hybridvec::WarmStore::open_read_only(&store).unwrap();
    assert!(s.len() >= acknowledged, "{} < {acknowledged}", s.len());
    for i in 0..acknowledged {
        let (id, emb, _) = data::random_record(3, i, 16);
        assert_eq!(
            s.get(&id).unwrap().expect("acknowledged").embedding,
            emb,
            "{id}"
        );
    }
}

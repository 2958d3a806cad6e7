//! Peak memory of loading a corpus file: the CLI must hold the file's data once, not a
//! copy of the file plus the converted matrix (`query --corpus`), and `ingest --input`
//! streams rows into the store instead of holding the file beside it.
//!
//! The measurement is of a child process (`hybridvec query --corpus FILE`), reaped with
//! `wait4` so its `ru_maxrss` is its own peak resident set and no one else's: not other
//! children running in parallel (which `RUSAGE_CHILDREN` would mix in).
//!
//! One catch: Linux folds the high-water RSS of the memory the child had before `exec`
//! into its `ru_maxrss`, and `Command::spawn` (posix_spawn, `CLONE_VM`) runs that part in
//! the parent's memory, so the parent's own peak counts as the child's. Building the
//! 256 MiB file here would therefore inflate the measurement by the parent's ~512 MiB
//! (the matrix plus `write_npy`'s buffer). The file is written by a separate process
//! instead (this test binary, re-run as [`write_corpus_when_asked`]), and the test checks
//! that its own peak stayed small before measuring.

mod common;

use common::TempDir;
use hybridvec::{data, input, Matrix};
use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

/// Rows and dimension of the corpus: 87 382 × 768 f32 is 256 MiB of data.
const ROWS: usize = 87_382;
const DIM: usize = 768;

/// Headroom allowed over the file size: the binary, its libraries, thread stacks, the
/// row norms and the scores of one query all fit well inside it.
const HEADROOM: u64 = 64 << 20;

/// Set (to a path) only in the writer process: [`write_corpus_when_asked`] writes the
/// corpus there.
const WRITE_TO: &str = "HYBRIDVEC_TEST_WRITE_CORPUS_TO";

/// Runs `cmd` to completion and returns its exit status and peak RSS in bytes, from
/// `wait4` on exactly that child.
fn run_measuring_peak_rss(cmd: &mut Command) -> (libc::c_int, u64) {
    let child = cmd.spawn().expect("spawn hybridvec");
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct (integers and
    // `timeval`s only).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are live, writable locals of the types `wait4`
        // expects; `pid` is our own unreaped child, so no other process is affected.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::Interrupted,
            "wait4({pid}) failed: {err}"
        );
    }
    // The child is reaped; `child` must not be waited on again (dropping it does not).
    drop(child);
    // Linux reports ru_maxrss in KiB.
    let peak = u64::try_from(usage.ru_maxrss).expect("non-negative ru_maxrss") * 1024;
    (status, peak)
}

/// Not a check of its own: the corpus writer, run in a process of its own by
/// [`query_corpus_peak_memory_is_the_file_plus_64_mib`] so that building the file does not
/// count in the measured peak. Does nothing unless [`WRITE_TO`] is set.
#[test]
fn write_corpus_when_asked() {
    let Some(path) = std::env::var_os(WRITE_TO) else {
        return;
    };
    let m = Matrix::new(data::random_matrix(ROWS, DIM, 91), ROWS, DIM).unwrap();
    input::write_npy(Path::new(&path), &m).unwrap();
}

/// Writes the corpus to `path` from a separate process (this test binary, running only
/// [`write_corpus_when_asked`]).
fn write_corpus_in_another_process(path: &Path) {
    let exe = std::env::current_exe().expect("test binary path");
    let o = Command::new(exe)
        .args(["--exact", "write_corpus_when_asked", "--test-threads=1"])
        .env(WRITE_TO, OsString::from(path))
        .stdin(Stdio::null())
        .output()
        .expect("run the corpus writer");
    assert!(
        o.status.success(),
        "corpus writer: {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// This process's own peak RSS in bytes (`VmHWM`).
fn own_peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/self/status");
    kib * 1024
}

/// Writes the 256 MiB corpus in another process, runs `hybridvec ARGS` (with `{}` in the
/// args replaced by the corpus path) and checks it succeeds within the file's size plus
/// [`HEADROOM`] of peak RSS. Returns its standard output.
fn assert_peak_is_the_file_plus_headroom(name: &str, args: &[&str]) -> String {
    let dir = TempDir::in_target(name);
    let corpus_path = dir.path("corpus.npy");
    write_corpus_in_another_process(&corpus_path);
    let file_size = std::fs::metadata(&corpus_path).unwrap().len();
    assert!(file_size >= (ROWS * DIM * 4) as u64, "{file_size}");
    // The child's ru_maxrss is at least this process's peak (see the module docs): it
    // must be small for the measurement to be the child's.
    let parent = own_peak_rss();
    assert!(
        parent < HEADROOM,
        "this test process peaked at {} MiB, which would count as the child's",
        parent >> 20
    );
    let store_path = dir.path("store");
    let args: Vec<OsString> = args
        .iter()
        .map(|a| match *a {
            "{corpus}" => corpus_path.clone().into_os_string(),
            "{store}" => store_path.clone().into_os_string(),
            a => a.into(),
        })
        .collect();
    let stdout_path = dir.path("stdout.txt");
    let stderr_path = dir.path("stderr.txt");
    let (status, peak) = run_measuring_peak_rss(
        Command::new(common::exe())
            .args(&args)
            .env_remove("RUST_LOG")
            .env_remove("HYBRIDVEC_FORCE_SCALAR")
            .stdin(Stdio::null())
            // Files, not pipes: nothing has to drain them while we block in wait4.
            .stdout(std::fs::File::create(&stdout_path).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap()),
    );
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    eprintln!(
        "{name}: file {:.1} MiB, child peak RSS {:.1} MiB ({:.2}× the file)",
        mib(file_size),
        mib(peak),
        peak as f64 / file_size as f64
    );
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "hybridvec {args:?}: wait status {status:#x}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        peak <= file_size + HEADROOM,
        "{name}: peak RSS {:.1} MiB exceeds the {:.1} MiB file + {:.0} MiB",
        mib(peak),
        mib(file_size),
        mib(HEADROOM)
    );
    stdout
}

#[test]
fn query_corpus_peak_memory_is_the_file_plus_64_mib() {
    let out = assert_peak_is_the_file_plus_headroom(
        "input-memory-query",
        &[
            "query",
            "--corpus",
            "{corpus}",
            "--random",
            "1",
            "--k",
            "3",
            "--backend",
            "cpu",
        ],
    );
    assert!(out.starts_with("query 0: "), "unexpected output:\n{out}");
}

/// Ingest streams the file's rows into the store: its peak is the store's mapped pages
/// (the same bytes as the file), not a copy of the file besides them.
#[test]
fn ingest_input_peak_memory_is_the_file_plus_64_mib() {
    let out = assert_peak_is_the_file_plus_headroom(
        "input-memory-ingest",
        &[
            "ingest", "--store", "{store}", "--dim", "768", "--input", "{corpus}",
        ],
    );
    assert_eq!(out.trim(), format!("flushed {ROWS}"));
}

//! A store bigger than memory (issue 19): its f32 vectors are more than three times a
//! memory cgroup's limit, and queries inside that limit still get exact answers, reading
//! only the int8 tier and the candidates' rows.
//!
//! The test re-runs itself as a child inside a cgroup v1 memory controller
//! (`/sys/fs/cgroup/memory`, as root) with the store's pages dropped from the page cache,
//! so every page the child touches is charged to the limit. The child opens the store
//! (which checks every record's checksum, streaming the vectors through the limit once),
//! then answers queries one at a time and reports, per query, the major faults and the
//! bytes read from the disk. The parent checks every answer against the f64 reference, and
//! that the queries after the first read, at the median, less than a fiftieth of the
//! vectors' bytes and, each, less than an eighth (a full scan reads at least two thirds:
//! no more fits). That holds because a read-only store with a tier reads its vectors
//! without read-around or huge pages, and asks for each query's candidates' rows at once:
//! with the kernel's 2 MiB (or `read_ahead_kb`) around every scattered row, the rows read
//! push the tier itself out, and queries read hundreds of MiB. Without root or the
//! controller the test says so and checks nothing.

mod common;

use common::reference::cosine64;
use common::TempDir;
use hybridvec::WarmStore;
use hybridvec::{data, DevicePolicy, ExecutorConfig, HybridExecutor, MatrixRef, StoreConfig};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const TEST: &str = "queries_over_a_store_three_times_a_memory_limit_are_exact_inside_it";
const CHILD: &str = "HYBRIDVEC_BIG_STORE_CHILD";
const LIMIT: u64 = 256 << 20;
const DIM: usize = 768;
const QUERIES: u64 = 8;
const K: usize = 10;

fn cgroup_root() -> Option<PathBuf> {
    let root = PathBuf::from("/sys/fs/cgroup/memory");
    // SAFETY: geteuid has no preconditions and touches no memory.
    let is_root = unsafe { libc::geteuid() } == 0;
    (is_root && root.join("cgroup.procs").exists()).then_some(root)
}

fn query(j: u64) -> Vec<f32> {
    data::random_vec(DIM, 99, j)
}

/// `(major faults, bytes read from storage)` of this process so far.
fn io_counters() -> (u64, u64) {
    // SAFETY: getrusage fills the struct we pass; zeroed is a valid `rusage`.
    let faults = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u.ru_majflt as u64
    };
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let read = io
        .lines()
        .find_map(|l| l.strip_prefix("read_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (faults, read)
}

/// The child: joins the cgroup, opens the store, answers the queries one at a time.
fn child(dir: &Path, cgroup: &Path) {
    std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string()).unwrap();
    let store = WarmStore::open_read_only(dir).unwrap();
    assert!(store.has_int8_tier());
    let exec = HybridExecutor::new(ExecutorConfig {
        device: DevicePolicy::Cpu,
        ..Default::default()
    })
    .unwrap();
    for j in 0..QUERIES {
        let q = query(j);
        let before = io_counters();
        let (hits, report) = exec
            .top_k_store_with_report(MatrixRef::new(&q, 1, DIM).unwrap(), &store, K)
            .unwrap();
        let after = io_counters();
        let hits: Vec<(String, f32)> = hits[0].iter().map(|h| (h.id.clone(), h.score)).collect();
        println!(
            "RESULT {}",
            serde_json::json!({
                "hits": hits, "rescored": report.rescored,
                "major_faults": after.0 - before.0, "read_bytes": after.1 - before.1,
            })
        );
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let rss: Vec<&str> = status.lines().filter(|l| l.starts_with("Rss")).collect();
        eprintln!("RSS {}", rss.join(" ").replace('\t', " "));
    }
}

#[test]
fn queries_over_a_store_three_times_a_memory_limit_are_exact_inside_it() {
    if let Ok(dir) = std::env::var(CHILD) {
        let cgroup = std::env::var("HYBRIDVEC_BIG_STORE_CGROUP").unwrap();
        return child(Path::new(&dir), Path::new(&cgroup));
    }
    let Some(root) = cgroup_root() else {
        eprintln!("skipped: needs root and the cgroup v1 memory controller");
        return;
    };
    let rows = (3 * LIMIT) as usize / (DIM * 4);
    let vector_bytes = (rows * DIM * 4) as u64;
    let tmp = TempDir::in_target("bigger-than-memory");
    let dir = tmp.path("s");
    let mut s = WarmStore::create(&dir, StoreConfig::new(DIM)).unwrap();
    s.build_int8_tier().unwrap();
    (0..rows as u64).into_par_iter().for_each(|i| {
        s.put(&format!("r-{i}"), &data::random_vec(DIM, 5, i), b"")
            .unwrap();
    });
    s.flush().unwrap();
    drop(s);
    // Out of the page cache (the files are written back), so the child pays for each page.
    for e in std::fs::read_dir(&dir).unwrap() {
        let f = std::fs::File::open(e.unwrap().path()).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: advice on a descriptor we own; it touches no memory.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    let cgroup = root.join(format!("hybridvec-test-{}", std::process::id()));
    std::fs::create_dir_all(&cgroup).unwrap();
    std::fs::write(cgroup.join("memory.limit_in_bytes"), LIMIT.to_string()).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([TEST, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD, &dir)
        .env("HYBRIDVEC_BIG_STORE_CGROUP", &cgroup)
        .output()
        .unwrap();
    let peak: u64 = std::fs::read_to_string(cgroup.join("memory.max_usage_in_bytes"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = std::fs::remove_dir(&cgroup);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed ({:?}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(peak <= LIMIT, "peak {peak} over the limit {LIMIT}");
    let results: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| l.find("RESULT ").map(|i| &l[i + 7..]))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), QUERIES as usize, "{stdout}");

    // The f64 reference, outside the limit.
    let s = WarmStore::open_read_only(&dir).unwrap();
    let queries: Vec<Vec<f32>> = (0..QUERIES).map(query).collect();
    // By id number (the rows were put from several threads, in no fixed order).
    let mut scores: Vec<(usize, Vec<f64>)> = (0..rows as u64)
        .into_par_iter()
        .map(|row| {
            let rec = s.read_record(row).unwrap();
            let i = rec.id.strip_prefix("r-").unwrap().parse().unwrap();
            (
                i,
                queries
                    .iter()
                    .map(|q| cosine64(q, &rec.embedding))
                    .collect(),
            )
        })
        .collect();
    scores.sort_unstable_by_key(|s| s.0);
    let scores: Vec<Vec<f64>> = scores.into_iter().map(|s| s.1).collect();
    for (j, r) in results.iter().enumerate() {
        let hits = r["hits"].as_array().unwrap();
        assert_eq!(hits.len(), K);
        // Ties (within rounding) may come in either order: ids are not rows here.
        let mut order: Vec<usize> = (0..rows).collect();
        order.sort_by(|&a, &b| scores[b][j].total_cmp(&scores[a][j]).then(a.cmp(&b)));
        for (rank, h) in hits.iter().enumerate() {
            let id = h[0].as_str().unwrap();
            let row: usize = id.strip_prefix("r-").unwrap().parse().unwrap();
            let got = h[1].as_f64().unwrap();
            assert!((got - scores[row][j]).abs() < 1e-5, "query {j}: {id}");
            // The reference's row at this rank, unless the two tie within rounding.
            let want = order[rank];
            assert!(
                row == want || (scores[want][j] - scores[row][j]).abs() < 1e-6,
                "query {j} rank {rank}: {id}, reference r-{want}"
            );
        }
    }
    let read: Vec<u64> = results
        .iter()
        .map(|r| r["read_bytes"].as_u64().unwrap())
        .collect();
    let faults: Vec<u64> = results
        .iter()
        .map(|r| r["major_faults"].as_u64().unwrap())
        .collect();
    let rescored: Vec<u64> = results
        .iter()
        .map(|r| r["rescored"].as_u64().unwrap())
        .collect();
    let child_err = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "child: {}",
        child_err
            .lines()
            .rfind(|l| l.starts_with("RSS"))
            .unwrap_or("")
    );
    eprintln!(
        "{rows} rows × {DIM}: vectors {} MiB, limit {} MiB, peak {} MiB; per query: read {:?} bytes, major faults {:?}, rescored {:?}",
        vector_bytes >> 20,
        LIMIT >> 20,
        peak >> 20,
        read,
        faults,
        rescored
    );
    // After the first query (which reads the tier in), a query reads its candidates' rows:
    // a full scan would read at least two thirds of the vectors, which do not fit.
    let mut later = read[1..].to_vec();
    later.sort_unstable();
    assert!(
        later[later.len() / 2] < vector_bytes / 50,
        "median read per query {} of {vector_bytes}: {read:?}",
        later[later.len() / 2]
    );
    assert!(later.iter().all(|&b| b < vector_bytes / 8), "{read:?}");
}

//! Warm-tier benchmarks: `warm_put`, `warm_get`, `warm_open`, `warm_flush` and
//! `warm_search` (top_k_store against top_k on the same rows in memory).
//!
//! Besides criterion's figures it prints the get latency percentiles while two writers
//! run (`warm_get/p99_under_2_writers`), which criterion's mean does not show.
//! Stores live under `HYBRIDVEC_BENCH_DIR` (default: the system temp dir).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hybridvec::{data, Corpus, ExecutorConfig, HybridExecutor, MatrixRef, StoreConfig, WarmStore};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DIM: usize = 768;

fn bench_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("HYBRIDVEC_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let p = base.join(format!("hybridvec-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// A pool of distinct embeddings, generated once so the timed loops only store.
fn pool() -> Vec<f32> {
    data::random_matrix(1024, DIM, 3)
}

fn fill(store: &WarmStore, pool: &[f32], from: u64, to: u64, threads: u64) {
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let mut i = from + t;
                while i < to {
                    let v = &pool[(i as usize % 1024) * DIM..][..DIM];
                    store.put(&format!("rec-{i}"), v, b"content").unwrap();
                    i += threads;
                }
            });
        }
    });
}

fn warm_put(c: &mut Criterion) {
    let pool = pool();
    let per_iter = 20_000u64;
    let mut g = c.benchmark_group("warm_put");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Bytes(per_iter * DIM as u64 * 4));
    g.bench_function("2_threads_dim768", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = bench_dir("put");
                let store = WarmStore::create(&dir, StoreConfig::new(DIM)).unwrap();
                // Pre-grow so the timed part is the put path, as in a long-running store.
                fill(&store, &pool, 0, per_iter, 2);
                let t = Instant::now();
                fill(&store, &pool, per_iter, 2 * per_iter, 2);
                total += t.elapsed();
                drop(store);
                let _ = std::fs::remove_dir_all(&dir);
            }
            total
        })
    });
    g.finish();
}

fn warm_get(c: &mut Criterion) {
    let pool = pool();
    let n = 100_000u64;
    let dir = bench_dir("get");
    let store = Arc::new(WarmStore::create(&dir, StoreConfig::new(DIM)).unwrap());
    fill(&store, &pool, 0, n, 2);
    let mut g = c.benchmark_group("warm_get");
    let mut rng = data::Rng::new(5, 0);
    g.bench_function("by_id_dim768", |b| {
        b.iter(|| {
            store
                .get(&format!("rec-{}", rng.below(n)))
                .unwrap()
                .unwrap()
        })
    });
    g.finish();

    // Latency percentiles of get while two writers put as fast as they can.
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(n));
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop, next, pool) =
                (store.clone(), stop.clone(), next.clone(), pool.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    store
                        .put(
                            &format!("rec-{i}"),
                            &pool[(i as usize % 1024) * DIM..][..DIM],
                            b"w",
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    let mut lat: Vec<u64> = Vec::with_capacity(200_000);
    let ids: Vec<String> = (0..200_000)
        .map(|_| format!("rec-{}", rng.below(n)))
        .collect();
    for id in &ids {
        let t = Instant::now();
        std::hint::black_box(store.get(id).unwrap());
        lat.push(t.elapsed().as_nanos() as u64);
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)] as f64 / 1e3;
    println!(
        "warm_get/p99_under_2_writers: p50 {:.2} µs  p99 {:.2} µs  p99.9 {:.2} µs  ({} gets, {} puts meanwhile)",
        p(0.5),
        p(0.99),
        p(0.999),
        lat.len(),
        next.load(Ordering::Relaxed) - n
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn warm_flush_and_open(c: &mut Criterion) {
    let pool = pool();
    // 1 GiB of new vectors, then flush (timed once: it is a single multi-second call).
    let gib_rows = (1u64 << 30) / (DIM as u64 * 4);
    let dir = bench_dir("flush");
    let store = WarmStore::create(&dir, StoreConfig::new(DIM)).unwrap();
    fill(&store, &pool, 0, gib_rows, 2);
    let t = Instant::now();
    store.flush().unwrap();
    println!(
        "warm_flush/1GiB: {:.3} s for {gib_rows} rows ({:.2} GB/s)",
        t.elapsed().as_secs_f64(),
        (1u64 << 30) as f64 / t.elapsed().as_secs_f64() / 1e9
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);

    let rows: u64 = std::env::var("HYBRIDVEC_BENCH_OPEN_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = bench_dir("open");
    let store = WarmStore::create(&dir, StoreConfig::new(DIM)).unwrap();
    fill(&store, &pool, 0, rows, 2);
    store.flush().unwrap();
    drop(store);
    let mut g = c.benchmark_group("warm_open");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function(format!("{rows}_records_dim768"), |b| {
        b.iter(|| WarmStore::open_read_only(&dir).unwrap())
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn warm_search(c: &mut Criterion) {
    let n = 100_000usize;
    let rows = data::random_matrix(n, DIM, 7);
    let dir = bench_dir("search");
    let store = WarmStore::create(&dir, StoreConfig::new(DIM)).unwrap();
    for i in 0..n {
        store
            .put(&format!("rec-{i}"), &rows[i * DIM..(i + 1) * DIM], b"")
            .unwrap();
    }
    store.flush().unwrap();
    let corpus = Corpus::new(rows, DIM).unwrap();
    let exec = HybridExecutor::new(ExecutorConfig::default()).unwrap();
    let mut g = c.benchmark_group("warm_search");
    g.sample_size(10);
    for q in [1usize, 64] {
        let queries = data::random_matrix(q, DIM, 8);
        let m = MatrixRef::new(&queries, q, DIM).unwrap();
        g.bench_function(format!("top_k_store_{q}x100000"), |b| {
            b.iter(|| exec.top_k_store(m, &store, 10).unwrap())
        });
        g.bench_function(format!("top_k_memory_{q}x100000"), |b| {
            b.iter(|| exec.top_k(m, &corpus, 10).unwrap())
        });
    }
    g.finish();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(
    benches,
    warm_put,
    warm_get,
    warm_flush_and_open,
    warm_search
);
criterion_main!(benches);

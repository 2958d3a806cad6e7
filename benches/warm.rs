//! Warm-tier benchmarks: `warm_put`, `warm_get`, `warm_flush`, `warm_open` and
//! `warm_search` (top_k_store against top_k on the same rows in memory).
//!
//! `warm_get/under_2_writers` also prints the percentiles of every get's latency, which
//! criterion's mean does not show. Each group builds its data only when the filter
//! selects it.
//! Stores live under `HYBRIDVEC_BENCH_DIR` (default: the system temp dir).

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use hybridvec::{data, Corpus, ExecutorConfig, HybridExecutor, MatrixRef, StoreConfig, WarmStore};
use std::cell::OnceCell;
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
    let mut store: Option<Arc<WarmStore>> = None;
    let mut fill_once = || {
        store
            .get_or_insert_with(|| {
                let s = Arc::new(WarmStore::create(&dir, StoreConfig::new(DIM)).unwrap());
                fill(&s, &pool, 0, n, 2);
                s
            })
            .clone()
    };
    let ids: Vec<String> = {
        let mut rng = data::Rng::new(5, 0);
        (0..200_000)
            .map(|_| format!("rec-{}", rng.below(n)))
            .collect()
    };
    let mut g = c.benchmark_group("warm_get");
    g.bench_function("by_id_dim768", |b| {
        let store = fill_once();
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % ids.len();
            store.get(&ids[i]).unwrap().unwrap()
        })
    });

    // Gets while two writers put as fast as they can. Criterion times the gets; every
    // get's own latency is kept too, for the percentiles printed at the end.
    let mut lat: Vec<u64> = Vec::new();
    let mut puts = 0u64;
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("under_2_writers", |b| {
        let store = fill_once();
        b.iter_custom(|iters| {
            let stop = Arc::new(AtomicBool::new(false));
            let next = Arc::new(AtomicU64::new(n + puts));
            let writers: Vec<_> = (0..2)
                .map(|_| {
                    let (store, stop, next, pool) =
                        (store.clone(), stop.clone(), next.clone(), pool.clone());
                    std::thread::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let v = &pool[(i as usize % 1024) * DIM..][..DIM];
                            store.put(&format!("rec-{i}"), v, b"w").unwrap();
                        }
                    })
                })
                .collect();
            let mut total = Duration::ZERO;
            for k in 0..iters as usize {
                let t = Instant::now();
                std::hint::black_box(store.get(&ids[k % ids.len()]).unwrap());
                let e = t.elapsed();
                total += e;
                lat.push(e.as_nanos() as u64);
            }
            stop.store(true, Ordering::Relaxed);
            for w in writers {
                w.join().unwrap();
            }
            puts = next.load(Ordering::Relaxed) - n;
            total
        })
    });
    g.finish();
    if !lat.is_empty() {
        lat.sort_unstable();
        let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)] as f64 / 1e3;
        println!(
            "warm_get/under_2_writers latency: p50 {:.2} µs  p99 {:.2} µs  p99.9 {:.2} µs  ({} gets)",
            p(0.5),
            p(0.99),
            p(0.999),
            lat.len(),
        );
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn warm_flush(c: &mut Criterion) {
    let pool = pool();
    // 1 GiB of new vectors per iteration; only the flush is timed.
    let gib_rows = (1u64 << 30) / (DIM as u64 * 4);
    let mut g = c.benchmark_group("warm_flush");
    // One flush per sample: each costs a 1 GiB fill outside the clock.
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Bytes(gib_rows * DIM as u64 * 4));
    g.bench_function("1GiB_dim768", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = bench_dir("flush");
                let store = WarmStore::create(&dir, StoreConfig::new(DIM)).unwrap();
                fill(&store, &pool, 0, gib_rows, 2);
                let t = Instant::now();
                store.flush().unwrap();
                total += t.elapsed();
                drop(store);
                let _ = std::fs::remove_dir_all(&dir);
            }
            total
        })
    });
    g.finish();
}

fn warm_open(c: &mut Criterion) {
    let rows: u64 = std::env::var("HYBRIDVEC_BENCH_OPEN_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = bench_dir("open");
    let mut built = false;
    let mut g = c.benchmark_group("warm_open");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function(format!("{rows}_records_dim768"), |b| {
        if !built {
            let store = WarmStore::create(&dir, StoreConfig::new(DIM)).unwrap();
            fill(&store, &pool(), 0, rows, 2);
            store.flush().unwrap();
            built = true;
        }
        b.iter(|| WarmStore::open_read_only(&dir).unwrap())
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn warm_search(c: &mut Criterion) {
    let n = 100_000usize;
    let dir = bench_dir("search");
    let data: OnceCell<(WarmStore, Corpus)> = OnceCell::new();
    let build = || {
        data.get_or_init(|| {
            let rows = data::random_matrix(n, DIM, 7);
            let store = WarmStore::create(&dir, StoreConfig::new(DIM)).unwrap();
            for i in 0..n {
                store
                    .put(&format!("rec-{i}"), &rows[i * DIM..(i + 1) * DIM], b"")
                    .unwrap();
            }
            store.flush().unwrap();
            (store, Corpus::new(rows, DIM).unwrap())
        })
    };
    let exec = HybridExecutor::new(ExecutorConfig::default()).unwrap();
    let mut g = c.benchmark_group("warm_search");
    g.sample_size(20);
    for q in [1usize, 64] {
        let queries = data::random_matrix(q, DIM, 8);
        let m = MatrixRef::new(&queries, q, DIM).unwrap();
        // Interleaved per sample would be fairer still; criterion runs them back to back.
        g.bench_function(format!("top_k_store_{q}x100000"), |b| {
            let (store, _) = build();
            b.iter(|| exec.top_k_store(m, store, 10).unwrap())
        });
        g.bench_function(format!("top_k_memory_{q}x100000"), |b| {
            let (_, corpus) = build();
            b.iter(|| exec.top_k(m, corpus, 10).unwrap())
        });
    }
    g.finish();
    // Back-to-back groups see different machine noise, so the ratio the acceptance asks
    // for is also taken from calls that alternate, store then memory, on the same queries.
    if let Some((store, corpus)) = data.get() {
        for q in [1usize, 64] {
            let queries = data::random_matrix(q, DIM, 9);
            let m = MatrixRef::new(&queries, q, DIM).unwrap();
            let (mut ts, mut tm) = (Vec::new(), Vec::new());
            for _ in 0..21 {
                let t = Instant::now();
                std::hint::black_box(exec.top_k_store(m, store, 10).unwrap());
                ts.push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                std::hint::black_box(exec.top_k(m, corpus, 10).unwrap());
                tm.push(t.elapsed().as_secs_f64() * 1e3);
            }
            ts.sort_by(f64::total_cmp);
            tm.sort_by(f64::total_cmp);
            println!(
                "warm_search/interleaved Q={q}: store median {:.3} ms, memory median {:.3} ms, ratio {:.3}",
                ts[10],
                tm[10],
                ts[10] / tm[10]
            );
        }
    }
    drop(data);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(
    benches,
    warm_put,
    warm_get,
    warm_flush,
    warm_open,
    warm_search
);
criterion_main!(benches);

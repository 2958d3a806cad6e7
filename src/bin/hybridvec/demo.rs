//! `hybridvec demo`: the main job end to end on a temporary store: ingest, reopen, search
//! (the executor picks the backend per call) with each metric, check every answer against
//! an f64 reference, and remove the store, also after Ctrl-C.

use crate::out::outln;
use crate::{executor, progress, random_queries, signals, Backend};
use hybridvec::{
    data, BackendKind, CudaStatus, Error, Hit, MatrixRef, Metric, SearchOptions, StoreHit,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub(crate) fn demo() -> Result<(), Error> {
    use hybridvec::{StoreConfig, WarmStore};
    use rayon::prelude::*;
    let dir = std::env::temp_dir().join(format!("{DEMO_PREFIX}{}", std::process::id()));
    // Before any thread starts, so every thread inherits the blocked signals.
    let removed = dir.clone();
    signals::on_interrupt(move || {
        signals::remove_dir_retrying(&removed);
        Some(format!("removed {}", removed.display()))
    });
    remove_stale_demo_stores();
    let exec = executor(Backend::Auto)?;
    let caps = exec.capabilities();
    outln!(
        "hybridvec demo: {} ({} threads, {})",
        caps.cpu_model,
        caps.threads,
        caps.simd.name()
    );
    if let CudaStatus::Unavailable { reason } = &caps.cuda {
        outln!("CUDA unavailable: {reason}; the CPU serves every call.");
    }
    let (seed, d) = (7u64, 768usize);
    let _ = std::fs::remove_dir_all(&dir);
    let _cleanup = RemoveOnDrop(dir.clone());
    // The store is filled in two steps (100k rows, then 150k more), so the same store
    // serves the 100k workloads and then the scaled gpu-large one after growing.
    let ingest = |from: u64, to: u64| -> Result<f64, Error> {
        let store = if from == 0 {
            WarmStore::create(&dir, StoreConfig::new(d))?
        } else {
            WarmStore::open(&dir)?
        };
        let t = Instant::now();
        let p = progress(true, "ingesting into the warm store");
        (from..to).into_par_iter().try_for_each(|i| {
            let (id, emb, content) = data::random_record(seed, i, d);
            store.put(&id, &emb, &content).map(|_| ())
        })?;
        store.flush()?;
        p.finish_and_clear();
        Ok(t.elapsed().as_secs_f64())
    };
    // The public workloads; gpu-large is scaled from 1M to 250k corpus rows so the demo
    // finishes in well under a minute on two cores.
    let workloads = [
        ("single", 1, 100_000u64, 10),
        ("small-batch", 64, 100_000, 10),
        ("large-batch", 1024, 100_000, 10),
        ("gpu-large (N scaled 1M→250k)", 1024, 250_000, 10),
    ];
    let mut stored = 0u64;
    let mut header_printed = false;
    for (name, q, n, k) in workloads {
        if stored < n {
            let secs = ingest(stored, n)?;
            outln!(
                "warm store {}: put and flushed rows {stored}..{n} in {:.2} s ({:.2} GB/s of vectors)",
                dir.display(),
                secs,
                ((n - stored) as f64 * d as f64 * 4.0) / secs / 1e9
            );
            stored = n;
            header_printed = false;
        }
        // Reopened read-only each time: what is searched is what was made durable.
        let store = WarmStore::open_read_only(&dir)?;
        if !header_printed {
            outln!(
                "{:<30} {:>16} {:>8} {:>11} {:>9}",
                "workload",
                "Q×N×D",
                "backend",
                "median ms",
                "GFLOP/s"
            );
            header_printed = true;
        }
        let qdata = random_queries(q, d, seed)?;
        let queries = MatrixRef::new(&qdata, q, d)?;
        let (mut hits, _) = exec.top_k_store_with_report(queries, &store, k)?; // warm-up
        let reps = if q as u64 * n >= 100_000_000 { 3 } else { 9 };
        let mut times = Vec::new();
        let mut served = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            let (h, report) = exec.top_k_store_with_report(queries, &store, k)?;
            times.push(t.elapsed().as_secs_f64());
            hits = h;
            served.push(report.backend);
        }
        // The backend that served the timed runs ("mixed" when `auto` explored both).
        let backend = match served[..] {
            [first, ..] if served.iter().all(|&b| b == first) => match first {
                BackendKind::Cpu => "cpu",
                BackendKind::Gpu => "gpu",
            },
            _ => "mixed",
        };
        times.sort_by(f64::total_cmp);
        let med = times[reps / 2];
        outln!(
            "{:<30} {:>16} {:>8} {:>11.2} {:>9.1}",
            name,
            format!("{q}×{n}×{d}"),
            backend,
            med * 1e3,
            2.0 * (q as f64 * n as f64 * d as f64) / med / 1e9
        );
        if name == "small-batch" {
            let corpus = store.corpus();
            let view = corpus.view().ok_or(Error::EmptyInput {
                what: "store has no records",
            })?;
            check_against_f64(
                &qdata[..d],
                view.matrix(),
                &row_hits(&hits[0]),
                k,
                Metric::Cosine,
            )?;
            let top: Vec<String> = hits[0]
                .iter()
                .take(3)
                .map(|h| format!("{} {:.4}", h.id, h.score))
                .collect();
            outln!(
                "{:<30} query 0 top-3: {} (matches an f64 reference)",
                "",
                top.join(", ")
            );
            // The same workload under the other metrics (the store records no metric).
            for metric in [Metric::InnerProduct, Metric::L2] {
                let options = SearchOptions::new(metric);
                let mut times = Vec::new();
                let mut hits = Vec::new();
                let mut served = BackendKind::Cpu;
                for _ in 0..4 {
                    let t = Instant::now();
                    let report;
                    (hits, report) = exec.search_store_with_report(queries, &store, k, &options)?;
                    times.push(t.elapsed().as_secs_f64());
                    served = report.backend;
                }
                // The first run is the warm-up.
                times.remove(0);
                times.sort_by(f64::total_cmp);
                let med = times[times.len() / 2];
                check_against_f64(&qdata[..d], view.matrix(), &row_hits(&hits[0]), k, metric)?;
                outln!(
                    "{:<30} {:>16} {:>8} {:>11.2} {:>9.1}   top-1 {} {} {:.4} (matches an f64 reference)",
                    format!("  --metric {metric}"),
                    format!("{q}×{n}×{d}"),
                    served.as_str(),
                    med * 1e3,
                    2.0 * (q as f64 * n as f64 * d as f64) / med / 1e9,
                    hits[0][0].id,
                    if metric == Metric::L2 { "distance²" } else { "score" },
                    hits[0][0].score
                );
            }
        }
    }
    Ok(())
}

/// The demo's temporary stores are `$TMPDIR/hybridvec-demo-<pid>`.
const DEMO_PREFIX: &str = "hybridvec-demo-";

/// Removes demo stores left by demos that were killed outright (`kill -9`): those whose
/// process no longer exists.
fn remove_stale_demo_stores() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DEMO_PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Removes the demo's temporary store however the demo ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Recomputes one query's top-k under `metric` in f64 and checks the engine's hits
/// against it. Cosine is ranked in f32: each score within 1e-5 of the reference score of
/// the same row, and each rank holding the reference's row unless the two rows' reference
/// scores are within 2e-5 (a near-tie that f32 rounding may order either way). Inner
/// product and L2 are exact: the reference's rows, and scores within f32 rounding.
/// A store's hits as rows of its corpus view, for [`check_against_f64`].
fn row_hits(hits: &[StoreHit]) -> Vec<Hit> {
    hits.iter()
        .map(|h| Hit {
            index: h.row as usize,
            score: h.score,
        })
        .collect()
}

fn check_against_f64(
    q: &[f32],
    m: MatrixRef<'_>,
    hits: &[Hit],
    k: usize,
    metric: Metric,
) -> Result<(), Error> {
    let qn: f64 = q.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let by_row: Vec<f64> = (0..m.rows())
        .map(|i| {
            let r = m.row(i);
            let dot: f64 = r.iter().zip(q).map(|(&a, &b)| a as f64 * b as f64).sum();
            match metric {
                Metric::Cosine => {
                    let cn: f64 = r.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
                    dot / (qn * cn)
                }
                Metric::InnerProduct => dot,
                Metric::L2 => -r
                    .iter()
                    .zip(q)
                    .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                    .sum::<f64>(),
            }
        })
        .collect();
    let mut ranked: Vec<usize> = (0..m.rows()).collect();
    ranked.sort_by(|&a, &b| by_row[b].total_cmp(&by_row[a]).then(a.cmp(&b)));
    if hits.len() != k.min(m.rows()) {
        return Err(Error::InvalidConfig(format!(
            "demo self-check failed: {} hits, expected {k}",
            hits.len()
        )));
    }
    let exact = metric != Metric::Cosine;
    for (h, &want) in hits.iter().zip(&ranked) {
        let own = by_row[h.index];
        let reported = if metric == Metric::L2 {
            -(h.score as f64)
        } else {
            h.score as f64
        };
        let (score_tol, tie_tol) = if exact {
            (1e-6 * own.abs() + 1e-30, 1e-12 * own.abs() + 1e-30)
        } else {
            (1e-5, 2e-5)
        };
        let score_ok = (reported - own).abs() <= score_tol;
        let rank_ok = h.index == want || (own - by_row[want]).abs() <= tie_tol;
        if !score_ok || !rank_ok {
            return Err(Error::InvalidConfig(format!(
                "demo self-check failed ({metric}): got row {} score {:.6}, reference row {} score {:.6}",
                h.index, h.score, want, by_row[want]
            )));
        }
    }
    Ok(())
}

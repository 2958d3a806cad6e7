//! The store commands: `ingest`, `get`, `verify`, and `query --store`.

use hybridvec::{data, input, Error, HybridExecutor, Matrix, StoreConfig, WarmStore};
use indicatif::ProgressBar;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where `ingest` takes its records from.
pub enum Source {
    /// `--random N --seed S`: record `i` is `data::random_record(S, i, dim)`.
    Random { count: u64, seed: u64 },
    /// `--input FILE`: row `i` becomes record `rec-{i}` with empty content.
    File(PathBuf),
}

/// Opens the store in `dir`, creating it with `dim` when there is none.
fn open_or_create(dir: &Path, dim: usize) -> Result<WarmStore, Error> {
    if dir.join("store.hv").exists() {
        WarmStore::open_with_dim(dir, dim)
    } else {
        WarmStore::create(dir, StoreConfig::new(dim))
    }
}

/// Ingests records, flushing every `flush_every` records (and at the end). After each
/// durable flush it prints `flushed <count>` on its own line and flushes stdout, so a
/// killed ingest can be checked against exactly what it acknowledged.
pub fn ingest(
    dir: &Path,
    dim: usize,
    source: Source,
    flush_every: Option<u64>,
    quiet: bool,
) -> Result<(), Error> {
    let store = open_or_create(dir, dim)?;
    let file_rows = match &source {
        Source::File(p) => {
            let m = input::read_matrix(p)?;
            if m.cols() != dim {
                return Err(Error::DimensionMismatch {
                    expected: dim,
                    got: m.cols(),
                });
            }
            Some(m)
        }
        Source::Random { .. } => None,
    };
    let total = match (&source, &file_rows) {
        (Source::Random { count, .. }, _) => *count,
        (_, Some(m)) => m.rows() as u64,
        _ => 0,
    };
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    let mut out = std::io::stdout().lock();
    let mut announce = |n: u64| -> Result<(), Error> {
        writeln!(out, "flushed {n}")?;
        out.flush()?;
        Ok(())
    };
    for i in 0..total {
        match (&source, &file_rows) {
            (Source::Random { seed, .. }, _) => {
                let (id, emb, content) = data::random_record(*seed, i, dim);
                store.put(&id, &emb, &content)?;
            }
            (_, Some(m)) => {
                store.put(&format!("rec-{i}"), m.row(i as usize), &[])?;
            }
            _ => unreachable!("source and rows agree"),
        }
        bar.inc(1);
        if flush_every.is_some_and(|m| m > 0 && (i + 1) % m == 0) {
            store.flush()?;
            announce(i + 1)?;
        }
    }
    store.flush()?;
    bar.finish_and_clear();
    if flush_every.is_none_or(|m| m == 0 || total % m != 0) || total == 0 {
        announce(total)?;
    }
    Ok(())
}

/// Prints one record. Returns `Ok(false)` when there is none.
pub fn get(dir: &Path, id: &str, json: bool) -> Result<bool, Error> {
    let store = WarmStore::open_read_only(dir)?;
    let Some(r) = store.get(id)? else {
        if json {
            println!("null");
        } else {
            eprintln!("no record with id {id:?}");
        }
        return Ok(false);
    };
    if json {
        let v = serde_json::json!({
            "id": r.id, "row": r.row, "embedding": r.embedding,
            "content": String::from_utf8_lossy(&r.content), "content_len": r.content.len(),
        });
        println!("{v}");
    } else {
        println!("id:        {}", r.id);
        println!("row:       {}", r.row);
        let head: Vec<String> = r
            .embedding
            .iter()
            .take(8)
            .map(|v| format!("{v:.5}"))
            .collect();
        println!(
            "embedding: [{}{}] (dim {})",
            head.join(", "),
            if r.embedding.len() > 8 { ", …" } else { "" },
            r.embedding.len()
        );
        println!(
            "content:   {:?} ({} bytes)",
            String::from_utf8_lossy(&r.content),
            r.content.len()
        );
    }
    Ok(true)
}

/// Opens the store (which checks every committed record's checksum) and, with a seed,
/// compares every live record with what `ingest --random` would have written. Returns
/// whether everything checked out.
pub fn verify(dir: &Path, expect_seed: Option<u64>, json: bool) -> Result<bool, Error> {
    let mut errors: Vec<String> = Vec::new();
    let mut records = 0u64;
    match WarmStore::open_read_only(dir) {
        Err(e @ (Error::CorruptStore { .. } | Error::UnsupportedVersion { .. })) => {
            errors.push(e.to_string())
        }
        Err(e) => return Err(e),
        Ok(store) => {
            records = store.len();
            let corpus = store.corpus();
            for row in (0..corpus.rows()).filter(|&r| corpus.is_live(r)) {
                let rec = match store.read_record(row as u64) {
                    Ok(r) => r,
                    Err(e) => {
                        errors.push(e.to_string());
                        continue;
                    }
                };
                let Some(seed) = expect_seed else { continue };
                let Some(i) = rec
                    .id
                    .strip_prefix("rec-")
                    .and_then(|n| n.parse::<u64>().ok())
                else {
                    errors.push(format!("row {row}: id {:?} is not rec-<i>", rec.id));
                    continue;
                };
                let (_, emb, content) = data::random_record(seed, i, store.dim());
                let same_bits = emb
                    .iter()
                    .map(|v| v.to_bits())
                    .eq(rec.embedding.iter().map(|v| v.to_bits()));
                if !same_bits || content != rec.content {
                    errors.push(format!("row {row}: {} differs from seed {seed}", rec.id));
                }
            }
        }
    }
    let ok = errors.is_empty();
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": ok, "records": records, "errors": errors})
        );
    } else {
        println!(
            "{} records, {}",
            records,
            if ok {
                "ok".to_string()
            } else {
                format!("{} errors", errors.len())
            }
        );
        for e in &errors {
            println!("error: {e}");
        }
    }
    Ok(ok)
}

/// `query --store`: top-k over the store's records, hits by id.
pub fn query(
    exec: &HybridExecutor,
    dir: &Path,
    queries: &Matrix,
    k: usize,
    json: bool,
) -> Result<(), Error> {
    let store = WarmStore::open_read_only(dir)?;
    let hits = exec.top_k_store(queries.view(), &store, k)?;
    crate::print_hits(
        hits.into_iter()
            .map(|hs| hs.into_iter().map(|h| (h.id, h.score)).collect()),
        "id",
        json,
    );
    Ok(())
}

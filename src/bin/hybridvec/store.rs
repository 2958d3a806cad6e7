//! The store commands: `ingest`, `get`, `verify`, and `query --store`.

use crate::out::outln;
use hybridvec::input::VectorFile;
use hybridvec::{
    data, DamagedRecord, ElementType, Error, HybridExecutor, Matrix, Recovery, StoreConfig,
    WarmStore, MAX_NORM, MAX_STORE_DIM, MIN_NORM,
};
use indicatif::ProgressBar;
use parking_lot::Mutex;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Where `ingest` takes its records from.
pub enum Source {
    /// `--random N --seed S`: record `i` is `data::random_record(S, i, dim)`.
    Random { count: u64, seed: u64 },
    /// `--input FILE`: row `i` becomes record `rec-{i}` with empty content.
    File(PathBuf),
}

/// How `ingest` writes.
pub struct IngestOptions {
    /// Flush every this many records (and print `flushed <count>` after each flush).
    pub flush_every: Option<u64>,
    /// Build the store's int8 scan tier first (when it has none).
    pub int8_tier: bool,
    /// No progress bar.
    pub quiet: bool,
}

/// Opens the store in `dir`, creating it with `dim` (and `element`, f32 when not given)
/// when there is none. Returns whether this call created it. A store another process
/// created a moment ago is opened instead. An `element` other than an existing store's
/// is an error naming both.
fn open_or_create(
    dir: &Path,
    dim: usize,
    element: Option<ElementType>,
) -> Result<(WarmStore, bool), Error> {
    if !dir.join("store.hv").exists() {
        let config = StoreConfig::new(dim);
        match WarmStore::create_with_element(dir, config, element.unwrap_or_default()) {
            Ok(s) => return Ok((s, true)),
            Err(Error::StoreExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let store = match WarmStore::open_with_dim(dir, dim) {
        Ok(s) => s,
        Err(Error::DimensionMismatch { expected, got }) => {
            return Err(Error::InvalidConfig(format!(
                "--dim is {expected}, but the store {} has dimension {got}",
                dir.display()
            )))
        }
        Err(e) => return Err(e),
    };
    match element {
        Some(e) if e != store.element_type() => Err(Error::InvalidConfig(format!(
            "--dtype is {e}, but the store {} keeps {} vectors",
            dir.display(),
            store.element_type()
        ))),
        _ => Ok((store, false)),
    }
}

/// Checks one input row as `put` into a store of `element` would, naming the file and
/// the row.
fn check_row(path: &Path, i: usize, row: &[f32], element: ElementType) -> Result<(), Error> {
    let bad = |reason: String| Error::BadInputFile {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(col) = row.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!(
            "row {i}, column {col} is {} (NaN and infinity cannot be stored)",
            row[col]
        )));
    }
    if let Some(col) = row
        .iter()
        .position(|&v| element.stored_value(v).is_infinite())
    {
        return Err(bad(format!(
            "row {i}, column {col} is {}, out of {element} range (f16 holds up to 65504)",
            row[col]
        )));
    }
    let norm = row
        .iter()
        .map(|&v| element.stored_value(v) as f64)
        .map(|v| v * v)
        .sum::<f64>()
        .sqrt();
    if norm != 0.0 && !(MIN_NORM..=MAX_NORM).contains(&norm) {
        return Err(bad(format!(
            "row {i} has norm {norm:e}, outside [{MIN_NORM:e}, {MAX_NORM:e}] (zero rows are fine)"
        )));
    }
    Ok(())
}

/// Opens an input file and checks every row of it against `dim` before anything is
/// created, so a bad file changes nothing. Returns it reopened at its first row.
fn checked_input(path: &Path, dim: usize, element: ElementType) -> Result<VectorFile, Error> {
    let mut f = VectorFile::open(path)?;
    let bad = |reason: String| Error::BadInputFile {
        path: path.to_path_buf(),
        reason,
    };
    if f.cols() != dim {
        return Err(bad(format!(
            "rows have dimension {}, but --dim is {dim}",
            f.cols()
        )));
    }
    if f.rows() == 0 {
        return Err(bad("has no rows".into()));
    }
    let mut row = vec![0.0f32; dim];
    let mut i = 0;
    while f.read_row(&mut row)? {
        check_row(path, i, &row, element)?;
        i += 1;
    }
    VectorFile::open(path)
}

/// Refuses `--random N` when N records cannot fit on the filesystem, before anything is
/// created (a lower bound: vector, metadata and a short id per record).
fn check_disk_space(dir: &Path, count: u64, dim: usize, element: ElementType) -> Result<(), Error> {
    let per_record = (dim * element.bytes()) as u64 + 32 + 8;
    let need = count.saturating_mul(per_record);
    let Some(free) = free_bytes(dir) else {
        return Ok(());
    };
    if need > free {
        return Err(Error::InvalidConfig(format!(
            "--random {count} at --dim {dim} needs at least {need} bytes, but the filesystem of {} has {free} bytes free",
            dir.display()
        )));
    }
    Ok(())
}

/// Free bytes on the filesystem holding `dir` (or its nearest existing ancestor).
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let existing = dir.ancestors().find(|p| p.exists())?;
    let existing = if existing.as_os_str().is_empty() {
        Path::new(".")
    } else {
        existing
    };
    let c = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a NUL-terminated path and `st` a plain struct statvfs fills in.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; statvfs writes only into `st`.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Removes what a failed `ingest` created: the whole directory when it made it, else only
/// the store's own files. Passes repeat while files keep appearing: on a signal, the
/// interrupted writer may still be growing the store.
fn remove_created(dir: &Path, made_dir: bool) {
    if made_dir {
        crate::signals::remove_dir_retrying(dir);
        return;
    }
    for _ in 0..500 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name == "store.hv"
                || name == "LOCK"
                || (name.ends_with(".chunk")
                    && ["vec-", "meta-", "blob-"]
                        .iter()
                        .any(|p| name.starts_with(p)))
                || (name.starts_with('.') && name.ends_with(".tmp"));
            if ours && std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        if removed == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Ingests records, flushing every `flush_every` records (and at the end). After each
/// durable flush it prints `flushed <count>` on its own line and flushes stdout, so a
/// killed ingest can be checked against exactly what it acknowledged.
///
/// The input is checked whole before anything is created. When the ingest fails anyway
/// (a full disk, say) before its first flush, what it created is removed again.
pub fn ingest(
    dir: &Path,
    (dim, element): (usize, Option<ElementType>),
    source: Source,
    options: IngestOptions,
) -> Result<(), Error> {
    let IngestOptions {
        flush_every,
        int8_tier,
        quiet,
    } = options;
    if dim == 0 || dim > MAX_STORE_DIM {
        return Err(Error::InvalidConfig(format!(
            "--dim must be between 1 and {MAX_STORE_DIM}, got {dim}"
        )));
    }
    // The input is checked for the type the store will keep: the one asked for, else an
    // existing store's (read from its header), else f32.
    let check_as = match element {
        Some(e) => e,
        None => WarmStore::read_shape(dir).map_or(ElementType::F32, |(_, e)| e),
    };
    let mut file = match &source {
        Source::File(p) => Some(checked_input(p, dim, check_as)?),
        Source::Random { count, .. } => {
            check_disk_space(dir, *count, dim, check_as)?;
            None
        }
    };
    let total = match (&source, &file) {
        (Source::Random { count, .. }, _) => *count,
        (_, Some(f)) => f.rows() as u64,
        _ => unreachable!("a file source has a file"),
    };
    let made_dir = !dir.exists();
    // Interrupted before its first acknowledged flush, an ingest that created the store
    // removes it, as a failed one does. The flag and the announcement of a flush change
    // under one lock, which the clean-up holds until the process exits: nothing is removed
    // once a flush has been acknowledged.
    let acknowledged = Arc::new(Mutex::new(false));
    let created_here = Arc::new(AtomicBool::new(false));
    {
        let (acknowledged, created_here, dir) = (
            acknowledged.clone(),
            created_here.clone(),
            dir.to_path_buf(),
        );
        crate::signals::on_interrupt(move || {
            let acked = acknowledged.lock();
            if *acked || !created_here.load(Ordering::Acquire) {
                return None;
            }
            remove_created(&dir, made_dir);
            std::mem::forget(acked); // held until exit
            Some(format!(
                "removed the store {} it had created",
                dir.display()
            ))
        });
    }
    let (mut store, created) = open_or_create(dir, dim, element)?;
    created_here.store(created, Ordering::Release);
    let result = (|| -> Result<(), Error> {
        if int8_tier && !store.has_int8_tier() {
            let rows = store.stats().visible_rows;
            let started = std::time::Instant::now();
            store.build_int8_tier()?;
            if rows > 0 && !quiet {
                let _ = writeln!(
                    std::io::stderr(),
                    "built the int8 tier of {} over {rows} rows in {:.2} s",
                    dir.display(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        let store = &store;
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(total)
        };
        let flush_and_announce = |n: u64| -> Result<(), Error> {
            let mut acked = acknowledged.lock();
            store.flush()?;
            *acked = true;
            outln!("flushed {n}");
            crate::out::flush()
        };
        let mut row = vec![0.0f32; dim];
        for i in 0..total {
            match (&source, &mut file) {
                (Source::Random { seed, .. }, _) => {
                    let (id, emb, content) = data::random_record(*seed, i, dim);
                    store.put(&id, &emb, &content)?;
                }
                (_, Some(f)) => {
                    if !f.read_row(&mut row)? {
                        return Err(Error::BadInputFile {
                            path: f.path().to_path_buf(),
                            reason: format!("ended at row {i} of {total} while being read"),
                        });
                    }
                    store.put(&format!("rec-{i}"), &row, &[])?;
                }
                _ => unreachable!("source and file agree"),
            }
            bar.inc(1);
            if flush_every.is_some_and(|m| m > 0 && (i + 1) % m == 0) {
                flush_and_announce(i + 1)?;
            }
        }
        bar.finish_and_clear();
        if flush_every.is_none_or(|m| m == 0 || total % m != 0) || total == 0 {
            flush_and_announce(total)?;
        }
        Ok(())
    })();
    let acked = *acknowledged.lock();
    if result.is_err() && created && !acked {
        drop(store);
        remove_created(dir, made_dir);
    }
    result
}

/// Opens a store for reading, leaving damaged records out (a read-only salvage, which
/// writes nothing) with a warning that names them and the command that repairs them.
pub fn open_for_reading(dir: &Path) -> Result<WarmStore, Error> {
    let store = WarmStore::open_read_only_with(dir, Recovery::Salvage)?;
    if let Some(d) = store.int8_tier_damage() {
        let _ = writeln!(
            std::io::stderr(),
            "warning: the int8 tier of {} is damaged ({} entries; {}): searching without it, with the same answers; `hybridvec repair --store {}` rebuilds it",
            dir.display(),
            d.rows,
            d.reason,
            dir.display()
        );
    }
    let damaged: Vec<&DamagedRecord> = store.quarantined().iter().filter(|d| !d.earlier).collect();
    if let Some(first) = damaged.first() {
        let _ = writeln!(
            std::io::stderr(),
            "warning: {} damaged records in {} are left out (first: {}); `hybridvec repair --store {}` quarantines them",
            damaged.len(),
            dir.display(),
            describe(first),
            dir.display()
        );
    }
    Ok(store)
}

/// Prints one record. Returns `Ok(false)` when there is none.
pub fn get(dir: &Path, id: &str, json: bool) -> Result<bool, Error> {
    let store = open_for_reading(dir)?;
    let Some(r) = store.get(id)? else {
        if json {
            outln!("null");
        } else {
            let _ = writeln!(std::io::stderr(), "no record with id {id:?}");
        }
        return Ok(false);
    };
    if json {
        let v = serde_json::json!({
            "id": r.id, "row": r.row, "embedding": r.embedding,
            "content": String::from_utf8_lossy(&r.content), "content_len": r.content.len(),
        });
        outln!("{v}");
    } else {
        outln!("id:        {}", r.id);
        outln!("row:       {}", r.row);
        let head: Vec<String> = r
            .embedding
            .iter()
            .take(8)
            .map(|v| format!("{v:.5}"))
            .collect();
        outln!(
            "embedding: [{}{}] (dim {})",
            head.join(", "),
            if r.embedding.len() > 8 { ", …" } else { "" },
            r.embedding.len()
        );
        outln!(
            "content:   {:?} ({} bytes)",
            String::from_utf8_lossy(&r.content),
            r.content.len()
        );
    }
    Ok(true)
}

/// Errors `verify` lists one by one; past this it gives the count.
const MAX_LISTED_ERRORS: usize = 10;

/// One line about a record a salvage leaves out.
fn describe(d: &DamagedRecord) -> String {
    match &d.id {
        Some(id) => format!("row {} (id {id:?}): {}", d.row, d.reason),
        None => format!("row {} (id unreadable): {}", d.row, d.reason),
    }
}

/// Opens the store (which checks every committed record's checksum) and, with a seed,
/// compares every live record with what `ingest --random` would have written. A damaged
/// store is also opened as a repair would (read-only, nothing written) to say how many
/// records a repair would drop. Returns whether everything checked out.
pub fn verify(dir: &Path, expect_seed: Option<u64>, json: bool) -> Result<bool, Error> {
    let mut errors: Vec<String> = Vec::new();
    let mut records = 0u64;
    let mut would_drop: Vec<DamagedRecord> = Vec::new();
    let mut quarantined = 0usize;
    let mut tiered = false;
    let opened = match WarmStore::open_read_only(dir) {
        Err(e @ Error::CorruptStore { .. }) => {
            errors.push(e.to_string());
            // What `repair` would keep and drop.
            WarmStore::open_read_only_with(dir, Recovery::Salvage).ok()
        }
        Err(e @ Error::UnsupportedVersion { .. }) => {
            errors.push(e.to_string());
            None
        }
        Err(e) => return Err(e),
        Ok(store) => Some(store),
    };
    if let Some(store) = opened {
        records = store.len();
        would_drop = store
            .quarantined()
            .iter()
            .filter(|d| !d.earlier)
            .cloned()
            .collect();
        quarantined = store.quarantined().len() - would_drop.len();
        tiered = store.has_int8_tier() || store.int8_tier_damage().is_some();
        if let Some(d) = store.int8_tier_damage() {
            errors.push(format!(
                "int8 tier: {} damaged entries ({}); `hybridvec repair --store {}` rebuilds them from the vectors, losing nothing",
                d.rows,
                d.reason,
                dir.display()
            ));
        }
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
            let element = store.element_type();
            let same_bits = emb
                .iter()
                .map(|&v| element.stored_value(v).to_bits())
                .eq(rec.embedding.iter().map(|v| v.to_bits()));
            if !same_bits || content != rec.content {
                errors.push(format!("row {row}: {} differs from seed {seed}", rec.id));
            }
        }
    }
    let ok = errors.is_empty();
    let count = errors.len();
    // A store of other contents fails every record: a summary, not a line per record.
    errors.truncate(MAX_LISTED_ERRORS);
    if json {
        let damaged: Vec<String> = would_drop
            .iter()
            .take(MAX_LISTED_ERRORS)
            .map(describe)
            .collect();
        outln!(
            "{}",
            serde_json::json!({
                "ok": ok, "records": records, "error_count": count, "errors": errors,
                "repair_would_drop": would_drop.len(), "damaged": damaged,
                "quarantined": quarantined, "int8_tier": tiered,
            })
        );
    } else {
        outln!(
            "{} records, {}",
            records,
            if ok {
                "ok".to_string()
            } else {
                format!("{count} errors")
            }
        );
        for e in &errors {
            outln!("error: {e}");
        }
        if count > errors.len() {
            outln!("… and {} more errors", count - errors.len());
        }
        if !would_drop.is_empty() {
            outln!(
                "a repair (hybridvec repair --store {}) would drop {} damaged records and keep {records}:",
                dir.display(),
                would_drop.len()
            );
            for d in would_drop.iter().take(MAX_LISTED_ERRORS) {
                outln!("  {}", describe(d));
            }
            if would_drop.len() > MAX_LISTED_ERRORS {
                outln!("  … and {} more", would_drop.len() - MAX_LISTED_ERRORS);
            }
        }
        if quarantined > 0 {
            outln!("{quarantined} records were quarantined by an earlier repair");
        }
    }
    Ok(ok)
}

/// `repair`: opens the store as a salvaging writer, which quarantines every damaged record
/// (durably) and keeps the rest; lists what it dropped.
pub fn repair(dir: &Path, json: bool) -> Result<bool, Error> {
    let store = WarmStore::open_with(dir, Recovery::Salvage)?;
    let dropped: Vec<&DamagedRecord> = store.quarantined().iter().filter(|d| !d.earlier).collect();
    let tier_rebuilt = store.int8_tier_damage().map_or(0, |d| d.rows);
    if json {
        let list: Vec<_> = dropped
            .iter()
            .map(|d| serde_json::json!({"row": d.row, "id": d.id, "reason": d.reason}))
            .collect();
        outln!(
            "{}",
            serde_json::json!({"records": store.len(), "quarantined": list,
                "quarantined_earlier": store.quarantined().len() - dropped.len(),
                "int8_tier_rebuilt": tier_rebuilt})
        );
    } else if dropped.is_empty() && tier_rebuilt == 0 {
        outln!("nothing to repair: {} records, all sound", store.len());
    } else if dropped.is_empty() {
        outln!(
            "repaired: rebuilt {tier_rebuilt} damaged int8 tier entries from the vectors; all {} records sound",
            store.len()
        );
    } else {
        for d in &dropped {
            outln!("quarantined {}", describe(d));
        }
        if tier_rebuilt > 0 {
            outln!("rebuilt {tier_rebuilt} damaged int8 tier entries from the vectors");
        }
        outln!(
            "repaired: quarantined {} damaged records, kept {} records",
            dropped.len(),
            store.len()
        );
    }
    Ok(true)
}

/// `query --store`: top-k over the store's records, hits by id.
pub fn query(
    exec: &HybridExecutor,
    store: &WarmStore,
    queries: &Matrix,
    k: usize,
    options: &hybridvec::SearchOptions,
    json: bool,
) -> Result<(), Error> {
    // One call for the whole batch, with a tier or without: a query's scores never depend
    // on whether the store has one (a batch's kernels may round a score apart from a
    // lone query's). Each line says how many rows that call re-scored: the union of its
    // queries' candidates, or null when it scanned in full.
    let (hits, report) = exec.search_store_with_report(queries.view(), store, k, options)?;
    let rescored = vec![report.rescored; hits.len()];
    crate::print_hits(
        hits.into_iter()
            .map(|hs| hs.into_iter().map(|h| (h.id, h.score)).collect()),
        "id",
        json,
        Some(&rescored),
    )
}

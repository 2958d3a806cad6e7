//! The int8 scan tier of a warm store (issue 19): built on an empty store or on demand,
//! kept up to date by puts and deletes, persisted, and checked at open.
//!
//! * A tiered store answers cosine top-k exactly as the same store without its tier, bit
//!   for bit (ids and scores), for f32, f16 and bf16 stores, with deletes and supersedes,
//!   and within rounding of the f64 reference; the report counts the rows re-scored.
//! * Damage to any tier file (a flipped byte in codes or bounds, a truncated or missing
//!   chunk, a damaged `tier.hv`, tier files of another store) loses nothing: a read-only
//!   handle searches without the tier, a writer rebuilds the damaged entries, and the
//!   answers never change.
//!
//! Crash safety (power loss, kill -9) is in `tests/warm_crash.rs`.

mod common;

use common::image::{copy_store, xor_byte};
use common::reference::cosine64;
use common::TempDir;
use hybridvec::{
    data, DevicePolicy, ElementType, ExecutorConfig, HybridExecutor, MatrixRef, StoreConfig,
    WarmStore,
};
use std::path::Path;
use std::sync::LazyLock;

static CPU: LazyLock<HybridExecutor> = LazyLock::new(|| {
    HybridExecutor::new(ExecutorConfig {
        device: DevicePolicy::Cpu,
        ..Default::default()
    })
    .unwrap()
});

const DIM: usize = 48;

/// Small chunks, so the tier's rows straddle chunk files.
fn config() -> StoreConfig {
    StoreConfig {
        dim: DIM,
        first_chunk_bytes: 4096,
        max_chunk_bytes: 1 << 16,
    }
}

/// `n` records: random rows, a cluster of near-duplicates, exact duplicates and a zero
/// row, with every 13th id deleted and every 7th superseded.
fn fill(s: &WarmStore, seed: u64, n: u64) {
    let centre = data::random_vec(DIM, seed, 999_999);
    for i in 0..n {
        let emb: Vec<f32> = match i % 5 {
            0 | 1 => data::random_vec(DIM, seed, i),
            2 => centre
                .iter()
                .zip(data::random_vec(DIM, seed + 1, i))
                .map(|(c, e)| c + 1e-3 * e)
                .collect(),
            3 => centre.clone(),
            _ if i == 4 => vec![0.0; DIM],
            _ => data::random_vec(DIM, seed + 2, i)
                .iter()
                .map(|v| v * 1e3)
                .collect(),
        };
        s.put(&format!("r-{i}"), &emb, b"c").unwrap();
    }
    for i in (0..n).step_by(7) {
        s.put(&format!("r-{i}"), &data::random_vec(DIM, seed + 3, i), b"")
            .unwrap();
    }
    for i in (0..n).step_by(13) {
        s.delete(&format!("r-{i}")).unwrap();
    }
}

/// Queries: random, the cluster's centre, a stored row, and a stored row perturbed.
fn queries(s: &WarmStore, seed: u64) -> Vec<Vec<f32>> {
    let mut q: Vec<Vec<f32>> = (0..3)
        .map(|i| data::random_vec(DIM, seed + 50, i))
        .collect();
    q.push(data::random_vec(DIM, seed, 999_999));
    let row = s.get("r-11").unwrap().unwrap().embedding;
    q.push(row.iter().map(|v| v + 1e-4).collect());
    q.push(row);
    q
}

type Answers = Vec<Vec<(String, u32)>>;

/// Each query's top `k` asked alone, then in groups of four, with the rows the calls
/// re-scored.
fn answers(s: &WarmStore, queries: &[Vec<f32>], k: usize) -> (Answers, Vec<Option<usize>>) {
    let mut out = Vec::new();
    let mut rescored = Vec::new();
    let calls = queries
        .iter()
        .map(|q| q.to_vec())
        .chain(queries.chunks(4).map(|g| g.concat()));
    for flat in calls {
        let m = MatrixRef::new(&flat, flat.len() / DIM, DIM).unwrap();
        let (hits, report) = CPU.top_k_store_with_report(m, s, k).unwrap();
        rescored.push(report.rescored);
        out.extend(
            hits.into_iter()
                .map(|h| h.into_iter().map(|h| (h.id, h.score.to_bits())).collect()),
        );
    }
    (out, rescored)
}

/// A copy of the store at `from` without its tier.
fn untiered_copy(from: &Path, to: &Path) {
    copy_store(from, to);
    for e in std::fs::read_dir(to).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name == "tier.hv" || name.starts_with("i8code-") || name.starts_with("i8bound-") {
            std::fs::remove_file(to.join(name)).unwrap();
        }
    }
}

/// Every hit's score is its f64 cosine within f32 rounding, and no live record left out
/// scores more than rounding above the last hit.
fn check_reference(s: &WarmStore, q: &[f32], hits: &[(String, u32)], k: usize) {
    let corpus = s.corpus();
    let mut live = Vec::new();
    for row in (0..corpus.rows()).filter(|&r| corpus.is_live(r)) {
        let rec = s.read_record(row as u64).unwrap();
        live.push((rec.id.clone(), cosine64(q, &rec.embedding)));
    }
    assert_eq!(hits.len(), k.min(live.len()));
    let tol = 1e-5;
    for (id, bits) in hits {
        let want = live.iter().find(|(i, _)| i == id).unwrap().1;
        let got = f32::from_bits(*bits) as f64;
        assert!((got - want).abs() < tol, "{id}: {got} vs {want}");
    }
    let last = f32::from_bits(hits.last().unwrap().1) as f64;
    for (id, score) in &live {
        if !hits.iter().any(|(h, _)| h == id) {
            assert!(*score <= last + tol, "{id} ({score}) left out above {last}");
        }
    }
}

#[test]
fn a_tiered_store_answers_as_the_full_scan_bit_for_bit() {
    for element in [ElementType::F32, ElementType::F16, ElementType::Bf16] {
        let dir = TempDir::new(&format!("tier-equal-{element}"));
        let (tiered_dir, plain_dir) = (dir.path("tiered"), dir.path("plain"));
        let mut s = WarmStore::create_with_element(&tiered_dir, config(), element).unwrap();
        s.build_int8_tier().unwrap(); // on the empty store: puts keep it
        fill(&s, 5, 3000);
        s.flush().unwrap();
        assert!(s.has_int8_tier());
        untiered_copy(&tiered_dir, &plain_dir);
        let plain = WarmStore::open_read_only(&plain_dir).unwrap();
        assert!(!plain.has_int8_tier());
        let live = s.len() as usize;
        let qs = queries(&s, 9);
        for k in [1, 10, 100, live + 5] {
            let (got, rescored) = answers(&s, &qs, k);
            let (want, none) = answers(&plain, &qs, k);
            assert_eq!(got, want, "{element}, k = {k}");
            assert!(none.iter().all(Option::is_none));
            assert!(
                rescored.iter().all(Option::is_some),
                "{element}: {rescored:?}"
            );
            // Random queries need few rows re-scored (the rest of the set are
            // near-duplicate clusters, where many rows tie within the bounds).
            if k == 10 {
                assert!(rescored[0].unwrap() < live / 10, "{element}: {rescored:?}");
            }
            for (q, hits) in qs.iter().zip(&got) {
                check_reference(&s, q, hits, k);
            }
        }
        // Unflushed rows are searched through the tier too.
        s.put("late", &qs[0], b"").unwrap();
        let (got, _) = answers(&s, &qs[..1], 1);
        assert_eq!(got[0][0].0, "late", "{element}");
    }
}

#[test]
fn a_tier_built_on_demand_persists_and_reopens_clean() {
    let dir = TempDir::new("tier-on-demand");
    let (tiered_dir, plain_dir) = (dir.path("s"), dir.path("plain"));
    let mut s = WarmStore::create(&tiered_dir, config()).unwrap();
    fill(&s, 21, 2000);
    s.flush().unwrap();
    s.put("unflushed", &data::random_vec(DIM, 1, 1), b"")
        .unwrap();
    assert!(!s.has_int8_tier());
    s.build_int8_tier().unwrap();
    s.build_int8_tier().unwrap(); // a second build keeps the tier
    assert!(s.has_int8_tier() && s.int8_tier_damage().is_none());
    fill(&s, 22, 500); // more puts, supersedes and deletes, kept in the tier
    s.flush().unwrap();
    let qs = queries(&s, 23);
    let (before, _) = answers(&s, &qs, 10);
    drop(s);
    untiered_copy(&tiered_dir, &plain_dir);
    let (want, _) = answers(&WarmStore::open_read_only(&plain_dir).unwrap(), &qs, 10);
    assert_eq!(before, want);
    for writable in [false, true] {
        let s = if writable {
            WarmStore::open(&tiered_dir).unwrap()
        } else {
            WarmStore::open_read_only(&tiered_dir).unwrap()
        };
        assert!(s.has_int8_tier(), "writable {writable}");
        assert_eq!(s.int8_tier_damage(), None, "writable {writable}");
        let (got, rescored) = answers(&s, &qs, 10);
        assert_eq!(got, want, "writable {writable}");
        assert!(rescored.iter().all(Option::is_some));
    }
}

/// A store with a tier, its answers, and an untiered copy's.
struct Damaged {
    _dir: TempDir,
    clean: std::path::PathBuf,
    work: std::path::PathBuf,
    queries: Vec<Vec<f32>>,
    want: Answers,
}

fn damaged_fixture(name: &str) -> Damaged {
    let dir = TempDir::new(name);
    let (clean, work, plain) = (dir.path("clean"), dir.path("work"), dir.path("plain"));
    let mut s = WarmStore::create(&clean, config()).unwrap();
    s.build_int8_tier().unwrap();
    fill(&s, 31, 2500);
    s.flush().unwrap();
    let queries = queries(&s, 32);
    drop(s);
    untiered_copy(&clean, &plain);
    let (want, _) = answers(&WarmStore::open_read_only(&plain).unwrap(), &queries, 10);
    Damaged {
        _dir: dir,
        clean,
        work,
        queries,
        want,
    }
}

#[test]
fn damage_to_any_tier_file_loses_nothing_and_a_writer_rebuilds_it() {
    let fx = damaged_fixture("tier-damage");
    type Damage = Box<dyn Fn(&Path)>;
    let damages: Vec<(&str, Damage)> = vec![
        (
            "a code byte",
            Box::new(|d| xor_byte(&d.join("i8code-000002.chunk"), 100, 0x5a)),
        ),
        (
            "a bound byte",
            Box::new(|d| xor_byte(&d.join("i8bound-000001.chunk"), 70, 0x5a)),
        ),
        (
            "a check word",
            Box::new(|d| xor_byte(&d.join("i8bound-000000.chunk"), 16, 0x5a)),
        ),
        (
            "a truncated code chunk",
            Box::new(|d| {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("i8code-000003.chunk"))
                    .unwrap();
                f.set_len(1000).unwrap();
            }),
        ),
        (
            "a missing bound chunk",
            Box::new(|d| std::fs::remove_file(d.join("i8bound-000002.chunk")).unwrap()),
        ),
        (
            "a flipped tier.hv",
            Box::new(|d| xor_byte(&d.join("tier.hv"), 13, 0x5a)),
        ),
        (
            "an empty tier.hv",
            Box::new(|d| std::fs::write(d.join("tier.hv"), b"").unwrap()),
        ),
    ];
    for (what, damage) in &damages {
        copy_store(&fx.clean, &fx.work);
        damage(&fx.work);
        // A reader searches without the tier, with the same answers.
        let r = WarmStore::open_read_only(&fx.work).unwrap();
        assert!(!r.has_int8_tier(), "{what}");
        let d = r
            .int8_tier_damage()
            .unwrap_or_else(|| panic!("{what}: not seen"));
        assert!(d.rows >= 1 && !d.rebuilt, "{what}: {d:?}");
        let (got, rescored) = answers(&r, &fx.queries, 10);
        assert_eq!(got, fx.want, "{what}: read-only");
        assert!(rescored.iter().all(Option::is_none), "{what}");
        drop(r);
        // A writer rebuilds what is damaged and keeps the tier.
        let w = WarmStore::open(&fx.work).unwrap();
        let d = w.int8_tier_damage().cloned().expect("damage reported");
        assert!(d.rebuilt && d.rows >= 1, "{what}: {d:?}");
        assert!(w.has_int8_tier(), "{what}");
        assert_eq!(answers(&w, &fx.queries, 10).0, fx.want, "{what}: rebuilt");
        drop(w);
        // And the rebuild stuck.
        let r = WarmStore::open_read_only(&fx.work).unwrap();
        assert_eq!(r.int8_tier_damage(), None, "{what}: after the rebuild");
        let (got, rescored) = answers(&r, &fx.queries, 10);
        assert_eq!(got, fx.want, "{what}: reopened");
        assert!(rescored.iter().all(Option::is_some), "{what}");
    }
}

#[test]
fn tier_files_of_another_store_fail_their_checks_and_are_rebuilt() {
    let fx = damaged_fixture("tier-foreign");
    let other = TempDir::new("tier-foreign-other");
    let mut s = WarmStore::create(other.dir(), config()).unwrap();
    s.build_int8_tier().unwrap();
    fill(&s, 77, 2500); // same ids and shape, other vectors
    s.flush().unwrap();
    drop(s);
    copy_store(&fx.clean, &fx.work);
    for e in std::fs::read_dir(other.dir()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name == "tier.hv" || name.starts_with("i8") {
            std::fs::copy(other.dir().join(&name), fx.work.join(&name)).unwrap();
        }
    }
    let r = WarmStore::open_read_only(&fx.work).unwrap();
    assert!(!r.has_int8_tier());
    assert_eq!(answers(&r, &fx.queries, 10).0, fx.want);
    drop(r);
    let w = WarmStore::open(&fx.work).unwrap();
    assert!(w.int8_tier_damage().unwrap().rows > 2000);
    assert_eq!(answers(&w, &fx.queries, 10).0, fx.want);
}

#[test]
fn a_build_cut_short_leaves_the_store_untiered_and_a_new_build_completes() {
    let fx = damaged_fixture("tier-cut-short");
    // What a crash before the rename leaves: chunk files, a temporary tier.hv, no tier.hv.
    copy_store(&fx.clean, &fx.work);
    std::fs::rename(fx.work.join("tier.hv"), fx.work.join(".tier.hv.tmp")).unwrap();
    let r = WarmStore::open_read_only(&fx.work).unwrap();
    assert!(!r.has_int8_tier() && r.int8_tier_damage().is_none());
    assert_eq!(answers(&r, &fx.queries, 10).0, fx.want);
    drop(r);
    let mut w = WarmStore::open(&fx.work).unwrap();
    assert!(!w.has_int8_tier());
    // The writer removed what the cut-short build left.
    let stray: Vec<String> = std::fs::read_dir(&fx.work)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("i8") || n.contains("tier"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    w.build_int8_tier().unwrap();
    assert!(w.has_int8_tier());
    drop(w);
    let r = WarmStore::open_read_only(&fx.work).unwrap();
    assert!(r.has_int8_tier() && r.int8_tier_damage().is_none());
    assert_eq!(answers(&r, &fx.queries, 10).0, fx.want);
    // A read-only handle cannot build one.
    let mut r = r;
    assert!(matches!(
        r.build_int8_tier(),
        Err(hybridvec::Error::ReadOnly)
    ));
}

#[test]
fn inner_product_and_l2_over_a_tiered_store_answer_as_without_the_tier() {
    use hybridvec::{Metric, SearchOptions};
    let dir = TempDir::new("tier-metrics");
    let (tiered_dir, plain_dir) = (dir.path("tiered"), dir.path("plain"));
    let mut s = WarmStore::create(&tiered_dir, config()).unwrap();
    s.build_int8_tier().unwrap();
    fill(&s, 41, 2500);
    s.flush().unwrap();
    untiered_copy(&tiered_dir, &plain_dir);
    let plain = WarmStore::open_read_only(&plain_dir).unwrap();
    let qs = queries(&s, 42);
    for metric in [Metric::InnerProduct, Metric::L2] {
        let options = SearchOptions::new(metric);
        for q in &qs {
            let m = MatrixRef::new(q, 1, DIM).unwrap();
            let search = |store: &WarmStore| {
                let (hits, report) = CPU
                    .search_store_with_report(m, store, 10, &options)
                    .unwrap();
                let hits: Vec<(String, u32)> = hits[0]
                    .iter()
                    .map(|h| (h.id.clone(), h.score.to_bits()))
                    .collect();
                (hits, report.rescored)
            };
            let (got, rescored) = search(&s);
            let (want, none) = search(&plain);
            assert_eq!(got, want, "{metric}");
            assert!(rescored.is_some() && none.is_none(), "{metric}");
        }
    }
}

//! The warm tier through its public API: records round-trip, supersede and delete,
//! survive reopen exactly as far as they were flushed, stay intact under many concurrent
//! writers and readers, and search in place like an in-memory corpus.

mod common;

use common::TempDir;
use hybridvec::{
    data, Corpus, Error, ExecutorConfig, HybridExecutor, MatrixRef, StoreConfig, WarmStore,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

fn small(dim: usize) -> StoreConfig {
    StoreConfig {
        dim,
        first_chunk_bytes: 4096,
        max_chunk_bytes: 16384,
    }
}

/// A self-verifying record: embedding and content are functions of (writer, seq).
fn record(writer: u64, seq: u64, dim: usize) -> (String, Vec<f32>, Vec<u8>) {
    let id = format!("w{writer}-{seq}");
    let emb = data::random_vec(dim, writer, seq);
    let content = format!("{id}:{}", "x".repeat((seq % 37) as usize)).into_bytes();
    (id, emb, content)
}

#[test]
fn put_get_supersede_delete_and_reopen() {
    let dir = TempDir::new("warm-basic");
    let s = WarmStore::create(dir.dir(), small(5)).unwrap();
    let a = data::random_vec(5, 1, 0);
    let b = data::random_vec(5, 1, 1);
    assert_eq!(s.put("a", &a, b"first").unwrap(), 0);
    assert_eq!(s.put("b", &b, b"").unwrap(), 1);
    assert_eq!(s.put("a", &b, b"second").unwrap(), 2); // supersedes row 0
    assert_eq!(s.len(), 2);
    let got = s.get("a").unwrap().unwrap();
    assert_eq!(
        (got.row, got.embedding.as_slice(), got.content.as_slice()),
        (2, b.as_slice(), &b"second"[..])
    );
    assert!(s.delete("b").unwrap());
    assert!(!s.delete("nope").unwrap());
    assert_eq!(s.get("b").unwrap(), None);
    assert_eq!(s.len(), 1);
    let c = s.corpus();
    assert_eq!(c.rows(), 5); // 3 puts + 2 tombstones
    assert_eq!(
        (0..5).filter(|&i| c.is_live(i)).collect::<Vec<_>>(),
        vec![2]
    );
    drop(c);
    assert_eq!(s.flush().unwrap(), 5);
    s.put("c", &a, b"not flushed").unwrap();
    drop(s);
    let s = WarmStore::open(dir.dir()).unwrap();
    assert_eq!(s.stats().durable_rows, 5);
    assert_eq!(s.get("a").unwrap().unwrap().content, b"second");
    assert_eq!(s.get("b").unwrap(), None);
    assert_eq!(s.get("c").unwrap(), None, "an unflushed put is not durable");
    assert_eq!(s.len(), 1);
    // The torn tail is overwritten by new writes.
    assert_eq!(s.put("d", &a, b"after reopen").unwrap(), 5);
    assert_eq!(s.get("d").unwrap().unwrap().content, b"after reopen");
}

#[test]
fn bad_puts_are_typed_errors_and_change_nothing() {
    let dir = TempDir::new("warm-badput");
    let s = WarmStore::create(dir.dir(), small(3)).unwrap();
    assert!(matches!(
        s.put("x", &[1.0, 2.0], b""),
        Err(Error::DimensionMismatch {
            expected: 3,
            got: 2
        })
    ));
    assert!(matches!(
        s.put("x", &[1.0, f32::NAN, 0.0], b""),
        Err(Error::NonFinite { row: 0, col: 1 })
    ));
    assert!(matches!(
        s.put("", &[1.0, 2.0, 3.0], b""),
        Err(Error::EmptyInput { .. })
    ));
    assert!(matches!(
        s.put("x", &[1e-39, 0.0, 0.0], b""),
        Err(Error::NormOutOfRange { .. })
    ));
    assert_eq!(s.len(), 0);
    assert_eq!(s.stats().reserved_rows, 0);
}

#[test]
fn twenty_writers_lose_nothing_and_readers_never_see_torn_records() {
    let heavy = std::env::var("HYBRIDVEC_HEAVY_TESTS").is_ok();
    let per_writer: u64 = if heavy { 5000 } else { 1000 };
    let (writers, dim) = (20u64, 16usize);
    let dir = TempDir::new("warm-writers");
    let s = Arc::new(WarmStore::create(dir.dir(), small(dim)).unwrap());
    let barrier = Arc::new(Barrier::new(writers as usize + 2));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2u64)
        .map(|r| {
            let (s, barrier, done) = (s.clone(), barrier.clone(), done.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut rng = data::Rng::new(99, r);
                let mut checked = 0u64;
                while !done.load(Ordering::Acquire) {
                    let (w, q) = (rng.below(writers), rng.below(per_writer));
                    let (id, emb, content) = record(w, q, dim);
                    if let Some(rec) = s.get(&id).unwrap() {
                        assert_eq!(
                            (rec.embedding, rec.content),
                            (emb, content),
                            "torn or mixed record {id}"
                        );
                        checked += 1;
                    }
                    let c = s.corpus();
                    assert!(c.rows() as u64 <= s.stats().reserved_rows);
                }
                checked
            })
        })
        .collect();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (s, barrier) = (s.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (0..per_writer)
                    .map(|q| {
                        let (id, emb, content) = record(w, q, dim);
                        s.put(&id, &emb, &content).unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let rows: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    done.store(true, Ordering::Release);
    let checked: u64 = readers.into_iter().map(|h| h.join().unwrap()).sum();
    let total = writers * per_writer;
    let mut sorted = rows.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len() as u64, total, "two writers got the same row");
    assert_eq!(s.len(), total);
    assert_eq!(s.stats().visible_rows, total);
    assert!(checked > 0, "readers saw no record at all");
    s.flush().unwrap();
    drop(s);
    let s = WarmStore::open(dir.dir()).unwrap();
    assert_eq!(s.len(), total);
    for w in 0..writers {
        for q in 0..per_writer {
            let (id, emb, content) = record(w, q, dim);
            let rec = s.get(&id).unwrap().unwrap_or_else(|| panic!("{id} lost"));
            assert_eq!(
                (rec.embedding, rec.content),
                (emb, content),
                "{id} mixed up"
            );
        }
    }
}

#[test]
fn top_k_store_matches_top_k_on_the_same_rows_in_memory() {
    let (n, dim) = (3000usize, 24usize);
    let dir = TempDir::new("warm-search");
    let s = WarmStore::create(dir.dir(), small(dim)).unwrap();
    let rows = data::random_matrix(n, dim, 5);
    for i in 0..n {
        s.put(&format!("r{i}"), &rows[i * dim..(i + 1) * dim], b"")
            .unwrap();
    }
    // Supersede some ids with new vectors and delete others: both must drop out of search.
    let mut live: HashMap<String, Vec<f32>> = (0..n)
        .map(|i| (format!("r{i}"), rows[i * dim..(i + 1) * dim].to_vec()))
        .collect();
    for i in (0..n).step_by(7) {
        let v = data::random_vec(dim, 6, i as u64);
        s.put(&format!("r{i}"), &v, b"").unwrap();
        live.insert(format!("r{i}"), v);
    }
    for i in (3..n).step_by(11) {
        s.delete(&format!("r{i}")).unwrap();
        live.remove(&format!("r{i}"));
    }
    let mut ids: Vec<&String> = live.keys().collect();
    ids.sort();
    let flat: Vec<f32> = ids.iter().flat_map(|id| live[*id].clone()).collect();
    let mem = Corpus::new(flat, dim).unwrap();
    let exec = HybridExecutor::new(ExecutorConfig::default()).unwrap();
    for q in [1usize, 20] {
        let queries = data::random_matrix(q, dim, 77);
        let qm = MatrixRef::new(&queries, q, dim).unwrap();
        let got = exec.top_k_store(qm, &s, 10).unwrap();
        let want = exec.top_k(qm, &mem, 10).unwrap();
        for (g, w) in got.iter().zip(&want) {
            let g: Vec<(&str, f32)> = g.iter().map(|h| (h.id.as_str(), h.score)).collect();
            let w: Vec<(&str, f32)> = w.iter().map(|h| (ids[h.index].as_str(), h.score)).collect();
            assert_eq!(g.len(), w.len());
            for ((gi, gs), (wi, ws)) in g.iter().zip(&w) {
                assert!((gs - ws).abs() < 1e-5, "{gi} {gs} vs {wi} {ws}");
                assert!(gi == wi || (gs - ws).abs() < 1e-6, "{gi} vs {wi}");
            }
        }
    }
}

#[test]
fn empty_store_search_is_a_typed_error() {
    let dir = TempDir::new("warm-empty");
    let s = WarmStore::create(dir.dir(), small(4)).unwrap();
    let exec = HybridExecutor::new(ExecutorConfig::default()).unwrap();
    let q = [1.0f32, 0.0, 0.0, 0.0];
    let r = exec.top_k_store(MatrixRef::new(&q, 1, 4).unwrap(), &s, 3);
    assert!(matches!(r, Err(Error::EmptyInput { .. })));
}

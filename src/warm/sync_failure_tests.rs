//! A failed sync poisons the store: the flush (or the put that grew the store) reports the
//! I/O error, every later write and flush is refused, nothing is retried as if it had
//! succeeded, and a reopen finds every acknowledged record intact.

use super::{sync, StoreConfig, WarmStore};
use crate::data;
use crate::error::Error;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("hybridvec-sync-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type Model = HashMap<String, Option<(Vec<f32>, Vec<u8>)>>;

fn config() -> StoreConfig {
    StoreConfig {
        dim: 8,
        first_chunk_bytes: 4096,
        max_chunk_bytes: 16384,
    }
}

/// Puts (and some deletes) over ids `id-0..ids`, recorded in `model`.
fn burst(s: &WarmStore, model: &mut Model, rng: &mut data::Rng, n: usize, ids: u64) {
    for _ in 0..n {
        let id = format!("id-{}", rng.below(ids));
        if rng.below(6) == 0 {
            s.delete(&id).unwrap();
            model.insert(id, None);
        } else {
            let emb = data::random_vec(8, rng.next_u64(), 0);
            let content: Vec<u8> = (0..rng.below(40)).map(|_| rng.next_u64() as u8).collect();
            s.put(&id, &emb, &content).unwrap();
            model.insert(id, Some((emb, content)));
        }
    }
}

/// Whether the store at `dir` holds exactly `model`, bit for bit.
fn holds(dir: &Path, model: &Model) -> Result<(), String> {
    let s = WarmStore::open(dir).map_err(|e| format!("reopen: {e}"))?;
    let live = model.values().filter(|v| v.is_some()).count() as u64;
    if s.len() != live {
        return Err(format!("{} live records, expected {live}", s.len()));
    }
    for (id, want) in model {
        let got = s.get(id).map_err(|e| format!("{id}: {e}"))?;
        let same = match (want, &got) {
            (None, None) => true,
            (Some((emb, content)), Some(r)) => {
                r.embedding
                    .iter()
                    .map(|x| x.to_bits())
                    .eq(emb.iter().map(|x| x.to_bits()))
                    && &r.content == content
            }
            _ => false,
        };
        if !same {
            return Err(format!("{id} differs"));
        }
    }
    Ok(())
}

/// Puts `id-{i}` with a fresh random embedding; returns the result and the embedding.
fn put(s: &WarmStore, i: usize, rng: &mut data::Rng) -> (crate::Result<super::RowId>, Vec<f32>) {
    let emb = data::random_vec(8, rng.next_u64(), 0);
    (s.put(&format!("id-{i}"), &emb, b"c"), emb)
}

fn assert_poisoned(s: &WarmStore) {
    let emb = data::random_vec(8, 5, 5);
    assert!(matches!(s.flush(), Err(Error::StorePoisoned { .. })));
    assert!(matches!(
        s.put("late", &emb, b""),
        Err(Error::StorePoisoned { .. })
    ));
    assert!(matches!(s.delete("id-1"), Err(Error::StorePoisoned { .. })));
}

fn is_eio(e: &Error) -> bool {
    e.io_error().and_then(|io| io.raw_os_error()) == Some(libc::EIO)
}

#[test]
fn failed_flush_sync_poisons_and_keeps_the_last_durable_state() {
    let mut failed_points = 0;
    for k in 0.. {
        let dir = TempDir::new(&format!("flush-{k}"));
        let mut rng = data::Rng::new(90 + k as u64, 0);
        let s = WarmStore::create(&dir.0, config()).unwrap();
        let mut model = Model::new();
        burst(&s, &mut model, &mut rng, 300, 200);
        s.flush().unwrap();
        let acknowledged = model.clone();
        let durable_rows = s.stats().durable_rows;
        burst(&s, &mut model, &mut rng, 300, 400);

        sync::fail_after(k);
        let r = s.flush();
        if sync::disarm() == 0 {
            // The flush made fewer than k + 1 sync calls: every point has been failed once.
            r.unwrap();
            break;
        }
        let e = r.expect_err("the injected EIO must surface");
        assert!(is_eio(&e), "sync point {k}: {e}");
        assert_eq!(s.stats().durable_rows, durable_rows, "sync point {k}");
        assert_poisoned(&s);
        drop(s);
        failed_points += 1;

        // Everything acknowledged is intact. The unacknowledged burst may be there too when
        // only the superblock's own sync failed (its write reached the page cache), but
        // only all of it: never part, never a mix.
        let old = holds(&dir.0, &acknowledged);
        let new = holds(&dir.0, &model);
        assert!(
            old.is_ok() || new.is_ok(),
            "sync point {k}: neither state after reopen: {old:?} / {new:?}"
        );
        // The reopened store takes writes and flushes again.
        let s = WarmStore::open(&dir.0).unwrap();
        s.put("after", &data::random_vec(8, 1, 1), b"x").unwrap();
        s.flush().unwrap();
    }
    // Vectors, metadata, content and the superblock: at least four sync calls per flush.
    assert!(failed_points >= 4, "only {failed_points} sync points seen");
}

#[test]
fn failed_sync_while_growing_fails_the_put_and_poisons() {
    for k in 0..4 {
        // Fail growth at its k-th sync call: each new chunk (content, vectors, metadata)
        // takes an fsync of the file and one of the directory after its rename.
        let dir = TempDir::new(&format!("grow-{k}"));
        let mut rng = data::Rng::new(7 + k as u64, 0);
        let s = WarmStore::create(&dir.0, config()).unwrap();
        let mut model = Model::new();
        for i in 0..500 {
            let (r, emb) = put(&s, i, &mut rng);
            r.unwrap();
            model.insert(format!("id-{i}"), Some((emb, b"c".to_vec())));
        }
        s.flush().unwrap();
        let chunks = std::fs::read_dir(&dir.0).unwrap().count();
        // Put until growth starts (a quarter chunk before the first is full) and fails.
        sync::fail_after(k);
        let mut failed = None;
        for i in 500..1024 {
            let (r, emb) = put(&s, i, &mut rng);
            match r {
                Ok(_) => model.insert(format!("id-{i}"), Some((emb, b"c".to_vec()))),
                Err(e) => {
                    failed = Some((i, e));
                    break;
                }
            };
        }
        assert!(sync::disarm() > 0, "growth made no sync call");
        let (i, e) = failed.expect("a put must report the failed growth");
        assert!(is_eio(&e), "grow sync point {k}, put {i}: {e}");
        assert!(i < 1024, "the failure surfaced only once the room ran out");
        assert_poisoned(&s);
        drop(s);
        let leftovers: Vec<_> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
        assert!(std::fs::read_dir(&dir.0).unwrap().count() >= chunks);
        // The puts acknowledged after the flush were never durable; a reopen has exactly
        // the flushed ones, and growth works again.
        model.retain(|id, _| id[3..].parse::<usize>().unwrap() < 500);
        holds(&dir.0, &model).unwrap();
        let s = WarmStore::open(&dir.0).unwrap();
        for i in 500..1500 {
            put(&s, i, &mut rng).0.unwrap();
        }
        s.flush().unwrap();
        assert_eq!(s.len(), 1500);
    }
}

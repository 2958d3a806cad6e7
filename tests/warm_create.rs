//! Creating and holding a store while others try to: two processes or many threads
//! creating the same store at once, a deleted `LOCK` file, a store file replaced behind a
//! writer's back. In every case exactly one writer holds the store, and every flush that
//! was acknowledged is in the store afterwards.

mod common;

use common::TempDir;
use hybridvec::{data, Error, StoreConfig, WarmStore};
use std::path::Path;
use std::process::Stdio;

fn config(dim: usize) -> StoreConfig {
    StoreConfig {
        dim,
        first_chunk_bytes: 4096,
        max_chunk_bytes: 16384,
    }
}

/// Whether the store in `dir` holds exactly records `rec-0..n` of `seed`, bit for bit.
fn holds_seed(dir: &Path, seed: u64, n: u64, dim: usize) -> Result<(), String> {
    let s = WarmStore::open_read_only(dir).map_err(|e| format!("open: {e}"))?;
    if s.len() != n {
        return Err(format!("{} records, expected {n}", s.len()));
    }
    for i in 0..n {
        let (id, emb, content) = data::random_record(seed, i, dim);
        let r = s
            .get(&id)
            .map_err(|e| format!("{id}: {e}"))?
            .ok_or(format!("{id} missing"))?;
        if r.embedding != emb || r.content != content {
            return Err(format!("{id} is not seed {seed}'s record"));
        }
    }
    Ok(())
}

#[test]
fn two_processes_creating_one_store_lose_no_acknowledged_flush() {
    const RACES: usize = 500;
    const N: u64 = 50;
    let tmp = TempDir::new("create-race");
    let mut both_won = 0;
    for race in 0..RACES {
        let dir = tmp.path(&format!("s{race}"));
        let dir_s = dir.to_str().unwrap();
        let children: Vec<_> = [1u64, 2]
            .iter()
            .map(|seed| {
                common::cli()
                    .args(["ingest", "--store", dir_s, "--dim", "8", "--random"])
                    .arg(N.to_string())
                    .args(["--seed", &seed.to_string()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn hybridvec")
            })
            .collect();
        let outs: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let mut acked = Vec::new();
        for (seed, o) in [1u64, 2].into_iter().zip(&outs) {
            let (out, err) = (
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr),
            );
            assert!(!err.contains("panicked"), "race {race}: {err}");
            if o.status.success() {
                assert!(out.contains(&format!("flushed {N}")), "race {race}: {out}");
                acked.push(seed);
            } else {
                // The loser is told why, in words that fit what happened.
                assert_eq!(o.status.code(), Some(2), "race {race}: {err}");
                assert!(
                    err.contains("locked by another writer") || err.contains("already holds"),
                    "race {race}: loser's message: {err}"
                );
            }
        }
        assert!(!acked.is_empty(), "race {race}: nobody won");
        // Both may succeed one after the other (the second opens what the first made);
        // then the second's records supersede the first's, all of them.
        let found = acked
            .iter()
            .find(|&&seed| holds_seed(&dir, seed, N, 8).is_ok());
        assert!(
            found.is_some(),
            "race {race}: acknowledged {acked:?}, but the store holds neither: {:?}",
            acked
                .iter()
                .map(|&s| holds_seed(&dir, s, N, 8))
                .collect::<Vec<_>>()
        );
        if acked.len() == 2 {
            both_won += 1;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    eprintln!("{both_won} of {RACES} races ran one after the other");
}

#[test]
fn threads_creating_one_store_one_wins_and_keeps_its_flushes() {
    let tmp = TempDir::new("create-threads");
    for round in 0..50 {
        let dir = tmp.path(&format!("s{round}"));
        let results: Vec<Result<usize, Error>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let dir = &dir;
                    scope.spawn(move || {
                        let s = WarmStore::create(dir, config(4))?;
                        for i in 0..20u64 {
                            s.put(&format!("t{t}-{i}"), &data::random_vec(4, t, i), b"x")?;
                        }
                        s.flush()?;
                        Ok(t as usize)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<usize> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .copied()
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for r in &results {
            assert!(
                matches!(
                    r,
                    Ok(_) | Err(Error::StoreLocked { .. }) | Err(Error::StoreExists { .. })
                ),
                "round {round}: {r:?}"
            );
        }
        let s = WarmStore::open_read_only(&dir).unwrap();
        assert_eq!(s.len(), 20, "round {round}");
        let t = winners[0];
        for i in 0..20u64 {
            let r = s
                .get(&format!("t{t}-{i}"))
                .unwrap()
                .expect("winner's record");
            assert_eq!(r.embedding, data::random_vec(4, t as u64, i));
        }
    }
}

#[test]
fn a_deleted_lock_file_does_not_let_a_second_writer_in() {
    let tmp = TempDir::new("create-lock-deleted");
    let dir = tmp.dir();
    let writer = WarmStore::create(dir, config(4)).unwrap();
    writer.put("a", &data::random_vec(4, 1, 0), b"a").unwrap();
    writer.flush().unwrap();
    std::fs::remove_file(dir.join("LOCK")).unwrap();
    match WarmStore::open(dir) {
        Err(Error::StoreLocked { dir: d }) => assert_eq!(&d, dir),
        other => panic!("second writer after LOCK was deleted: {other:?}"),
    }
    // Nor can anyone create over it.
    assert!(matches!(
        WarmStore::create(dir, config(4)),
        Err(Error::StoreLocked { .. }) | Err(Error::StoreExists { .. })
    ));
    // The first writer goes on, and everything it flushed is there.
    writer.put("b", &data::random_vec(4, 1, 1), b"b").unwrap();
    writer.flush().unwrap();
    drop(writer);
    let s = common::open_writer(dir, hybridvec::Recovery::Strict).unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s.get("b").unwrap().unwrap().content, b"b");
}

#[test]
fn a_store_file_replaced_behind_the_writer_poisons_it() {
    let tmp = TempDir::new("create-replaced");
    let (dir, other) = (tmp.path("a"), tmp.path("b"));
    let writer = WarmStore::create(&dir, config(4)).unwrap();
    writer.put("a", &data::random_vec(4, 1, 0), b"a").unwrap();
    writer.flush().unwrap();
    drop(WarmStore::create(&other, config(4)).unwrap());
    // What the old create did to a live store: rename another store file over it.
    std::fs::rename(other.join("store.hv"), dir.join("store.hv")).unwrap();
    writer.put("b", &data::random_vec(4, 1, 1), b"b").unwrap();
    match writer.flush() {
        Err(Error::StoreReplaced { file }) => assert_eq!(file, dir.join("store.hv")),
        other => panic!("flush into a replaced store file: {other:?}"),
    }
    assert!(matches!(
        writer.put("c", &data::random_vec(4, 1, 2), b"c"),
        Err(Error::StorePoisoned { .. })
    ));
    // Removed outright: the same.
    drop(writer);
    let writer = common::open_writer(&dir, hybridvec::Recovery::Strict).unwrap();
    writer.put("d", &data::random_vec(4, 1, 3), b"d").unwrap();
    std::fs::remove_file(dir.join("store.hv")).unwrap();
    assert!(matches!(writer.flush(), Err(Error::StoreReplaced { .. })));
}

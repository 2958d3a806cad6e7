//! Salvage and repair: damage in any kind of chunk file costs only the records it touches.
//! A strict open still refuses the store (naming file, offset and reason); a salvaging open
//! and `hybridvec repair` keep every undamaged record bit for bit, list the damaged ones,
//! and a repair is crash-safe.

mod common;

use common::image::copy_store;
use common::{cli, open_writer, run, stdout, TempDir};
use hybridvec::{data, DamagedRecord, Error, Recovery, StoreConfig, WarmStore};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

const DIM: usize = 8;
const N: u64 = 3000;
const SEED: u64 = 11;

fn config() -> StoreConfig {
    StoreConfig {
        dim: DIM,
        first_chunk_bytes: 4096,
        max_chunk_bytes: 32768,
    }
}

/// Builds the pristine store: records `rec-0..N` of `SEED`, put one by one, so their ids
/// and contents lie end to end in the content region. Returns each record's content start.
fn build(dir: &Path) -> Vec<u64> {
    let s = WarmStore::create(dir, config()).unwrap();
    let mut offsets = vec![0u64];
    for i in 0..N {
        let (id, emb, content) = data::random_record(SEED, i, DIM);
        s.put(&id, &emb, &content).unwrap();
        offsets.push(offsets.last().unwrap() + (id.len() + content.len()) as u64);
    }
    s.flush().unwrap();
    offsets
}

/// Chunk `i` of a region starts here (4 KiB first, doubling to 32 KiB chunks; as the
/// format documents it).
fn chunk_start(i: usize) -> u64 {
    (0..i)
        .map(|j| {
            if j == 0 {
                4096
            } else {
                (4096u64 << (j - 1)).min(32768)
            }
        })
        .sum()
}

/// Flips one bit at byte `pos` of region `prefix` (vec, meta or blob).
fn flip(dir: &Path, prefix: &str, pos: u64, bit: u8) {
    let chunk = (0..).find(|&i| chunk_start(i + 1) > pos).unwrap();
    let path = dir.join(format!("{prefix}-{chunk:06}.chunk"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(pos - chunk_start(chunk)) as usize] ^= 1 << bit;
    std::fs::write(&path, bytes).unwrap();
}

/// Asserts `s` holds exactly the records not in `lost`, bit for bit, and none of `lost`.
fn assert_keeps_all_but(s: &WarmStore, lost: &BTreeSet<u64>, what: &str) {
    assert_eq!(s.len(), N - lost.len() as u64, "{what}");
    for i in 0..N {
        let (id, emb, content) = data::random_record(SEED, i, DIM);
        let got = s.get(&id).unwrap();
        if lost.contains(&i) {
            assert_eq!(got, None, "{what}: damaged {id} still readable");
        } else {
            let r = got.unwrap_or_else(|| panic!("{what}: undamaged {id} lost"));
            assert_eq!((r.embedding, r.content), (emb, content), "{what}: {id}");
        }
    }
}

fn rows_of(damaged: &[DamagedRecord]) -> BTreeSet<u64> {
    damaged.iter().map(|d| d.row).collect()
}

#[test]
fn a_flip_in_any_kind_of_chunk_costs_only_the_records_it_touches() {
    let tmp = TempDir::new("salvage-flips");
    let pristine = tmp.path("pristine");
    let offsets = build(&pristine);
    let record_at = |pos: u64| (offsets.partition_point(|&o| o <= pos) - 1) as u64;
    let mut rng = data::Rng::new(5, 0);
    for trial in 0..36 {
        let dir = tmp.path("work");
        copy_store(&pristine, &dir);
        let kind = ["vec", "meta", "blob"][trial % 3];
        // One to three flips at random rows; which records each one touches.
        let mut touched = BTreeSet::new();
        for _ in 0..1 + rng.below(3) {
            let (pos, row) = match kind {
                "vec" => {
                    let pos = rng.below(N * DIM as u64 * 4);
                    (pos, pos / (DIM as u64 * 4))
                }
                // The first 28 bytes of an entry: state, checksum, offset, lengths, norm.
                "meta" => {
                    let row = rng.below(N);
                    (row * 32 + rng.below(28), row)
                }
                _ => {
                    let pos = rng.below(offsets[N as usize]);
                    (pos, record_at(pos))
                }
            };
            flip(&dir, kind, pos, rng.below(8) as u8);
            touched.insert(row);
        }
        let ctx = format!("trial {trial}: {kind} flips at rows {touched:?}");
        // Strict: refused, naming a chunk file.
        match WarmStore::open_read_only(&dir) {
            Err(Error::CorruptStore { file, reason, .. }) => {
                assert!(
                    file.to_string_lossy().ends_with(".chunk"),
                    "{ctx}: {file:?}"
                );
                assert!(reason.contains("row "), "{ctx}: {reason}");
            }
            other => panic!("{ctx}: strict open gave {other:?}"),
        }
        // Read-only salvage: exactly the touched records are left out, and listed.
        let s = WarmStore::open_read_only_with(&dir, Recovery::Salvage).unwrap();
        assert_eq!(rows_of(s.quarantined()), touched, "{ctx}");
        for d in s.quarantined() {
            assert!(!d.earlier && !d.reason.is_empty(), "{ctx}: {d:?}");
            if kind == "vec" {
                // Vector damage leaves the id readable, and it is the record's.
                assert_eq!(
                    d.id.as_deref(),
                    Some(format!("rec-{}", d.row).as_str()),
                    "{ctx}"
                );
            }
        }
        assert_keeps_all_but(&s, &touched, &format!("{ctx}, read-only salvage"));
        drop(s);
        assert!(
            !dir.join("quarantine.hv").exists(),
            "{ctx}: read-only salvage wrote"
        );
        // Repair (a writable salvage): the verdict sticks, and the store works on.
        let s = open_writer(&dir, Recovery::Salvage).unwrap();
        assert_eq!(rows_of(s.quarantined()), touched, "{ctx}");
        s.put("after-repair", &data::random_vec(DIM, 1, 1), b"x")
            .unwrap();
        s.flush().unwrap();
        drop(s);
        let s = open_writer(&dir, Recovery::Strict).unwrap();
        assert!(s.quarantined().iter().all(|d| d.earlier), "{ctx}");
        assert_eq!(rows_of(s.quarantined()), touched, "{ctx}");
        assert!(s.get("after-repair").unwrap().is_some(), "{ctx}");
        s.delete("after-repair").unwrap();
        s.flush().unwrap();
        assert_keeps_all_but(&s, &touched, &format!("{ctx}, after repair"));
    }
}

/// A chunk file missing or truncated costs only the records whose bytes it lost: a
/// read-only salvage reads what is left of it and zeros past that; a repair makes a chunk
/// of the right size with the surviving bytes (keeping the bad file as `.damaged`) and
/// quarantines the rest. An over-long file loses nothing.
#[test]
fn a_missing_or_truncated_chunk_costs_only_its_records() {
    let tmp = TempDir::new("salvage-chunks");
    let pristine = tmp.path("pristine");
    let offsets = build(&pristine);
    let overlaps = |lo: u64, hi: u64, a: u64, b: u64| lo < hi && lo < b && a < hi;
    for kind in ["vec", "meta", "blob"] {
        for (chunk, damage) in [(1usize, "truncate"), (2, "delete"), (0, "extend")] {
            let dir = tmp.path("work");
            copy_store(&pristine, &dir);
            let name = format!("{kind}-{chunk:06}.chunk");
            let path = dir.join(&name);
            match damage {
                "truncate" => std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(1000)
                    .unwrap(),
                "delete" => std::fs::remove_file(&path).unwrap(),
                _ => std::fs::File::options()
                    .append(true)
                    .open(&path)
                    .unwrap()
                    .set_len(chunk_start(chunk + 1) - chunk_start(chunk) + 1)
                    .unwrap(),
            }
            // What is left of the file survives; the bytes past it are lost.
            let left = match damage {
                "truncate" => 1000,
                "delete" => 0,
                _ => chunk_start(chunk + 1) - chunk_start(chunk),
            };
            let (lo, hi) = (chunk_start(chunk) + left, chunk_start(chunk + 1));
            let lost: BTreeSet<u64> = (0..N)
                .filter(|&r| match kind {
                    "vec" => overlaps(lo, hi, r * 32, r * 32 + 32),
                    "meta" => overlaps(lo, hi, r * 32, r * 32 + 32),
                    _ => overlaps(lo, hi, offsets[r as usize], offsets[r as usize + 1]),
                })
                .collect();
            assert_eq!(lost.is_empty(), damage == "extend", "{name} {damage}");
            let ctx = format!("{name} {damage}d");
            match WarmStore::open_read_only(&dir) {
                Err(Error::CorruptStore { file, .. }) => assert_eq!(file, path, "{ctx}"),
                other => panic!("{ctx}: strict open gave {other:?}"),
            }
            let s = WarmStore::open_read_only_with(&dir, Recovery::Salvage).unwrap();
            assert_eq!(rows_of(s.quarantined()), lost, "{ctx}");
            assert_keeps_all_but(&s, &lost, &format!("{ctx}, read-only salvage"));
            drop(s);
            let s = open_writer(&dir, Recovery::Salvage).unwrap();
            assert_eq!(rows_of(s.quarantined()), lost, "{ctx}");
            drop(s);
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                chunk_start(chunk + 1) - chunk_start(chunk),
                "{ctx}: not replaced"
            );
            let kept = dir.join(format!("{name}.damaged"));
            assert_eq!(kept.exists(), damage != "delete", "{ctx}");
            let s = open_writer(&dir, Recovery::Strict).unwrap();
            assert_keeps_all_but(&s, &lost, &format!("{ctx}, repaired"));
        }
    }
}

#[test]
fn a_read_only_salvage_changes_no_byte_on_disk() {
    let tmp = TempDir::new("salvage-ro");
    let dir = tmp.path("s");
    build(&dir);
    flip(&dir, "vec", 15 * DIM as u64 * 4 + 3, 0);
    let snapshot = |d: &Path| -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    };
    let before = snapshot(&dir);
    let s = WarmStore::open_read_only_with(&dir, Recovery::Salvage).unwrap();
    assert_eq!(rows_of(s.quarantined()), BTreeSet::from([15]));
    assert!(matches!(s.put("x", &[0.0; DIM], b""), Err(Error::ReadOnly)));
    drop(s);
    assert!(
        before == snapshot(&dir),
        "a read-only salvage changed the store"
    );
}

#[test]
fn the_lock_deletion_case_needs_no_repair() {
    let tmp = TempDir::new("salvage-lock");
    let dir = tmp.path("s");
    build(&dir);
    let writer = open_writer(&dir, Recovery::Strict).unwrap();
    std::fs::remove_file(dir.join("LOCK")).unwrap();
    assert!(matches!(
        WarmStore::open(&dir),
        Err(Error::StoreLocked { .. })
    ));
    writer
        .put("late", &data::random_vec(DIM, 2, 0), b"late")
        .unwrap();
    writer.flush().unwrap();
    drop(writer);
    let s = open_writer(&dir, Recovery::Salvage).unwrap();
    assert!(s.quarantined().is_empty(), "{:?}", s.quarantined());
    assert_eq!(s.len(), N + 1);
}

#[test]
fn a_damaged_quarantine_file_is_named() {
    let tmp = TempDir::new("salvage-qfile");
    let dir = tmp.path("s");
    build(&dir);
    flip(&dir, "vec", 100 * DIM as u64 * 4, 1);
    drop(open_writer(&dir, Recovery::Salvage).unwrap());
    let q = dir.join("quarantine.hv");
    let mut bytes = std::fs::read(&q).unwrap();
    bytes[12] ^= 1;
    std::fs::write(&q, &bytes).unwrap();
    for r in [
        WarmStore::open_read_only(&dir),
        open_writer(&dir, Recovery::Strict),
    ] {
        match r {
            Err(Error::CorruptStore { file, .. }) => assert_eq!(file, q),
            other => panic!("damaged quarantine file: {other:?}"),
        }
    }
}

/// `kill -9` at random moments of `hybridvec repair`: afterwards the store either still
/// needs the repair (strict open refuses it; a repair then works) or is repaired; either
/// way every undamaged record is there.
#[test]
fn kill_9_during_repair_then_open() {
    let tmp = TempDir::new("salvage-kill");
    let pristine = tmp.path("pristine");
    build(&pristine);
    flip(&pristine, "vec", 7 * DIM as u64 * 4, 2);
    flip(&pristine, "blob", 40_000, 5);
    let lost: BTreeSet<u64> = WarmStore::open_read_only_with(&pristine, Recovery::Salvage)
        .unwrap()
        .quarantined()
        .iter()
        .map(|d| d.row)
        .collect();
    assert_eq!(lost.len(), 2);
    let mut rng = data::Rng::new(9, 0);
    let (mut finished, mut interrupted) = (0, 0);
    for round in 0..40 {
        let dir = tmp.path("work");
        copy_store(&pristine, &dir);
        let mut child = cli()
            .args(["repair", "--store", dir.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.below(8_000)));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() {
            finished += 1;
        } else {
            interrupted += 1;
        }
        let ctx = format!("round {round} ({status})");
        match WarmStore::open_read_only(&dir) {
            Ok(s) => assert_keeps_all_but(&s, &lost, &ctx),
            Err(Error::CorruptStore { .. }) => {
                assert!(
                    !status.success(),
                    "{ctx}: repair succeeded but the store is not repaired"
                );
                let o = run(&["repair", "--store", dir.to_str().unwrap()]);
                assert!(o.status.success(), "{ctx}: repair after a kill: {o:?}");
                let s = open_writer(&dir, Recovery::Strict).unwrap();
                assert_keeps_all_but(&s, &lost, &format!("{ctx}, repaired again"));
            }
            Err(e) => panic!("{ctx}: {e}"),
        }
    }
    eprintln!("{finished} repairs finished, {interrupted} killed");
}

#[test]
fn verify_says_what_a_repair_would_drop_and_repair_lists_it() {
    let tmp = TempDir::new("salvage-cli");
    let dir = tmp.path("s");
    let d = dir.to_str().unwrap();
    let o = run(&[
        "ingest", "--store", d, "--dim", "8", "--random", "3000", "--seed", "4",
    ]);
    assert!(o.status.success());
    flip(&dir, "vec", 15 * 32 + 3, 0);
    let o = run(&["verify", "--store", d, "--expect-seed", "4"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains("would drop 1 damaged records and keep 2999"),
        "{out}"
    );
    assert!(out.contains("row 15 (id \"rec-15\")"), "{out}");
    // Reading commands leave the damaged record out, with a warning, and work.
    let o = run(&["get", "--store", d, "--id", "rec-16"]);
    assert!(o.status.success(), "{o:?}");
    assert!(common::stderr(&o).contains("repair --store"), "{o:?}");
    let o = run(&["repair", "--store", d]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    assert!(out.contains("quarantined row 15 (id \"rec-15\")"), "{out}");
    assert!(out.contains("kept 2999 records"), "{out}");
    let o = run(&["verify", "--store", d, "--expect-seed", "4"]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("1 records were quarantined by an earlier repair"));
    let o = run(&["repair", "--store", d]);
    assert!(
        stdout(&o).starts_with("nothing to repair: 2999 records"),
        "{}",
        stdout(&o)
    );
}

//! Crash safety of the warm tier.
//!
//! * Simulated power loss: at random points, a crash image is built from the files as of
//!   the last flush plus a random subset of the 4 KiB pages written since. Every image must
//!   open, and every record acknowledged by a flush must read back bit-exact.
//! * Real `kill -9`: a child `hybridvec ingest --flush-every M` is killed at random times;
//!   every record it reported as flushed must verify.
//!
//! Both run for f32 stores and, fewer rounds, for f16 and bf16 ones (whose records hold
//! the rounded values), and for stores with an int8 scan tier, whose every committed
//! entry must pass its check in every image (none damaged, none rebuilt).
//!
//! `HYBRIDVEC_HEAVY_TESTS=1` runs more of both.

mod common;

use common::image::{crash_image, snapshot, write_image, PAGE};
use common::reference::stored_as;
use common::TempDir;
use hybridvec::{data, ElementType, StoreConfig, WarmStore};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn heavy() -> bool {
    std::env::var("HYBRIDVEC_HEAVY_TESTS").is_ok()
}

type Model = HashMap<String, Option<(Vec<f32>, Vec<u8>)>>;

fn check_image(dir: &Path, durable: &Model, what: &str) {
    if let Err(e) = image_holds(dir, durable) {
        panic!("{what}: {e}");
    }
}

/// Whether the store image at `dir` opens and holds exactly `model`, bit for bit.
fn image_holds(dir: &Path, model: &Model) -> Result<(), String> {
    // A child spawned by the kill -9 test in this binary holds copies of every descriptor,
    // the lock included, between its fork and its exec: open_writer retries that brief
    // StoreLocked.
    let s = common::open_writer(dir, hybridvec::Recovery::Strict)
        .map_err(|e| format!("crash image does not open: {e}"))?;
    if let Some(d) = s.int8_tier_damage() {
        return Err(format!("int8 tier damaged: {d:?}"));
    }
    let live = model.values().filter(|v| v.is_some()).count() as u64;
    if s.len() != live {
        return Err(format!("{} live records, expected {live}", s.len()));
    }
    for (id, want) in model {
        let got = s.get(id).map_err(|e| format!("{id}: {e}"))?;
        match (want, got) {
            (None, None) => {}
            (Some((emb, content)), Some(rec)) => {
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                if bits(&rec.embedding) != bits(emb) || &rec.content != content {
                    return Err(format!("{id}: embedding or content differs"));
                }
            }
            (w, g) => {
                return Err(format!(
                    "{id}: expected present={}, got row {:?}",
                    w.is_some(),
                    g.map(|r| r.row)
                ))
            }
        }
    }
    Ok(())
}

/// Small chunks, so a few hundred records span several chunk files.
fn small_config(dim: usize) -> StoreConfig {
    StoreConfig {
        dim,
        first_chunk_bytes: 4096,
        max_chunk_bytes: 16384,
    }
}

/// A burst of puts, supersedes and deletes over ids `id-0..ids`, recorded in `model` (as
/// the store keeps them).
fn burst(s: &WarmStore, model: &mut Model, rng: &mut data::Rng, n: u64, ids: u64, dim: usize) {
    let element = s.element_type();
    for _ in 0..n {
        let id = format!("id-{}", rng.below(ids));
        if rng.below(8) == 0 {
            s.delete(&id).unwrap();
            model.insert(id, None);
        } else {
            let emb = data::random_vec(dim, rng.next_u64(), 0);
            let content: Vec<u8> = (0..rng.below(300)).map(|_| rng.next_u64() as u8).collect();
            s.put(&id, &emb, &content).unwrap();
            model.insert(id, Some((stored_as(element, &emb), content)));
        }
    }
}

/// A crash in the middle of `flush`. Flush writes data back first and the superblock
/// last, so the images are (a) the old files plus any subset of the new data pages with
/// the old superblock, which must open as the old state, and (b) all new data with the
/// superblock write torn at any byte, which must open as the old state or the new one,
/// never a mix (and as the new one once every byte landed).
#[test]
fn crash_mid_flush_opens_the_old_or_the_new_state() {
    let rounds = if heavy() { 600 } else { 100 };
    let (dim, cfg) = (8, small_config(8));
    let dir = TempDir::new("crash-midflush");
    let img = TempDir::new("crash-midflush-img");
    let store_dir = dir.path("s");
    let s = WarmStore::create(&store_dir, cfg).unwrap();
    let mut rng = data::Rng::new(4048, 0);
    let mut model: Model = HashMap::new();
    s.flush().unwrap();
    let (mut images, mut torn_new, mut torn_old) = (0, 0, 0);
    for round in 0..rounds {
        let old_model = model.clone();
        let old = snapshot(&store_dir).unwrap();
        let n = 1 + rng.below(150);
        burst(&s, &mut model, &mut rng, n, 500, dim);
        s.flush().unwrap();
        let new = snapshot(&store_dir).unwrap();
        let zeros = |n: usize| vec![0u8; n];
        for image in 0..6 {
            let what = format!("round {round} image {image}");
            let mut files = BTreeMap::new();
            if image % 2 == 0 {
                // (a) Data partly written back; superblock not yet written.
                let keep_percent = rng.below(101);
                for (name, now) in &new {
                    let mut bytes = old.get(name).cloned().unwrap_or_else(|| zeros(now.len()));
                    if name != "store.hv" {
                        for p in (0..now.len()).step_by(PAGE) {
                            let end = (p + PAGE).min(now.len());
                            if rng.below(100) < keep_percent {
                                bytes[p..end].copy_from_slice(&now[p..end]);
                            }
                        }
                    }
                    files.insert(name.clone(), bytes);
                }
                write_image(img.dir(), &files).unwrap();
                check_image(img.dir(), &old_model, &what);
            } else {
                // (b) All data durable; the superblock write torn at byte granularity.
                let mut files = new.clone();
                let (was, now) = (&old["store.hv"], &new["store.hv"]);
                let changed: Vec<usize> = (0..now.len()).filter(|&i| was[i] != now[i]).collect();
                assert!(!changed.is_empty(), "{what}: flush wrote no superblock");
                let keep_percent = rng.below(101);
                let mut sb = was.clone();
                let mut kept = 0;
                for &i in &changed {
                    if rng.below(100) < keep_percent {
                        sb[i] = now[i];
                        kept += 1;
                    }
                }
                files.insert("store.hv".into(), sb);
                write_image(img.dir(), &files).unwrap();
                let as_new = image_holds(img.dir(), &model);
                let as_old = image_holds(img.dir(), &old_model);
                if kept == changed.len() {
                    as_new.unwrap_or_else(|e| panic!("{what}: complete superblock: {e}"));
                } else if kept == 0 {
                    as_old.unwrap_or_else(|e| panic!("{what}: untouched superblock: {e}"));
                } else {
                    assert!(
                        as_new.is_ok() || as_old.is_ok(),
                        "{what}: torn superblock gave neither state: {as_old:?} / {as_new:?}"
                    );
                    if as_new.is_ok() {
                        torn_new += 1;
                    } else {
                        torn_old += 1;
                    }
                }
            }
            images += 1;
        }
    }
    assert!(torn_old > 0, "no torn superblock was ever rejected");
    eprintln!("checked {images} mid-flush images ({torn_old} torn superblocks fell back, {torn_new} held)");
}

#[test]
fn simulated_power_loss_keeps_every_flushed_record() {
    let target = if heavy() { 20_000 } else { 2_000 };
    power_loss(ElementType::F32, false, target, "crash-power");
}

#[test]
fn simulated_power_loss_keeps_the_int8_tier_sound() {
    let target = if heavy() { 5_000 } else { 600 };
    power_loss(ElementType::F32, true, target, "crash-power-tier");
    power_loss(ElementType::F16, true, target / 3, "crash-power-tier-f16");
}

#[test]
fn simulated_power_loss_keeps_every_flushed_16_bit_record() {
    let target = if heavy() { 5_000 } else { 600 };
    power_loss(ElementType::F16, false, target, "crash-power-f16");
    power_loss(ElementType::Bf16, false, target, "crash-power-bf16");
}

/// Crash images of a store of `element` (with an int8 tier when `tiered`) under random
/// bursts, until `target` images held.
fn power_loss(element: ElementType, tiered: bool, target: usize, name: &str) {
    let images_per_round = 40;
    let (dim, cfg) = (8, small_config(8));
    let dir = TempDir::new(name);
    let img = TempDir::new(&format!("{name}-img"));
    let store_dir = dir.path("s");
    let mut s = WarmStore::create_with_element(&store_dir, cfg, element).unwrap();
    if tiered {
        s.build_int8_tier().unwrap();
    }
    let s = s;
    let mut rng = data::Rng::new(2024, 0);
    let mut model: Model = HashMap::new();
    let mut durable: Model = HashMap::new();
    let mut synced = snapshot(&store_dir).unwrap();
    let mut images = 0;
    let mut round = 0;
    while images < target {
        round += 1;
        // A burst of puts, supersedes and deletes over a small id space, then maybe a flush.
        let n = rng.below(120);
        burst(&s, &mut model, &mut rng, n, 400, dim);
        if rng.below(3) == 0 {
            s.flush().unwrap();
            durable = model.clone();
            synced = snapshot(&store_dir).unwrap();
            continue;
        }
        // Crash now: the synced files plus a random subset of the pages written since.
        let current = snapshot(&store_dir).unwrap();
        for image in 0..images_per_round {
            let keep_percent = rng.below(101);
            let files = crash_image(&synced, &current, keep_percent, &mut rng)
                .unwrap_or_else(|e| panic!("round {round} image {image}: {e}"));
            assert_eq!(files.contains_key("tier.hv"), tiered);
            write_image(img.dir(), &files).unwrap();
            check_image(img.dir(), &durable, &format!("round {round} image {image}"));
            images += 1;
        }
    }
    assert!(
        durable.len() > 100,
        "too few flushed records to prove anything"
    );
    eprintln!("checked {images} crash images over {round} rounds");
}

#[test]
fn kill_9_during_ingest_loses_nothing_acknowledged() {
    kill_9_rounds(ElementType::F32, false, if heavy() { 200 } else { 50 });
}

#[test]
fn kill_9_during_a_tiered_ingest_loses_nothing_and_keeps_the_tier_sound() {
    kill_9_rounds(ElementType::F32, true, if heavy() { 60 } else { 15 });
}

#[test]
fn kill_9_during_a_16_bit_ingest_loses_nothing_acknowledged() {
    kill_9_rounds(ElementType::F16, false, if heavy() { 60 } else { 15 });
    kill_9_rounds(ElementType::Bf16, false, if heavy() { 60 } else { 15 });
}

/// `kills` ingests of a store of `element` (`--int8-tier` when `tiered`) killed at random
/// times.
fn kill_9_rounds(element: ElementType, tiered: bool, kills: u64) {
    let exe = common::exe();
    let mut rng = data::Rng::new(77, 0);
    let mut acknowledged_total = 0u64;
    for round in 0..kills {
        let dir = TempDir::new(&format!("crash-kill-{element}-{tiered}-{round}"));
        let store = dir.path("s");
        let seed = 1000 + round;
        let mut child = Command::new(&exe)
            .args([
                "ingest",
                "--store",
                store.to_str().unwrap(),
                "--dim",
                "16",
                "--random",
                "100000000",
            ])
            .args(["--seed", &seed.to_string(), "--flush-every", "97"])
            .args(["--dtype", element.name()])
            .args(tiered.then_some("--int8-tier"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut last = 0u64;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("flushed ") {
                    last = n.parse().unwrap();
                }
            }
            last
        });
        std::thread::sleep(Duration::from_millis(10 + rng.below(150)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acknowledged = reader.join().unwrap();
        acknowledged_total += acknowledged;
        if !store.join("store.hv").exists() {
            assert_eq!(
                acknowledged, 0,
                "round {round}: flushes reported but no store"
            );
            continue;
        }
        // Every acknowledged record, bit for bit; and the CLI verifier agrees.
        let s = WarmStore::open_read_only(&store).unwrap();
        // The tier, once in place, covers every committed row soundly.
        if store.join("tier.hv").exists() {
            assert!(tiered, "round {round}");
            assert!(
                s.has_int8_tier(),
                "round {round}: {:?}",
                s.int8_tier_damage()
            );
        }
        assert_eq!(s.int8_tier_damage(), None, "round {round}");
        assert!(
            s.len() >= acknowledged,
            "round {round}: {} < {acknowledged}",
            s.len()
        );
        for i in 0..acknowledged {
            let (id, emb, content) = data::random_record(seed, i, 16);
            let rec = s
                .get(&id)
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: {id} lost"));
            assert_eq!(
                (rec.embedding, rec.content),
                (stored_as(element, &emb), content),
                "round {round}: {id}"
            );
        }
        drop(s);
        let out = Command::new(&exe)
            .args([
                "verify",
                "--store",
                store.to_str().unwrap(),
                "--expect-seed",
                &seed.to_string(),
                "--json",
            ])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["ok"], true, "round {round}: {v}");
        assert!(out.status.success());
    }
    assert!(
        acknowledged_total > 0,
        "no ingest lived long enough to flush: the test proved nothing"
    );
    eprintln!("{kills} kills, {acknowledged_total} acknowledged records verified");
}

//! The store format: disk use that follows the data (chunks sized in bytes, doubling to a
//! cap), and stores written in format version 1 still opening, reading and growing.

mod common;

use common::TempDir;
use hybridvec::{data, StoreConfig, WarmStore};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Bytes the files of `dir` occupy on disk (allocated blocks, which fallocate fills).
fn disk_use(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap())
        .filter(|m| m.is_file())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// The constant the bound allows on top of twice the data: per region one first chunk
/// (64 KiB) and twice the grow-ahead (at most 1 MiB), plus the 12 KiB store file.
const SLACK: u64 = 3 * (64 << 10) + 3 * 2 * (1 << 20) + (12 << 10);

#[test]
fn disk_use_is_at_most_twice_the_data_plus_a_constant() {
    let tmp = TempDir::new("disk-use");
    // (dim, records): a single record, a few, many; tiny and huge dimensions.
    let cases: &[(usize, u64)] = &[
        (8, 1),
        (8, 100),
        (3, 20_000),
        (768, 1),
        (768, 100),
        (768, 3_000),
        (1536, 700),
        (100_000, 3),
        (1_000_000, 2),
    ];
    for &(dim, n) in cases {
        let dir = tmp.path(&format!("d{dim}-n{n}"));
        let s = WarmStore::create(&dir, StoreConfig::new(dim)).unwrap();
        let mut data_bytes = 0u64;
        for i in 0..n {
            let (id, emb, content) = data::random_record(1, i, dim);
            s.put(&id, &emb, &content).unwrap();
            // The vector, its 32 bytes of metadata, the id and the content.
            data_bytes += (dim * 4 + 32 + id.len() + content.len()) as u64;
        }
        s.flush().unwrap();
        drop(s);
        let used = disk_use(&dir);
        eprintln!("dim {dim} × {n}: {data_bytes} bytes of data, {used} on disk");
        assert!(
            used <= 2 * data_bytes + SLACK,
            "dim {dim} × {n}: {used} bytes on disk for {data_bytes} of data"
        );
        // Small stores stay small (one record at dim 768 once took 113 MB).
        if data_bytes < 64 << 10 {
            assert!(used <= 256 << 10, "dim {dim} × {n}: {used} bytes on disk");
        }
        // And the store reads back.
        let s = WarmStore::open_read_only(&dir).unwrap();
        assert_eq!(s.len(), n);
        let last = format!("rec-{}", n - 1);
        let (_, emb, _) = data::random_record(1, n - 1, dim);
        assert_eq!(s.get(&last).unwrap().unwrap().embedding, emb);
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// What the version-1 fixture holds (see `tests/fixtures/store-v1/README.md`).
fn v1_model() -> HashMap<String, (u64, u64)> {
    let mut m: HashMap<String, (u64, u64)> =
        (0..1100).map(|i| (format!("rec-{i}"), (5, i))).collect();
    for i in 0..20u64 {
        m.remove(&format!("rec-{}", i * 7));
    }
    for i in 0..30u64 {
        let r = i * 11 + 1;
        m.insert(format!("rec-{r}"), (6, r));
    }
    m
}

fn assert_holds(s: &WarmStore, model: &HashMap<String, (u64, u64)>, what: &str) {
    assert_eq!(s.len(), model.len() as u64, "{what}");
    for (id, &(seed, i)) in model {
        let (_, emb, content) = data::random_record(seed, i, s.dim());
        let r = s
            .get(id)
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: {id} missing"));
        assert_eq!((r.embedding, r.content), (emb, content), "{what}: {id}");
    }
    for i in 0..20u64 {
        let id = format!("rec-{}", i * 7);
        if !model.contains_key(&id) {
            assert_eq!(s.get(&id).unwrap(), None, "{what}: deleted {id} is back");
        }
    }
}

#[test]
fn a_version_1_store_opens_reads_and_grows() {
    let tmp = TempDir::new("v1");
    let fixture = common::source_path("tests/fixtures/store-v1");
    let dir = tmp.path("store");
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(&fixture).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name != "README.md" {
            std::fs::copy(e.path(), dir.join(&name)).unwrap();
        }
    }
    let mut model = v1_model();
    assert_holds(
        &WarmStore::open_read_only(&dir).unwrap(),
        &model,
        "read-only",
    );
    // A writer grows it in its own (fixed-size) chunks, and it stays version 1.
    let s = WarmStore::open(&dir).unwrap();
    assert_holds(&s, &model, "writable");
    for i in 1100..3500u64 {
        let (id, emb, content) = data::random_record(5, i, 8);
        s.put(&id, &emb, &content).unwrap();
        model.insert(id, (5, i));
    }
    s.flush().unwrap();
    drop(s);
    let s = WarmStore::open(&dir).unwrap();
    assert_holds(&s, &model, "grown and reopened");
    let header = std::fs::read(dir.join("store.hv")).unwrap();
    assert_eq!(u32::from_le_bytes(header[8..12].try_into().unwrap()), 1);
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let len = e.metadata().unwrap().len();
        if name.starts_with("vec-") || name.starts_with("meta-") {
            assert_eq!(len, 1024 * 32, "{name}");
        } else if name.starts_with("blob-") {
            assert_eq!(len, 4096, "{name}");
        }
    }
}

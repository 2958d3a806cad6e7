//! The warm tier against misuse, through its public API: one writer at a time beside any
//! number of readers, a wrong dimension, create over an existing store, bad configs, puts
//! that must be refused, and row numbers out of range. Nothing refused changes the store.
//! (Damaged files: `tests/warm_corruption.rs`.)

mod common;

use common::store_fixture::{
    assert_holds_first, assert_is_record, assert_opens_whole, config, embedding, id, locate, mode,
    open, Fixture, DIM, META_BYTES, N,
};
use common::TempDir;
use hybridvec::{Error, StoreConfig, WarmStore};
use std::fs;

#[test]
fn one_writer_at_a_time_and_read_only_opens_beside_it() {
    let fx = Fixture::new("locking");
    let dir = fx.fresh_copy();
    let writer = WarmStore::open(dir).unwrap();
    for r in [WarmStore::open(dir), WarmStore::open_with_dim(dir, DIM)] {
        match r {
            Err(Error::StoreLocked { dir: d }) => assert_eq!(d, dir),
            other => panic!("second writer: {other:?}"),
        }
    }
    // Unflushed writes of the writer are not durable, so a reader does not see them.
    writer.put("pending", &embedding(N), b"p").unwrap();
    let reader = WarmStore::open_read_only(dir).unwrap();
    assert_holds_first(&reader, N, "read-only beside a writer");
    assert_eq!(reader.get("pending").unwrap(), None);
    assert!(matches!(
        reader.put("new", &embedding(0), b""),
        Err(Error::ReadOnly)
    ));
    assert!(matches!(reader.delete(&id(0)), Err(Error::ReadOnly)));
    assert!(matches!(reader.flush(), Err(Error::ReadOnly)));
    assert_eq!(reader.len(), N as u64);
    assert_is_record(
        &reader.get(&id(0)).unwrap().unwrap(),
        0,
        "after refused writes",
    );
    // Once flushed, a new reader sees the write.
    assert_eq!(writer.flush().unwrap(), N as u64 + 1);
    let reader2 = WarmStore::open_read_only(dir).unwrap();
    assert_eq!(reader2.get("pending").unwrap().unwrap().content, b"p");
    // Readers hold no lock: with the writer gone, a new writer opens while they live.
    drop(writer);
    let writer = WarmStore::open(dir).unwrap();
    assert_eq!(writer.len(), N as u64 + 1);
    assert!(matches!(
        WarmStore::open(dir),
        Err(Error::StoreLocked { .. })
    ));
    drop((writer, reader, reader2));
    assert_eq!(WarmStore::open(dir).unwrap().len(), N as u64 + 1);
}

#[test]
fn wrong_dimension_and_create_over_a_store_are_refused() {
    let fx = Fixture::new("dim-create");
    let dir = fx.fresh_copy();
    match WarmStore::open_with_dim(dir, 9) {
        Err(Error::DimensionMismatch { expected, got }) => assert_eq!((expected, got), (9, 8)),
        other => panic!("{other:?}"),
    }
    // The refused open let go of the lock.
    let s = WarmStore::open_with_dim(dir, DIM).unwrap();
    // Creating over an existing store fails, open or not, and leaves it intact.
    assert!(WarmStore::create(dir, config()).is_err());
    drop(s);
    assert!(WarmStore::create(dir, config()).is_err());
    assert!(WarmStore::create(dir, StoreConfig::new(4)).is_err());
    assert_opens_whole(dir, "after create over it");
    // Nothing there to open.
    let empty = fx.tmp.path("empty");
    fs::create_dir_all(&empty).unwrap();
    let missing = fx.tmp.path("missing");
    for d in [&empty, &missing] {
        for writable in [false, true] {
            let ctx = format!("{}, {}", d.display(), mode(writable));
            let r = open(d, writable, &ctx);
            assert!(
                matches!(&r, Err(e) if e.io_error().map(|e| e.kind()) == Some(std::io::ErrorKind::NotFound)),
                "{ctx}: {r:?}"
            );
        }
    }
}

#[test]
fn bad_configs_are_refused_before_touching_the_disk() {
    let tmp = TempDir::new("misuse-bad-config");
    let bad = [
        (StoreConfig::new(0), "dim 0"),
        (
            StoreConfig::new(hybridvec::MAX_STORE_DIM + 1),
            "dim over the maximum",
        ),
        (
            StoreConfig {
                first_chunk_bytes: 0,
                ..config()
            },
            "first_chunk_bytes 0",
        ),
        (
            StoreConfig {
                first_chunk_bytes: 6144,
                ..config()
            },
            "first_chunk_bytes 6144 (not a power of two)",
        ),
        (
            StoreConfig {
                first_chunk_bytes: 2048,
                ..config()
            },
            "first_chunk_bytes 2048 (under a page)",
        ),
        (
            StoreConfig {
                first_chunk_bytes: 32768,
                ..config()
            },
            "first_chunk_bytes over max_chunk_bytes",
        ),
        (
            StoreConfig {
                max_chunk_bytes: 1 << 35,
                ..config()
            },
            "max_chunk_bytes 32 GiB",
        ),
    ];
    for (cfg, what) in bad {
        let dir = tmp.path("store");
        match WarmStore::create(&dir, cfg) {
            Err(Error::EmptyInput { .. }) if what == "dim 0" => {}
            Err(Error::InvalidConfig(_)) if what != "dim 0" => {}
            other => panic!("{what}: {other:?}"),
        }
        assert!(!dir.exists(), "{what}: created {}", dir.display());
    }
}

#[test]
fn bad_puts_are_refused_and_change_nothing() {
    let fx = Fixture::new("bad-puts");
    let dir = fx.fresh_copy();
    let s = WarmStore::open(dir).unwrap();
    let before = s.stats();
    let good = embedding(N);
    let mut nan = good.clone();
    nan[3] = f32::NAN;
    let mut inf = good.clone();
    inf[7] = f32::NEG_INFINITY;
    let tiny = vec![1e-35f32; DIM];
    let cases: Vec<(&str, &str, Vec<f32>)> = vec![
        ("short", "new", good[..DIM - 1].to_vec()),
        ("long", "new", [good.as_slice(), &[1.0]].concat()),
        ("empty vector", "new", Vec::new()),
        ("nan", "new", nan),
        ("inf", "new", inf),
        ("tiny norm", "new", tiny),
        ("empty id", "", good.clone()),
        ("short, existing id", "rec-0", good[..2].to_vec()),
        ("nan, existing id", "rec-0", {
            let mut v = embedding(0);
            v[0] = f32::NAN;
            v
        }),
    ];
    for (what, key, v) in &cases {
        let r = s.put(key, v, b"never stored");
        let ok = match what {
            w if w.starts_with("short") || w.starts_with("long") || *w == "empty vector" => {
                matches!(r, Err(Error::DimensionMismatch { expected: 8, got }) if got == v.len())
            }
            w if w.starts_with("nan") => {
                let col = v.iter().position(|x| x.is_nan()).unwrap();
                matches!(r, Err(Error::NonFinite { row: 0, col: c }) if c == col)
            }
            &"inf" => matches!(r, Err(Error::NonFinite { row: 0, col: 7 })),
            &"tiny norm" => matches!(r, Err(Error::NormOutOfRange { .. })),
            &"empty id" => matches!(r, Err(Error::EmptyInput { .. })),
            _ => unreachable!(),
        };
        assert!(ok, "{what}: {r:?}");
        assert_eq!(s.stats(), before, "{what} changed the store");
        assert_eq!(s.len(), N as u64, "{what}");
    }
    assert!(matches!(s.delete(""), Err(Error::EmptyInput { .. })));
    assert_eq!(s.stats(), before, "delete(\"\") changed the store");
    assert_is_record(&s.get(&id(0)).unwrap().unwrap(), 0, "after refused puts");
    // No row was reserved by a refused put: the next good one takes the next row.
    assert_eq!(s.put("new", &good, b"ok").unwrap(), N as u64);
    assert_eq!(s.flush().unwrap(), N as u64 + 1);
    drop(s);
    let s = WarmStore::open(dir).unwrap();
    assert_eq!(s.len(), N as u64 + 1);
    assert_eq!(s.get("new").unwrap().unwrap().content, b"ok");
    assert_is_record(&s.get(&id(0)).unwrap().unwrap(), 0, "after reopen");
}

/// Row numbers from a caller are checked before any arithmetic or memory access: rows
/// past the end, huge rows, empty rows and forged metadata past the committed rows all
/// give errors, never a panic, a wrong record or a wild read.
#[test]
fn rows_from_callers_are_bounds_checked() {
    let fx = Fixture::new("rows");
    let s = WarmStore::open(&fx.pristine).unwrap();
    for row in [N as u64, 1600, 5000, 1 << 59, u64::MAX] {
        assert!(
            matches!(s.read_record(row), Err(Error::NoSuchRow { .. })),
            "read_record({row})"
        );
        assert!(
            matches!(s.id_of(row), Err(Error::NoSuchRow { .. })),
            "id_of({row})"
        );
    }
    assert_eq!(s.id_of(3).unwrap(), id(3));
    drop(s);
    // Forge a published-looking metadata entry past the committed rows, pointing far out of
    // bounds: a read-only handle must neither show nor follow it.
    let (chunk, at) = locate(1600 * META_BYTES);
    let meta = fx.pristine.join(format!("meta-{chunk:06}.chunk"));
    let mut bytes = std::fs::read(&meta).unwrap();
    bytes[at..at + 4].copy_from_slice(&1u32.to_le_bytes());
    bytes[at + 8..at + 16].copy_from_slice(&(u64::MAX - 7).to_le_bytes());
    bytes[at + 16..at + 20].copy_from_slice(&16u32.to_le_bytes());
    std::fs::write(&meta, &bytes).unwrap();
    let ro = WarmStore::open_read_only(&fx.pristine).unwrap();
    assert!(ro.id_of(1600).is_err());
    assert!(ro.read_record(1600).is_err());
    assert_eq!(
        ro.corpus().rows(),
        N,
        "a torn row past the committed ones became visible"
    );
    drop(ro);
    // A writer clears such leftovers at open and then overwrites them.
    let rw = WarmStore::open(&fx.pristine).unwrap();
    assert!(rw.id_of(1600).is_err());
    assert_eq!(rw.corpus().rows(), N);
    assert_eq!(rw.put("new", &embedding(0), b"x").unwrap(), N as u64);
}

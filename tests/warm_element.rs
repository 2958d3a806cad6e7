//! Stores that keep f16 or bf16 vectors: records read back as the rounded values (and
//! their stored bytes), the element type survives reopening and is in the checksummed
//! header, searches score the stored rows, damage is caught, bad input is refused by name
//! and loses nothing, and the CLI's `ingest --dtype` makes and guards them. (Crash
//! safety of 16-bit stores: `tests/warm_crash.rs`.)

mod common;

use common::reference::stored_as;
use common::{run, stderr, stdout, TempDir};
use hybridvec::{
    bf16, data, f16, DevicePolicy, ElementType, Error, ExecutorConfig, HybridExecutor, MatrixRef,
    Recovery, StoreConfig, WarmStore,
};
use std::os::unix::fs::FileExt;

const DIM: usize = 24;

fn config() -> StoreConfig {
    StoreConfig {
        dim: DIM,
        first_chunk_bytes: 4096,
        max_chunk_bytes: 16384,
    }
}

fn bits(element: ElementType, v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| match element {
            ElementType::F16 => f16::from_f32(x).to_le_bytes(),
            _ => bf16::from_f32(x).to_le_bytes(),
        })
        .collect()
}

fn cosine64(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

#[test]
fn a_16_bit_store_keeps_the_rounded_rows_across_reopening_and_searches_them() {
    let exec = HybridExecutor::new(ExecutorConfig {
        device: DevicePolicy::Cpu,
        ..Default::default()
    })
    .unwrap();
    for element in [ElementType::F16, ElementType::Bf16] {
        let tmp = TempDir::new(&format!("element-{element}"));
        let dir = tmp.path("s");
        let s = WarmStore::create_with_element(&dir, config(), element).unwrap();
        assert_eq!(s.element_type(), element);
        let n = 700;
        let mut live = std::collections::BTreeMap::new();
        for i in 0..n {
            let v = data::random_vec(DIM, 5, i);
            let row = s.put(&format!("id-{i}"), &v, b"c").unwrap();
            live.insert(format!("id-{i}"), v.clone());
            let rec = s.read_record(row).unwrap();
            assert_eq!(rec.embedding, stored_as(element, &v));
            assert_eq!(s.read_raw(row).unwrap(), bits(element, &v));
        }
        for i in (0..n).step_by(7) {
            assert!(s.delete(&format!("id-{i}")).unwrap());
            live.remove(&format!("id-{i}"));
        }
        // A value f16 cannot hold is refused by name; nothing is stored.
        let mut big = data::random_vec(DIM, 6, 0);
        big[3] = 1.0e6;
        let before = s.len();
        match (element, s.put("big", &big, b"")) {
            (ElementType::F16, Err(Error::NotRepresentable { row: 0, col: 3, .. })) => {
                assert_eq!(s.len(), before);
                assert!(s.get("big").unwrap().is_none());
            }
            (ElementType::Bf16, Ok(_)) => {
                live.insert("big".into(), big.clone());
            }
            (_, other) => panic!("{element}: {other:?}"),
        }
        s.flush().unwrap();
        assert_eq!(
            s.stats().vector_bytes,
            s.stats().visible_rows * (DIM as u64) * 2
        );
        drop(s);
        assert_eq!(WarmStore::read_shape(&dir).unwrap(), (DIM, element));
        for writable in [false, true] {
            let s = if writable {
                WarmStore::open(&dir).unwrap()
            } else {
                WarmStore::open_read_only(&dir).unwrap()
            };
            assert_eq!(s.element_type(), element);
            assert_eq!(s.len() as usize, live.len());
            for (id, v) in &live {
                assert_eq!(
                    s.get(id).unwrap().unwrap().embedding,
                    stored_as(element, v),
                    "{id}"
                );
            }
            // Top-k over the stored rows against the f64 reference of the rounded rows.
            for q in [1usize, 3, 9, 30] {
                let qs = data::random_matrix(q, DIM, 40 + q as u64);
                let hits = exec
                    .top_k_store(MatrixRef::new(&qs, q, DIM).unwrap(), &s, 5)
                    .unwrap();
                for (i, h) in hits.iter().enumerate() {
                    let query = &qs[i * DIM..(i + 1) * DIM];
                    let mut want: Vec<(f64, &String)> = live
                        .iter()
                        .map(|(id, v)| (cosine64(query, &stored_as(element, v)), id))
                        .collect();
                    want.sort_by(|a, b| b.0.total_cmp(&a.0));
                    let got: Vec<&String> = h.iter().map(|h| &h.id).collect();
                    let want_ids: Vec<&String> = want[..5].iter().map(|w| w.1).collect();
                    assert_eq!(got, want_ids, "{element} Q={q} query {i}");
                    for (h, w) in h.iter().zip(&want) {
                        assert!((h.score as f64 - w.0).abs() < 1e-5);
                    }
                }
            }
        }
        // The element code is the top byte of the header's dimension word.
        let mut word = [0u8; 4];
        std::fs::File::open(dir.join("store.hv"))
            .unwrap()
            .read_exact_at(&mut word, 12)
            .unwrap();
        let code = if element == ElementType::F16 { 1 } else { 2 };
        assert_eq!(u32::from_le_bytes(word), DIM as u32 | code << 24);
    }
    // f32 stores are written as before: the word is the dimension alone.
    let tmp = TempDir::new("element-f32");
    drop(WarmStore::create(tmp.path("s"), config()).unwrap());
    let mut word = [0u8; 4];
    std::fs::File::open(tmp.path("s").join("store.hv"))
        .unwrap()
        .read_exact_at(&mut word, 12)
        .unwrap();
    assert_eq!(u32::from_le_bytes(word), DIM as u32);
}

#[test]
fn damage_to_a_16_bit_row_or_to_the_element_code_is_caught() {
    let tmp = TempDir::new("element-damage");
    let dir = tmp.path("s");
    let s = WarmStore::create_with_element(&dir, config(), ElementType::F16).unwrap();
    for i in 0..50 {
        s.put(&format!("id-{i}"), &data::random_vec(DIM, 9, i), b"x")
            .unwrap();
    }
    s.flush().unwrap();
    drop(s);
    let xor = |file: &str, at: u64, mask: u8| {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(file))
            .unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, at).unwrap();
        b[0] ^= mask;
        f.write_all_at(&b, at).unwrap();
    };
    // One bit of row 5's vector (2 bytes a value).
    let at = (5 * DIM * 2 + 7) as u64;
    xor("vec-000000.chunk", at, 0x10);
    match WarmStore::open_read_only(&dir) {
        Err(Error::CorruptStore { file, reason, .. }) => {
            assert!(reason.contains("row 5"), "{reason}");
            assert!(file.starts_with(&dir));
        }
        other => panic!("{other:?}"),
    }
    let salvaged = WarmStore::open_read_only_with(&dir, Recovery::Salvage).unwrap();
    assert_eq!(salvaged.len(), 49);
    assert!(salvaged.get("id-5").unwrap().is_none());
    drop(salvaged);
    xor("vec-000000.chunk", at, 0x10);
    assert_eq!(WarmStore::open_read_only(&dir).unwrap().len(), 50);
    // The element code is under the header's checksum.
    xor("store.hv", 15, 0x03);
    assert!(matches!(
        WarmStore::open_read_only(&dir),
        Err(Error::CorruptStore { offset: 32, .. })
    ));
    assert!(WarmStore::read_shape(&dir).is_err());
    xor("store.hv", 15, 0x03);
    // An unknown code under a valid checksum is named.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("store.hv"))
        .unwrap();
    let mut head = [0u8; 36];
    f.read_exact_at(&mut head, 0).unwrap();
    head[15] = 7;
    let crc = crc32c::crc32c(&head[..32]);
    head[32..].copy_from_slice(&crc.to_le_bytes());
    f.write_all_at(&head, 0).unwrap();
    match WarmStore::open_read_only(&dir) {
        Err(Error::CorruptStore { reason, .. }) => assert!(reason.contains("element"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ingest_dtype_makes_16_bit_stores_and_refuses_what_they_cannot_hold() {
    let tmp = TempDir::new("element-cli");
    let store = tmp.path("s");
    let st = store.to_str().unwrap();
    let o = run(&[
        "ingest", "--store", st, "--dim", "16", "--random", "300", "--dtype", "bf16",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        WarmStore::read_shape(&store).unwrap(),
        (16, ElementType::Bf16)
    );
    let o = run(&["verify", "--store", st, "--expect-seed", "7"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // More records: the store's own type when --dtype is left out, refused when another.
    let o = run(&[
        "ingest", "--store", st, "--dim", "16", "--random", "10", "--seed", "8",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[
        "ingest", "--store", st, "--dim", "16", "--random", "10", "--dtype", "f16",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("bf16") && stderr(&o).contains("f16"),
        "{}",
        stderr(&o)
    );
    let o = run(&[
        "query", "--store", st, "--random", "2", "--k", "3", "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 2);
    // A value f16 cannot hold: refused by file, row and column, and no store is made.
    let mut rows = data::random_matrix(4, 16, 3);
    rows[2 * 16 + 5] = 70_000.0;
    let npy = tmp.path("big.npy");
    let m = hybridvec::Matrix::new(rows, 4, 16).unwrap();
    hybridvec::input::write_npy(&npy, &m).unwrap();
    let fresh = tmp.path("fresh");
    let args = [
        "ingest",
        "--store",
        fresh.to_str().unwrap(),
        "--dim",
        "16",
        "--input",
        npy.to_str().unwrap(),
    ];
    let mut f16_args = args.to_vec();
    f16_args.extend(["--dtype", "f16"]);
    let o = run(&f16_args);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("big.npy") && err.contains("row 2") && err.contains("column 5"),
        "{err}"
    );
    assert!(!fresh.exists());
    // bf16 holds it.
    let mut bf16_args = args.to_vec();
    bf16_args.extend(["--dtype", "bf16"]);
    let o = run(&bf16_args);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[
        "ingest", "--store", st, "--dim", "16", "--random", "1", "--dtype", "int8",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--dtype"));
}

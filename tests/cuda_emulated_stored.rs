//! Corpora stored in 16 bits (FP16, BF16) on the CUDA backend, run on the emulated driver
//! (`tests/common/emulated_driver.rs`): the device keeps the rows as stored, with no f32
//! copy (the driver's count of live bytes says how much it holds), and scores them exactly
//! with respect to the stored values, as the CPU does: every metric, small batches and
//! tiles, fused and filtered top-k, and a 16-bit store's deletes and appends. Each report
//! must name the device, so that a call quietly served by the CPU fails.

mod common;

use common::cuda_checks::device_executor as executor;
use common::emulated_driver::driver;
use common::reference::{spread_rows, stored_as};
use common::search_checks::{check_top_k_among, clustered_rows};
use hybridvec::{
    data, BackendKind, Corpus, CudaConfig, DevicePolicy, ElementType, MatrixRef, Metric, Precision,
    SearchOptions, StoreConfig, WarmStore,
};

const HALVES: [ElementType; 2] = [ElementType::F16, ElementType::Bf16];

#[test]
fn a_16_bit_corpus_is_scored_on_the_device_as_stored() {
    let Some(drv) = driver() else { return };
    let _held = drv.exclusive();
    let ex = executor(DevicePolicy::Cuda, CudaConfig::default());
    // Up to 8 queries: the memory-bound kernels (D = 17: scalar loads); more: the FP32
    // tiles over widened rows. k above 32: the filtered and chunked paths (700: inner
    // product and L2 ask for a margin of candidates past k, and the device takes 1024).
    let shapes = [
        (1, 1_500, 64, 10),
        (3, 700, 17, 7),
        (20, 600, 33, 10),
        (40, 1_100, 24, 100),
        (2, 1_200, 16, 700),
    ];
    for element in HALVES {
        for (i, &(q, n, d, k)) in shapes.iter().enumerate() {
            let seed = 40 + i as u64;
            let rows = if i % 2 == 0 {
                spread_rows(n, d, seed)
            } else {
                clustered_rows(n, d, seed)
            };
            let corpus = Corpus::with_element_type(rows.clone(), d, element).unwrap();
            let stored = stored_as(element, &rows);
            let qv = data::random_matrix(q, d, seed + 1);
            let qm = MatrixRef::new(&qv, q, d).unwrap();
            let all: Vec<usize> = (0..n).collect();
            for metric in [Metric::Cosine, Metric::InnerProduct, Metric::L2] {
                let (hits, report) = ex
                    .search_with_report(qm, &corpus, k, &SearchOptions::new(metric))
                    .unwrap();
                assert_eq!(report.backend, BackendKind::Gpu, "{report:?}");
                for (qi, h) in hits.iter().enumerate() {
                    let what = format!("{element} {metric} Q={q} N={n} D={d} k={k} query {qi}");
                    check_top_k_among(&what, metric, qm.row(qi), &stored, d, &all, k, h);
                }
            }
        }
    }
}

#[test]
fn the_device_holds_a_16_bit_corpus_in_half_the_bytes() {
    let Some(drv) = driver() else { return };
    let _held = drv.exclusive();
    let (q, n, d) = (3, 4_000, 64);
    let rows = data::random_matrix(n, d, 7);
    let qv = data::random_matrix(q, d, 8);
    let qm = MatrixRef::new(&qv, q, d).unwrap();
    // The bytes the device keeps between calls: the rows and their inverse norms.
    let resident = |corpus: &Corpus, precision: Precision| {
        let base = drv.counters().live_bytes;
        let ex = executor(
            DevicePolicy::Cuda,
            CudaConfig {
                precision,
                ..Default::default()
            },
        );
        let (_, report) = ex.top_k_with_report(qm, corpus, 10).unwrap();
        assert_eq!(report.backend, BackendKind::Gpu, "{report:?}");
        ex.release_cached_memory();
        let held = drv.counters().live_bytes - base;
        drop(ex);
        assert_eq!(
            drv.counters().live_bytes,
            base,
            "the backend gave its memory back"
        );
        held
    };
    let f32_bytes = resident(&Corpus::new(rows.clone(), d).unwrap(), Precision::Fp32);
    for element in HALVES {
        let corpus = Corpus::with_element_type(rows.clone(), d, element).unwrap();
        // FP16 precision over an FP16 corpus reads the stored rows on the tensor cores,
        // and over an f32 one it would add a 16-bit copy: neither makes a second copy here.
        for precision in [Precision::Fp32, Precision::Fp16, Precision::Bf16] {
            let held = resident(&corpus, precision);
            assert_eq!(
                f32_bytes - held,
                (n * d * 2) as u64,
                "{element} {precision:?}: held {held} bytes, the f32 corpus {f32_bytes}"
            );
        }
    }
}

#[test]
fn a_16_bit_store_keeps_its_deletes_and_appends_on_the_device() {
    let Some(drv) = driver() else { return };
    let _held = drv.exclusive();
    let ex = executor(DevicePolicy::Cuda, CudaConfig::default());
    let cpu = executor(DevicePolicy::Cpu, CudaConfig::default());
    for element in HALVES {
        let dir = common::TempDir::new("cuda-emulated-16-bit-store");
        let d = 24;
        let store = WarmStore::create_with_element(dir.path("store"), StoreConfig::new(d), element)
            .unwrap();
        let vecs = data::random_matrix(700, d, 5);
        for (i, v) in vecs.chunks(d).enumerate() {
            store.put(&format!("rec-{i}"), v, b"").unwrap();
        }
        let q = &vecs[..d];
        let qm = MatrixRef::new(q, 1, d).unwrap();
        assert_eq!(ex.top_k_store(qm, &store, 1).unwrap()[0][0].id, "rec-0");
        store.delete("rec-0").unwrap();
        let hits = ex.top_k_store(qm, &store, 5).unwrap();
        assert!(hits[0].iter().all(|h| h.id != "rec-0"), "{hits:?}");
        // Appended rows reach the device copy, which is extended in place.
        store.put("new", q, b"").unwrap();
        let (hits, report) = ex.top_k_store_with_report(qm, &store, 1).unwrap();
        assert_eq!(report.backend, BackendKind::Gpu, "{report:?}");
        assert_eq!(hits[0][0].id, "new");
        let qs = data::random_matrix(12, d, 6);
        let qm = MatrixRef::new(&qs, 12, d).unwrap();
        let ids = |h: &[hybridvec::StoreHit]| h.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
        for k in [1, 20, 300] {
            let (g, c) = (
                ex.top_k_store(qm, &store, k).unwrap(),
                cpu.top_k_store(qm, &store, k).unwrap(),
            );
            for (g, c) in g.iter().zip(&c) {
                assert_eq!(ids(g), ids(c), "{element} k = {k}");
            }
        }
    }
}

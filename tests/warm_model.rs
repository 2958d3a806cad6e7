//! Model test of the warm tier: random sequences of puts, gets, deletes, flushes, reopens,
//! simulated power losses and read-only opens, run against a `WarmStore` and a `HashMap`
//! model side by side.
//!
//! The model keeps two copies: `live` (what the writer must show now) and `durable` (what
//! the last successful flush made durable). A reopen or a crash resets `live` to `durable`;
//! a read-only handle opened beside the writer must show exactly `durable`.
//!
//! A crash image is the store's files as of the last flush (bytes taken right after it
//! returned) plus a random subset of the 4 KiB pages written since; files created since
//! the last flush start as zeros (they were created whole and fsynced). The image then
//! stands for the disk, so the next crash starts from it.
//!
//! `HYBRIDVEC_HEAVY_TESTS=1` runs 512 cases instead of 64.

mod common;

use common::image::{crash_image, snapshot, write_image, Files};
use common::TempDir;
use hybridvec::{data, Error, StoreConfig, WarmStore};
use proptest::prelude::*;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

const DIM: usize = 6;
/// Ids are `id-0` .. `id-29`: small enough that puts supersede and deletes hit.
const IDS: u8 = 30;

/// Live records by id: embedding and content.
type Model = HashMap<String, (Vec<f32>, Vec<u8>)>;

fn config() -> StoreConfig {
    // Small content chunks, so they grow (new files) during a case.
    StoreConfig {
        dim: DIM,
        first_chunk_bytes: 4096,
        max_chunk_bytes: 16384,
    }
}

fn cases() -> u32 {
    if std::env::var_os("HYBRIDVEC_HEAVY_TESTS").is_some() {
        512
    } else {
        64
    }
}

fn id_name(id: u8) -> String {
    format!("id-{id}")
}

#[derive(Clone, Debug)]
enum Op {
    Put { id: u8, seed: u64, content: Vec<u8> },
    Get { id: u8 },
    Delete { id: u8 },
    Flush,
    Reopen,
    Crash { seed: u64 },
    ReadOnlyCheck,
}

/// 0..200 bytes, half the time 150..200, so content chunks fill and grow within a case.
fn content() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        prop::collection::vec(any::<u8>(), 150..200),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0..IDS, any::<u64>(), content())
            .prop_map(|(id, seed, content)| Op::Put { id, seed, content }),
        2 => (0..IDS).prop_map(|id| Op::Get { id }),
        3 => (0..IDS).prop_map(|id| Op::Delete { id }),
        2 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        1 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
        1 => Just(Op::ReadOnlyCheck),
    ]
}

/// Turns any error into a failure of the case, saying what was being done.
fn ok<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(format!("{what}: {e}")))
}

/// The store files at `dir` (see [`snapshot`]), or a failure of the case.
fn files(dir: &Path) -> Result<Files, TestCaseError> {
    ok(snapshot(dir), "snapshot the store files")
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `store.get(id)` agrees with `model`: the same embedding bit for bit and the same
/// content, or absent from both.
fn check_id(store: &WarmStore, model: &Model, id: &str, what: &str) -> Result<(), TestCaseError> {
    let got = ok(store.get(id), &format!("{what}: get {id}"))?;
    match (model.get(id), got) {
        (None, None) => {}
        (Some((emb, content)), Some(rec)) => {
            prop_assert_eq!(&rec.id, id, "{}: record id", what);
            prop_assert_eq!(
                bits(&rec.embedding),
                bits(emb),
                "{}: {} embedding",
                what,
                id
            );
            prop_assert_eq!(&rec.content, content, "{}: {} content", what, id);
        }
        (want, got) => prop_assert!(
            false,
            "{}: {}: model has it: {}, store has row {:?}",
            what,
            id,
            want.is_some(),
            got.map(|r| r.row)
        ),
    }
    Ok(())
}

/// `len()` and every id of the id space agree with `model`, and the corpus view has
/// exactly `len()` live rows.
fn check_all(store: &WarmStore, model: &Model, what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(store.len(), model.len() as u64, "{}: len", what);
    for id in 0..IDS {
        check_id(store, model, &id_name(id), what)?;
    }
    let c = store.corpus();
    let live = (0..c.rows()).filter(|&i| c.is_live(i)).count() as u64;
    prop_assert_eq!(live, store.len(), "{}: live rows in the corpus", what);
    prop_assert_eq!(
        c.rows() as u64,
        store.stats().visible_rows,
        "{}: corpus rows",
        what
    );
    Ok(())
}

/// One case: the store, its directory and the model.
struct Case {
    // Declared before `dir`: the store is dropped (unmapped) before the directory goes.
    store: Option<WarmStore>,
    dir: TempDir,
    live: Model,
    durable: Model,
    /// The files right after the last successful flush (or the last crash image).
    synced: Files,
}

impl Case {
    fn new() -> Result<Self, TestCaseError> {
        // A fresh directory per case: a counter in the name.
        static CASE: AtomicUsize = AtomicUsize::new(0);
        let dir = TempDir::new(&format!("model-{}", CASE.fetch_add(1, Ordering::Relaxed)));
        let store = ok(WarmStore::create(dir.dir(), config()), "create")?;
        // A new store is durable (empty) when create returns.
        let synced = files(dir.dir())?;
        Ok(Self {
            store: Some(store),
            dir,
            live: Model::new(),
            durable: Model::new(),
            synced,
        })
    }

    fn store(&self) -> &WarmStore {
        self.store.as_ref().expect("store open")
    }

    fn reopen(&mut self, what: &str) -> Result<(), TestCaseError> {
        let s = ok(WarmStore::open(self.dir.dir()), &format!("{what}: open"))?;
        let st = s.stats();
        prop_assert_eq!(st.visible_rows, st.durable_rows, "{}: visible rows", what);
        prop_assert_eq!(st.reserved_rows, st.durable_rows, "{}: reserved rows", what);
        self.store = Some(s);
        self.live = self.durable.clone();
        Ok(())
    }

    /// Simulated power loss: drop the writer, replace the directory's files with a crash
    /// image chosen by `seed`, reopen.
    fn crash(&mut self, seed: u64, what: &str) -> Result<(), TestCaseError> {
        drop(self.store.take());
        let dir = self.dir.dir();
        let current = files(dir)?;
        let mut rng = data::Rng::new(seed, 0);
        let keep_percent = rng.below(101);
        let image = ok(
            crash_image(&self.synced, &current, keep_percent, &mut rng),
            what,
        )?;
        ok(write_image(dir, &image), "write crash image")?;
        self.synced = image;
        self.reopen(&format!("{what} (keeping {keep_percent}% of dirty pages)"))
    }

    fn read_only_check(&self, what: &str) -> Result<(), TestCaseError> {
        let ro = ok(
            WarmStore::open_read_only(self.dir.dir()),
            &format!("{what}: open_read_only"),
        )?;
        check_all(&ro, &self.durable, &format!("{what} (read-only)"))?;
        prop_assert_eq!(
            ro.stats().visible_rows,
            self.store().stats().durable_rows,
            "{}: read-only handle rows",
            what
        );
        let e = ro.put("id-0", &data::random_vec(DIM, 1, 0), b"x");
        prop_assert!(
            matches!(e, Err(Error::ReadOnly)),
            "{}: put on a read-only handle: {:?}",
            what,
            e
        );
        Ok(())
    }

    fn apply(&mut self, i: usize, op: &Op) -> Result<(), TestCaseError> {
        let what = format!("op {i} {op:?}");
        let touched = match op {
            Op::Put { id, seed, content } => {
                let name = id_name(*id);
                let emb = data::random_vec(DIM, *seed, 0);
                let s = self.store();
                let expected_row = s.stats().reserved_rows;
                let row = ok(s.put(&name, &emb, content), &what)?;
                prop_assert_eq!(row, expected_row, "{}: row", what);
                self.live.insert(name, (emb, content.clone()));
                Some(*id)
            }
            Op::Get { id } => Some(*id),
            Op::Delete { id } => {
                let name = id_name(*id);
                let existed = ok(self.store().delete(&name), &what)?;
                prop_assert_eq!(
                    existed,
                    self.live.remove(&name).is_some(),
                    "{}: delete's result",
                    what
                );
                Some(*id)
            }
            Op::Flush => {
                let s = self.store();
                let rows = ok(s.flush(), &what)?;
                let st = s.stats();
                prop_assert_eq!(rows, st.visible_rows, "{}: flushed rows", what);
                prop_assert_eq!(st.durable_rows, st.visible_rows, "{}: durable rows", what);
                self.durable = self.live.clone();
                self.synced = files(self.dir.dir())?;
                None
            }
            Op::Reopen => {
                drop(self.store.take());
                self.reopen(&what)?;
                None
            }
            Op::Crash { seed } => {
                self.crash(*seed, &what)?;
                None
            }
            Op::ReadOnlyCheck => {
                self.read_only_check(&what)?;
                None
            }
        };
        let s = self.store();
        if let Some(id) = touched {
            check_id(s, &self.live, &id_name(id), &what)?;
        }
        prop_assert_eq!(s.len(), self.live.len() as u64, "{}: len", what);
        if touched.is_none() {
            check_all(s, &self.live, &what)?;
        }
        Ok(())
    }
}

fn run_case(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut case = Case::new()?;
    for (i, op) in ops.iter().enumerate() {
        case.apply(i, op)?;
    }
    check_all(case.store(), &case.live, "end of case")
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        ..ProptestConfig::default()
    })]

    #[test]
    fn warm_store_matches_model(ops in prop::collection::vec(op(), 1..120)) {
        run_case(&ops)?;
    }
}

//! The damaged-store fixture of `tests/warm_corruption.rs` and `tests/warm_misuse.rs`: a
//! pristine store of `N` flushed records in small chunks, scratch copies of it to damage,
//! the chunk layout written out independently of the store, and checks that a store holds
//! exactly its first records.

use super::image::copy_store;
use super::TempDir;
use hybridvec::{data, Error, Record, StoreConfig, WarmStore};
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

pub const DIM: usize = 8;
/// Chunk files double each region from 4 KiB to 16 KiB chunks.
pub const FIRST_CHUNK: usize = 4096;
pub const MAX_CHUNK: usize = 16384;
/// Records in the test store: several chunks in every region.
pub const N: usize = 1500;
/// Bytes of metadata per row in the `meta-*.chunk` files.
pub const META_BYTES: usize = 32;

pub fn config() -> StoreConfig {
    StoreConfig {
        dim: DIM,
        first_chunk_bytes: FIRST_CHUNK,
        max_chunk_bytes: MAX_CHUNK,
    }
}

/// Where chunk `i` of a region starts: chunk 0 is the first size, chunk `i ≥ 1` starts at
/// `FIRST << (i - 1)` until chunks reach the cap, then every chunk adds the cap. Written
/// out here independently of the store, as the format documents it.
pub fn chunk_start(i: usize) -> usize {
    let mut start = 0;
    for j in 0..i {
        start += if j == 0 {
            FIRST_CHUNK
        } else {
            (FIRST_CHUNK << (j - 1)).min(MAX_CHUNK)
        };
    }
    start
}

/// The chunk holding byte `pos` of a region, and the offset in it.
pub fn locate(pos: usize) -> (usize, usize) {
    let i = (0..).find(|&i| chunk_start(i + 1) > pos).unwrap();
    (i, pos - chunk_start(i))
}

/// How many chunks hold a region's first `bytes` bytes.
pub fn chunks_for(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        locate(bytes - 1).0 + 1
    }
}

pub fn id(i: usize) -> String {
    format!("rec-{i}")
}

pub fn embedding(i: usize) -> Vec<f32> {
    data::random_vec(DIM, 1, i as u64)
}

pub fn content(i: usize) -> Vec<u8> {
    format!("content-{i}").into_bytes()
}

/// Where each record's id and content start in the content region: records are put one
/// at a time, so they lie end to end in put order. Entry `N` is the committed length.
pub fn content_offsets() -> Vec<u64> {
    let mut offsets = vec![0u64];
    for i in 0..N {
        let last = *offsets.last().unwrap();
        offsets.push(last + (id(i).len() + content(i).len()) as u64);
    }
    offsets
}

/// A pristine store of `N` flushed records, and a scratch directory for damaged copies.
pub struct Fixture {
    pub tmp: TempDir,
    pub pristine: PathBuf,
    pub work: PathBuf,
    pub offsets: Vec<u64>,
}

impl Fixture {
    pub fn new(name: &str) -> Self {
        let tmp = TempDir::new(&format!("store-fixture-{name}"));
        let pristine = tmp.path("store");
        let work = tmp.path("work");
        let s = WarmStore::create(&pristine, config()).unwrap();
        for i in 0..N {
            assert_eq!(s.put(&id(i), &embedding(i), &content(i)).unwrap(), i as u64);
        }
        assert_eq!(s.flush().unwrap(), N as u64);
        let offsets = content_offsets();
        assert_eq!(
            s.stats().content_bytes,
            offsets[N],
            "records lie end to end"
        );
        drop(s);
        let fx = Self {
            tmp,
            pristine,
            work,
            offsets,
        };
        let chunks = fx.chunk_files();
        let count = |prefix: &str| chunks.iter().filter(|n| n.starts_with(prefix)).count();
        let blob_chunks = chunks_for(fx.offsets[N] as usize);
        let row_chunks = chunks_for(N * DIM * 4);
        assert_eq!(
            (count("vec-"), count("meta-"), count("blob-")),
            (row_chunks, chunks_for(N * META_BYTES), blob_chunks),
            "{chunks:?}"
        );
        assert!(blob_chunks >= 3, "want several content chunks");
        // Every chunk file has its size, doubling up to the cap.
        for name in fx.all_chunk_files() {
            let i: usize = name.split_once('-').unwrap().1[..6].parse().unwrap();
            let len = fs::metadata(fx.pristine.join(&name)).unwrap().len() as usize;
            assert_eq!(len, chunk_start(i + 1) - chunk_start(i), "{name}");
        }
        fx
    }

    /// `*.chunk` file names of the pristine store, sorted.
    pub fn chunk_files(&self) -> Vec<String> {
        self.all_chunk_files()
            .into_iter()
            .filter(|n| self.committed(n))
            .collect()
    }

    /// Chunk files grown ahead of need, past the committed ones: the store never reads them.
    pub fn ahead_files(&self) -> Vec<String> {
        self.all_chunk_files()
            .into_iter()
            .filter(|n| !self.committed(n))
            .collect()
    }

    pub fn all_chunk_files(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.pristine)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".chunk"))
            .collect();
        names.sort();
        names
    }

    /// Whether chunk file `name` holds committed rows or content.
    pub fn committed(&self, name: &str) -> bool {
        let (prefix, rest) = name.split_once('-').unwrap();
        let chunk: usize = rest.trim_end_matches(".chunk").parse().unwrap();
        match prefix {
            "vec" => chunk < chunks_for(N * DIM * 4),
            "meta" => chunk < chunks_for(N * META_BYTES),
            "blob" => chunk < chunks_for(self.offsets[N] as usize),
            _ => panic!("unexpected chunk file {name}"),
        }
    }

    /// Replaces the scratch directory with a copy of every file of the pristine store.
    pub fn fresh_copy(&self) -> &Path {
        copy_store(&self.pristine, &self.work);
        &self.work
    }

    /// Puts file `name` of the scratch copy back as it is in the pristine store.
    pub fn restore(&self, name: &str) {
        fs::copy(self.pristine.join(name), self.work.join(name)).unwrap();
    }

    /// The record whose id or content holds byte `pos` of the content region.
    pub fn record_at(&self, pos: u64) -> usize {
        self.offsets.partition_point(|&o| o <= pos) - 1
    }

    /// What byte `offset` of chunk file `name` belongs to.
    pub fn classify(&self, name: &str, offset: u64) -> Hit {
        let (prefix, rest) = name.split_once('-').unwrap();
        let chunk: usize = rest.trim_end_matches(".chunk").parse().unwrap();
        // The byte's place in its region: chunks are contiguous there (a row may straddle
        // two files).
        let pos = (chunk_start(chunk) + offset as usize) as u64;
        match prefix {
            "vec" => {
                let row = (pos / (DIM as u64 * 4)) as usize;
                if row < N {
                    Hit::Checked(row)
                } else {
                    Hit::Unused
                }
            }
            "meta" => {
                let row = (pos / META_BYTES as u64) as usize;
                if row < N {
                    Hit::Meta(row)
                } else {
                    Hit::Unused
                }
            }
            "blob" => {
                if pos < self.offsets[N] {
                    Hit::Checked(self.record_at(pos))
                } else {
                    Hit::Unused
                }
            }
            _ => panic!("unexpected chunk file {name}"),
        }
    }
}

/// What a damaged chunk-file byte belonged to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Hit {
    /// Bytes of record `i` covered by its checksum (vector, id, content).
    Checked(usize),
    /// Record `i`'s metadata entry (which may hold a few unchecked padding bytes).
    Meta(usize),
    /// Space past the committed rows and content.
    Unused,
}

impl Hit {
    pub fn record(self) -> Option<usize> {
        match self {
            Hit::Checked(i) | Hit::Meta(i) => Some(i),
            Hit::Unused => None,
        }
    }
}

pub fn mode(writable: bool) -> &'static str {
    if writable {
        "read-write"
    } else {
        "read-only"
    }
}

/// Opens `dir`, turning a panic into a test failure that names the case.
pub fn open(dir: &Path, writable: bool, ctx: &str) -> Result<WarmStore, Error> {
    catch_unwind(AssertUnwindSafe(|| {
        if writable {
            WarmStore::open(dir)
        } else {
            WarmStore::open_read_only(dir)
        }
    }))
    .unwrap_or_else(|_| panic!("{ctx}: open panicked"))
}

pub fn assert_is_record(r: &Record, i: usize, ctx: &str) {
    assert_eq!((r.id.as_str(), r.row), (id(i).as_str(), i as u64), "{ctx}");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&r.embedding), bits(&embedding(i)), "{ctx}: rec-{i}");
    assert_eq!(r.content, content(i), "{ctx}: rec-{i}");
}

/// The store holds exactly records `0..rows`, durable and bit-exact.
pub fn assert_holds_first(s: &WarmStore, rows: usize, ctx: &str) {
    let st = s.stats();
    assert_eq!(
        (st.durable_rows, st.visible_rows, st.records, s.len()),
        (rows as u64, rows as u64, rows as u64, rows as u64),
        "{ctx}: {st:?}"
    );
    for i in 0..N {
        match s.get(&id(i)) {
            Ok(Some(r)) if i < rows => assert_is_record(&r, i, ctx),
            Ok(None) if i >= rows => {}
            other => panic!("{ctx}: get(rec-{i}) with {rows} rows gave {other:?}"),
        }
    }
    for row in 0..rows {
        assert_is_record(&s.read_record(row as u64).unwrap(), row, ctx);
    }
}

/// The scratch copy opens read-write and holds all `N` records: a failed open before
/// destroyed nothing.
pub fn assert_opens_whole(dir: &Path, ctx: &str) {
    let ctx = format!("{ctx}, repaired");
    let s = open(dir, true, &ctx).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    assert_holds_first(&s, N, &ctx);
}

//! The warm tier against damaged files and bad input, through its public API: every
//! single-bit flip in the header and superblocks, random byte flips in the chunk files
//! (before and after opening), truncated and missing files, forged fields with valid
//! checksums, a newer format version, the writer lock, and puts that must be refused.
//!
//! Whatever the damage, opening never panics and never faults; it either fails with
//! `CorruptStore` (or the error the case calls for) or gives a store whose records read
//! back bit for bit. Damage to committed data is always caught; damage to space past the
//! committed rows never is (and must not make the store unusable).

use hybridvec::{data, Error, Record, StoreConfig, WarmStore};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

const DIM: usize = 8;
/// Chunk files double each region from 4 KiB to 16 KiB chunks.
const FIRST_CHUNK: usize = 4096;
const MAX_CHUNK: usize = 16384;
/// Rows a writer adds after damage, enough to grow every region by a chunk or more.
const GROW_ROWS: usize = 1024;
/// Records in the test store: several chunks in every region.
const N: usize = 1500;
const STORE_FILE: &str = "store.hv";
/// The header (`0..36`) and the two superblock slots of `store.hv`.
const HEADER_LEN: usize = 36;
const SLOTS: [usize; 2] = [4096, 8192];
const SLOT_LEN: usize = 36;
/// Bytes of metadata per row in the `meta-*.chunk` files.
const META_BYTES: usize = 32;

fn config() -> StoreConfig {
    StoreConfig {
        dim: DIM,
        first_chunk_bytes: FIRST_CHUNK,
        max_chunk_bytes: MAX_CHUNK,
    }
}

/// Where chunk `i` of a region starts: chunk 0 is the first size, chunk `i ≥ 1` starts at
/// `FIRST << (i - 1)` until chunks reach the cap, then every chunk adds the cap. Written
/// out here independently of the store, as the format documents it.
fn chunk_start(i: usize) -> usize {
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
fn locate(pos: usize) -> (usize, usize) {
    let i = (0..).find(|&i| chunk_start(i + 1) > pos).unwrap();
    (i, pos - chunk_start(i))
}

/// How many chunks hold a region's first `bytes` bytes.
fn chunks_for(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        locate(bytes - 1).0 + 1
    }
}

fn id(i: usize) -> String {
    format!("rec-{i}")
}

fn embedding(i: usize) -> Vec<f32> {
    data::random_vec(DIM, 1, i as u64)
}

fn content(i: usize) -> Vec<u8> {
    format!("content-{i}").into_bytes()
}

/// Where each record's id and content start in the content region: records are put one
/// at a time, so they lie end to end in put order. Entry `N` is the committed length.
fn content_offsets() -> Vec<u64> {
    let mut offsets = vec![0u64];
    for i in 0..N {
        let last = *offsets.last().unwrap();
        offsets.push(last + (id(i).len() + content(i).len()) as u64);
    }
    offsets
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "hybridvec-warm-corruption-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A pristine store of `N` flushed records, and a scratch directory for damaged copies.
struct Fixture {
    tmp: TempDir,
    pristine: PathBuf,
    work: PathBuf,
    offsets: Vec<u64>,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let tmp = TempDir::new(name);
        let pristine = tmp.0.join("store");
        let work = tmp.0.join("work");
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
    fn chunk_files(&self) -> Vec<String> {
        self.all_chunk_files()
            .into_iter()
            .filter(|n| self.committed(n))
            .collect()
    }

    /// Chunk files grown ahead of need, past the committed ones: the store never reads them.
    fn ahead_files(&self) -> Vec<String> {
        self.all_chunk_files()
            .into_iter()
            .filter(|n| !self.committed(n))
            .collect()
    }

    fn all_chunk_files(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.pristine)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".chunk"))
            .collect();
        names.sort();
        names
    }

    /// Whether chunk file `name` holds committed rows or content.
    fn committed(&self, name: &str) -> bool {
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
    fn fresh_copy(&self) -> &Path {
        let _ = fs::remove_dir_all(&self.work);
        fs::create_dir_all(&self.work).unwrap();
        for e in fs::read_dir(&self.pristine).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                fs::copy(e.path(), self.work.join(e.file_name())).unwrap();
            }
        }
        &self.work
    }

    /// Puts file `name` of the scratch copy back as it is in the pristine store.
    fn restore(&self, name: &str) {
        fs::copy(self.pristine.join(name), self.work.join(name)).unwrap();
    }

    /// The record whose id or content holds byte `pos` of the content region.
    fn record_at(&self, pos: u64) -> usize {
        self.offsets.partition_point(|&o| o <= pos) - 1
    }

    /// What byte `offset` of chunk file `name` belongs to.
    fn classify(&self, name: &str, offset: u64) -> Hit {
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
enum Hit {
    /// Bytes of record `i` covered by its checksum (vector, id, content).
    Checked(usize),
    /// Record `i`'s metadata entry (which may hold a few unchecked padding bytes).
    Meta(usize),
    /// Space past the committed rows and content.
    Unused,
}

impl Hit {
    fn record(self) -> Option<usize> {
        match self {
            Hit::Checked(i) | Hit::Meta(i) => Some(i),
            Hit::Unused => None,
        }
    }
}

fn mode(writable: bool) -> &'static str {
    if writable {
        "read-write"
    } else {
        "read-only"
    }
}

/// Opens `dir`, turning a panic into a test failure that names the case.
fn open(dir: &Path, writable: bool, ctx: &str) -> Result<WarmStore, Error> {
    catch_unwind(AssertUnwindSafe(|| {
        if writable {
            WarmStore::open(dir)
        } else {
            WarmStore::open_read_only(dir)
        }
    }))
    .unwrap_or_else(|_| panic!("{ctx}: open panicked"))
}

fn xor_byte(path: &Path, offset: u64, mask: u8) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= mask;
    f.write_all_at(&b, offset).unwrap();
}

/// Rewrites a 36-byte checksummed block (header or superblock) of `store.hv` at `at`,
/// recomputing its CRC-32C so only the patched fields are wrong.
fn patch_block(dir: &Path, at: u64, patch: impl FnOnce(&mut [u8; 36])) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(STORE_FILE))
        .unwrap();
    let mut b = [0u8; 36];
    f.read_exact_at(&mut b, at).unwrap();
    patch(&mut b);
    let crc = crc32c::crc32c(&b[..32]);
    b[32..].copy_from_slice(&crc.to_le_bytes());
    f.write_all_at(&b, at).unwrap();
}

fn assert_is_record(r: &Record, i: usize, ctx: &str) {
    assert_eq!((r.id.as_str(), r.row), (id(i).as_str(), i as u64), "{ctx}");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&r.embedding), bits(&embedding(i)), "{ctx}: rec-{i}");
    assert_eq!(r.content, content(i), "{ctx}: rec-{i}");
}

/// The store holds exactly records `0..rows`, durable and bit-exact.
fn assert_holds_first(s: &WarmStore, rows: usize, ctx: &str) {
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

fn is_corrupt_or_io(r: &Result<WarmStore, Error>) -> bool {
    matches!(
        r,
        Err(Error::CorruptStore { .. } | Error::Io(_) | Error::FileIo { .. })
    )
}

/// The scratch copy opens read-write and holds all `N` records: a failed open before
/// destroyed nothing.
fn assert_opens_whole(dir: &Path, ctx: &str) {
    let ctx = format!("{ctx}, repaired");
    let s = open(dir, true, &ctx).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    assert_holds_first(&s, N, &ctx);
}

#[test]
fn every_bit_flip_in_header_and_superblocks_fails_or_recovers_to_the_other_slot() {
    let fx = Fixture::new("header-superblock");
    // After create and one flush, slot 0 holds generation 0 (no rows) and slot 1
    // generation 1 (all N rows). The header's CRC catches every single-bit flip; a
    // flipped slot is ignored and the other one used.
    let header = 0..HEADER_LEN;
    let slot0 = SLOTS[0]..SLOTS[0] + SLOT_LEN;
    let slot1 = SLOTS[1]..SLOTS[1] + SLOT_LEN;
    for offset in header.clone().chain(slot0).chain(slot1.clone()) {
        for bit in 0..8 {
            let dir = fx.fresh_copy();
            xor_byte(&dir.join(STORE_FILE), offset as u64, 1 << bit);
            // Read-only first: it must not change anything the read-write open then sees.
            for writable in [false, true] {
                let ctx = format!("store.hv byte {offset} bit {bit}, {}", mode(writable));
                let r = open(dir, writable, &ctx);
                if header.contains(&offset) {
                    assert!(
                        matches!(
                            r,
                            Err(Error::CorruptStore { .. } | Error::UnsupportedVersion { .. })
                        ),
                        "{ctx}: {r:?}"
                    );
                    continue;
                }
                let s = r.unwrap_or_else(|e| panic!("{ctx}: the other slot is intact: {e}"));
                let rows = if slot1.contains(&offset) { 0 } else { N };
                assert_holds_first(&s, rows, &ctx);
                if writable && bit == 0 && offset % 4 == 0 {
                    // The recovered store takes writes, and they survive a reopen.
                    assert_eq!(s.put("extra", &embedding(N), b"x").unwrap(), rows as u64);
                    assert_eq!(s.flush().unwrap(), rows as u64 + 1);
                    drop(s);
                    let s = open(dir, true, &ctx).unwrap();
                    assert_eq!(s.len(), rows as u64 + 1, "{ctx}");
                    let extra = s.get("extra").unwrap().unwrap();
                    assert_eq!(
                        (extra.row, extra.content.as_slice()),
                        (rows as u64, &b"x"[..])
                    );
                    for i in 0..rows.min(10) {
                        assert_is_record(&s.get(&id(i)).unwrap().unwrap(), i, &ctx);
                    }
                }
            }
        }
    }
}

#[test]
fn random_byte_flips_in_chunk_files_are_caught_at_open() {
    let fx = Fixture::new("chunk-flips");
    let files = fx.chunk_files();
    let mut rng = data::Rng::new(0x5EED_0001, 0);
    let (mut caught, mut harmless) = (0, 0);
    for trial in 0..200 {
        let dir = fx.fresh_copy();
        let name = &files[rng.below(files.len() as u64) as usize];
        let path = dir.join(name);
        let offset = rng.below(fs::metadata(&path).unwrap().len());
        let mask = 1 + rng.below(255) as u8;
        let hit = fx.classify(name, offset);
        xor_byte(&path, offset, mask);
        for writable in [false, true] {
            let ctx = format!(
                "trial {trial}: {name} byte {offset} ^= {mask:#04x} ({hit:?}), {}",
                mode(writable)
            );
            match open(dir, writable, &ctx) {
                Ok(s) => {
                    // Undetected damage is only allowed where no checksum covers it, and
                    // then nothing may read differently.
                    assert!(!matches!(hit, Hit::Checked(_)), "{ctx}: not detected");
                    assert_holds_first(&s, N, &ctx);
                    harmless += 1;
                }
                Err(Error::CorruptStore { file, .. }) => {
                    assert!(hit != Hit::Unused, "{ctx}: unused space reported corrupt");
                    assert!(file.starts_with(dir), "{ctx}: {}", file.display());
                    caught += 1;
                }
                Err(e) => panic!("{ctx}: expected CorruptStore, got {e:?}"),
            }
        }
        if hit != Hit::Unused {
            xor_byte(&path, offset, mask);
            assert_opens_whole(dir, &format!("trial {trial}"));
        }
    }
    assert!(
        caught >= 200 && harmless >= 10,
        "{caught} caught, {harmless} harmless"
    );
}

#[test]
fn damage_after_open_is_caught_by_get_and_never_read_as_data() {
    let fx = Fixture::new("get-checksums");
    let files = fx.chunk_files();
    let dir = fx.fresh_copy();
    // The files are mapped shared: writing them changes what the open store reads.
    let s = WarmStore::open_read_only(dir).unwrap();
    let mut rng = data::Rng::new(0x5EED_0002, 0);
    let mut caught = 0;
    for trial in 0..200 {
        let name = &files[rng.below(files.len() as u64) as usize];
        let path = dir.join(name);
        let offset = rng.below(fs::metadata(&path).unwrap().len());
        let mask = 1 + rng.below(255) as u8;
        let hit = fx.classify(name, offset);
        xor_byte(&path, offset, mask);
        let ctx = format!("trial {trial}: {name} byte {offset} ^= {mask:#04x} ({hit:?})");
        for i in 0..N {
            let got = catch_unwind(AssertUnwindSafe(|| s.get(&id(i))))
                .unwrap_or_else(|_| panic!("{ctx}: get(rec-{i}) panicked"));
            match got {
                Ok(Some(r)) => {
                    assert_ne!(hit, Hit::Checked(i), "{ctx}: damage to rec-{i} not caught");
                    assert_is_record(&r, i, &ctx);
                }
                Err(_) if hit.record() == Some(i) => caught += 1,
                other => panic!("{ctx}: get(rec-{i}) gave {other:?}"),
            }
        }
        xor_byte(&path, offset, mask);
    }
    assert!(caught >= 100, "only {caught} caught");
    // Every flip was undone: the store reads whole again.
    assert_holds_first(&s, N, "after all trials");
}

#[test]
fn damaged_or_missing_chunks_grown_ahead_are_never_read() {
    let fx = Fixture::new("ahead");
    let ahead = fx.ahead_files();
    assert!(!ahead.is_empty(), "the writer grew nothing ahead of need");
    for name in &ahead {
        let dir = fx.fresh_copy();
        let f = OpenOptions::new().write(true).open(dir.join(name)).unwrap();
        f.set_len(1).unwrap();
        drop(f);
        assert_opens_whole(dir, &format!("{name} truncated"));
        fs::remove_file(dir.join(name)).unwrap();
        assert_opens_whole(dir, &format!("{name} deleted"));
        // A writer grows over it again.
        let s = WarmStore::open(dir).unwrap();
        for i in N..N + GROW_ROWS {
            s.put(&id(i), &embedding(i), &content(i)).unwrap();
        }
        s.flush().unwrap();
        drop(s);
        let s = WarmStore::open_read_only(dir).unwrap();
        assert_eq!(s.len(), (N + GROW_ROWS) as u64, "{name}");
        assert_holds_first(&s, N + GROW_ROWS, name);
    }
}

#[test]
fn truncated_or_missing_files_fail_to_open() {
    let fx = Fixture::new("truncate");
    let mut names = vec![STORE_FILE.to_string()];
    names.extend(fx.chunk_files());
    for name in &names {
        let full = fs::metadata(fx.pristine.join(name)).unwrap().len();
        for len in [0, full / 2, full - 1] {
            let dir = fx.fresh_copy();
            let f = OpenOptions::new().write(true).open(dir.join(name)).unwrap();
            f.set_len(len).unwrap();
            drop(f);
            for writable in [false, true] {
                let ctx = format!("{name} truncated to {len} of {full}, {}", mode(writable));
                let r = open(dir, writable, &ctx);
                assert!(is_corrupt_or_io(&r), "{ctx}: {r:?}");
            }
            fx.restore(name);
            assert_opens_whole(dir, &format!("{name} truncated to {len}"));
        }
        let dir = fx.fresh_copy();
        fs::remove_file(dir.join(name)).unwrap();
        for writable in [false, true] {
            let ctx = format!("{name} deleted, {}", mode(writable));
            let r = open(dir, writable, &ctx);
            assert!(is_corrupt_or_io(&r), "{ctx}: {r:?}");
            if name == STORE_FILE {
                assert!(
                    matches!(&r, Err(e) if e.io_error().map(|e| e.kind()) == Some(std::io::ErrorKind::NotFound)),
                    "{ctx}: {r:?}"
                );
            }
        }
        fx.restore(name);
        assert_opens_whole(dir, &format!("{name} deleted"));
    }
}

#[test]
fn newer_or_unknown_format_version_is_refused() {
    let fx = Fixture::new("version");
    for version in [1u32, 3, 0, u32::MAX] {
        let dir = fx.fresh_copy();
        patch_block(dir, 0, |h| h[8..12].copy_from_slice(&version.to_le_bytes()));
        for writable in [false, true] {
            let ctx = format!("version {version}, {}", mode(writable));
            match open(dir, writable, &ctx) {
                Err(Error::UnsupportedVersion { found, supported }) => {
                    assert_eq!((found, supported), (version, 2), "{ctx}")
                }
                // Version 1 is still read, so this one is read as a version-1 header:
                // its fixed chunk sizes do not match the files.
                Err(Error::CorruptStore { .. }) if version == 1 => {}
                other => panic!("{ctx}: {other:?}"),
            }
        }
        fx.restore(STORE_FILE);
        assert_opens_whole(dir, &format!("version {version}"));
    }
}

#[test]
fn forged_header_fields_with_valid_checksum_are_refused() {
    let fx = Fixture::new("forged-header");
    // (byte offset, width, value): dimension u32 at 12, chunk rows u64 at 16, content
    // chunk bytes u64 at 24. None of these matches the files on disk.
    let cases: &[(usize, usize, u64)] = &[
        (12, 4, 0),
        (12, 4, 4),
        (12, 4, 7),
        (12, 4, 9),
        (12, 4, 16),
        (12, 4, 1 << 20),
        (12, 4, u32::MAX as u64),
        (16, 8, 0),
        (16, 8, 1000),
        (16, 8, 2048),
        (16, 8, 1 << 24),
        (16, 8, 1 << 25),
        (16, 8, u64::MAX),
        (24, 8, 0),
        (24, 8, 100),
        (24, 8, 8192),
        (24, 8, 1 << 34),
        (24, 8, 1 << 35),
        (24, 8, u64::MAX),
    ];
    for &(at, width, value) in cases {
        let dir = fx.fresh_copy();
        patch_block(dir, 0, |h| {
            h[at..at + width].copy_from_slice(&value.to_le_bytes()[..width])
        });
        for writable in [false, true] {
            let ctx = format!("header bytes {at}.. = {value}, {}", mode(writable));
            let r = open(dir, writable, &ctx);
            assert!(is_corrupt_or_io(&r), "{ctx}: {r:?}");
        }
        fx.restore(STORE_FILE);
        assert_opens_whole(dir, &format!("header bytes {at}.. = {value}"));
    }
}

#[test]
fn forged_superblocks_with_valid_checksum_are_refused_or_bounded() {
    let fx = Fixture::new("forged-superblock");
    let full = fx.offsets[N];
    // (rows, content length, rows the store must then hold, or None for CorruptStore).
    let cases: &[(u64, u64, Option<usize>)] = &[
        // Flush records exactly where the committed records' contents end.
        (N as u64 - 1, full, None),
        (N as u64 - 1, fx.offsets[N - 1], Some(N - 1)),
        (0, 0, Some(0)),
        (N as u64 + 1, full, None),
        (2 * N as u64 + 1, full, None),
        (u64::MAX, full, None),
        (1 << 40, full, None),
        (N as u64, full - 1, None),
        (N as u64, 0, None),
        (N as u64, full + FIRST_CHUNK as u64, None),
        (N as u64, 1 << 38, None),
        (N as u64, u64::MAX, None),
    ];
    for &(rows, content_len, expect) in cases {
        let dir = fx.fresh_copy();
        // Slot 0 with generation 2: newer than slot 1's generation 1, so it is the one used.
        patch_block(dir, SLOTS[0] as u64, |b| {
            b[..8].copy_from_slice(b"HVSUPER\0");
            b[8..16].copy_from_slice(&2u64.to_le_bytes());
            b[16..24].copy_from_slice(&rows.to_le_bytes());
            b[24..32].copy_from_slice(&content_len.to_le_bytes());
        });
        for writable in [false, true] {
            let ctx = format!(
                "superblock rows {rows} content {content_len}, {}",
                mode(writable)
            );
            let r = open(dir, writable, &ctx);
            match expect {
                Some(k) => assert_holds_first(&r.unwrap(), k, &ctx),
                None => assert!(matches!(r, Err(Error::CorruptStore { .. })), "{ctx}: {r:?}"),
            }
        }
        if expect.is_none() {
            fx.restore(STORE_FILE);
            assert_opens_whole(
                dir,
                &format!("superblock rows {rows} content {content_len}"),
            );
        }
    }
}

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
    let empty = fx.tmp.0.join("empty");
    fs::create_dir_all(&empty).unwrap();
    let missing = fx.tmp.0.join("missing");
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
    let tmp = TempDir::new("bad-config");
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
        let dir = tmp.0.join("store");
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

//! The warm tier against damaged files, through its public API: every single-bit flip in
//! the header and superblocks, random byte flips in the chunk files (before and after
//! opening), truncated and missing files, forged fields with valid checksums and a newer
//! format version. (Misuse, the writer lock and refused input: `tests/warm_misuse.rs`.)
//!
//! Whatever the damage, opening never panics and never faults; it either fails with
//! `CorruptStore` (or the error the case calls for) or gives a store whose records read
//! back bit for bit. Damage to committed data is always caught; damage to space past the
//! committed rows never is (and must not make the store unusable).

mod common;

use common::image::xor_byte;
use common::store_fixture::{
    assert_holds_first, assert_is_record, assert_opens_whole, content, embedding, id, mode, open,
    Fixture, Hit, FIRST_CHUNK, N,
};
use hybridvec::{data, Error, WarmStore};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Rows a writer adds after damage, enough to grow every region by a chunk or more.
const GROW_ROWS: usize = 1024;
const STORE_FILE: &str = "store.hv";
/// The header (`0..36`) and the two superblock slots of `store.hv`.
const HEADER_LEN: usize = 36;
const SLOTS: [usize; 2] = [4096, 8192];
const SLOT_LEN: usize = 36;

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

fn is_corrupt_or_io(r: &Result<WarmStore, Error>) -> bool {
    matches!(
        r,
        Err(Error::CorruptStore { .. } | Error::Io(_) | Error::FileIo { .. })
    )
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

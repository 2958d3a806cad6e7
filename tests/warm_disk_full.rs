//! A full disk under the warm tier.
//!
//! The store lives on a small tmpfs (mounted by the test; skipped where mounting is not
//! permitted). Records are put until the disk runs out: that must be an I/O error from
//! `put` or `flush` (chunk files are fallocated whole before they are mapped), never a
//! SIGBUS through a mapping. The store is then poisoned; a reopen on the still-full disk
//! must read back every flushed record bit-exact, and once the tmpfs is enlarged the
//! reopened store must accept new records again.
//!
//! The store work runs in a child process (this test binary, re-executed), so a SIGBUS is
//! reported as a failure with its cause, and the tmpfs is unmounted whatever happens.

use hybridvec::{data, Error, StoreConfig, WarmStore};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const TEST_NAME: &str = "full_disk_is_an_error_and_flushed_records_survive";
/// Set in the child: the mounted tmpfs directory to work in.
const CHILD_ENV: &str = "HYBRIDVEC_DISK_FULL_CHILD_DIR";
const SEED: u64 = 7;
const DIM: usize = 64;
const FLUSH_EVERY: u64 = 100;
const MAX_PUTS: u64 = 1_000_000;

/// A tmpfs mounted on a fresh directory; unmounted and removed on drop.
struct TmpfsMount {
    dir: PathBuf,
}

impl TmpfsMount {
    fn new(size: &str) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("hybridvec-disk-full-{}", std::process::id()));
        let _ = Command::new("umount").arg(&dir).output();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Ok(Self { dir }),
            Ok(o) => {
                let _ = std::fs::remove_dir(&dir);
                Err(format!(
                    "mount -t tmpfs failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(format!("cannot run mount: {e}"))
            }
        }
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Busy (a crashed child's files may still be closing): detach it lazily.
            let lazy = Command::new("umount").arg("-l").arg(&self.dir).status();
            if !lazy.is_ok_and(|s| s.success()) {
                eprintln!("warning: could not unmount {}", self.dir.display());
                return; // never delete through a live mount point's parent by mistake
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn full_disk_is_an_error_and_flushed_records_survive() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let started = Instant::now();
    let mount = match TmpfsMount::new("8m") {
        Ok(m) => m,
        Err(reason) => {
            eprintln!("skip: cannot mount a tmpfs for the full-disk test: {reason}");
            return;
        }
    };
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &mount.dir)
        .output()
        .expect("re-executing the test binary");
    let child_output = format!(
        "--- child stdout ---\n{}--- child stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{child_output}");
    drop(mount);
    if let Some(sig) = out.status.signal() {
        assert_ne!(
            sig,
            libc::SIGBUS,
            "the store died of SIGBUS on a full disk (a write through a mapping of an \
             unallocated page)"
        );
        panic!("the full-disk child died of signal {sig}");
    }
    assert!(
        out.status.success(),
        "the full-disk child failed: {}",
        out.status
    );
    eprintln!(
        "ran: full-disk test passed in {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

fn config() -> StoreConfig {
    StoreConfig {
        dim: DIM,
        first_chunk_bytes: 4096,
        max_chunk_bytes: 65536,
    }
}

fn check_record(s: &WarmStore, i: u64, what: &str) {
    let (id, emb, content) = data::random_record(SEED, i, DIM);
    let r = s
        .get(&id)
        .unwrap_or_else(|e| panic!("{what}: get({id}) failed: {e}"))
        .unwrap_or_else(|| panic!("{what}: {id} missing"));
    assert_eq!(r.id, id, "{what}");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&r.embedding), bits(&emb), "{what}: {id} embedding");
    assert_eq!(r.content, content, "{what}: {id} content");
}

/// `name:size` of each file in `dir`, sorted: what a full disk left behind.
fn listing(dir: &Path) -> String {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            format!("{}:{len}", e.file_name().to_string_lossy())
        })
        .collect();
    v.sort();
    v.join(" ")
}

fn is_enospc(e: &Error) -> bool {
    e.io_error().and_then(|io| io.raw_os_error()) == Some(libc::ENOSPC)
}

/// The store work, in the child process, on the mounted 8 MiB tmpfs at `mnt`.
fn child(mnt: &Path) {
    let t0 = Instant::now();
    let dir = mnt.join("store");

    // Fill the disk.
    let s = WarmStore::create(&dir, config()).expect("create on an empty tmpfs");
    let mut flushed = 0u64; // records 0..flushed are durable
    let mut attempted = 0u64; // records 0..attempted had a put that returned Ok
    let mut failure = None;
    for i in 0..MAX_PUTS {
        let (id, emb, content) = data::random_record(SEED, i, DIM);
        if let Err(e) = s.put(&id, &emb, &content) {
            failure = Some((format!("put of {id}"), e));
            break;
        }
        attempted = i + 1;
        if attempted.is_multiple_of(FLUSH_EVERY) {
            match s.flush() {
                Ok(rows) => {
                    assert_eq!(rows, attempted, "flush reports the rows it made durable");
                    flushed = attempted;
                }
                Err(e) => {
                    failure = Some((format!("flush after {attempted} puts"), e));
                    break;
                }
            }
        }
    }
    let (at, err) = failure.unwrap_or_else(|| {
        panic!("no error after {MAX_PUTS} puts on an 8 MiB tmpfs: is the disk really full?")
    });
    eprintln!(
        "full disk: {at} failed after {:.2} s: {err} ({err:?}); flushed {flushed}, \
         attempted {attempted}, stats {:?}",
        t0.elapsed().as_secs_f64(),
        s.stats()
    );
    eprintln!("files at the full disk: {}", listing(&dir));
    assert!(
        is_enospc(&err) || matches!(err, Error::StorePoisoned { .. }),
        "a full disk must be an ENOSPC I/O error (or StorePoisoned), got {err:?}"
    );
    assert!(flushed > 0, "the disk filled before the first flush");

    // Poisoned: writes fail, reads still work.
    let (id, emb, content) = data::random_record(SEED, attempted + 1, DIM);
    match s.put(&id, &emb, &content) {
        Err(Error::StorePoisoned { reason }) => eprintln!("poisoned: {reason}"),
        other => panic!("a put after the failure must report a poisoned store, got {other:?}"),
    }
    assert!(
        matches!(s.flush(), Err(Error::StorePoisoned { .. })),
        "a flush after the failure must report a poisoned store"
    );
    assert!(matches!(
        s.delete("rec-0"),
        Err(Error::StorePoisoned { .. })
    ));
    check_record(&s, 0, "poisoned store");
    check_record(&s, flushed - 1, "poisoned store");
    drop(s);

    // Reopen on the still-full disk: nothing to allocate, everything flushed intact.
    let mut s = WarmStore::open(&dir).unwrap_or_else(|e| {
        panic!("reopening on the full disk failed (opening must not need space): {e:?}")
    });
    let stats = s.stats();
    eprintln!("reopened on the full disk: {stats:?}");
    assert!(
        stats.durable_rows >= flushed && stats.durable_rows <= attempted,
        "durable rows {} outside [{flushed}, {attempted}]",
        stats.durable_rows
    );
    assert_eq!(s.len(), stats.durable_rows);
    for i in 0..stats.durable_rows {
        check_record(&s, i, "reopened on the full disk");
    }
    let (unflushed, ..) = data::random_record(SEED, stats.durable_rows, DIM);
    assert!(
        s.get(&unflushed).unwrap().is_none(),
        "{unflushed} was never flushed but is visible after a reopen"
    );

    // An int8 tier does not fit: an ENOSPC error, no tier, no tier files left, and the
    // store as it was.
    let err = s.build_int8_tier().expect_err("a tier on a full disk");
    assert!(is_enospc(&err), "building a tier on a full disk: {err:?}");
    assert!(!s.has_int8_tier());
    let stray = listing(&dir);
    assert!(!stray.contains("i8") && !stray.contains("tier"), "{stray}");
    check_record(&s, 0, "after a failed tier build");

    // Make room and write again with the same handle: growth, a flush, then a reopen.
    let out = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(mnt)
        .output()
        .expect("running mount -o remount");
    assert!(
        out.status.success(),
        "remount to 64m failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = stats.durable_rows;
    let end = start + 5_000; // several new vector, metadata and content chunks
    for i in start..end {
        let (id, emb, content) = data::random_record(SEED, i, DIM);
        s.put(&id, &emb, &content)
            .unwrap_or_else(|e| panic!("put of {id} after making room: {e:?}"));
    }
    assert_eq!(s.flush().expect("flush after making room"), end);
    // With room, the tier builds and is kept.
    s.build_int8_tier().expect("a tier once there is room");
    drop(s);
    let s = WarmStore::open(&dir).expect("reopen after making room");
    assert!(s.has_int8_tier() && s.int8_tier_damage().is_none());
    assert_eq!(s.stats().durable_rows, end);
    assert_eq!(s.len(), end);
    for i in 0..end {
        check_record(&s, i, "reopened after making room");
    }
    eprintln!(
        "after making room: {} records durable; child took {:.2} s",
        end,
        t0.elapsed().as_secs_f64()
    );
}

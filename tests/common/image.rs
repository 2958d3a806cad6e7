//! A store directory's files as bytes: snapshots, copies and simulated crash images.

use hybridvec::data;
use std::collections::BTreeMap;
use std::path::Path;

/// The page size a crash keeps or loses writes by.
pub const PAGE: usize = 4096;

/// Every regular file of a store directory but `LOCK` (which carries no data), by name.
pub type Files = BTreeMap<String, Vec<u8>>;

/// The regular files of the store at `dir`, but `LOCK`.
pub fn snapshot(dir: &Path) -> std::io::Result<Files> {
    let mut files = Files::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "LOCK" || !e.file_type()?.is_file() {
            continue;
        }
        files.insert(name, std::fs::read(e.path())?);
    }
    Ok(files)
}

/// Makes `dir` a fresh directory holding exactly `files`.
pub fn write_image(dir: &Path, files: &Files) -> std::io::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

/// Replaces `to` with a copy of every regular file of the store at `from`.
pub fn copy_store(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// What the disk may hold after a power loss: the files as of the last flush (`synced`)
/// plus, of each [`PAGE`] written since (in `current`), a random `keep_percent` share
/// drawn from `rng`. A file created since the last flush was created whole and fsynced, so
/// it starts as zeros and only its later writes are at risk; a file gone since the last
/// flush is still there as it was. Store files never change size: a file that did is an
/// error naming it.
pub fn crash_image(
    synced: &Files,
    current: &Files,
    keep_percent: u64,
    rng: &mut data::Rng,
) -> Result<Files, String> {
    let mut image = Files::new();
    for (name, now) in current {
        let mut bytes = synced
            .get(name)
            .cloned()
            .unwrap_or_else(|| vec![0u8; now.len()]);
        if bytes.len() != now.len() {
            return Err(format!(
                "{name} changed size ({} to {} bytes): store files never do",
                bytes.len(),
                now.len()
            ));
        }
        for p in (0..now.len()).step_by(PAGE) {
            let end = (p + PAGE).min(now.len());
            if bytes[p..end] != now[p..end] && rng.below(100) < keep_percent {
                bytes[p..end].copy_from_slice(&now[p..end]);
            }
        }
        image.insert(name.clone(), bytes);
    }
    for (name, old) in synced {
        image.entry(name.clone()).or_insert_with(|| old.clone());
    }
    Ok(image)
}

/// Flips the bits of `mask` in the byte at `offset` of the file at `path`.
pub fn xor_byte(path: &Path, offset: u64, mask: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= mask;
    f.write_all_at(&b, offset).unwrap();
}

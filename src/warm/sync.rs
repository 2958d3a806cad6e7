//! Every call that makes store data durable goes through here, so a test can make any one
//! of them fail the way a dying disk does (EIO) and check that the store poisons itself
//! instead of carrying on as if the data were safe.

use crate::error::{Error, Result};
use std::fs::File;
use std::path::Path;

/// `fsync` of a file (`path` names it in errors): data and metadata.
pub(crate) fn file(f: &File, path: &Path) -> Result<()> {
    injected(path)?;
    f.sync_all().map_err(Error::at(path))
}

/// `fdatasync` of a file (`path` names it in errors).
pub(crate) fn file_data(f: &File, path: &Path) -> Result<()> {
    injected(path)?;
    f.sync_data().map_err(Error::at(path))
}

/// `fsync` of a directory, which makes its entries (a rename) durable.
pub(crate) fn dir(dir: &Path) -> Result<()> {
    injected(dir)?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::at(dir))
}

/// Replaces `dir/name` with `bytes`, atomically and durably: written whole under a
/// temporary name, synced, renamed into place, and the directory synced. A crash leaves
/// the old file or the new one. The caller holds the writer's lock.
pub(crate) fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(Error::at(&tmp))?;
        f.write_all(bytes).map_err(Error::at(&tmp))?;
        file(&f, &tmp)?;
        std::fs::rename(&tmp, &path).map_err(Error::at(&path))?;
        self::dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `msync(MS_SYNC)` of mapped file pages (`path` names the files in errors).
///
/// # Safety
/// `[ptr, ptr + len)` must lie inside one live shared file mapping owned by the caller, and
/// `ptr` must be page-aligned.
pub(crate) unsafe fn mapping(ptr: *mut u8, len: usize, path: &Path) -> Result<()> {
    injected(path)?;
    // SAFETY: the caller's contract; msync only writes pages back, it changes no contents.
    let rc = unsafe { libc::msync(ptr.cast(), len, libc::MS_SYNC) };
    if rc != 0 {
        return Err(Error::at(path)(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
thread_local! {
    /// The armed failure on this thread: sync calls that may still succeed, and how many
    /// have failed since. `None`: nothing armed.
    static ARMED: std::cell::Cell<Option<(u32, u32)>> = const { std::cell::Cell::new(None) };
}

#[cfg(test)]
thread_local! {
    /// The paths of this thread's sync calls, in order, while recording.
    static SYNCED: std::cell::RefCell<Option<Vec<std::path::PathBuf>>> =
        const { std::cell::RefCell::new(None) };
}

/// Starts recording the paths this thread's sync calls name.
#[cfg(test)]
pub(crate) fn record() {
    SYNCED.set(Some(Vec::new()));
}

/// Stops recording; returns the paths synced since [`record`], in order.
#[cfg(test)]
pub(crate) fn recorded() -> Vec<std::path::PathBuf> {
    SYNCED.take().unwrap_or_default()
}

/// Arms a dying disk on this thread: `n` sync calls succeed, and every one after them
/// fails with EIO until [`disarm`].
#[cfg(test)]
pub(crate) fn fail_after(n: u32) {
    ARMED.set(Some((n, 0)));
}

/// Disarms the failure; returns how many sync calls it failed.
#[cfg(test)]
pub(crate) fn disarm() -> u32 {
    ARMED.take().map_or(0, |(_, failed)| failed)
}

fn injected(path: &Path) -> Result<()> {
    let _ = path;
    #[cfg(test)]
    SYNCED.with_borrow_mut(|log| {
        if let Some(log) = log {
            log.push(path.to_path_buf());
        }
    });
    #[cfg(test)]
    match ARMED.get() {
        Some((0, failed)) => {
            ARMED.set(Some((0, failed + 1)));
            return Err(Error::at(path)(std::io::Error::from_raw_os_error(
                libc::EIO,
            )));
        }
        Some((n, failed)) => ARMED.set(Some((n - 1, failed))),
        None => {}
    }
    Ok(())
}

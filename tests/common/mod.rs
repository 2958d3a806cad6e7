//! Helpers the integration tests share: scratch directories, running the CLI, reopening a
//! store for writing, the API tests' executors and checks ([`api`]), the f64 reference
//! ([`reference`]), store images ([`image`]) and the damaged-store fixture
//! ([`store_fixture`]).
#![allow(dead_code)] // each test crate uses a different part

pub mod api;
pub mod cuda_checks;
pub mod emulated_driver;
pub mod image;
pub mod reference;
pub mod search_checks;
pub mod store_fixture;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory named after the test and this process, removed on drop (also when
/// the test fails).
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, empty `$TMPDIR/hybridvec-<name>-<pid>`.
    pub fn new(name: &str) -> Self {
        Self::under(&std::env::temp_dir(), name)
    }

    /// A fresh, empty `hybridvec-<name>-<pid>` under Cargo's scratch directory for tests
    /// (in the target directory) rather than `$TMPDIR`, which may be a small tmpfs.
    pub fn in_target(name: &str) -> Self {
        Self::under(Path::new(env!("CARGO_TARGET_TMPDIR")), name)
    }

    fn under(base: &Path, name: &str) -> Self {
        let p = base.join(format!("hybridvec-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        if std::fs::create_dir_all(&p).is_err() && base != std::env::temp_dir() {
            // The build's target directory is not here (test binaries carried to another
            // machine): `$TMPDIR` serves.
            return Self::new(name);
        }
        assert!(p.is_dir(), "cannot create {}", p.display());
        Self(p)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// `file` inside it.
    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `rel` in the source tree: under the crate's manifest directory, or, where that is not
/// on this machine (test binaries carried elsewhere, run from a copy of the tree), under
/// the current directory.
pub fn source_path(rel: &str) -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    if built.exists() {
        built
    } else {
        PathBuf::from(rel)
    }
}

/// The `hybridvec` binary: `$HYBRIDVEC_EXE` if set; else the one beside this test
/// binary's folder (`target/release/hybridvec` for `target/release/deps/<test>`, and
/// `device-carry/hybridvec` for `device-carry/tests/<test>` when the binaries are carried
/// to another machine); else the path Cargo built it at.
pub fn exe() -> PathBuf {
    if let Some(p) = std::env::var_os("HYBRIDVEC_EXE") {
        return PathBuf::from(p);
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|t| Some(t.parent()?.parent()?.join("hybridvec")))
        .filter(|p| p.is_file());
    beside.unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hybridvec")))
}

/// The `hybridvec` binary ([`exe`]), with the default log level and code paths.
pub fn cli() -> Command {
    let mut c = Command::new(exe());
    c.env_remove("HYBRIDVEC_FORCE_SCALAR")
        .env_remove("HYBRIDVEC_SIMD")
        .env_remove("RUST_LOG");
    c
}

/// Runs the CLI with `args` and waits for it.
pub fn run(args: &[&str]) -> Output {
    cli().args(args).output().expect("run hybridvec")
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Opens `dir` for writing, retrying for up to 2 s while it is `StoreLocked`. A child that
/// another test of the same binary is spawning holds a copy of every descriptor between
/// its fork and its exec, the lock of a store just closed here included, so a reopen can
/// briefly find the lock taken by nobody that is still writing.
pub fn open_writer(
    dir: &Path,
    recovery: hybridvec::Recovery,
) -> Result<hybridvec::WarmStore, hybridvec::Error> {
    let mut tries = 0;
    loop {
        match hybridvec::WarmStore::open_with(dir, recovery) {
            Err(hybridvec::Error::StoreLocked { .. }) if tries < 400 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            r => return r,
        }
    }
}

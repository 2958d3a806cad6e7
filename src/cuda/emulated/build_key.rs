//! The key the emulator's builds are kept under, shared by the library's emulation tests
//! and the emulated driver of the integration tests (`tests/common/emulated_driver.rs`
//! includes this file).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// A key that changes with the emulator's sources (`kernels/emu`, and the kernel sources
/// they include), the compiler's name and `what` is built: a build kept under it is
/// reused, so that each test binary does not compile its own.
pub(crate) fn sources_key(cxx: &str, what: &str) -> u64 {
    let kernels = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut files: Vec<PathBuf> = [kernels.clone(), kernels.join("emu")]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (cxx, what).hash(&mut h);
    for f in files {
        f.hash(&mut h);
        std::fs::read(&f).unwrap_or_default().hash(&mut h);
    }
    h.finish()
}

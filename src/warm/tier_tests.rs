//! The order of the tier's durability calls: its entries are written back before what
//! commits them (the superblock, or `tier.hv` when a tier is built).

use super::{sync, StoreConfig, WarmStore};
use crate::data;
use std::path::PathBuf;

fn position(log: &[PathBuf], part: &str) -> Option<usize> {
    log.iter().position(|p| p.to_string_lossy().contains(part))
}

#[test]
fn tier_entries_are_written_back_before_what_commits_them() {
    let dir = std::env::temp_dir().join(format!("hybridvec-tier-order-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = StoreConfig {
        dim: 16,
        first_chunk_bytes: 4096,
        max_chunk_bytes: 16384,
    };
    let mut s = WarmStore::create(&dir, config).unwrap();
    for i in 0..300 {
        s.put(&format!("a-{i}"), &data::random_vec(16, 1, i), b"")
            .unwrap();
    }
    // A build: the entries, then tier.hv (written under a temporary name and renamed).
    sync::record();
    s.build_int8_tier().unwrap();
    let log = sync::recorded();
    let marker = position(&log, ".tier.hv.tmp").expect("tier.hv written durably");
    for part in ["i8code-", "i8bound-"] {
        assert!(
            position(&log, part).is_some_and(|p| p < marker),
            "{part}: {log:?}"
        );
    }
    // A flush: the new rows' entries, then the superblock.
    for i in 0..300 {
        s.put(&format!("b-{i}"), &data::random_vec(16, 2, i), b"")
            .unwrap();
    }
    sync::record();
    s.flush().unwrap();
    let log = sync::recorded();
    let superblock = log
        .iter()
        .rposition(|p| p.ends_with("store.hv"))
        .expect("superblock written");
    for part in ["i8code-", "i8bound-"] {
        assert!(
            position(&log, part).is_some_and(|p| p < superblock),
            "{part}: {log:?}"
        );
    }
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

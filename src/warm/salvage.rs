//! Salvage: opening a store with damaged records by leaving them out, and the quarantine
//! file that makes such a repair stick.
//!
//! A strict open ([`Recovery::Strict`], what [`WarmStore::open`] does) refuses a store
//! with one bad record, naming the file, offset and reason. [`Recovery::Salvage`] checks
//! every committed record instead of stopping at the first bad one, and leaves the bad
//! ones out: they are never indexed, searched or returned, as if never written. Everything
//! else is kept. So where the damaged record had superseded an older record of its id,
//! the older one is the id's record again: the damaged record's id cannot be trusted to
//! mask anything, since the damage may be in the id itself.
//!
//! A writable salvage open (and so `hybridvec repair`) records the damaged rows in
//! `quarantine.hv` before it returns: from then on every open, strict or not, skips them.
//! The file is written whole under a temporary name, synced, renamed and the directory
//! synced, so a crash leaves either the old quarantine (a strict open still refuses the
//! store, and repair can run again) or the new one. Nothing else on disk changes: the
//! damaged bytes stay where they were, past any use. A read-only salvage writes nothing.
//!
//! A chunk file that is missing or of the wrong size keeps what is left of it and reads as
//! zeros past that, so only the records whose bytes were lost fail their checks and are
//! left out; a writable salvage makes a chunk of the right size with the surviving bytes
//! and keeps the bad file as `<name>.damaged`. Damage it
//! cannot isolate — the header, or both superblock slots — still fails the open.
//!
//! ```text
//! quarantine.hv: magic "HVQUAR\0\0", count u64, then per entry: row u64, id length u32
//!                (u32::MAX: id unreadable), id bytes; crc32c u32 over everything before it
//! ```

use super::sync;
use super::RowId;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// How an open treats records that fail their checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Recovery {
    /// Refuse the store at the first damaged record ([`Error::CorruptStore`]).
    #[default]
    Strict,
    /// Leave damaged records out and keep the rest (see the module docs); a writable open
    /// also quarantines them on disk.
    Salvage,
}

/// A record left out of a store because it failed its checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedRecord {
    /// Its row.
    pub row: RowId,
    /// Its id, when the id's bytes could still be read (they may be damaged too).
    pub id: Option<String>,
    /// What is wrong with it (file, offset, check), or that an earlier repair
    /// quarantined it.
    pub reason: String,
    /// True when an earlier repair quarantined it; false when this open found it damaged.
    pub earlier: bool,
}

pub(crate) const QUARANTINE_FILE: &str = "quarantine.hv";
const MAGIC: &[u8; 8] = b"HVQUAR\0\0";
const NO_ID: u32 = u32::MAX;

/// Quarantined rows and the id each had (when readable), by row.
pub(crate) type Quarantine = BTreeMap<RowId, Option<String>>;

/// Reads `dir/quarantine.hv`; empty when there is none.
pub(crate) fn read(dir: &Path) -> Result<Quarantine> {
    let path = dir.join(QUARANTINE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Quarantine::new()),
        Err(e) => return Err(Error::at(&path)(e)),
    };
    decode(&bytes).map_err(|(offset, reason)| Error::CorruptStore {
        file: path,
        offset,
        reason,
    })
}

fn decode(b: &[u8]) -> std::result::Result<Quarantine, (u64, String)> {
    if b.len() < 20 || &b[..8] != MAGIC {
        return Err((0, "not a quarantine file (bad magic or too short)".into()));
    }
    let body = &b[..b.len() - 4];
    let crc = u32::from_le_bytes(b[b.len() - 4..].try_into().expect("4 bytes"));
    if crc32c::crc32c(body) != crc {
        return Err(((b.len() - 4) as u64, "quarantine checksum mismatch".into()));
    }
    let count = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes"));
    let mut at = 16usize;
    let mut out = Quarantine::new();
    let short = |at: usize| (at as u64, "quarantine entry runs past the file".to_string());
    for _ in 0..count {
        let row_bytes = body.get(at..at + 8).ok_or_else(|| short(at))?;
        let row = u64::from_le_bytes(row_bytes.try_into().expect("8 bytes"));
        let len_bytes = body.get(at + 8..at + 12).ok_or_else(|| short(at))?;
        let len = u32::from_le_bytes(len_bytes.try_into().expect("4 bytes"));
        at += 12;
        let id = if len == NO_ID {
            None
        } else {
            let id = body.get(at..at + len as usize).ok_or_else(|| short(at))?;
            at += len as usize;
            Some(
                String::from_utf8(id.to_vec())
                    .map_err(|_| (at as u64, "quarantined id is not UTF-8".to_string()))?,
            )
        };
        out.insert(row, id);
    }
    if at != body.len() {
        return Err((at as u64, "bytes after the last quarantine entry".into()));
    }
    Ok(out)
}

fn encode(q: &Quarantine) -> Vec<u8> {
    let mut b = MAGIC.to_vec();
    b.extend_from_slice(&(q.len() as u64).to_le_bytes());
    for (row, id) in q {
        b.extend_from_slice(&row.to_le_bytes());
        match id {
            Some(id) => {
                b.extend_from_slice(&(id.len() as u32).to_le_bytes());
                b.extend_from_slice(id.as_bytes());
            }
            None => b.extend_from_slice(&NO_ID.to_le_bytes()),
        }
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Replaces `dir/quarantine.hv` with `q`, atomically and durably (temporary name, fsync,
/// rename, fsync of the directory). The caller holds the writer's lock.
pub(crate) fn write(dir: &Path, q: &Quarantine) -> Result<()> {
    sync::replace_file(dir, QUARANTINE_FILE, &encode(q))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_round_trips_and_rejects_every_flipped_byte() {
        let mut q = Quarantine::new();
        q.insert(15, Some("rec-15".into()));
        q.insert(2_999, None);
        q.insert(1 << 40, Some(String::new()));
        let enc = encode(&q);
        assert_eq!(decode(&enc).unwrap(), q);
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad).is_err(), "flipped byte {i} accepted");
        }
        for cut in 0..enc.len() {
            assert!(decode(&enc[..cut]).is_err(), "cut at {cut} accepted");
        }
        assert_eq!(
            decode(&encode(&Quarantine::new())).unwrap(),
            Quarantine::new()
        );
    }
}

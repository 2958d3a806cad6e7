//! On-disk layout of the store file (`store.hv`): a checksummed header and two
//! alternating superblock slots. Every field read from disk is validated before use.
//!
//! ```text
//! offset 0     header:     magic "HVSTORE\0", version u32, dim u32, chunk_rows u64,
//!                          blob_chunk_bytes u64, crc32c u32 (over the bytes before it)
//! offset 4096  superblock slot 0: magic "HVSUPER\0", generation u64, rows u64,
//!                          blob_len u64, crc32c u32
//! offset 8192  superblock slot 1: the same
//! ```
//! Little-endian throughout. Flushes alternate slots by generation, so a torn superblock
//! write leaves the other slot intact.

use crate::error::{Error, Result};
use std::path::Path;

pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const STORE_FILE: &str = "store.hv";
pub(crate) const STORE_FILE_LEN: usize = 3 * 4096;
const HEADER_MAGIC: &[u8; 8] = b"HVSTORE\0";
const SUPER_MAGIC: &[u8; 8] = b"HVSUPER\0";
pub(crate) const SLOT_OFFSETS: [usize; 2] = [4096, 8192];

/// Size of one per-record metadata entry.
pub(crate) const META_BYTES: usize = 32;

/// `state` values of a metadata entry (the word published last).
pub(crate) const STATE_EMPTY: u32 = 0;
pub(crate) const STATE_PUT: u32 = 1;
pub(crate) const STATE_TOMBSTONE: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub dim: u32,
    pub chunk_rows: u64,
    pub blob_chunk_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Superblock {
    pub generation: u64,
    pub rows: u64,
    pub blob_len: u64,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

impl Header {
    pub(crate) fn encode(&self) -> [u8; 36] {
        let mut b = [0u8; 36];
        b[..8].copy_from_slice(HEADER_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.dim.to_le_bytes());
        b[16..24].copy_from_slice(&self.chunk_rows.to_le_bytes());
        b[24..32].copy_from_slice(&self.blob_chunk_bytes.to_le_bytes());
        let crc = crc32c::crc32c(&b[..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8], file: &Path) -> Result<Self> {
        let corrupt = |offset: u64, reason: String| Error::CorruptStore {
            file: file.to_path_buf(),
            offset,
            reason,
        };
        if b.len() < 36 {
            return Err(corrupt(0, "file too short for a header".into()));
        }
        if &b[..8] != HEADER_MAGIC {
            return Err(corrupt(0, "bad magic: not a hybridvec store".into()));
        }
        if crc32c::crc32c(&b[..32]) != u32_at(b, 32) {
            return Err(corrupt(32, "header checksum mismatch".into()));
        }
        let version = u32_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let h = Header {
            dim: u32_at(b, 12),
            chunk_rows: u64_at(b, 16),
            blob_chunk_bytes: u64_at(b, 24),
        };
        if h.dim == 0
            || h.chunk_rows == 0
            || !h.chunk_rows.is_multiple_of(1024)
            || h.chunk_rows > 1 << 24
        {
            return Err(corrupt(
                12,
                format!("implausible dim {} / chunk rows {}", h.dim, h.chunk_rows),
            ));
        }
        if h.blob_chunk_bytes == 0
            || !h.blob_chunk_bytes.is_multiple_of(4096)
            || h.blob_chunk_bytes > 1 << 34
        {
            return Err(corrupt(
                24,
                format!("implausible content chunk size {}", h.blob_chunk_bytes),
            ));
        }
        Ok(h)
    }
}

impl Superblock {
    pub(crate) fn encode(&self) -> [u8; 36] {
        let mut b = [0u8; 36];
        b[..8].copy_from_slice(SUPER_MAGIC);
        b[8..16].copy_from_slice(&self.generation.to_le_bytes());
        b[16..24].copy_from_slice(&self.rows.to_le_bytes());
        b[24..32].copy_from_slice(&self.blob_len.to_le_bytes());
        let crc = crc32c::crc32c(&b[..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// `None` for a slot that is empty, torn or corrupt.
    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < 36 || &b[..8] != SUPER_MAGIC || crc32c::crc32c(&b[..32]) != u32_at(b, 32) {
            return None;
        }
        Some(Superblock {
            generation: u64_at(b, 8),
            rows: u64_at(b, 16),
            blob_len: u64_at(b, 24),
        })
    }

    /// The newest valid slot of a store file, or `None` when neither slot is valid.
    pub(crate) fn newest(file: &[u8]) -> Option<(usize, Self)> {
        SLOT_OFFSETS
            .iter()
            .enumerate()
            .filter_map(|(i, &o)| file.get(o..o + 36).and_then(Self::decode).map(|s| (i, s)))
            .max_by_key(|(_, s)| s.generation)
    }
}

/// The checksum stored with a record: over its kind, lengths, inverse norm, vector, id and
/// content.
pub(crate) fn record_crc(
    state: u32,
    inv_norm: f32,
    vector: &[u8],
    id: &[u8],
    content: &[u8],
) -> u32 {
    let mut lens = [0u8; 16];
    lens[..4].copy_from_slice(&state.to_le_bytes());
    lens[4..8].copy_from_slice(&(id.len() as u32).to_le_bytes());
    lens[8..12].copy_from_slice(&(content.len() as u32).to_le_bytes());
    lens[12..16].copy_from_slice(&inv_norm.to_bits().to_le_bytes());
    let c = crc32c::crc32c(&lens);
    let c = crc32c::crc32c_append(c, vector);
    let c = crc32c::crc32c_append(c, id);
    crc32c::crc32c_append(c, content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_superblock_round_trip_and_reject_every_flipped_byte() {
        let h = Header {
            dim: 768,
            chunk_rows: 16384,
            blob_chunk_bytes: 1 << 26,
        };
        let p = Path::new("store.hv");
        let enc = h.encode();
        assert_eq!(Header::decode(&enc, p).unwrap(), h);
        for i in 0..enc.len() {
            let mut bad = enc;
            bad[i] ^= 0x40;
            assert!(
                Header::decode(&bad, p).is_err(),
                "flipped byte {i} accepted"
            );
        }
        let s = Superblock {
            generation: 9,
            rows: 123,
            blob_len: 4567,
        };
        let enc = s.encode();
        assert_eq!(Superblock::decode(&enc), Some(s));
        for i in 0..enc.len() {
            let mut bad = enc;
            bad[i] ^= 1;
            assert_eq!(Superblock::decode(&bad), None, "flipped byte {i} accepted");
        }
    }

    #[test]
    fn newest_valid_slot_wins() {
        let mut file = vec![0u8; STORE_FILE_LEN];
        assert_eq!(Superblock::newest(&file), None);
        let a = Superblock {
            generation: 4,
            rows: 10,
            blob_len: 1,
        };
        let b = Superblock {
            generation: 5,
            rows: 12,
            blob_len: 2,
        };
        file[4096..4132].copy_from_slice(&a.encode());
        file[8192..8228].copy_from_slice(&b.encode());
        assert_eq!(Superblock::newest(&file), Some((1, b)));
        file[8200] ^= 1; // tear the newer slot
        assert_eq!(Superblock::newest(&file), Some((0, a)));
    }
}

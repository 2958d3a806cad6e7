//! On-disk layout of the store file (`store.hv`): a checksummed header and two
//! alternating superblock slots. Every field read from disk is validated before use.
//!
//! ```text
//! offset 0     header:     magic "HVSTORE\0", version u32, dim u32, a u64, b u64,
//!                          crc32c u32 (over the bytes before it)
//!              version 2:  a = first_chunk_bytes, b = max_chunk_bytes (every region)
//!              version 1:  a = chunk_rows, b = blob_chunk_bytes (fixed-size chunks)
//!              dim:        bits 0–23 the dimension, bits 24–31 the element type
//!                          (0 = f32, 1 = f16, 2 = bf16; always 0 in version 1)
//! offset 4096  superblock slot 0: magic "HVSUPER\0", generation u64, rows u64,
//!                          blob_len u64, crc32c u32
//! offset 8192  superblock slot 1: the same
//! ```
//! Little-endian throughout. Flushes alternate slots by generation, so a torn superblock
//! write leaves the other slot intact.
//!
//! **Chunk sizes.** Version 2 sizes every region's chunks in bytes: chunk 0 is
//! `first_chunk_bytes`, chunk `i ≥ 1` is `first << (i - 1)` up to `max_chunk_bytes`, so
//! chunk `i ≥ 1` starts at `first << (i - 1)` (doubling the region) until the cap, then
//! every chunk adds the cap. A region's disk use is therefore at most twice what it holds
//! plus one first chunk, and chunks past 2 MiB start on huge-page boundaries. Version 1
//! stores (fixed `chunk_rows` rows per vector and metadata chunk, fixed content chunks)
//! open and grow as they always did.
//!
//! **Element types.** A store of 16-bit rows (2 bytes a value) says so in the top byte of
//! the dimension word, which dimensions (at most 2^20) never use: f32 stores are written
//! exactly as before, and builds from before 16-bit stores refuse a 16-bit one as having an
//! implausible dimension rather than misread it.

use crate::elem::ElementType;
use crate::error::{Error, Result};
use std::path::Path;

/// The version new stores are written in.
pub(crate) const FORMAT_VERSION: u32 = 2;
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

/// Bounds on version-2 chunk sizes (both powers of two).
pub(crate) const MIN_CHUNK_BYTES: u64 = 4096;
pub(crate) const MAX_CHUNK_BYTES: u64 = 1 << 34;

/// How big each chunk file of a region is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChunkSizes {
    /// Every chunk the same size (version 1).
    Fixed(usize),
    /// `first`, then doubling the region up to chunks of `max` (version 2).
    Doubling { first: usize, max: usize },
}

impl ChunkSizes {
    /// Where chunk `i` starts in the region.
    pub(crate) fn start(self, i: usize) -> usize {
        match self {
            ChunkSizes::Fixed(c) => i * c,
            ChunkSizes::Doubling { first, max } => {
                // Chunk `k` is the first of size `max`, and it starts at `max`.
                let k = (max / first).trailing_zeros() as usize + 1;
                match i {
                    0 => 0,
                    i if i <= k => first << (i - 1),
                    i => (i - k + 1) * max,
                }
            }
        }
    }

    /// The size of chunk `i`.
    pub(crate) fn len(self, i: usize) -> usize {
        self.start(i + 1) - self.start(i)
    }

    /// The chunk holding byte `at` of the region.
    pub(crate) fn chunk_of(self, at: usize) -> usize {
        match self {
            ChunkSizes::Fixed(c) => at / c,
            ChunkSizes::Doubling { first, max } => {
                let k = (max / first).trailing_zeros() as usize + 1;
                if at < first {
                    0
                } else if at < max {
                    (at / first).ilog2() as usize + 1
                } else {
                    k + at / max - 1
                }
            }
        }
    }

    /// How many chunks hold the first `bytes` bytes of the region.
    pub(crate) fn chunks_for(self, bytes: usize) -> usize {
        if bytes == 0 {
            0
        } else {
            self.chunk_of(bytes - 1) + 1
        }
    }
}

/// How a store's regions are cut into chunk files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Version 1: `chunk_rows` rows per vector and metadata chunk; fixed content chunks.
    Fixed {
        chunk_rows: u64,
        blob_chunk_bytes: u64,
    },
    /// Version 2: every region doubles from `first` to chunks of `max` bytes.
    Doubling { first: u64, max: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub dim: u32,
    pub layout: Layout,
    /// The vectors' element type (f32 in version 1).
    pub element: ElementType,
}

/// The element type's code in the top byte of the header's dimension word.
fn element_code(e: ElementType) -> u32 {
    match e {
        ElementType::F32 => 0,
        ElementType::F16 => 1,
        ElementType::Bf16 => 2,
    }
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

impl Header {
    /// The chunk sizes of the vector, metadata and content regions.
    pub(crate) fn chunk_sizes(&self) -> [ChunkSizes; 3] {
        match self.layout {
            Layout::Fixed {
                chunk_rows,
                blob_chunk_bytes,
            } => [
                ChunkSizes::Fixed(chunk_rows as usize * self.row_bytes()),
                ChunkSizes::Fixed(chunk_rows as usize * META_BYTES),
                ChunkSizes::Fixed(blob_chunk_bytes as usize),
            ],
            Layout::Doubling { first, max } => {
                [ChunkSizes::Doubling {
                    first: first as usize,
                    max: max as usize,
                }; 3]
            }
        }
    }

    /// Bytes of one row of vectors.
    pub(crate) fn row_bytes(&self) -> usize {
        self.dim as usize * self.element.bytes()
    }

    pub(crate) fn encode(&self) -> [u8; 36] {
        let (version, a, b) = match self.layout {
            Layout::Fixed {
                chunk_rows,
                blob_chunk_bytes,
            } => (1u32, chunk_rows, blob_chunk_bytes),
            Layout::Doubling { first, max } => (2, first, max),
        };
        let dim_word = self.dim | element_code(self.element) << 24;
        let mut out = [0u8; 36];
        out[..8].copy_from_slice(HEADER_MAGIC);
        out[8..12].copy_from_slice(&version.to_le_bytes());
        out[12..16].copy_from_slice(&dim_word.to_le_bytes());
        out[16..24].copy_from_slice(&a.to_le_bytes());
        out[24..32].copy_from_slice(&b.to_le_bytes());
        let crc = crc32c::crc32c(&out[..32]);
        out[32..36].copy_from_slice(&crc.to_le_bytes());
        out
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
        let (dim, code) = (u32_at(b, 12) & 0xFF_FFFF, u32_at(b, 12) >> 24);
        if dim == 0 || dim as usize > super::MAX_DIM {
            return Err(corrupt(12, format!("implausible dimension {dim}")));
        }
        let (a, c) = (u64_at(b, 16), u64_at(b, 24));
        let layout = match version {
            1 => {
                if a == 0 || !a.is_multiple_of(1024) || a > 1 << 24 {
                    return Err(corrupt(16, format!("implausible chunk rows {a}")));
                }
                if c == 0 || !c.is_multiple_of(4096) || c > 1 << 34 {
                    return Err(corrupt(24, format!("implausible content chunk size {c}")));
                }
                Layout::Fixed {
                    chunk_rows: a,
                    blob_chunk_bytes: c,
                }
            }
            2 => {
                let ok = |v: u64| {
                    v.is_power_of_two() && (MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&v)
                };
                if !ok(a) || !ok(c) || a > c {
                    return Err(corrupt(
                        16,
                        format!("implausible chunk sizes: first {a}, max {c}"),
                    ));
                }
                Layout::Doubling { first: a, max: c }
            }
            v => {
                return Err(Error::UnsupportedVersion {
                    found: v,
                    supported: FORMAT_VERSION,
                })
            }
        };
        let element = match (version, code) {
            (_, 0) => ElementType::F32,
            (2, 1) => ElementType::F16,
            (2, 2) => ElementType::Bf16,
            _ => {
                return Err(corrupt(
                    15,
                    format!("unknown element type code {code} (version {version})"),
                ))
            }
        };
        Ok(Header {
            dim,
            layout,
            element,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Superblock {
    pub generation: u64,
    pub rows: u64,
    pub blob_len: u64,
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
        let p = Path::new("store.hv");
        for h in [
            Header {
                dim: 768,
                layout: Layout::Doubling {
                    first: 1 << 16,
                    max: 1 << 30,
                },
                element: ElementType::F32,
            },
            Header {
                dim: 768,
                layout: Layout::Fixed {
                    chunk_rows: 16384,
                    blob_chunk_bytes: 1 << 26,
                },
                element: ElementType::F32,
            },
            Header {
                dim: 100,
                layout: Layout::Doubling {
                    first: 1 << 12,
                    max: 1 << 20,
                },
                element: ElementType::F16,
            },
            Header {
                dim: 3,
                layout: Layout::Doubling {
                    first: 1 << 12,
                    max: 1 << 12,
                },
                element: ElementType::Bf16,
            },
        ] {
            let enc = h.encode();
            // The element code is the dimension word's top byte; 0 for f32.
            assert_eq!(enc[15] != 0, h.element != ElementType::F32);
            assert_eq!(Header::decode(&enc, p).unwrap(), h);
            for i in 0..enc.len() {
                let mut bad = enc;
                bad[i] ^= 0x40;
                assert!(
                    Header::decode(&bad, p).is_err(),
                    "flipped byte {i} accepted"
                );
            }
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

#[cfg(test)]
mod chunk_size_tests {
    use super::ChunkSizes;

    #[test]
    fn doubling_chunks_tile_the_region_and_locate_every_byte() {
        for (first, max) in [
            (4096, 4096),
            (4096, 1 << 15),
            (1 << 16, 1 << 30),
            (8192, 1 << 20),
        ] {
            let sizes = ChunkSizes::Doubling { first, max };
            assert_eq!(sizes.start(0), 0);
            let mut end = 0;
            for i in 0..64 {
                assert_eq!(sizes.start(i), end, "chunk {i} of {first}/{max}");
                let len = sizes.len(i);
                assert!(len.is_power_of_two() && (first..=max).contains(&len));
                // Doubling: a chunk is at most the region before it (chunk 0 aside).
                assert!(i == 0 || len <= sizes.start(i), "chunk {i}");
                for at in [end, end + len / 2, end + len - 1] {
                    assert_eq!(sizes.chunk_of(at), i, "byte {at}");
                }
                assert_eq!(sizes.chunks_for(end + 1), i + 1);
                assert_eq!(sizes.chunks_for(end + len), i + 1);
                end += len;
            }
            assert_eq!(sizes.chunks_for(0), 0);
        }
        let fixed = ChunkSizes::Fixed(3 * 4096);
        assert_eq!(
            (fixed.start(5), fixed.len(5), fixed.chunk_of(3 * 4096)),
            (15 * 4096, 3 * 4096, 1)
        );
    }
}

//! One record's bytes in place: its metadata entry (read word by word through atomics),
//! its vector, its id and content, and the check of all of them against its checksum.

use super::format::{self, META_BYTES, STATE_PUT, STATE_TOMBSTONE};
use super::WarmStore;
use crate::error::{Error, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// A row's metadata entry, decoded.
pub(super) struct Meta {
    pub(super) state: u32,
    pub(super) crc: u32,
    pub(super) off: u64,
    pub(super) id_len: u32,
    pub(super) content_len: u32,
    pub(super) inv_norm: f32,
}

impl WarmStore {
    /// Word `w` (0..8) of row `row`'s metadata entry, which must be mapped.
    pub(super) fn meta_word(&self, row: u64, w: usize) -> &AtomicU32 {
        let at = row as usize * META_BYTES + w * 4;
        assert!(
            w < 8 && at + 4 <= self.metas.mapped_bytes(),
            "metadata of row {row} not mapped"
        );
        // SAFETY: in bounds of mapped chunks (asserted), 4-byte aligned (page-aligned base,
        // 32-byte entries), and every access to metadata words goes through atomics.
        unsafe { &*(self.metas.base().add(at) as *const AtomicU32) }
    }

    pub(super) fn meta(&self, row: u64) -> Meta {
        let w = |i| self.meta_word(row, i).load(Ordering::Acquire);
        Meta {
            state: w(0),
            crc: w(1),
            off: w(2) as u64 | (w(3) as u64) << 32,
            id_len: w(4),
            content_len: w(5),
            inv_norm: f32::from_bits(w(6)),
        }
    }

    /// Bytes `[at, at + len)` of the content region, which the caller has checked are
    /// inside published (immutable) data.
    pub(super) fn blob(&self, at: u64, len: u32) -> &[u8] {
        let (at, len) = (at as usize, len as usize);
        assert!(
            at.checked_add(len)
                .is_some_and(|e| e <= self.blobs.mapped_bytes()),
            "content range out of bounds"
        );
        // SAFETY: in bounds (asserted); published bytes are never written again.
        unsafe { std::slice::from_raw_parts(self.blobs.base().add(at), len) }
    }

    /// Row `row`'s stored vector bytes, which must be mapped.
    pub(super) fn vector_bytes(&self, row: u64) -> &[u8] {
        let start = (row as usize).checked_mul(self.row_bytes);
        let end = start.and_then(|s| s.checked_add(self.row_bytes));
        assert!(
            end.is_some_and(|e| e <= self.vectors.mapped_bytes()),
            "row {row} not mapped"
        );
        // SAFETY: in bounds (asserted), and a published row is never written again.
        unsafe {
            std::slice::from_raw_parts(
                self.vectors.base().add(row as usize * self.row_bytes),
                self.row_bytes,
            )
        }
    }

    /// Row `row`'s vector as f32 (16-bit values widened, exactly).
    pub(super) fn embedding(&self, row: u64) -> Vec<f32> {
        let bytes = self.vector_bytes(row);
        match self.element.half() {
            None => bytes
                .chunks_exact(4)
                .map(|b| f32::from_ne_bytes(b.try_into().expect("4 bytes")))
                .collect(),
            Some(half) => bytes
                .chunks_exact(2)
                .map(|b| half.to_f32(u16::from_ne_bytes([b[0], b[1]])))
                .collect(),
        }
    }

    pub(super) fn read_id(&self, m: &Meta) -> Result<String> {
        String::from_utf8(self.blob(m.off, m.id_len).to_vec()).map_err(|_| Error::CorruptStore {
            file: self.blobs.locate(m.off as usize).0,
            offset: self.blobs.locate(m.off as usize).1,
            reason: "record id is not UTF-8".into(),
        })
    }

    /// Checks one committed row: state, bounds, checksum.
    pub(super) fn validate(&self, row: u64, blob_len: u64) -> Result<()> {
        let corrupt = |reason: String| {
            let (file, offset) = self.metas.locate(row as usize * META_BYTES);
            Error::CorruptStore {
                file,
                offset,
                reason: format!("row {row}: {reason}"),
            }
        };
        let m = self.meta(row);
        if m.state != STATE_PUT && m.state != STATE_TOMBSTONE {
            return Err(corrupt(format!("bad state word {}", m.state)));
        }
        let end = m.off.checked_add(m.id_len as u64 + m.content_len as u64);
        if m.id_len == 0 || end.is_none_or(|e| e > blob_len) {
            return Err(corrupt(format!(
                "id/content [{}, +{}+{}) outside committed content",
                m.off, m.id_len, m.content_len
            )));
        }
        let id = self.blob(m.off, m.id_len);
        let content = self.blob(m.off + m.id_len as u64, m.content_len);
        let vbytes = self.vector_bytes(row);
        if format::record_crc(m.state, m.inv_norm, vbytes, id, content) != m.crc {
            // The checksum covers the metadata entry, the vector and the id and content:
            // name where each of them lies.
            let name = |(f, o): (PathBuf, u64)| {
                let f = f.file_name().map(|n| n.to_string_lossy().into_owned());
                format!("{} at {o}", f.unwrap_or_default())
            };
            let row_bytes = self.row_bytes;
            return Err(corrupt(format!(
                "checksum mismatch over its metadata, its vector ({}) and its id and content ({})",
                name(self.vectors.locate(row as usize * row_bytes)),
                name(self.blobs.locate(m.off as usize)),
            )));
        }
        Ok(())
    }
}

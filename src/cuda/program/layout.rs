//! Where a program's buffers lie in the one device allocation a call runs in (the
//! stream's arena), so that a call needs one upload and one read-back however many
//! buffers its program names:
//! - the call's inputs first, the queries then the live mask: one copy uploads both;
//! - the scratch buffers only the device reads next;
//! - the results last and adjacent (scores, indices, then the filtered path's counts):
//!   one copy reads them all back.
//!
//! Every buffer starts on a [`ALIGN`]-byte boundary, the driver's allocation granularity
//! and more than any kernel's vector loads need. A layout depends only on the program,
//! so the same bytes of an arena hold the same buffer in every program with the same
//! inputs (the chunks of one cosine call upload their queries once).

use super::{Buf, Program};
use std::ops::Range;

/// Alignment of every buffer in an arena, bytes.
pub(crate) const ALIGN: usize = 256;

/// Byte offsets of a program's buffers in its arena. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Byte offset of the queries (f32).
    pub(crate) queries: usize,
    /// Byte offset of the live mask (u32).
    pub(crate) mask: usize,
    /// Bytes from the arena's start that hold every input: what one upload copies.
    pub(crate) inputs_end: usize,
    /// Byte offset of each scratch buffer, by its index in [`Program::temps`].
    pub(crate) temps: Vec<usize>,
    /// Bytes from the first result's start to the last one's end: what one read-back
    /// copies.
    pub(crate) results: Range<usize>,
    /// Bytes the arena must hold (0 for a program with neither inputs nor scratch).
    pub(crate) total: usize,
}

fn aligned(bytes: usize) -> usize {
    bytes.div_ceil(ALIGN) * ALIGN
}

impl Layout {
    /// The layout of `p`'s buffers.
    pub(crate) fn of(p: &Program) -> Self {
        let extents = p.extents();
        let queries_bytes = extents.queries * 4;
        let mask_bytes = extents.mask * 4;
        let mask = aligned(queries_bytes);
        let inputs_end = if mask_bytes > 0 {
            mask + mask_bytes
        } else {
            queries_bytes
        };
        let mut at = aligned(inputs_end);
        let results: Vec<usize> = p.result_temps();
        let mut temps = vec![0; p.temps().len()];
        let bytes = |i: usize| p.temps()[i].len() * p.temps()[i].elem().size();
        for i in (0..temps.len()).filter(|i| !results.contains(i)) {
            temps[i] = at;
            at += aligned(bytes(i));
        }
        let first = at;
        let mut last_end = at;
        for &i in &results {
            temps[i] = at;
            last_end = at + bytes(i);
            at += aligned(bytes(i));
        }
        Layout {
            queries: 0,
            mask,
            inputs_end,
            temps,
            results: first..last_end,
            total: at,
        }
    }

    /// The byte range of the first `elems` elements of scratch buffer `buf` (of elements
    /// of `elem_size` bytes), or `None` when `buf` is not scratch.
    pub(crate) fn temp_range(
        &self,
        buf: Buf,
        elems: usize,
        elem_size: usize,
    ) -> Option<Range<usize>> {
        match buf {
            Buf::Temp(i) => self.temps.get(i).map(|&at| at..at + elems * elem_size),
            _ => None,
        }
    }
}

impl Program {
    /// The scratch buffers that hold the results, in read-back order, each once: the
    /// scores, the indices (top-k), the candidate counts (the filtered path).
    pub(crate) fn result_temps(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let bufs = [
            Some(self.scores),
            Some(self.indices),
            self.counts.map(|c| c.0),
        ];
        for b in bufs.into_iter().flatten() {
            if let Buf::Temp(i) = b {
                if i < self.temps.len() && !out.contains(&i) {
                    out.push(i);
                }
            }
        }
        out
    }

    /// This program's [`Layout`].
    pub(crate) fn layout(&self) -> Layout {
        Layout::of(self)
    }
}

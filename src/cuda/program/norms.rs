//! The resident corpus's derived copies, made on the device: inverse row norms (over a
//! delta of rows when a store grew) and the unit-norm 16-bit (FP16 or BF16) copy. Each is a program of
//! one launch and no scratch; what it makes is the buffer it writes, so it has no
//! result to read back.

use super::{grid, half_format, int, long, Arg, Buf, Extents, Kernel, Launch, Program};
use crate::cuda::Half;

/// The norms of `rows` resident rows starting at row `row0`: `hv_row_inv_norms` reads
/// rows × dim floats from element row0·dim of the corpus and writes `rows` floats from
/// element row0 of the norms. (The backend uploads the host's f64-exact norms instead;
/// the kernel stays for the emulation tests and as a reference.)
#[cfg(test)]
pub(crate) fn inv_norms(row0: usize, rows: usize, dim: usize) -> Program {
    let end = row0 + rows;
    let mut p = Program::new(Extents {
        corpus: end * dim,
        inv_norms: end,
        ..Extents::default()
    });
    p.launches.push(Launch {
        kernel: Kernel::InvNorms,
        grid: grid((rows * 32).div_ceil(256), 1),
        block: 256,
        smem: 0,
        args: vec![
            Arg::Ptr(Buf::Corpus, row0 * dim),
            long(rows),
            int(dim),
            Arg::Ptr(Buf::InvNorms, row0),
        ],
    });
    p
}

/// The 16-bit copy of `rows` resident rows: `hv_rows_to_half` reads rows × dim floats of
/// the corpus and `rows` norms, and writes rows × dim FP16 or BF16 values of the copy.
pub(crate) fn rows_to_half(rows: usize, dim: usize, half: Half) -> Program {
    let mut p = Program::new(Extents {
        corpus: rows * dim,
        inv_norms: rows,
        corpus_half: rows * dim,
        ..Extents::default()
    });
    p.launches.push(Launch {
        kernel: Kernel::RowsToHalf,
        grid: grid((rows * dim).div_ceil(256).clamp(1, 1 << 16), 1),
        block: 256,
        smem: 0,
        args: vec![
            Arg::Ptr(Buf::Corpus, 0),
            long(rows),
            int(dim),
            Arg::Ptr(Buf::InvNorms, 0),
            half_format(half),
            Arg::Ptr(Buf::CorpusHalf, 0),
        ],
    });
    p
}

//! Row-major `f32` matrices, borrowed and owned, and the row norms a corpus keeps.

use crate::error::{Error, Result};
use crate::simd;
use rayon::prelude::*;

/// A validated, borrowed, row-major `rows × cols` matrix of `f32`.
///
/// Construction checks the shape only; finiteness is checked where the data is used
/// (once per corpus, once per query batch), so a view costs nothing to make.
#[derive(Clone, Copy, Debug)]
pub struct MatrixRef<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
}

impl<'a> MatrixRef<'a> {
    /// Views `data` as `rows × cols`, row-major.
    ///
    /// Errors: [`Error::EmptyInput`] when `rows` or `cols` is 0, [`Error::InvalidShape`] when
    /// `data.len() != rows * cols`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        if rows == 0 {
            return Err(Error::EmptyInput {
                what: "matrix has no rows",
            });
        }
        if cols == 0 {
            return Err(Error::EmptyInput {
                what: "matrix has dimension 0",
            });
        }
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(Error::InvalidShape {
                rows,
                cols,
                len: data.len(),
            });
        }
        Ok(Self { data, rows, cols })
    }

    /// Views `data` as rows of `cols` values; the row count is `data.len() / cols`.
    pub fn from_rows(data: &'a [f32], cols: usize) -> Result<Self> {
        if cols == 0 {
            return Err(Error::EmptyInput {
                what: "matrix has dimension 0",
            });
        }
        Self::new(data, data.len() / cols, cols)
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (the vector dimension).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The whole buffer, row-major.
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }

    /// Row `i`. Panics when `i >= rows`, like slice indexing.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Rows `range` as a view of their own. Panics when the range is out of bounds, like
    /// slice indexing; an empty range gives a view of no rows (which `new` refuses).
    pub(crate) fn row_range(&self, range: std::ops::Range<usize>) -> MatrixRef<'a> {
        MatrixRef {
            data: &self.data[range.start * self.cols..range.end * self.cols],
            rows: range.len(),
            cols: self.cols,
        }
    }

    /// The position of the first NaN or infinity, as [`Error::NonFinite`].
    pub fn check_finite(&self) -> Result<()> {
        // Chunked so a large corpus is scanned on all cores; the first bad row wins. Small
        // inputs (a query, one stored row) stay on the calling thread: a hop into the rayon
        // pool costs more than the scan.
        const ROWS_PER_TASK: usize = 4096;
        const SERIAL_VALUES: usize = 1 << 16;
        let bad = if self.data.len() <= SERIAL_VALUES {
            first_non_finite(self.data).map(|p| (p / self.cols, p % self.cols))
        } else {
            self.data
                .par_chunks(ROWS_PER_TASK * self.cols)
                .enumerate()
                .find_map_first(|(chunk, block)| {
                    first_non_finite(block).map(|p| {
                        let flat = chunk * ROWS_PER_TASK * self.cols + p;
                        (flat / self.cols, flat % self.cols)
                    })
                })
        };
        match bad {
            Some((row, col)) => Err(Error::NonFinite { row, col }),
            None => Ok(()),
        }
    }
}

/// Index of the first NaN or infinity in `v`. Scans 64-value blocks with a branch-free
/// fold (which vectorises) and only searches inside the block that failed.
pub(crate) fn first_non_finite(v: &[f32]) -> Option<usize> {
    const EXP: u32 = 0x7f80_0000;
    let mut at = 0;
    for block in v.chunks(64) {
        let any_bad = block
            .iter()
            .fold(false, |acc, x| acc | (x.to_bits() & EXP == EXP));
        if any_bad {
            return block.iter().position(|x| !x.is_finite()).map(|p| at + p);
        }
        at += block.len();
    }
    None
}

/// An owned row-major `rows × cols` matrix of `f32`; also the type of score matrices.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
}

/// The `Q × N` cosine scores of a query batch against a corpus, row-major (row = query).
pub type Scores = Matrix;

impl Matrix {
    /// Takes ownership of `data` as `rows × cols`; same checks as [`MatrixRef::new`].
    pub fn new(data: Vec<f32>, rows: usize, cols: usize) -> Result<Self> {
        MatrixRef::new(&data, rows, cols)?;
        Ok(Self { data, rows, cols })
    }

    /// A zero-filled matrix.
    pub(crate) fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            data: crate::mem::zeroed_f32(rows * cols),
            rows,
            cols,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i`. Panics when `i >= rows`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Element `(i, j)`. Panics when out of range.
    pub fn get(&self, i: usize, j: usize) -> f32 {
        assert!(j < self.cols, "column {j} out of range");
        self.data[i * self.cols + j]
    }

    /// The whole buffer, row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// A borrowed view.
    pub fn view(&self) -> MatrixRef<'_> {
        MatrixRef {
            data: &self.data,
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// Gives the buffer back.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }
}

/// Corpus rows must have a norm of 0 or within `[MIN_NORM, MAX_NORM]`: outside it the
/// inverse norm or the f32 dot products leave f32's normal range, and scores would turn
/// into NaN or lose all precision.
pub const MIN_NORM: f64 = 1e-30;
/// See [`MIN_NORM`].
pub const MAX_NORM: f64 = 1e30;

/// `1/‖row‖` for every row (0 for a zero row), on all cores.
///
/// The sum of squares is accumulated in f64, so large or tiny (but supported) values
/// neither overflow nor underflow. A row outside the supported norm range is
/// [`Error::NormOutOfRange`].
pub(crate) fn inverse_norms(m: MatrixRef<'_>) -> Result<Vec<f32>> {
    let mut out = vec![0.0f32; m.rows()];
    out.par_chunks_mut(1024).enumerate().for_each(|(c, dst)| {
        for (i, inv) in dst.iter_mut().enumerate() {
            *inv = inverse_norm(simd::sum_squares_f64(m.row(c * 1024 + i)).sqrt());
        }
    });
    if let Some(row) = out.iter().position(|v| v.is_nan()) {
        let norm = simd::sum_squares_f64(m.row(row)).sqrt();
        return Err(Error::NormOutOfRange { row, norm });
    }
    Ok(out)
}

/// `1/norm`, 0 for a zero row, NaN for a norm outside the supported range.
pub(crate) fn inverse_norm(norm: f64) -> f32 {
    if norm == 0.0 {
        0.0
    } else if (MIN_NORM..=MAX_NORM).contains(&norm) {
        (1.0 / norm) as f32
    } else {
        f32::NAN
    }
}

/// Scales `v` to unit norm in place, in f64 so that any finite input works; a zero vector
/// stays zero.
pub(crate) fn normalize(v: &mut [f32]) {
    let ss = simd::sum_squares_f64(v);
    if ss > 0.0 {
        let inv = 1.0 / ss.sqrt();
        v.iter_mut().for_each(|x| *x = (*x as f64 * inv) as f32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both scan paths (serial below 65 536 values, parallel above) find the first bad
    /// value at every position class: block starts, block ends, tails, and denormals or
    /// the largest finite values are never flagged.
    #[test]
    fn first_non_finite_finds_the_first_bad_value() {
        for len in [1usize, 63, 64, 65, 1000, 70_000] {
            let mut v = crate::data::random_vec(len, 41, len as u64);
            v[0] = f32::MAX;
            v[len - 1] = f32::MIN_POSITIVE / 2.0;
            assert_eq!(first_non_finite(&v), None, "len {len}");
            let cols = if len % 7 == 0 { 7 } else { 1 };
            assert!(MatrixRef::new(&v, len / cols, cols)
                .unwrap()
                .check_finite()
                .is_ok());
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                for at in [0, len / 2, len.saturating_sub(64), len - 1] {
                    let mut w = v.clone();
                    w[at] = bad;
                    if at + 1 < len {
                        w[len - 1] = f32::NAN; // a later bad value must not win
                    }
                    assert_eq!(first_non_finite(&w), Some(at), "len {len} at {at}");
                    let m = MatrixRef::new(&w, len / cols, cols).unwrap();
                    assert!(matches!(
                        m.check_finite(),
                        Err(Error::NonFinite { row, col }) if row * cols + col == at
                    ));
                }
            }
        }
    }
}

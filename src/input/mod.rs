//! Reading vectors from files: NumPy `.npy` (little-endian `f32`, 2-D, C order, format
//! versions 1–3) and `.fvecs` (each vector an `i32` dimension followed by that many `f32`).
//!
//! [`VectorFile`] streams a file row by row or reads it whole into one buffer of exactly
//! `rows × cols` values, so loading a file costs its data size once, not twice. Every length
//! in a file is checked against the file's size before anything is allocated from it, and
//! every error about a file is an [`Error::BadInputFile`] naming it.
//!
//! This file holds the reader; `npy` and `fvecs` each parse, check and write their format.

mod fvecs;
mod npy;
#[cfg(test)]
mod tests;

pub use fvecs::{parse_fvecs, write_fvecs};
pub use npy::{parse_npy, write_npy};

use crate::elem::ElementType;
use crate::error::{Error, Result};
use crate::matrix::Matrix;
use fvecs::{fvecs_check_dim, fvecs_layout};
use npy::{npy_check_data_len, npy_dict, npy_header_end, npy_preamble};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Buffer size of the reader: large enough that row-by-row reads of a big file make few
/// system calls, small next to any file worth streaming.
const READ_BUFFER: usize = 1 << 20;

/// The two file formats, chosen by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// `.npy`: a header, then `rows × cols` little-endian `f32`.
    Npy,
    /// `.fvecs`: `rows` records of an `i32` dimension and `cols` little-endian `f32`.
    Fvecs,
}

/// A `.npy` or `.fvecs` file opened for reading, its header validated against its size.
///
/// [`open`](Self::open) reads only the header (for `.fvecs`, the first record's dimension);
/// then either [`read_row`](Self::read_row) streams the rows one at a time into a buffer of
/// the caller's, or [`read_all`](Self::read_all) reads the remaining rows into one
/// [`Matrix`] allocated once at its final size.
///
/// ```no_run
/// use hybridvec::input::VectorFile;
/// use std::path::Path;
///
/// # fn main() -> hybridvec::Result<()> {
/// // Stream: one row in memory at a time.
/// let mut file = VectorFile::open(Path::new("corpus.fvecs"))?;
/// let mut row = vec![0.0f32; file.cols()];
/// let mut sum = 0.0f64;
/// while file.read_row(&mut row)? {
///     sum += row.iter().map(|&x| f64::from(x)).sum::<f64>();
/// }
/// println!("{} rows × {} columns, sum {sum}", file.rows(), file.cols());
///
/// // Or load it whole: the file's data size once, no intermediate copy.
/// let m = VectorFile::open(Path::new("corpus.npy"))?.read_all()?;
/// assert_eq!(m.as_slice().len(), m.rows() * m.cols());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct VectorFile {
    path: PathBuf,
    format: Format,
    rows: usize,
    cols: usize,
    /// How the file stores its values (f32, or f16 in a `.npy`).
    element: ElementType,
    reader: BufReader<File>,
    /// Rows read so far (by [`read_row`](Self::read_row)).
    read: usize,
}

impl VectorFile {
    /// Opens `path` (`.npy` or `.fvecs`, by extension), validates its header and checks the
    /// file's size against it; reads no data beyond the header.
    ///
    /// A `.npy` whose shape has 0 rows opens with [`rows`](Self::rows) 0; what that means
    /// is the caller's decision ([`read_all`](Self::read_all) rejects it, since a
    /// [`Matrix`] has at least one row).
    ///
    /// Errors: [`Error::BadInputFile`] naming `path` when it cannot be opened or read (the
    /// reason carries the OS error), is a directory or not a regular file, has another
    /// extension, or its header is malformed, unsupported, or claims a size the file does
    /// not have.
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |reason: String| bad_file(path, reason);
        let file = File::open(path).map_err(|e| io_error(path, &e))?;
        let meta = file.metadata().map_err(|e| io_error(path, &e))?;
        if meta.is_dir() {
            return Err(bad("is a directory, not a .npy or .fvecs file".into()));
        }
        if !meta.is_file() {
            return Err(bad("is not a regular file".into()));
        }
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("npy") => Format::Npy,
            Some("fvecs") => Format::Fvecs,
            _ => return Err(bad("unknown extension: expected .npy or .fvecs".into())),
        };
        let len = meta.len();
        // The header is read unbuffered, so nothing past it is read until rows are asked
        // for.
        let read = |buf: &mut [u8]| read_exact(&mut &file, buf, path, || "in the header".into());
        let (rows, cols, element) = match format {
            Format::Npy => {
                // The preamble (magic, version, header length) is 10 bytes, 12 from
                // version 2; a shorter file is judged on what it has.
                let mut pre = [0u8; 12];
                let mut have = len.min(10) as usize;
                read(&mut pre[..have])?;
                if have == 10 && matches!(pre[6], 2 | 3) && len >= 12 {
                    read(&mut pre[10..])?;
                    have = 12;
                }
                let (start, hlen) = npy_preamble(&pre[..have]).map_err(bad)?;
                debug_assert_eq!(start, have);
                let end = npy_header_end(start, hlen, len).map_err(bad)?;
                // `end` is within the file's size (checked just above), so this is too.
                let mut header = vec![0u8; hlen];
                read(&mut header)?;
                let (rows, cols, element) = npy_dict(&header).map_err(bad)?;
                npy_check_data_len(rows, cols, element, len - end as u64).map_err(bad)?;
                (rows, cols, element)
            }
            Format::Fvecs => {
                // The first record's dimension field gives the dimension; it is consumed
                // here, so reading row 0 starts at its values.
                let mut first = [0u8; 4];
                let have = len.min(4) as usize;
                read(&mut first[..have])?;
                let (rows, cols) = fvecs_layout(&first[..have], len).map_err(bad)?;
                (rows, cols, ElementType::F32)
            }
        };
        let buffer = usize::try_from(len).map_or(READ_BUFFER, |len| len.min(READ_BUFFER));
        Ok(Self {
            path: path.to_path_buf(),
            format,
            rows,
            cols,
            element,
            reader: BufReader::with_capacity(buffer, file),
            read: 0,
        })
    }

    /// Number of rows (vectors) in the file, read or not.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (the vector dimension).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// How the file stores its values: f32, f16 for a `.npy` of dtype `'<f2'`, or bf16 for
    /// one of ml_dtypes' bfloat16 (which NumPy saves as 2-byte void, `'<V2'`); 16-bit rows
    /// are widened to f32 as they are read, exactly.
    pub fn element_type(&self) -> ElementType {
        self.element
    }

    /// The file's path, as given to [`open`](Self::open).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the next row into `out`, which must hold exactly [`cols`](Self::cols) values;
    /// `Ok(false)` once every row has been read (`out` is then untouched).
    ///
    /// Errors: [`Error::DimensionMismatch`] when `out.len() != cols`; [`Error::BadInputFile`]
    /// naming the file when it cannot be read (for example it shrank since it was opened)
    /// or, for `.fvecs`, when this vector's dimension field differs from the first's (the
    /// reason names the vector's index).
    pub fn read_row(&mut self, out: &mut [f32]) -> Result<bool> {
        if out.len() != self.cols {
            return Err(Error::DimensionMismatch {
                expected: self.cols,
                got: out.len(),
            });
        }
        if self.read == self.rows {
            return Ok(false);
        }
        self.read_rows(out, 1)?;
        Ok(true)
    }

    /// Reads every remaining row (all of them unless [`read_row`](Self::read_row) was
    /// called) into one buffer of exactly `remaining × cols` values, allocated once and
    /// read into directly: no intermediate copy of the file is made.
    ///
    /// Errors: those of [`read_row`](Self::read_row), and [`Error::BadInputFile`] when no
    /// rows remain or the dimension is 0 (a [`Matrix`] has at least one row and column).
    pub fn read_all(mut self) -> Result<Matrix> {
        let remaining = self.rows - self.read;
        if self.rows == 0 {
            return Err(bad_file(
                &self.path,
                "empty input: the file has 0 rows".into(),
            ));
        }
        if remaining == 0 {
            return Err(bad_file(
                &self.path,
                format!("no rows left to read (all {} were read)", self.rows),
            ));
        }
        if self.cols == 0 {
            return Err(bad_file(&self.path, "empty input: dimension 0".into()));
        }
        // rows × cols values were checked against the file's size by `open`, so this
        // allocation is bounded by it (twice it for f16, widened).
        let mut data = crate::mem::zeroed_f32(remaining * self.cols);
        self.read_rows(&mut data, remaining)?;
        Matrix::new(data, remaining, self.cols).map_err(|e| bad_file(&self.path, e.to_string()))
    }

    /// Reads the next `n` rows into `out` (`n × cols` values; `n` no more than remain).
    fn read_rows(&mut self, out: &mut [f32], n: usize) -> Result<()> {
        debug_assert!(n <= self.rows - self.read && out.len() == n * self.cols);
        match self.format {
            Format::Npy if self.element != ElementType::F32 => {
                let half = self.element.half().expect("a 16-bit element type");
                // A block of rows at a time, widened into `out`.
                let mut bits = vec![0u16; out.len().min(1 << 20)];
                for chunk in out.chunks_mut(bits.len()) {
                    let (first, rows) = (self.read, self.rows);
                    let bits = &mut bits[..chunk.len()];
                    read_exact(
                        &mut self.reader,
                        bytemuck::cast_slice_mut(bits),
                        &self.path,
                        || format!("in rows from {first} of {rows}"),
                    )?;
                    for (o, b) in chunk.iter_mut().zip(bits.iter()) {
                        *o = half.to_f32(u16::from_le(*b));
                    }
                }
                self.read += n;
            }
            Format::Npy => {
                // The rows are contiguous: one read for all of them.
                let (first, rows) = (self.read, self.rows);
                read_exact(
                    &mut self.reader,
                    bytemuck::cast_slice_mut(out),
                    &self.path,
                    || format!("in rows {first}..{} of {rows}", first + n),
                )?;
                f32_from_le_in_place(out);
                self.read += n;
            }
            Format::Fvecs => {
                for row in out.chunks_exact_mut(self.cols) {
                    let (i, rows) = (self.read, self.rows);
                    let at = move || format!("in vector {i} of {rows}");
                    // Row 0's dimension field was read (and checked) by `open`.
                    if self.read > 0 {
                        let mut d = [0u8; 4];
                        read_exact(&mut self.reader, &mut d, &self.path, at)?;
                        fvecs_check_dim(self.read, i32::from_le_bytes(d), self.cols)
                            .map_err(|r| bad_file(&self.path, r))?;
                    }
                    read_exact(
                        &mut self.reader,
                        bytemuck::cast_slice_mut(row),
                        &self.path,
                        at,
                    )?;
                    f32_from_le_in_place(row);
                    self.read += 1;
                }
            }
        }
        Ok(())
    }
}

/// Reads a `.npy` or `.fvecs` file, chosen by extension, into one [`Matrix`]:
/// `VectorFile::open(path)?.read_all()`. Peak memory is the file's data size.
///
/// Errors: as [`VectorFile::open`] and [`VectorFile::read_all`]; all name `path`.
pub fn read_matrix(path: &Path) -> Result<Matrix> {
    VectorFile::open(path)?.read_all()
}

pub(super) fn bad_file(path: &Path, reason: String) -> Error {
    Error::BadInputFile {
        path: path.to_path_buf(),
        reason,
    }
}

/// An I/O error about `path`, with the OS's text: "cannot read: <error>".
pub(super) fn io_error(path: &Path, e: &std::io::Error) -> Error {
    bad_file(path, format!("cannot read: {e}"))
}

/// `read_exact`, with errors naming `path`; `at` says where in the file (for an early end).
pub(super) fn read_exact(
    reader: &mut impl Read,
    buf: &mut [u8],
    path: &Path,
    at: impl FnOnce() -> String,
) -> Result<()> {
    reader.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            bad_file(
                path,
                format!(
                    "file ended early {} (did it shrink while being read?)",
                    at()
                ),
            )
        } else {
            io_error(path, &e)
        }
    })
}

/// Values read as little-endian bytes, made native (nothing to do on little-endian hosts).
pub(super) fn f32_from_le_in_place(values: &mut [f32]) {
    if cfg!(target_endian = "big") {
        for x in values {
            *x = f32::from_bits(u32::from_le(x.to_bits()));
        }
    }
}

pub(super) fn to_matrix(
    data: &[u8],
    rows: usize,
    cols: usize,
) -> std::result::Result<Matrix, String> {
    let v = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    Matrix::new(v, rows, cols).map_err(|e| e.to_string())
}

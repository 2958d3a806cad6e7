//! Reading vectors from files: NumPy `.npy` (little-endian `f32`, 2-D, C order, format
//! versions 1–3) and `.fvecs` (each vector an `i32` dimension followed by that many `f32`).
//!
//! [`VectorFile`] streams a file row by row or reads it whole into one buffer of exactly
//! `rows × cols` values, so loading a file costs its data size once, not twice. Every length
//! in a file is checked against the file's size before anything is allocated from it, and
//! every error about a file is an [`Error::BadInputFile`] naming it.

use crate::error::{Error, Result};
use crate::matrix::Matrix;
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
        let (rows, cols) = match format {
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
                let (rows, cols) = npy_dict(&header).map_err(bad)?;
                npy_check_data_len(rows, cols, len - end as u64).map_err(bad)?;
                (rows, cols)
            }
            Format::Fvecs => {
                // The first record's dimension field gives the dimension; it is consumed
                // here, so reading row 0 starts at its values.
                let mut first = [0u8; 4];
                let have = len.min(4) as usize;
                read(&mut first[..have])?;
                fvecs_layout(&first[..have], len).map_err(bad)?
            }
        };
        let buffer = usize::try_from(len).map_or(READ_BUFFER, |len| len.min(READ_BUFFER));
        Ok(Self {
            path: path.to_path_buf(),
            format,
            rows,
            cols,
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
        // rows × cols × 4 was checked against the file's size by `open`, so this
        // allocation is bounded by it (and it is the only one).
        let mut data = crate::mem::zeroed_f32(remaining * self.cols);
        self.read_rows(&mut data, remaining)?;
        Matrix::new(data, remaining, self.cols).map_err(|e| bad_file(&self.path, e.to_string()))
    }

    /// Reads the next `n` rows into `out` (`n × cols` values; `n` no more than remain).
    fn read_rows(&mut self, out: &mut [f32], n: usize) -> Result<()> {
        debug_assert!(n <= self.rows - self.read && out.len() == n * self.cols);
        match self.format {
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

/// Parses `.npy` bytes (format versions 1–3) already in memory; the reason on error.
pub fn parse_npy(bytes: &[u8]) -> std::result::Result<Matrix, String> {
    let (start, hlen) = npy_preamble(bytes)?;
    let end = npy_header_end(start, hlen, bytes.len() as u64)?;
    let (rows, cols) = npy_dict(&bytes[start..end])?;
    let data = &bytes[end..];
    npy_check_data_len(rows, cols, data.len() as u64)?;
    to_matrix(data, rows, cols)
}

/// Parses `.fvecs` bytes already in memory; the reason on error.
pub fn parse_fvecs(bytes: &[u8]) -> std::result::Result<Matrix, String> {
    let (rows, d) = fvecs_layout(&bytes[..bytes.len().min(4)], bytes.len() as u64)?;
    let mut out = Vec::with_capacity(rows * d);
    for (i, r) in bytes.chunks_exact(4 + 4 * d).enumerate() {
        fvecs_check_dim(
            i,
            i32::from_le_bytes(r[..4].try_into().expect("4 bytes")),
            d,
        )?;
        out.extend(
            r[4..]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))),
        );
    }
    Matrix::new(out, rows, d).map_err(|e| e.to_string())
}

fn bad_file(path: &Path, reason: String) -> Error {
    Error::BadInputFile {
        path: path.to_path_buf(),
        reason,
    }
}

/// An I/O error about `path`, with the OS's text: "cannot read: <error>".
fn io_error(path: &Path, e: &std::io::Error) -> Error {
    bad_file(path, format!("cannot read: {e}"))
}

/// `read_exact`, with errors naming `path`; `at` says where in the file (for an early end).
fn read_exact(
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
fn f32_from_le_in_place(values: &mut [f32]) {
    if cfg!(target_endian = "big") {
        for x in values {
            *x = f32::from_bits(u32::from_le(x.to_bits()));
        }
    }
}

/// The `.npy` preamble (the file's first 10 bytes, 12 from version 2): the offset of the
/// header dict and its length.
fn npy_preamble(bytes: &[u8]) -> std::result::Result<(usize, usize), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    match bytes[6] {
        1 => Ok((10, u16::from_le_bytes([bytes[8], bytes[9]]) as usize)),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated header".into());
            }
            let hlen = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            let hlen = usize::try_from(hlen).map_err(|_| "truncated header")?;
            Ok((12, hlen))
        }
        v => Err(format!("unsupported .npy version {v}")),
    }
}

/// The end of the header dict, checked against the file's length.
fn npy_header_end(start: usize, hlen: usize, file_len: u64) -> std::result::Result<usize, String> {
    start
        .checked_add(hlen)
        .filter(|&e| e as u64 <= file_len)
        .ok_or_else(|| "truncated header".into())
}

/// `(rows, cols)` from the `.npy` header dict, which must describe a 2-D little-endian
/// `f32` array in C order.
fn npy_dict(header: &[u8]) -> std::result::Result<(usize, usize), String> {
    let header = std::str::from_utf8(header).map_err(|_| "header is not text")?;
    let descr = dict_value(header, "descr").ok_or("header has no 'descr'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    if descr != "<f4" && !(descr == "=f4" && cfg!(target_endian = "little")) {
        return Err(format!(
            "dtype {descr} is not little-endian float32 ('<f4')"
        ));
    }
    if dict_value(header, "fortran_order").ok_or("header has no 'fortran_order'")? != "False" {
        return Err("Fortran-order arrays are not supported; save with C order".into());
    }
    let shape = dict_value(header, "shape").ok_or("header has no 'shape'")?;
    let dims: Vec<usize> = shape
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad shape {shape}")))
        .collect::<std::result::Result<_, _>>()?;
    let [rows, cols] = dims[..] else {
        return Err(format!("expected a 2-D array, got shape {shape}"));
    };
    Ok((rows, cols))
}

/// Checks that `rows × cols` float32 is exactly the `data_len` bytes after the header
/// (checked arithmetic: a shape that overflows is an error, never an allocation).
fn npy_check_data_len(rows: usize, cols: usize, data_len: u64) -> std::result::Result<(), String> {
    let want = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(4))
        .ok_or("shape overflows")?;
    if want as u64 != data_len {
        return Err(format!(
            "{rows}×{cols} float32 needs {want} data bytes, file has {data_len}"
        ));
    }
    Ok(())
}

/// `(rows, dim)` of an `.fvecs` file of `file_len` bytes whose first bytes (up to 4) are
/// `first`: the dimension is the first record's, and the size must be a whole number of
/// records of that dimension.
fn fvecs_layout(first: &[u8], file_len: u64) -> std::result::Result<(usize, usize), String> {
    if file_len == 0 {
        return Err("file is empty".into());
    }
    let Ok(first) = <[u8; 4]>::try_from(first) else {
        return Err(format!(
            "truncated ({file_len} bytes; a record needs at least 4)"
        ));
    };
    let d = i32::from_le_bytes(first);
    if d <= 0 {
        return Err(format!("first vector has dimension {d}"));
    }
    // At most 4 + 4 × (2³¹ − 1): no overflow in u64.
    let rec = 4 + 4 * d as u64;
    if !file_len.is_multiple_of(rec) {
        return Err(format!(
            "size {file_len} is not a multiple of the record size {rec} (dim {d})"
        ));
    }
    let rows = usize::try_from(file_len / rec).map_err(|_| "too many rows for this platform")?;
    let d = usize::try_from(d).map_err(|_| "dimension too large for this platform")?;
    Ok((rows, d))
}

/// Checks vector `i`'s dimension field `di` against the first vector's `d`.
fn fvecs_check_dim(i: usize, di: i32, d: usize) -> std::result::Result<(), String> {
    if i64::from(di) != d as i64 {
        return Err(format!("vector {i} has dimension {di}, the first has {d}"));
    }
    Ok(())
}

fn to_matrix(data: &[u8], rows: usize, cols: usize) -> std::result::Result<Matrix, String> {
    let v = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    Matrix::new(v, rows, cols).map_err(|e| e.to_string())
}

/// The text after `'key':` in a NumPy header dict, up to the matching `,` at depth 0.
fn dict_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let pat = format!("'{key}':");
    let rest = header[header.find(&pat)? + pat.len()..].trim_start();
    let mut depth = 0i32;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

/// Writes a 2-D `f32` `.npy` file (version 1).
pub fn write_npy(path: &Path, m: &Matrix) -> Result<()> {
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        m.rows(),
        m.cols()
    );
    // Pad so the data starts on a 64-byte boundary, header ending in '\n'.
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + m.as_slice().len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend(m.as_slice().iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, out)?;
    Ok(())
}

/// Writes an `.fvecs` file.
pub fn write_fvecs(path: &Path, m: &Matrix) -> Result<()> {
    let mut out = Vec::with_capacity(m.rows() * (4 + 4 * m.cols()));
    for i in 0..m.rows() {
        out.extend_from_slice(&(m.cols() as i32).to_le_bytes());
        out.extend(m.row(i).iter().flat_map(|v| v.to_le_bytes()));
    }
    std::fs::write(path, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Matrix {
        Matrix::new(crate::data::random_vec(3 * 5, 1, 0), 3, 5).unwrap()
    }

    #[test]
    fn npy_and_fvecs_round_trip() {
        let dir = std::env::temp_dir().join(format!("hybridvec-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let m = sample();
        for name in ["a.npy", "a.fvecs"] {
            let p = dir.join(name);
            if name.ends_with("npy") {
                write_npy(&p, &m).unwrap();
            } else {
                write_fvecs(&p, &m).unwrap();
            }
            assert_eq!(read_matrix(&p).unwrap(), m, "{name}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parses_a_header_written_by_numpy() {
        // numpy.save of np.arange(6, dtype='<f4').reshape(2, 3)
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        let mut h = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }".to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        for i in 0..6 {
            b.extend_from_slice(&(i as f32).to_le_bytes());
        }
        let m = parse_npy(&b).unwrap();
        assert_eq!((m.rows(), m.cols()), (2, 3));
        assert_eq!(m.get(1, 2), 5.0);
    }

    /// Replaces `from` with the same-length `to` inside the header (the first 128 bytes).
    fn patch(file: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let at = file[..128]
            .windows(from.len())
            .position(|w| w == from)
            .expect("pattern in header");
        let mut out = file.to_vec();
        out[at..at + to.len()].copy_from_slice(to);
        out
    }

    #[test]
    fn rejects_bad_files_with_reasons() {
        let m = sample();
        let dir = std::env::temp_dir().join(format!("hybridvec-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.npy");
        write_npy(&p, &m).unwrap();
        let good = std::fs::read(&p).unwrap();
        // Truncated data, truncated header, wrong dtype, 1-D shape, bad magic.
        assert!(parse_npy(&good[..good.len() - 1])
            .unwrap_err()
            .contains("data bytes"));
        assert!(parse_npy(&good[..20]).is_err());
        assert!(parse_npy(&patch(&good, b"<f4", b"<f8"))
            .unwrap_err()
            .contains("float32"));
        assert!(parse_npy(&patch(&good, b"(3, 5)", b"(15,) "))
            .unwrap_err()
            .contains("2-D"));
        assert!(parse_npy(&patch(&good, b"False", b"True "))
            .unwrap_err()
            .contains("Fortran"));
        assert!(parse_npy(b"PK\x03\x04 not numpy")
            .unwrap_err()
            .contains("magic"));
        // fvecs: wrong total size, inconsistent dims, non-positive dim.
        let p = dir.join("m.fvecs");
        write_fvecs(&p, &m).unwrap();
        let good = std::fs::read(&p).unwrap();
        assert!(parse_fvecs(&good[..good.len() - 2]).is_err());
        let mut bad = good.clone();
        bad[24] = 4; // second record's dimension
        assert!(parse_fvecs(&bad).unwrap_err().contains("vector 1"));
        assert!(parse_fvecs(&[0, 0, 0, 0]).is_err());
        assert!(matches!(
            read_matrix(&dir.join("m.txt")),
            Err(Error::Io(_)) | Err(Error::BadInputFile { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A scratch directory for one test, removed on drop (also when the test fails).
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let p =
                std::env::temp_dir().join(format!("hybridvec-input-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }

        fn file(&self, name: &str, bytes: &[u8]) -> std::path::PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A `.npy` file of format `version` with `shape` (as written in the header) and
    /// `values`, whatever the shape claims.
    fn npy_bytes(version: u8, shape: &str, values: &[f32]) -> Vec<u8> {
        let pre = if version == 1 { 10 } else { 12 };
        let mut h = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        while !(pre + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut b = b"\x93NUMPY".to_vec();
        b.extend_from_slice(&[version, 0]);
        if version == 1 {
            b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        } else {
            b.extend_from_slice(&(h.len() as u32).to_le_bytes());
        }
        b.extend_from_slice(h.as_bytes());
        b.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        b
    }

    /// The reason of a `BadInputFile` about `path`; panics on anything else.
    fn reason_about(r: Result<impl std::fmt::Debug>, path: &Path) -> String {
        match r {
            Err(e @ Error::BadInputFile { .. }) => {
                let Error::BadInputFile { path: p, reason } = &e else {
                    unreachable!()
                };
                assert_eq!(p, path);
                // The message shown to users names the file too.
                assert!(e.to_string().contains(path.to_str().unwrap()), "{e}");
                reason.clone()
            }
            other => panic!(
                "expected BadInputFile about {}, got {other:?}",
                path.display()
            ),
        }
    }

    #[test]
    fn streaming_rows_match_read_all_for_both_formats() {
        let dir = Scratch::new("stream");
        let m = Matrix::new(crate::data::random_matrix(7, 5, 3), 7, 5).unwrap();
        let npy = dir.0.join("m.npy");
        let fvecs = dir.0.join("m.fvecs");
        write_npy(&npy, &m).unwrap();
        write_fvecs(&fvecs, &m).unwrap();
        let v2 = dir.file("v2.npy", &npy_bytes(2, "(7, 5)", m.as_slice()));
        for p in [&npy, &fvecs, &v2] {
            let whole = read_matrix(p).unwrap();
            assert_eq!(whole, m, "{}", p.display());

            let mut f = VectorFile::open(p).unwrap();
            assert_eq!((f.rows(), f.cols(), f.path()), (7, 5, p.as_path()));
            let mut row = vec![f32::NAN; 5];
            let mut n = 0;
            while f.read_row(&mut row).unwrap() {
                assert_eq!(row, whole.row(n), "{} row {n}", p.display());
                n += 1;
            }
            assert_eq!(n, 7);
            // At the end it stays at the end.
            assert!(!f.read_row(&mut row).unwrap());

            // A few rows streamed, then the rest in one read.
            let mut f = VectorFile::open(p).unwrap();
            for i in 0..2 {
                assert!(f.read_row(&mut row).unwrap());
                assert_eq!(row, whole.row(i));
            }
            let rest = f.read_all().unwrap();
            assert_eq!((rest.rows(), rest.cols()), (5, 5));
            assert_eq!(rest.as_slice(), &whole.as_slice()[2 * 5..]);

            // A buffer of the wrong length is the caller's error, not the file's.
            let mut f = VectorFile::open(p).unwrap();
            assert!(matches!(
                f.read_row(&mut [0.0; 4]),
                Err(Error::DimensionMismatch {
                    expected: 5,
                    got: 4
                })
            ));
        }
    }

    #[test]
    fn a_header_claiming_more_rows_than_the_file_holds_is_rejected_before_allocating() {
        let dir = Scratch::new("huge");
        // 10¹² × 768 float32 is about 3 PB: allocating it would abort the test process.
        let bytes = npy_bytes(1, "(1000000000000, 768)", &[1.0; 768]);
        let p = dir.file("huge.npy", &bytes);
        let reason = reason_about(VectorFile::open(&p), &p);
        assert!(reason.contains("data bytes"), "{reason}");
        let reason = reason_about(read_matrix(&p), &p);
        assert!(reason.contains("3072000000000000 data bytes"), "{reason}");
        assert!(parse_npy(&bytes).unwrap_err().contains("data bytes"));
        // A shape whose byte count overflows is an error too, not a wrapped-around size.
        let p = dir.file(
            "overflow.npy",
            &npy_bytes(1, "(18446744073709551615, 768)", &[]),
        );
        let reason = reason_about(VectorFile::open(&p), &p);
        assert!(reason.contains("overflows"), "{reason}");
        // A header length beyond the file's end (version 3 allows 4 GiB).
        let mut b = npy_bytes(3, "(1, 2)", &[1.0, 2.0]);
        b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let p = dir.file("long-header.npy", &b);
        let reason = reason_about(VectorFile::open(&p), &p);
        assert!(reason.contains("truncated header"), "{reason}");
    }

    #[test]
    fn short_fvecs_files_are_truncated_and_a_zero_byte_one_is_empty() {
        let dir = Scratch::new("short-fvecs");
        for len in 1..4 {
            let p = dir.file(&format!("short{len}.fvecs"), &vec![8u8; len][..]);
            let reason = reason_about(read_matrix(&p), &p);
            assert!(
                reason.contains("truncated") && reason.contains(&format!("{len} bytes")),
                "{reason}"
            );
            assert!(!reason.contains("empty"), "{reason}");
            assert!(parse_fvecs(&vec![8u8; len])
                .unwrap_err()
                .contains("truncated"));
        }
        let p = dir.file("zero.fvecs", &[]);
        let reason = reason_about(read_matrix(&p), &p);
        assert!(reason.contains("empty"), "{reason}");
        assert!(parse_fvecs(&[]).unwrap_err().contains("empty"));
    }

    /// Cut anywhere, a file reads from disk exactly as its bytes parse in memory: the same
    /// reason (and the error names the file), or for `.fvecs` cut between records, the
    /// same leading rows. A cut `.npy` is always an error.
    #[test]
    fn a_cut_file_reads_as_its_bytes_parse() {
        let dir = Scratch::new("prefixes");
        let m = sample();
        let npy = npy_bytes(1, "(3, 5)", m.as_slice());
        let npy2 = npy_bytes(2, "(3, 5)", m.as_slice());
        let mut fvecs = Vec::new();
        for i in 0..m.rows() {
            fvecs.extend_from_slice(&5i32.to_le_bytes());
            fvecs.extend(m.row(i).iter().flat_map(|v| v.to_le_bytes()));
        }
        for (name, good) in [("a.npy", &npy), ("b.npy", &npy2), ("c.fvecs", &fvecs)] {
            for len in 0..good.len() {
                let p = dir.file(name, &good[..len]);
                let parsed = if name.ends_with("npy") {
                    parse_npy(&good[..len])
                } else {
                    parse_fvecs(&good[..len])
                };
                match parsed {
                    Ok(want) => {
                        assert!(name.ends_with("fvecs") && len % 24 == 0, "{name} {len}");
                        assert_eq!(read_matrix(&p).unwrap(), want, "{name} cut to {len}");
                        assert_eq!(want.as_slice(), &m.as_slice()[..len / 24 * 5]);
                    }
                    Err(want) => {
                        let reason = reason_about(read_matrix(&p), &p);
                        assert_eq!(reason, want, "{name} cut to {len}");
                    }
                }
            }
        }
    }

    #[test]
    fn an_fvecs_record_of_another_dimension_is_named_by_index() {
        let dir = Scratch::new("fvecs-dim");
        let m = sample();
        let p = dir.0.join("m.fvecs");
        write_fvecs(&p, &m).unwrap();
        let mut bad = std::fs::read(&p).unwrap();
        bad[2 * 24] = 4; // third record's dimension
        let p = dir.file("bad.fvecs", &bad);
        let reason = reason_about(read_matrix(&p), &p);
        assert!(reason.contains("vector 2 has dimension 4"), "{reason}");
        // Streaming reads the good rows first, then fails on that one.
        let mut f = VectorFile::open(&p).unwrap();
        let mut row = [0.0; 5];
        assert!(f.read_row(&mut row).unwrap());
        assert!(f.read_row(&mut row).unwrap());
        let reason = reason_about(f.read_row(&mut row), &p);
        assert!(reason.contains("vector 2"), "{reason}");
    }

    #[test]
    fn a_missing_file_is_named_with_the_os_error() {
        let dir = Scratch::new("missing");
        for name in ["nope.npy", "nope.fvecs", "nope.txt"] {
            let p = dir.0.join(name);
            let reason = reason_about(read_matrix(&p), &p);
            assert!(reason.starts_with("cannot read: "), "{reason}");
            // The OS's own text, e.g. "No such file or directory (os error 2)".
            let os = std::fs::File::open(&p).unwrap_err();
            assert_eq!(os.kind(), std::io::ErrorKind::NotFound);
            assert_eq!(reason, format!("cannot read: {os}"));
        }
    }

    #[test]
    fn a_directory_or_unknown_extension_is_an_error_naming_it() {
        let dir = Scratch::new("dir");
        for name in ["corpus.npy", "corpus.fvecs", "corpus"] {
            let p = dir.0.join(name);
            std::fs::create_dir_all(&p).unwrap();
            let reason = reason_about(read_matrix(&p), &p);
            assert!(reason.contains("directory"), "{reason}");
        }
        let p = dir.file("m.txt", b"1 2 3\n");
        let reason = reason_about(read_matrix(&p), &p);
        assert!(reason.contains("extension"), "{reason}");
    }

    #[test]
    fn a_zero_row_npy_opens_with_zero_rows() {
        let dir = Scratch::new("zero-rows");
        let p = dir.file("empty.npy", &npy_bytes(1, "(0, 5)", &[]));
        let mut f = VectorFile::open(&p).unwrap();
        assert_eq!((f.rows(), f.cols()), (0, 5));
        assert!(!f.read_row(&mut [0.0; 5]).unwrap());
        // A Matrix has at least one row: read_all says so, naming the file.
        let reason = reason_about(f.read_all(), &p);
        assert!(reason.contains("0 rows"), "{reason}");
    }
}

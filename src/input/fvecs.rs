//! `.fvecs`: records of an `i32` dimension followed by that many little-endian `f32`.

use crate::error::Result;
use crate::matrix::Matrix;
use std::path::Path;

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

/// `(rows, dim)` of an `.fvecs` file of `file_len` bytes whose first bytes (up to 4) are
/// `first`: the dimension is the first record's, and the size must be a whole number of
/// records of that dimension.
pub(super) fn fvecs_layout(
    first: &[u8],
    file_len: u64,
) -> std::result::Result<(usize, usize), String> {
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
pub(super) fn fvecs_check_dim(i: usize, di: i32, d: usize) -> std::result::Result<(), String> {
    if i64::from(di) != d as i64 {
        return Err(format!("vector {i} has dimension {di}, the first has {d}"));
    }
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

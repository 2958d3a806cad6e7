//! Reading vectors from files: NumPy `.npy` (little-endian `f32`, 2-D, C order) and
//! `.fvecs` (each vector an `i32` dimension followed by that many `f32`).
//!
//! Every length in a file is checked against the file's size before it is used.

use crate::error::{Error, Result};
use crate::matrix::Matrix;
use std::path::Path;

/// Reads a `.npy` or `.fvecs` file, chosen by extension.
pub fn read_matrix(path: &Path) -> Result<Matrix> {
    let bytes = std::fs::read(path)?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => parse_npy(&bytes),
        Some("fvecs") => parse_fvecs(&bytes),
        _ => Err("unknown extension: expected .npy or .fvecs".to_string()),
    }
    .map_err(|reason| Error::BadInputFile {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parses `.npy` bytes (format versions 1–3).
pub fn parse_npy(bytes: &[u8]) -> std::result::Result<Matrix, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let major = bytes[6];
    let (hlen, start): (usize, usize) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated header".into());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let end = start
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .ok_or("truncated header")?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| "header is not text")?;
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
    let want = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(4))
        .ok_or("shape overflows")?;
    let data = &bytes[end..];
    if data.len() != want {
        return Err(format!(
            "{rows}×{cols} float32 needs {want} data bytes, file has {}",
            data.len()
        ));
    }
    to_matrix(data, rows, cols)
}

/// Parses `.fvecs` bytes.
pub fn parse_fvecs(bytes: &[u8]) -> std::result::Result<Matrix, String> {
    if bytes.len() < 4 {
        return Err("file is empty".into());
    }
    let d = i32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    if d <= 0 {
        return Err(format!("first vector has dimension {d}"));
    }
    let d = d as usize;
    let rec = 4 + 4 * d;
    if !bytes.len().is_multiple_of(rec) {
        return Err(format!(
            "size {} is not a multiple of the record size {rec} (dim {d})",
            bytes.len()
        ));
    }
    let rows = bytes.len() / rec;
    let mut out = Vec::with_capacity(rows * d);
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        let di = i32::from_le_bytes(r[..4].try_into().expect("4 bytes"));
        if di as i64 != d as i64 {
            return Err(format!("vector {i} has dimension {di}, the first has {d}"));
        }
        out.extend(
            r[4..]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))),
        );
    }
    Matrix::new(out, rows, d).map_err(|e| e.to_string())
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
}

//! NumPy `.npy`: a preamble, a header dict, then `rows × cols` little-endian `f32`
//! (`'<f4'`), `f16` (`'<f2'`) or ml_dtypes `bfloat16` (saved as 2-byte void, `'<V2'`), the
//! 16-bit ones widened to f32 as read, exactly.

use super::to_matrix;
use crate::elem::ElementType;
use crate::error::Result;
use crate::matrix::Matrix;
use std::path::Path;

/// Parses `.npy` bytes (format versions 1–3) already in memory; the reason on error.
pub fn parse_npy(bytes: &[u8]) -> std::result::Result<Matrix, String> {
    let (start, hlen) = npy_preamble(bytes)?;
    let end = npy_header_end(start, hlen, bytes.len() as u64)?;
    let (rows, cols, element) = npy_dict(&bytes[start..end])?;
    let data = &bytes[end..];
    npy_check_data_len(rows, cols, element, data.len() as u64)?;
    match element.half() {
        Some(half) => {
            let v = data
                .chunks_exact(2)
                .map(|b| half.to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect();
            Matrix::new(v, rows, cols).map_err(|e| e.to_string())
        }
        None => to_matrix(data, rows, cols),
    }
}

/// The `.npy` preamble (the file's first 10 bytes, 12 from version 2): the offset of the
/// header dict and its length.
pub(super) fn npy_preamble(bytes: &[u8]) -> std::result::Result<(usize, usize), String> {
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
pub(super) fn npy_header_end(
    start: usize,
    hlen: usize,
    file_len: u64,
) -> std::result::Result<usize, String> {
    start
        .checked_add(hlen)
        .filter(|&e| e as u64 <= file_len)
        .ok_or_else(|| "truncated header".into())
}

/// `(rows, cols, element type)` from the `.npy` header dict, which must describe a 2-D
/// little-endian `f32`, `f16` or ml_dtypes `bfloat16` (`'<V2'`) array in C order.
pub(super) fn npy_dict(header: &[u8]) -> std::result::Result<(usize, usize, ElementType), String> {
    let header = std::str::from_utf8(header).map_err(|_| "header is not text")?;
    let descr = dict_value(header, "descr").ok_or("header has no 'descr'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let native = descr
        .strip_prefix('=')
        .filter(|_| cfg!(target_endian = "little"));
    let element = match descr.strip_prefix('<').or(native) {
        Some("f4") => ElementType::F32,
        Some("f2") => ElementType::F16,
        // ml_dtypes' bfloat16: NumPy saves its arrays as 2-byte void, the only such dtype
        // in common use (values that decode to NaN or infinity are refused later, as any).
        Some("V2") => ElementType::Bf16,
        _ => {
            return Err(format!(
                "dtype {descr} is not little-endian float32 ('<f4'), float16 ('<f2') or ml_dtypes bfloat16 ('<V2')"
            ))
        }
    };
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
    Ok((rows, cols, element))
}

/// Checks that `rows × cols` values of `element` are exactly the `data_len` bytes after
/// the header (checked arithmetic: a shape that overflows is an error, never an
/// allocation).
pub(super) fn npy_check_data_len(
    rows: usize,
    cols: usize,
    element: ElementType,
    data_len: u64,
) -> std::result::Result<(), String> {
    let want = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(element.bytes()))
        .ok_or("shape overflows")?;
    if want as u64 != data_len {
        let name = match element {
            ElementType::F16 => "float16",
            ElementType::Bf16 => "bfloat16",
            ElementType::F32 => "float32",
        };
        return Err(format!(
            "{rows}×{cols} {name} needs {want} data bytes, file has {data_len}"
        ));
    }
    Ok(())
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

//! The readers against hand-made, damaged and hostile files.

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
        let p = std::env::temp_dir().join(format!("hybridvec-input-{name}-{}", std::process::id()));
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

/// A `.npy` of float16 (`'<f2'`, as `numpy.save` writes it) reads widened to f32,
/// exactly, whole or row by row; its size is checked at 2 bytes a value, and a file cut
/// short names where.
#[test]
fn reads_float16_npy_widened_exactly() {
    reads_16_bit_npy(crate::ElementType::F16, "<f2", "float16");
}

/// The same for ml_dtypes' bfloat16, which `numpy.save` writes as 2-byte void (`'<V2'`):
/// values of every magnitude, subnormals included.
#[test]
fn reads_ml_dtypes_bfloat16_npy_widened_exactly() {
    reads_16_bit_npy(crate::ElementType::Bf16, "<V2", "bfloat16");
}

fn reads_16_bit_npy(element: crate::ElementType, descr: &str, name: &str) {
    let (rows, cols) = (5usize, 3usize);
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| (i as f32 * 0.1 - 0.7) * [1.0, 1e-3, 1e4, 1e-39][i % 4])
        .collect();
    let half = element.half().unwrap();
    let bits: Vec<u16> = values.iter().map(|&v| half.round(v)).collect();
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    let mut h =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    b.extend_from_slice(&(h.len() as u16).to_le_bytes());
    b.extend_from_slice(h.as_bytes());
    for x in &bits {
        b.extend_from_slice(&x.to_le_bytes());
    }
    let want: Vec<f32> = values.iter().map(|&v| element.stored_value(v)).collect();
    let m = parse_npy(&b).unwrap();
    assert_eq!((m.rows(), m.cols()), (rows, cols));
    assert_eq!(m.as_slice(), &want[..]);
    let dir = std::env::temp_dir().join(format!("hybridvec-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("h.npy");
    std::fs::write(&p, &b).unwrap();
    let f = VectorFile::open(&p).unwrap();
    assert_eq!(f.element_type(), element);
    assert_eq!(f.read_all().unwrap().as_slice(), &want[..]);
    let mut f = VectorFile::open(&p).unwrap();
    let mut row = vec![0.0f32; cols];
    assert!(f.read_row(&mut row).unwrap());
    assert_eq!(row, want[..cols]);
    // One value short: a size error at open, in units of the type.
    std::fs::write(&p, &b[..b.len() - 2]).unwrap();
    let e = VectorFile::open(&p).unwrap_err().to_string();
    assert!(e.contains(name) && e.contains("h.npy"), "{e}");
    let wider = descr.replace('2', "8");
    let e = parse_npy(&patch(&b, descr.as_bytes(), wider.as_bytes())).unwrap_err();
    assert!(e.contains(name), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

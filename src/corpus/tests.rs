//! Corpus construction: shapes, values, norms, and the 16-bit element types.

use super::*;
use crate::matrix::{normalize, MAX_NORM, MIN_NORM};

#[test]
fn shape_errors() {
    assert!(matches!(
        MatrixRef::new(&[], 0, 3),
        Err(Error::EmptyInput { .. })
    ));
    assert!(matches!(
        MatrixRef::new(&[1.0], 1, 0),
        Err(Error::EmptyInput { .. })
    ));
    assert!(matches!(
        MatrixRef::new(&[1.0, 2.0, 3.0], 2, 2),
        Err(Error::InvalidShape {
            rows: 2,
            cols: 2,
            len: 3
        })
    ));
    assert!(matches!(
        Corpus::new(vec![], 4),
        Err(Error::EmptyInput { .. })
    ));
    assert!(matches!(
        Corpus::new(vec![1.0; 5], 2),
        Err(Error::InvalidShape { .. })
    ));
}

#[test]
fn finds_first_non_finite_value() {
    let mut data = vec![0.5f32; 5000 * 3];
    data[4100 * 3 + 2] = f32::INFINITY;
    data[4200 * 3] = f32::NAN;
    let m = MatrixRef::new(&data, 5000, 3).unwrap();
    assert!(matches!(
        m.check_finite(),
        Err(Error::NonFinite { row: 4100, col: 2 })
    ));
    assert!(matches!(
        Corpus::new(data, 3),
        Err(Error::NonFinite { row: 4100, col: 2 })
    ));
}

#[test]
fn extreme_norms_are_rejected_not_turned_into_nan() {
    let e = Corpus::new(vec![1.0, 1.0, 1e-39, 0.0], 2).unwrap_err();
    assert!(matches!(e, Error::NormOutOfRange { row: 1, norm } if norm > 0.0 && norm < MIN_NORM));
    let e = Corpus::new(vec![3e38, 3e38, 1.0, 1.0], 2).unwrap_err();
    assert!(matches!(e, Error::NormOutOfRange { row: 0, norm } if norm > MAX_NORM));
    // Squares of these underflow in f32; f64 keeps the direction exact. Subnormal
    // inputs are compared with their own stored values, not the decimal literals.
    let orig = vec![3e-38f32, 1e-40];
    let mut q = orig.clone();
    normalize(&mut q);
    let n = (orig[0] as f64).hypot(orig[1] as f64);
    for (got, o) in q.iter().zip(&orig) {
        assert!((*got as f64 - *o as f64 / n).abs() < 1e-7, "{q:?}");
    }
}

#[test]
fn inverse_norms_match_f64_and_zero_rows_are_zero() {
    let data = vec![3.0, 4.0, 0.0, 0.0, 1e29, 1e29];
    let c = Corpus::new(data, 2).unwrap();
    let inv = c.view().inv_norms();
    assert!((inv[0] - 0.2).abs() < 1e-7);
    assert_eq!(inv[1], 0.0);
    let expect = 1.0 / (2.0f64.sqrt() * 1e29);
    assert!(((inv[2] as f64) - expect).abs() / expect < 1e-6);
}

/// A 16-bit corpus stores the rounded values: its rows, norms and bytes are those of the
/// rounded rows, in both formats and from every constructor.
#[test]
fn a_16_bit_corpus_holds_the_rounded_rows_and_their_norms() {
    let (n, d) = (300, 37);
    let values = crate::data::random_matrix(n, d, 5);
    for element in [ElementType::F16, ElementType::Bf16] {
        let half = element.half().unwrap();
        let c = Corpus::with_element_type(values.clone(), d, element).unwrap();
        assert_eq!((c.rows(), c.dim(), c.element_type()), (n, d, element));
        assert_eq!(c.bytes(), n * d * 2);
        let rounded: Vec<f32> = values.iter().map(|&v| half.to_f32(half.round(v))).collect();
        assert_eq!(c.matrix().as_slice(), &rounded[..]);
        assert_eq!(c.view().matrix().as_slice(), &rounded[..]);
        for r in [0, 17, n - 1] {
            assert_eq!(c.row_f32(r).unwrap(), &rounded[r * d..(r + 1) * d]);
            let norm: f64 = rounded[r * d..(r + 1) * d]
                .iter()
                .map(|&x| x as f64 * x as f64)
                .sum::<f64>()
                .sqrt();
            assert_eq!(c.view().inv_norms()[r], (1.0 / norm) as f32);
        }
        assert_eq!(c.row_f32(n), None);
        // The same rows given as 16-bit values make the same corpus.
        let same = match element {
            ElementType::F16 => {
                Corpus::from_f16(rounded.iter().map(|&v| f16::from_f32(v)).collect(), d)
            }
            _ => Corpus::from_bf16(rounded.iter().map(|&v| bf16::from_f32(v)).collect(), d),
        }
        .unwrap();
        assert_eq!(same.view().inv_norms(), c.view().inv_norms());
        assert_eq!(same.matrix().as_slice(), &rounded[..]);
        let mut scratch = Vec::new();
        assert_eq!(
            c.view().rows_f32(3..7, &mut scratch),
            &rounded[3 * d..7 * d]
        );
    }
    let plain = Corpus::with_element_type(values.clone(), d, ElementType::F32).unwrap();
    assert_eq!(plain.element_type(), ElementType::F32);
    assert_eq!(plain.matrix().as_slice(), &values[..]);
}

/// Bad 16-bit input is a typed error naming the place, from every constructor.
#[test]
fn bad_16_bit_input_is_a_typed_error() {
    // Shapes.
    for element in [ElementType::F16, ElementType::Bf16] {
        assert!(matches!(
            Corpus::with_element_type(vec![1.0; 6], 0, element),
            Err(Error::EmptyInput { .. })
        ));
        assert!(matches!(
            Corpus::with_element_type(vec![], 3, element),
            Err(Error::EmptyInput { .. })
        ));
        assert!(matches!(
            Corpus::with_element_type(vec![1.0; 7], 3, element),
            Err(Error::InvalidShape {
                rows: 2,
                cols: 3,
                len: 7
            })
        ));
        let mut v = vec![0.25f32; 12];
        v[10] = f32::INFINITY;
        assert!(matches!(
            Corpus::with_element_type(v, 4, element),
            Err(Error::NonFinite { row: 2, col: 2 })
        ));
    }
    // A value f16 cannot hold.
    let mut v = vec![0.25f32; 12];
    v[5] = -1.0e5;
    assert!(matches!(
        Corpus::with_element_type(v.clone(), 4, ElementType::F16),
        Err(Error::NotRepresentable {
            row: 1,
            col: 1,
            element: "f16",
            ..
        })
    ));
    assert!(Corpus::with_element_type(v, 4, ElementType::Bf16).is_ok());
    // NaN and infinity given as 16-bit values.
    let mut h = vec![f16::from_f32(0.5); 8];
    h[6] = f16::NAN;
    assert!(matches!(
        Corpus::from_f16(h, 4),
        Err(Error::NonFinite { row: 1, col: 2 })
    ));
    let mut b = vec![bf16::from_f32(0.5); 8];
    b[1] = bf16::NEG_INFINITY;
    assert!(matches!(
        Corpus::from_bf16(b, 4),
        Err(Error::NonFinite { row: 0, col: 1 })
    ));
    // A bf16 row too small to score (subnormal bf16 values, norm below MIN_NORM).
    let tiny = bf16::from_f32(1.0e-39);
    assert!(tiny.to_f32() > 0.0);
    let b = vec![bf16::ONE, bf16::ONE, tiny, tiny];
    assert!(matches!(
        Corpus::from_bf16(b, 2),
        Err(Error::NormOutOfRange { row: 1, norm }) if norm > 0.0 && norm < MIN_NORM
    ));
    // Zero rows are fine, and score 0.
    let c = Corpus::from_f16(vec![f16::ZERO; 8], 4).unwrap();
    assert_eq!(c.view().inv_norms(), [0.0, 0.0]);
}

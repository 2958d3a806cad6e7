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

//! The 16-bit streaming kernels at every level against an f64 reference of the widened
//! rows.

use super::*;

fn reference(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// Every supported level's `dots_rows_half` on `n` random rows of `d` values (rounded to
/// `half`) and `nq` queries, against the f64 dot products of the widened rows.
fn check(half: Half, d: usize, n: usize, nq: usize, offset: usize) {
    let values = crate::data::random_vec(d * n + offset, 11, (d * n + nq) as u64);
    let bits: Vec<u16> = values.iter().map(|&v| half.round(v)).collect();
    let rows = &bits[offset..];
    let qs = crate::data::random_vec(d * nq, 12, (d * nq) as u64);
    let scale = crate::data::random_vec(n, 13, n as u64);
    let mut wide = vec![0.0f32; rows.len()];
    half.decode(rows, &mut wide);
    for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
        let mut out = vec![f32::NAN; n * nq];
        dots_rows_half(level, half, rows, d, &qs, &scale, &mut out);
        for r in 0..n {
            let row = &wide[r * d..(r + 1) * d];
            for q in 0..nq {
                let query = &qs[q * d..(q + 1) * d];
                let want = reference(row, query) * scale[r] as f64;
                let norms = (super::super::sum_squares_f64(row)
                    * super::super::sum_squares_f64(query))
                .sqrt();
                let tol = 1e-6 * norms * scale[r].abs() as f64;
                let got = out[q * n + r] as f64;
                assert!(
                    (got - want).abs() <= tol,
                    "{half:?} {level:?} d={d} n={n} nq={nq} r={r} q={q}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn every_level_matches_f64_on_awkward_lengths_in_both_formats() {
    for half in [Half::F16, Half::Bf16] {
        for d in [
            1usize, 7, 8, 15, 16, 17, 31, 32, 33, 48, 64, 65, 100, 127, 128, 129, 257, 768,
        ] {
            for n in [1usize, 2, 9, 13] {
                for nq in [1usize, 2, 3, 4, 5, 8, 9] {
                    check(half, d, n, nq, 0);
                }
            }
        }
    }
}

/// Rows at every 2-byte offset from a cache line, and more rows than the prefetch
/// distance (whose hints run past the end).
#[test]
fn every_level_matches_f64_at_odd_offsets_and_past_the_prefetch_distance() {
    for half in [Half::F16, Half::Bf16] {
        for offset in [1usize, 3, 8, 31] {
            check(half, 768, 5, 2, offset);
        }
        check(half, 64, 300, 3, 0);
        check(half, 2048, 20, 1, 0);
    }
}

#[test]
fn zero_dimension_gives_zero_scores() {
    for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
        let mut out = vec![f32::NAN; 4];
        dots_rows_half(level, Half::F16, &[], 0, &[], &[1.0, 2.0], &mut out);
        assert_eq!(out, [0.0; 4], "{level:?}");
    }
}

/// Extreme but representable magnitudes: f16's largest and subnormal values, bf16's
/// near f32's limits, all widened exactly.
#[test]
fn extreme_values_widen_exactly() {
    for (half, big, tiny) in [
        (Half::F16, 65504.0f32, 5.960_464_5e-8),
        (Half::Bf16, 1.0e30, 1.0e-30),
    ] {
        let d = 40;
        let mut values = vec![0.0f32; d];
        for (i, v) in values.iter_mut().enumerate() {
            *v = if i % 3 == 0 { big } else { tiny } * if i % 2 == 0 { 1.0 } else { -1.0 };
        }
        let bits: Vec<u16> = values.iter().map(|&v| half.round(v)).collect();
        let mut wide = vec![0.0f32; d];
        half.decode(&bits, &mut wide);
        for (w, &b) in wide.iter().zip(&bits) {
            assert_eq!(*w, half.to_f32(b));
        }
        let q: Vec<f32> = (0..d).map(|i| 1.0 / (1.0 + i as f32)).collect();
        for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
            let mut out = [f32::NAN];
            dots_rows_half(level, half, &bits, d, &q, &[1.0], &mut out);
            let want = reference(&wide, &q);
            assert!(
                (out[0] as f64 - want).abs() <= 1e-6 * want.abs().max(1e-30),
                "{half:?} {level:?}: {} vs {want}",
                out[0]
            );
        }
    }
}

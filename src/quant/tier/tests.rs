use super::*;
use crate::data;

/// Inverse norms as the corpus computes them (f64 sums), 0 for a zero row.
fn inverse_norms(rows: &[f32], dim: usize) -> Vec<f32> {
    rows.chunks(dim)
        .map(|r| {
            let n = r.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
            if n == 0.0 {
                0.0
            } else {
                (1.0 / n) as f32
            }
        })
        .collect()
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    v.iter().map(|&x| (x as f64 / n) as f32).collect()
}

#[test]
fn rows_that_are_not_live_are_never_candidates() {
    let (n, dim) = (200, 16);
    let rows = data::random_matrix(n, dim, 41);
    let tier = Int8Tier::build(&rows, dim);
    let mut inv = inverse_norms(&rows, dim);
    for r in (0..n).step_by(2) {
        inv[r] = f32::NAN;
    }
    let q = unit(&rows[3 * dim..4 * dim]);
    let c = tier.view().candidates(&q, &inv, None, 10).remove(0);
    assert!(c.len() >= 10 && c.iter().all(|r| r % 2 == 1), "{c:?}");
    assert!(c.contains(&3));
    // More k than live rows: every live row.
    assert_eq!(tier.view().candidates(&q, &inv, None, 150)[0].len(), n / 2);
    assert!(tier.view().candidates(&q, &inv, None, 0)[0].is_empty());
}

//! The f64 reference results are checked against: cosine accumulated in f64, 0 when either
//! vector is zero, and rows ranked by descending score with ties by lower index.

/// `‖v‖` in f64.
pub fn norm64(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

/// `q·c / (‖q‖‖c‖)` in f64; 0 when either norm is 0.
pub fn cosine64(q: &[f32], c: &[f32]) -> f64 {
    let (nq, nc) = (norm64(q), norm64(c));
    if nq == 0.0 || nc == 0.0 {
        return 0.0;
    }
    let dot: f64 = q.iter().zip(c).map(|(&a, &b)| a as f64 * b as f64).sum();
    dot / (nq * nc)
}

/// The `Q × N` reference scores, one `Vec` per query.
pub fn reference_scores(queries: &[f32], corpus: &[f32], d: usize) -> Vec<Vec<f64>> {
    hybridvec::data::cosine_reference(queries, corpus, d)
}

/// Indices of `scores` best first (descending score, ties by lower index), `k` of them.
pub fn reference_top_k(scores: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// The f64 reference score of `q` against `c` under `metric`: cosine as [`cosine64`],
/// `q·c`, or the squared distance `Σ (q − c)²`.
pub fn metric64(metric: hybridvec::Metric, q: &[f32], c: &[f32]) -> f64 {
    match metric {
        hybridvec::Metric::L2 => q
            .iter()
            .zip(c)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum(),
        hybridvec::Metric::InnerProduct => {
            q.iter().zip(c).map(|(&a, &b)| a as f64 * b as f64).sum()
        }
        _ => cosine64(q, c),
    }
}

/// `n × d` standard-normal rows scaled by 0.1–10, so their norms differ (inner product and
/// L2 then rank differently from cosine).
pub fn spread_rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rows = hybridvec::data::random_matrix(n, d, seed);
    for (i, row) in rows.chunks_exact_mut(d).enumerate() {
        let s = 0.1 + (i * 7919 % 1000) as f32 / 100.0;
        row.iter_mut().for_each(|x| *x *= s);
    }
    rows
}

/// `v` as a corpus or store of `element` keeps it, rounded with the `half` crate's own
/// conversions: the tests' oracle, independent of the library's rounding path.
pub fn stored_as(element: hybridvec::ElementType, v: &[f32]) -> Vec<f32> {
    use hybridvec::{bf16, f16, ElementType};
    v.iter()
        .map(|&x| match element {
            ElementType::F16 => f16::from_f32(x).to_f32(),
            ElementType::Bf16 => bf16::from_f32(x).to_f32(),
            _ => x,
        })
        .collect()
}

//! How a query and a corpus row are compared: [`Metric`].
//!
//! Every metric runs on the same dot-product kernels. A backend scores
//! `dot(q, row) · scale[row] + bias[row]` and keeps the largest:
//! * **cosine**: `scale = 1/‖row‖`, and the queries have unit norm;
//! * **inner product**: `scale = 1`;
//! * **L2**: `scale = 1`, `bias = −‖row‖²/2`. The squared distance
//!   `‖q‖² + ‖row‖² − 2 q·row` is `‖q‖² − 2 ·` that score, so the largest score is the
//!   nearest row.
//!
//! Inner product and L2 are then made exact by the executor (`executor/exact.rs`). That
//! step is needed because the expanded form cancels badly for near-duplicate rows. It
//! re-scores the candidates in f64, taking L2 as the direct difference `Σ (q − c)²`, and
//! certifies that no row left out could beat them.

use crate::error::{Error, Result};
use crate::hit::Hit;
use rayon::prelude::*;
use std::fmt;
use std::sync::OnceLock;

/// The similarity or distance a search ranks by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Metric {
    /// `q·c / (‖q‖‖c‖)`, higher is better; 0 against a zero vector.
    #[default]
    Cosine,
    /// `q·c`, higher is better (the metric of many embedding models).
    InnerProduct,
    /// The squared Euclidean distance `Σ (q − c)²`, smaller is better (FAISS's default).
    /// Reported as the squared distance, not its root.
    L2,
}

impl Metric {
    /// Every metric, in a stable order.
    pub const ALL: [Metric; 3] = [Metric::Cosine, Metric::InnerProduct, Metric::L2];

    /// The short name the CLI takes and prints: `cos`, `ip` or `l2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cos",
            Metric::InnerProduct => "ip",
            Metric::L2 => "l2",
        }
    }

    /// Parses `cos`/`cosine`, `ip`/`inner_product`/`dot`, or `l2` (any case).
    ///
    /// Errors: [`Error::InvalidConfig`] naming the value and the choices.
    pub fn from_name(name: &str) -> Result<Metric> {
        match name.trim().to_ascii_lowercase().as_str() {
            "cos" | "cosine" => Ok(Metric::Cosine),
            "ip" | "inner_product" | "inner-product" | "dot" => Ok(Metric::InnerProduct),
            "l2" | "l2sq" | "sqeuclidean" => Ok(Metric::L2),
            _ => Err(Error::InvalidConfig(format!(
                "metric {name:?} is not one of cos, ip, l2"
            ))),
        }
    }

    /// Whether a higher score is a better hit (cosine, inner product), rather than a
    /// smaller distance (L2).
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::L2)
    }

    /// Whether hit `a` ranks before hit `b` under this metric: the better score, then the
    /// lower index.
    pub fn ranks_before(self, a: &Hit, b: &Hit) -> bool {
        if self.higher_is_better() {
            a.is_better_than(b)
        } else {
            a.score < b.score || (a.score == b.score && a.index < b.index)
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Metric {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Metric::from_name(s)
    }
}

/// The per-row factors of one metric over one corpus: `score = dot · scale + bias`.
#[derive(Debug)]
pub(crate) struct RowScoring {
    /// 1 for a live row; NaN for a row masked out (it then never scores).
    pub(crate) scale: Vec<f32>,
    /// `−‖row‖²/2` for L2 (NaN where masked out); `None` for inner product.
    pub(crate) bias: Option<Vec<f32>>,
    /// The largest row norm, for the error bound of the scores.
    pub(crate) max_norm: f64,
}

impl RowScoring {
    /// The factors of `metric` from the rows' inverse norms (0 for a zero row, NaN for a
    /// row masked out). `None` for cosine, whose factors are the inverse norms themselves.
    pub(crate) fn new(metric: Metric, inv_norms: &[f32]) -> Option<RowScoring> {
        (metric != Metric::Cosine).then(|| Self::dot(metric == Metric::L2, inv_norms))
    }

    /// The inner-product factors, with L2's biases when `l2`.
    fn dot(l2: bool, inv_norms: &[f32]) -> RowScoring {
        let scale = inv_norms
            .par_iter()
            .map(|&inv| if inv.is_nan() { f32::NAN } else { 1.0 })
            .collect();
        let bias = l2.then(|| {
            inv_norms
                .par_iter()
                .map(|&inv| match inv {
                    _ if inv.is_nan() => f32::NAN,
                    0.0 => 0.0,
                    _ => (-0.5 / (inv as f64 * inv as f64)) as f32,
                })
                .collect()
        });
        // The smallest inverse norm of a live non-zero row is the largest norm.
        let min_inv = inv_norms
            .par_iter()
            .copied()
            .filter(|&inv| inv > 0.0)
            .reduce(|| f32::INFINITY, f32::min);
        let max_norm = if min_inv.is_finite() {
            // The inverse norm is rounded to f32: allow for it.
            (1.0 / min_inv as f64) * (1.0 + 1e-6)
        } else {
            0.0
        };
        RowScoring {
            scale,
            bias,
            max_norm,
        }
    }
}

/// A [`Corpus`](crate::Corpus)'s [`RowScoring`]s, computed on first use: the corpus never
/// changes, so later calls with the same metric reuse them.
#[derive(Clone, Debug, Default)]
pub(crate) struct ScoringCache {
    inner_product: OnceLock<std::sync::Arc<RowScoring>>,
    l2: OnceLock<std::sync::Arc<RowScoring>>,
}

impl ScoringCache {
    /// The factors of `metric` for a corpus with these inverse norms; `None` for cosine.
    pub(crate) fn get(&self, metric: Metric, inv_norms: &[f32]) -> Option<&RowScoring> {
        let cell = match metric {
            Metric::Cosine => return None,
            Metric::InnerProduct => &self.inner_product,
            Metric::L2 => &self.l2,
        };
        Some(
            cell.get_or_init(|| {
                std::sync::Arc::new(RowScoring::dot(metric == Metric::L2, inv_norms))
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_typed_errors() {
        for m in Metric::ALL {
            assert_eq!(Metric::from_name(m.as_str()).unwrap(), m);
        }
        assert_eq!(Metric::from_name(" IP ").unwrap(), Metric::InnerProduct);
        for bad in ["", "cosin", "l1", "-1", "nan"] {
            let e = Metric::from_name(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidConfig(_)), "{bad}: {e}");
        }
    }
}

//! Row-major `f32` matrices: borrowed views, owned matrices, and a corpus that caches its
//! row norms.

use crate::error::{Error, Result};
use crate::metric::{Metric, RowScoring, ScoringCache};
use crate::quant::tier::Int8Tier;
use crate::simd;
use rayon::prelude::*;
use std::sync::Arc;

/// A validated, borrowed, row-major `rows × cols` matrix of `f32`.
///
/// Construction checks the shape only; finiteness is checked where the data is used
/// (once per corpus, once per query batch), so a view costs nothing to make.
#[derive(Clone, Copy, Debug)]
pub struct MatrixRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
}

impl<'a> MatrixRef<'a> {
    /// Views `data` as `rows × cols`, row-major.
    ///
    /// Errors: [`Error::EmptyInput`] when `rows` or `cols` is 0, [`Error::InvalidShape`] when
    /// `data.len() != rows * cols`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        if rows == 0 {
            return Err(Error::EmptyInput {
                what: "matrix has no rows",
            });
        }
        if cols == 0 {
            return Err(Error::EmptyInput {
                what: "matrix has dimension 0",
            });
        }
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(Error::InvalidShape {
                rows,
                cols,
                len: data.len(),
            });
        }
        Ok(Self { data, rows, cols })
    }

    /// Views `data` as rows of `cols` values; the row count is `data.len() / cols`.
    pub fn from_rows(data: &'a [f32], cols: usize) -> Result<Self> {
        if cols == 0 {
            return Err(Error::EmptyInput {
                what: "matrix has dimension 0",
            });
        }
        Self::new(data, data.len() / cols, cols)
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (the vector dimension).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The whole buffer, row-major.
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }

    /// Row `i`. Panics when `i >= rows`, like slice indexing.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Rows `range` as a view of their own. Panics when the range is out of bounds, like
    /// slice indexing; an empty range gives a view of no rows (which `new` refuses).
    pub(crate) fn row_range(&self, range: std::ops::Range<usize>) -> MatrixRef<'a> {
        MatrixRef {
            data: &self.data[range.start * self.cols..range.end * self.cols],
            rows: range.len(),
            cols: self.cols,
        }
    }

    /// The position of the first NaN or infinity, as [`Error::NonFinite`].
    pub fn check_finite(&self) -> Result<()> {
        // Chunked so a large corpus is scanned on all cores; the first bad row wins. Small
        // inputs (a query, one stored row) stay on the calling thread: a hop into the rayon
        // pool costs more than the scan.
        const ROWS_PER_TASK: usize = 4096;
        const SERIAL_VALUES: usize = 1 << 16;
        let bad = if self.data.len() <= SERIAL_VALUES {
            first_non_finite(self.data).map(|p| (p / self.cols, p % self.cols))
        } else {
            self.data
                .par_chunks(ROWS_PER_TASK * self.cols)
                .enumerate()
                .find_map_first(|(chunk, block)| {
                    first_non_finite(block).map(|p| {
                        let flat = chunk * ROWS_PER_TASK * self.cols + p;
                        (flat / self.cols, flat % self.cols)
                    })
                })
        };
        match bad {
            Some((row, col)) => Err(Error::NonFinite { row, col }),
            None => Ok(()),
        }
    }
}

/// Index of the first NaN or infinity in `v`. Scans 64-value blocks with a branch-free
/// fold (which vectorises) and only searches inside the block that failed.
pub(crate) fn first_non_finite(v: &[f32]) -> Option<usize> {
    const EXP: u32 = 0x7f80_0000;
    let mut at = 0;
    for block in v.chunks(64) {
        let any_bad = block
            .iter()
            .fold(false, |acc, x| acc | (x.to_bits() & EXP == EXP));
        if any_bad {
            return block.iter().position(|x| !x.is_finite()).map(|p| at + p);
        }
        at += block.len();
    }
    None
}

/// An owned row-major `rows × cols` matrix of `f32`; also the type of score matrices.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
}

/// The `Q × N` cosine scores of a query batch against a corpus, row-major (row = query).
pub type Scores = Matrix;

impl Matrix {
    /// Takes ownership of `data` as `rows × cols`; same checks as [`MatrixRef::new`].
    pub fn new(data: Vec<f32>, rows: usize, cols: usize) -> Result<Self> {
        MatrixRef::new(&data, rows, cols)?;
        Ok(Self { data, rows, cols })
    }

    /// A zero-filled matrix.
    pub(crate) fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            data: crate::mem::zeroed_f32(rows * cols),
            rows,
            cols,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i`. Panics when `i >= rows`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Element `(i, j)`. Panics when out of range.
    pub fn get(&self, i: usize, j: usize) -> f32 {
        assert!(j < self.cols, "column {j} out of range");
        self.data[i * self.cols + j]
    }

    /// The whole buffer, row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// A borrowed view.
    pub fn view(&self) -> MatrixRef<'_> {
        MatrixRef {
            data: &self.data,
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// Gives the buffer back.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }
}

/// A corpus of embeddings: an owned row-major matrix that has been checked for NaN/inf
/// once and caches each row's inverse norm, so no search call pays for either again.
///
/// The vectors are stored as given (not normalised); cosine scores divide by the cached
/// norms. A zero row has inverse norm 0 and so scores 0 against every query.
#[derive(Clone, Debug)]
pub struct Corpus {
    matrix: Matrix,
    inv_norms: Vec<f32>,
    /// The inner-product and L2 factors, computed on first use.
    scoring: ScoringCache,
    /// Unique per corpus built in this process: a device keeps its copy under it.
    id: u64,
    /// The int8 scan tier, when built ([`Corpus::with_int8_tier`]).
    int8: Option<Arc<Int8Tier>>,
}

/// Where a [`CorpusView`] comes from, so a device can keep a copy between calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// An immutable [`Corpus`].
    Corpus(u64),
    /// A warm store: rows are only appended (rows below the view's length never change),
    /// and rows that are not live have a NaN inverse norm.
    Store(u64),
}

/// A fresh identity for a corpus or store.
pub(crate) fn next_identity() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Corpus {
    /// Builds a corpus from `data` (row-major, `dim` columns), validating the shape and
    /// every value and computing the row norms on all cores.
    ///
    /// Errors: [`Error::EmptyInput`], [`Error::InvalidShape`], [`Error::NonFinite`], and
    /// [`Error::NormOutOfRange`] for a non-zero row whose norm is outside
    /// [`MIN_NORM`]`..=`[`MAX_NORM`].
    pub fn new(data: Vec<f32>, dim: usize) -> Result<Self> {
        if dim == 0 {
            return Err(Error::EmptyInput {
                what: "corpus has dimension 0",
            });
        }
        let rows = data.len() / dim;
        let matrix = Matrix::new(data, rows, dim).map_err(|e| match e {
            Error::EmptyInput { .. } => Error::EmptyInput {
                what: "corpus has no rows",
            },
            other => other,
        })?;
        matrix.view().check_finite()?;
        let inv_norms = inverse_norms(matrix.view())?;
        Ok(Self {
            matrix,
            inv_norms,
            scoring: ScoringCache::default(),
            id: next_identity(),
            int8: None,
        })
    }

    /// This corpus with an int8 scan tier: every row also kept as int8 codes with a
    /// certified bound on its rounding error (`D + 16` more bytes a row), built on all
    /// cores.
    ///
    /// Cosine top-k on the CPU for batches its streaming kernels serve, up to
    /// [`CERTIFIED_MAX_QUERIES`](crate::CERTIFIED_MAX_QUERIES) queries, then scans the
    /// codes first, which bounds every row's score, and re-scores with the f32 kernels
    /// only the rows whose bound reaches the `k`-th best, in place: the answer is the
    /// full f32 scan's of these rows, bit for bit, not an approximation of it
    /// ([`ExecutionReport::rescored`](crate::ExecutionReport::rescored) counts the rows
    /// re-scored). Other calls ignore the tier.
    ///
    /// ```
    /// use hybridvec::{data, Corpus, DevicePolicy, ExecutorConfig, HybridExecutor, MatrixRef};
    ///
    /// let (n, d) = (2000, 64);
    /// let plain = Corpus::new(data::random_matrix(n, d, 1), d)?;
    /// let tiered = plain.clone().with_int8_tier();
    /// let exec = HybridExecutor::new(ExecutorConfig { device: DevicePolicy::Cpu, ..Default::default() })?;
    /// let q = data::random_matrix(1, d, 2);
    /// let q = MatrixRef::new(&q, 1, d)?;
    /// let (hits, report) = exec.top_k_with_report(q, &tiered, 10)?;
    /// let index = |h: &[Vec<hybridvec::Hit>]| h[0].iter().map(|h| h.index).collect::<Vec<_>>();
    /// assert_eq!(index(&hits), index(&exec.top_k(q, &plain, 10)?));
    /// assert!(report.rescored.unwrap() < n);
    /// # Ok::<(), hybridvec::Error>(())
    /// ```
    pub fn with_int8_tier(mut self) -> Self {
        self.int8 = Some(Arc::new(Int8Tier::build(
            &self.matrix.data,
            self.matrix.cols,
        )));
        self
    }

    /// Whether [`with_int8_tier`](Self::with_int8_tier) built a tier, and its bytes.
    pub fn int8_tier_bytes(&self) -> Option<usize> {
        self.int8.as_ref().map(|t| t.bytes())
    }

    /// Copies a view into a new corpus.
    pub fn from_view(view: MatrixRef<'_>) -> Result<Self> {
        Self::new(view.as_slice().to_vec(), view.cols())
    }

    /// Number of vectors.
    pub fn rows(&self) -> usize {
        self.matrix.rows
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.matrix.cols
    }

    /// The vectors as a matrix view.
    pub fn matrix(&self) -> MatrixRef<'_> {
        self.matrix.view()
    }

    /// A borrowed view for the backends.
    pub fn view(&self) -> CorpusView<'_> {
        CorpusView {
            matrix: self.matrix.view(),
            inv_norms: &self.inv_norms,
            cosine_inv_norms: &self.inv_norms,
            bias: None,
            metric: Metric::Cosine,
            cache: Some(&self.scoring),
            live: None,
            origin: Origin::Corpus(self.id),
            int8: self.int8.as_deref(),
        }
    }

    /// Bytes held by the vectors.
    pub fn bytes(&self) -> usize {
        self.matrix.data.len() * std::mem::size_of::<f32>()
    }
}

impl<'a> From<&'a Corpus> for CorpusView<'a> {
    fn from(c: &'a Corpus) -> Self {
        c.view()
    }
}

/// A borrowed, already validated corpus: vectors plus their inverse norms.
///
/// This is what the backends read. It is built from a [`Corpus`]; other corpus sources
/// (such as a memory-mapped store) produce the same view without copying the vectors.
#[derive(Clone, Copy, Debug)]
pub struct CorpusView<'a> {
    matrix: MatrixRef<'a>,
    /// The factor of each row's dot products: `1/‖row‖` for cosine, 1 otherwise.
    inv_norms: &'a [f32],
    /// The inverse norms whatever the metric: what a device keeps with its copy.
    cosine_inv_norms: &'a [f32],
    /// Added to each row's scaled dot products (L2's `−‖row‖²/2`).
    bias: Option<&'a [f32]>,
    /// The metric `inv_norms` and `bias` score for.
    metric: Metric,
    /// The corpus's cached factors of the other metrics, when it has them.
    cache: Option<&'a ScoringCache>,
    live: Option<&'a [u32]>,
    origin: Origin,
    /// The corpus's int8 scan tier, when it has one (one entry per row of `matrix`).
    int8: Option<&'a Int8Tier>,
}

impl<'a> CorpusView<'a> {
    /// A view over vectors whose inverse norms the caller computed. A row masked out has
    /// a NaN inverse norm and a clear bit in `live` (see [`CorpusView::live_mask`]); `live`
    /// is `None` when no row is masked out.
    pub(crate) fn from_parts(
        matrix: MatrixRef<'a>,
        inv_norms: &'a [f32],
        live: Option<&'a [u32]>,
        origin: Origin,
    ) -> Self {
        debug_assert_eq!(matrix.rows(), inv_norms.len());
        debug_assert!(live.is_none_or(|l| l.len() == inv_norms.len().div_ceil(32)));
        Self {
            matrix,
            inv_norms,
            cosine_inv_norms: inv_norms,
            bias: None,
            metric: Metric::Cosine,
            cache: None,
            live,
            origin,
            int8: None,
        }
    }

    /// This (cosine) view scoring for `metric` with the factors `scoring` instead (see
    /// [`crate::metric`]). Only backends that serve the metric may see it.
    pub(crate) fn scored_by(self, metric: Metric, scoring: &'a RowScoring) -> Self {
        debug_assert_eq!(scoring.scale.len(), self.rows());
        Self {
            inv_norms: &scoring.scale,
            bias: scoring.bias.as_deref(),
            metric,
            ..self
        }
    }

    /// This view with fewer rows live: `scale` is its factors with NaN for every row
    /// masked out, and `live` the same rows as bits (see
    /// [`live_mask`](Self::live_mask)). The CPU reads the factors, a device the bits.
    pub(crate) fn masked(self, scale: &'a [f32], live: &'a [u32]) -> Self {
        debug_assert_eq!(scale.len(), self.rows());
        debug_assert_eq!(live.len(), self.rows().div_ceil(32));
        Self {
            inv_norms: scale,
            live: Some(live),
            cache: None,
            ..self
        }
    }

    /// Rows copied out of this view (`data`, row-major, with their factors `scale` and
    /// biases `bias`, one per row), scoring for the same metric: a view of those rows
    /// alone.
    pub(crate) fn gathered<'b>(
        &self,
        data: &'b [f32],
        scale: &'b [f32],
        bias: Option<&'b [f32]>,
    ) -> CorpusView<'b> {
        debug_assert_eq!(data.len(), scale.len() * self.dim());
        CorpusView {
            matrix: MatrixRef {
                data,
                rows: scale.len(),
                cols: self.dim(),
            },
            inv_norms: scale,
            cosine_inv_norms: scale,
            bias,
            metric: self.metric,
            cache: None,
            live: None,
            origin: self.origin,
            int8: None,
        }
    }

    /// The int8 scan tier of the corpus this view reads (its rows, with NaN factors for
    /// rows masked out), when it has one.
    pub(crate) fn int8_tier(&self) -> Option<&'a Int8Tier> {
        self.int8
    }

    /// The factors cached with the corpus this view reads, when it has a cache.
    pub(crate) fn scoring_cache(&self) -> Option<&'a ScoringCache> {
        self.cache
    }

    /// What the backend adds to each row's scaled dot products (L2's `−‖row‖²/2`), or
    /// `None` when it adds nothing.
    pub fn row_bias(&self) -> Option<&'a [f32]> {
        self.bias
    }

    /// The metric this view's factors score for. Backends see [`Metric::Cosine`] only,
    /// unless they serve others ([`Backend::supports_metric`](crate::Backend::supports_metric)).
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// One bit per row, set for a live row (bit `i % 32` of word `i / 32`), or `None`
    /// when every row is live. A row whose bit is clear has a NaN inverse norm.
    pub(crate) fn live_mask(&self) -> Option<&'a [u32]> {
        self.live
    }

    /// Each row's inverse norm (NaN for a row not live) whatever the metric the view
    /// scores: the factors a device keeps with its copy of the corpus. A gathered view
    /// has its factors here.
    pub(crate) fn cosine_inv_norms(&self) -> &'a [f32] {
        self.cosine_inv_norms
    }

    /// Where the view comes from.
    pub(crate) fn origin(&self) -> Origin {
        self.origin
    }

    /// Number of vectors.
    pub fn rows(&self) -> usize {
        self.matrix.rows
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.matrix.cols
    }

    /// The vectors.
    pub fn matrix(&self) -> MatrixRef<'a> {
        self.matrix
    }

    /// The factor of row `i`'s dot products: for cosine `1 / ‖row i‖`, or 0 for a zero
    /// row; 1 for the other metrics. NaN for a row masked out (deleted from a store).
    pub fn inv_norms(&self) -> &'a [f32] {
        self.inv_norms
    }
}

/// Corpus rows must have a norm of 0 or within `[MIN_NORM, MAX_NORM]`: outside it the
/// inverse norm or the f32 dot products leave f32's normal range, and scores would turn
/// into NaN or lose all precision.
pub const MIN_NORM: f64 = 1e-30;
/// See [`MIN_NORM`].
pub const MAX_NORM: f64 = 1e30;

/// `1/‖row‖` for every row (0 for a zero row), on all cores.
///
/// The sum of squares is accumulated in f64, so large or tiny (but supported) values
/// neither overflow nor underflow. A row outside the supported norm range is
/// [`Error::NormOutOfRange`].
pub(crate) fn inverse_norms(m: MatrixRef<'_>) -> Result<Vec<f32>> {
    let mut out = vec![0.0f32; m.rows()];
    out.par_chunks_mut(1024).enumerate().for_each(|(c, dst)| {
        for (i, inv) in dst.iter_mut().enumerate() {
            let norm = simd::sum_squares_f64(m.row(c * 1024 + i)).sqrt();
            *inv = if norm == 0.0 {
                0.0
            } else if (MIN_NORM..=MAX_NORM).contains(&norm) {
                (1.0 / norm) as f32
            } else {
                f32::NAN // reported below
            };
        }
    });
    if let Some(row) = out.iter().position(|v| v.is_nan()) {
        let norm = simd::sum_squares_f64(m.row(row)).sqrt();
        return Err(Error::NormOutOfRange { row, norm });
    }
    Ok(out)
}

/// Scales `v` to unit norm in place, in f64 so that any finite input works; a zero vector
/// stays zero.
pub(crate) fn normalize(v: &mut [f32]) {
    let ss = simd::sum_squares_f64(v);
    if ss > 0.0 {
        let inv = 1.0 / ss.sqrt();
        v.iter_mut().for_each(|x| *x = (*x as f64 * inv) as f32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both scan paths (serial below 65 536 values, parallel above) find the first bad
    /// value at every position class: block starts, block ends, tails, and denormals or
    /// the largest finite values are never flagged.
    #[test]
    fn first_non_finite_finds_the_first_bad_value() {
        for len in [1usize, 63, 64, 65, 1000, 70_000] {
            let mut v = crate::data::random_vec(len, 41, len as u64);
            v[0] = f32::MAX;
            v[len - 1] = f32::MIN_POSITIVE / 2.0;
            assert_eq!(first_non_finite(&v), None, "len {len}");
            let cols = if len % 7 == 0 { 7 } else { 1 };
            assert!(MatrixRef::new(&v, len / cols, cols)
                .unwrap()
                .check_finite()
                .is_ok());
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                for at in [0, len / 2, len.saturating_sub(64), len - 1] {
                    let mut w = v.clone();
                    w[at] = bad;
                    if at + 1 < len {
                        w[len - 1] = f32::NAN; // a later bad value must not win
                    }
                    assert_eq!(first_non_finite(&w), Some(at), "len {len} at {at}");
                    let m = MatrixRef::new(&w, len / cols, cols).unwrap();
                    assert!(matches!(
                        m.check_finite(),
                        Err(Error::NonFinite { row, col }) if row * cols + col == at
                    ));
                }
            }
        }
    }

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
        assert!(
            matches!(e, Error::NormOutOfRange { row: 1, norm } if norm > 0.0 && norm < MIN_NORM)
        );
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
}

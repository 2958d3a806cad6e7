//! A corpus of embeddings, owned ([`Corpus`]) or borrowed by the backends
//! ([`CorpusView`]): its rows, stored as f32 or as 16-bit values ([`ElementType`]), checked
//! once and carrying their inverse norms.
//!
//! A 16-bit corpus stays 16-bit: the scan kernels widen its rows in registers, and the
//! paths that need f32 rows (score tiles, gathered rows, exact re-checks) widen a block
//! at a time into their own scratch. Only [`CorpusView::matrix`] widens the whole corpus,
//! once, for callers that ask for an f32 matrix.

use crate::elem::{self, bf16, f16, ElementType, Half};
use crate::error::{Error, Result};
use crate::matrix::{inverse_norm, inverse_norms, Matrix, MatrixRef};
use crate::metric::{Metric, RowScoring, ScoringCache};
use crate::quant::tier::{Int8Tier, TierRef};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

/// A corpus of embeddings: an owned row-major matrix that has been checked for NaN/inf
/// once and caches each row's inverse norm, so no search call pays for either again.
///
/// The vectors are stored as given (not normalised), as f32 or, to halve the bytes every
/// scan reads, as f16 or bf16 ([`Corpus::with_element_type`], [`Corpus::from_f16`],
/// [`Corpus::from_bf16`]); cosine scores divide by the cached norms. A zero row has
/// inverse norm 0 and so scores 0 against every query.
#[derive(Clone, Debug)]
pub struct Corpus {
    values: Values,
    inv_norms: Vec<f32>,
    /// The inner-product and L2 factors, computed on first use.
    scoring: ScoringCache,
    /// Unique per corpus built in this process: a device keeps its copy under it.
    id: u64,
    /// The int8 scan tier, when built ([`Corpus::with_int8_tier`]).
    int8: Option<Arc<Int8Tier>>,
}

/// A corpus's stored values.
#[derive(Clone, Debug)]
enum Values {
    F32(Matrix),
    Half {
        bits: Vec<u16>,
        half: Half,
        rows: usize,
        cols: usize,
        /// The rows widened to f32, made on the first [`CorpusView::matrix`] call only.
        decoded: OnceLock<Vec<f32>>,
    },
}

/// The stored values of a view's rows, row-major.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Elements<'a> {
    F32(&'a [f32]),
    Half {
        bits: &'a [u16],
        half: Half,
        /// Where [`CorpusView::matrix`] keeps the widened rows: those of `whole`, of which
        /// `bits` are the rows from `first` on (all of them, but in a row range).
        decoded: &'a OnceLock<Vec<f32>>,
        whole: &'a [u16],
        first: usize,
    },
}

/// Where a [`CorpusView`] comes from, so a device can keep a copy between calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// An immutable [`Corpus`].
    Corpus(u64),
    /// A warm store: rows are only appended (rows below the view's length never change),
    /// and rows that are not live have a NaN inverse norm.
    Store(u64),
    /// The rows from `first` on of a corpus (`store: false`) or store (`store: true`)
    /// with that identity: one device's share ([`CorpusView::rows_range`]). A store's
    /// share starting at the same row only grows, as the store does.
    Part { of: u64, store: bool, first: usize },
}

impl Origin {
    /// Whether rows are only appended to views of this origin (a store, or a share of
    /// one): a copy of the first rows stays valid as the view grows.
    pub(crate) fn appends(self) -> bool {
        matches!(self, Origin::Store(_) | Origin::Part { store: true, .. })
    }

    /// This origin's rows from `start` on.
    fn rows_after(self, start: usize) -> Self {
        match self {
            Origin::Corpus(of) => Origin::Part {
                of,
                store: false,
                first: start,
            },
            Origin::Store(of) => Origin::Part {
                of,
                store: true,
                first: start,
            },
            Origin::Part { of, store, first } => Origin::Part {
                of,
                store,
                first: first + start,
            },
        }
    }
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
    /// [`MIN_NORM`](crate::MIN_NORM)`..=`[`MAX_NORM`](crate::MAX_NORM).
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
            values: Values::F32(matrix),
            inv_norms,
            scoring: ScoringCache::default(),
            id: next_identity(),
            int8: None,
        })
    }

    /// This corpus with an int8 scan tier: every row also kept as int8 codes with a
    /// certified bound on its rounding error (`D + 32` more bytes a row), built on all
    /// cores.
    ///
    /// Top-k on the CPU (cosine, inner product or L2), for batches of every size where
    /// the CPU has AVX-512 VNNI and up to
    /// [`CERTIFIED_MAX_QUERIES`](crate::CERTIFIED_MAX_QUERIES) queries elsewhere, then
    /// scans the codes first, which bounds every row's score, and re-scores with the f32 kernels
    /// only the rows whose bound reaches the `k`-th best, in place: the answer is the
    /// full f32 scan's of these rows, bit for bit, not an approximation of it
    /// ([`ExecutionReport::rescored`](crate::ExecutionReport::rescored) counts the rows
    /// re-scored). Other calls (filtered ones, the GPU) ignore the tier.
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
        let tier = match &self.values {
            Values::F32(m) => Int8Tier::build(m.as_slice(), m.cols()),
            Values::Half {
                bits, half, cols, ..
            } => Int8Tier::build_rows(bits.len() / cols, *cols, |r, out| {
                half.decode(&bits[r * cols..(r + 1) * cols], out)
            }),
        };
        self.int8 = Some(Arc::new(tier));
        self
    }

    /// Builds a corpus that stores `data` (row-major, `dim` columns) as `element`: each
    /// value rounded to nearest (ties to even) for f16 and bf16, so the stored rows, and
    /// every score, are those of the rounded values. Same checks as [`Corpus::new`], and
    /// [`Error::NotRepresentable`] for a finite value that rounds to infinity (f16 holds
    /// up to ±65 504).
    ///
    /// ```
    /// use hybridvec::{data, Corpus, ElementType, ExecutorConfig, HybridExecutor, MatrixRef};
    ///
    /// let (n, d) = (1000, 32);
    /// let values = data::random_matrix(n, d, 1);
    /// let half = Corpus::with_element_type(values.clone(), d, ElementType::F16)?;
    /// assert_eq!((half.element_type(), half.bytes()), (ElementType::F16, n * d * 2));
    /// let exec = HybridExecutor::new(ExecutorConfig::default())?;
    /// let q = MatrixRef::new(&values[..d], 1, d)?;
    /// assert_eq!(exec.top_k(q, &half, 1)?[0][0].index, 0); // row 0, rounded, is still nearest
    /// # Ok::<(), hybridvec::Error>(())
    /// ```
    pub fn with_element_type(data: Vec<f32>, dim: usize, element: ElementType) -> Result<Self> {
        match element.half() {
            None => Self::new(data, dim),
            Some(half) => {
                check_shape(data.len(), dim)?;
                let bits = elem::encode(half, &data, dim)?;
                drop(data);
                Self::from_half(bits, dim, half)
            }
        }
    }

    /// Builds a corpus that stores f16 `data` (row-major, `dim` columns) as it is. Same
    /// checks as [`Corpus::new`].
    pub fn from_f16(data: Vec<f16>, dim: usize) -> Result<Self> {
        // Same size and alignment: the collect reuses the allocation.
        let bits = data.into_iter().map(f16::to_bits).collect();
        Self::from_half(bits, dim, Half::F16)
    }

    /// Builds a corpus that stores bf16 `data` (row-major, `dim` columns) as it is. Same
    /// checks as [`Corpus::new`].
    pub fn from_bf16(data: Vec<bf16>, dim: usize) -> Result<Self> {
        let bits = data.into_iter().map(bf16::to_bits).collect();
        Self::from_half(bits, dim, Half::Bf16)
    }

    /// A corpus of 16-bit values: checks the shape and every value, and the norms of the
    /// widened rows.
    fn from_half(bits: Vec<u16>, dim: usize, half: Half) -> Result<Self> {
        let rows = check_shape(bits.len(), dim)?;
        if let Some(at) = elem::first_non_finite(half, &bits) {
            return Err(Error::NonFinite {
                row: at / dim,
                col: at % dim,
            });
        }
        let inv_norms = half_inverse_norms(half, &bits, dim)?;
        crate::mem::advise_huge_pages(&bits);
        Ok(Self {
            values: Values::Half {
                bits,
                half,
                rows,
                cols: dim,
                decoded: OnceLock::new(),
            },
            inv_norms,
            scoring: ScoringCache::default(),
            id: next_identity(),
            int8: None,
        })
    }

    /// How the corpus stores its values.
    pub fn element_type(&self) -> ElementType {
        match &self.values {
            Values::F32(_) => ElementType::F32,
            Values::Half { half, .. } => half.element(),
        }
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
        match &self.values {
            Values::F32(m) => m.rows(),
            Values::Half { rows, .. } => *rows,
        }
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        match &self.values {
            Values::F32(m) => m.cols(),
            Values::Half { cols, .. } => *cols,
        }
    }

    /// The vectors as an f32 matrix view. A 16-bit corpus widens all its rows on the
    /// first call and keeps them (twice its own size again); searches never call it.
    pub fn matrix(&self) -> MatrixRef<'_> {
        self.view().matrix()
    }

    /// Row `i` as stored, widened to f32 (exact), or `None` past the last row.
    pub fn row_f32(&self, i: usize) -> Option<Vec<f32>> {
        let view = self.view();
        (i < view.rows()).then(|| {
            let mut scratch = Vec::new();
            view.rows_f32(i..i + 1, &mut scratch).to_vec()
        })
    }

    /// A borrowed view for the backends.
    pub fn view(&self) -> CorpusView<'_> {
        let (elements, rows, cols) = match &self.values {
            Values::F32(m) => (Elements::F32(m.as_slice()), m.rows(), m.cols()),
            Values::Half {
                bits,
                half,
                rows,
                cols,
                decoded,
            } => (
                Elements::Half {
                    bits,
                    half: *half,
                    decoded,
                    whole: bits,
                    first: 0,
                },
                *rows,
                *cols,
            ),
        };
        CorpusView {
            elements,
            rows,
            cols,
            inv_norms: &self.inv_norms,
            cosine_inv_norms: &self.inv_norms,
            bias: None,
            metric: Metric::Cosine,
            cache: Some(&self.scoring),
            live: None,
            origin: Origin::Corpus(self.id),
            int8: self.int8.as_deref().map(Int8Tier::view),
        }
    }

    /// Bytes held by the vectors as stored (not counting a widened copy).
    pub fn bytes(&self) -> usize {
        self.rows() * self.dim() * self.element_type().bytes()
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
    elements: Elements<'a>,
    rows: usize,
    cols: usize,
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
    int8: Option<TierRef<'a>>,
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
        let elements = Elements::F32(matrix.as_slice());
        Self::cosine_over(elements, matrix.cols(), inv_norms, live, origin)
    }

    /// A cosine view of `elements` (`dim` values a row, one inverse norm a row).
    fn cosine_over(
        elements: Elements<'a>,
        dim: usize,
        inv_norms: &'a [f32],
        live: Option<&'a [u32]>,
        origin: Origin,
    ) -> Self {
        debug_assert!(live.is_none_or(|l| l.len() == inv_norms.len().div_ceil(32)));
        Self {
            elements,
            rows: inv_norms.len(),
            cols: dim,
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

    /// [`from_parts`](Self::from_parts) for 16-bit rows (`bits`, row-major, `dim` values
    /// a row, of format `half`), with the cell that keeps them widened if
    /// [`matrix`](Self::matrix) is called.
    pub(crate) fn from_half_parts(
        (bits, half, decoded): (&'a [u16], Half, &'a OnceLock<Vec<f32>>),
        dim: usize,
        inv_norms: &'a [f32],
        live: Option<&'a [u32]>,
        origin: Origin,
    ) -> Self {
        debug_assert_eq!(bits.len(), inv_norms.len() * dim);
        let elements = Elements::Half {
            bits,
            half,
            decoded,
            whole: bits,
            first: 0,
        };
        Self::cosine_over(elements, dim, inv_norms, live, origin)
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
        debug_assert!(data.is_empty() || data.len() == scale.len() * self.dim());
        CorpusView {
            elements: Elements::F32(data),
            rows: scale.len(),
            cols: self.dim(),
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

    /// [`gathered`](Self::gathered) for the rows of a 16-bit view copied out as stored
    /// (`bits`, in this view's format), with the cell that keeps them widened if
    /// [`matrix`](Self::matrix) is called; `None` for an f32 view.
    pub(crate) fn gathered_half<'b>(
        &self,
        (bits, decoded): (&'b [u16], &'b OnceLock<Vec<f32>>),
        scale: &'b [f32],
        bias: Option<&'b [f32]>,
    ) -> Option<CorpusView<'b>> {
        let Elements::Half { half, .. } = self.elements else {
            return None;
        };
        debug_assert_eq!(bits.len(), scale.len() * self.dim());
        Some(CorpusView {
            elements: Elements::Half {
                bits,
                half,
                decoded,
                whole: bits,
                first: 0,
            },
            ..self.gathered(&[], scale, bias)
        })
    }

    /// This view as a corpus of its own (a fresh identity), for a view of rows copied out
    /// of another ([`gathered`](Self::gathered)) that a device must not take for the
    /// corpus it keeps.
    pub(crate) fn detached(self) -> Self {
        Self {
            origin: Origin::Corpus(next_identity()),
            ..self
        }
    }

    /// The int8 scan tier of the corpus this view reads (its rows, with NaN factors for
    /// rows masked out), when it has one.
    pub(crate) fn int8_tier(&self) -> Option<TierRef<'a>> {
        self.int8
    }

    /// Asks for the rows of `runs` (`start..end`, ascending) to be read from a store's
    /// files now, all at once (see [`crate::mem::will_need`]): the certified search reads
    /// only them, scattered, and a fault on each would read (and cache) far more.
    /// Nothing for an in-memory corpus.
    pub(crate) fn will_need_rows(&self, runs: &[(usize, usize)]) {
        if !self.origin.appends() {
            return;
        }
        let (base, row_bytes) = match &self.elements {
            Elements::F32(d) => (d.as_ptr() as usize, self.cols * 4),
            Elements::Half { bits, .. } => (bits.as_ptr() as usize, self.cols * 2),
        };
        crate::mem::will_need(
            runs.iter()
                .map(|&(s, e)| (base + s * row_bytes, (e - s) * row_bytes)),
        );
    }

    /// Rows `range` of this view alone, scoring as this view does: its values, factors,
    /// biases, live bits and int8 tier. Its rows are numbered from 0, so a caller adds
    /// `range.start` to the hits. A device keeps its copy of the share apart from the
    /// whole ([`Origin::Part`]). `range.start` is a multiple of 32 (a whole word of live
    /// bits) and `range.end` at most [`rows`](Self::rows).
    pub(crate) fn rows_range(self, range: Range<usize>) -> Self {
        assert!(
            range.start.is_multiple_of(32) && range.start <= range.end && range.end <= self.rows,
            "row range {range:?} of {} rows",
            self.rows
        );
        let (start, end, d) = (range.start, range.end, self.cols);
        let elements = match self.elements {
            Elements::F32(data) => Elements::F32(&data[start * d..end * d]),
            Elements::Half {
                bits,
                half,
                decoded,
                whole,
                first,
            } => Elements::Half {
                bits: &bits[start * d..end * d],
                half,
                decoded,
                whole,
                first: first + start,
            },
        };
        Self {
            elements,
            rows: end - start,
            cols: d,
            inv_norms: &self.inv_norms[range.clone()],
            cosine_inv_norms: &self.cosine_inv_norms[range.clone()],
            bias: self.bias.map(|b| &b[range.clone()]),
            metric: self.metric,
            cache: None,
            live: self.live.map(|l| &l[start / 32..end.div_ceil(32)]),
            origin: self.origin.rows_after(start),
            int8: self.int8.map(|t| t.rows_range(range)),
        }
    }

    /// This view with `tier` as its int8 scan tier (one entry per row).
    pub(crate) fn with_int8_tier(mut self, tier: Option<TierRef<'a>>) -> Self {
        debug_assert!(tier.is_none_or(|t| t.rows() == self.rows));
        self.int8 = tier;
        self
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
        self.rows
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.cols
    }

    /// How the rows are stored.
    pub fn element_type(&self) -> ElementType {
        match self.elements {
            Elements::F32(_) => ElementType::F32,
            Elements::Half { half, .. } => half.element(),
        }
    }

    /// A 16-bit view's stored rows (row-major) and their format; `None` for f32.
    pub(crate) fn half_bits(&self) -> Option<(Half, &'a [u16])> {
        match self.elements {
            Elements::F32(_) => None,
            Elements::Half { bits, half, .. } => Some((half, bits)),
        }
    }

    /// The vectors as f32. A 16-bit corpus widens all its rows on the first call and
    /// keeps them with the corpus (on all cores); the backends read the stored rows
    /// instead.
    pub fn matrix(&self) -> MatrixRef<'a> {
        let data = match self.elements {
            Elements::F32(data) => data,
            Elements::Half {
                half,
                decoded,
                whole,
                first,
                ..
            } => {
                let all = decoded.get_or_init(|| {
                    let mut out = vec![0.0f32; whole.len()];
                    out.par_chunks_mut(1 << 16)
                        .zip(whole.par_chunks(1 << 16))
                        .for_each(|(o, b)| half.decode(b, o));
                    out
                });
                &all[first * self.cols..(first + self.rows) * self.cols]
            }
        };
        MatrixRef {
            data,
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// `out[q * n + r] = (row r · query q) * scale[r]` for the `n` rows `rows` of the view
    /// and every query of `queries` (row-major, `dim` values each): the streaming kernels
    /// of `level`, reading the rows as stored.
    pub(crate) fn scaled_dots(
        &self,
        level: crate::simd::SimdLevel,
        rows: Range<usize>,
        queries: &[f32],
        scale: &[f32],
        out: &mut [f32],
    ) {
        let d = self.cols;
        let span = rows.start * d..rows.end * d;
        match self.elements {
            Elements::F32(data) => {
                crate::simd::dots_rows(level, &data[span], d, queries, scale, out)
            }
            Elements::Half { bits, half, .. } => {
                crate::simd::dots_rows_half(level, half, &bits[span], d, queries, scale, out)
            }
        }
    }

    /// Asks for row `r`'s lines to be brought into the cache.
    pub(crate) fn prefetch_row(&self, r: usize) {
        let span = r * self.cols..(r + 1) * self.cols;
        match self.elements {
            Elements::F32(data) => crate::mem::prefetch(&data[span]),
            Elements::Half { bits, .. } => crate::mem::prefetch(&bits[span]),
        }
    }

    /// Appends row `r` as f32 to `out`.
    pub(crate) fn push_row_f32(&self, r: usize, out: &mut Vec<f32>) {
        let span = r * self.cols..(r + 1) * self.cols;
        match self.elements {
            Elements::F32(data) => out.extend_from_slice(&data[span]),
            Elements::Half { bits, half, .. } => {
                out.extend(bits[span].iter().map(|&b| half.to_f32(b)))
            }
        }
    }

    /// Rows `rows` as f32, row-major: the stored rows themselves for an f32 corpus, else
    /// widened into `scratch`.
    pub(crate) fn rows_f32<'s>(&self, rows: Range<usize>, scratch: &'s mut Vec<f32>) -> &'s [f32]
    where
        'a: 's,
    {
        let span = rows.start * self.cols..rows.end * self.cols;
        match self.elements {
            Elements::F32(data) => &data[span],
            Elements::Half { bits, half, .. } => {
                scratch.resize(span.len(), 0.0);
                half.decode(&bits[span], scratch);
                scratch
            }
        }
    }

    /// The factor of row `i`'s dot products: for cosine `1 / ‖row i‖`, or 0 for a zero
    /// row; 1 for the other metrics. NaN for a row masked out (deleted from a store).
    pub fn inv_norms(&self) -> &'a [f32] {
        self.inv_norms
    }
}

/// The rows of a `len`-value buffer of `dim` columns, or the error [`Corpus::new`] gives.
fn check_shape(len: usize, dim: usize) -> Result<usize> {
    if dim == 0 {
        return Err(Error::EmptyInput {
            what: "corpus has dimension 0",
        });
    }
    if len == 0 {
        return Err(Error::EmptyInput {
            what: "corpus has no rows",
        });
    }
    if !len.is_multiple_of(dim) {
        return Err(Error::InvalidShape {
            rows: len / dim,
            cols: dim,
            len,
        });
    }
    Ok(len / dim)
}

/// [`inverse_norms`] of 16-bit rows, widened one at a time.
fn half_inverse_norms(half: Half, bits: &[u16], dim: usize) -> Result<Vec<f32>> {
    let norm_of = |row: &[u16], buf: &mut Vec<f32>| {
        buf.resize(dim, 0.0);
        half.decode(row, buf);
        crate::simd::sum_squares_f64(buf).sqrt()
    };
    let mut out = vec![0.0f32; bits.len() / dim];
    out.par_chunks_mut(1024)
        .zip(bits.par_chunks(1024 * dim))
        .for_each_init(Vec::new, |buf, (dst, rows)| {
            for (inv, row) in dst.iter_mut().zip(rows.chunks_exact(dim)) {
                *inv = inverse_norm(norm_of(row, buf));
            }
        });
    if let Some(row) = out.iter().position(|v| v.is_nan()) {
        let norm = norm_of(&bits[row * dim..(row + 1) * dim], &mut Vec::new());
        return Err(Error::NormOutOfRange { row, norm });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

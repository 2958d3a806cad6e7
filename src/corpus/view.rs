//! [`CorpusView`]: the borrowed corpus every backend reads, built from a [`Corpus`] or
//! from a store's mapped rows without copying them; it carries the metric's per-row
//! factors, the live mask and the int8 tier, and widens 16-bit rows a block at a time.

use super::{next_identity, Corpus, Elements, Origin};
use crate::elem::{ElementType, Half};
use crate::matrix::MatrixRef;
use crate::metric::{Metric, RowScoring, ScoringCache};
use crate::quant::tier::TierRef;
use rayon::prelude::*;
use std::ops::Range;
use std::sync::OnceLock;

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
    pub(super) elements: Elements<'a>,
    pub(super) rows: usize,
    pub(super) cols: usize,
    /// The factor of each row's dot products: `1/‖row‖` for cosine, 1 otherwise.
    pub(super) inv_norms: &'a [f32],
    /// The inverse norms whatever the metric: what a device keeps with its copy.
    pub(super) cosine_inv_norms: &'a [f32],
    /// Added to each row's scaled dot products (L2's `−‖row‖²/2`).
    pub(super) bias: Option<&'a [f32]>,
    /// The metric `inv_norms` and `bias` score for.
    pub(super) metric: Metric,
    /// The corpus's cached factors of the other metrics, when it has them.
    pub(super) cache: Option<&'a ScoringCache>,
    pub(super) live: Option<&'a [u32]>,
    pub(super) origin: Origin,
    /// The corpus's int8 scan tier, when it has one (one entry per row of `matrix`).
    pub(super) int8: Option<TierRef<'a>>,
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

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
use crate::metric::{Metric, ScoringCache};
use crate::quant::tier::Int8Tier;
use rayon::prelude::*;
use std::sync::{Arc, OnceLock};

mod view;
pub use view::CorpusView;

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

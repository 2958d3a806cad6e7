//! Conversions between Python's arguments and the crate's types: arrays read in place,
//! metric and filter names, padded result arrays and the execution report as a dict.

use crate::errors::py_err;
use hybridvec as hv;
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// `InvalidShape` for an array whose values do not add up to `rows × cols`.
pub(crate) fn shape_error(rows: usize, cols: usize, len: usize) -> PyErr {
    py_err(hv::Error::InvalidShape { rows, cols, len })
}

/// The values of a C-contiguous 2-D array and its shape.
pub(crate) fn matrix<'a, T: numpy::Element>(
    a: &'a PyReadonlyArray2<'_, T>,
) -> PyResult<(&'a [T], usize, usize)> {
    let (rows, cols) = (a.shape()[0], a.shape()[1]);
    let values = a.as_slice().map_err(|_| {
        py_err(hv::Error::InvalidConfig(
            "the array is not C-contiguous".into(),
        ))
    })?;
    if values.len() != rows * cols {
        return Err(shape_error(rows, cols, values.len()));
    }
    Ok((values, rows, cols))
}

pub(crate) fn metric_of(name: &str) -> PyResult<hv::Metric> {
    hv::Metric::from_name(name).map_err(py_err)
}

/// A filter in the package's normal form: `("rows", uint64 array)`, `("ids", [str])`, or
/// `("per_query", [filter, ...])`.
pub(crate) fn filter_of(obj: &Bound<'_, PyAny>) -> PyResult<hv::Filter> {
    let (kind, payload): (String, Bound<'_, PyAny>) = obj.extract()?;
    match kind.as_str() {
        "rows" => {
            let rows: PyReadonlyArray1<'_, u64> = payload.extract()?;
            let rows = rows.as_array();
            rows.iter()
                .map(|&r| {
                    usize::try_from(r).map_err(|_| {
                        py_err(hv::Error::FilterOutOfRange {
                            index: usize::MAX,
                            rows: 0,
                        })
                    })
                })
                .collect::<PyResult<Vec<usize>>>()
                .map(hv::Filter::Rows)
        }
        "ids" => Ok(hv::Filter::Ids(payload.extract()?)),
        "per_query" => {
            let list: Vec<Bound<'_, PyAny>> = payload.extract()?;
            Ok(hv::Filter::PerQuery(
                list.iter().map(filter_of).collect::<PyResult<_>>()?,
            ))
        }
        other => Err(py_err(hv::Error::InvalidConfig(format!(
            "filter kind {other:?} is not rows, ids or per_query"
        )))),
    }
}

pub(crate) fn options_of(
    metric: &str,
    filter: Option<&Bound<'_, PyAny>>,
) -> PyResult<hv::SearchOptions> {
    let mut options = hv::SearchOptions::new(metric_of(metric)?);
    if let Some(f) = filter {
        options = options.with_filter(filter_of(f)?);
    }
    Ok(options)
}

/// A zeroed `Vec` of `n` values, or `InsufficientMemory` where it cannot be had.
pub(crate) fn buffer<T: Clone>(n: Option<usize>, fill: T, what: &str) -> PyResult<Vec<T>> {
    let mut v = Vec::new();
    let bytes = n.and_then(|n| n.checked_mul(std::mem::size_of::<T>()));
    match (n, bytes) {
        (Some(n), Some(_)) if v.try_reserve_exact(n).is_ok() => {
            v.resize(n, fill);
            Ok(v)
        }
        _ => Err(py_err(hv::Error::InsufficientMemory {
            what: what.to_string(),
            bytes: bytes.map_or(u64::MAX, |b| b as u64),
            available: 0,
        })),
    }
}

/// `(scores, ids)`: a `q × k` array and each query's ids.
pub(crate) type ScoredIds<'py> = (Bound<'py, PyArray2<f32>>, Vec<Vec<String>>);

/// `(scores, indices)`: `q × k` arrays, padded with NaN and -1 past each query's hits.
pub(crate) type Padded<'py> = (Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<i64>>);

pub(crate) fn padded<'py>(
    py: Python<'py>,
    hits: impl ExactSizeIterator<Item = Vec<(i64, f32)>>,
    k: usize,
) -> PyResult<Padded<'py>> {
    let q = hits.len();
    let n = q.checked_mul(k);
    let mut scores = buffer(n, f32::NAN, "the scores")?;
    let mut rows = buffer(n, -1i64, "the indices")?;
    for (i, hs) in hits.enumerate() {
        for (j, (row, score)) in hs.into_iter().take(k).enumerate() {
            scores[i * k + j] = score;
            rows[i * k + j] = row;
        }
    }
    let shape = |v| Array2::from_shape_vec((q, k), v).map_err(|_| shape_error(q, k, 0));
    Ok((
        shape(scores)?.into_pyarray(py),
        Array2::from_shape_vec((q, k), rows)
            .map_err(|_| shape_error(q, k, 0))?
            .into_pyarray(py),
    ))
}

pub(crate) fn report_dict<'py>(
    py: Python<'py>,
    r: &hv::ExecutionReport,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("backend", r.backend.as_str())?;
    d.set_item("reason", r.reason.as_str())?;
    d.set_item("chunks", r.chunks)?;
    d.set_item("corpus_passes", r.corpus_passes)?;
    d.set_item("rescored", r.rescored)?;
    d.set_item("elapsed_secs", r.elapsed.as_secs_f64())?;
    let fallbacks = PyList::empty(py);
    for f in &r.fallbacks {
        let step = PyDict::new(py);
        step.set_item("from", f.from.as_str())?;
        step.set_item("chunk_queries", f.chunk_queries)?;
        step.set_item("error", &f.error)?;
        step.set_item("action", f.action.as_str())?;
        fallbacks.append(step)?;
    }
    d.set_item("fallbacks", fallbacks)?;
    Ok(d)
}

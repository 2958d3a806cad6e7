//! `hybridvec._native`: the Rust side of the Python package.
//!
//! A thin layer: the Python package (`python/hybridvec`) checks and converts its
//! arguments (dtypes, shapes, filters) and hands this module C-contiguous arrays of the
//! exact dtype each function names, which it reads in place. Every computation releases
//! the GIL. Errors of the crate become the Python exception class of the same name, from
//! `hybridvec._errors`, carrying the message and a `details` dict.
//!
//! Nothing here panics on user input: a shape that does not add up is an `InvalidShape`
//! error, not an index out of bounds.

use hybridvec as hv;
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use parking_lot::{Mutex, RwLock};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use std::sync::Arc;

/// The Python exception for `e`: the class of `hybridvec._errors` named after its variant
/// (the base `Error` for any variant this build does not name), with `details`.
fn py_err(e: hv::Error) -> PyErr {
    Python::attach(|py| match error_object(py, &e) {
        Ok(err) => err,
        Err(err) => err,
    })
}

fn error_object(py: Python<'_>, e: &hv::Error) -> PyResult<PyErr> {
    use hv::Error as E;
    let details = PyDict::new(py);
    let name = match e {
        E::DimensionMismatch { expected, got } => {
            details.set_item("expected", expected)?;
            details.set_item("got", got)?;
            "DimensionMismatch"
        }
        E::InvalidShape { rows, cols, len } => {
            details.set_item("rows", rows)?;
            details.set_item("cols", cols)?;
            details.set_item("len", len)?;
            "InvalidShape"
        }
        E::EmptyInput { what } => {
            details.set_item("what", what)?;
            "EmptyInput"
        }
        E::InvalidK { k, rows } => {
            details.set_item("k", k)?;
            details.set_item("rows", rows)?;
            "InvalidK"
        }
        E::NonFinite { row, col } => {
            details.set_item("row", row)?;
            details.set_item("col", col)?;
            "NonFinite"
        }
        E::NotRepresentable { row, col, .. } => {
            details.set_item("row", row)?;
            details.set_item("col", col)?;
            "NotRepresentable"
        }
        E::NormOutOfRange { row, norm } => {
            details.set_item("row", row)?;
            details.set_item("norm", norm)?;
            "NormOutOfRange"
        }
        E::CudaUnavailable { .. } => "CudaUnavailable",
        E::DeviceOutOfMemory { requested, .. } => {
            details.set_item("requested", requested)?;
            "DeviceOutOfMemory"
        }
        E::BackendFailed { .. } => "BackendFailed",
        E::ChunkResultMismatch {
            chunk,
            expected,
            got,
        } => {
            details.set_item("chunk", chunk)?;
            details.set_item("expected", expected)?;
            details.set_item("got", got)?;
            "ChunkResultMismatch"
        }
        E::BadInputFile { path, .. } => {
            details.set_item("path", path.display().to_string())?;
            "BadInputFile"
        }
        E::CorruptStore { file, offset, .. } => {
            details.set_item("file", file.display().to_string())?;
            details.set_item("offset", offset)?;
            "CorruptStore"
        }
        E::UnsupportedVersion { found, supported } => {
            details.set_item("found", found)?;
            details.set_item("supported", supported)?;
            "UnsupportedVersion"
        }
        E::StoreExists { dir } => {
            details.set_item("dir", dir.display().to_string())?;
            "StoreExists"
        }
        E::StoreReplaced { file } => {
            details.set_item("file", file.display().to_string())?;
            "StoreReplaced"
        }
        E::StoreLocked { dir } => {
            details.set_item("dir", dir.display().to_string())?;
            "StoreLocked"
        }
        E::StorePoisoned { .. } => "StorePoisoned",
        E::NoSuchRow { row } => {
            details.set_item("row", row)?;
            "NoSuchRow"
        }
        E::ReadOnly => "ReadOnly",
        E::InsufficientMemory {
            bytes, available, ..
        } => {
            details.set_item("bytes", bytes)?;
            details.set_item("available", available)?;
            "InsufficientMemory"
        }
        E::ScoreOutOfRange { metric, .. } => {
            details.set_item("metric", metric)?;
            "ScoreOutOfRange"
        }
        E::FilterOutOfRange { index, rows } => {
            details.set_item("index", index)?;
            details.set_item("rows", rows)?;
            "FilterOutOfRange"
        }
        E::UnknownId { id } => {
            details.set_item("id", id)?;
            "UnknownId"
        }
        E::Io(source) => {
            details.set_item("errno", source.raw_os_error())?;
            "Io"
        }
        E::FileIo { path, source } => {
            details.set_item("path", path.display().to_string())?;
            details.set_item("errno", source.raw_os_error())?;
            "FileIo"
        }
        E::InvalidConfig(_) => "InvalidConfig",
        _ => "Error",
    };
    let errors = py.import("hybridvec._errors")?;
    let class = errors.getattr(name).or_else(|_| errors.getattr("Error"))?;
    let exc = class.call1((e.to_string(),))?;
    exc.setattr("details", details)?;
    Ok(PyErr::from_value(exc))
}

/// `InvalidShape` for an array whose values do not add up to `rows × cols`.
fn shape_error(rows: usize, cols: usize, len: usize) -> PyErr {
    py_err(hv::Error::InvalidShape { rows, cols, len })
}

/// The values of a C-contiguous 2-D array and its shape.
fn matrix<'a, T: numpy::Element>(
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

fn metric_of(name: &str) -> PyResult<hv::Metric> {
    hv::Metric::from_name(name).map_err(py_err)
}

/// A filter in the package's normal form: `("rows", uint64 array)`, `("ids", [str])`, or
/// `("per_query", [filter, ...])`.
fn filter_of(obj: &Bound<'_, PyAny>) -> PyResult<hv::Filter> {
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

fn options_of(metric: &str, filter: Option<&Bound<'_, PyAny>>) -> PyResult<hv::SearchOptions> {
    let mut options = hv::SearchOptions::new(metric_of(metric)?);
    if let Some(f) = filter {
        options = options.with_filter(filter_of(f)?);
    }
    Ok(options)
}

/// A zeroed `Vec` of `n` values, or `InsufficientMemory` where it cannot be had.
fn buffer<T: Clone>(n: Option<usize>, fill: T, what: &str) -> PyResult<Vec<T>> {
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
type ScoredIds<'py> = (Bound<'py, PyArray2<f32>>, Vec<Vec<String>>);

/// `(scores, indices)`: `q × k` arrays, padded with NaN and -1 past each query's hits.
type Padded<'py> = (Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<i64>>);

fn padded<'py>(
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

fn report_dict<'py>(py: Python<'py>, r: &hv::ExecutionReport) -> PyResult<Bound<'py, PyDict>> {
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

/// A corpus: validated rows with their norms, in f32, f16 or bf16.
#[pyclass(module = "hybridvec._native", frozen)]
struct NativeCorpus {
    inner: Arc<hv::Corpus>,
}

#[pymethods]
impl NativeCorpus {
    /// From a C-contiguous float32 array (copied once).
    #[staticmethod]
    fn from_f32(
        py: Python<'_>,
        array: PyReadonlyArray2<'_, f32>,
        int8_tier: bool,
    ) -> PyResult<Self> {
        let (values, _, cols) = matrix(&array)?;
        let values = values.to_vec();
        let corpus = py
            .detach(|| {
                hv::Corpus::new(values, cols)
                    .map(|c| if int8_tier { c.with_int8_tier() } else { c })
            })
            .map_err(py_err)?;
        Ok(Self {
            inner: Arc::new(corpus),
        })
    }

    /// From the bits of f16 (`element = "f16"`) or bf16 (`"bf16"`) values, kept as they
    /// are.
    #[staticmethod]
    fn from_bits(
        py: Python<'_>,
        array: PyReadonlyArray2<'_, u16>,
        element: &str,
        int8_tier: bool,
    ) -> PyResult<Self> {
        let (values, _, cols) = matrix(&array)?;
        let values = values.to_vec();
        let corpus = py
            .detach(|| {
                match element {
                    "f16" => hv::Corpus::from_f16(
                        values.into_iter().map(hv::f16::from_bits).collect(),
                        cols,
                    ),
                    "bf16" => hv::Corpus::from_bf16(
                        values.into_iter().map(hv::bf16::from_bits).collect(),
                        cols,
                    ),
                    other => Err(hv::Error::InvalidConfig(format!(
                        "element type {other:?} is not f16 or bf16"
                    ))),
                }
                .map(|c| if int8_tier { c.with_int8_tier() } else { c })
            })
            .map_err(py_err)?;
        Ok(Self {
            inner: Arc::new(corpus),
        })
    }

    #[getter]
    fn rows(&self) -> usize {
        self.inner.rows()
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    #[getter]
    fn dtype(&self) -> &'static str {
        self.inner.element_type().name()
    }

    #[getter]
    fn int8_tier_bytes(&self) -> Option<usize> {
        self.inner.int8_tier_bytes()
    }

    /// Row `i` as f32 (widened from the stored type).
    fn row<'py>(&self, py: Python<'py>, i: usize) -> PyResult<Bound<'py, numpy::PyArray1<f32>>> {
        self.inner
            .row_f32(i)
            .map(|r| r.into_pyarray(py))
            .ok_or_else(|| py_err(hv::Error::NoSuchRow { row: i as u64 }))
    }
}

/// The executor, with the report of its last call.
#[pyclass(module = "hybridvec._native", frozen)]
struct NativeExecutor {
    inner: Arc<hv::HybridExecutor>,
    last: Mutex<Option<hv::ExecutionReport>>,
}

impl NativeExecutor {
    /// Runs `call` on the queries read in place, without the GIL, and keeps its report.
    fn run<T: Send>(
        &self,
        py: Python<'_>,
        queries: &PyReadonlyArray2<'_, f32>,
        call: impl FnOnce(&hv::HybridExecutor, hv::MatrixRef<'_>) -> hv::Result<(T, hv::ExecutionReport)>
            + Send,
    ) -> PyResult<T> {
        let (values, rows, cols) = matrix(queries)?;
        let exec = &self.inner;
        let (out, report) = py
            .detach(|| call(exec, hv::MatrixRef::new(values, rows, cols)?))
            .map_err(py_err)?;
        *self.last.lock() = Some(report);
        Ok(out)
    }
}

#[pymethods]
impl NativeExecutor {
    #[new]
    #[pyo3(signature = (device, threads))]
    fn new(py: Python<'_>, device: &str, threads: Option<usize>) -> PyResult<Self> {
        let policy = match device {
            "auto" => hv::DevicePolicy::Auto,
            "cpu" => hv::DevicePolicy::Cpu,
            "cuda" => hv::DevicePolicy::Cuda,
            other => {
                return Err(py_err(hv::Error::InvalidConfig(format!(
                    "device {other:?} is not auto, cpu or cuda"
                ))))
            }
        };
        if threads == Some(0) {
            return Err(py_err(hv::Error::InvalidConfig(
                "threads must be at least 1 (or None for one per core)".into(),
            )));
        }
        let mut config = hv::ExecutorConfig {
            device: policy,
            ..Default::default()
        };
        config.cpu.threads = threads;
        let exec = py
            .detach(|| hv::HybridExecutor::new(config))
            .map_err(py_err)?;
        Ok(Self {
            inner: Arc::new(exec),
            last: Mutex::new(None),
        })
    }

    /// `(scores, indices)` of the `k` best rows per query.
    #[pyo3(signature = (queries, corpus, k, metric, filter=None))]
    fn search<'py>(
        &self,
        py: Python<'py>,
        queries: PyReadonlyArray2<'py, f32>,
        corpus: &NativeCorpus,
        k: usize,
        metric: &str,
        filter: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Padded<'py>> {
        let options = options_of(metric, filter)?;
        let corpus = &corpus.inner;
        let hits = self.run(py, &queries, |exec, q| {
            exec.search_with_report(q, corpus.as_ref(), k, &options)
        })?;
        padded(
            py,
            hits.into_iter()
                .map(|hs| hs.into_iter().map(|h| (h.index as i64, h.score)).collect()),
            k,
        )
    }

    /// The `Q × N` score matrix.
    fn scores<'py>(
        &self,
        py: Python<'py>,
        queries: PyReadonlyArray2<'py, f32>,
        corpus: &NativeCorpus,
        metric: &str,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let metric = metric_of(metric)?;
        let corpus = &corpus.inner;
        let scores = self.run(py, &queries, |exec, q| {
            exec.similarity_with_report(q, corpus.as_ref(), metric)
        })?;
        let (q, n) = (scores.rows(), scores.cols());
        Array2::from_shape_vec((q, n), scores.into_vec())
            .map_err(|_| shape_error(q, n, 0))
            .map(|a| a.into_pyarray(py))
    }

    /// One shard's search: `(rows, scores, keys)`, `q × k`, rows numbered from
    /// `first_row` (padding: -1, NaN, NaN).
    #[pyo3(signature = (queries, corpus, k, metric, first_row, filter=None))]
    #[allow(clippy::too_many_arguments)]
    fn search_shard<'py>(
        &self,
        py: Python<'py>,
        queries: PyReadonlyArray2<'py, f32>,
        corpus: &NativeCorpus,
        k: usize,
        metric: &str,
        first_row: u64,
        filter: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let options = options_of(metric, filter)?;
        let corpus = &corpus.inner;
        let hits = self.run(py, &queries, |exec, q| {
            exec.search_shard_with_report(q, corpus.as_ref(), k, &options, first_row)
        })?;
        shard_arrays(py, &hits, k, None)
    }

    /// One store shard's search: `(rows, scores, keys, ids)`; `ids` is a list per query.
    #[pyo3(signature = (queries, store, k, metric, first_row, filter=None))]
    #[allow(clippy::too_many_arguments)]
    fn search_store_shard<'py>(
        &self,
        py: Python<'py>,
        queries: PyReadonlyArray2<'py, f32>,
        store: &NativeStore,
        k: usize,
        metric: &str,
        first_row: u64,
        filter: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let options = options_of(metric, filter)?;
        let store = store.handle()?;
        let (hits, ids) = self.run(py, &queries, |exec, q| {
            let (hits, report) =
                exec.search_store_shard_with_report(q, &store, k, &options, first_row)?;
            let ids = hits
                .iter()
                .map(|hs| hs.iter().map(|h| store.id_of(h.row - first_row)).collect())
                .collect::<hv::Result<Vec<Vec<String>>>>()?;
            Ok(((hits, ids), report))
        })?;
        shard_arrays(py, &hits, k, Some(ids))
    }

    /// Top-k over a store's visible rows: `(scores, ids)`, ids a list per query.
    #[pyo3(signature = (queries, store, k, metric, filter=None))]
    fn search_store<'py>(
        &self,
        py: Python<'py>,
        queries: PyReadonlyArray2<'py, f32>,
        store: &NativeStore,
        k: usize,
        metric: &str,
        filter: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<ScoredIds<'py>> {
        let options = options_of(metric, filter)?;
        let store = store.handle()?;
        let hits = self.run(py, &queries, |exec, q| {
            exec.search_store_with_report(q, &store, k, &options)
        })?;
        let ids = hits
            .iter()
            .map(|hs| hs.iter().map(|h| h.id.clone()).collect())
            .collect();
        let (scores, _) = padded(
            py,
            hits.into_iter()
                .map(|hs| hs.into_iter().map(|h| (h.row as i64, h.score)).collect()),
            k,
        )?;
        Ok((scores, ids))
    }

    /// The report of the last call on this executor (from any thread), or `None`.
    fn last_report<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.last
            .lock()
            .as_ref()
            .map(|r| report_dict(py, r))
            .transpose()
    }

    /// What this executor runs on.
    fn capabilities<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.inner.capabilities();
        let d = PyDict::new(py);
        d.set_item("cpu_model", c.cpu_model)?;
        d.set_item("simd", format!("{:?}", c.simd).to_lowercase())?;
        d.set_item("threads", c.threads)?;
        d.set_item("cuda", format!("{:?}", c.cuda))?;
        d.set_item("accelerator", c.accelerator)?;
        Ok(d)
    }

    /// The tracker's measurements as JSON, for `import_tracker` elsewhere.
    fn export_tracker(&self, device: &str) -> String {
        self.inner.tracker().export(device)
    }

    /// Loads measurements exported by `export_tracker`; returns how many it took.
    fn import_tracker(&self, json: &str, device: &str) -> PyResult<usize> {
        self.inner.tracker().import(json, device).map_err(py_err)
    }
}

/// `(rows, scores, keys[, ids])` of a shard's hits, `q × k`, padded.
fn shard_arrays<'py>(
    py: Python<'py>,
    hits: &[Vec<hv::ShardHit>],
    k: usize,
    ids: Option<Vec<Vec<String>>>,
) -> PyResult<Bound<'py, PyTuple>> {
    let q = hits.len();
    let n = q.checked_mul(k);
    let mut rows = buffer(n, -1i64, "the rows")?;
    let mut scores = buffer(n, f32::NAN, "the scores")?;
    let mut keys = buffer(n, f64::NAN, "the keys")?;
    for (i, hs) in hits.iter().enumerate() {
        for (j, h) in hs.iter().take(k).enumerate() {
            rows[i * k + j] = i64::try_from(h.row).map_err(|_| {
                py_err(hv::Error::InvalidConfig(format!(
                    "row {} does not fit int64",
                    h.row
                )))
            })?;
            scores[i * k + j] = h.score;
            keys[i * k + j] = h.key;
        }
    }
    let rows = Array2::from_shape_vec((q, k), rows).map_err(|_| shape_error(q, k, 0))?;
    let scores = Array2::from_shape_vec((q, k), scores).map_err(|_| shape_error(q, k, 0))?;
    let keys = Array2::from_shape_vec((q, k), keys).map_err(|_| shape_error(q, k, 0))?;
    let mut items: Vec<Bound<'py, PyAny>> = vec![
        rows.into_pyarray(py).into_any(),
        scores.into_pyarray(py).into_any(),
        keys.into_pyarray(py).into_any(),
    ];
    if let Some(ids) = ids {
        items.push(ids.into_pyobject(py)?.into_any());
    }
    PyTuple::new(py, items)
}

/// The global top-k of shards' answers: `parts` is a list of `(rows, scores, keys)`
/// (`q × k_s` each, padding rows -1). Returns `(scores, rows)`, `q × k`, padded.
#[pyfunction]
fn merge<'py>(
    py: Python<'py>,
    metric: &str,
    k: usize,
    parts: Vec<(
        PyReadonlyArray2<'py, i64>,
        PyReadonlyArray2<'py, f32>,
        PyReadonlyArray2<'py, f64>,
    )>,
) -> PyResult<Padded<'py>> {
    let metric = metric_of(metric)?;
    let mut shards = Vec::with_capacity(parts.len());
    for (s, (rows, scores, keys)) in parts.iter().enumerate() {
        let (r, q, width) = matrix(rows)?;
        let (sc, q2, w2) = matrix(scores)?;
        let (ke, q3, w3) = matrix(keys)?;
        if (q2, w2) != (q, width) || (q3, w3) != (q, width) {
            return Err(py_err(hv::Error::InvalidConfig(format!(
                "shard {s}: rows, scores and keys differ in shape"
            ))));
        }
        let mut lists = Vec::with_capacity(q);
        for i in 0..q {
            let mut list = Vec::new();
            for j in 0..width {
                let at = i * width + j;
                if r[at] < 0 {
                    continue;
                }
                list.push(hv::ShardHit {
                    row: r[at] as u64,
                    score: sc[at],
                    key: ke[at],
                });
            }
            lists.push(list);
        }
        shards.push(lists);
    }
    let merged = py
        .detach(|| hv::merge_top_k(metric, k, &shards))
        .map_err(py_err)?;
    padded(
        py,
        merged
            .into_iter()
            .map(|hs| hs.into_iter().map(|h| (h.row as i64, h.score)).collect()),
        k,
    )
}

/// A warm store; closed (its lock released) by `close`.
#[pyclass(module = "hybridvec._native", frozen)]
struct NativeStore {
    inner: RwLock<Option<Arc<hv::WarmStore>>>,
}

impl NativeStore {
    fn handle(&self) -> PyResult<Arc<hv::WarmStore>> {
        self.inner
            .read()
            .clone()
            .ok_or_else(|| py_err(hv::Error::InvalidConfig("the store is closed".into())))
    }

    fn wrap(store: hv::WarmStore) -> Self {
        Self {
            inner: RwLock::new(Some(Arc::new(store))),
        }
    }
}

#[pymethods]
impl NativeStore {
    #[staticmethod]
    fn create(
        py: Python<'_>,
        path: std::path::PathBuf,
        dim: usize,
        dtype: &str,
        int8_tier: bool,
    ) -> PyResult<Self> {
        let element = hv::ElementType::from_name(dtype).ok_or_else(|| {
            py_err(hv::Error::InvalidConfig(format!(
                "dtype {dtype:?} is not f32, f16 or bf16"
            )))
        })?;
        let store = py
            .detach(|| {
                let mut s =
                    hv::WarmStore::create_with_element(&path, hv::StoreConfig::new(dim), element)?;
                if int8_tier {
                    s.build_int8_tier()?;
                }
                Ok(s)
            })
            .map_err(py_err)?;
        Ok(Self::wrap(store))
    }

    #[staticmethod]
    fn open(py: Python<'_>, path: std::path::PathBuf, read_only: bool) -> PyResult<Self> {
        let store = py
            .detach(|| {
                if read_only {
                    hv::WarmStore::open_read_only(&path)
                } else {
                    hv::WarmStore::open(&path)
                }
            })
            .map_err(py_err)?;
        Ok(Self::wrap(store))
    }

    /// Puts `ids[i]` → row `i` of `array` (with `contents[i]`), in order. Every row is
    /// checked before the first is written.
    #[pyo3(signature = (ids, array, contents=None))]
    fn put_batch(
        &self,
        py: Python<'_>,
        ids: Vec<String>,
        array: PyReadonlyArray2<'_, f32>,
        contents: Option<Vec<Vec<u8>>>,
    ) -> PyResult<usize> {
        let store = self.handle()?;
        let (values, rows, cols) = matrix(&array)?;
        if ids.len() != rows {
            return Err(py_err(hv::Error::InvalidConfig(format!(
                "{} ids for {rows} rows",
                ids.len()
            ))));
        }
        if contents.as_ref().is_some_and(|c| c.len() != rows) {
            return Err(py_err(hv::Error::InvalidConfig(format!(
                "{} contents for {rows} rows",
                contents.as_ref().map_or(0, Vec::len)
            ))));
        }
        py.detach(|| {
            if cols != store.dim() {
                return Err(hv::Error::DimensionMismatch {
                    expected: store.dim(),
                    got: cols,
                });
            }
            hv::MatrixRef::new(values, rows, cols)?.check_finite()?;
            for (i, id) in ids.iter().enumerate() {
                let content = contents.as_ref().map_or(&[][..], |c| &c[i][..]);
                store.put(id, &values[i * cols..(i + 1) * cols], content)?;
            }
            Ok(rows)
        })
        .map_err(py_err)
    }

    /// `(row, embedding, content)` of `id`'s latest record, or `None`.
    fn get<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let store = self.handle()?;
        let record = py.detach(|| store.get(id)).map_err(py_err)?;
        record
            .map(|r| {
                PyTuple::new(
                    py,
                    [
                        r.row.into_pyobject(py)?.into_any(),
                        r.embedding.into_pyarray(py).into_any(),
                        PyBytes::new(py, &r.content).into_any(),
                    ],
                )
            })
            .transpose()
    }

    fn delete(&self, py: Python<'_>, id: &str) -> PyResult<bool> {
        let store = self.handle()?;
        py.detach(|| store.delete(id)).map_err(py_err)
    }

    fn flush(&self, py: Python<'_>) -> PyResult<u64> {
        let store = self.handle()?;
        py.detach(|| store.flush()).map_err(py_err)
    }

    fn contains(&self, id: &str) -> PyResult<bool> {
        Ok(self.handle()?.row_of(id).is_some())
    }

    fn build_int8_tier(&self, py: Python<'_>) -> PyResult<()> {
        let mut guard = self.inner.write();
        let Some(arc) = guard.as_mut() else {
            return Err(py_err(hv::Error::InvalidConfig(
                "the store is closed".into(),
            )));
        };
        let Some(store) = Arc::get_mut(arc) else {
            return Err(py_err(hv::Error::InvalidConfig(
                "the store is in use by another call; build the tier when it is idle".into(),
            )));
        };
        py.detach(|| store.build_int8_tier()).map_err(py_err)
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.handle()?.len() as usize)
    }

    #[getter]
    fn dim(&self) -> PyResult<usize> {
        Ok(self.handle()?.dim())
    }

    #[getter]
    fn dtype(&self) -> PyResult<&'static str> {
        Ok(self.handle()?.element_type().name())
    }

    #[getter]
    fn rows(&self) -> PyResult<usize> {
        Ok(self.handle()?.corpus().rows())
    }

    #[getter]
    fn has_int8_tier(&self) -> PyResult<bool> {
        Ok(self.handle()?.has_int8_tier())
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.handle()?.stats();
        let d = PyDict::new(py);
        d.set_item("records", s.records)?;
        d.set_item("visible_rows", s.visible_rows)?;
        d.set_item("reserved_rows", s.reserved_rows)?;
        d.set_item("durable_rows", s.durable_rows)?;
        d.set_item("vector_bytes", s.vector_bytes)?;
        d.set_item("content_bytes", s.content_bytes)?;
        d.set_item("capacity_rows", s.capacity_rows)?;
        Ok(d)
    }

    /// Drops this handle's store (and its writer lock, once no call holds it).
    fn close(&self) {
        self.inner.write().take();
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.read().is_none()
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeCorpus>()?;
    m.add_class::<NativeExecutor>()?;
    m.add_class::<NativeStore>()?;
    m.add_function(wrap_pyfunction!(merge, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

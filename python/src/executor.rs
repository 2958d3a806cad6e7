//! `NativeExecutor`: the hybrid executor (search, scores, shards, stores), and `merge` of
//! shard results.

use crate::convert::{
    buffer, matrix, metric_of, options_of, padded, report_dict, shape_error, Padded, ScoredIds,
};
use crate::corpus::NativeCorpus;
use crate::errors::py_err;
use crate::store::NativeStore;
use hybridvec as hv;
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray2};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::sync::Arc;

/// The executor, with the report of its last call.
#[pyclass(module = "hybridvec._native", frozen)]
pub(crate) struct NativeExecutor {
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
pub(crate) fn shard_arrays<'py>(
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
pub(crate) fn merge<'py>(
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

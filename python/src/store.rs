//! `NativeStore`: a warm store, opened or created, written and read from Python.

use crate::convert::matrix;
use crate::errors::py_err;
use hybridvec as hv;
use numpy::{IntoPyArray, PyReadonlyArray2};
use parking_lot::RwLock;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};
use std::sync::Arc;

/// A warm store; closed (its lock released) by `close`.
#[pyclass(module = "hybridvec._native", frozen)]
pub(crate) struct NativeStore {
    inner: RwLock<Option<Arc<hv::WarmStore>>>,
}

impl NativeStore {
    pub(crate) fn handle(&self) -> PyResult<Arc<hv::WarmStore>> {
        self.inner
            .read()
            .clone()
            .ok_or_else(|| py_err(hv::Error::InvalidConfig("the store is closed".into())))
    }

    pub(crate) fn wrap(store: hv::WarmStore) -> Self {
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

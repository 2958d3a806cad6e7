//! `NativeCorpus`: validated rows with their norms (f32, f16 or bf16), and its int8 tier.

use crate::convert::matrix;
use crate::errors::py_err;
use hybridvec as hv;
use numpy::{IntoPyArray, PyReadonlyArray2};
use pyo3::prelude::*;
use std::sync::Arc;

/// A corpus: validated rows with their norms, in f32, f16 or bf16.
#[pyclass(module = "hybridvec._native", frozen)]
pub(crate) struct NativeCorpus {
    pub(crate) inner: Arc<hv::Corpus>,
}

impl NativeCorpus {
    /// The corpus `make` builds without the GIL, with its int8 tier when asked.
    fn build(
        py: Python<'_>,
        int8_tier: bool,
        make: impl FnOnce() -> hv::Result<hv::Corpus> + Send,
    ) -> PyResult<Self> {
        let corpus = py
            .detach(|| make().map(|c| if int8_tier { c.with_int8_tier() } else { c }))
            .map_err(py_err)?;
        Ok(Self {
            inner: Arc::new(corpus),
        })
    }
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
        Self::build(py, int8_tier, || hv::Corpus::new(values, cols))
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
        Self::build(py, int8_tier, || match element {
            "f16" => {
                hv::Corpus::from_f16(values.into_iter().map(hv::f16::from_bits).collect(), cols)
            }
            "bf16" => {
                hv::Corpus::from_bf16(values.into_iter().map(hv::bf16::from_bits).collect(), cols)
            }
            other => Err(hv::Error::InvalidConfig(format!(
                "element type {other:?} is not f16 or bf16"
            ))),
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

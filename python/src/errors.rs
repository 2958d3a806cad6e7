//! The crate's errors as Python exceptions: the class of `hybridvec._errors` named after
//! each variant, with the message and a `details` dict.

use hybridvec as hv;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The Python exception for `e`: the class of `hybridvec._errors` named after its variant
/// (the base `Error` for any variant this build does not name), with `details`.
pub(crate) fn py_err(e: hv::Error) -> PyErr {
    Python::attach(|py| match error_object(py, &e) {
        Ok(err) => err,
        Err(err) => err,
    })
}

pub(crate) fn error_object(py: Python<'_>, e: &hv::Error) -> PyResult<PyErr> {
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

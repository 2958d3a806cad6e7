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

mod convert;
mod corpus;
mod errors;
mod executor;
mod store;

use corpus::NativeCorpus;
use executor::{merge, NativeExecutor};
use pyo3::prelude::*;
use store::NativeStore;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeCorpus>()?;
    m.add_class::<NativeExecutor>()?;
    m.add_class::<NativeStore>()?;
    m.add_function(wrap_pyfunction!(merge, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

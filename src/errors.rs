//! Errors shared by every part of the extension.
//!
//! A Rust panic that reaches a `#[pymethods]` boundary is turned into
//! `pyo3_runtime.PanicException` by PyO3; rustasync exports that class as
//! `rustasync.RustPanic` so user code can catch it by one name. Panics that
//! happen elsewhere (in a tokio task, in a loop callback) are converted with
//! [`panic_to_pyerr`] so they surface as the same class.

use pyo3::panic::PanicException;
use pyo3::prelude::*;

pub use rustasync_bridge::panic_to_pyerr;

/// Register the exception classes on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("RustPanic", m.py().get_type::<PanicException>())?;
    Ok(())
}

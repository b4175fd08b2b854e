//! Errors shared by every part of the extension.
//!
//! A Rust panic that reaches a `#[pymethods]` boundary is turned into
//! `pyo3_runtime.PanicException` by PyO3; rustasync exports that class as
//! `rustasync.RustPanic` so user code can catch it by one name. Panics that
//! happen elsewhere (in a tokio task, in a loop callback) are converted with
//! [`panic_to_pyerr`] so they surface as the same class.

use pyo3::panic::PanicException;
use pyo3::prelude::*;
use std::any::Any;

/// Turn a panic payload caught with `catch_unwind` into a `RustPanic` error.
pub fn panic_to_pyerr(payload: Box<dyn Any + Send + 'static>) -> PyErr {
    let msg = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Rust panic with a non-string payload".to_owned()
    };
    PanicException::new_err(msg)
}

/// Register the exception classes on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("RustPanic", m.py().get_type::<PanicException>())?;
    Ok(())
}

//! Panics as Python exceptions.
//!
//! A Rust panic that reaches a `#[pyfunction]`/`#[pymethods]` boundary is
//! turned into `pyo3_runtime.PanicException` by PyO3. Panics that happen
//! elsewhere (in a tokio task, in a loop callback, in an awaitable's step)
//! are caught by this crate and converted with [`panic_to_pyerr`], so user
//! code catches every Rust panic by one class.

use pyo3::panic::PanicException;
use pyo3::prelude::*;
use std::any::Any;

/// Turn a panic payload caught with `catch_unwind` into a `PanicException`
/// carrying the panic message.
///
/// ```
/// let payload = std::panic::catch_unwind(|| panic!("boom")).unwrap_err();
/// let err = rustasync_bridge::panic_to_pyerr(payload);
/// # let _ = err;
/// ```
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

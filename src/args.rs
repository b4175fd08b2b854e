//! Reading arguments the way asyncio reads them, with errors that name the
//! argument.

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyIterator};

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

/// An integer argument, read as `operator.index` reads it (an int, a bool
/// or an object with `__index__`), saturated to the `i64` range: an int
/// beyond 64 bits becomes `i64::MIN` or `i64::MAX`.
///
/// Raises TypeError naming `name` for anything that is not an integer.
pub fn index(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<i64> {
    index_exact(obj, name).map(|n| n.unwrap_or_else(|neg| if neg { i64::MIN } else { i64::MAX }))
}

/// Like [`index`], but an int beyond the `i64` range is `Err(negative)`.
pub fn index_exact(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Result<i64, bool>> {
    let py = obj.py();
    // SAFETY: PyNumber_Index returns a new reference, or NULL with an
    // exception set.
    let int = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyNumber_Index(obj.as_ptr())) }
        .map_err(|e| {
            if e.is_instance_of::<PyTypeError>(py) {
                PyTypeError::new_err(format!("{name} must be an int, not {}", type_name(obj)))
            } else {
                e
            }
        })?;
    let int = int.cast_into::<PyInt>()?;
    match int.extract::<i64>() {
        Ok(n) => Ok(Ok(n)),
        Err(_) => Ok(Err(int.lt(0)?)),
    }
}

/// An iterator over an iterable argument. An object that is not iterable
/// raises TypeError naming `name`; an error raised by its own `__iter__`
/// passes through unchanged.
pub fn iterate<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Bound<'py, PyIterator>> {
    obj.try_iter().map_err(|e| {
        let py = obj.py();
        let ty = obj.get_type();
        let iterable =
            ty.hasattr("__iter__").unwrap_or(true) || ty.hasattr("__getitem__").unwrap_or(true);
        if e.is_instance_of::<PyTypeError>(py) && !iterable {
            PyTypeError::new_err(format!("{name} must be iterable, not {}", type_name(obj)))
        } else {
            e
        }
    })
}

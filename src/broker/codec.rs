//! Items on the wire: `bytes` as they are, or Python objects through
//! pickle or JSON. Encoding and decoding run on the caller's thread, with
//! the interpreter attached.

use bytes::Bytes;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Raw,
    Pickle,
    Json,
}

impl Codec {
    pub fn parse(name: Option<&str>) -> PyResult<Codec> {
        match name {
            None => Ok(Codec::Raw),
            Some("pickle") => Ok(Codec::Pickle),
            Some("json") => Ok(Codec::Json),
            Some(other) => Err(PyValueError::new_err(format!(
                "codec must be None, 'pickle' or 'json', not {other:?}"
            ))),
        }
    }

    pub fn name(self) -> Option<&'static str> {
        match self {
            Codec::Raw => None,
            Codec::Pickle => Some("pickle"),
            Codec::Json => Some("json"),
        }
    }

    pub fn encode(self, item: &Bound<'_, PyAny>) -> PyResult<Bytes> {
        let py = item.py();
        match self {
            Codec::Raw => {
                if let Ok(b) = item.cast::<PyBytes>() {
                    Ok(Bytes::copy_from_slice(b.as_bytes()))
                } else if let Ok(b) = item.cast::<PyByteArray>() {
                    Ok(Bytes::from(b.to_vec()))
                } else {
                    Err(PyTypeError::new_err(format!(
                        "NatsChannel items are bytes (or pass codec='pickle' or 'json'), not {}",
                        item.get_type().name()?
                    )))
                }
            }
            Codec::Pickle => {
                static DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
                let out = DUMPS.import(py, "pickle", "dumps")?.call1((item, 5))?;
                Ok(Bytes::copy_from_slice(out.cast::<PyBytes>()?.as_bytes()))
            }
            Codec::Json => {
                static DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
                let out = DUMPS.import(py, "json", "dumps")?.call1((item,))?;
                Ok(Bytes::copy_from_slice(
                    out.cast::<pyo3::types::PyString>()?.to_str()?.as_bytes(),
                ))
            }
        }
    }

    pub fn decode<'py>(self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let raw = PyBytes::new(py, data);
        match self {
            Codec::Raw => Ok(raw.into_any()),
            Codec::Pickle => {
                static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
                LOADS.import(py, "pickle", "loads")?.call1((raw,))
            }
            Codec::Json => {
                static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
                LOADS.import(py, "json", "loads")?.call1((raw,))
            }
        }
    }
}

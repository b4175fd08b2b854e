//! `NatsChannel.send_many()`'s awaitable: the bridge's future for the
//! publish, plus how many items JetStream has acknowledged so far.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

/// Awaitable returned by `NatsChannel.send_many()`; resolves to the number
/// of items sent (all of them).
///
/// Cancel safety: `sent` tells how many items (a prefix) JetStream had
/// acknowledged when the send stopped, whether it completed, failed or
/// was cancelled; the item after them may be stored too. As on the
/// exceptions of a failed `send_many`, which carry the same count as their
/// `sent` attribute.
#[pyclass(frozen, module = "rustasync._rustasync", name = "NatsSendManyOp")]
pub struct NatsSendManyOp {
    /// The bridge's future; None once cleared by the garbage collector.
    inner: Mutex<Option<Py<PyAny>>>,
    sent: Arc<AtomicUsize>,
}

impl NatsSendManyOp {
    pub fn new(inner: Py<PyAny>, sent: Arc<AtomicUsize>) -> Self {
        NatsSendManyOp {
            inner: Mutex::new(Some(inner)),
            sent,
        }
    }

    /// The inner future, taken out of the lock before any Python runs.
    fn inner<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|f| f.clone_ref(py));
        inner
            .map(|f| f.into_bound(py))
            .ok_or_else(|| PyRuntimeError::new_err("the send was cleared"))
    }
}

#[pymethods]
impl NatsSendManyOp {
    /// How many items (a prefix) JetStream has acknowledged.
    #[getter]
    fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.inner(py)?.call_method0("__next__")
    }

    #[pyo3(signature = (value, /))]
    fn send<'py>(&self, py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.inner(py)?.call_method1("send", (value,))
    }

    #[pyo3(signature = (typ, val = None, tb = None, /))]
    fn throw<'py>(
        &self,
        py: Python<'py>,
        typ: &Bound<'py, PyAny>,
        val: Option<&Bound<'py, PyAny>>,
        tb: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.inner(py)?.call_method1("throw", (typ, val, tb))
    }

    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.inner(py)?.call_method0("close")
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(inner) = self.inner.try_lock() {
            if let Some(f) = inner.as_ref() {
                visit.call(f)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(inner);
    }
}

//! `NatsChannel.send_many()`'s awaitable: the bridge's future for the
//! publish, plus how many items JetStream has acknowledged so far.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use super::link::Progress;

/// Awaitable returned by `NatsChannel.send_many()`; resolves to the number
/// of items sent (all of them).
///
/// Cancel safety: once the send has stopped (completed, failed or
/// cancelled), `sent` items (a prefix) are stored, and none beyond the
/// first `published`: up to `max_inflight` items after the first `sent`
/// were on their way, and any of them may be stored too. `sent` is the
/// count the exceptions of a failed `send_many` carry as their `sent`
/// attribute. Both may still grow for a moment after a cancellation,
/// until the send has stopped.
#[pyclass(frozen, module = "rustasync._rustasync", name = "NatsSendManyOp")]
pub struct NatsSendManyOp {
    /// The bridge's future; None once cleared by the garbage collector.
    inner: Mutex<Option<Py<PyAny>>>,
    progress: Arc<Progress>,
}

impl NatsSendManyOp {
    pub fn new(inner: Py<PyAny>, progress: Arc<Progress>) -> Self {
        NatsSendManyOp {
            inner: Mutex::new(Some(inner)),
            progress,
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
    /// How many items (a prefix) JetStream has acknowledged: stored.
    #[getter]
    fn sent(&self) -> usize {
        self.progress.sent.load(Ordering::Relaxed)
    }

    /// How many items (a prefix) were handed to the client for the server:
    /// none after them can be stored.
    #[getter]
    fn published(&self) -> usize {
        self.progress.published.load(Ordering::Relaxed)
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

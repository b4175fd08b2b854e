//! The coroutine a task awaited from Rust runs: the caller's coroutine,
//! seen through a thin wrapper that hands its return value to Rust.
//!
//! A done callback costs the loop a second handle per task (`call_soon`
//! when the task finishes, then the callback and `task.result()`). For a
//! native coroutine the task runs a [`TaskCoro`] instead: every `send`,
//! `throw` and `close` goes straight to the coroutine, and the value it
//! returns resolves the Rust future from inside the task's last step.
//!
//! Anything else the coroutine ends with (an exception, a cancellation)
//! takes the done-callback path after all, registered from that last step
//! before the task finishes: the Rust future then gets exactly what
//! `task.result()` raises (the `CancelledError` the task was cancelled
//! with, message included), and the task's exception counts as retrieved,
//! as before.
//!
//! What is visible: `task.get_coro()` is the wrapper. Its other attributes
//! (`cr_frame`, `cr_code`, `__qualname__`, ...) are the coroutine's, so the
//! task's `repr`, `get_stack()` and `print_stack()` read as before.

use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyStopIteration;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::{PyTraverseError, PyVisit};

use super::{OnDone, Shared};
use crate::awaitable::{as_send, next_result, Step, Stepper};

#[pyclass(frozen, module = "rustasync_bridge", name = "TaskCoro")]
pub(super) struct TaskCoro {
    coro: Py<PyAny>,
    /// Let go once the coroutine has finished: the task keeps its
    /// coroutine for good, and an outcome (a traceback, its frames) must
    /// not stay reachable from it through Rust, out of the GC's sight.
    shared: Mutex<Option<Arc<Shared>>>,
}

impl TaskCoro {
    /// `coro` wrapped to resolve `shared` with its return value; the type
    /// is made an `asyncio`-accepted coroutine on first use.
    pub(super) fn wrap<'py>(
        py: Python<'py>,
        coro: Py<PyAny>,
        shared: &Arc<Shared>,
    ) -> PyResult<Bound<'py, TaskCoro>> {
        static READY: PyOnceLock<()> = PyOnceLock::new();
        READY.get_or_try_init(py, || -> PyResult<()> {
            crate::awaitable::patch_am_send::<TaskCoro>(py);
            py.import("collections.abc")?
                .getattr("Coroutine")?
                .call_method1("register", (py.get_type::<TaskCoro>(),))?;
            Ok(())
        })?;
        Bound::new(
            py,
            TaskCoro {
                coro,
                shared: Mutex::new(Some(shared.clone())),
            },
        )
    }

    /// One `send(value)` into the coroutine.
    fn advance(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Step> {
        let mut out = std::ptr::null_mut();
        let status = unsafe { ffi::PyIter_Send(self.coro.as_ptr(), value.as_ptr(), &mut out) };
        match status {
            ffi::PySendResult::PYGEN_NEXT => Ok(Step::Yield(unsafe {
                Bound::from_owned_ptr(py, out).unbind()
            })),
            ffi::PySendResult::PYGEN_RETURN => {
                let v: Py<PyAny> = unsafe { Bound::from_owned_ptr(py, out).unbind() };
                self.resolve(Ok(v.clone_ref(py)));
                Ok(Step::Return(v))
            }
            _ => Err(self.failed(py, PyErr::fetch(py))),
        }
    }

    /// The coroutine raised `e` (not `StopIteration`): the task is about to
    /// finish with it. Resolve through the task's outcome, as for any
    /// other awaitable; `e` goes on to the task.
    fn failed(&self, py: Python<'_>, e: PyErr) -> PyErr {
        let Some(shared) = self.take() else {
            return e;
        };
        let on_task = current_task(py).and_then(|task| {
            let cb = Bound::new(py, OnDone(shared.clone()))?;
            task.call_method1(pyo3::intern!(py, "add_done_callback"), (cb,))
        });
        if on_task.is_err() {
            // Not run by an asyncio task: the exception itself, then.
            shared.resolve(Err(e.clone_ref(py)));
        }
        e
    }

    fn take(&self) -> Option<Arc<Shared>> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Resolve with what the coroutine returned, and let go.
    fn resolve(&self, v: PyResult<Py<PyAny>>) {
        if let Some(shared) = self.take() {
            shared.resolve(v);
        }
    }
}

fn current_task(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static CURRENT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let task = CURRENT.import(py, "asyncio", "current_task")?.call0()?;
    if task.is_none() {
        return Err(pyo3::exceptions::PyRuntimeError::new_err("no current task"));
    }
    Ok(task)
}

impl Stepper for TaskCoro {
    fn step(slf: &Bound<'_, Self>) -> PyResult<Step> {
        let py = slf.py();
        slf.get().advance(py, &py.None().into_bound(py))
    }
}

#[pymethods]
impl TaskCoro {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        next_result(slf.py(), Self::step(slf)?)
    }

    fn send(slf: &Bound<'_, Self>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        as_send(
            py,
            slf.get()
                .advance(py, value)
                .and_then(|s| next_result(py, s)),
        )
    }

    /// Thrown into the coroutine with the same arguments (the one-argument
    /// form stays one argument: the three-argument form is deprecated).
    #[pyo3(signature = (typ, val = None, tb = None))]
    fn throw(
        slf: &Bound<'_, Self>,
        typ: &Bound<'_, PyAny>,
        val: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let me = slf.get();
        let coro = me.coro.bind(py);
        let name = pyo3::intern!(py, "throw");
        let r = match (val, tb) {
            (None, None) => coro.call_method1(name, (typ,)),
            (val, None) => coro.call_method1(name, (typ, val)),
            (val, tb) => coro.call_method1(name, (typ, val, tb)),
        };
        match r {
            Ok(v) => Ok(v.unbind()),
            Err(e) if e.is_instance_of::<PyStopIteration>(py) => {
                let v = e.value(py).getattr(pyo3::intern!(py, "value"))?.unbind();
                me.resolve(Ok(v));
                Err(e)
            }
            Err(e) => Err(me.failed(py, e)),
        }
    }

    fn close(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self
            .coro
            .bind(py)
            .call_method0(pyo3::intern!(py, "close"))?
            .unbind())
    }

    /// The coroutine's attributes (`cr_frame`, `__qualname__`, ...).
    fn __getattr__(
        &self,
        py: Python<'_>,
        name: &Bound<'_, pyo3::types::PyString>,
    ) -> PyResult<Py<PyAny>> {
        Ok(self.coro.bind(py).getattr(name)?.unbind())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.coro)
    }
}

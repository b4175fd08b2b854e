//! The Python face of a gather: [`GatheringFuture`], the future-like object
//! `gather()` returns, and its finaliser.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::{intern, PyTraverseError, PyVisit};

use super::cancel;
use super::children::Child;
use super::sleeps::SleepPhase;
use super::state::{Inner, State};
#[cfg(not(Py_LIMITED_API))]
use super::trashcan;
use crate::awaitable::{self, next_result, Imports, Step, Stepper};

/// The future returned by `rustasync.gather()`.
///
/// Like asyncio's `_GatheringFuture`: `cancel()` cancels every child that is
/// not done and does not mark the future cancelled at once; the outcome comes
/// from the children. It is not an `asyncio.Future` instance
/// (`asyncio.isfuture()` is true, `isinstance(f, asyncio.Future)` false).
/// It has `result`, `exception`, `done`, `cancelled`, `cancel`,
/// `add_done_callback`, `remove_done_callback`, `get_loop`, `__await__`, and
/// the private members asyncio's own functions use on a foreign future
/// (`_asyncio_future_blocking`, `_log_traceback`, `_loop`,
/// `_cancel_message`, `_make_cancelled_error`). It has no `set_result` or
/// `set_exception`: its outcome comes from its children, as a Task's comes
/// from its coroutine. Dropped with an exception nobody retrieved, it calls
/// the loop's exception handler with asyncio's message
/// ("_GatheringFuture exception was never retrieved").
#[pyclass(frozen, module = "rustasync._rustasync", name = "GatheringFuture")]
pub struct GatheringFuture {
    pub(super) loop_: Py<PyAny>,
    pub(super) return_exceptions: bool,
    pub(super) blocking: AtomicBool,
    pub(super) inner: Mutex<Inner>,
}

impl Stepper for GatheringFuture {
    fn step(slf: &Bound<'_, Self>) -> PyResult<Step> {
        let me = slf.get();
        if me.is_done() {
            return Ok(Step::Return(me.result_of(slf.py())?));
        }
        me.blocking.store(true, Ordering::Relaxed);
        Ok(Step::Yield(slf.clone().into_any().unbind()))
    }
}

#[pymethods]
impl GatheringFuture {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        next_result(slf.py(), Self::step(slf)?)
    }

    #[getter(_asyncio_future_blocking)]
    fn asyncio_future_blocking(&self) -> bool {
        self.blocking.load(Ordering::Relaxed)
    }

    #[setter(_asyncio_future_blocking)]
    fn set_asyncio_future_blocking(&self, value: bool) {
        self.blocking.store(value, Ordering::Relaxed);
    }

    #[getter(_log_traceback)]
    fn log_traceback(&self) -> bool {
        self.inner.lock().unwrap().log_traceback
    }

    #[setter(_log_traceback)]
    fn set_log_traceback(&self, value: bool) -> PyResult<()> {
        if value {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "_log_traceback can only be set to False",
            ));
        }
        self.inner.lock().unwrap().log_traceback = false;
        Ok(())
    }

    /// Always None: like asyncio's, this future is never cancelled itself;
    /// a cancelled gather ends with a `CancelledError` exception.
    #[getter]
    fn _cancel_message(&self) -> Option<Py<PyAny>> {
        None
    }

    /// The loop the future is bound to.
    fn get_loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.loop_.clone_ref(py)
    }

    /// The loop, as asyncio's `futures._get_loop()` falls back to reading it.
    #[getter]
    fn _loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.loop_.clone_ref(py)
    }

    /// Whether the future is done (result, exception or cancelled).
    fn done(&self) -> bool {
        self.is_done()
    }

    /// Always False, as for asyncio's gathering future: cancellation ends it
    /// with a `CancelledError` exception instead.
    fn cancelled(&self) -> bool {
        false
    }

    /// The list of results; raises the exception or `CancelledError`, or
    /// `InvalidStateError` if not done.
    fn result(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.result_of(py)
    }

    /// The exception (None if it succeeded); raises if cancelled or not done.
    fn exception(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match self.outcome(py, false) {
            None => Err(awaitable::invalid_state(py, "Exception is not set.")),
            Some(Ok(_)) => Ok(None),
            Some(Err((exc, _))) => Ok(Some(exc)),
        }
    }

    /// Add a callback run with the future once it is done (scheduled with
    /// `loop.call_soon` in `context`, or a copy of the current context).
    #[pyo3(signature = (fn_, *, context=None))]
    fn add_done_callback(
        slf: &Bound<'_, Self>,
        fn_: Py<PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let ctx = match context {
            Some(c) if !c.is_none(py) => c,
            _ => Imports::get(py)?.copy_context.bind(py).call0()?.unbind(),
        };
        let done = {
            let mut inner = slf.get().inner.lock().unwrap();
            if matches!(inner.state, State::Pending) {
                inner.callbacks.push((fn_, ctx));
                return Ok(());
            }
            vec![(fn_, ctx)]
        };
        Self::schedule_callbacks(slf, done)
    }

    /// Remove every registration of `fn`; returns how many were removed.
    #[pyo3(signature = (fn_, /))]
    fn remove_done_callback(&self, fn_: &Bound<'_, PyAny>) -> PyResult<usize> {
        let py = fn_.py();
        // `==` runs Python code that may use this very future (and the
        // removed callbacks' finalisers may too): compare and drop without
        // holding the lock, which is not re-entrant.
        let snapshot: Vec<Py<PyAny>> = {
            let inner = self.inner.lock().unwrap();
            inner
                .callbacks
                .iter()
                .map(|(cb, _)| cb.clone_ref(py))
                .collect()
        };
        let mut matching = Vec::new();
        for cb in &snapshot {
            if cb.bind(py).eq(fn_)? {
                matching.push(cb.as_ptr());
            }
        }
        let removed: Vec<_> = {
            let mut inner = self.inner.lock().unwrap();
            let (gone, keep) = std::mem::take(&mut inner.callbacks)
                .into_iter()
                .partition(|(cb, _)| matching.contains(&cb.as_ptr()));
            inner.callbacks = keep;
            gone
        };
        Ok(removed.len())
    }

    /// Cancel every child that is not done. Returns True if one accepted; the
    /// future then ends with `CancelledError` once the children report.
    #[pyo3(signature = (msg=None))]
    fn cancel(slf: &Bound<'_, Self>, msg: Option<Py<PyAny>>) -> PyResult<bool> {
        cancel::cancel(slf, msg.as_ref())
    }

    /// The `CancelledError` this future raises when cancelled.
    fn _make_cancelled_error(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(awaitable::cancelled_error(py, None)?
            .into_value(py)
            .into_any())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let exc = match &self.inner.lock().unwrap().state {
            State::Pending => return Ok("<rustasync GatheringFuture pending>".into()),
            State::Result(_) => return Ok("<rustasync GatheringFuture finished>".into()),
            State::Exception { exc, .. } => exc.clone_ref(py),
        };
        let exc = exc.bind(py).repr()?;
        Ok(format!(
            "<rustasync GatheringFuture finished exception={exc}>"
        ))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        let Ok(inner) = self.inner.try_lock() else {
            return Ok(());
        };
        match &inner.state {
            State::Result(v) => visit.call(v)?,
            State::Exception { exc, tb } => {
                visit.call(exc)?;
                if let Some(tb) = tb {
                    visit.call(tb)?;
                }
            }
            State::Pending => {}
        }
        for (cb, ctx) in &inner.callbacks {
            visit.call(cb)?;
            visit.call(ctx)?;
        }
        if let Some(t) = &inner.timers {
            visit.call(t)?;
        }
        for slot in &inner.children {
            match &slot.child {
                Child::Future(f) => visit.call(f)?,
                Child::Sleep(
                    SleepPhase::Starting { value: v, .. }
                    | SleepPhase::Waiting { value: v, .. }
                    | SleepPhase::Ready(v)
                    | SleepPhase::Done(v)
                    | SleepPhase::Cancelling { msg: Some(v), .. }
                    | SleepPhase::Cancelled(Some(v)),
                ) => visit.call(v)?,
                Child::Sleep(
                    SleepPhase::Cancelling { msg: None, .. } | SleepPhase::Cancelled(None),
                ) => {}
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        // Drop outside the lock: a child's finaliser may call back in. The
        // lock is free unless the collector ran inside a locked section; then
        // nothing is cleared now (the cycle stays until a later collection).
        let taken = self.inner.try_lock().ok().map(|mut inner| {
            inner.arg_child.clear();
            inner.future_index.clear();
            inner.batches.clear();
            inner.free_batches.clear();
            inner.open = None;
            (
                std::mem::take(&mut inner.callbacks),
                std::mem::take(&mut inner.children),
                inner.link.take().and_then(|l| l.cut()),
                inner.timers.take(),
            )
        });
        drop(taken);
    }
}

impl GatheringFuture {
    /// asyncio's `Future.__del__`: a failed gather whose exception nobody
    /// retrieved reports it to the loop's exception handler.
    fn log_unretrieved(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let me = slf.get();
        let exc = {
            // A finaliser never waits: if the lock is taken, skip the report.
            let Ok(mut inner) = me.inner.try_lock() else {
                return;
            };
            if !std::mem::replace(&mut inner.log_traceback, false) {
                return;
            }
            match &inner.state {
                State::Exception { exc, .. } => exc.clone_ref(py),
                _ => return,
            }
        };
        let handler = me
            .loop_
            .bind(py)
            .getattr(intern!(py, "call_exception_handler"));
        let report = handler
            .as_ref()
            .map_err(|e| e.clone_ref(py))
            .and_then(|handler| {
                let context = PyDict::new(py);
                context.set_item(
                    intern!(py, "message"),
                    // asyncio's words, with its class name, so that logs and
                    // handlers that look for them find them.
                    "_GatheringFuture exception was never retrieved",
                )?;
                context.set_item(intern!(py, "exception"), exc)?;
                context.set_item(intern!(py, "future"), slf)?;
                handler.call1((context,))
            });
        if let Err(e) = report {
            e.write_unraisable(py, handler.ok().as_ref());
        }
    }
}

/// `tp_finalize`: run once per object, by the collector or by [`dealloc`],
/// with the current exception kept aside.
#[cfg(not(Py_LIMITED_API))]
unsafe extern "C" fn finalize(obj: *mut ffi::PyObject) {
    #[cfg(Py_3_12)]
    let saved = ffi::PyErr_GetRaisedException();
    #[cfg(not(Py_3_12))]
    let saved = {
        let (mut t, mut v, mut tb) = (
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        ffi::PyErr_Fetch(&mut t, &mut v, &mut tb);
        (t, v, tb)
    };
    let _ = std::panic::catch_unwind(|| {
        // The interpreter calls this on a thread attached to it, also while
        // it shuts down, when `Python::attach` refuses (and panics): it
        // checks that the interpreter is initialised and not finalising.
        Python::attach_unchecked(|py| {
            let slf = pyo3::Borrowed::from_ptr(py, obj).cast_unchecked::<GatheringFuture>();
            GatheringFuture::log_unretrieved(&slf);
        })
    });
    #[cfg(Py_3_12)]
    ffi::PyErr_SetRaisedException(saved);
    #[cfg(not(Py_3_12))]
    ffi::PyErr_Restore(saved.0, saved.1, saved.2);
}

/// PyO3's `tp_dealloc` for the type, which does not run finalisers.
#[cfg(not(Py_LIMITED_API))]
static PYO3_DEALLOC: std::sync::OnceLock<ffi::destructor> = std::sync::OnceLock::new();

/// `tp_dealloc`: run the finaliser first (it may resurrect the object, as
/// asyncio's handler does when it keeps the context), then PyO3's, through
/// the trashcan (a gather's children may be gathers it is the last owner of).
#[cfg(not(Py_LIMITED_API))]
unsafe extern "C" fn dealloc(obj: *mut ffi::PyObject) {
    if ffi::PyObject_CallFinalizerFromDealloc(obj) < 0 {
        return;
    }
    if let Some(pyo3_dealloc) = PYO3_DEALLOC.get() {
        trashcan::free(obj, *pyo3_dealloc);
    }
}

/// Give the type a finaliser, as asyncio's Future has (full API only).
pub(super) fn patch_finalizer(py: Python<'_>) {
    #[cfg(not(Py_LIMITED_API))]
    unsafe {
        let tp = py.get_type::<GatheringFuture>().as_type_ptr();
        // The module is initialised once per process: patch once.
        if let Some(pyo3_dealloc) = (*tp).tp_dealloc {
            if PYO3_DEALLOC.set(pyo3_dealloc).is_ok() {
                (*tp).tp_dealloc = Some(dealloc);
                (*tp).tp_finalize = Some(finalize);
                ffi::PyType_Modified(tp);
            }
        }
    }
    #[cfg(Py_LIMITED_API)]
    let _ = py;
}

//! The event loop and contextvars context a bridged future belongs to.
//!
//! A future passed to [`future_into_py`](crate::future_into_py) runs inside
//! a [`scope`] holding the caller's [`TaskLocals`]: its loop and a copy of
//! the caller's `contextvars` context, taken at call time. Inside it,
//! [`get_current_locals`] returns them on any thread, so
//! [`into_future`](crate::into_future) schedules a Python awaitable on the
//! right loop, in that context, and a nested `future_into_py` (even on a
//! tokio worker) belongs to the same loop and context.
//!
//! With the `pyo3-async-runtimes` feature, the scope is also a
//! `pyo3_async_runtimes::tokio::scope` with the same loop and context, so
//! that crate's `get_current_locals`, `into_future` and `future_into_py`
//! work inside bridged futures too.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::runtime::{loop_waker, running_loop, LoopWaker};

tokio::task_local! {
    static LOCALS: TaskLocals;
}

/// An event loop and a `contextvars.Context`, shared cheaply (cloning does
/// not attach to the interpreter).
///
/// Like asyncio's Task holds its loop, the locals hold the loop strongly;
/// the loop's wakeup batcher they use holds it only weakly.
#[derive(Clone)]
pub struct TaskLocals(Arc<Inner>);

struct Inner {
    event_loop: Py<PyAny>,
    context: Py<PyAny>,
    /// Found on the loop's thread (only there can it be made).
    waker: OnceLock<Arc<LoopWaker>>,
    #[cfg(feature = "pyo3-async-runtimes")]
    compat: pyo3_async_runtimes::TaskLocals,
}

impl TaskLocals {
    /// Locals for `event_loop` and `context` (a `contextvars.Context`).
    pub fn new(event_loop: Bound<'_, PyAny>, context: Bound<'_, PyAny>) -> Self {
        TaskLocals(Arc::new(Inner {
            #[cfg(feature = "pyo3-async-runtimes")]
            compat: pyo3_async_runtimes::TaskLocals::new(event_loop.clone())
                .with_context(context.clone()),
            event_loop: event_loop.unbind(),
            context: context.unbind(),
            waker: OnceLock::new(),
        }))
    }

    /// The running loop of this thread and a copy of the current context,
    /// as `asyncio.create_task` would capture them.
    ///
    /// Raises `RuntimeError` when no loop is running on this thread.
    pub fn with_running_loop(py: Python<'_>) -> PyResult<Self> {
        let event_loop = running_loop(py)?;
        let context = copy_context(py)?;
        let locals = Self::new(event_loop, context);
        // On the loop's thread: the only place its waker can be found.
        let _ = locals.waker(py);
        Ok(locals)
    }

    /// The event loop.
    pub fn event_loop<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.0.event_loop.bind(py).clone()
    }

    /// The `contextvars.Context` Python code scheduled from here runs in
    /// (a copy of it, for each task).
    pub fn context<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        self.0.context.bind(py).clone()
    }

    /// The same loop and context as pyo3-async-runtimes' `TaskLocals`.
    #[cfg(feature = "pyo3-async-runtimes")]
    pub fn as_pyo3_async_runtimes(&self) -> &pyo3_async_runtimes::TaskLocals {
        &self.0.compat
    }

    /// The loop's wakeup batcher, if it was found (on the loop's thread).
    pub(crate) fn waker(&self, py: Python<'_>) -> Option<&Arc<LoopWaker>> {
        if let Some(w) = self.0.waker.get() {
            return Some(w);
        }
        let lp = running_loop(py).ok()?;
        if !lp.is(self.0.event_loop.bind(py)) {
            return None;
        }
        let w = loop_waker(py, &lp).ok()?;
        Some(self.0.waker.get_or_init(|| w))
    }

    /// This thread is the one running the loop.
    pub(crate) fn on_loop_thread(&self, py: Python<'_>) -> bool {
        match self.known_waker() {
            Some(w) => w.on_own_thread(),
            None => running_loop(py).is_ok_and(|lp| lp.is(self.0.event_loop.bind(py))),
        }
    }

    /// The batcher if it was found already (no Python needed).
    pub(crate) fn known_waker(&self) -> Option<&Arc<LoopWaker>> {
        self.0.waker.get()
    }
}

#[cfg(feature = "pyo3-async-runtimes")]
impl From<pyo3_async_runtimes::TaskLocals> for TaskLocals {
    /// Locals with the same loop and context (`None` as context means the
    /// current one when used).
    fn from(theirs: pyo3_async_runtimes::TaskLocals) -> Self {
        Python::attach(|py| {
            TaskLocals(Arc::new(Inner {
                event_loop: theirs.event_loop(py).unbind(),
                context: theirs.context(py).unbind(),
                waker: OnceLock::new(),
                compat: theirs,
            }))
        })
    }
}

/// `contextvars.copy_context()`.
pub(crate) fn copy_context(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    unsafe { Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyContext_CopyCurrent()) }
}

/// Run `fut` with `locals` as its [`get_current_locals`].
///
/// [`future_into_py`](crate::future_into_py) does this for every future it
/// runs; use it for futures spawned from one (`tokio::spawn(scope(...))`).
pub fn scope<F>(locals: TaskLocals, fut: F) -> impl Future<Output = F::Output> + Send + 'static
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    #[cfg(feature = "pyo3-async-runtimes")]
    {
        let compat = locals.0.compat.clone();
        pyo3_async_runtimes::tokio::scope(compat, LOCALS.scope(locals, fut))
    }
    #[cfg(not(feature = "pyo3-async-runtimes"))]
    LOCALS.scope(locals, fut)
}

/// The locals of the bridged future being polled on this thread, else the
/// running loop of this thread and a copy of the current context.
///
/// With the `pyo3-async-runtimes` feature, the locals of a
/// `pyo3_async_runtimes::tokio::scope` are found as well.
///
/// Raises `RuntimeError` when there are none (not inside a bridged future,
/// no loop running on this thread).
pub fn get_current_locals(py: Python<'_>) -> PyResult<TaskLocals> {
    let locals = current_locals(py)?;
    // On the loop's thread, find its batcher now: the locals may be sent
    // to another thread.
    let _ = locals.waker(py);
    Ok(locals)
}

/// [`get_current_locals`] without looking for the loop's batcher (a
/// future that finishes at once never needs it).
pub(crate) fn current_locals(py: Python<'_>) -> PyResult<TaskLocals> {
    if let Ok(l) = LOCALS.try_with(TaskLocals::clone) {
        return Ok(l);
    }
    #[cfg(feature = "pyo3-async-runtimes")]
    if let Ok(theirs) = pyo3_async_runtimes::tokio::get_current_locals(py) {
        if theirs.context(py).is_none() {
            let ctx = copy_context(py)?;
            return Ok(TaskLocals::new(theirs.event_loop(py), ctx));
        }
        return Ok(TaskLocals::from(theirs));
    }
    let event_loop = running_loop(py).map_err(|_| {
        PyRuntimeError::new_err("no running event loop (and not inside a bridged future)")
    })?;
    Ok(TaskLocals::new(event_loop, copy_context(py)?))
}

//! A gather's state and asyncio's `_done_callback`: how children's reports
//! complete the outer future.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyList;
use pyo3::{intern, PyTraverseError, PyVisit};

use super::children::{Child, ChildView, Slot};
use super::future::GatheringFuture;
use super::sleeps::{Opening, SleepPhase};
use crate::awaitable;
use crate::timers::{GatherLink, LoopTimers};

/// A finished gather's result, or its exception and the traceback to raise
/// it with.
pub(super) type Outcome = Result<Py<PyAny>, (Py<PyAny>, Option<Py<PyAny>>)>;

pub(super) enum State {
    Pending,
    Result(Py<PyAny>),
    /// The exception, and its traceback when it was set: the first
    /// `result()` raises it with that traceback, later ones with none, so
    /// that raising it again and again does not grow it (as asyncio's
    /// Future does).
    Exception {
        exc: Py<PyAny>,
        tb: Option<Py<PyAny>>,
    },
}

impl State {
    /// A failure with `exc` and its traceback as it is now.
    pub(super) fn exception(py: Python<'_>, exc: Py<PyAny>) -> State {
        let tb = unsafe {
            if ffi::PyExceptionInstance_Check(exc.as_ptr()) != 0 {
                Bound::from_owned_ptr_or_opt(py, ffi::PyException_GetTraceback(exc.as_ptr()))
                    .map(Bound::unbind)
            } else {
                None
            }
        };
        State::Exception { exc, tb }
    }
}

pub(super) struct Inner {
    pub(super) state: State,
    pub(super) callbacks: Vec<(Py<PyAny>, Py<PyAny>)>,
    pub(super) children: Vec<Slot>,
    /// Child futures by address (they are kept alive in `children`).
    pub(super) future_index: HashMap<usize, usize>,
    /// For each argument, the index of its (deduplicated) child.
    pub(super) arg_child: Vec<usize>,
    pub(super) nfinished: usize,
    pub(super) cancel_requested: bool,
    /// How many `cancel()` calls on this gather are under way (a Task
    /// calling it once more is a cycle).
    pub(super) cancelling: usize,
    /// The sleep children of each batch in flight, by batch id (the ids in
    /// `free_batches` are unused).
    pub(super) batches: Vec<Vec<usize>>,
    pub(super) free_batches: Vec<usize>,
    /// The batch that children moving now join, while nothing else has been
    /// scheduled since it was.
    pub(super) open: Option<(Opening, usize)>,
    /// Numbers batch steps and `cancel()` calls.
    pub(super) serial: u64,
    pub(super) log_traceback: bool,
    /// The timer heap's way to this gather, cut once it is done.
    pub(super) link: Option<Arc<GatherLink>>,
    /// The loop's timers, once a sleep child is in them: told of each entry
    /// the gather gives up on, so that dead entries get compacted.
    pub(super) timers: Option<Py<LoopTimers>>,
}

/// The one callable all child futures of a gather report to.
#[pyclass(frozen, module = "rustasync._rustasync", name = "_GatherChildDone")]
pub(super) struct ChildDone {
    pub(super) outer: Py<GatheringFuture>,
    /// Python 3.14+: the task that called `gather()`, which each child is
    /// recorded as awaited by until it is done (see `graph.rs`).
    pub(super) awaiter: Option<Py<PyAny>>,
}

#[pymethods]
impl ChildDone {
    fn __call__(&self, py: Python<'_>, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Some(task) = &self.awaiter {
            super::graph::CallGraph::discard(py, fut, task.bind(py))?;
        }
        let outer = self.outer.bind(py);
        let index = outer
            .get()
            .inner
            .lock()
            .unwrap()
            .future_index
            .get(&(fut.as_ptr() as usize))
            .copied();
        match index {
            Some(i) => GatheringFuture::child_done(outer, i),
            None => Ok(()),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.outer)?;
        visit.call(&self.awaiter)
    }
}

impl GatheringFuture {
    pub(super) fn is_done(&self) -> bool {
        !matches!(self.inner.lock().unwrap().state, State::Pending)
    }

    /// What child `index` holds, cloned out of the lock (callers then call
    /// into Python freely).
    fn child_view(&self, py: Python<'_>, index: usize) -> ChildView {
        match self.inner.lock().unwrap().children.get(index) {
            Some(slot) => ChildView::of(py, slot),
            None => ChildView::Unfinished,
        }
    }

    /// The child's `_make_cancelled_error()`.
    pub(super) fn child_cancelled_error(
        &self,
        py: Python<'_>,
        index: usize,
    ) -> PyResult<Py<PyAny>> {
        match self.child_view(py, index) {
            ChildView::Future(f) => Ok(f
                .bind(py)
                .call_method0(intern!(py, "_make_cancelled_error"))?
                .unbind()),
            ChildView::Cancelled(msg) => Ok(awaitable::cancelled_error(py, msg.as_ref())?
                .into_value(py)
                .into_any()),
            ChildView::Value(_) | ChildView::Unfinished => {
                Ok(awaitable::cancelled_error(py, None)?
                    .into_value(py)
                    .into_any())
            }
        }
    }

    /// asyncio's `_done_callback`, for child `index`.
    pub(super) fn child_done(slf: &Bound<'_, Self>, index: usize) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (last, done, view) = {
            let mut guard = me.inner.lock().unwrap();
            let inner = &mut *guard;
            let slot = match inner.children.get_mut(index) {
                Some(slot) if !slot.reported => slot,
                // Reported already, or cleared by the collector.
                _ => return Ok(()),
            };
            slot.reported = true;
            // A sleep child's outcome needs no copy of its value.
            let view = match &slot.child {
                Child::Future(f) => ChildView::Future(f.clone_ref(py)),
                Child::Sleep(SleepPhase::Cancelled(_)) => ChildView::Cancelled(None),
                Child::Sleep(_) => ChildView::Unfinished,
            };
            inner.nfinished += 1;
            (
                inner.nfinished == inner.children.len(),
                !matches!(inner.state, State::Pending),
                view,
            )
        };
        if done {
            // Mark the exception retrieved.
            let _ = view.outcome(py)?;
            return Ok(());
        }
        if !me.return_exceptions {
            let (cancelled, exc) = view.outcome(py)?;
            if cancelled {
                let exc = me.child_cancelled_error(py, index)?;
                return Self::finish(slf, State::exception(py, exc));
            }
            if let Some(exc) = exc {
                return Self::finish(slf, State::exception(py, exc));
            }
        }
        if last {
            return Self::finish_all(slf, index);
        }
        Ok(())
    }

    /// Every child has reported: the list of results, or the cancellation.
    fn finish_all(slf: &Bound<'_, Self>, index: usize) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (views, arg_child, cancel_requested) = {
            let inner = me.inner.lock().unwrap();
            let views: Vec<ChildView> = inner
                .children
                .iter()
                .map(|slot| ChildView::of(py, slot))
                .collect();
            (views, inner.arg_child.clone(), inner.cancel_requested)
        };
        let values = views
            .into_iter()
            .map(|v| v.value(py))
            .collect::<PyResult<Vec<_>>>()?;
        if cancel_requested {
            // asyncio takes `_make_cancelled_error()` of the last argument's
            // child here (its loop variable), not of the child that finished
            // last.
            let last = *arg_child.last().unwrap_or(&index);
            let exc = me.child_cancelled_error(py, last)?;
            return Self::finish(slf, State::exception(py, exc));
        }
        let results = PyList::new(py, arg_child.iter().map(|&i| values[i].clone_ref(py)))?;
        Self::finish(slf, State::Result(results.into_any().unbind()))
    }

    /// Complete the outer future and schedule its callbacks.
    pub(super) fn finish(slf: &Bound<'_, Self>, state: State) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (callbacks, link, timers, dead_timers) = {
            let mut inner = me.inner.lock().unwrap();
            if !matches!(inner.state, State::Pending) {
                // `state` is dropped, and the error built, unlocked.
                drop(inner);
                return Err(awaitable::invalid_state(py, "invalid state"));
            }
            inner.log_traceback = matches!(state, State::Exception { .. });
            inner.state = state;
            inner.open = None;
            let timers = inner.timers.as_ref().map(|t| t.clone_ref(py));
            let dead_timers = match &timers {
                Some(_) => inner
                    .children
                    .iter()
                    .filter(|s| matches!(&s.child, Child::Sleep(p) if p.in_timer_heap()))
                    .count(),
                None => 0,
            };
            let link = inner.link.take();
            (
                std::mem::take(&mut inner.callbacks),
                link,
                timers,
                dead_timers,
            )
        };
        // Sleep children still in the heap no longer matter (asyncio's keep
        // running unobserved): their entries go dead, and the heap is told
        // so it can compact them.
        drop(link.and_then(|l| l.cut()));
        if let Some(t) = timers {
            for _ in 0..dead_timers {
                t.get().note_cancelled(py);
            }
        }
        Self::schedule_callbacks(slf, callbacks)
    }

    pub(super) fn schedule_callbacks(
        slf: &Bound<'_, Self>,
        callbacks: Vec<(Py<PyAny>, Py<PyAny>)>,
    ) -> PyResult<()> {
        if callbacks.is_empty() {
            return Ok(());
        }
        let py = slf.py();
        let loop_ = slf.get().loop_.bind(py);
        let call_soon = loop_.getattr(intern!(py, "call_soon"))?;
        for (cb, ctx) in callbacks {
            awaitable::call_with_context(
                py,
                &call_soon,
                &[cb.bind(py), slf.as_any()],
                ctx.bind(py),
            )?;
        }
        Ok(())
    }

    /// The outcome, cloned out of the lock: `None` while pending. Reading it
    /// counts as retrieving the exception; `raising` takes the traceback it
    /// was stored with (to raise it once with it).
    pub(super) fn outcome(&self, py: Python<'_>, raising: bool) -> Option<Outcome> {
        let mut guard = self.inner.lock().unwrap();
        let inner = &mut *guard;
        match &mut inner.state {
            State::Pending => None,
            State::Result(v) => Some(Ok(v.clone_ref(py))),
            State::Exception { exc, tb } => {
                let exc = exc.clone_ref(py);
                let tb = if raising { tb.take() } else { None };
                inner.log_traceback = false;
                Some(Err((exc, tb)))
            }
        }
    }

    pub(super) fn result_of(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self.outcome(py, true) {
            None => Err(awaitable::invalid_state(py, "Result is not set.")),
            Some(Ok(v)) => Ok(v),
            Some(Err((exc, tb))) => {
                // `raise exc.with_traceback(tb)`: the frames of earlier raises
                // are dropped (here, unlocked) rather than grown on.
                let exc = exc.into_bound(py);
                if unsafe { ffi::PyExceptionInstance_Check(exc.as_ptr()) } != 0 {
                    exc.setattr(intern!(py, "__traceback__"), tb)?;
                }
                Err(PyErr::from_value(exc))
            }
        }
    }
}

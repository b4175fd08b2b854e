//! The children of a gather as it holds them, and what is read from them.

use pyo3::intern;
use pyo3::prelude::*;

use super::sleeps::SleepPhase;
use crate::awaitable::Imports;

pub(super) enum Child {
    /// A Task or future; its state is read from it.
    Future(Py<PyAny>),
    /// An adopted `rustasync.sleep`.
    Sleep(SleepPhase),
}

/// A child and whether it was reported to the gather (each child counts
/// once toward `nfinished`, however often it is reported).
pub(super) struct Slot {
    pub(super) child: Child,
    pub(super) reported: bool,
}

impl Slot {
    pub(super) fn new(child: Child) -> Self {
        Slot {
            child,
            reported: false,
        }
    }

    pub(super) fn sleep_mut(&mut self) -> Option<&mut SleepPhase> {
        match &mut self.child {
            Child::Sleep(phase) => Some(phase),
            Child::Future(_) => None,
        }
    }
}

/// A child's state as copied out of the gather's lock.
pub(super) enum ChildView {
    Future(Py<PyAny>),
    Value(Py<PyAny>),
    Cancelled(Option<Py<PyAny>>),
    Unfinished,
}

impl ChildView {
    pub(super) fn of(py: Python<'_>, slot: &Slot) -> ChildView {
        match &slot.child {
            Child::Future(f) => ChildView::Future(f.clone_ref(py)),
            Child::Sleep(SleepPhase::Done(v)) => ChildView::Value(v.clone_ref(py)),
            Child::Sleep(SleepPhase::Cancelled(msg)) => {
                ChildView::Cancelled(msg.as_ref().map(|m| m.clone_ref(py)))
            }
            Child::Sleep(_) => ChildView::Unfinished,
        }
    }

    /// The value the child contributes to the result list.
    pub(super) fn value(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let fut = match self {
            ChildView::Future(f) => f,
            ChildView::Value(v) => return Ok(v),
            ChildView::Cancelled(msg) => return cancelled_in_results(py, msg.as_ref()),
            ChildView::Unfinished => return Ok(py.None()),
        };
        let fut = fut.bind(py);
        if truthy(fut, intern!(py, "cancelled"))? {
            let msg = fut.getattr(intern!(py, "_cancel_message"))?.unbind();
            return cancelled_in_results(py, Some(&msg));
        }
        let exc = fut.call_method0(intern!(py, "exception"))?;
        if !exc.is_none() {
            return Ok(exc.unbind());
        }
        Ok(fut.call_method0(intern!(py, "result"))?.unbind())
    }

    /// (cancelled, exception or None) of a finished child; reading a
    /// future's exception marks it retrieved.
    pub(super) fn outcome(self, py: Python<'_>) -> PyResult<(bool, Option<Py<PyAny>>)> {
        let fut = match self {
            ChildView::Future(f) => f,
            ChildView::Cancelled(_) => return Ok((true, None)),
            ChildView::Value(_) | ChildView::Unfinished => return Ok((false, None)),
        };
        let fut = fut.bind(py);
        if truthy(fut, intern!(py, "cancelled"))? {
            return Ok((true, None));
        }
        let exc = fut.call_method0(intern!(py, "exception"))?;
        Ok((false, (!exc.is_none()).then(|| exc.unbind())))
    }
}

fn truthy(obj: &Bound<'_, PyAny>, method: &Bound<'_, pyo3::types::PyString>) -> PyResult<bool> {
    obj.call_method0(method)?.is_truthy()
}

/// `CancelledError('' if msg is None else msg)`, as gather stores in results.
fn cancelled_in_results(py: Python<'_>, msg: Option<&Py<PyAny>>) -> PyResult<Py<PyAny>> {
    let cls = Imports::get(py)?.cancelled_error.bind(py);
    let exc = match msg {
        Some(m) if !m.is_none(py) => cls.call1((m.bind(py),))?,
        _ => cls.call1(("",))?,
    };
    Ok(exc.unbind())
}

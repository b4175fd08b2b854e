//! `QueueOp`: what `get()`, `put()`, `join()` and friends return.
//!
//! It behaves as the coroutine asyncio's method would: it does nothing until
//! awaited, each step re-checks the queue exactly where asyncio's `while`
//! loop does, it suspends on a real `loop.create_future()`, and it answers
//! `send`, `throw` and `close`, so `asyncio.iscoroutine()` accepts it and it
//! can be given to `create_task`, `wait_for`, `gather`, `TaskGroup`.
//! Closing one that was never awaited does nothing; dropping one that was
//! never awaited (nor closed) warns `coroutine 'Queue.get' was never
//! awaited`, as the coroutine would.

use super::lock::{TryGuard, TryLock};
use super::pyqueue::{is_done, py_lt, raise, PyQueue};
use super::state::{QueueError, WaitList};
use crate::awaitable::{next_result, Step, Stepper};
use pyo3::exceptions::{
    PyRuntimeError, PyStopAsyncIteration, PyStopIteration, PyTypeError, PyValueError,
};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::PyList;
use pyo3::{intern, PyTraverseError};
use std::collections::VecDeque;

/// The operation an op performs.
pub enum Work {
    Get,
    /// `__anext__`: a get whose shut-down error ends the iteration.
    Next,
    GetMany(usize),
    /// The item, until it is stored.
    Put(Option<Py<PyAny>>),
    /// The items not stored yet.
    PutMany(VecDeque<Py<PyAny>>),
    Join,
}

impl Work {
    fn list(&self) -> WaitList {
        match self {
            Work::Get | Work::Next | Work::GetMany(_) => WaitList::Getters,
            Work::Put(_) | Work::PutMany(_) => WaitList::Putters,
            Work::Join => WaitList::Joiners,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Work::Get => "get",
            Work::Next => "__anext__",
            Work::GetMany(_) => "get_many",
            Work::Put(_) => "put",
            Work::PutMany(_) => "put_many",
            Work::Join => "join",
        }
    }
}

enum Phase {
    Start,
    /// Parked on this future, which is in one of the queue's waiter lists.
    Waiting(Py<PyAny>),
    Done,
}

struct OpState {
    work: Work,
    phase: Phase,
}

/// A pending queue operation (`get`, `put`, `join`, ...); await it.
///
/// Coroutine-like: supports `send`, `throw`, `close` and `__await__`.
#[pyclass(
    frozen,
    immutable_type,
    module = "rustasync._rustasync",
    name = "QueueOp"
)]
pub struct QueueOp {
    queue: Py<PyQueue>,
    state: TryLock<OpState>,
}

impl QueueOp {
    pub fn create(queue: &Bound<'_, PyQueue>, work: Work) -> PyResult<Py<QueueOp>> {
        let op = QueueOp {
            queue: queue.clone().unbind(),
            state: TryLock::new(OpState {
                work,
                phase: Phase::Start,
            }),
        };
        Py::new(queue.py(), op)
    }

    #[inline]
    fn state(&self) -> PyResult<TryGuard<'_, OpState>> {
        self.state
            .try_lock()
            .ok_or_else(|| PyValueError::new_err("coroutine already executing"))
    }

    /// One `send(None)`.
    fn advance(&self, py: Python<'_>, st: &mut OpState) -> PyResult<Step> {
        let queue = self.queue.bind(py);
        match std::mem::replace(&mut st.phase, Phase::Done) {
            Phase::Done => {
                return Err(PyRuntimeError::new_err(
                    "cannot reuse already awaited coroutine",
                ))
            }
            Phase::Start => {}
            Phase::Waiting(fut) => {
                // Bound, not Py: this runs from the am_send slot, outside
                // PyO3's attach bookkeeping, where dropping a Py would be
                // deferred to a pool instead of decref'd now.
                let f = fut.into_bound(py);
                let which = st.work.list();
                match f.call_method0(intern!(py, "result")) {
                    Ok(_) => {}
                    Err(e) if !is_done(&f)? => {
                        // Driven before its future is done: yield it again,
                        // as `Future.__await__` would.
                        drop(e);
                        f.setattr(intern!(py, "_asyncio_future_blocking"), true)?;
                        st.phase = Phase::Waiting(f.clone().unbind());
                        return Ok(Step::Yield(f.unbind()));
                    }
                    Err(e) => {
                        queue.get().abandon(py, which, &f)?;
                        return Err(e);
                    }
                }
                if which == WaitList::Joiners {
                    queue.get().abandon(py, which, &f)?;
                    return Ok(Step::Return(py.None()));
                }
            }
        }
        let done = match &mut st.work {
            Work::Get => try_get(queue, false)?,
            Work::Next => try_get(queue, true)?,
            Work::GetMany(n) => try_get_many(queue, *n)?,
            Work::Put(item) => try_put(queue, item)?,
            Work::PutMany(items) => try_put_many(queue, items)?,
            Work::Join => (queue.get().lock()?.unfinished == 0).then(|| py.None()),
        };
        match done {
            Some(v) => Ok(Step::Return(v)),
            None => {
                let fut = PyQueue::new_waiter(queue, st.work.list())?;
                st.phase = Phase::Waiting(fut.clone_ref(py));
                Ok(Step::Yield(fut))
            }
        }
    }

    /// For the free list (see `slots`), from `tp_dealloc` only: when the
    /// operation is finished and holds nothing but its queue, move the
    /// queue reference out and return it (an owned pointer). The contents
    /// are then spent: they must be overwritten, never dropped nor used.
    /// `None` leaves everything as it was.
    #[cfg(all(not(Py_LIMITED_API), not(Py_GIL_DISABLED), not(PyPy), not(GraalPy)))]
    pub(super) unsafe fn release_if_spent(&self) -> Option<*mut pyo3::ffi::PyObject> {
        let st = self.state.try_lock()?;
        let spent = matches!(st.phase, Phase::Done)
            && matches!(
                st.work,
                Work::Get | Work::Next | Work::GetMany(_) | Work::Join | Work::Put(None)
            );
        drop(st);
        // SAFETY: the caller never drops nor reads the contents again, so
        // the queue reference moves out exactly once.
        spent.then(|| unsafe { std::ptr::read(&self.queue) }.into_ptr())
    }

    /// Leave the waiter list, as the coroutine's `except:`/`finally:` does.
    fn leave(&self, py: Python<'_>, st: &mut OpState) -> PyResult<()> {
        if let Phase::Waiting(fut) = std::mem::replace(&mut st.phase, Phase::Done) {
            self.queue.get().abandon(py, st.work.list(), fut.bind(py))?;
        }
        Ok(())
    }
}

/// The empty-queue check of asyncio's `get()`: `Some(item)`, `None` to wait.
fn try_get(queue: &Bound<'_, PyQueue>, next: bool) -> PyResult<Option<Py<PyAny>>> {
    let py = queue.py();
    let q = queue.get();
    let (item, wake) = {
        let mut core = q.lock()?;
        match core.get_nowait(py_lt(py)) {
            Ok(item) => (item, !core.putters.is_empty()),
            Err(QueueError::Empty) => return Ok(None),
            Err(QueueError::ShutDown) if next => {
                return Err(PyStopAsyncIteration::new_err(()));
            }
            Err(e) => return Err(raise(py, e)),
        }
    };
    if wake {
        q.wake_next(py, WaitList::Putters)?;
    }
    Ok(Some(item))
}

fn try_get_many(queue: &Bound<'_, PyQueue>, n: usize) -> PyResult<Option<Py<PyAny>>> {
    let py = queue.py();
    let q = queue.get();
    let (items, wake) = {
        let mut core = q.lock()?;
        match core.get_many(n, py_lt(py)) {
            Ok(items) => {
                let wake = if core.putters.is_empty() {
                    0
                } else {
                    items.len()
                };
                (items, wake)
            }
            Err(QueueError::Empty) => return Ok(None),
            Err(e) => return Err(raise(py, e)),
        }
    };
    let list = PyList::new(py, items)?;
    q.wake_n(py, WaitList::Putters, wake)?;
    Ok(Some(list.into_any().unbind()))
}

/// asyncio's `put()` loop body: `Some(None)` once stored, `None` to wait.
fn try_put(
    queue: &Bound<'_, PyQueue>,
    slot: &mut Option<Py<PyAny>>,
) -> PyResult<Option<Py<PyAny>>> {
    let py = queue.py();
    let q = queue.get();
    let Some(item) = slot.take() else {
        return Err(PyRuntimeError::new_err(
            "cannot reuse already awaited coroutine",
        ));
    };
    let res = {
        let mut core = q.lock()?;
        if !core.shutdown && core.is_full() {
            *slot = Some(item);
            return Ok(None);
        }
        core.put_nowait(item, py_lt(py))
            .map(|()| !core.getters.is_empty())
    };
    match res {
        Ok(wake) => {
            if wake {
                q.wake_next(py, WaitList::Getters)?;
            }
            Ok(Some(py.None()))
        }
        Err((item, e)) => {
            item.drop_ref(py);
            Err(raise(py, e))
        }
    }
}

/// `put()` for each item in turn: stores while there is room, then waits.
fn try_put_many(
    queue: &Bound<'_, PyQueue>,
    items: &mut VecDeque<Py<PyAny>>,
) -> PyResult<Option<Py<PyAny>>> {
    let py = queue.py();
    let q = queue.get();
    let mut stored = 0;
    let mut failed = None;
    let wake = {
        let mut core = q.lock()?;
        while let Some(item) = items.pop_front() {
            if !core.shutdown && core.is_full() {
                items.push_front(item);
                break;
            }
            match core.put_nowait(item, py_lt(py)) {
                Ok(()) => stored += 1,
                Err(fail) => {
                    failed = Some(fail);
                    break;
                }
            }
        }
        if core.getters.is_empty() {
            0
        } else {
            stored
        }
    };
    q.wake_n(py, WaitList::Getters, wake)?;
    if let Some((item, e)) = failed {
        item.drop_ref(py);
        for x in items.drain(..) {
            x.drop_ref(py);
        }
        return Err(raise(py, e));
    }
    Ok(items.is_empty().then(|| py.None()))
}

impl Stepper for QueueOp {
    fn step(slf: &Bound<'_, Self>) -> PyResult<Step> {
        let op = slf.get();
        let mut st = op.state()?;
        op.advance(slf.py(), &mut st)
    }
}

#[pymethods]
impl QueueOp {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The iterator `__await__` returns is itself, so that `yield from
    /// q.get().__await__()` works, as on asyncio's future iterator.
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        next_result(slf.py(), Self::step(slf)?)
    }

    /// Resume the operation (the value sent is ignored, as asyncio's
    /// futures ignore it).
    fn send(slf: &Bound<'_, Self>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        if !value.is_none() && matches!(slf.get().state()?.phase, Phase::Start) {
            return Err(PyTypeError::new_err(
                "can't send non-None value to a just-started coroutine",
            ));
        }
        match Self::step(slf)? {
            Step::Yield(v) => Ok(v),
            Step::Return(v) => Err(PyStopIteration::new_err((v,))),
        }
    }

    /// Raise an exception inside the operation: a waiting operation leaves
    /// the queue's waiter list (passing on a wake-up it did not use), then
    /// the exception propagates.
    #[pyo3(signature = (typ, val = None, tb = None))]
    fn throw(
        slf: &Bound<'_, Self>,
        typ: &Bound<'_, PyAny>,
        val: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let exc = crate::awaitable::thrown(py, typ, val, tb)?;
        let op = slf.get();
        let mut st = op.state()?;
        op.leave(py, &mut st)?;
        Err(exc)
    }

    /// Abandon the operation: a waiting one leaves the queue's waiter list.
    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let op = slf.get();
        let mut st = op.state()?;
        op.leave(slf.py(), &mut st)
    }

    #[getter]
    fn __name__(&self) -> PyResult<&'static str> {
        Ok(self.state()?.work.name())
    }

    #[getter]
    fn __qualname__(&self) -> PyResult<String> {
        Ok(format!("Queue.{}", self.state()?.work.name()))
    }

    fn __repr__(&self) -> PyResult<String> {
        let st = self.state()?;
        let phase = match st.phase {
            Phase::Start => "created",
            Phase::Waiting(_) => "waiting",
            Phase::Done => "done",
        };
        Ok(format!("<QueueOp Queue.{}() {phase}>", st.work.name()))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.queue)?;
        let Some(st) = self.state.try_lock() else {
            return Ok(());
        };
        if let Phase::Waiting(f) = &st.phase {
            visit.call(f)?;
        }
        match &st.work {
            Work::Put(item) => visit.call(item)?,
            Work::PutMany(items) => {
                for x in items {
                    visit.call(x)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn __clear__(&self) {
        if let Some(mut st) = self.state.try_lock() {
            let phase = std::mem::replace(&mut st.phase, Phase::Done);
            let work = std::mem::replace(&mut st.work, Work::Get);
            drop(st);
            drop((phase, work));
        }
    }
}

impl Drop for QueueOp {
    /// A waiting operation dropped without being closed (driven by hand and
    /// forgotten) leaves the waiter list, as a finalised coroutine would.
    fn drop(&mut self) {
        let st = self.state.get_mut();
        if matches!(st.phase, Phase::Start) {
            crate::awaitable::warn_never_awaited(&format!("Queue.{}", st.work.name()));
        }
        if let Phase::Waiting(fut) = std::mem::replace(&mut st.phase, Phase::Done) {
            let which = st.work.list();
            Python::attach(|py| {
                crate::awaitable::with_exception_aside(py, || {
                    if let Err(e) = self.queue.get().abandon(py, which, fut.bind(py)) {
                        e.write_unraisable(py, None);
                    }
                })
            });
        }
    }
}

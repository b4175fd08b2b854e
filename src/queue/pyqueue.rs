//! The Python classes `Queue`, `LifoQueue` and `PriorityQueue`.
//!
//! A thin shell over [`QueueCore`]: argument checking, exception mapping,
//! waking futures, loop binding and `repr`. The awaitable methods return a
//! [`QueueOp`] that does its work when awaited.

use super::lock::{TryGuard, TryLock};
use super::op::{QueueOp, Work};
use super::queue_error;
use super::state::{Kind, Limit, QueueCore, QueueError, WaitList};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyFloat, PyInt, PyList, PyTuple};
use pyo3::{intern, PyTraverseError};
use std::collections::VecDeque;

pub type Core = QueueCore<Py<PyAny>, Py<PyAny>>;

/// A queue, useful for coordinating producer and consumer coroutines.
///
/// Like `asyncio.Queue`, with the same semantics (waiter order, barging,
/// cancellation, `shutdown()` as in Python 3.13); differences: `maxsize`
/// must be an int or a float, and `put_many()`, `get_many()`,
/// `get_nowait_many()`, `task_done(n)` and `async for` are added.
/// `_init`/`_put`/`_get` are not hooks: subclasses cannot change the order.
///
/// If maxsize is less than or equal to zero, the queue size is infinite.
/// Otherwise `await put()` waits while `qsize() >= maxsize`.
///
/// Raises:
///     TypeError: maxsize is not an int or a float.
#[pyclass(
    frozen,
    subclass,
    generic,
    module = "rustasync._rustasync",
    name = "Queue"
)]
pub struct PyQueue {
    core: TryLock<Core>,
    /// Only replaced when a copy or unpickled queue is rebuilt.
    maxsize: std::sync::Mutex<Py<PyAny>>,
}

/// A Queue that retrieves the most recently added entries first.
///
/// Like `asyncio.LifoQueue`; differences: those of `rustasync.Queue`.
#[pyclass(frozen, subclass, generic, extends = PyQueue, module = "rustasync._rustasync", name = "LifoQueue")]
pub struct PyLifoQueue;

/// A Queue that retrieves entries in priority order (lowest first).
///
/// Like `asyncio.PriorityQueue`: items are kept in a heap with exactly
/// `heapq`'s comparisons (`<`), so ties come out in the same order.
/// Differences: an item whose comparison raises is not stored (and a `get`
/// whose comparison raises leaves the queue as it was), where `heapq` can
/// leave its list half sifted; `shutdown(immediate=True)` drops the items
/// without comparing them.
#[pyclass(frozen, subclass, generic, extends = PyQueue, module = "rustasync._rustasync", name = "PriorityQueue")]
pub struct PyPriorityQueue;

fn parse_maxsize(obj: &Bound<'_, PyAny>) -> PyResult<Limit> {
    if let Ok(i) = obj.cast::<PyInt>() {
        return Ok(Limit::from_int(i.extract::<i64>().ok()));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Limit::from_float(f.value()));
    }
    Err(PyTypeError::new_err(format!(
        "maxsize must be an int or a float, not {}",
        obj.get_type().name()?
    )))
}

impl PyQueue {
    /// The `maxsize` given to the constructor, unchanged.
    pub fn maxsize_object(&self, py: Python<'_>) -> Py<PyAny> {
        self.maxsize
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone_ref(py)
    }

    /// Give a fresh queue the `maxsize` of the one it copies. Returns the
    /// old value, for the caller to drop with no lock held.
    pub fn replace_maxsize(&self, maxsize: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let bound = parse_maxsize(maxsize)?;
        self.lock()?.set_bound(bound);
        let mut slot = self
            .maxsize
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(std::mem::replace(&mut *slot, maxsize.clone().unbind()))
    }

    fn build(kind: Kind, maxsize: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(PyQueue {
            core: TryLock::new(QueueCore::new(kind, parse_maxsize(maxsize)?)),
            maxsize: std::sync::Mutex::new(maxsize.clone().unbind()),
        })
    }

    /// The state, or `RuntimeError` when it is already locked (a `<` of a
    /// priority item touching its own queue, or another thread).
    #[inline]
    pub fn lock(&self) -> PyResult<TryGuard<'_, Core>> {
        self.core.try_lock().ok_or_else(|| {
            PyRuntimeError::new_err(
                "Queue used while it is busy (re-entered from an item comparison, \
                 or used from another thread)",
            )
        })
    }

    /// Wake the first waiter of `which` that is not done (asyncio's
    /// `_wakeup_next`). Returns false when the list ran out.
    pub fn wake_next(&self, py: Python<'_>, which: WaitList) -> PyResult<bool> {
        loop {
            let Some(fut) = self.lock()?.waiters(which).pop_front() else {
                return Ok(false);
            };
            let fut = fut.into_bound(py);
            if !is_done(&fut)? {
                fut.call_method1(intern!(py, "set_result"), (py.None(),))?;
                return Ok(true);
            }
        }
    }

    /// Wake `n` waiters one after the other, as `n` operations would.
    pub fn wake_n(&self, py: Python<'_>, which: WaitList, n: usize) -> PyResult<()> {
        for _ in 0..n {
            if !self.wake_next(py, which)? {
                break;
            }
        }
        Ok(())
    }

    /// The running loop, binding the queue to it on first use (asyncio's
    /// `_LoopBoundMixin._get_loop`). `join` binds separately, as asyncio's
    /// `join()` waits on its own `Event`.
    fn bound_loop<'py>(slf: &Bound<'py, Self>, join: bool) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let running = crate::awaitable::running_loop(py)?;
        let same = {
            let mut core = slf.get().lock()?;
            let slot = if join {
                &mut core.join_loop
            } else {
                &mut core.loop_
            };
            match slot {
                None => {
                    *slot = Some(running.clone().unbind());
                    true
                }
                Some(l) => l.is(&running),
            }
        };
        if same {
            Ok(running)
        } else {
            Err(PyRuntimeError::new_err(format!(
                "{} is bound to a different event loop",
                slf.repr()?
            )))
        }
    }

    /// Create a future on the bound loop and park it on `which`.
    pub fn new_waiter(slf: &Bound<'_, Self>, which: WaitList) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let loop_ = Self::bound_loop(slf, which == WaitList::Joiners)?;
        let fut = create_future(&loop_)?;
        {
            let mut core = slf.get().lock()?;
            core.waiters(which).push_back(fut.clone().unbind());
        }
        fut.setattr(intern!(py, "_asyncio_future_blocking"), true)?;
        Ok(fut.unbind())
    }

    /// An operation waiting on `fut` is leaving (an exception was thrown in,
    /// or it is closed): asyncio's `except:` clause in `get()`/`put()`, or
    /// the `finally:` of `Event.wait()` for `join()`.
    pub fn abandon(&self, py: Python<'_>, which: WaitList, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        if which == WaitList::Joiners {
            let removed = {
                let mut core = self.lock()?;
                let pos = core.joiners.iter().position(|w| w.is(fut));
                pos.and_then(|i| core.joiners.remove(i))
            };
            if let Some(r) = removed {
                r.drop_ref(py);
            }
            return Ok(());
        }
        // The future may already be torn down when a cycle is collected
        // ("Future object is not initialized"); it leaves the list anyway.
        let _ = fut.call_method0(intern!(py, "cancel"));
        let (removed, recheck) = {
            let mut core = self.lock()?;
            let list = core.waiters(which);
            let removed = list
                .iter()
                .position(|w| w.is(fut))
                .and_then(|i| list.remove(i));
            let recheck = match which {
                WaitList::Getters => !core.is_empty(),
                _ => !core.is_full(),
            };
            (removed, recheck)
        };
        if let Some(r) = removed {
            r.drop_ref(py);
        }
        // A woken waiter passes its wake-up on; when the future can no longer
        // tell, wake the next one anyway (waiters re-check, so a spare
        // wake-up is harmless, a lost one is not).
        let was_woken = fut
            .call_method0(intern!(py, "cancelled"))
            .and_then(|c| c.is_truthy())
            .map(|cancelled| !cancelled)
            .unwrap_or(true);
        if recheck && was_woken {
            self.wake_next(py, which)?;
        }
        Ok(())
    }
}

/// `asyncio.Future`, `BaseEventLoop.create_future` and the kwnames `("loop",)`.
static FUTURE: PyOnceLock<(Py<PyAny>, Py<PyAny>, Py<PyTuple>)> = PyOnceLock::new();

/// `loop.create_future()`. For loops that inherit asyncio's own
/// `create_future` (the stock loops), build the `asyncio.Future(loop=loop)`
/// it would return directly, without running its Python frame.
fn create_future<'py>(loop_: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = loop_.py();
    let (cls, base, kw) = FUTURE.get_or_try_init(py, || -> PyResult<_> {
        let asyncio = py.import("asyncio")?;
        let base = asyncio
            .getattr("BaseEventLoop")?
            .getattr("create_future")?
            .unbind();
        let kw = PyTuple::new(py, ["loop"])?.unbind();
        Ok((asyncio.getattr("Future")?.unbind(), base, kw))
    })?;
    let method = loop_.get_type().getattr(intern!(py, "create_future"))?;
    if !method.is(base) {
        return loop_.call_method0(intern!(py, "create_future"));
    }
    let args = [loop_.as_ptr()];
    unsafe {
        let r = ffi::PyObject_Vectorcall(cls.as_ptr(), args.as_ptr(), 0, kw.as_ptr());
        Bound::from_owned_ptr_or_err(py, r)
    }
}

pub fn is_done(fut: &Bound<'_, PyAny>) -> PyResult<bool> {
    fut.call_method0(intern!(fut.py(), "done"))?.is_truthy()
}

/// `a < b` as `heapq` evaluates it.
pub fn py_lt(py: Python<'_>) -> impl FnMut(&Py<PyAny>, &Py<PyAny>) -> PyResult<bool> + '_ {
    move |a, b| {
        let r = unsafe { ffi::PyObject_RichCompareBool(a.as_ptr(), b.as_ptr(), ffi::Py_LT) };
        if r < 0 {
            Err(PyErr::fetch(py))
        } else {
            Ok(r == 1)
        }
    }
}

/// Map a state error to the exception asyncio raises.
pub fn raise(py: Python<'_>, e: QueueError<PyErr>) -> PyErr {
    match e {
        QueueError::Empty => queue_error(py, |x| &x.empty),
        QueueError::Full => queue_error(py, |x| &x.full),
        QueueError::ShutDown => queue_error(py, |x| &x.shutdown),
        QueueError::Compare(e) => e,
    }
}

/// A count argument (`max_items`, `n`): an integer >= 1. An int too large
/// for a `usize` reads as `usize::MAX`, more than any queue holds.
fn positive(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<usize> {
    let n = crate::args::index(obj, name)?;
    if n < 1 {
        return Err(PyValueError::new_err(format!(
            "{name} must be >= 1, got {obj}"
        )));
    }
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

fn set_all<'a>(
    py: Python<'_>,
    futs: impl IntoIterator<Item = &'a Py<PyAny>>,
    value: bool,
) -> PyResult<()> {
    for f in futs {
        let f = f.bind(py);
        if !is_done(f)? {
            if value {
                f.call_method1(intern!(py, "set_result"), (true,))?;
            } else {
                f.call_method1(intern!(py, "set_result"), (py.None(),))?;
            }
        }
    }
    Ok(())
}

#[pymethods]
impl PyQueue {
    #[new]
    #[pyo3(signature = (maxsize = zero()), text_signature = "(maxsize=0)")]
    fn new(py: Python<'_>, maxsize: Py<PyAny>) -> PyResult<Self> {
        Self::build(Kind::Fifo, maxsize.bind(py))
    }

    /// Number of items allowed in the queue (the value given, unchanged;
    /// read-only). Like `asyncio.Queue.maxsize`.
    #[getter]
    fn maxsize(&self, py: Python<'_>) -> Py<PyAny> {
        self.maxsize_object(py)
    }

    /// Number of items in the queue.
    ///
    /// Like `asyncio.Queue.qsize`; differences: none.
    ///
    /// Raises:
    ///     RuntimeError: the queue is in use by another thread.
    ///
    /// Cancel safety: not a coroutine.
    fn qsize(&self) -> PyResult<usize> {
        Ok(self.lock()?.len())
    }

    /// Return True if the queue is empty, False otherwise.
    ///
    /// Like `asyncio.Queue.empty`; differences: none.
    ///
    /// Raises:
    ///     RuntimeError: the queue is in use by another thread.
    ///
    /// Cancel safety: not a coroutine.
    fn empty(&self) -> PyResult<bool> {
        Ok(self.lock()?.is_empty())
    }

    /// Return True if there are maxsize items in the queue.
    ///
    /// Like `asyncio.Queue.full`; differences: none. Never True when
    /// maxsize <= 0.
    ///
    /// Raises:
    ///     RuntimeError: the queue is in use by another thread.
    ///
    /// Cancel safety: not a coroutine.
    fn full(&self) -> PyResult<bool> {
        Ok(self.lock()?.is_full())
    }

    /// Put an item into the queue, waiting for a free slot if it is full.
    ///
    /// Like `asyncio.Queue.put`; differences: none. Returns a coroutine-like
    /// object; nothing happens until it is awaited. When there is room it
    /// completes without suspending.
    ///
    /// Raises:
    ///     QueueShutDown: the queue is shut down (now or while waiting).
    ///     TypeError: (PriorityQueue) the item cannot be compared; the queue
    ///         is left unchanged.
    ///
    /// Cancel safety: cancelling a waiting put leaves no item behind; a slot
    /// it was woken for is offered to the next waiting putter.
    fn put(slf: &Bound<'_, Self>, item: Py<PyAny>) -> PyResult<Py<QueueOp>> {
        QueueOp::create(slf, Work::Put(Some(item)))
    }

    /// Put an item into the queue without waiting.
    ///
    /// Like `asyncio.Queue.put_nowait`; differences: none.
    ///
    /// Raises:
    ///     QueueShutDown: the queue is shut down.
    ///     QueueFull: there is no free slot.
    ///     TypeError: (PriorityQueue) the item cannot be compared; the queue
    ///         is left unchanged.
    ///
    /// Cancel safety: not a coroutine.
    fn put_nowait(&self, py: Python<'_>, item: Py<PyAny>) -> PyResult<()> {
        let (res, wake) = {
            let mut core = self.lock()?;
            let res = core.put_nowait(item, py_lt(py));
            let wake = res.is_ok() && !core.getters.is_empty();
            (res, wake)
        };
        if let Err((item, e)) = res {
            drop(item);
            return Err(raise(py, e));
        }
        if wake {
            self.wake_next(py, WaitList::Getters)?;
        }
        Ok(())
    }

    /// Put every item of an iterable into the queue, in order, waiting for
    /// room as needed.
    ///
    /// Not in asyncio; it behaves like `for x in items: await q.put(x)`
    /// (same wake-ups, same waiter order), but does not return to the event
    /// loop while there is room. The iterable is read when `put_many` is
    /// called, not when it is awaited.
    ///
    /// Raises:
    ///     TypeError: items is not iterable (at call time).
    ///     QueueShutDown: the queue is shut down before every item is in;
    ///         the items put before stay in the queue.
    ///     TypeError: (PriorityQueue) an item cannot be compared; the items
    ///         before it stay in the queue, it and the rest are not put.
    ///
    /// Cancel safety: progress is kept. Items are enqueued one by one as
    /// room appears; on cancellation the items already enqueued stay
    /// (counted by `join()`), the rest are not enqueued.
    fn put_many(slf: &Bound<'_, Self>, items: &Bound<'_, PyAny>) -> PyResult<Py<QueueOp>> {
        let items: VecDeque<Py<PyAny>> = crate::args::iterate(items, "items")?
            .map(|x| x.map(Bound::unbind))
            .collect::<PyResult<_>>()?;
        QueueOp::create(slf, Work::PutMany(items))
    }

    /// Remove and return an item from the queue, waiting if it is empty.
    ///
    /// Like `asyncio.Queue.get`; differences: none. Returns a coroutine-like
    /// object: the item is removed when it is awaited, not when `get()` is
    /// called. When an item is there it completes without suspending.
    ///
    /// Raises:
    ///     QueueShutDown: the queue is shut down and empty.
    ///     RuntimeError: the queue is bound to a different event loop.
    ///
    /// Cancel safety: cancelling a waiting get loses no item; if it had
    /// already been woken, the wake-up passes to the next waiting getter.
    fn get(slf: &Bound<'_, Self>) -> PyResult<Py<QueueOp>> {
        QueueOp::create(slf, Work::Get)
    }

    /// Remove and return an item if one is immediately available.
    ///
    /// Like `asyncio.Queue.get_nowait`; differences: none.
    ///
    /// Raises:
    ///     QueueShutDown: the queue is shut down and empty.
    ///     QueueEmpty: the queue is empty.
    ///
    /// Cancel safety: not a coroutine.
    fn get_nowait(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let (item, wake) = {
            let mut core = self.lock()?;
            let item = core.get_nowait(py_lt(py)).map_err(|e| raise(py, e))?;
            (item, !core.putters.is_empty())
        };
        if wake {
            self.wake_next(py, WaitList::Putters)?;
        }
        Ok(item)
    }

    /// Wait until the queue has an item, then remove and return up to
    /// `max_items` items as a list, in the order `get()` would return them.
    ///
    /// Not in asyncio; it behaves like one `await q.get()` followed by up to
    /// `max_items - 1` `q.get_nowait()` calls (one putter woken per item).
    ///
    /// `max_items` is an integer of any size; a count larger than the queue
    /// takes what is there.
    ///
    /// Raises:
    ///     TypeError: max_items is not an integer (at call time).
    ///     ValueError: max_items < 1 (at call time).
    ///     QueueShutDown: the queue is shut down and empty.
    ///
    /// Cancel safety: like `get()`: no item is removed unless the list is
    /// returned.
    #[pyo3(signature = (max_items))]
    fn get_many(slf: &Bound<'_, Self>, max_items: &Bound<'_, PyAny>) -> PyResult<Py<QueueOp>> {
        let n = positive("max_items", max_items)?;
        QueueOp::create(slf, Work::GetMany(n))
    }

    /// Remove and return up to `max_items` items that are available now, as
    /// a list.
    ///
    /// Not in asyncio; like up to `max_items` `get_nowait()` calls. A queue
    /// with no item raises like `get_nowait()` does (never returns `[]`).
    ///
    /// `max_items` is an integer of any size; a count larger than the queue
    /// takes what is there.
    ///
    /// Raises:
    ///     TypeError: max_items is not an integer.
    ///     ValueError: max_items < 1.
    ///     QueueShutDown: the queue is shut down and empty.
    ///     QueueEmpty: the queue is empty.
    ///
    /// Cancel safety: not a coroutine.
    #[pyo3(signature = (max_items))]
    fn get_nowait_many(
        &self,
        py: Python<'_>,
        max_items: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyList>> {
        let n = positive("max_items", max_items)?;
        let (items, wake) = {
            let mut core = self.lock()?;
            let items = core.get_many(n, py_lt(py)).map_err(|e| raise(py, e))?;
            let wake = if core.putters.is_empty() {
                0
            } else {
                items.len()
            };
            (items, wake)
        };
        let list = PyList::new(py, items)?.unbind();
        self.wake_n(py, WaitList::Putters, wake)?;
        Ok(list)
    }

    /// Indicate that `n` formerly enqueued tasks are complete.
    ///
    /// Like `asyncio.Queue.task_done`; differences: takes a count `n`
    /// (default 1), applied all at once: if `n` is more than the number of
    /// unfinished tasks nothing changes and ValueError is raised.
    ///
    /// Raises:
    ///     TypeError: n is not an integer.
    ///     ValueError: called more times than there were items put
    ///         ('task_done() called too many times', also for an `n` of
    ///         any size beyond the unfinished count), or n < 1.
    ///
    /// Cancel safety: not a coroutine.
    #[pyo3(signature = (n = one()), text_signature = "($self, n=1)")]
    fn task_done(&self, py: Python<'_>, n: Py<PyAny>) -> PyResult<()> {
        let n = positive("n", n.bind(py))?;
        let woken = self.lock()?.task_done(n);
        match woken {
            None => Err(PyValueError::new_err("task_done() called too many times")),
            Some(joiners) => set_all(py, &joiners, true),
        }
    }

    /// Wait until every item put has been gotten and marked done.
    ///
    /// Like `asyncio.Queue.join`; differences: none (the loop it binds to
    /// is tracked separately from the getters', as asyncio's join `Event`
    /// is; a mismatch names the queue rather than the event).
    ///
    /// Raises:
    ///     RuntimeError: join() was used on a different event loop before.
    ///
    /// Cancel safety: cancelling a waiting join has no effect on the queue.
    fn join(slf: &Bound<'_, Self>) -> PyResult<Py<QueueOp>> {
        QueueOp::create(slf, Work::Join)
    }

    /// Shut down the queue: puts raise QueueShutDown, gets raise it once the
    /// queue is empty.
    ///
    /// Like `asyncio.Queue.shutdown` of Python 3.13 (on every version);
    /// differences: with immediate=True a PriorityQueue drops its items
    /// without comparing them.
    ///
    /// With immediate=True the queue is emptied, each dropped item counts
    /// as done (which may release `join()`), and gets raise at once. All
    /// blocked putters and getters are woken. `immediate` may be any object;
    /// its truth value is used, as asyncio does.
    ///
    /// Raises:
    ///     Nothing of its own.
    ///
    /// Cancel safety: not a coroutine.
    #[pyo3(signature = (immediate = None), text_signature = "($self, immediate=False)")]
    fn shutdown(&self, py: Python<'_>, immediate: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let immediate = match immediate {
            Some(flag) => flag.is_truthy()?,
            None => false,
        };
        let out = self.lock()?.shutdown(immediate);
        set_all(py, &out.joiners, true)?;
        set_all(py, &out.getters, false)?;
        set_all(py, &out.putters, false)?;
        drop(out.dropped);
        Ok(())
    }

    /// `async for item in queue:` gets items until the queue is shut down
    /// and empty.
    ///
    /// Not in asyncio. Each step is an `await q.get()`; `task_done()` is
    /// not called for you.
    ///
    /// Raises:
    ///     Nothing of its own; the loop ends on QueueShutDown.
    ///
    /// Cancel safety: as `get()`.
    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The next item (an awaitable), ending the iteration on shutdown.
    ///
    /// Not in asyncio; `await q.get()` except that a shut-down, empty queue
    /// raises StopAsyncIteration instead of QueueShutDown.
    ///
    /// Raises:
    ///     StopAsyncIteration: the queue is shut down and empty.
    ///
    /// Cancel safety: as `get()`.
    fn __anext__(slf: &Bound<'_, Self>) -> PyResult<Py<QueueOp>> {
        QueueOp::create(slf, Work::Next)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        Ok(format!(
            "<{} at {:#x} {}>",
            slf.get_type().name()?,
            slf.as_ptr() as usize,
            Self::format(slf)?
        ))
    }

    fn __str__(slf: &Bound<'_, Self>) -> PyResult<String> {
        Ok(format!(
            "<{} {}>",
            slf.get_type().name()?,
            Self::format(slf)?
        ))
    }

    /// Copy and pickle support: `copy.copy`, `copy.deepcopy` and `pickle`
    /// rebuild the queue with its items (a priority queue keeps its heap
    /// layout), unfinished count, shut-down flag and `maxsize`, then apply
    /// `__getstate__()` as for any object.
    ///
    /// Like copying or pickling an `asyncio.Queue`; differences: a shallow
    /// copy holds the same items but does not share storage with the
    /// original (asyncio's shares its deque). As with asyncio's, a queue
    /// that tasks wait on, or that is bound to an event loop, copies but
    /// does not pickle or deep-copy: the waiting futures and the loop
    /// cannot be.
    ///
    /// Raises:
    ///     RuntimeError: the queue is in use by another thread.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        super::snapshot::reduce(slf)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(maxsize) = self.maxsize.try_lock() {
            visit.call(&*maxsize)?;
        }
        let Some(core) = self.core.try_lock() else {
            return Ok(());
        };
        for x in core.items() {
            visit.call(x)?;
        }
        for w in core
            .getters
            .iter()
            .chain(&core.putters)
            .chain(&core.joiners)
        {
            visit.call(w)?;
        }
        visit.call(&core.loop_)?;
        visit.call(&core.join_loop)?;
        Ok(())
    }

    fn __clear__(&self) {
        // Take everything out under the lock, release it, then let go: a
        // finaliser run by the drop may look at the queue.
        if let Some(mut core) = self.core.try_lock() {
            let old = std::mem::replace(&mut *core, QueueCore::new(Kind::Fifo, Limit::Unbounded));
            drop(core);
            drop(old);
        }
    }
}

impl PyQueue {
    /// asyncio's `Queue._format()`.
    fn format(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let me = slf.get();
        let mut out = format!("maxsize={}", me.maxsize_object(py).bind(py).repr()?);
        let (items, getters, putters, tasks, shutdown) = {
            let core = me.lock()?;
            let items: Vec<Py<PyAny>> = core.items().into_iter().map(|x| x.clone_ref(py)).collect();
            (
                items,
                core.getters.len(),
                core.putters.len(),
                core.unfinished,
                core.shutdown,
            )
        };
        if !items.is_empty() {
            out += &format!(" _queue={}", PyList::new(py, items)?.repr()?);
        }
        if getters > 0 {
            out += &format!(" _getters[{getters}]");
        }
        if putters > 0 {
            out += &format!(" _putters[{putters}]");
        }
        if tasks > 0 {
            out += &format!(" tasks={tasks}");
        }
        if shutdown {
            out += " shutdown";
        }
        Ok(out)
    }
}

#[pymethods]
impl PyLifoQueue {
    #[new]
    #[pyo3(signature = (maxsize = zero()), text_signature = "(maxsize=0)")]
    fn new(py: Python<'_>, maxsize: Py<PyAny>) -> PyResult<PyClassInitializer<Self>> {
        let base = PyQueue::build(Kind::Lifo, maxsize.bind(py))?;
        Ok(PyClassInitializer::from(base).add_subclass(PyLifoQueue))
    }
}

#[pymethods]
impl PyPriorityQueue {
    #[new]
    #[pyo3(signature = (maxsize = zero()), text_signature = "(maxsize=0)")]
    fn new(py: Python<'_>, maxsize: Py<PyAny>) -> PyResult<PyClassInitializer<Self>> {
        let base = PyQueue::build(Kind::Priority, maxsize.bind(py))?;
        Ok(PyClassInitializer::from(base).add_subclass(PyPriorityQueue))
    }
}

/// The default `n` of `task_done`, `1`.
fn one() -> Py<PyAny> {
    Python::attach(|py| {
        1i32.into_pyobject(py)
            .map_or_else(|_| py.None(), |z| z.into_any().unbind())
    })
}

/// The default `maxsize`, `0`.
fn zero() -> Py<PyAny> {
    Python::attach(|py| {
        0i32.into_pyobject(py)
            .map_or_else(|_| py.None(), |z| z.into_any().unbind())
    })
}

//! `rustasync.Channel`: the engine in `crate::core` with Python objects as
//! items, usable from asyncio tasks on any loop, plain threads and tokio.
//!
//! Async operations return small awaitable objects (`RecvOp`, `SendOp`,
//! `SendManyOp`). Nothing happens until they are awaited. When an operation
//! can complete at once it completes without suspending; otherwise it yields
//! a `loop.create_future()` future to the Task and registers a waker that
//! resolves that future through the loop's wakeup batcher
//! (`crate::runtime`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::{Duration, Instant};

use pyo3::exceptions::{
    PyOverflowError, PyStopAsyncIteration, PyTimeoutError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyInt, PyList, PyType};
use pyo3::{PyTraverseError, PyVisit};

use crate::core::{
    self, RecvPoll, RecvStart, RecvTicket, RecvTimeoutError, SendPoll, SendStart, SendTicket,
    SendTimeoutError, TryRecvError, TrySendError,
};
use crate::runtime::FutureWake;

pyo3::create_exception!(
    rustasync,
    ChannelClosed,
    pyo3::exceptions::PyException,
    "Raised by a send on a closed Channel, and by a receive on a closed Channel that has been drained."
);

/// The engine type behind a `rustasync.Channel`.
pub type Core = core::Channel<Py<PyAny>>;

fn asyncio_exc<'py>(py: Python<'py>, name: &'static str) -> PyResult<Bound<'py, PyType>> {
    static EMPTY: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    static FULL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    let cell = if name == "QueueEmpty" { &EMPTY } else { &FULL };
    Ok(cell.import(py, "asyncio", name)?.clone())
}

/// `ChannelClosed`, for Rust code that bridges channel operations.
pub fn closed_error() -> PyErr {
    closed_err()
}

fn closed_err() -> PyErr {
    ChannelClosed::new_err("channel is closed")
}

/// Re-raise what `throw(typ, val, tb)` was given.
pub(crate) fn thrown(typ: Bound<'_, PyAny>, val: Option<Bound<'_, PyAny>>) -> PyErr {
    crate::awaitable::thrown(typ.py(), &typ, val.as_ref(), None).unwrap_or_else(|e| e)
}

/// A `timeout` argument: None (wait forever) or a non-negative real number
/// of seconds. An int too large for a float waits forever, as a huge float
/// does.
fn parse_timeout(timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Instant>> {
    let Some(t) = timeout else {
        return Ok(None);
    };
    let py = t.py();
    let t: f64 = match t.extract() {
        Ok(t) => t,
        Err(e) if e.is_instance_of::<PyOverflowError>(py) && t.is_instance_of::<PyInt>() => {
            if t.lt(0)? {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            }
        }
        Err(e) if e.is_instance_of::<PyTypeError>(py) => {
            return Err(PyTypeError::new_err(format!(
                "timeout must be a number or None, not {}",
                t.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            )))
        }
        Err(e) => return Err(e),
    };
    if t.is_nan() || t < 0.0 {
        return Err(PyValueError::new_err(
            "timeout must be a non-negative number or None",
        ));
    }
    Ok(Some(
        Instant::now() + Duration::try_from_secs_f64(t).unwrap_or(Duration::MAX / 4),
    ))
}

/// A `max_items` argument: an integer >= 1 (not a bool). An int too large
/// for a `usize` reads as `usize::MAX`: take what is there.
fn parse_max_items(max_items: &Bound<'_, PyAny>) -> PyResult<usize> {
    if max_items.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyTypeError::new_err("max_items must be an int, not bool"));
    }
    let n = crate::args::index(max_items, "max_items")?;
    if n < 1 {
        return Err(PyValueError::new_err("max_items must be at least 1"));
    }
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// True on the interpreter's main thread, the only one that runs signal
/// handlers.
fn on_main_thread(py: Python<'_>) -> bool {
    thread_local!(static IS_MAIN: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) });
    if let Some(known) = IS_MAIN.with(|c| c.get()) {
        return known;
    }
    static MAIN: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    static CURRENT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let main = MAIN
        .import(py, "threading", "main_thread")
        .and_then(|f| f.call0());
    let cur = CURRENT
        .import(py, "threading", "current_thread")
        .and_then(|f| f.call0());
    let is_main = matches!((main, cur), (Ok(m), Ok(c)) if m.is(&c));
    IS_MAIN.with(|c| c.set(Some(is_main)));
    is_main
}

/// Run `f` detached. On the main thread, check for signals
/// (KeyboardInterrupt) every few tens of milliseconds while blocked; other
/// threads never re-attach while they wait, so a daemon thread blocked at
/// interpreter exit stays out of the interpreter's way.
pub(crate) fn blocking<R: Send>(
    py: Python<'_>,
    f: impl FnOnce(&mut dyn FnMut() -> bool) -> R + Send,
) -> (R, Option<PyErr>) {
    let main = on_main_thread(py);
    let mut sig: Option<PyErr> = None;
    let r = py.detach(|| {
        let mut check = || {
            main && Python::attach(|py| match py.check_signals() {
                Ok(()) => false,
                Err(e) => {
                    sig = Some(e);
                    true
                }
            })
        };
        f(&mut check)
    });
    (r, sig)
}

/// A bounded or unbounded multi-producer, multi-consumer channel that works
/// across asyncio loops, threads and Rust (tokio) tasks.
///
/// Channel(maxsize=0)
///
/// `maxsize <= 0` (or None) means unbounded, as for `asyncio.Queue`; so does
/// a `maxsize` too large for 64 bits, a bound that could never be reached.
/// Like `asyncio.Queue`, but thread-safe, closable (`close()`; receivers
/// drain what is left, then get `ChannelClosed`, and `async for` ends), with
/// batch operations (`send_many`, `recv_many`) and blocking methods for
/// threads (`send_blocking`, `recv_blocking`, `recv_many_blocking`), which
/// release the interpreter while they wait. Items are delivered in FIFO
/// order and exactly once. There is no `task_done()`/`join()`.
#[pyclass(frozen, module = "rustasync._rustasync", name = "Channel")]
pub struct PyChannel {
    inner: Arc<Core>,
}

impl PyChannel {
    /// Wrap an engine, e.g. one also used by Rust tasks.
    pub fn from_core(inner: Arc<Core>) -> Self {
        PyChannel { inner }
    }

    /// The engine, for Rust code (tokio tasks) to send and receive on.
    pub fn core(&self) -> &Arc<Core> {
        &self.inner
    }
}

#[pymethods]
impl PyChannel {
    #[new]
    #[pyo3(signature = (maxsize = None))]
    fn new(maxsize: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let cap = match maxsize {
            None => None,
            Some(m) if m.is_none() => None,
            Some(m) => {
                if m.is_instance_of::<pyo3::types::PyBool>() {
                    return Err(PyTypeError::new_err("maxsize must be an int, not bool"));
                }
                let n = crate::args::index_exact(m, "maxsize").map_err(|e| {
                    if e.is_instance_of::<PyTypeError>(m.py()) {
                        PyTypeError::new_err(format!(
                            "maxsize must be an int or None, not {}",
                            m.get_type()
                                .name()
                                .map(|n| n.to_string())
                                .unwrap_or_default()
                        ))
                    } else {
                        e
                    }
                })?;
                // As asyncio.Queue: <= 0 is unbounded, and so is a bound too
                // large for 64 bits, which could never be reached.
                match n {
                    Ok(n) if n > 0 => usize::try_from(n).ok(),
                    _ => None,
                }
            }
        };
        Ok(PyChannel {
            inner: Arc::new(Core::new(cap)),
        })
    }

    #[classmethod]
    fn __class_getitem__(cls: &Bound<'_, PyType>, item: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = cls.py();
        static ALIAS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        Ok(ALIAS
            .import(py, "types", "GenericAlias")?
            .call1((cls, item))?
            .unbind())
    }

    /// Number of queued items.
    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Number of queued items (as `asyncio.Queue.qsize`).
    fn qsize(&self) -> usize {
        self.inner.len()
    }

    /// Capacity; 0 means unbounded (as `asyncio.Queue.maxsize`).
    #[getter]
    fn maxsize(&self) -> usize {
        self.inner.capacity().unwrap_or(0)
    }

    /// True if no items are queued.
    fn empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// True if `send_nowait` would raise `QueueFull` now: the queued items
    /// plus the capacity reserved for woken senders (`stats()["reserved"]`)
    /// fill the bound, and no receiver is waiting.
    fn full(&self) -> bool {
        self.inner.is_full()
    }

    /// True once `close()` has been called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Close the channel; returns False if it was already closed.
    ///
    /// Waiting and later senders get `ChannelClosed` (their item is not
    /// sent). Receivers get what is left, then `ChannelClosed`; `async for`
    /// ends. Safe to call from any thread.
    fn close(&self) -> bool {
        self.inner.close()
    }

    /// A snapshot of the channel's counters, as a dict: `qsize`, `maxsize`,
    /// `closed`, `waiting_senders`, `waiting_receivers`, `sent`, `received`,
    /// `reserved` (capacity promised to senders that were woken for room and
    /// have not sent yet; it counts against `maxsize` like a queued item).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("qsize", s.len)?;
        d.set_item("maxsize", s.capacity.unwrap_or(0))?;
        d.set_item("closed", s.closed)?;
        d.set_item("waiting_senders", s.waiting_senders)?;
        d.set_item("waiting_receivers", s.waiting_receivers)?;
        d.set_item("sent", s.sent)?;
        d.set_item("received", s.received)?;
        d.set_item("reserved", s.reserved)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let s = self.inner.stats();
        format!(
            "<rustasync.Channel maxsize={} qsize={} reserved={} closed={} waiting_senders={} waiting_receivers={}>",
            s.capacity.unwrap_or(0),
            s.len,
            s.reserved,
            s.closed,
            s.waiting_senders,
            s.waiting_receivers
        )
    }

    /// Send without waiting.
    ///
    /// Raises:
    ///     asyncio.QueueFull: the channel is full.
    ///     ChannelClosed: the channel is closed.
    fn send_nowait(&self, py: Python<'_>, item: Py<PyAny>) -> PyResult<()> {
        match self.inner.try_send(item) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(PyErr::from_type(asyncio_exc(py, "QueueFull")?, ())),
            Err(TrySendError::Closed(_)) => Err(closed_err()),
        }
    }

    /// Receive without waiting.
    ///
    /// Raises:
    ///     asyncio.QueueEmpty: nothing is queued.
    ///     ChannelClosed: closed and drained.
    fn recv_nowait(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self.inner.try_recv() {
            Ok(v) => Ok(v),
            Err(TryRecvError::Empty) => Err(PyErr::from_type(asyncio_exc(py, "QueueEmpty")?, ())),
            Err(TryRecvError::Closed) => Err(closed_err()),
        }
    }

    /// Send `item`, waiting while the channel is full (awaitable).
    ///
    /// Raises:
    ///     ChannelClosed: the channel is or gets closed before the item is in.
    ///
    /// Cancel safety: if the send is cancelled, the item was not sent and
    /// never will be; the place in line it held passes to the next sender.
    fn send(&self, item: Py<PyAny>) -> SendOp {
        SendOp {
            chan: Hold::new(&self.inner),
            state: Mutex::new(SendState::Init(item)),
        }
    }

    /// Send every item of `items`, in order, waiting for room as needed
    /// (awaitable); resolves to the number of items sent.
    ///
    /// Raises:
    ///     ChannelClosed: the channel is or gets closed; a prefix of the
    ///     items may have been sent: the exception's `sent` attribute tells
    ///     how many.
    ///
    /// Cancel safety: on cancellation, a prefix of `items` has been sent,
    /// the rest is not; keep the operation to read how many
    /// (`op = ch.send_many(items)`, then `op.sent` after the
    /// `CancelledError`), so a retry sends exactly the rest.
    fn send_many(&self, items: &Bound<'_, PyAny>) -> PyResult<SendManyOp> {
        let items: VecDeque<Py<PyAny>> = crate::args::iterate(items, "items")?
            .map(|i| i.map(Bound::unbind))
            .collect::<PyResult<_>>()?;
        Ok(SendManyOp {
            chan: Hold::new(&self.inner),
            total: items.len(),
            sent: std::sync::atomic::AtomicUsize::new(0),
            started: std::sync::atomic::AtomicBool::new(false),
            finished: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::new(SendManyState { items, wait: None }),
        })
    }

    /// Receive one item, waiting while the channel is empty (awaitable).
    ///
    /// Raises:
    ///     ChannelClosed: the channel is closed and drained.
    ///
    /// Cancel safety: a cancelled receive never loses an item. If one had
    /// already been handed to it, the item goes back first in line (to the
    /// next waiting receiver, else the front of the channel).
    fn recv(&self) -> RecvOp {
        RecvOp::new(&self.inner, Mode::One)
    }

    /// Receive between 1 and `max_items` items as a list, waiting while the
    /// channel is empty (awaitable).
    ///
    /// Raises:
    ///     ValueError: `max_items < 1`.
    ///     ChannelClosed: the channel is closed and drained.
    ///
    /// Cancel safety: as `recv()`; nothing is lost.
    #[pyo3(signature = (max_items))]
    fn recv_many(&self, max_items: &Bound<'_, PyAny>) -> PyResult<RecvOp> {
        Ok(RecvOp::new(
            &self.inner,
            Mode::Many(parse_max_items(max_items)?),
        ))
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The next item; `async for` ends once the channel is closed and drained.
    ///
    /// Cancel safety: as `recv()`.
    fn __anext__(&self) -> RecvOp {
        RecvOp::new(&self.inner, Mode::Iter)
    }

    /// Send from a plain thread, blocking (with the interpreter released)
    /// while the channel is full.
    ///
    /// Raises:
    ///     TimeoutError: not sent within `timeout` seconds.
    ///     TypeError: timeout is not a number or None.
    ///     ValueError: negative timeout.
    ///     ChannelClosed: the channel is or gets closed.
    ///
    /// Do not call it on an event loop's thread: it blocks the loop.
    #[pyo3(signature = (item, timeout = None))]
    fn send_blocking(
        &self,
        py: Python<'_>,
        item: Py<PyAny>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let deadline = parse_timeout(timeout)?;
        let item = match self.inner.try_send(item) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Closed(_)) => return Err(closed_err()),
            Err(TrySendError::Full(item)) => item,
        };
        let chan = &self.inner;
        let (r, sig) = blocking(py, |check| chan.send_blocking_with(item, deadline, check));
        match r {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(_)) => Err(PyTimeoutError::new_err("send timed out")),
            Err(SendTimeoutError::Closed(_)) => Err(closed_err()),
            Err(SendTimeoutError::Interrupted(_)) => Err(sig.expect("interrupted by a signal")),
        }
    }

    /// Send every item of `items` in order from a plain thread, blocking
    /// while the channel is full.
    ///
    /// Raises:
    ///     TimeoutError, ValueError, ChannelClosed: as `send_blocking`; a
    ///     prefix of the items may have been sent: the exception's `sent`
    ///     attribute tells how many.
    ///
    /// Returns the number of items sent (all of them).
    #[pyo3(signature = (items, timeout = None))]
    fn send_many_blocking(
        &self,
        py: Python<'_>,
        items: &Bound<'_, PyAny>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let deadline = parse_timeout(timeout)?;
        let mut items: VecDeque<Py<PyAny>> = crate::args::iterate(items, "items")?
            .map(|i| i.map(Bound::unbind))
            .collect::<PyResult<_>>()?;
        let total = items.len();
        match self.inner.try_send_many(&mut items) {
            Err(_) => return Err(with_sent(py, closed_err(), 0)),
            Ok(_) if items.is_empty() => return Ok(total),
            Ok(_) => {}
        }
        let chan = &self.inner;
        let ((r, left), sig) = blocking(py, |check| {
            let r = chan.send_many_blocking(&mut items, deadline, check);
            (r, items)
        });
        let sent = total - left.len();
        drop(left);
        match r {
            Ok(()) => Ok(total),
            Err(SendTimeoutError::Timeout(())) => Err(with_sent(
                py,
                PyTimeoutError::new_err("send timed out"),
                sent,
            )),
            Err(SendTimeoutError::Closed(())) => Err(with_sent(py, closed_err(), sent)),
            Err(SendTimeoutError::Interrupted(())) => Err(sig.expect("interrupted by a signal")),
        }
    }

    /// Receive from a plain thread, blocking (with the interpreter released)
    /// while the channel is empty.
    ///
    /// Raises:
    ///     TimeoutError: nothing arrived within `timeout` seconds.
    ///     TypeError: timeout is not a number or None.
    ///     ValueError: negative timeout.
    ///     ChannelClosed: closed and drained.
    #[pyo3(signature = (timeout = None))]
    fn recv_blocking(
        &self,
        py: Python<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let deadline = parse_timeout(timeout)?;
        match self.inner.try_recv() {
            Ok(v) => return Ok(v),
            Err(TryRecvError::Closed) => return Err(closed_err()),
            Err(TryRecvError::Empty) => {}
        }
        let chan = &self.inner;
        let (r, sig) = blocking(py, |check| chan.recv_blocking_with(deadline, check));
        r.map_err(|e| recv_error(e, sig))
    }

    /// Receive between 1 and `max_items` items as a list from a plain
    /// thread, blocking while the channel is empty.
    ///
    /// Raises:
    ///     TimeoutError, ChannelClosed: as `recv_blocking`.
    ///     TypeError: max_items is not an int, or timeout not a number.
    ///     ValueError: `max_items < 1` or negative timeout.
    #[pyo3(signature = (max_items, timeout = None))]
    fn recv_many_blocking<'py>(
        &self,
        py: Python<'py>,
        max_items: &Bound<'py, PyAny>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let max = parse_max_items(max_items)?;
        let deadline = parse_timeout(timeout)?;
        let mut out = Vec::new();
        match self.inner.try_recv_many(max, &mut out) {
            Ok(_) => return PyList::new(py, out),
            Err(TryRecvError::Closed) => return Err(closed_err()),
            Err(TryRecvError::Empty) => {}
        }
        let chan = &self.inner;
        let (r, sig) = blocking(py, |check| {
            chan.recv_many_blocking_with(max, deadline, check)
        });
        PyList::new(py, r.map_err(|e| recv_error(e, sig))?)
    }

    // The queued items are reported only while this object is the engine's
    // only live holder: an operation in flight, another `Channel` object or
    // a tokio task sharing it may still receive them (docs/design.md, rule
    // 1); finished operations marked themselves idle. Nobody can clone the
    // engine meanwhile: every other way to it is gone or idle.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if Core::live_handles(&self.inner) != 1 {
            return Ok(());
        }
        self.inner.try_for_each_item(|item| visit.call(item))
    }

    fn __clear__(&self) {
        if Core::live_handles(&self.inner) == 1 {
            drop(self.inner.take_all());
        }
    }
}

fn recv_error(e: RecvTimeoutError, sig: Option<PyErr>) -> PyErr {
    match e {
        RecvTimeoutError::Timeout => PyTimeoutError::new_err("receive timed out"),
        RecvTimeoutError::Closed => closed_err(),
        RecvTimeoutError::Interrupted => sig.expect("interrupted by a signal"),
    }
}

/// A suspended async operation: its place in line and the future the Task
/// waits on.
struct Wait<Ticket> {
    ticket: Ticket,
    wake: Arc<FutureWake>,
}

fn new_wake(py: Python<'_>) -> PyResult<(Arc<FutureWake>, Waker)> {
    let w = FutureWake::new(py)?;
    Ok((w.clone(), Waker::from(w)))
}

/// Yield the future to the Task again (after a spurious resume).
fn yield_again(py: Python<'_>, wake: &Arc<FutureWake>) -> PyResult<Option<Py<PyAny>>> {
    let fut = wake.future().bind(py);
    fut.setattr(pyo3::intern!(py, "_asyncio_future_blocking"), true)?;
    Ok(Some(fut.clone().unbind()))
}

fn future_done(py: Python<'_>, wake: &Arc<FutureWake>) -> bool {
    wake.future()
        .bind(py)
        .call_method0(pyo3::intern!(py, "done"))
        .and_then(|d| d.is_truthy())
        .unwrap_or(true)
}

/// An operation's hold on the engine, marked idle once the operation is
/// finished, so that it no longer stops the channel from reporting its
/// items to the collector.
struct Hold {
    chan: Arc<Core>,
    idle: std::sync::atomic::AtomicBool,
}

impl Hold {
    fn new(chan: &Arc<Core>) -> Self {
        Hold {
            chan: chan.clone(),
            idle: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn settle(&self) {
        if !self.idle.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.chan.mark_idle();
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if *self.idle.get_mut() {
            self.chan.unmark_idle();
        }
    }
}

impl std::ops::Deref for Hold {
    type Target = Arc<Core>;
    fn deref(&self) -> &Arc<Core> {
        &self.chan
    }
}

/// `ChannelClosed`/`TimeoutError` of a batch send, with how many items went
/// in as its `sent` attribute (the caller can retry exactly the rest).
fn with_sent(py: Python<'_>, e: PyErr, sent: usize) -> PyErr {
    if e.is_instance_of::<ChannelClosed>(py) || e.is_instance_of::<PyTimeoutError>(py) {
        let _ = e.value(py).setattr(pyo3::intern!(py, "sent"), sent);
    }
    e
}

/// If the wakeup finds the receiver's loop closed, the receiver will never
/// run: give its place in line, and any item handed to it, back.
fn revoke_if_dead(wake: &Arc<FutureWake>, ticket: &RecvTicket<Py<PyAny>>) {
    let r = ticket.revoker();
    wake.set_on_dead(Box::new(move || r.revoke()));
}

/// The same for a sender: its place, or the permit it was granted, passes
/// on to the next sender.
fn revoke_send_if_dead(wake: &Arc<FutureWake>, ticket: &SendTicket<Py<PyAny>>) {
    let r = ticket.revoker();
    wake.set_on_dead(Box::new(move || r.revoke()));
}

#[derive(Clone, Copy)]
enum Mode {
    One,
    Many(usize),
    Iter,
}

enum RecvState {
    Init,
    Waiting(Wait<RecvTicket<Py<PyAny>>>),
    Done,
}

/// Awaitable returned by `Channel.recv()`, `recv_many()` and `__anext__`.
///
/// Cancel safety: cancelling, closing or dropping it never loses an item;
/// an item already handed to it goes back first in line.
#[pyclass(frozen, module = "rustasync._rustasync", name = "RecvOp")]
pub struct RecvOp {
    chan: Hold,
    mode: Mode,
    state: Mutex<RecvState>,
}

impl RecvOp {
    fn new(chan: &Arc<Core>, mode: Mode) -> Self {
        RecvOp {
            chan: Hold::new(chan),
            mode,
            state: Mutex::new(RecvState::Init),
        }
    }

    fn deliver(&self, py: Python<'_>, first: Py<PyAny>) -> PyResult<Option<Py<PyAny>>> {
        match self.mode {
            Mode::One | Mode::Iter => crate::awaitable::complete(py, first),
            Mode::Many(max) => {
                let mut out = Vec::with_capacity(max.min(self.chan.len() + 1));
                out.push(first);
                let _ = self.chan.try_recv_many(max - 1, &mut out);
                crate::awaitable::complete(py, PyList::new(py, out)?.into_any().unbind())
            }
        }
    }

    fn closed(&self) -> PyErr {
        match self.mode {
            Mode::Iter => PyStopAsyncIteration::new_err(()),
            _ => closed_err(),
        }
    }

    fn take_state(&self) -> RecvState {
        std::mem::replace(
            &mut *self.state.lock().unwrap_or_else(|e| e.into_inner()),
            RecvState::Done,
        )
    }

    fn put_state(&self, new: RecvState) {
        let old = std::mem::replace(
            &mut *self.state.lock().unwrap_or_else(|e| e.into_inner()),
            new,
        );
        drop(old);
    }

    /// One step from `st`, with no lock held; returns the result and the
    /// wait to keep, if still waiting.
    #[allow(clippy::type_complexity)]
    fn advance(
        &self,
        py: Python<'_>,
        st: RecvState,
    ) -> (
        PyResult<Option<Py<PyAny>>>,
        Option<Wait<RecvTicket<Py<PyAny>>>>,
    ) {
        match st {
            RecvState::Init => {
                match self.chan.try_recv() {
                    Ok(v) => return (self.deliver(py, v), None),
                    Err(TryRecvError::Closed) => return (Err(self.closed()), None),
                    Err(TryRecvError::Empty) => {}
                }
                let (wake, waker) = match new_wake(py) {
                    Ok(w) => w,
                    Err(e) => return (Err(e), None),
                };
                match self.chan.recv_or_wait(&waker) {
                    RecvStart::Item(v) => (self.deliver(py, v), None),
                    RecvStart::Closed => (Err(self.closed()), None),
                    RecvStart::Wait(ticket) => {
                        revoke_if_dead(&wake, &ticket);
                        let fut = wake.future().clone_ref(py);
                        (Ok(Some(fut)), Some(Wait { ticket, wake }))
                    }
                }
            }
            RecvState::Waiting(mut w) => match w.ticket.poll(None) {
                RecvPoll::Ready(v) => {
                    drop(w);
                    (self.deliver(py, v), None)
                }
                RecvPoll::Closed => (Err(self.closed()), None),
                RecvPoll::Pending => {
                    if future_done(py, &w.wake) {
                        // Resumed without a wakeup (its future was resolved
                        // or cancelled by someone else): wait on a new one.
                        match new_wake(py) {
                            Ok((wake, waker)) => {
                                revoke_if_dead(&wake, &w.ticket);
                                let _ = w.ticket.poll(Some(&waker));
                                w.wake = wake;
                            }
                            Err(e) => return (Err(e), None),
                        }
                    }
                    (yield_again(py, &w.wake), Some(w))
                }
            },
            RecvState::Done => (
                Err(pyo3::exceptions::PyRuntimeError::new_err(
                    "cannot reuse already awaited operation",
                )),
                None,
            ),
        }
    }
}

#[pymethods]
impl RecvOp {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        // The state is taken out of the lock for the step: Python runs in it
        // (creating futures, finalisers of dropped objects), and nothing of
        // ours is locked meanwhile. A re-entrant step finds it `Done`.
        let (r, keep) = self.advance(py, self.take_state());
        match keep {
            Some(w) => self.put_state(RecvState::Waiting(w)),
            None => self.chan.settle(),
        }
        r
    }

    /// Same as `__next__` (asyncio only ever sends None).
    #[pyo3(signature = (_value, /))]
    fn send(&self, py: Python<'_>, _value: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        crate::awaitable::as_send(py, self.__next__(py))
    }

    /// Give up (e.g. on cancellation), putting back any handed item, and
    /// raise the given exception.
    #[pyo3(signature = (typ, val = None, _tb = None, /))]
    fn throw(
        &self,
        typ: Bound<'_, PyAny>,
        val: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        drop(self.take_state());
        self.chan.settle();
        Err(thrown(typ, val))
    }

    /// Give up, putting back any handed item.
    fn close(&self) {
        drop(self.take_state());
        self.chan.settle();
    }

    // No `__traverse__`: the only Python object a waiting receive holds is
    // the future its Task waits on, and that future is co-owned (through
    // the `Arc<FutureWake>`) by the channel's list of waiting receivers. As
    // with `asyncio.Queue._getters`, the waiter list keeps it, and so the
    // waiting Task, reachable. See docs/design.md.
}

impl Drop for RecvOp {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if matches!(st, RecvState::Init) {
            crate::awaitable::warn_never_awaited(match self.mode {
                Mode::One => "Channel.recv",
                Mode::Many(_) => "Channel.recv_many",
                Mode::Iter => "Channel.__anext__",
            });
        }
    }
}

impl Drop for SendOp {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if matches!(st, SendState::Init(_)) {
            crate::awaitable::warn_never_awaited("Channel.send");
        }
    }
}

impl Drop for SendManyOp {
    fn drop(&mut self) {
        if !self.started.load(std::sync::atomic::Ordering::Relaxed) {
            crate::awaitable::warn_never_awaited("Channel.send_many");
        }
    }
}

enum SendState {
    Init(Py<PyAny>),
    Waiting(Wait<SendTicket<Py<PyAny>>>, Py<PyAny>),
    Done,
}

/// Awaitable returned by `Channel.send()`.
///
/// Cancel safety: if cancelled (or closed, or dropped) before completing,
/// the item was not sent.
#[pyclass(frozen, module = "rustasync._rustasync", name = "SendOp")]
pub struct SendOp {
    chan: Hold,
    state: Mutex<SendState>,
}

impl SendOp {
    fn replace_state(&self, new: SendState) -> SendState {
        std::mem::replace(
            &mut *self.state.lock().unwrap_or_else(|e| e.into_inner()),
            new,
        )
    }

    /// One step from `st` with no lock held; a wait to keep goes to `keep`.
    fn advance(
        &self,
        py: Python<'_>,
        st: SendState,
        keep: &mut Option<SendState>,
    ) -> PyResult<Option<Py<PyAny>>> {
        match st {
            SendState::Init(item) => {
                let item = match self.chan.try_send(item) {
                    Ok(()) => return Ok(None),
                    Err(TrySendError::Closed(_)) => return Err(closed_err()),
                    Err(TrySendError::Full(item)) => item,
                };
                let (wake, waker) = new_wake(py)?;
                match self.chan.send_or_wait(item, &waker) {
                    SendStart::Sent => Ok(None),
                    SendStart::Closed(_) => Err(closed_err()),
                    SendStart::Wait(ticket, item) => {
                        revoke_send_if_dead(&wake, &ticket);
                        let fut = wake.future().clone_ref(py);
                        *keep = Some(SendState::Waiting(Wait { ticket, wake }, item));
                        Ok(Some(fut))
                    }
                }
            }
            SendState::Waiting(mut w, item) => match w.ticket.poll(item, None) {
                SendPoll::Sent => Ok(None),
                SendPoll::Closed(_) => Err(closed_err()),
                SendPoll::Pending(item) => {
                    let item = if future_done(py, &w.wake) {
                        // Resumed without a wakeup: wait on a new future.
                        let (wake, waker) = new_wake(py)?;
                        revoke_send_if_dead(&wake, &w.ticket);
                        w.wake = wake;
                        match w.ticket.poll(item, Some(&waker)) {
                            SendPoll::Pending(item) => item,
                            SendPoll::Sent => return Ok(None),
                            SendPoll::Closed(_) => return Err(closed_err()),
                        }
                    } else {
                        item
                    };
                    let r = yield_again(py, &w.wake);
                    *keep = Some(SendState::Waiting(w, item));
                    r
                }
            },
            SendState::Done => Err(pyo3::exceptions::PyRuntimeError::new_err(
                "cannot reuse already awaited operation",
            )),
        }
    }
}

#[pymethods]
impl SendOp {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        // As `RecvOp`: step with the state out of the lock.
        let st = self.replace_state(SendState::Done);
        let mut keep = None;
        let r = self.advance(py, st, &mut keep);
        match keep {
            Some(k) => drop(self.replace_state(k)),
            None => self.chan.settle(),
        }
        r
    }

    #[pyo3(signature = (_value, /))]
    fn send(&self, py: Python<'_>, _value: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        crate::awaitable::as_send(py, self.__next__(py))
    }

    #[pyo3(signature = (typ, val = None, _tb = None, /))]
    fn throw(
        &self,
        typ: Bound<'_, PyAny>,
        val: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        drop(self.replace_state(SendState::Done));
        self.chan.settle();
        Err(thrown(typ, val))
    }

    fn close(&self) {
        drop(self.replace_state(SendState::Done));
        self.chan.settle();
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(st) = self.state.try_lock() {
            match &*st {
                SendState::Init(item) => visit.call(item)?,
                // Not the future: the channel's waiter list co-owns it.
                SendState::Waiting(_, item) => visit.call(item)?,
                SendState::Done => {}
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        self.close();
    }
}

struct SendManyState {
    items: VecDeque<Py<PyAny>>,
    wait: Option<Wait<SendTicket<Py<PyAny>>>>,
}

/// Awaitable returned by `Channel.send_many()`; resolves to the number of
/// items sent (all of them).
///
/// Cancel safety: on cancellation a prefix of the items has been sent; the
/// rest is not. `sent` tells how many (also after `ChannelClosed`, which
/// carries the same count as its `sent` attribute).
#[pyclass(frozen, module = "rustasync._rustasync", name = "SendManyOp")]
pub struct SendManyOp {
    chan: Hold,
    state: Mutex<SendManyState>,
    total: usize,
    sent: std::sync::atomic::AtomicUsize,
    /// Awaited, closed or thrown into at least once.
    started: std::sync::atomic::AtomicBool,
    /// Completed, failed, closed or thrown into: never steps again.
    finished: std::sync::atomic::AtomicBool,
}

impl SendManyOp {
    fn take_state(&self) -> SendManyState {
        self.started
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        SendManyState {
            items: std::mem::take(&mut st.items),
            wait: st.wait.take(),
        }
    }

    /// One step on `st`, which is out of the lock.
    fn advance(&self, py: Python<'_>, st: &mut SendManyState) -> PyResult<Option<Py<PyAny>>> {
        // Finish the send we were waiting on, if its permit came.
        if let Some(mut w) = st.wait.take() {
            let head = st.items.pop_front().expect("waiting on the head item");
            match w.ticket.poll(head, None) {
                SendPoll::Sent => {}
                SendPoll::Closed(head) => {
                    st.items.push_front(head);
                    return Err(closed_err());
                }
                SendPoll::Pending(head) => {
                    st.items.push_front(head);
                    if future_done(py, &w.wake) {
                        let (wake, waker) = new_wake(py)?;
                        revoke_send_if_dead(&wake, &w.ticket);
                        let head = st.items.pop_front().expect("just pushed");
                        match w.ticket.poll(head, Some(&waker)) {
                            SendPoll::Pending(head) => st.items.push_front(head),
                            SendPoll::Sent => {}
                            SendPoll::Closed(head) => {
                                st.items.push_front(head);
                                return Err(closed_err());
                            }
                        }
                        w.wake = wake;
                    }
                    let r = yield_again(py, &w.wake);
                    st.wait = Some(w);
                    return r;
                }
            }
        }
        loop {
            if self.chan.try_send_many(&mut st.items).is_err() {
                return Err(closed_err());
            }
            if st.items.is_empty() {
                return Ok(None);
            }
            // The wake first: if it fails, the head item stays unsent, in
            // place, and is counted so.
            let (wake, waker) = new_wake(py)?;
            let head = st.items.pop_front().expect("checked non-empty");
            match self.chan.send_or_wait(head, &waker) {
                SendStart::Sent => continue,
                SendStart::Closed(head) => {
                    st.items.push_front(head);
                    return Err(closed_err());
                }
                SendStart::Wait(ticket, head) => {
                    revoke_send_if_dead(&wake, &ticket);
                    st.items.push_front(head);
                    let fut = wake.future().clone_ref(py);
                    st.wait = Some(Wait { ticket, wake });
                    return Ok(Some(fut));
                }
            }
        }
    }
}

#[pymethods]
impl SendManyOp {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        // As `RecvOp`: step with the state out of the lock. Items sent or
        // given up are dropped here, unlocked.
        if self.finished.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "cannot reuse already awaited operation",
            ));
        }
        let mut st = self.take_state();
        let r = self.advance(py, &mut st);
        if !matches!(r, Ok(Some(_))) {
            self.finished
                .store(true, std::sync::atomic::Ordering::Relaxed);
            self.chan.settle();
        }
        let sent = self.total - st.items.len();
        self.sent.store(sent, std::sync::atomic::Ordering::Relaxed);
        // Finished (sent, or closed): what is left is not sent, ever.
        let leftover =
            (!matches!(r, Ok(Some(_)))).then(|| (std::mem::take(&mut st.items), st.wait.take()));
        let old = std::mem::replace(
            &mut *self.state.lock().unwrap_or_else(|e| e.into_inner()),
            st,
        );
        drop(old);
        drop(leftover);
        match r {
            Ok(None) => crate::awaitable::complete(py, sent.into_pyobject(py)?.into_any().unbind()),
            Err(e) => Err(with_sent(py, e, sent)),
            r => r,
        }
    }

    /// How many items have been sent so far (a prefix of the items).
    #[getter]
    fn sent(&self) -> usize {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[pyo3(signature = (_value, /))]
    fn send(&self, py: Python<'_>, _value: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        crate::awaitable::as_send(py, self.__next__(py))
    }

    #[pyo3(signature = (typ, val = None, _tb = None, /))]
    fn throw(
        &self,
        typ: Bound<'_, PyAny>,
        val: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.close();
        Err(thrown(typ, val))
    }

    fn close(&self) {
        self.finished
            .store(true, std::sync::atomic::Ordering::Relaxed);
        drop(self.take_state());
        self.chan.settle();
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(st) = self.state.try_lock() {
            // Not the future: the channel's waiter list co-owns it.
            for item in &st.items {
                visit.call(item)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        self.close();
    }
}

/// Register the classes and exceptions on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyChannel>()?;
    // The awaitable methods answer `inspect.iscoroutinefunction` as an
    // `async def` would (libraries dispatch on it).
    crate::markers::mark_methods(
        &m.py().get_type::<PyChannel>(),
        &["send", "send_many", "recv", "recv_many"],
    )?;
    m.add_class::<RecvOp>()?;
    m.add_class::<SendOp>()?;
    m.add_class::<SendManyOp>()?;
    m.add("ChannelClosed", m.py().get_type::<ChannelClosed>())?;
    Ok(())
}

//! `Queue`, `LifoQueue` and `PriorityQueue`: asyncio's queues as an on-loop
//! Rust state machine.
//!
//! # Model
//!
//! The state ([`state::QueueCore`]) mirrors `asyncio.Queue` field for field:
//! the items, `_unfinished_tasks`, `_is_shutdown`, and the deques of getter
//! and putter futures. Every operation is the same sequence of steps as the
//! asyncio coroutine it replaces, so `qsize()`, wake-up order, barging and
//! cancellation behave identically:
//!
//! * `get()`/`put()`/`join()` return a [`op::QueueOp`], a coroutine-like
//!   object. Nothing happens until it is awaited (asyncio's methods are
//!   coroutines). Its first step completes at once when it can, with no
//!   suspension and, on CPython 3.11, no `StopIteration` either.
//! * Otherwise it creates a real `loop.create_future()`, appends it to the
//!   matching deque and yields it to the Task. Whoever makes room or adds an
//!   item wakes the first waiter that is not done with `set_result(None)`;
//!   the woken operation re-checks the queue, as asyncio's `while` loops do.
//! * Cancellation arrives through `throw()`. The operation cancels its
//!   future, removes it, and passes an unused wake-up on to the next waiter.
//!
//! The lock around the state is only held for plain Rust work (and the `<`
//! comparisons of a priority queue); futures are woken after it is released.
//! It is taken with `try_lock`: a comparison that re-enters its own queue,
//! or a second thread using the queue at the same moment, gets a
//! `RuntimeError` instead of a deadlock.

pub mod heap;
pub mod lock;
pub mod op;
pub mod pyqueue;
mod slots;
mod snapshot;
pub mod state;

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// The exception classes the queues raise: asyncio's own, so existing
/// `except asyncio.QueueEmpty` clauses keep working.
pub struct QueueExceptions {
    pub empty: Py<PyType>,
    pub full: Py<PyType>,
    /// `asyncio.QueueShutDown` on 3.13+; before that a class of our own.
    pub shutdown: Py<PyType>,
}

static EXCEPTIONS: PyOnceLock<QueueExceptions> = PyOnceLock::new();

impl QueueExceptions {
    pub fn get(py: Python<'_>) -> PyResult<&QueueExceptions> {
        EXCEPTIONS.get_or_try_init(py, || {
            let asyncio = py.import("asyncio")?;
            let shutdown = match asyncio.getattr("QueueShutDown") {
                Ok(cls) => cls.cast_into::<PyType>()?.unbind(),
                Err(_) => PyErr::new_type(
                    py,
                    c"rustasync.QueueShutDown",
                    Some(c"Raised when putting on to or getting from a shut-down Queue."),
                    Some(&py.get_type::<PyException>()),
                    None,
                )?,
            };
            Ok(QueueExceptions {
                empty: asyncio
                    .getattr("QueueEmpty")?
                    .cast_into::<PyType>()?
                    .unbind(),
                full: asyncio
                    .getattr("QueueFull")?
                    .cast_into::<PyType>()?
                    .unbind(),
                shutdown,
            })
        })
    }
}

/// Raise one of the queue exception classes with no arguments, as asyncio
/// does (`raise QueueEmpty`).
pub fn queue_error(py: Python<'_>, pick: fn(&QueueExceptions) -> &Py<PyType>) -> PyErr {
    match QueueExceptions::get(py) {
        Ok(exc) => PyErr::from_type(pick(exc).bind(py).clone(), ()),
        Err(e) => e,
    }
}

/// Add the queue classes and exceptions to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<pyqueue::PyQueue>()?;
    m.add_class::<pyqueue::PyLifoQueue>()?;
    m.add_class::<pyqueue::PyPriorityQueue>()?;
    m.add_function(pyo3::wrap_pyfunction!(snapshot::_rebuild_queue, m)?)?;
    m.add_function(pyo3::wrap_pyfunction!(snapshot::_restore_queue, m)?)?;
    // The methods asyncio writes `async def` answer `iscoroutinefunction`
    // as asyncio's do (and the added awaitable methods alike).
    crate::markers::mark_methods(
        &py.get_type::<pyqueue::PyQueue>(),
        &["put", "get", "join", "put_many", "get_many"],
    )?;
    m.add_class::<op::QueueOp>()?;
    crate::awaitable::patch_am_send::<op::QueueOp>(py);
    crate::awaitable::patch_am_await_self::<op::QueueOp>(py);
    slots::install(py);
    let exc = QueueExceptions::get(py)?;
    m.add("QueueEmpty", exc.empty.bind(py))?;
    m.add("QueueFull", exc.full.bind(py))?;
    m.add("QueueShutDown", exc.shutdown.bind(py))?;
    Ok(())
}

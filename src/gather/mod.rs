//! `rustasync.gather`: asyncio's `gather` with the bookkeeping in Rust.
//!
//! The outer future is a Rust future-like ([`GatheringFuture`]) with the
//! cancel semantics of asyncio's `_GatheringFuture` and the part of the
//! `asyncio.Future` API that asyncio and user code use on a future they did
//! not create (it is not an `asyncio.Future` instance; see its docs). Each
//! child reports to it through a Rust callable, so the per-child Python
//! `_done_callback` of stock asyncio disappears. Children that are un-started
//! `rustasync.sleep` objects are not wrapped in Tasks at all: they take the
//! steps their Tasks would, in batches, one loop callback per batch and
//! iteration, and wait in the loop's timer heap.
//!
//! # Locks
//!
//! The gather's state is behind one `Mutex`. No Python object is dropped and
//! no Python code runs while it is held: values are cloned or taken out,
//! the lock released, then Python is called and the values dropped (a
//! `__del__`, `__eq__` or callback may use the same gather).
//!
//! # Layout
//!
//! `future.rs` is the Python face ([`GatheringFuture`]); `state.rs` its
//! state and how children's reports complete it; `cancel.rs` its `cancel()`,
//! which walks nested gathers without recursing; `children.rs` what it holds
//! for each child; `sleeps.rs` the sleep children and their batches;
//! `trashcan.rs` how nested gathers are freed without recursing; this
//! file the `gather()` function: checking the arguments, finding the loop,
//! and creating the children.

mod cancel;
mod children;
mod future;
mod graph;
mod sleeps;
mod state;
#[cfg(not(Py_LIMITED_API))]
mod trashcan;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{IntoPyDict, PyDict, PyList, PyTuple};

use crate::awaitable::{self, Imports};
use crate::sleep::Sleep;
use children::{Child, Slot};
pub use future::GatheringFuture;
use sleeps::SleepPhase;
use state::{ChildDone, Inner, State};

/// How `gather` takes each argument.
enum Kind<'py> {
    Coroutine,
    Sleep(Bound<'py, Sleep>),
    Other,
}

fn classify<'py>(py: Python<'py>, arg: &Bound<'py, PyAny>) -> PyResult<Option<Kind<'py>>> {
    if unsafe { ffi::PyCoro_CheckExact(arg.as_ptr()) } != 0 {
        return Ok(Some(Kind::Coroutine));
    }
    // A sleep is taken over only once every argument passed this check, so
    // a rejected call leaves it as it was.
    if let Ok(s) = arg.cast::<Sleep>() {
        return Ok(Some(Kind::Sleep(s.clone())));
    }
    let imports = Imports::get(py)?;
    if imports.isfuture.bind(py).call1((arg,))?.is_truthy()?
        || imports.iscoroutine.bind(py).call1((arg,))?.is_truthy()?
        || arg.hasattr(intern!(py, "__await__"))?
    {
        return Ok(Some(Kind::Other));
    }
    Ok(None)
}

/// Close the coroutines among `args` so they do not warn "never awaited".
fn close_coroutines(args: &Bound<'_, PyTuple>) {
    for a in args.iter() {
        if unsafe { ffi::PyCoro_CheckExact(a.as_ptr()) } != 0 {
            let _ = a.call_method0("close");
        }
    }
}

/// The loop for `gather`, found as asyncio's `gather` of the running Python
/// finds it: the running loop; else the loop of the first argument if it is
/// a future; else the event loop asyncio asks for (`events._get_event_loop()`
/// on 3.11, `events.get_event_loop()` on 3.12+), which may be the thread's
/// current loop, a new one (with 3.12's `DeprecationWarning`), or
/// `RuntimeError('There is no current event loop ...')`.
fn gather_loop<'py>(py: Python<'py>, args: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
    if let Some(l) = awaitable::running_loop_opt(py) {
        return Ok(l);
    }
    if let Some(first) = args.iter().next() {
        if Imports::get(py)?
            .isfuture
            .bind(py)
            .call1((&first,))?
            .is_truthy()?
        {
            return py
                .import("asyncio.futures")?
                .call_method1(intern!(py, "_get_loop"), (first,));
        }
    }
    let events = py.import("asyncio.events")?;
    let get_event_loop = match events.getattr(intern!(py, "_get_event_loop")) {
        Ok(f) => f,
        Err(_) => events.getattr(intern!(py, "get_event_loop"))?,
    };
    get_event_loop.call0()
}

/// Every future argument must belong to `loop_` (checked before anything is
/// created, with asyncio's message).
fn check_future_loops(
    py: Python<'_>,
    args: &Bound<'_, PyTuple>,
    loop_: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let isfuture = Imports::get(py)?.isfuture.bind(py);
    for a in args.iter() {
        if unsafe { ffi::PyCoro_CheckExact(a.as_ptr()) } != 0 || a.is_instance_of::<Sleep>() {
            continue;
        }
        if isfuture.call1((&a,))?.is_truthy()?
            && !a.call_method0(intern!(py, "get_loop"))?.is(loop_)
        {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "The future belongs to a different loop than the one specified as the loop argument",
            ));
        }
    }
    Ok(())
}

/// Run awaitables concurrently and return their results in argument order.
///
/// Like `asyncio.gather` of the running Python (3.12+ report children that
/// are already done without waiting a loop iteration); differences: the
/// bookkeeping is Rust; un-started `rustasync.sleep()` arguments are not
/// wrapped in Tasks (they take their Tasks' steps in batches and wait in the
/// loop's timer heap); a non-awaitable argument (or a future of another
/// loop) is found before any Task is created or any sleep taken over, so
/// nothing is left running and the sleeps and futures among the arguments
/// are left as they were (the coroutines are closed, so that they do not
/// warn "never awaited"); nested gathers (directly or through Tasks) are
/// cancelled and freed without recursing, so chains deeper than asyncio's
/// recursion limit work.
///
/// With no running loop it takes the loop as asyncio's does: the first
/// argument's if that is a future, else the event loop asyncio asks for
/// (3.11: `events._get_event_loop()`, 3.12+: `get_event_loop()`), with the
/// same warning or error.
///
/// Coroutines are wrapped in Tasks on the loop; a repeated argument is
/// awaited once. The first exception propagates while the other children
/// keep running, unless `return_exceptions=True`, where exceptions (and
/// `CancelledError` for cancelled children) are returned in place.
///
/// Raises:
///     TypeError: an argument is not awaitable.
///     RuntimeError: no running loop and no current event loop (asyncio's
///         message).
///     ValueError: a future argument belongs to another loop.
///
/// Cancel safety: cancelling the returned future (or the task awaiting it)
/// cancels every child that is not done; it then ends with `CancelledError`.
/// A child cancelled from outside makes it raise `CancelledError` (or returns
/// one in place with `return_exceptions=True`).
#[pyfunction]
#[pyo3(
    signature = (*aws, return_exceptions=None),
    text_signature = "(*aws, return_exceptions=False)"
)]
pub fn gather<'py>(
    py: Python<'py>,
    aws: &Bound<'py, PyTuple>,
    return_exceptions: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    // Any object, read for its truth value, as asyncio's `if not
    // return_exceptions:` does.
    let return_exceptions = match return_exceptions {
        Some(flag) => flag.is_truthy()?,
        None => false,
    };
    if aws.is_empty() {
        let loop_ = gather_loop(py, aws)?;
        let fut = loop_.call_method0(intern!(py, "create_future"))?;
        fut.call_method1(intern!(py, "set_result"), (PyList::empty(py),))?;
        return Ok(fut);
    }
    // Classify every argument before creating anything.
    let mut kinds = Vec::with_capacity(aws.len());
    for a in aws.iter() {
        match classify(py, &a)? {
            Some(k) => kinds.push(k),
            None => {
                close_coroutines(aws);
                return Err(PyTypeError::new_err(
                    "An asyncio.Future, a coroutine or an awaitable is required",
                ));
            }
        }
    }
    let loop_ = match gather_loop(py, aws).and_then(|l| check_future_loops(py, aws, &l).map(|_| l))
    {
        Ok(l) => l,
        Err(e) => {
            close_coroutines(aws);
            return Err(e);
        }
    };
    let outer = Bound::new(
        py,
        GatheringFuture {
            loop_: loop_.clone().unbind(),
            return_exceptions,
            blocking: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                state: State::Pending,
                callbacks: Vec::new(),
                children: Vec::with_capacity(aws.len()),
                future_index: HashMap::new(),
                arg_child: Vec::with_capacity(aws.len()),
                nfinished: 0,
                cancel_requested: false,
                cancelling: 0,
                batches: Vec::new(),
                free_batches: Vec::new(),
                open: None,
                serial: 0,
                log_traceback: false,
                link: None,
                timers: None,
            }),
        },
    )?;
    let dedup = if aws.len() > 1 {
        Some(PyDict::new(py))
    } else {
        None
    };
    let create_task = loop_.getattr(intern!(py, "create_task"))?;
    let ensure_future = Imports::get(py)?.ensure_future.bind(py);
    let mut done_cb: Option<Bound<'py, ChildDone>> = None;
    let awaiter = graph::CallGraph::awaiter(&loop_)?;
    let report_done_now = py.version_info() >= (3, 12);
    let mut done_now: Vec<usize> = Vec::new();
    // Consecutive sleep arguments: one batch, scheduled where the first
    // one's Task step would be (before anything else is).
    let mut sleeps: Vec<usize> = Vec::new();
    for (arg, kind) in aws.iter().zip(kinds) {
        if let Some(d) = &dedup {
            if let Some(i) = d.get_item(&arg)? {
                let i: usize = i.extract()?;
                outer.get().inner.lock().unwrap().arg_child.push(i);
                continue;
            }
        }
        let index = outer.get().inner.lock().unwrap().children.len();
        if let Some(d) = &dedup {
            d.set_item(&arg, index)?;
        }
        // A sleep that was started already is awaited through a Task, like
        // any awaitable.
        let kind = match kind {
            Kind::Sleep(s) if !s.get().adopt() => Kind::Other,
            kind => kind,
        };
        match kind {
            Kind::Sleep(s) => {
                // Its first step comes where its Task's would: next iteration,
                // with the sleep arguments next to it.
                let s = s.get();
                let phase = SleepPhase::Starting {
                    value: s.result.clone_ref(py),
                    delay: s.delay,
                };
                {
                    let mut inner = outer.get().inner.lock().unwrap();
                    inner.children.push(Slot::new(Child::Sleep(phase)));
                    inner.arg_child.push(index);
                }
                sleeps.push(index);
            }
            Kind::Coroutine | Kind::Other => {
                // A Task's first step, or a done future's callbacks, may be
                // scheduled here.
                if !sleeps.is_empty() {
                    GatheringFuture::start_batch(&outer, std::mem::take(&mut sleeps))?;
                }
                let fut = match kind {
                    Kind::Coroutine => create_task.call1((&arg,))?,
                    _ => {
                        ensure_future.call((&arg,), Some(&[("loop", &loop_)].into_py_dict(py)?))?
                    }
                };
                if !fut.is(&arg) {
                    let _ = fut.setattr(intern!(py, "_log_destroy_pending"), false);
                }
                {
                    let mut inner = outer.get().inner.lock().unwrap();
                    inner.future_index.insert(fut.as_ptr() as usize, index);
                    inner
                        .children
                        .push(Slot::new(Child::Future(fut.clone().unbind())));
                    inner.arg_child.push(index);
                }
                if report_done_now && fut.call_method0(intern!(py, "done"))?.is_truthy()? {
                    // Python 3.12+: children already done (an eager task
                    // factory, a finished future) are reported once the
                    // outer future exists, without a loop iteration.
                    done_now.push(index);
                    continue;
                }
                if let Some(task) = &awaiter {
                    graph::CallGraph::add(py, &fut, task)?;
                }
                if done_cb.is_none() {
                    done_cb = Some(Bound::new(
                        py,
                        ChildDone {
                            outer: outer.clone().unbind(),
                            awaiter: awaiter.as_ref().map(|t| t.clone().unbind()),
                        },
                    )?);
                }
                fut.call_method1(
                    intern!(py, "add_done_callback"),
                    (done_cb.as_ref().unwrap(),),
                )?;
            }
        }
    }
    if !sleeps.is_empty() {
        GatheringFuture::start_batch(&outer, sleeps)?;
    }
    for index in done_now {
        GatheringFuture::child_done(&outer, index)?;
    }
    Ok(outer.into_any())
}

/// Register the gather types and function.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<GatheringFuture>()?;
    m.add_function(wrap_pyfunction!(gather, m)?)?;
    awaitable::patch_am_send::<GatheringFuture>(m.py());
    awaitable::patch_am_await_self::<GatheringFuture>(m.py());
    future::patch_finalizer(m.py());
    Ok(())
}

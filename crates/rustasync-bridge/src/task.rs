//! Python awaitables as Rust futures: a Python task seen from Rust.
//!
//! [`into_future`] schedules a Python awaitable as a task on its loop and
//! returns a Rust future that resolves with the task's result:
//!
//! ```no_run
//! use pyo3::prelude::*;
//!
//! /// `await call_twice(fn)` awaits `fn()` twice from Rust.
//! #[pyfunction]
//! fn call_twice(py: Python<'_>, f: Py<PyAny>) -> PyResult<Bound<'_, PyAny>> {
//!     rustasync_bridge::future_into_py(py, async move {
//!         for _ in 0..2 {
//!             let task = Python::attach(|py| {
//!                 rustasync_bridge::into_future(f.bind(py).call0()?)
//!             })?;
//!             task.await?;
//!         }
//!         Ok(())
//!     })
//! }
//! ```
//!
//! # How it runs
//!
//! * The loop and context come from [`get_current_locals`]: those of the
//!   bridged future being polled, else this thread's running loop and a
//!   copy of the current context.
//! * The awaitable becomes a task on its loop (`ensure_future`), run in a
//!   copy of that context, as `asyncio.create_task` runs a coroutine in a
//!   copy of the current one. Called on the loop's thread, the task is
//!   created at once. From another thread the request goes through the
//!   loop's wakeup batcher: one wakeup per burst of requests.
//! * The Rust future resolves with the task's outcome: the result, the
//!   exception it raised, or the `CancelledError` it was cancelled with.
//!   A native coroutine's task runs it through a thin wrapper that hands
//!   its return value over from the task's last step (see [`coro`]: no
//!   done callback, one loop handle less per task; `task.get_coro()` is
//!   that wrapper). Every other outcome, and every other awaitable, is
//!   read from the task's done callback, as `task.result()` gives it.
//! * If the loop is closed before the task could be created, the Rust
//!   future resolves with `RuntimeError`.
//!
//! # Cancel safety
//!
//! Dropping the Rust future before it resolved cancels the task (on the
//! loop's thread, through the batcher). Cancelling the task from Python
//! resolves the Rust future with the `CancelledError`.
//!
//! # Ownership
//!
//! The Rust future holds the task strongly, as an awaiting asyncio task
//! holds the future it waits on: the task stays reachable while Rust waits
//! for it, and is let go when it finishes or is cancelled.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyCFunction, PyDict};

use crate::locals::{get_current_locals, TaskLocals};
use crate::runtime::{take, Completion};

mod coro;

/// Schedule `awaitable` as a task on the current loop; see the
/// [module docs](self).
///
/// Raises `RuntimeError` when there is no current loop (not inside a
/// bridged future, and no loop running on this thread).
///
/// # Cancel safety
/// Dropping the returned future cancels the task.
pub fn into_future(awaitable: Bound<'_, PyAny>) -> PyResult<TaskFuture> {
    let locals = get_current_locals(awaitable.py())?;
    into_future_with_locals(&locals, awaitable)
}

/// [`into_future`] on the loop, and in (a copy of) the context, of `locals`.
pub fn into_future_with_locals(
    locals: &TaskLocals,
    awaitable: Bound<'_, PyAny>,
) -> PyResult<TaskFuture> {
    let py = awaitable.py();
    let given_up = crate::future::given_up_flag();
    let shared = Arc::new(Shared {
        given_up: given_up.clone(),
        ..Shared::default()
    });
    if given_up.as_ref().is_some_and(|g| g.load(Ordering::SeqCst)) {
        if let Some(e) = discard(py, &awaitable, locals.on_loop_thread(py)) {
            shared.resolve(Err(e));
            return Ok(TaskFuture {
                shared,
                locals: locals.clone(),
                finished: false,
            });
        }
    }
    let start = Arc::new(Start {
        awaitable: Mutex::new(Some(awaitable.unbind())),
        locals: locals.clone(),
        shared: shared.clone(),
        given_up,
    });
    run_on_loop(py, locals, start);
    Ok(TaskFuture {
        shared,
        locals: locals.clone(),
        finished: false,
    })
}

/// A Python task seen from Rust: resolves with its result, its exception,
/// or the `CancelledError` it was cancelled with.
///
/// # Cancel safety
/// Dropping it before it resolved cancels the task.
pub struct TaskFuture {
    shared: Arc<Shared>,
    locals: TaskLocals,
    finished: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// The given-up flag of the bridged future that asked (see `Start`).
    given_up: Option<Arc<AtomicBool>>,
}

#[derive(Default)]
struct State {
    outcome: Option<PyResult<Py<PyAny>>>,
    waker: Option<Waker>,
    task: Option<Py<PyAny>>,
    dropped: bool,
}

/// Watched by the loop's waker while the task runs: abandoned when the
/// loop is found dead.
impl Completion for Shared {
    fn complete(self: Arc<Self>, _py: Python<'_>) {}

    fn abandon(self: Arc<Self>) {
        if self.lock().outcome.is_none() {
            self.resolve(Err(PyRuntimeError::new_err(
                "the event loop closed while the awaitable was running",
            )));
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Store the outcome and wake the Rust side; the task is let go
    /// (dropped with no lock held).
    ///
    /// Once the bridged future that awaits it gave up (it is about to be
    /// aborted), the outcome is dropped here, on the loop's thread, and an
    /// error that holds no Python object is stored instead: nothing will
    /// take it, and until tokio drops the aborted future it would keep the
    /// outcome alive (a `CancelledError`'s traceback holds the frames of
    /// whoever cancelled the task, e.g. every task `asyncio.run` cancels
    /// as it closes its loop).
    fn resolve(&self, outcome: PyResult<Py<PyAny>>) {
        let (outcome, unwanted) = match &self.given_up {
            Some(g) if g.load(Ordering::SeqCst) => (
                Err(PyRuntimeError::new_err(
                    "the bridged future awaiting the task gave up on it",
                )),
                Some(outcome),
            ),
            _ => (outcome, None),
        };
        let (old, task, waker) = {
            let mut s = self.lock();
            (s.outcome.replace(outcome), s.task.take(), s.waker.take())
        };
        drop((old, task, unwanted));
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Future for TaskFuture {
    type Output = PyResult<Py<PyAny>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let old = {
            let mut s = self.shared.lock();
            if let Some(out) = s.outcome.take() {
                drop(s);
                self.finished = true;
                return Poll::Ready(out);
            }
            match &s.waker {
                Some(w) if w.will_wake(cx.waker()) => None,
                _ => s.waker.replace(cx.waker().clone()),
            }
        };
        drop(old);
        Poll::Pending
    }
}

impl Drop for TaskFuture {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let task = {
            let mut s = self.shared.lock();
            if s.outcome.is_some() {
                return;
            }
            s.dropped = true;
            s.task.take()
        };
        // Not created yet: `Start` sees `dropped` and cancels it.
        if let Some(task) = task {
            let cancel = Arc::new(Cancel(Mutex::new(Some(task))));
            match self.locals.known_waker() {
                Some(w) => w.push(cancel),
                None => {
                    let _ = Python::try_attach(|py| run_on_loop(py, &self.locals, cancel));
                }
            }
        }
    }
}

/// Create the task, on the loop's thread.
struct Start {
    awaitable: Mutex<Option<Py<PyAny>>>,
    locals: TaskLocals,
    shared: Arc<Shared>,
    /// Set once the awaitable of the bridged future that asked gave up on
    /// it (that future is about to be aborted).
    given_up: Option<Arc<AtomicBool>>,
}

/// Do not schedule `aw`: nothing will await it (the Rust future is gone,
/// or its bridged future was given up). A coroutine is closed, as one
/// cancelled before it reached `create_task` never runs; a future is
/// cancelled. Returns the `CancelledError` to resolve with, or `None` for
/// other awaitables, which are scheduled and cancelled as before.
///
/// Off the loop's thread (`on_loop` false) a future is left alone: cancelling
/// it is not thread-safe; `Start` checks again on the loop's thread.
fn discard(py: Python<'_>, aw: &Bound<'_, PyAny>, on_loop: bool) -> Option<PyErr> {
    let imports = crate::awaitable::Imports::get(py).ok()?;
    let is = |f: &Py<PyAny>| {
        f.bind(py)
            .call1((aw,))
            .and_then(|r| r.is_truthy())
            .unwrap_or(false)
    };
    let method = if is(&imports.iscoroutine) {
        pyo3::intern!(py, "close")
    } else if on_loop && is(&imports.isfuture) {
        pyo3::intern!(py, "cancel")
    } else {
        return None;
    };
    if let Err(e) = aw.call_method0(method) {
        e.write_unraisable(py, Some(aw));
    }
    crate::awaitable::cancelled_error(py, None).ok()
}

impl Completion for Start {
    fn complete(self: Arc<Self>, py: Python<'_>) {
        let Some(aw) = take(&self.awaitable) else {
            return;
        };
        // As a task cancelled before it reached `create_task`, the awaitable
        // never runs: no task is left for a closing loop to destroy pending.
        let unwanted = self.shared.lock().dropped
            || self
                .given_up
                .as_ref()
                .is_some_and(|g| g.load(Ordering::SeqCst));
        if unwanted {
            if let Some(e) = discard(py, aw.bind(py), true) {
                return self.shared.resolve(Err(e));
            }
        }
        let task = match create_task(py, &self.locals, aw, &self.shared) {
            Ok(t) => t,
            Err(e) => return self.shared.resolve(Err(e)),
        };
        let cancel_now = {
            let mut s = self.shared.lock();
            if s.dropped {
                true
            } else {
                // Finished already (an eager task factory): nothing to hold.
                if s.outcome.is_none() {
                    s.task = Some(task.clone().unbind());
                }
                false
            }
        };
        if cancel_now {
            let _ = task.call_method0(pyo3::intern!(py, "cancel"));
        } else if let Some(w) = self.locals.known_waker() {
            // A loop that closes or goes away under the task resolves the
            // Rust side, instead of leaving it (and the loop) waiting.
            let shared: Arc<dyn Completion> = self.shared.clone();
            w.watch(Arc::downgrade(&shared));
        }
    }

    fn abandon(self: Arc<Self>) {
        self.shared.resolve(Err(PyRuntimeError::new_err(
            "the event loop closed before the awaitable could be scheduled",
        )));
    }
}

/// The task for `aw`, in a copy of the locals' context, resolving `shared`.
///
/// A native coroutine becomes `loop.create_task(TaskCoro(coro))` (see
/// [`coro`]), created in the copy (as `ensure_future` would, with no
/// `context=` argument, so that task factories of the older signature keep
/// working); anything else goes through `ensure_future(aw, loop=loop)`,
/// with a done callback.
fn create_task<'py>(
    py: Python<'py>,
    locals: &TaskLocals,
    aw: Py<PyAny>,
    shared: &Arc<Shared>,
) -> PyResult<Bound<'py, PyAny>> {
    let ctx = locals.context(py);
    // `None` (pyo3-async-runtimes' locals may carry it): the current one.
    let copy = match ctx.is_none() {
        true => unsafe { ffi::PyContext_CopyCurrent() },
        false => unsafe { ffi::PyContext_Copy(ctx.as_ptr()) },
    };
    let ctx = unsafe { Bound::from_owned_ptr_or_err(py, copy)? };
    if unsafe { ffi::PyCoro_CheckExact(aw.as_ptr()) } != 0 {
        let wrapped = coro::TaskCoro::wrap(py, aw, shared)?;
        let lp = locals.event_loop(py);
        return in_context(py, &ctx, || {
            lp.call_method1(pyo3::intern!(py, "create_task"), (wrapped,))
        });
    }
    static ENSURE_FUTURE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let ensure = ENSURE_FUTURE.import(py, "asyncio", "ensure_future")?;
    let kw = PyDict::new(py);
    kw.set_item(pyo3::intern!(py, "loop"), locals.event_loop(py))?;
    let task = in_context(py, &ctx, || ensure.call((aw,), Some(&kw)))?;
    let cb = Bound::new(py, OnDone(shared.clone()))?;
    task.call_method1(pyo3::intern!(py, "add_done_callback"), (cb,))?;
    Ok(task)
}

/// `f()` with `ctx` entered, as `ctx.run(f)` does.
fn in_context<'py, R>(
    py: Python<'py>,
    ctx: &Bound<'py, PyAny>,
    f: impl FnOnce() -> PyResult<R>,
) -> PyResult<R> {
    if unsafe { ffi::PyContext_Enter(ctx.as_ptr()) } != 0 {
        return Err(PyErr::fetch(py));
    }
    let r = f();
    if unsafe { ffi::PyContext_Exit(ctx.as_ptr()) } != 0 {
        return Err(PyErr::fetch(py));
    }
    r
}

/// The done callback: resolves with the task's outcome, read as
/// `task.result()` reads it (its result, its exception, or the
/// `CancelledError` it was cancelled with).
#[pyclass(frozen, module = "rustasync_bridge", name = "TaskDone")]
struct OnDone(Arc<Shared>);

#[pymethods]
impl OnDone {
    fn __call__(&self, task: &Bound<'_, PyAny>) {
        let outcome = task
            .call_method0(pyo3::intern!(task.py(), "result"))
            .map(Bound::unbind);
        self.0.resolve(outcome);
    }
}

/// Cancel a task, on the loop's thread.
struct Cancel(Mutex<Option<Py<PyAny>>>);

impl Completion for Cancel {
    fn complete(self: Arc<Self>, py: Python<'_>) {
        if let Some(task) = take(&self.0) {
            let _ = task.bind(py).call_method0(pyo3::intern!(py, "cancel"));
        }
    }
}

/// Run `c` on the loop of `locals`: through its wakeup batcher when it is
/// known, else (locals made off the loop's thread, e.g. from
/// pyo3-async-runtimes' own) with one `call_soon_threadsafe`, never on a
/// closed loop.
fn run_on_loop(py: Python<'_>, locals: &TaskLocals, c: Arc<dyn Completion>) {
    if let Some(w) = locals.waker(py) {
        return w.push(c);
    }
    let lp = locals.event_loop(py);
    if crate::runtime::loop_is_closed(&lp) {
        return c.abandon();
    }
    let once = Mutex::new(Some(c.clone()));
    let cb = PyCFunction::new_closure(py, None, None, move |args, _kw| {
        if let Some(c) = take(&once) {
            c.complete(args.py());
        }
    });
    let scheduled =
        cb.and_then(|cb| lp.call_method1(pyo3::intern!(py, "call_soon_threadsafe"), (cb,)));
    if scheduled.is_err() {
        // Closed in between: the documented race.
        c.abandon();
    }
}

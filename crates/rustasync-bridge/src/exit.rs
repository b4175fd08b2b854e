//! Interpreter exit: bridged futures stop being polled before the
//! interpreter starts finalizing.
//!
//! A bridged future may attach to the interpreter on its tokio worker (it
//! calls `Python::attach` to build a Python object, say). Once the
//! interpreter is finalizing, or gone, attaching fails: PyO3 panics (the
//! panic message is printed at exit) and, before Python 3.13, CPython may
//! end the thread instead. So an `atexit` callback, registered on first
//! use (atexit callbacks run before finalization starts):
//!
//! 1. marks the process as exiting: from then on no bridged future is
//!    polled again, and none is dropped either (it is leaked: its
//!    destructor could attach too). Its awaitable never completes; nothing
//!    is left to await it.
//! 2. releases the interpreter and waits, up to one second, for the polls
//!    in progress on tokio workers to return: a worker waiting to attach
//!    gets in, and out, before finalization starts.
//!
//! 3. waits the same way for the threads running Python code beneath the
//!    crate's own frames (a batch of results being delivered, an awaitable
//!    making the future it suspends on, or dropping or converting an
//!    output that may run a `__del__`) to leave them. From then on the
//!    crate runs no Python code beneath its frames: results are no longer
//!    delivered, outputs are leaked rather than dropped, and an `await`
//!    that would suspend (or a new future that does not finish on its
//!    first poll) raises `RuntimeError("cannot await a Rust future after
//!    interpreter shutdown")`, as `loop.run_in_executor` raises at exit.
//!
//! Not covered: a Python object a future drops on a tokio worker goes to
//! PyO3's reference pool, which PyO3 empties (running any `__del__`) in
//! whichever thread next enters a PyO3 callback, at exit too.
//!
//! Why the third step: before Python 3.14, a daemon thread that wants the
//! interpreter back once finalization started is ended with
//! `pthread_exit`, which unwinds its stack. An unwind that meets a Rust
//! frame catching panics (every PyO3 callback has one) aborts the process
//! ("FATAL: exception not rethrown"). A daemon thread waiting for the
//! interpreter inside Python code that a Rust frame called is exactly
//! that, so no such thread may be left waiting when finalization starts.
//!
//! Tokio tasks that are not bridged futures (spawned by the extension
//! itself) are not covered: they must not attach at exit.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyDict};

static EXITING: AtomicBool = AtomicBool::new(false);
/// Polls of bridged futures in progress on tokio workers.
static POLLING: AtomicUsize = AtomicUsize::new(0);
/// Threads running Python code beneath the crate's frames.
static BENEATH: AtomicUsize = AtomicUsize::new(0);

/// The exit hook ran: no bridged future is polled again, and no Python
/// code is run beneath the crate's frames.
pub(crate) fn exiting() -> bool {
    EXITING.load(Ordering::SeqCst)
}

/// Held while this thread runs Python code beneath the crate's frames.
pub(crate) struct Beneath(());

impl Drop for Beneath {
    fn drop(&mut self) {
        // Saturating: a forked child starts again from zero.
        let _ = BENEATH.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }
}

/// Count this thread as about to run Python code beneath the crate's
/// frames, unless the process is exiting (`None`: run none).
pub(crate) fn python_beneath() -> Option<Beneath> {
    // Counted first, then checked, as for polls.
    BENEATH.fetch_add(1, Ordering::SeqCst);
    let guard = Beneath(());
    if exiting() {
        return None;
    }
    Some(guard)
}

/// A bridged future that stops at interpreter exit: resolves to `None`
/// (leaking the future) once the process is exiting.
pub(crate) struct UntilExit<F>(Option<F>);

impl<F> UntilExit<F> {
    pub(crate) fn new(fut: F) -> Self {
        UntilExit(Some(fut))
    }
}

/// Dropped after the exit hook ran (an aborted task, or its awaitable freed
/// while the interpreter finalizes): the future is leaked rather than
/// dropped, as its destructor could attach to the interpreter.
impl<F> Drop for UntilExit<F> {
    fn drop(&mut self) {
        if EXITING.load(Ordering::SeqCst) {
            std::mem::forget(self.0.take());
        }
    }
}

struct Polling;

impl Drop for Polling {
    fn drop(&mut self) {
        POLLING.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<F: Future + Unpin> Future for UntilExit<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Counted first, then checked: the exit hook, which sets the flag
        // first and then reads the count, either sees this poll or is
        // seen by it.
        POLLING.fetch_add(1, Ordering::SeqCst);
        let _polling = Polling;
        if EXITING.load(Ordering::SeqCst) {
            std::mem::forget(self.0.take());
            return Poll::Ready(None);
        }
        match self.0.as_mut() {
            Some(fut) => Pin::new(fut).poll(cx).map(Some),
            None => Poll::Ready(None),
        }
    }
}

/// The `atexit` callback.
fn at_exit(py: Python<'_>) {
    EXITING.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(1);
    py.detach(|| {
        while (POLLING.load(Ordering::SeqCst) > 0 || BENEATH.load(Ordering::SeqCst) > 0)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// Register the exit hook with `atexit`, once per process, and a fork hook
/// that forgets the parent's polls and Python calls in progress (their
/// threads are not in the child).
pub(crate) fn ensure_hook(py: Python<'_>) -> PyResult<()> {
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    if REGISTERED.load(Ordering::Acquire) {
        return Ok(());
    }
    // Attached: no other thread can get here meanwhile.
    REGISTERED.store(true, Ordering::Release);
    let hook = PyCFunction::new_closure(py, None, None, |args, _kw| at_exit(args.py()))?;
    py.import("atexit")?.call_method1("register", (hook,))?;
    let os = py.import("os")?;
    if os.hasattr("register_at_fork")? {
        let reset = PyCFunction::new_closure(py, None, None, |_args, _kw| {
            POLLING.store(0, Ordering::SeqCst);
            BENEATH.store(0, Ordering::SeqCst);
        })?;
        let kw = PyDict::new(py);
        kw.set_item("after_in_child", reset)?;
        os.call_method("register_at_fork", (), Some(&kw))?;
    }
    Ok(())
}

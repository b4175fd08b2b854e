//! Rust futures as Python awaitables.
//!
//! [`future_into_py`] turns a `Future<Output = PyResult<T>>` into an object
//! Python can `await` on an asyncio loop (stock or uvloop):
//!
//! ```no_run
//! use pyo3::prelude::*;
//!
//! #[pyfunction]
//! fn fetch(py: Python<'_>, seconds: f64) -> PyResult<Bound<'_, PyAny>> {
//!     rustasync_bridge::future_into_py(py, async move {
//!         tokio::time::sleep(std::time::Duration::from_secs_f64(seconds)).await;
//!         Ok("done")
//!     })
//! }
//! ```
//!
//! # How it runs
//!
//! * The future is polled once, at once, on the calling thread inside the
//!   tokio runtime's context ([`crate::runtime::tokio_runtime`], created
//!   lazily, and again in a forked child). If it is ready, the awaitable is already
//!   complete: awaiting it does not suspend and nothing crosses threads.
//! * Otherwise it is spawned on the runtime. When it finishes, its output
//!   is handed to the loop through the loop's wakeup batcher
//!   ([`crate::runtime`]): one `call_soon_threadsafe` per burst of
//!   completions, not one per future. The output is converted to a Python
//!   object on the loop thread, when the awaiting task resumes, so tokio
//!   workers never attach to the interpreter for it.
//! * If the loop is closed by then, nothing is scheduled on it.
//!
//! # Contextvars
//!
//! The caller's `contextvars` context is copied at call time and installed
//! as the future's `pyo3_async_runtimes` task locals, so Python coroutines
//! the future awaits with `pyo3_async_runtimes::tokio::into_future` run in
//! that context, and `get_current_locals` works inside it.
//!
//! # Errors and panics
//!
//! An `Err(e)` output raises `e` from the `await`. A panic inside the future
//! (on the first poll or later on tokio) raises `rustasync.RustPanic`; the
//! process goes on.
//!
//! # Cancel safety
//!
//! Cancelling the awaiting task (or closing or dropping the awaitable
//! before it completed) aborts the tokio task, dropping the Rust future at
//! its next suspension point. An output produced in the meantime is
//! dropped.
//!
//! # Ownership
//!
//! The asyncio future the awaiting Task waits on is co-owned by the tokio
//! task (which will resolve it) and the awaitable, so neither reports it
//! to the garbage collector: like an executor thread that will set a
//! result, the running Rust future keeps the waiting Task reachable until it
//! finishes or is aborted (see docs/design.md). After `fork()` the child
//! gets a fresh runtime on first use.

use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;

use crate::locals::TaskLocals;

use crate::panic::panic_to_pyerr;
use crate::runtime::FutureWake;

type Output = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

#[derive(Default)]
struct Shared {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    output: Option<Output>,
    wake: Option<Arc<FutureWake>>,
    taken: bool,
}

impl Shared {
    fn finish(&self, out: Output) {
        let wake = {
            let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            i.output = Some(out);
            i.wake.take()
        };
        if let Some(w) = wake {
            w.wake();
        }
    }
}

fn convert<T>(r: PyResult<T>) -> Output
where
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    Box::new(move |py| r.and_then(|v| v.into_py_any(py)))
}

/// For the first, inline poll: a spawned task polls again with its own.
fn noop_waker() -> &'static Waker {
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    static NOOP: std::sync::OnceLock<Waker> = std::sync::OnceLock::new();
    NOOP.get_or_init(|| Waker::from(Arc::new(Noop)))
}

/// Turn `fut` into a Python awaitable; see the [module docs](self).
///
/// The future belongs to the current loop and context
/// ([`get_current_locals`](crate::get_current_locals)): those of the
/// bridged future being polled, else the loop running on this thread and
/// a copy of the current context. Raises `RuntimeError` when there is
/// neither, like `asyncio.get_running_loop()`.
///
/// # Cancel safety
/// Cancelling the awaiting task drops `fut` (the tokio task is aborted).
pub fn future_into_py<F, T>(py: Python<'_>, fut: F) -> PyResult<Bound<'_, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    let locals = crate::locals::current_locals(py)?;
    future_into_py_with_locals(py, locals, fut)
}

/// [`future_into_py`] with the loop and context of `locals`: inside `fut`,
/// [`get_current_locals`](crate::get_current_locals) returns them.
///
/// # Cancel safety
/// Cancelling the awaiting task drops `fut` (the tokio task is aborted).
pub fn future_into_py_with_locals<F, T>(
    py: Python<'_>,
    locals: TaskLocals,
    fut: F,
) -> PyResult<Bound<'_, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    crate::runtime::ensure_fork_hook(py)?;
    crate::exit::ensure_hook(py)?;
    let mut inner = Box::pin(crate::locals::scope(locals.clone(), fut));
    let mut guarded = poll_fn(move |cx: &mut Context<'_>| {
        match catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Ready(r)) => Poll::Ready(convert(r)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(convert::<()>(Err(panic_to_pyerr(payload)))),
        }
    });
    let rt = crate::runtime::handle()?;
    let shared = Arc::new(Shared::default());
    let abort = {
        let _entered = rt.enter();
        match std::pin::Pin::new(&mut guarded).poll(&mut Context::from_waker(noop_waker())) {
            Poll::Ready(out) => {
                shared
                    .inner
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .output = Some(out);
                None
            }
            Poll::Pending => {
                // Still on the loop's thread: find its batcher now, for
                // awaitables the future schedules later from tokio.
                let _ = locals.waker(py);
                let sh = shared.clone();
                let task = rt.spawn(async move {
                    // `None`: the interpreter is exiting (see `exit`).
                    if let Some(out) = crate::exit::UntilExit::new(guarded).await {
                        sh.finish(out)
                    }
                });
                Some(task.abort_handle())
            }
        }
    };
    Bound::new(py, RustFuture { shared, abort }).map(Bound::into_any)
}

/// The awaitable returned by Rust functions that run a Rust future.
///
/// Cancel safety: cancelling the awaiting task aborts the Rust future.
#[pyclass(frozen, module = "rustasync_bridge", name = "RustFuture")]
pub struct RustFuture {
    shared: Arc<Shared>,
    abort: Option<tokio::task::AbortHandle>,
}

impl RustFuture {
    fn give_up(&self) {
        if let Some(a) = &self.abort {
            a.abort();
        }
        let (out, wake) = {
            let mut i = self.shared.inner.lock().unwrap_or_else(|e| e.into_inner());
            i.taken = true;
            (i.output.take(), i.wake.take())
        };
        drop((out, wake));
    }
}

impl Drop for RustFuture {
    fn drop(&mut self) {
        if let Some(a) = &self.abort {
            a.abort();
        }
    }
}

#[pymethods]
impl RustFuture {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        // Python runs only with the shared state unlocked: the tokio side
        // locks it too, and a finaliser may re-enter.
        let current = {
            let mut i = self.shared.inner.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(out) = i.output.take() {
                i.taken = true;
                let wake = i.wake.take();
                drop(i);
                drop(wake);
                return crate::awaitable::complete(py, out(py)?);
            }
            if i.taken {
                return Err(pyo3::exceptions::PyRuntimeError::new_err(
                    "cannot reuse already awaited Rust future",
                ));
            }
            i.wake.clone()
        };
        let stale = match &current {
            None => true,
            Some(w) => w
                .future()
                .bind(py)
                .call_method0(pyo3::intern!(py, "done"))
                .and_then(|d| d.is_truthy())
                .unwrap_or(true),
        };
        let wake = match current {
            Some(w) if !stale => w,
            _ => FutureWake::new(py)?,
        };
        let (out, old) = {
            let mut i = self.shared.inner.lock().unwrap_or_else(|e| e.into_inner());
            match i.output.take() {
                // Finished while we were making the future: no wait.
                Some(out) => {
                    i.taken = true;
                    (Some(out), i.wake.take())
                }
                None => (None, i.wake.replace(wake.clone())),
            }
        };
        drop(old);
        if let Some(out) = out {
            return crate::awaitable::complete(py, out(py)?);
        }
        let fut = wake.future().bind(py).clone();
        if !stale {
            fut.setattr(pyo3::intern!(py, "_asyncio_future_blocking"), true)?;
        }
        Ok(Some(fut.unbind()))
    }

    #[pyo3(signature = (_value, /))]
    fn send(&self, py: Python<'_>, _value: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        crate::awaitable::as_send(py, self.__next__(py))
    }

    /// Abort the Rust future and raise the given exception.
    #[pyo3(signature = (typ, val = None, _tb = None, /))]
    fn throw(
        &self,
        typ: Bound<'_, PyAny>,
        val: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.give_up();
        Err(crate::awaitable::thrown(typ.py(), &typ, val.as_ref(), None).unwrap_or_else(|e| e))
    }

    /// Abort the Rust future.
    fn close(&self) {
        self.give_up();
    }

    // No `__traverse__`: the future the Task waits on is co-owned by the
    // tokio task (through the shared state), an owner the collector cannot
    // see. Like a thread that will set a future's result, it keeps the
    // waiting Task reachable until the Rust future finishes or is aborted.

    /// True once the Rust future has finished.
    fn done(&self) -> bool {
        let i = self.shared.inner.lock().unwrap_or_else(|e| e.into_inner());
        i.output.is_some() || i.taken
    }
}

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
//!   completions, not one per future. On the loop thread, what is left of
//!   the future (its loop and context references) is dropped, attached,
//!   and the awaiting task is woken. What the future's body dropped itself
//!   as it finished (an `async move` block's captures) was dropped on the
//!   tokio worker, where PyO3 defers Python objects to its reference pool
//!   (freed by whichever thread next enters a PyO3 callback). Tokio workers never
//!   attach to the interpreter for it. An output that is not a Python
//!   object already is converted to one when the awaiting task takes it,
//!   so one never taken is dropped as the Rust value it is. An aborted
//!   future is sent to the loop thread to be dropped too.
//! * If the loop is closed by then, nothing is scheduled on it.
//! * If the runtime shuts down under the future (one given with
//!   [`init_with_handle`](crate::runtime::init_with_handle)), the `await`
//!   raises `RuntimeError`.
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
//! finishes or is aborted (see docs/design.md). A result that is a Python
//! object (a `Py<PyAny>` output) and that nothing else shares is reported
//! to the garbage collector, as a finished Future's is; Python objects
//! inside other Rust values are not. After `fork()` the child gets a
//! fresh runtime on first use.
//!
//! # Awaiting twice
//!
//! Modelled on a coroutine (`send`, `throw`, `close`; one `await`): a
//! second `await` while a task awaits it (until that `await` takes the
//! result or gives up, even once the result is stored on its way to the
//! loop) raises `RuntimeError("Rust future is being awaited already")` at
//! once, and one after it finished raises
//! `RuntimeError("cannot reuse already awaited Rust future")`.

use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::{IntoPyObjectExt, PyTraverseError, PyVisit};

use crate::locals::TaskLocals;

use crate::panic::panic_to_pyerr;
use crate::runtime::{take, Completion, FutureWake, LoopWaker};

/// Makes a Rust output a Python object.
type Convert = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// A finished future's output, as stored until an `await` takes it.
enum Output {
    /// A Python object or an error: nothing left to convert, and visible
    /// to the garbage collector.
    Value(PyResult<Py<PyAny>>),
    /// A Rust value, converted when an `await` takes it (so that one never
    /// taken is dropped as the Rust value, with its `Drop`).
    Later(Convert),
}

tokio::task_local! {
    /// Set once the awaitable of the bridged future being polled gave up
    /// on it (its task was cancelled, it was closed or freed).
    static GIVEN_UP: Arc<AtomicBool>;
}

/// The flag of the bridged future being polled on this thread, if any:
/// set once its awaitable gave up on it (the future is about to be aborted).
pub(crate) fn given_up_flag() -> Option<Arc<AtomicBool>> {
    GIVEN_UP.try_with(Arc::clone).ok()
}

struct Shared {
    inner: Mutex<Inner>,
    given_up: Arc<AtomicBool>,
}

#[derive(Default)]
struct Inner {
    output: Option<Output>,
    wake: Option<Arc<FutureWake>>,
    taken: bool,
    /// A `__next__` suspended (an `await` is in progress) and has not
    /// taken the output nor given up since: a second `await` is refused,
    /// even once the output is stored but not yet delivered.
    awaiting: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Store the output (on a tokio worker) and hand what is left of the
    /// future to the loop's thread: there it is dropped attached to the
    /// interpreter, and then the waiting task is woken.
    fn finish<L: Send + 'static>(
        self: &Arc<Self>,
        out: Output,
        leftover: Option<L>,
        waker: Option<&Arc<LoopWaker>>,
    ) {
        let (via, unwanted) = {
            let mut i = self.lock();
            // Given up meanwhile (the awaiting task was cancelled as the
            // future finished): nothing will take the output. It is not
            // stored, where nothing would free it (an exception's traceback
            // can lead back to the awaiting task, a cycle the collector
            // cannot see), but dropped with the leftovers.
            let unwanted = match i.taken {
                true => Some(out),
                false => {
                    i.output = Some(out);
                    None
                }
            };
            let via = waker
                .cloned()
                .or_else(|| i.wake.as_ref().map(|w| w.loop_waker().clone()));
            (via, unwanted)
        };
        match via {
            Some(w) => w.push(Arc::new(Deliver {
                shared: self.clone(),
                leftover: Mutex::new(Some((leftover, unwanted))),
            })),
            // No loop known yet: nobody awaits it yet either.
            None => drop((leftover, unwanted)),
        }
    }
}

/// An output on its way to the loop's thread.
struct Deliver<L> {
    shared: Arc<Shared>,
    /// What the future still held, and an output given up on.
    leftover: Mutex<Option<(Option<L>, Option<Output>)>>,
}

impl<L: Send + 'static> Completion for Deliver<L> {
    fn complete(self: Arc<Self>, py: Python<'_>) {
        // Attached: whatever Python objects the future still held are
        // freed now, before the waiting task sees the result.
        drop(take(&self.leftover));
        let wake = {
            let mut i = self.shared.lock();
            if i.taken {
                None
            } else {
                i.wake.take()
            }
        };
        if let Some(w) = wake {
            w.complete(py);
        }
    }

    /// The loop is closed or gone: let go of the future its task waited
    /// on (it holds the loop, and the task through its callbacks).
    fn abandon(self: Arc<Self>) {
        let wake = self.shared.lock().wake.take();
        drop(wake);
    }
}

/// What is left of an aborted future, dropped on its loop's thread.
struct Release<L>(Mutex<Option<L>>);

impl<L: Send + 'static> Completion for Release<L> {
    fn complete(self: Arc<Self>, _py: Python<'_>) {
        drop(take(&self.0));
    }
}

/// A bridged future as spawned on tokio. When it finishes, it resolves to
/// its output and itself, for the loop's thread to drop; dropped before
/// that (aborted, or its runtime shut down), it sends itself there.
/// Either way, Python objects it holds are freed attached to the
/// interpreter, not left on a tokio worker for the next thread that
/// attaches.
struct Running<G: Future<Output = Output> + Unpin + Send + 'static> {
    fut: Option<G>,
    waker: Option<Arc<LoopWaker>>,
}

impl<G: Future<Output = Output> + Unpin + Send + 'static> Future for Running<G> {
    type Output = (Output, Option<G>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(fut) = self.fut.as_mut() else {
            return Poll::Pending;
        };
        match Pin::new(fut).poll(cx) {
            Poll::Ready(out) => Poll::Ready((out, self.fut.take())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<G: Future<Output = Output> + Unpin + Send + 'static> Drop for Running<G> {
    fn drop(&mut self) {
        if let (Some(fut), Some(w)) = (self.fut.take(), &self.waker) {
            w.push(Arc::new(Release(Mutex::new(Some(fut)))));
        }
    }
}

/// Dropped on a tokio task that ends without producing an output and
/// without its awaitable giving up on it: the runtime shut down under it.
struct Unfinished {
    shared: Option<Arc<Shared>>,
    waker: Option<Arc<LoopWaker>>,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        let Some(sh) = self.shared.take() else { return };
        if crate::exit::exiting() || sh.given_up.load(Ordering::SeqCst) {
            return;
        }
        sh.finish::<()>(
            convert::<()>(Err(PyRuntimeError::new_err(
                "the tokio runtime running the Rust future shut down before it finished",
            ))),
            None,
            self.waker.as_ref(),
        );
    }
}

fn convert<T>(r: PyResult<T>) -> Output
where
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    let v = match r {
        Ok(v) => v,
        Err(e) => return Output::Value(Err(e)),
    };
    // A Python object already: stored as one.
    let mut slot = Some(v);
    if let Some(obj) = (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<Py<PyAny>>>() {
        if let Some(obj) = obj.take() {
            return Output::Value(Ok(obj));
        }
    }
    Output::Later(Box::new(move |py| match slot {
        Some(v) => v.into_py_any(py),
        None => Ok(py.None()),
    }))
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
    let given_up = Arc::new(AtomicBool::new(false));
    let mut inner =
        Box::pin(GIVEN_UP.scope(given_up.clone(), crate::locals::scope(locals.clone(), fut)));
    let mut guarded = poll_fn(move |cx: &mut Context<'_>| {
        match catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Ready(r)) => Poll::Ready(convert(r)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(convert::<()>(Err(panic_to_pyerr(payload)))),
        }
    });
    let rt = crate::runtime::handle()?;
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner::default()),
        given_up,
    });
    let abort = {
        let _entered = rt.enter();
        match Pin::new(&mut guarded).poll(&mut Context::from_waker(noop_waker())) {
            Poll::Ready(out) => {
                // Once exiting, a Rust value is converted now, in the
                // caller's call, rather than beneath a later `await`.
                let out = match out {
                    Output::Later(f) if crate::exit::exiting() => Output::Value(f(py)),
                    out => out,
                };
                shared.lock().output = Some(out);
                None
            }
            Poll::Pending if crate::exit::exiting() => {
                // It would never be polled again (see `exit`), nor may it
                // be dropped: leaked, and the call fails.
                std::mem::forget(guarded);
                return Err(after_shutdown());
            }
            Poll::Pending => {
                // Still on the loop's thread: find its batcher now, for
                // awaitables the future schedules later from tokio, and
                // for its output and leftovers.
                let waker = locals.waker(py).cloned();
                let running = Running {
                    fut: Some(guarded),
                    waker: waker.clone(),
                };
                let mut unfinished = Unfinished {
                    shared: Some(shared.clone()),
                    waker,
                };
                let task = rt.spawn(async move {
                    // `None`: the interpreter is exiting (see `exit`).
                    if let Some((out, left)) = crate::exit::UntilExit::new(running).await {
                        if let Some(sh) = unfinished.shared.take() {
                            sh.finish(out, left, unfinished.waker.as_ref());
                        }
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
        self.shared.given_up.store(true, Ordering::SeqCst);
        if let Some(a) = &self.abort {
            a.abort();
        }
        let dropped = {
            let mut i = self.shared.lock();
            i.taken = true;
            i.awaiting = false;
            (i.output.take(), i.wake.take())
        };
        release(dropped);
    }

    /// The output, if there is one yet: taken (`taken` is set, and the
    /// `await` in progress, if any, is over).
    fn take_outcome(i: &mut Inner) -> Option<Output> {
        let out = i.output.take()?;
        i.taken = true;
        i.awaiting = false;
        Some(out)
    }

    /// Finish an `await` with its output. Converting a Rust value may run
    /// Python code: not once the process is exiting (the value is leaked).
    fn finish_await(py: Python<'_>, outcome: Output) -> PyResult<Option<Py<PyAny>>> {
        let value = match outcome {
            Output::Value(r) => r?,
            Output::Later(f) => {
                let Some(_beneath) = crate::exit::python_beneath() else {
                    std::mem::forget(f);
                    return Err(after_shutdown());
                };
                f(py)?
            }
        };
        crate::awaitable::complete(py, value)
    }
}

/// The error of an `await` that would have to wait for a Rust future, or
/// run Python code beneath the crate's frames, once the process is exiting
/// (see `exit`); as `loop.run_in_executor` raises `RuntimeError` then.
fn after_shutdown() -> PyErr {
    PyRuntimeError::new_err("cannot await a Rust future after interpreter shutdown")
}

/// Drop what a given-up awaitable held (its output may run Python code
/// when dropped: a `__del__`): counted as Python code beneath the crate's
/// frames, and leaked instead once the process is exiting (see `exit`).
fn release<T>(held: T) {
    match crate::exit::python_beneath() {
        Some(_beneath) => drop(held),
        None => std::mem::forget(held),
    }
}

impl Drop for RustFuture {
    fn drop(&mut self) {
        self.shared.given_up.store(true, Ordering::SeqCst);
        if let Some(a) = &self.abort {
            a.abort();
        }
        // Nothing can take the output any more: dropped here, counted
        // (a dealloc runs attached, on whatever thread freed the awaitable).
        let held = {
            let mut i = self.shared.lock();
            i.awaiting = false;
            (i.output.take(), i.wake.take())
        };
        if held.0.is_some() || held.1.is_some() {
            release(held);
        }
    }
}

#[pymethods]
impl RustFuture {
    /// Like awaiting a coroutine: raises `RuntimeError` while another
    /// task awaits it.
    fn __await__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        // As a coroutine suspended in an `await` is: until that `await`
        // takes the output or gives up, even once the output is stored.
        if slf.get().shared.lock().awaiting {
            return Err(PyRuntimeError::new_err(
                "Rust future is being awaited already",
            ));
        }
        Ok(slf)
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        // Python runs only with the shared state unlocked: the tokio side
        // locks it too, and a finaliser may re-enter.
        let current = {
            let mut i = self.shared.lock();
            if let Some(outcome) = Self::take_outcome(&mut i) {
                let wake = i.wake.take();
                drop(i);
                drop(wake);
                return Self::finish_await(py, outcome);
            }
            if i.taken {
                return Err(PyRuntimeError::new_err(
                    "cannot reuse already awaited Rust future",
                ));
            }
            i.wake.clone()
        };
        // At interpreter exit no Python code runs beneath this frame (see
        // `exit`), and the future will not finish: the `await` fails.
        let Some(_beneath) = crate::exit::python_beneath() else {
            return Err(after_shutdown());
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
        let (outcome, old) = {
            let mut i = self.shared.lock();
            match Self::take_outcome(&mut i) {
                // Finished while we were making the future: no wait.
                Some(outcome) => (Some(outcome), i.wake.take()),
                None => {
                    i.awaiting = true;
                    (None, i.wake.replace(wake.clone()))
                }
            }
        };
        drop(old);
        if let Some(outcome) = outcome {
            return Self::finish_await(py, outcome);
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
        let _beneath = crate::exit::python_beneath();
        self.give_up();
        Err(crate::awaitable::thrown(typ.py(), &typ, val.as_ref(), None).unwrap_or_else(|e| e))
    }

    /// Abort the Rust future.
    fn close(&self) {
        let _beneath = crate::exit::python_beneath();
        self.give_up();
    }

    // The future the Task waits on is not visited: it is co-owned by the
    // tokio task (through the shared state), an owner the collector cannot
    // see. Like a thread that will set a future's result, it keeps the
    // waiting Task reachable until the Rust future finishes or is aborted.
    // A result that is a Python object is visited once nothing else shares
    // the state (the tokio task and the delivery are over), as a finished
    // Future's is.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if Arc::strong_count(&self.shared) != 1 {
            return Ok(());
        }
        let Ok(i) = self.shared.inner.try_lock() else {
            return Ok(());
        };
        match &i.output {
            Some(Output::Value(Ok(v))) => visit.call(v),
            _ => Ok(()),
        }
    }

    fn __clear__(&self) {
        let output = self.shared.lock().output.take();
        drop(output);
    }

    /// True once the Rust future has finished.
    fn done(&self) -> bool {
        let i = self.shared.lock();
        i.output.is_some() || i.taken
    }
}

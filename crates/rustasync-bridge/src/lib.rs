//! Rust futures as asyncio awaitables and back, for PyO3 extensions.
//!
//! [`future_into_py`] turns a Rust future into an object Python can `await`
//! on any asyncio event loop (the stock loop or uvloop); [`into_future`]
//! turns a Python awaitable into a Rust future:
//!
//! ```no_run
//! use pyo3::prelude::*;
//! use std::time::Duration;
//!
//! /// `await fetch(0.1)` from Python returns "done" after 0.1 s.
//! #[pyfunction]
//! fn fetch(py: Python<'_>, seconds: f64) -> PyResult<Bound<'_, PyAny>> {
//!     rustasync_bridge::future_into_py(py, async move {
//!         tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
//!         Ok("done")
//!     })
//! }
//!
//! /// `await twice(f)` awaits `f()` from Rust, twice.
//! #[pyfunction]
//! fn twice(py: Python<'_>, f: Py<PyAny>) -> PyResult<Bound<'_, PyAny>> {
//!     rustasync_bridge::future_into_py(py, async move {
//!         let mut out = Vec::new();
//!         for _ in 0..2 {
//!             let task = Python::attach(|py| rustasync_bridge::into_future(f.bind(py).call0()?))?;
//!             out.push(task.await?);
//!         }
//!         Ok(out)
//!     })
//! }
//! ```
//!
//! # The model
//!
//! **Where the future is polled.** Once, at once, on the calling thread
//! (the loop's thread), inside the tokio runtime's context. A future that is
//! ready then gives an awaitable that is already complete: awaiting it does
//! not suspend and nothing crosses threads. Otherwise the future is spawned
//! on the tokio runtime ([`runtime::tokio_runtime`]: a multi-threaded
//! runtime created on first use) and polled there from then on.
//!
//! **How results reach the loop.** The output is handed to the loop through
//! the loop's wakeup batcher ([`runtime::LoopWaker`]): a tokio worker
//! queues the completion and, for the first completion of a burst, writes
//! one byte to a socket the loop watches with `add_reader`. It never
//! attaches to the interpreter, so it never waits for the GIL. On the loop
//! thread, one callback resolves every queued completion; what is left of
//! the future is dropped there, before the awaiting task resumes. The
//! output is converted to a Python object when the task takes it.
//! A burst of N completions costs one wakeup, not N `call_soon_threadsafe`.
//!
//! **Cancellation, Python side first.** Cancelling the awaiting task, or
//! closing or dropping the awaitable (including its collection by the
//! garbage collector, or a `wait_for` timeout) aborts the tokio task: the
//! Rust future is dropped at its next suspension point, on the loop's
//! thread (so Python objects it still holds are freed there). An output produced
//! meanwhile is dropped. Python awaitables it had asked [`into_future`] to
//! schedule, and that are not scheduled yet, never are.
//!
//! **Awaiting.** The awaitable behaves like a coroutine: it can be awaited
//! once; a second `await` while a task awaits it raises `RuntimeError`
//! ("Rust future is being awaited already"), and one after it finished
//! raises "cannot reuse already awaited Rust future".
//!
//! **The other direction.** [`into_future`] makes the awaitable a task on
//! its loop (at once on the loop's thread; from another thread through the
//! same batcher) and resolves with the task's result or exception.
//! Dropping the Rust future cancels the task; cancelling the task resolves
//! the Rust future with the `CancelledError`.
//!
//! **Contextvars.** [`future_into_py`] copies the caller's context and runs
//! the future in a [`scope`] with it and the loop ([`TaskLocals`]); inside,
//! on any thread, [`get_current_locals`] returns them. Awaitables the
//! future schedules with [`into_future`] run in a copy of that context (as
//! `asyncio.create_task` runs a coroutine in a copy of the current one),
//! and futures it bridges in turn inherit it.
//!
//! **Which runtime.** The crate's own multi-threaded runtime, created on
//! first use, or one the extension owns, given with
//! [`runtime::init_with_handle`] (see there for what `fork()` does to it).
//!
//! **When the loop closes.** Nothing is ever scheduled on a closed loop.
//! Closing the loop drops its reader, which marks the loop's waker dead; a
//! completion that arrives later is dropped, never passed to
//! `call_soon_threadsafe` (no "Event loop is closed" error).
//!
//! **At interpreter exit.** tokio workers never attach to the interpreter
//! to deliver a result: they write a byte. Only a thread that is already
//! attached asks Python anything, through `Python::try_attach`, which
//! refuses a finalizing interpreter. Your future may attach on its worker
//! itself; so an `atexit` callback (registered on first use, run before
//! finalization starts) stops polling bridged futures: they are neither
//! polled nor dropped again, and polls in progress are given up to one
//! second, with the interpreter released, to return. An `await` that would
//! have to wait for a Rust future from then on (in an `atexit` handler run
//! after the crate's, on a daemon thread) raises `RuntimeError`. Tokio tasks
//! you spawn yourself are not covered, nor are Python objects your future
//! drops on a tokio worker (PyO3 defers them to its reference pool, emptied
//! by whichever thread next enters a PyO3 callback).
//!
//! **After `fork()`.** The child has none of the parent's threads. A hook
//! registered with `os.register_at_fork` on first use bumps a fork
//! generation in the child; the tokio runtime, the waker thread and every
//! loop's waker are then created again on first use. The parent's copies
//! are leaked, never dropped, since their threads do not exist in the child.
//! A child that keeps running a loop it inherited leaves the wakeup bytes
//! of the parent's waker (their socket pair is shared) to the parent.
//!
//! # Ownership
//!
//! The asyncio future a waiting task is suspended on is shared by the tokio
//! task (which will resolve it) and the awaitable, so neither reports it to
//! the garbage collector. Like an executor thread that will set a result,
//! the running Rust future keeps the waiting task reachable until it
//! finishes or is aborted. No Rust lock is held while Python code runs or a
//! Python object is dropped.
//!
//! # Modules
//!
//! * [`future`]: [`future_into_py`] and the awaitable it returns.
//! * [`task`]: Python awaitables as Rust futures ([`into_future`]).
//! * [`TaskLocals`], [`scope`], [`get_current_locals`]: the loop and
//!   context a bridged future belongs to.
//! * [`runtime`]: the tokio runtime, the per-loop wakeup batcher, fork
//!   handling. Extensions can queue their own [`runtime::Completion`]s.
//! * [`awaitable`]: the pieces of asyncio's awaitable protocol for writing
//!   awaitables natively in Rust (cheap `StopIteration`, `am_send`).
//! * [`panic_to_pyerr`]: a caught panic as a Python exception.
//!
//! # Features
//!
//! * `pyo3-async-runtimes`: bridged futures also run inside
//!   `pyo3_async_runtimes::tokio::scope` with the same loop and context, so
//!   code written for that crate (its `get_current_locals`, `into_future`,
//!   `future_into_py`) keeps working inside them, and [`get_current_locals`]
//!   finds that crate's locals too. An extension can switch call by call;
//!   MIGRATION.md maps each call.

pub mod awaitable;
mod exit;
pub mod future;
mod locals;
mod panic;
pub mod runtime;
#[cfg(all(
    Py_3_12,
    not(Py_3_14),
    not(Py_LIMITED_API),
    not(Py_GIL_DISABLED),
    not(PyPy),
    not(GraalPy),
    not(py_sys_config = "Py_TRACE_REFS")
))]
mod stop;
pub mod task;

pub use future::{future_into_py, future_into_py_with_locals, RustFuture};
pub use locals::{get_current_locals, scope, TaskLocals};
pub use panic::panic_to_pyerr;
pub use task::{into_future, into_future_with_locals, TaskFuture};

/// The README's examples, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

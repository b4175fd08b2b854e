//! The broker's own tokio runtime, with the IO driver.
//!
//! The shared runtime ([`crate::runtime::tokio_runtime`]) has timers but no
//! IO driver: nothing else in rustasync touches sockets from tokio. NATS
//! connections, and the tasks async-nats spawns for them, live on this
//! runtime instead; a future that the bridge runs on the shared runtime
//! reaches them through [`on_io`]. Like the shared runtime it is created
//! on first use, and again in a forked child.

use std::future::Future;
use std::sync::Mutex;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::Runtime;

/// The IO runtime of this process (of this fork generation).
pub fn io_runtime() -> PyResult<&'static Runtime> {
    static SLOT: Mutex<Option<(u64, &'static Runtime)>> = Mutex::new(None);
    let generation = crate::runtime::fork_generation();
    let mut slot = SLOT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((g, rt)) = *slot {
        if g == generation {
            return Ok(rt);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .enable_time()
        .thread_name("rustasync-nats")
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("could not start the NATS runtime: {e}")))?;
    // Leaked, never dropped: in a forked child the parent's runtime has no
    // threads, and dropping it would wait for them.
    let rt: &'static Runtime = Box::leak(Box::new(rt));
    *slot = Some((generation, rt));
    Ok(rt)
}

/// Aborts the task when dropped: cancelling the caller cancels the work.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Run `fut` on the IO runtime and wait for its output from any runtime.
/// Dropping the returned future aborts `fut`.
pub async fn on_io<F>(fut: F) -> PyResult<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut task = AbortOnDrop(io_runtime()?.spawn(fut));
    let r = (&mut task.0).await;
    r.map_err(|e| {
        if e.is_panic() {
            crate::errors::panic_to_pyerr(e.into_panic())
        } else {
            PyRuntimeError::new_err("the NATS operation was cancelled")
        }
    })
}

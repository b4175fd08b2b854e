//! Waiting for a Rust future from a plain thread, with the interpreter
//! released, a deadline, and Ctrl-C on the main thread.

use std::future::Future;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// Run `fut` on the tokio runtime and wait for it. `Ok(None)` if the
/// deadline passed first; a signal's exception (KeyboardInterrupt) if one
/// arrived. Either way the future is then dropped (aborted).
pub fn wait<T: Send + 'static>(
    py: Python<'_>,
    fut: impl Future<Output = T> + Send + 'static,
    deadline: Option<Instant>,
) -> PyResult<Option<T>> {
    let rt = super::rt::io_runtime()?;
    let (tx, rx) = mpsc::sync_channel(1);
    let task = rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    let rx = std::sync::Mutex::new(rx);
    let (r, sig) = crate::channel::blocking(py, |check| loop {
        let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
        let slice = match deadline {
            None => Duration::from_millis(50),
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) => left.min(Duration::from_millis(50)),
                None => return rx.try_recv().ok().map(Some),
            },
        };
        match rx.recv_timeout(slice) {
            Ok(v) => return Some(Some(v)),
            // The task ended without an answer: it panicked.
            Err(mpsc::RecvTimeoutError::Disconnected) => return Some(None),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if check() {
                    return None;
                }
            }
        }
    });
    if r.is_none() {
        task.abort();
    }
    match (sig, r) {
        (Some(e), _) => Err(e),
        (None, Some(None)) => Err(pyo3::panic::PanicException::new_err(
            "the NATS operation panicked",
        )),
        (None, r) => Ok(r.flatten()),
    }
}

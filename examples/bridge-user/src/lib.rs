//! `bridge_user`: a small PyO3 extension that exposes async Rust to asyncio
//! through `rustasync-bridge`, written as any project depending on the
//! crate would write it.
//!
//! ```python
//! import asyncio, bridge_user
//!
//! async def main():
//!     await bridge_user.sleep_all([0.1, 0.2, 0.3])   # about 0.3 s, not 0.6 s
//!     await bridge_user.count_primes(1_000_000)      # 78498, off the loop
//!     async for i in bridge_user.ticks(3, 0.01):     # 0, 1, 2
//!         print(i)
//!
//!     async def double(x):
//!         await asyncio.sleep(0.01)
//!         return 2 * x
//!     await bridge_user.map_async(double, [1, 2, 3])  # [2, 4, 6]
//!
//! asyncio.run(main())
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyRuntimeError, PyStopAsyncIteration, PyValueError};
use pyo3::prelude::*;
use rustasync_bridge::{future_into_py, into_future};
use tokio::sync::{mpsc, Mutex};

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Counts this module's Rust futures and tasks that have not finished or
/// been dropped yet: `live()` going back to 0 shows cancellation reached
/// the Rust side.
struct Live;

impl Live {
    fn new() -> Self {
        LIVE.fetch_add(1, Ordering::SeqCst);
        Live
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

fn duration(seconds: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| PyValueError::new_err("seconds must be a non-negative number"))
}

fn join_error(e: tokio::task::JoinError) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

/// How many of this module's Rust futures and tasks are still running.
#[pyfunction]
fn live() -> usize {
    LIVE.load(Ordering::SeqCst)
}

/// `await sleep_all(delays)`: one tokio timer per delay, all running at
/// once; resolves to the seconds each took. Cancelling the call aborts
/// every timer.
#[pyfunction]
fn sleep_all(py: Python<'_>, delays: Vec<f64>) -> PyResult<Bound<'_, PyAny>> {
    let delays = delays
        .into_iter()
        .map(duration)
        .collect::<PyResult<Vec<_>>>()?;
    future_into_py(py, async move {
        let _live = Live::new();
        let start = Instant::now();
        let mut timers = tokio::task::JoinSet::new();
        for (i, d) in delays.iter().copied().enumerate() {
            timers.spawn(async move {
                let _live = Live::new();
                tokio::time::sleep(d).await;
                (i, start.elapsed().as_secs_f64())
            });
        }
        // Dropping the set (on cancellation) aborts the timers left.
        let mut took = vec![0.0; delays.len()];
        while let Some(done) = timers.join_next().await {
            let (i, t) = done.map_err(join_error)?;
            took[i] = t;
        }
        Ok(took)
    })
}

/// `await count_primes(n)`: how many primes are below `n`, computed on
/// tokio's blocking pool while the event loop goes on.
#[pyfunction]
fn count_primes(py: Python<'_>, n: usize) -> PyResult<Bound<'_, PyAny>> {
    future_into_py(py, async move {
        let _live = Live::new();
        tokio::task::spawn_blocking(move || sieve(n))
            .await
            .map_err(join_error)
    })
}

fn sieve(n: usize) -> usize {
    if n < 3 {
        return 0;
    }
    let mut composite = vec![false; n];
    let mut count = 0;
    for i in 2..n {
        if !composite[i] {
            count += 1;
            let mut j = i * i;
            while j < n {
                composite[j] = true;
                j += i;
            }
        }
    }
    count
}

/// `async for i in ticks(n, interval)`: the ints `0..n`, one every
/// `interval` seconds, produced by a tokio task. The task stops when the
/// iterator is dropped.
#[pyfunction]
fn ticks(n: u64, interval: f64) -> PyResult<Ticks> {
    let interval = duration(interval)?;
    let (tx, rx) = mpsc::channel(16);
    rustasync_bridge::runtime::handle()?.spawn(async move {
        let _live = Live::new();
        for i in 0..n {
            if i > 0 {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = tx.closed() => return,
                }
            }
            if tx.send(i).await.is_err() {
                return;
            }
        }
    });
    Ok(Ticks {
        rx: Arc::new(Mutex::new(rx)),
    })
}

/// The async iterator returned by `ticks`.
#[pyclass(frozen)]
struct Ticks {
    rx: Arc<Mutex<mpsc::Receiver<u64>>>,
}

#[pymethods]
impl Ticks {
    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let rx = self.rx.clone();
        future_into_py(py, async move {
            match rx.lock().await.recv().await {
                Some(i) => Ok(i),
                None => Err(PyStopAsyncIteration::new_err(())),
            }
        })
    }
}

/// `await map_async(f, items)`: awaits `f(item)` for every item from Rust,
/// all scheduled at once on the caller's loop (in a copy of its context);
/// resolves to the results in order. The first exception is raised and
/// the calls still running are cancelled.
#[pyfunction]
fn map_async(py: Python<'_>, f: Py<PyAny>, items: Vec<Py<PyAny>>) -> PyResult<Bound<'_, PyAny>> {
    future_into_py(py, async move {
        let _live = Live::new();
        // On a tokio worker from here on, as a client past its first I/O.
        tokio::task::yield_now().await;
        let calls = Python::attach(|py| {
            items
                .into_iter()
                .map(|x| into_future(f.bind(py).call1((x,))?))
                .collect::<PyResult<Vec<_>>>()
        })?;
        let mut out = Vec::with_capacity(calls.len());
        // An error returns early: dropping the calls left cancels them.
        for call in calls {
            out.push(call.await?);
        }
        Ok(out)
    })
}

#[pymodule]
fn bridge_user(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(live, m)?)?;
    m.add_function(wrap_pyfunction!(sleep_all, m)?)?;
    m.add_function(wrap_pyfunction!(count_primes, m)?)?;
    m.add_function(wrap_pyfunction!(ticks, m)?)?;
    m.add_function(wrap_pyfunction!(map_async, m)?)?;
    m.add_class::<Ticks>()?;
    Ok(())
}

//! Entry points the tests of the bridge crate drive (Cargo feature
//! `test-hooks`): Python awaitables awaited from Rust, the runtime a
//! bridged future runs on, pyo3-async-runtimes calls made inside bridged
//! futures, and the same future bridged by either crate (the failure-mode
//! tests).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use rustasync_bridge::{future_into_py, into_future};

/// Await `aw` from Rust: resolves to `(True, result)`, to `(True, exc)` if
/// it raised `exc` (a `CancelledError` included), or to `(False, None)` if
/// `timeout` seconds passed first (the Rust future is then dropped).
/// `early`: schedule `aw` at call time, on the loop's thread; otherwise
/// from a tokio worker, after one trip through tokio.
#[pyfunction]
#[pyo3(signature = (aw, early = false, timeout = None))]
fn _bridge_await(
    py: Python<'_>,
    aw: Py<PyAny>,
    early: bool,
    timeout: Option<f64>,
) -> PyResult<Bound<'_, PyAny>> {
    let timeout = timeout
        .map(Duration::try_from_secs_f64)
        .transpose()
        .map_err(|_| PyValueError::new_err("timeout must be a non-negative number"))?;
    let scheduled = if early {
        Some(into_future(aw.clone_ref(py).into_bound(py))?)
    } else {
        None
    };
    future_into_py(py, async move {
        let fut = match scheduled {
            Some(f) => f,
            None => {
                tokio::task::yield_now().await;
                Python::attach(|py| into_future(aw.into_bound(py)))?
            }
        };
        let outcome = match timeout {
            Some(d) => tokio::time::timeout(d, fut).await.ok(),
            None => Some(fut.await),
        };
        Python::attach(|py| match outcome {
            Some(Ok(v)) => (true, v).into_py_any(py),
            Some(Err(e)) => (true, e.into_value(py)).into_py_any(py),
            None => (false, py.None()).into_py_any(py),
        })
    })
}

/// The name of the tokio thread a bridged future runs on.
#[pyfunction]
fn _bridge_thread_name(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    future_into_py(py, async move {
        tokio::task::yield_now().await;
        Ok(std::thread::current().name().unwrap_or("").to_owned())
    })
}

/// Run bridged futures from now on on a runtime of the extension's own,
/// whose threads are called `name`.
#[pyfunction]
fn _bridge_use_own_runtime(name: String) -> PyResult<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name(name)
        .build()
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    rustasync_bridge::runtime::init_with_runtime(Box::leak(Box::new(rt)));
    Ok(())
}

/// Inside a bridged future on a tokio worker: pyo3-async-runtimes'
/// `get_current_locals`, as `(event_loop, context)`.
#[pyfunction]
fn _bridge_pyo3_async_runtimes_locals(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    future_into_py(py, async move {
        tokio::task::yield_now().await;
        Python::attach(|py| {
            let l = pyo3_async_runtimes::tokio::get_current_locals(py)?;
            (l.event_loop(py), l.context(py)).into_py_any(py)
        })
    })
}

/// Inside a bridged future on a tokio worker: await `aw` through
/// pyo3-async-runtimes' `into_future`.
#[pyfunction]
fn _bridge_await_pyo3_async_runtimes(py: Python<'_>, aw: Py<PyAny>) -> PyResult<Bound<'_, PyAny>> {
    future_into_py(py, async move {
        tokio::task::yield_now().await;
        let f = Python::attach(|py| pyo3_async_runtimes::tokio::into_future(aw.into_bound(py)))?;
        f.await
    })
}

/// Inside a bridged future on a tokio worker: make an awaitable with
/// pyo3-async-runtimes' `future_into_py` (resolving to `value` after a
/// trip through tokio) and await it through this crate's `into_future`.
#[pyfunction]
fn _bridge_nested_pyo3_async_runtimes(
    py: Python<'_>,
    value: Py<PyAny>,
) -> PyResult<Bound<'_, PyAny>> {
    future_into_py(py, async move {
        tokio::task::yield_now().await;
        let f = Python::attach(|py| {
            let aw = pyo3_async_runtimes::tokio::future_into_py(py, async move {
                tokio::task::yield_now().await;
                Ok(value)
            })?;
            into_future(aw)
        })?;
        f.await
    })
}

/// Inside a future run by pyo3-async-runtimes' `future_into_py`: await `aw`
/// through this crate's `into_future` (which finds that crate's locals).
#[pyfunction]
fn _bridge_await_from_pyo3_async_runtimes(
    py: Python<'_>,
    aw: Py<PyAny>,
) -> PyResult<Bound<'_, PyAny>> {
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        tokio::task::yield_now().await;
        let f = Python::attach(|py| into_future(aw.into_bound(py)))?;
        f.await
    })
}

static SLEEPS_ABORTED: AtomicUsize = AtomicUsize::new(0);
static SLEEPS_FINISHED: AtomicUsize = AtomicUsize::new(0);

/// Counts, when a `_bridge_sleep` future is dropped, whether it finished.
struct SleepOutcome(bool);

impl Drop for SleepOutcome {
    fn drop(&mut self) {
        let n = if self.0 {
            &SLEEPS_FINISHED
        } else {
            &SLEEPS_ABORTED
        };
        n.fetch_add(1, Ordering::SeqCst);
    }
}

/// Awaitable resolving to `value` after `seconds` of `tokio::time::sleep`,
/// bridged by this crate (`via="rustasync-bridge"`) or by
/// `pyo3_async_runtimes::tokio::future_into_py` (`via="pyo3-async-runtimes"`).
/// Its Rust future is counted by `_bridge_sleep_counts()` when dropped,
/// polled or not.
#[pyfunction]
fn _bridge_sleep<'py>(
    py: Python<'py>,
    via: &str,
    seconds: f64,
    value: Py<PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let d = Duration::try_from_secs_f64(seconds)
        .map_err(|_| PyValueError::new_err("seconds must be a non-negative number"))?;
    let outcome = SleepOutcome(false);
    let fut = async move {
        // The whole guard moves in, not just the field assigned below.
        let mut outcome = outcome;
        tokio::time::sleep(d).await;
        outcome.0 = true;
        Ok(value)
    };
    match via {
        "rustasync-bridge" => future_into_py(py, fut),
        "pyo3-async-runtimes" => pyo3_async_runtimes::tokio::future_into_py(py, fut),
        _ => Err(PyValueError::new_err(format!("unknown bridge {via:?}"))),
    }
}

/// `(aborted, finished)`: `_bridge_sleep` futures dropped before and after
/// their sleep ended, since the process started.
#[pyfunction]
fn _bridge_sleep_counts() -> (usize, usize) {
    (
        SLEEPS_ABORTED.load(Ordering::SeqCst),
        SLEEPS_FINISHED.load(Ordering::SeqCst),
    )
}

/// Awaitable whose Rust future, bridged by `via` as in `_bridge_sleep`,
/// attaches to the interpreter on its tokio worker every millisecond
/// (making a small list each time, as a future converting items would),
/// for ten minutes.
#[pyfunction]
fn _bridge_attach_for_long<'py>(py: Python<'py>, via: &str) -> PyResult<Bound<'py, PyAny>> {
    let fut = async move {
        for _ in 0..600_000 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Python::attach(|py| pyo3::types::PyList::new(py, [1, 2, 3]).map(drop))?;
        }
        Ok(())
    };
    match via {
        "rustasync-bridge" => future_into_py(py, fut),
        "pyo3-async-runtimes" => pyo3_async_runtimes::tokio::future_into_py(py, fut),
        _ => Err(PyValueError::new_err(format!("unknown bridge {via:?}"))),
    }
}

/// The runtime `_bridge_use_droppable_runtime` gave, until it is shut down.
static DROPPABLE: std::sync::Mutex<Option<tokio::runtime::Runtime>> = std::sync::Mutex::new(None);

/// Run bridged futures from now on on a runtime of the extension's own
/// that `_bridge_shutdown_runtime` can shut down.
#[pyfunction]
fn _bridge_use_droppable_runtime() -> PyResult<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("droppable")
        .build()
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    rustasync_bridge::runtime::init_with_handle(rt.handle().clone());
    let old = DROPPABLE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .replace(rt);
    if let Some(old) = old {
        old.shutdown_background();
    }
    Ok(())
}

/// Shut down the runtime `_bridge_use_droppable_runtime` gave (its tasks
/// are dropped), leaving its handle given.
#[pyfunction]
fn _bridge_shutdown_runtime(py: Python<'_>) {
    let rt = DROPPABLE.lock().unwrap_or_else(|e| e.into_inner()).take();
    py.detach(move || {
        if let Some(rt) = rt {
            rt.shutdown_background();
        }
    });
}

/// Awaitable whose Rust future holds `obj` (not its result: it resolves
/// to `None`) for `seconds` of `tokio::time::sleep`.
#[pyfunction]
fn _bridge_hold(py: Python<'_>, obj: Py<PyAny>, seconds: f64) -> PyResult<Bound<'_, PyAny>> {
    let d = Duration::try_from_secs_f64(seconds)
        .map_err(|_| PyValueError::new_err("seconds must be a non-negative number"))?;
    future_into_py(py, async move {
        let _obj = obj;
        tokio::time::sleep(d).await;
        Ok(())
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_bridge_attach_for_long, m)?)?;
    m.add_function(wrap_pyfunction!(_bridge_sleep, m)?)?;
    m.add_function(wrap_pyfunction!(_bridge_sleep_counts, m)?)?;
    m.add_function(wrap_pyfunction!(_bridge_await, m)?)?;
    m.add_function(wrap_pyfunction!(_bridge_thread_name, m)?)?;
    m.add_function(wrap_pyfunction!(_bridge_use_own_runtime, m)?)?;
    m.add_function(wrap_pyfunction!(_bridge_use_droppable_runtime, m)?)?;
    m.add_function(wrap_pyfunction!(_bridge_shutdown_runtime, m)?)?;
    m.add_function(wrap_pyfunction!(_bridge_hold, m)?)?;
    m.add_function(wrap_pyfunction!(_bridge_pyo3_async_runtimes_locals, m)?)?;
    m.add_function(wrap_pyfunction!(_bridge_await_pyo3_async_runtimes, m)?)?;
    m.add_function(wrap_pyfunction!(_bridge_nested_pyo3_async_runtimes, m)?)?;
    m.add_function(wrap_pyfunction!(_bridge_await_from_pyo3_async_runtimes, m)?)?;
    Ok(())
}

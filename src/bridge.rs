//! Rust futures as Python awaitables: the demo functions the tests and
//! benchmarks await. The bridge itself is the `rustasync-bridge` crate
//! (`crates/rustasync-bridge`); see its docs for the model.

use pyo3::prelude::*;

pub use rustasync_bridge::{future_into_py, RustFuture};

mod demo {
    //! Small Rust futures exposed to Python for tests and benchmarks.

    use super::future_into_py;
    use crate::channel::PyChannel;
    use pyo3::exceptions::PyValueError;
    use pyo3::prelude::*;
    use pyo3::IntoPyObjectExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    static DROPPED_UNFINISHED: AtomicUsize = AtomicUsize::new(0);

    /// Counts futures dropped before they finished.
    struct Tracker(bool);
    impl Drop for Tracker {
        fn drop(&mut self) {
            if !self.0 {
                DROPPED_UNFINISHED.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Awaitable resolving to `value` at once (a ready Rust future).
    #[pyfunction]
    pub fn _rust_ready(py: Python<'_>, value: Py<PyAny>) -> PyResult<Bound<'_, PyAny>> {
        future_into_py(py, async move { Ok(value) })
    }

    /// Awaitable resolving to `value` after one trip through tokio.
    #[pyfunction]
    pub fn _rust_yield(py: Python<'_>, value: Py<PyAny>) -> PyResult<Bound<'_, PyAny>> {
        future_into_py(py, async move {
            tokio::task::yield_now().await;
            Ok(value)
        })
    }

    /// Awaitable resolving to `value` after `seconds` of `tokio::time::sleep`.
    #[pyfunction]
    pub fn _rust_sleep(
        py: Python<'_>,
        seconds: f64,
        value: Py<PyAny>,
    ) -> PyResult<Bound<'_, PyAny>> {
        let d = Duration::try_from_secs_f64(seconds)
            .map_err(|_| PyValueError::new_err("seconds must be a non-negative number"))?;
        future_into_py(py, async move {
            let mut t = Tracker(false);
            tokio::time::sleep(d).await;
            t.0 = true;
            Ok(value)
        })
    }

    /// How many Rust futures were dropped before finishing (cancellations).
    #[pyfunction]
    pub fn _rust_dropped_count() -> usize {
        DROPPED_UNFINISHED.load(Ordering::SeqCst)
    }

    /// Awaitable whose Rust future panics with `msg` (after one trip through
    /// tokio if `later`).
    #[pyfunction]
    #[pyo3(signature = (msg, later = false))]
    pub fn _rust_panic(py: Python<'_>, msg: String, later: bool) -> PyResult<Bound<'_, PyAny>> {
        future_into_py(py, async move {
            if later {
                tokio::task::yield_now().await;
            }
            if !msg.is_empty() {
                panic!("{msg}");
            }
            Ok(())
        })
    }

    /// Awaitable whose Rust future fails with `ValueError(msg)`.
    #[pyfunction]
    #[pyo3(signature = (msg, later = false))]
    pub fn _rust_fail(py: Python<'_>, msg: String, later: bool) -> PyResult<Bound<'_, PyAny>> {
        future_into_py(py, async move {
            if later {
                tokio::task::yield_now().await;
            }
            Err::<(), _>(PyValueError::new_err(msg))
        })
    }

    /// Awaitable whose Rust future awaits the Python awaitable `aw` (run on
    /// the caller's loop, in a copy of the caller's contextvars context).
    #[pyfunction]
    pub fn _rust_await(py: Python<'_>, aw: Py<PyAny>) -> PyResult<Bound<'_, PyAny>> {
        future_into_py(py, async move {
            tokio::task::yield_now().await;
            let f = Python::attach(|py| rustasync_bridge::into_future(aw.into_bound(py)))?;
            f.await
        })
    }

    /// The same ready future through `pyo3_async_runtimes::tokio::future_into_py`,
    /// for comparison.
    #[pyfunction]
    pub fn _pyo3_async_runtimes_ready(
        py: Python<'_>,
        value: Py<PyAny>,
    ) -> PyResult<Bound<'_, PyAny>> {
        pyo3_async_runtimes::tokio::future_into_py(py, async move { Ok(value) })
    }

    /// The same one-trip future through
    /// `pyo3_async_runtimes::tokio::future_into_py`, for comparison.
    #[pyfunction]
    pub fn _pyo3_async_runtimes_yield(
        py: Python<'_>,
        value: Py<PyAny>,
    ) -> PyResult<Bound<'_, PyAny>> {
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            tokio::task::yield_now().await;
            Ok(value)
        })
    }

    /// A bridged future that awaits `f(0)`, ..., `f(n - 1)` from a tokio
    /// worker through this crate's `into_future` (`via="rustasync-bridge"`)
    /// or pyo3-async-runtimes' (`via="pyo3-async-runtimes"`): all scheduled
    /// first (`at_once`), or each awaited before the next is made. Resolves
    /// to the number of results and their sum.
    #[pyfunction]
    pub fn _rust_await_each(
        py: Python<'_>,
        via: String,
        f: Py<PyAny>,
        n: usize,
        at_once: bool,
    ) -> PyResult<Bound<'_, PyAny>> {
        use std::future::Future;
        use std::pin::Pin;
        type Call = Pin<Box<dyn Future<Output = PyResult<Py<PyAny>>> + Send>>;
        let theirs = match via.as_str() {
            "rustasync-bridge" => false,
            "pyo3-async-runtimes" => true,
            _ => return Err(PyValueError::new_err(format!("unknown bridge {via:?}"))),
        };
        let call = move |py: Python<'_>, i: usize| -> PyResult<Call> {
            let aw = f.bind(py).call1((i,))?;
            Ok(if theirs {
                Box::pin(pyo3_async_runtimes::tokio::into_future(aw)?)
            } else {
                Box::pin(rustasync_bridge::into_future(aw)?)
            })
        };
        future_into_py(py, async move {
            tokio::task::yield_now().await;
            let mut outs = Vec::with_capacity(n);
            if at_once {
                let calls =
                    Python::attach(|py| (0..n).map(|i| call(py, i)).collect::<PyResult<Vec<_>>>())?;
                for c in calls {
                    outs.push(c.await?);
                }
            } else {
                for i in 0..n {
                    let c = Python::attach(|py| call(py, i))?;
                    outs.push(c.await?);
                }
            }
            Python::attach(|py| {
                let mut sum = 0u64;
                for o in &outs {
                    sum += o.bind(py).extract::<u64>()?;
                }
                Ok((outs.len(), sum))
            })
        })
    }

    /// A tokio task sending the ints `0..n` into `channel` (panicking before
    /// item `panic_at`, if given); resolves to the number sent.
    #[pyfunction]
    #[pyo3(signature = (channel, n, panic_at = None))]
    pub fn _rust_produce<'py>(
        py: Python<'py>,
        channel: &PyChannel,
        n: u64,
        panic_at: Option<u64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ch = channel.core().clone();
        future_into_py(py, async move {
            tokio::task::yield_now().await;
            let mut i = 0;
            while i < n {
                let end = (i + 1024).min(n);
                let batch: Vec<Py<PyAny>> = Python::attach(|py| {
                    (i..end).map(|v| v.into_py_any(py)).collect::<PyResult<_>>()
                })?;
                for item in batch {
                    if Some(i) == panic_at {
                        panic!("producer failed at item {i}");
                    }
                    ch.send(item)
                        .await
                        .map_err(|_| crate::channel::closed_error())?;
                    i += 1;
                }
            }
            Ok(i)
        })
    }

    /// A tokio task receiving from `channel` until it is closed and drained;
    /// resolves to the list of items.
    #[pyfunction]
    pub fn _rust_collect<'py>(py: Python<'py>, channel: &PyChannel) -> PyResult<Bound<'py, PyAny>> {
        let ch = channel.core().clone();
        future_into_py(py, async move {
            let mut out = Vec::new();
            while let Ok(batch) = ch.recv_many(4096).await {
                out.extend(batch);
            }
            Ok(out)
        })
    }

    pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_function(wrap_pyfunction!(_rust_ready, m)?)?;
        m.add_function(wrap_pyfunction!(_rust_yield, m)?)?;
        m.add_function(wrap_pyfunction!(_rust_sleep, m)?)?;
        m.add_function(wrap_pyfunction!(_rust_dropped_count, m)?)?;
        m.add_function(wrap_pyfunction!(_rust_panic, m)?)?;
        m.add_function(wrap_pyfunction!(_rust_fail, m)?)?;
        m.add_function(wrap_pyfunction!(_rust_await, m)?)?;
        m.add_function(wrap_pyfunction!(_pyo3_async_runtimes_ready, m)?)?;
        m.add_function(wrap_pyfunction!(_pyo3_async_runtimes_yield, m)?)?;
        m.add_function(wrap_pyfunction!(_rust_await_each, m)?)?;
        m.add_function(wrap_pyfunction!(_rust_produce, m)?)?;
        m.add_function(wrap_pyfunction!(_rust_collect, m)?)?;
        Ok(())
    }
}

/// Register the awaitable class and the demo functions on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RustFuture>()?;
    demo::register(m)
}

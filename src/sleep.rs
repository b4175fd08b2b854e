//! `rustasync.sleep`: asyncio's `sleep` on a per-loop Rust timer heap.

use std::sync::Mutex;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyInt, PyString};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::awaitable::{self, next_result, Step, Stepper};
use crate::timers::{LoopTimers, Waker};

pub(crate) enum SleepState {
    /// Created, not started.
    New,
    /// `delay <= 0`: yielded once, returns on the next step.
    Yielded,
    /// Waiting for `fut`, which the loop's timers complete.
    Waiting {
        fut: Py<PyAny>,
        timers: Option<Py<LoopTimers>>,
    },
    /// Finished, closed, or handed to `gather`.
    Done,
}

/// The awaitable returned by `sleep()`: behaves like the coroutine object
/// `asyncio.sleep()` returns (`send`, `throw`, `close`, `__await__`).
#[pyclass(frozen, module = "rustasync._rustasync", name = "Sleep")]
pub struct Sleep {
    pub(crate) delay: f64,
    pub(crate) result: Py<PyAny>,
    pub(crate) state: Mutex<SleepState>,
}

impl Sleep {
    /// Take the sleep over (for `gather`): returns `false` if it was started.
    pub(crate) fn adopt(&self) -> bool {
        let mut st = self.state.lock().unwrap();
        if matches!(*st, SleepState::New) {
            *st = SleepState::Done;
            true
        } else {
            false
        }
    }

    /// As a coroutine: an `await` of a sleep that is suspended (awaited
    /// somewhere else) raises instead of taking it over.
    pub(crate) fn check_not_awaited(&self) -> PyResult<()> {
        let busy = matches!(
            *self.state.lock().unwrap(),
            SleepState::Yielded | SleepState::Waiting { .. }
        );
        if busy {
            return Err(PyRuntimeError::new_err(
                "coroutine is being awaited already",
            ));
        }
        Ok(())
    }

    fn finish_waiting(&self, py: Python<'_>) {
        let old = std::mem::replace(&mut *self.state.lock().unwrap(), SleepState::Done);
        if let SleepState::Waiting { fut, timers } = old {
            let done = fut
                .bind(py)
                .call_method0(intern!(py, "done"))
                .and_then(|d| d.is_truthy())
                .unwrap_or(true);
            if !done {
                // Nobody waits for it any more: cancel it so its timer entry
                // counts as dead.
                let _ = fut.bind(py).call_method0(intern!(py, "cancel"));
            }
            if let Some(t) = timers {
                t.get().note_cancelled(py);
            }
        }
    }
}

impl Stepper for Sleep {
    fn step(slf: &Bound<'_, Self>) -> PyResult<Step> {
        let r = Self::step_inner(slf);
        if r.is_err() {
            // As a coroutine: an exception out of a step finishes it.
            let old = std::mem::replace(&mut *slf.get().state.lock().unwrap(), SleepState::Done);
            drop(old);
        }
        r
    }
}

impl Sleep {
    fn step_inner(slf: &Bound<'_, Self>) -> PyResult<Step> {
        let py = slf.py();
        let me = slf.get();
        let mut st = me.state.lock().unwrap();
        match &*st {
            SleepState::New => {
                if me.delay <= 0.0 {
                    *st = SleepState::Yielded;
                    return Ok(Step::Yield(py.None()));
                }
                drop(st);
                let loop_ = awaitable::running_loop(py)?;
                let fut = loop_.call_method0(intern!(py, "create_future"))?;
                // `inf` too gets an entry (never due): as stock's
                // `call_later(inf)` handle, it keeps the sleeping task
                // reachable from its loop.
                let timers = LoopTimers::for_loop(&loop_)?;
                let when = timers.get().now(py)? + me.delay;
                let waker = Waker::Future {
                    fut: fut.clone().unbind(),
                };
                LoopTimers::insert(&timers, when, waker)?;
                let timers = Some(timers.unbind());
                fut.setattr(intern!(py, "_asyncio_future_blocking"), true)?;
                *me.state.lock().unwrap() = SleepState::Waiting {
                    fut: fut.clone().unbind(),
                    timers,
                };
                Ok(Step::Yield(fut.unbind()))
            }
            SleepState::Yielded => {
                *st = SleepState::Done;
                Ok(Step::Return(me.result.clone_ref(py)))
            }
            SleepState::Waiting { fut, .. } => {
                let fut = fut.clone_ref(py);
                drop(st);
                let fut = fut.bind(py);
                if !fut.call_method0(intern!(py, "done"))?.is_truthy()? {
                    // Resumed before its timer: the sleep stays as it was.
                    return Err(awaitable::await_misuse());
                }
                let old = std::mem::replace(&mut *me.state.lock().unwrap(), SleepState::Done);
                drop(old);
                // Raises the future's exception if it was cancelled.
                fut.call_method0(intern!(py, "result"))?;
                Ok(Step::Return(me.result.clone_ref(py)))
            }
            SleepState::Done => Err(PyRuntimeError::new_err(
                "cannot reuse already awaited coroutine",
            )),
        }
    }
}

#[pymethods]
impl Sleep {
    fn __await__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        slf.get().check_not_awaited()?;
        Ok(slf)
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        next_result(slf.py(), Self::step(slf)?)
    }

    /// Resume the sleep, as `coroutine.send(value)`.
    #[pyo3(signature = (value, /))]
    fn send(slf: &Bound<'_, Self>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        if !value.is_none() && matches!(*slf.get().state.lock().unwrap(), SleepState::New) {
            return Err(PyTypeError::new_err(
                "can't send non-None value to a just-started coroutine",
            ));
        }
        awaitable::as_send(slf.py(), Self::__next__(slf))
    }

    /// Raise an exception at the suspension point, as `coroutine.throw()`;
    /// the sleep's timer is dropped and the exception propagates.
    #[pyo3(signature = (typ, val=None, tb=None, /))]
    fn throw(
        &self,
        typ: &Bound<'_, PyAny>,
        val: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let err = awaitable::thrown(typ.py(), typ, val, tb)?;
        self.finish_waiting(typ.py());
        Err(err)
    }

    /// Close the sleep, as `coroutine.close()`: drops its timer, no warning.
    fn close(&self, py: Python<'_>) {
        self.finish_waiting(py);
    }

    #[getter]
    fn __name__(&self) -> &'static str {
        "sleep"
    }

    #[getter]
    fn __qualname__(&self) -> &'static str {
        "sleep"
    }

    #[getter]
    fn cr_running(&self) -> bool {
        false
    }

    #[getter]
    fn cr_await(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        match &*self.state.lock().unwrap() {
            SleepState::Waiting { fut, .. } => Some(fut.clone_ref(py)),
            _ => None,
        }
    }

    fn __repr__(&self) -> String {
        format!("<rustasync.sleep({}) object>", self.delay)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.result)?;
        if let Ok(st) = self.state.try_lock() {
            if let SleepState::Waiting { fut, timers } = &*st {
                visit.call(fut)?;
                if let Some(t) = timers {
                    visit.call(t)?;
                }
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        // Drop the future outside the lock: its finaliser may call back in.
        let old = self.state.lock().ok().and_then(|mut st| {
            matches!(*st, SleepState::Waiting { .. })
                .then(|| std::mem::replace(&mut *st, SleepState::Done))
        });
        drop(old);
    }
}

/// Read `delay` as asyncio would accept it, or raise naming the argument.
fn parse_delay(delay: &Bound<'_, PyAny>) -> PyResult<f64> {
    let d = if let Ok(f) = delay.cast::<PyFloat>() {
        f.value()
    } else if delay.is_instance_of::<PyInt>() {
        // A huge negative int is just "no delay", as for asyncio (which only
        // compares it with 0); a huge positive one cannot become a deadline:
        // asyncio's `loop.time() + delay` raises OverflowError.
        match delay.extract::<f64>() {
            Ok(d) => d,
            Err(e) => {
                if delay.gt(0)? {
                    return Err(e);
                }
                f64::NEG_INFINITY
            }
        }
    } else {
        // Anything else is accepted when asyncio's `loop.time() + delay`
        // gives a float (a Fraction does, a Decimal or a str does not).
        let sum = if delay.is_instance_of::<PyString>() {
            None
        } else {
            PyFloat::new(delay.py(), 0.0)
                .add(delay)
                .and_then(|s| s.extract::<f64>())
                .ok()
        };
        match sum {
            Some(d) => d,
            None => {
                return Err(PyTypeError::new_err(format!(
                    "sleep() argument 'delay' must be a real number, not {}",
                    delay.get_type().name()?
                )))
            }
        }
    };
    if d.is_nan() {
        return Err(PyValueError::new_err(
            "sleep() argument 'delay' must not be NaN",
        ));
    }
    Ok(d)
}

/// sleep(delay, result=None)
/// --
///
/// Sleep for `delay` seconds on the running loop's clock, then return `result`.
///
/// Like `asyncio.sleep`; differences: the delay is checked when `sleep()` is
/// called (`TypeError` for a non-number, `ValueError` for NaN) instead of when
/// it is awaited (and a positive int too large for a float raises
/// `OverflowError` there). Dropped without being awaited it warns
/// `coroutine 'sleep' was never awaited`, as the coroutine does.
/// `delay <= 0` yields to the loop exactly once; `float('inf')` sleeps until
/// cancelled. All of a loop's sleeps share one Rust timer heap and one armed
/// `loop.call_at`; expired sleeps wake in deadline order, then FIFO.
///
/// Raises:
///     TypeError: `delay` is not a real number.
///     ValueError: `delay` is NaN.
///     OverflowError: `delay` is an int too large for a float.
///     RuntimeError: awaited with `delay > 0` outside a running event loop,
///     or awaited while it is suspended in another await (as a coroutine).
///
/// Cancel safety: cancel-safe. Cancelling the awaiting task at any point
/// drops the timer entry; the task gets `CancelledError` with the message
/// given to `cancel()`, and nothing else changes.
#[pyfunction]
#[pyo3(signature = (delay, result=None))]
pub fn sleep(
    py: Python<'_>,
    delay: &Bound<'_, PyAny>,
    result: Option<Py<PyAny>>,
) -> PyResult<Sleep> {
    Ok(Sleep {
        delay: parse_delay(delay)?,
        result: result.unwrap_or_else(|| py.None()),
        state: Mutex::new(SleepState::New),
    })
}

impl Drop for Sleep {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if matches!(st, SleepState::New) {
            awaitable::warn_never_awaited("sleep");
        }
    }
}

/// Register the sleep types and function.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Sleep>()?;
    m.add_class::<LoopTimers>()?;
    m.add_function(wrap_pyfunction!(sleep, m)?)?;
    awaitable::patch_am_send::<Sleep>(m.py());
    patch_am_await(m.py());
    Ok(())
}

/// `await sleep`: the object itself, by the `am_await` slot (no call through
/// PyO3's method trampoline on this hot path), after the check a coroutine
/// makes: a sleep suspended elsewhere raises `RuntimeError`.
#[cfg(not(Py_LIMITED_API))]
unsafe extern "C" fn sleep_am_await(obj: *mut pyo3::ffi::PyObject) -> *mut pyo3::ffi::PyObject {
    let r = std::panic::catch_unwind(|| {
        Python::attach(|py| {
            let me = pyo3::Borrowed::from_ptr(py, obj).cast_unchecked::<Sleep>();
            match me.get().check_not_awaited() {
                Ok(()) => {
                    pyo3::ffi::Py_INCREF(obj);
                    obj
                }
                Err(e) => {
                    e.restore(py);
                    std::ptr::null_mut()
                }
            }
        })
    });
    r.unwrap_or_else(|_| {
        pyo3::ffi::PyErr_SetString(
            pyo3::ffi::PyExc_SystemError,
            c"rustasync: could not attach to the interpreter".as_ptr(),
        );
        std::ptr::null_mut()
    })
}

fn patch_am_await(py: Python<'_>) {
    #[cfg(not(Py_LIMITED_API))]
    awaitable::patch_am_await::<Sleep>(py, sleep_am_await);
    #[cfg(Py_LIMITED_API)]
    let _ = py;
}

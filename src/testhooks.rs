//! Entry points that panic on purpose, for the test suite (Cargo feature
//! `test-hooks`; never in a release build).
//!
//! Each hook panics in one of the places where Rust code runs on behalf of
//! Python: a `#[pyfunction]`/`#[pymethods]` call, a callable run by the
//! event loop (`loop.call_soon(hook)`), one step of an awaitable (through
//! `__next__`, and on CPython 3.11 through the `am_send` slot), and
//! `__traverse__` during a garbage collection. The tests check that every one
//! of them surfaces as `rustasync.RustPanic` (or, for `__traverse__`, is
//! contained) and that the process and the other tasks go on.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use crate::awaitable::{self, next_result, Step, Stepper};

/// Panic at once with `msg` (a panic inside a `#[pyfunction]` call).
#[pyfunction]
#[pyo3(name = "_panic_now", signature = (msg = "test hook panic"))]
fn panic_now(msg: &str) -> PyResult<()> {
    panic!("{msg}")
}

/// An object whose method panics and whose `__call__` panics (the latter
/// is what the event loop runs when the object is given to `call_soon`).
#[pyclass(frozen, module = "rustasync._rustasync", name = "_PanicOnCall")]
struct PanicOnCall {
    calls: AtomicUsize,
}

#[pymethods]
impl PanicOnCall {
    #[new]
    fn new() -> Self {
        PanicOnCall {
            calls: AtomicUsize::new(0),
        }
    }

    /// Panic inside a `#[pymethods]` call.
    fn method(&self) -> PyResult<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        panic!("panic inside a method")
    }

    /// Panic when called (by the event loop, as a callback).
    #[pyo3(signature = (*_args))]
    fn __call__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        panic!("panic inside a loop callback")
    }

    /// How many times a panicking entry point was entered.
    #[getter]
    fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

/// An awaitable that yields to the loop `steps` times, then panics in its
/// next step (`__next__`, or the `am_send` slot on 3.11).
#[pyclass(frozen, module = "rustasync._rustasync", name = "_PanicAwaitable")]
struct PanicAwaitable {
    left: AtomicUsize,
}

impl Stepper for PanicAwaitable {
    fn step(slf: &Bound<'_, Self>) -> PyResult<Step> {
        let left = slf.get().left.load(Ordering::Relaxed);
        if left == 0 {
            panic!("panic inside an awaitable step");
        }
        slf.get().left.store(left - 1, Ordering::Relaxed);
        Ok(Step::Yield(slf.py().None()))
    }
}

#[pymethods]
impl PanicAwaitable {
    #[new]
    #[pyo3(signature = (steps = 0))]
    fn new(steps: usize) -> Self {
        PanicAwaitable {
            left: AtomicUsize::new(steps),
        }
    }

    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        next_result(slf.py(), Self::step(slf)?)
    }
}

/// An object holding a Python reference whose `__traverse__` panics while
/// `armed` is set. PyO3 catches the panic (the traversal ends early); the
/// test checks that a collection survives it.
#[pyclass(frozen, module = "rustasync._rustasync", name = "_PanicOnTraverse")]
struct PanicOnTraverse {
    held: Py<PyAny>,
    armed: AtomicBool,
}

#[pymethods]
impl PanicOnTraverse {
    #[new]
    fn new(held: Py<PyAny>) -> Self {
        PanicOnTraverse {
            held,
            armed: AtomicBool::new(false),
        }
    }

    /// Make the next traversals panic (or stop them panicking).
    fn arm(&self, on: bool) {
        self.armed.store(on, Ordering::Relaxed);
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if self.armed.load(Ordering::Relaxed) {
            panic!("panic inside __traverse__");
        }
        visit.call(&self.held)
    }
}

/// Register the hooks on the module (also sets `_test_hooks = True`).
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("_test_hooks", true)?;
    m.add_function(wrap_pyfunction!(panic_now, m)?)?;
    m.add_class::<PanicOnCall>()?;
    m.add_class::<PanicAwaitable>()?;
    m.add_class::<PanicOnTraverse>()?;
    awaitable::patch_am_send::<PanicAwaitable>(m.py());
    awaitable::patch_am_await_self::<PanicAwaitable>(m.py());
    Ok(())
}

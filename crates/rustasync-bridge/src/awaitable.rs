//! The on-loop awaitable core shared by every primitive.
//!
//! asyncio's `Task` drives whatever an `await` hands it through a small
//! protocol (see `__next__`/`send`/`throw` on a coroutine, and the future-like
//! protocol on what it yields). This module holds the pieces every rustasync
//! awaitable needs to speak it cheaply:
//!
//! * [`Step`] and [`Stepper`]: one Rust function per awaitable decides whether
//!   an `await` is finished (`Return`) or must suspend (`Yield`). The same
//!   function backs `__next__` and, on CPython 3.11, the `am_send` slot, so
//!   both paths always mean the same thing.
//! * [`complete`]: finishes a `__next__` with `StopIteration(value)` the cheap
//!   way (`PyErr_SetObject` + NULL, never a normalised exception instance).
//! * [`patch_am_send`]: installs `am_send` on a PyO3 type so that on 3.11 a
//!   finished `await` returns its value without any `StopIteration` at all.
//!   3.12+ ignore the slot for non-generators and take `__next__`.
//! * [`Imports`]: the asyncio and contextvars objects we call, imported once.
//! * [`call_with_context`]: `loop.call_soon(cb, arg, context=ctx)` by vectorcall.

use pyo3::exceptions::{PyRuntimeError, PyStopIteration, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyTuple};
use pyo3::PyClass;

/// What one step of an awaitable produced.
pub enum Step {
    /// The `await` is finished with this value.
    Return(Py<PyAny>),
    /// The `await` suspends; the value is handed to the driving Task
    /// (`None` for a bare yield, or a future-like to wait on).
    Yield(Py<PyAny>),
}

/// An awaitable whose progress is decided by one Rust function.
pub trait Stepper: PyClass + Sync {
    /// Advance the awaitable once (a `send(None)`).
    fn step(slf: &Bound<'_, Self>) -> PyResult<Step>;
}

/// Finish `__next__`: `Return` raises `StopIteration(value)` the cheap way,
/// `Yield` returns the yielded value.
pub fn next_result(py: Python<'_>, step: Step) -> PyResult<Option<Py<PyAny>>> {
    match step {
        Step::Return(v) => complete(py, v),
        Step::Yield(v) => Ok(Some(v)),
    }
}

/// Signal `StopIteration(value)` from a `__next__` without building an
/// exception instance (on 3.11 PyO3's `new_err` path normalises one).
///
/// Returns `Ok(None)`, which PyO3 turns into a NULL return; CPython then reads
/// the pending `StopIteration` value. `None` needs no exception at all.
pub fn complete(py: Python<'_>, value: Py<PyAny>) -> PyResult<Option<Py<PyAny>>> {
    if value.is_none(py) {
        return Ok(None);
    }
    #[cfg(all(
        Py_3_12,
        not(Py_3_14),
        not(Py_LIMITED_API),
        not(Py_GIL_DISABLED),
        not(PyPy),
        not(GraalPy),
        not(py_sys_config = "Py_TRACE_REFS")
    ))]
    let value = match crate::stop::raise(py, value)? {
        None => return Ok(None),
        Some(value) => value,
    };
    complete_lazy(py, value)
}

/// `PyErr_SetObject(StopIteration, value)`. Before 3.12 the value stays
/// unnormalised and the `SEND` opcode reads it without an instance ever
/// being built. 3.12 and 3.13 (full API, GIL build) finish with a recycled
/// instance instead, except in the cases [`crate::stop`] lists.
fn complete_lazy(py: Python<'_>, value: Py<PyAny>) -> PyResult<Option<Py<PyAny>>> {
    let v = value.bind(py);
    // Tuples and exception instances would be read as constructor arguments
    // or as the exception itself: wrap them as CPython's generators do.
    let needs_wrap =
        v.is_instance_of::<PyTuple>() || unsafe { ffi::PyExceptionInstance_Check(v.as_ptr()) } != 0;
    let arg = if needs_wrap {
        PyTuple::new(py, [v])?.into_any().unbind()
    } else {
        value
    };
    unsafe { ffi::PyErr_SetObject(ffi::PyExc_StopIteration, arg.as_ptr()) };
    Ok(None)
}

/// Turn a `__next__` result into a `send()` result: a finished `__next__`
/// returns NULL (with or without a pending `StopIteration`), which a method
/// must turn into a raised `StopIteration`.
/// The exception is a plain `StopIteration(value)`, as a coroutine's
/// `send()` raises.
pub fn as_send(py: Python<'_>, next: PyResult<Option<Py<PyAny>>>) -> PyResult<Py<PyAny>> {
    match next? {
        Some(v) => Ok(v),
        None => Err(match PyErr::take(py) {
            None => PyStopIteration::new_err(()),
            Some(e) if e.get_type(py).is(py.get_type::<PyStopIteration>()) => e,
            Some(e) if e.is_instance_of::<PyStopIteration>(py) => {
                let value = e.value(py).getattr(pyo3::intern!(py, "value"))?.unbind();
                PyStopIteration::new_err((value,))
            }
            Some(e) => e,
        }),
    }
}

#[cfg(all(not(Py_LIMITED_API), not(Py_3_12)))]
unsafe extern "C" fn am_send<T: Stepper>(
    iter: *mut ffi::PyObject,
    _arg: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> ffi::PySendResult {
    // `attach` (not `assume_attached`): the thread is attached already, so
    // this only marks it for PyO3, which then frees objects dropped during
    // the step at once instead of deferring them to its pool.
    let attached =
        std::panic::catch_unwind(|| Python::attach(|py| am_send_attached::<T>(py, iter, result)));
    attached.unwrap_or_else(|_| {
        *result = std::ptr::null_mut();
        ffi::PyErr_SetString(
            ffi::PyExc_SystemError,
            c"rustasync: could not attach to the interpreter".as_ptr(),
        );
        ffi::PySendResult::PYGEN_ERROR
    })
}

#[cfg(all(not(Py_LIMITED_API), not(Py_3_12)))]
unsafe fn am_send_attached<T: Stepper>(
    py: Python<'_>,
    iter: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> ffi::PySendResult {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let obj = pyo3::Borrowed::from_ptr(py, iter).cast_unchecked::<T>();
        T::step(&obj)
    }));
    let outcome = match outcome {
        Ok(r) => r,
        Err(payload) => Err(crate::panic::panic_to_pyerr(payload)),
    };
    match outcome {
        Ok(Step::Return(v)) => {
            *result = v.into_ptr();
            ffi::PySendResult::PYGEN_RETURN
        }
        Ok(Step::Yield(v)) => {
            *result = v.into_ptr();
            ffi::PySendResult::PYGEN_NEXT
        }
        Err(e) => {
            e.restore(py);
            *result = std::ptr::null_mut();
            ffi::PySendResult::PYGEN_ERROR
        }
    }
}

/// Install the `am_send` slot on `T`'s type (CPython 3.10/3.11, full API
/// only). Elsewhere this does nothing and `__next__` serves every `await`.
pub fn patch_am_send<T: Stepper>(py: Python<'_>) {
    #[cfg(all(not(Py_LIMITED_API), not(Py_3_12)))]
    unsafe {
        let tp = py.get_type::<T>().as_type_ptr();
        let am = (*tp).tp_as_async;
        if !am.is_null() {
            (*am).am_send = Some(am_send::<T>);
            ffi::PyType_Modified(tp);
        }
    }
    #[cfg(not(all(not(Py_LIMITED_API), not(Py_3_12))))]
    let _ = py;
}

/// asyncio and contextvars objects, imported once per process.
pub struct Imports {
    pub get_running_loop: Py<PyAny>,
    pub cancelled_error: Py<PyAny>,
    pub invalid_state_error: Py<PyAny>,
    pub copy_context: Py<PyAny>,
    pub ensure_future: Py<PyAny>,
    pub iscoroutine: Py<PyAny>,
    pub isfuture: Py<PyAny>,
    pub context_kw: Py<PyTuple>,
}

static IMPORTS: PyOnceLock<Imports> = PyOnceLock::new();

impl Imports {
    /// The cached imports.
    pub fn get(py: Python<'_>) -> PyResult<&Imports> {
        IMPORTS.get_or_try_init(py, || {
            let asyncio = py.import("asyncio")?;
            let contextvars = py.import("contextvars")?;
            Ok(Imports {
                get_running_loop: asyncio.getattr("get_running_loop")?.unbind(),
                cancelled_error: asyncio.getattr("CancelledError")?.unbind(),
                invalid_state_error: asyncio.getattr("InvalidStateError")?.unbind(),
                copy_context: contextvars.getattr("copy_context")?.unbind(),
                ensure_future: asyncio.getattr("ensure_future")?.unbind(),
                iscoroutine: asyncio.getattr("iscoroutine")?.unbind(),
                isfuture: asyncio.getattr("isfuture")?.unbind(),
                context_kw: PyTuple::new(py, [PyString::new(py, "context")])?.unbind(),
            })
        })
    }
}

/// The running event loop, or asyncio's `RuntimeError('no running event loop')`.
pub fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    Imports::get(py)?.get_running_loop.bind(py).call0()
}

/// The running event loop, or `None` when there is none.
pub fn running_loop_opt(py: Python<'_>) -> Option<Bound<'_, PyAny>> {
    running_loop(py).ok()
}

/// `callable(arg, context=ctx)` by vectorcall (as `loop.call_soon(cb, arg,
/// context=ctx)` when `callable` is a bound `call_soon`).
pub fn call_with_context<'py>(
    py: Python<'py>,
    callable: &Bound<'py, PyAny>,
    args: &[&Bound<'py, PyAny>],
    context: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let kw = Imports::get(py)?.context_kw.bind(py);
    let mut argv: Vec<*mut ffi::PyObject> = Vec::with_capacity(args.len() + 2);
    // Slot 0 is scratch space that PY_VECTORCALL_ARGUMENTS_OFFSET lets the
    // callee use for a bound `self`.
    argv.push(std::ptr::null_mut());
    argv.extend(args.iter().map(|a| a.as_ptr()));
    argv.push(context.as_ptr());
    let nargs = args.len() | ffi::PY_VECTORCALL_ARGUMENTS_OFFSET;
    unsafe {
        let r = ffi::PyObject_Vectorcall(
            callable.as_ptr(),
            argv.as_mut_ptr().add(1),
            nargs,
            kw.as_ptr(),
        );
        Bound::from_owned_ptr_or_err(py, r)
    }
}

/// A `CancelledError` carrying `msg` the way asyncio builds one
/// (`CancelledError()` for no message).
pub fn cancelled_error(py: Python<'_>, msg: Option<&Py<PyAny>>) -> PyResult<PyErr> {
    let cls = Imports::get(py)?.cancelled_error.bind(py);
    let exc = match msg {
        Some(m) if !m.is_none(py) => cls.call1((m.bind(py),))?,
        _ => cls.call0()?,
    };
    Ok(PyErr::from_value(exc))
}

/// `InvalidStateError(msg)`.
pub fn invalid_state(py: Python<'_>, msg: &str) -> PyErr {
    match Imports::get(py).and_then(|i| i.invalid_state_error.bind(py).call1((msg,))) {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

/// A `RuntimeError` as asyncio raises it for an `await` driven wrongly.
pub fn await_misuse() -> PyErr {
    PyRuntimeError::new_err("await wasn't used with future")
}

#[cfg(not(Py_LIMITED_API))]
unsafe extern "C" fn am_await_self(obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
    ffi::Py_INCREF(obj);
    obj
}

/// Make `__await__` of `T` return the object itself straight from the
/// `am_await` slot, without a call through PyO3's method trampoline (every
/// `await` goes through this slot, on every Python version). `T` must also
/// define a Python-level `__await__` returning `self`, which this replaces
/// at the C level only. Full API only; elsewhere this does nothing.
pub fn patch_am_await_self<T: PyClass>(py: Python<'_>) {
    #[cfg(not(Py_LIMITED_API))]
    patch_am_await::<T>(py, am_await_self);
    #[cfg(Py_LIMITED_API)]
    let _ = py;
}

/// Install `slot` as `T`'s `am_await` (in place of PyO3's trampoline to its
/// Python-level `__await__`, which must mean the same). Full API only.
#[cfg(not(Py_LIMITED_API))]
pub fn patch_am_await<T: PyClass>(
    py: Python<'_>,
    slot: unsafe extern "C" fn(*mut ffi::PyObject) -> *mut ffi::PyObject,
) {
    unsafe {
        let tp = py.get_type::<T>().as_type_ptr();
        let am = (*tp).tp_as_async;
        if !am.is_null() && (*am).am_await.is_some() {
            (*am).am_await = Some(slot);
            ffi::PyType_Modified(tp);
        }
    }
}

/// The exception `throw(typ, val, tb)` raises, as a generator builds it.
pub fn thrown(
    py: Python<'_>,
    typ: &Bound<'_, PyAny>,
    val: Option<&Bound<'_, PyAny>>,
    tb: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyErr> {
    let val = val.filter(|v| !v.is_none());
    let exc = if unsafe { ffi::PyExceptionInstance_Check(typ.as_ptr()) } != 0 {
        if val.is_some() {
            return Err(PyTypeError::new_err(
                "instance exception may not have a separate value",
            ));
        }
        typ.clone()
    } else if unsafe { ffi::PyExceptionClass_Check(typ.as_ptr()) } != 0 {
        match val {
            Some(v) if v.is_instance(typ)? => v.clone(),
            Some(v) => match v.cast::<PyTuple>() {
                Ok(args) => typ.call1(args)?,
                Err(_) => typ.call1((v,))?,
            },
            None => typ.call0()?,
        }
    } else {
        return Err(PyTypeError::new_err(format!(
            "exceptions must be classes or instances deriving from BaseException, not {}",
            typ.get_type().name()?
        )));
    };
    if let Some(tb) = tb.filter(|t| !t.is_none()) {
        exc.setattr(pyo3::intern!(py, "__traceback__"), tb)?;
    }
    Ok(PyErr::from_value(exc))
}

/// Run `f` with the exception being raised (if any) set aside, and put it
/// back after, whatever `f` did; an error `f` leaves pending is dropped.
///
/// For Python calls made from `Drop` (a dealloc can run while an exception
/// propagates): the raw exception is moved, never normalised nor wrapped in
/// a `PyErr`, so even a `PanicException` in flight is left untouched.
pub fn with_exception_aside<R>(py: Python<'_>, f: impl FnOnce() -> R) -> R {
    let _ = py;
    #[cfg(Py_3_12)]
    unsafe {
        let saved = ffi::PyErr_GetRaisedException();
        let r = f();
        ffi::PyErr_Clear();
        if !saved.is_null() {
            ffi::PyErr_SetRaisedException(saved);
        }
        r
    }
    #[cfg(not(Py_3_12))]
    unsafe {
        let (mut t, mut v, mut tb) = (
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        ffi::PyErr_Fetch(&mut t, &mut v, &mut tb);
        let r = f();
        ffi::PyErr_Clear();
        if !t.is_null() {
            ffi::PyErr_Restore(t, v, tb);
        }
        r
    }
}

/// Warn as CPython does for a coroutine dropped before it ever ran:
/// `RuntimeWarning: coroutine '<qualname>' was never awaited`, through the
/// warning filters; if a filter turns it into an error, that error is
/// reported as unraisable, as CPython does. Called from `Drop` (a pyclass
/// dealloc, which always runs attached).
pub fn warn_never_awaited(qualname: &str) {
    Python::attach(|py| {
        with_exception_aside(py, || {
            let msg = format!("coroutine '{qualname}' was never awaited");
            let cat = py.get_type::<pyo3::exceptions::PyRuntimeWarning>();
            let r = std::ffi::CString::new(msg)
                .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
                .and_then(|m| PyErr::warn(py, &cat, &m, 1));
            if let Err(e) = r {
                e.write_unraisable(py, None);
            }
        })
    });
}

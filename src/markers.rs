//! Coroutine functions that are Rust callables.
//!
//! `sleep`, `Queue.put`, `Queue.get`, `Queue.join` (and the other methods
//! that return an awaitable) are built-in callables: `inspect` and asyncio
//! would answer `iscoroutinefunction(f)` with False, where they answer True
//! for asyncio's `async def`s. Libraries dispatch on that answer (call and
//! await, or call and use the result), so a wrong answer silently drops
//! work.
//!
//! [`CoroutineFunction`] wraps such a callable:
//!
//! * It looks like a function to `inspect` ("function-like": `__name__`,
//!   `__code__`, `__defaults__`, `__kwdefaults__`, `__annotations__`), and
//!   its `__code__` is that of an `async def` with the wrapped callable's
//!   signature, so `inspect.iscoroutinefunction`, `asyncio.iscoroutinefunction`
//!   and `inspect.signature` answer as for asyncio's functions (3.11 to
//!   3.13). It also carries 3.12's `markcoroutinefunction` marker and
//!   asyncio's `_is_coroutine`.
//! * It binds like a function: `q.put` is a bound method (`types.MethodType`)
//!   whose `__func__` is the wrapper, as `asyncio.Queue().put` is.
//! * Calls go straight through: the type uses vectorcall and is a method
//!   descriptor (`Py_TPFLAGS_METHOD_DESCRIPTOR`), so `q.put(x)` and
//!   `sleep(0)` pass their arguments on unchanged, with no bound method and
//!   no tuple built, to the wrapped callable's C entry point. What remains
//!   is the interpreter's general call path, which it does not specialise
//!   for this type as it does for built-in functions: a few nanoseconds.
//!
//! The wrapped callable still does all the work; what it returns (a
//! coroutine-like awaitable) is unchanged.

use std::ffi::CString;

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyType};
use pyo3::{PyTraverseError, PyVisit};

/// A Rust callable that `inspect` and asyncio see as a coroutine function.
///
/// Calling it calls the wrapped callable with the same arguments; reading
/// it from an instance gives a bound method, as for a Python function.
#[pyclass(
    frozen,
    dict,
    immutable_type,
    module = "rustasync._rustasync",
    name = "builtin_coroutine_function"
)]
pub struct CoroutineFunction {
    /// The instance's vectorcall entry point; its offset in the object is
    /// the type's `tp_vectorcall_offset`.
    vectorcall: ffi::vectorcallfunc,
    func: Py<PyAny>,
    direct: Option<Direct>,
}

/// The C function behind `func`, called without going through `func`'s
/// own vectorcall (which would check the recursion limit and, for a method,
/// the type of `self` a second time).
struct Direct {
    meth: Meth,
    /// A function's `__self__` (its module), passed as the C `self`.
    bound: *mut ffi::PyObject,
    /// A method's class: the first argument must be an instance of it.
    owner: *mut ffi::PyTypeObject,
}

/// The calling conventions PyO3 generates.
enum Meth {
    /// `METH_FASTCALL | METH_KEYWORDS`
    FastKw(ffi::PyCFunctionFastWithKeywords),
    /// `METH_NOARGS` (a method taking only `self`)
    NoArgs(ffi::PyCFunction),
}

// SAFETY: the pointers are borrowed from `func`, which keeps them alive and
// is only used by threads attached to the interpreter.
unsafe impl Send for Direct {}
unsafe impl Sync for Direct {}

impl Direct {
    /// For a built-in function or method descriptor in one of the
    /// conventions PyO3 generates; `None` sends calls through `func`.
    fn of(func: &Bound<'_, PyAny>) -> Option<Direct> {
        let p = func.as_ptr();
        // SAFETY: the casts follow the exact type checks before them.
        unsafe {
            let (def, bound, owner) = if ffi::PyCFunction_CheckExact(p) != 0 {
                let f = p as *mut ffi::PyCFunctionObject;
                ((*f).m_ml, (*f).m_self, std::ptr::null_mut())
            } else if ffi::Py_TYPE(p) == std::ptr::addr_of_mut!(ffi::PyMethodDescr_Type) {
                let d = p as *mut ffi::PyMethodDescrObject;
                ((*d).d_method, std::ptr::null_mut(), (*d).d_common.d_type)
            } else {
                return None;
            };
            let meth = match (*def).ml_flags {
                f if f == ffi::METH_FASTCALL | ffi::METH_KEYWORDS => {
                    Meth::FastKw((*def).ml_meth.PyCFunctionFastWithKeywords)
                }
                ffi::METH_NOARGS if !owner.is_null() => Meth::NoArgs((*def).ml_meth.PyCFunction),
                _ => return None,
            };
            Some(Direct { meth, bound, owner })
        }
    }
}

/// `CoroutineFunction(*args)`: call the wrapped callable with the same
/// arguments.
unsafe extern "C" fn call(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls this only through `tp_vectorcall_offset` of
    // `CoroutineFunction`, with `callable` one of its instances, a valid
    // argument vector and the thread attached.
    unsafe {
        let py = Python::assume_attached();
        let me = Borrowed::from_ptr(py, callable).cast_unchecked::<CoroutineFunction>();
        let me = me.get();
        if let Some(d) = &me.direct {
            let nargs = ffi::PyVectorcall_NARGS(nargsf);
            match d.meth {
                Meth::FastKw(meth) if d.owner.is_null() => {
                    return meth(d.bound, args, nargs, kwnames);
                }
                Meth::FastKw(meth)
                    if nargs >= 1 && ffi::PyObject_TypeCheck(*args, d.owner) != 0 =>
                {
                    return meth(*args, args.add(1), nargs - 1, kwnames);
                }
                Meth::NoArgs(meth)
                    if nargs == 1
                        && kwnames.is_null()
                        && ffi::PyObject_TypeCheck(*args, d.owner) != 0 =>
                {
                    return meth(*args, std::ptr::null_mut());
                }
                _ => {}
            }
        }
        // Anything else (a missing or wrong `self`) gets `func`'s own error.
        ffi::PyObject_Vectorcall(me.func.as_ptr(), args, nargsf, kwnames)
    }
}

extern "C" {
    fn PyMethod_New(func: *mut ffi::PyObject, obj: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

#[pymethods]
impl CoroutineFunction {
    /// Call the wrapped callable. (Calls normally take the vectorcall path;
    /// this serves `type(f).__call__(f, ...)`.)
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, pyo3::types::PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.func.bind(py).call(args, kwargs)
    }

    /// A bound method when read from an instance, itself otherwise.
    fn __get__<'py>(
        slf: &Bound<'py, Self>,
        obj: Option<&Bound<'py, PyAny>>,
        _owner: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match obj {
            None => Ok(slf.clone().into_any()),
            Some(obj) if obj.is_none() => Ok(slf.clone().into_any()),
            // SAFETY: both pointers are live objects; a new reference or
            // NULL with an exception comes back.
            Some(obj) => unsafe {
                Bound::from_owned_ptr_or_err(slf.py(), PyMethod_New(slf.as_ptr(), obj.as_ptr()))
            },
        }
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let name = slf.getattr(pyo3::intern!(slf.py(), "__qualname__"))?;
        Ok(format!("<built-in coroutine function {name}>"))
    }

    /// Pickled and copied by reference to its qualified name, like a
    /// function.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.getattr(pyo3::intern!(slf.py(), "__qualname__"))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.func)
    }
}

/// Make the type callable through vectorcall and a method descriptor.
/// PyO3 offers neither, so the slots are set on the type once, before the
/// first instance is handed out (`tp_call` then reads the vectorcall slot;
/// `__call__` in the type's dict keeps PyO3's entry point).
fn prepare_type(py: Python<'_>, sample: &Bound<'_, CoroutineFunction>) -> PyResult<()> {
    static READY: PyOnceLock<()> = PyOnceLock::new();
    READY.get_or_try_init(py, || {
        let offset = (&sample.get().vectorcall as *const ffi::vectorcallfunc as usize)
            .checked_sub(sample.as_ptr() as usize)
            .and_then(|o| ffi::Py_ssize_t::try_from(o).ok())
            .ok_or_else(|| PyRuntimeError::new_err("vectorcall slot outside the object"))?;
        let tp = py.get_type::<CoroutineFunction>().as_type_ptr();
        // SAFETY: the type is a heap type created by PyO3 and not yet
        // called; the offset points at the `vectorcall` field, which every
        // instance sets, and `PyVectorcall_Call` serves `tp_call` from it.
        unsafe {
            (*tp).tp_vectorcall_offset = offset;
            (*tp).tp_call = Some(ffi::PyVectorcall_Call);
            let flags = ffi::Py_TPFLAGS_HAVE_VECTORCALL | ffi::Py_TPFLAGS_METHOD_DESCRIPTOR;
            // A free-threaded build makes `tp_flags` an atomic.
            #[cfg(not(Py_GIL_DISABLED))]
            {
                (*tp).tp_flags |= flags;
            }
            #[cfg(Py_GIL_DISABLED)]
            (*tp)
                .tp_flags
                .fetch_or(flags, std::sync::atomic::Ordering::Relaxed);
            ffi::PyType_Modified(tp);
        }
        Ok::<(), PyErr>(())
    })?;
    Ok(())
}

/// Wrap `func` (a built-in function or method descriptor) as a coroutine
/// function named `qualname` in `module`, with the signature of its
/// `__text_signature__`.
pub fn coroutine_function<'py>(
    func: &Bound<'py, PyAny>,
    module: &Bound<'py, PyAny>,
    qualname: &str,
) -> PyResult<Bound<'py, CoroutineFunction>> {
    let py = func.py();
    let wrapper = Bound::new(
        py,
        CoroutineFunction {
            vectorcall: call,
            func: func.clone().unbind(),
            direct: Direct::of(func),
        },
    )?;
    prepare_type(py, &wrapper)?;
    let name: String = func.getattr("__name__")?.extract()?;
    let template = async_template(py, &name, func)?;
    let attrs = wrapper
        .as_any()
        .getattr("__dict__")?
        .cast_into::<PyDict>()?;
    attrs.set_item("__name__", &name)?;
    attrs.set_item("__qualname__", qualname)?;
    attrs.set_item("__module__", module)?;
    attrs.set_item("__doc__", doc(func, &name)?)?;
    for key in [
        "__code__",
        "__defaults__",
        "__kwdefaults__",
        "__annotations__",
    ] {
        attrs.set_item(key, template.getattr(key)?)?;
    }
    // 3.12+: the marker `inspect.markcoroutinefunction` sets.
    if let Ok(mark) = py.import("inspect")?.getattr("markcoroutinefunction") {
        mark.call1((&wrapper,))?;
    }
    // What `asyncio.iscoroutinefunction` also accepts (3.11 to 3.13).
    if let Ok(mark) = py.import("asyncio.coroutines")?.getattr("_is_coroutine") {
        attrs.set_item("_is_coroutine", mark)?;
    }
    Ok(wrapper)
}

/// `func.__doc__`, without a leading `name(...)\n--\n\n` signature block
/// (the form `__text_signature__` is read from, when CPython left it in).
fn doc<'py>(func: &Bound<'py, PyAny>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    let doc = func.getattr("__doc__")?;
    if let Ok(text) = doc.extract::<String>() {
        if text.starts_with(&format!("{name}(")) {
            if let Some(end) = text.find(")\n--\n\n") {
                return Ok(PyString::new(func.py(), &text[end + 6..]).into_any());
            }
        }
    }
    Ok(doc)
}

/// `async def NAME(SIGNATURE): pass`, where SIGNATURE is `func`'s text
/// signature (`$self` read as `self`).
fn async_template<'py>(
    py: Python<'py>,
    name: &str,
    func: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let sig: String = func.getattr("__text_signature__")?.extract()?;
    let src = format!("async def {name}{}: pass\n", sig.replace("$self", "self"));
    let src = CString::new(src).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    let ns = PyDict::new(py);
    py.run(&src, Some(&ns), None)?;
    Ok(ns.get_item(name)?.expect("defined by the template"))
}

/// Replace the methods `names` of `ty` with coroutine functions.
pub fn mark_methods(ty: &Bound<'_, PyType>, names: &[&str]) -> PyResult<()> {
    let py = ty.py();
    let tyname = ty.qualname()?;
    let module = ty.getattr("__module__")?;
    for &name in names {
        let descr = ty.getattr(name)?;
        let wrapper = coroutine_function(&descr, &module, &format!("{tyname}.{name}"))?;
        let key = PyString::new(py, name);
        // SAFETY: a heap type's `tp_dict` is a dict; writing an attribute
        // the type already has and then invalidating the type's caches is
        // what `type.__setattr__` does (PyO3's types refuse it from Python).
        unsafe {
            let tp = ty.as_type_ptr();
            if ffi::PyDict_SetItem((*tp).tp_dict, key.as_ptr(), wrapper.as_ptr()) < 0 {
                return Err(PyErr::fetch(py));
            }
            ffi::PyType_Modified(tp);
        }
    }
    Ok(())
}

/// Register the class, and serve the module function `sleep` as a
/// coroutine function (the queue methods are marked by the queue module).
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<CoroutineFunction>()?;
    let sleep = m.getattr("sleep")?;
    let wrapper = coroutine_function(&sleep, &sleep.getattr("__module__")?, "sleep")?;
    m.add("sleep", wrapper)?;
    Ok(())
}

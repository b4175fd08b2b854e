//! `StopIteration(value)` for a finished `__next__`, recycled (CPython 3.12
//! and 3.13, full API, GIL build).
//!
//! From 3.12 the `SEND` opcode of an `await` calls `tp_iternext` on anything
//! that is not a generator, and a value can only come back inside a
//! `StopIteration` instance: `SEND` takes the instance, reads `.value` and
//! drops it. Building one the way `PyErr_SetObject` does (`type.__call__`,
//! `BaseException.__new__`, `StopIteration.__init__`) and freeing it cost
//! more than the rest of a ready `await q.get()`.
//!
//! So finishing with a value raises an instance of a `StopIteration`
//! subclass whose `tp_dealloc` does not free it: when its last reference
//! goes (in `SEND`, right after `.value` was taken), it drops `.value` and
//! the `args` item at once, exactly when a plain `StopIteration` would have
//! dropped them, and keeps the emptied shell (reference count zero, not
//! tracked by the collector, no type reference) as the one spare for the
//! next completion. Its `args` 1-tuple is kept with it only if nothing else
//! held the tuple, and then emptied and untracked: the collector lists only
//! tracked objects, so neither the shell nor the tuple can be found. The
//! shell is no object until [`raise`] revives it with `PyObject_Init`,
//! which registers it as a new object (reference tracers) just as an
//! allocation would. An instance that anyone changed (a `__traceback__`,
//! `__context__`, `__cause__`, notes or attributes set) is freed normally.
//! `Py_TRACE_REFS` builds (whose `sys.getobjects()` lists every live
//! object, the kept tuple included) are left out.
//!
//! A plain `StopIteration` is raised instead when
//! * a trace or profile function (`sys.settrace`, `sys.setprofile`, so
//!   pdb and bdb) is set on the thread: they see the exception, match it
//!   with `is StopIteration` and may keep it in frame locals;
//! * an exception is being handled, which the new one gets as
//!   `__context__`.
//!
//! What still sees the subclass: `sys.monitoring` tools (their
//! `STOP_ITERATION` and `RAISE` events receive the instance) and `next(op)`
//! called by hand. `isinstance(e, StopIteration)`, `e.value`, `e.args`,
//! `repr(e)`, `str(type(e))`, a printed traceback and pickling are as for
//! `StopIteration(value)`; `type(e) is StopIteration` is false. `send()`
//! raises a plain `StopIteration` (see [`crate::awaitable::as_send`]).
//!
//! 3.14 is left out: the thread state layout read below is checked against
//! the 3.12 and 3.13 headers only (and 3.14 tuples cache their hash).

use std::ffi::{c_int, c_uint, c_void};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// The emptied shell waiting to be reused (see the module documentation).
/// Only read and written with the GIL held.
static SPARE: AtomicPtr<ffi::PyObject> = AtomicPtr::new(null_mut());

/// The type, or `None` when the thread state layout did not check out.
static TYPE: PyOnceLock<Option<Py<PyType>>> = PyOnceLock::new();

/// The type once made (`TYPE` keeps it alive), read without a lock.
static TYPE_PTR: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(null_mut());

/// `_PyErr_StackItem`: one level of the exceptions being handled.
#[repr(C)]
struct StackItem {
    exc_value: *mut ffi::PyObject,
    previous_item: *mut StackItem,
}

/// The head of `struct _ts` (`Include/cpython/pystate.h`) up to
/// `exc_info`, which PyO3 leaves opaque.
#[cfg(not(Py_3_13))]
#[repr(C)]
struct ThreadStateHead {
    prev: *mut c_void,
    next: *mut c_void,
    interp: *mut ffi::PyInterpreterState,
    status: c_uint,
    py_recursion_remaining: c_int,
    py_recursion_limit: c_int,
    c_recursion_remaining: c_int,
    recursion_headroom: c_int,
    tracing: c_int,
    what_event: c_int,
    cframe: *mut c_void,
    c_profilefunc: *mut c_void,
    c_tracefunc: *mut c_void,
    c_profileobj: *mut ffi::PyObject,
    c_traceobj: *mut ffi::PyObject,
    current_exception: *mut ffi::PyObject,
    exc_info: *mut StackItem,
}

#[cfg(Py_3_13)]
#[repr(C)]
struct ThreadStateHead {
    prev: *mut c_void,
    next: *mut c_void,
    interp: *mut ffi::PyInterpreterState,
    eval_breaker: usize,
    status: c_uint,
    whence: c_int,
    state: c_int,
    py_recursion_remaining: c_int,
    py_recursion_limit: c_int,
    c_recursion_remaining: c_int,
    recursion_headroom: c_int,
    tracing: c_int,
    what_event: c_int,
    current_frame: *mut c_void,
    c_profilefunc: *mut c_void,
    c_tracefunc: *mut c_void,
    c_profileobj: *mut ffi::PyObject,
    c_traceobj: *mut ffi::PyObject,
    current_exception: *mut ffi::PyObject,
    exc_info: *mut StackItem,
}

/// A plain `StopIteration` must be raised on this thread: a trace or
/// profile function is set, or an exception is being handled (what
/// `PyErr_GetHandledException` finds, without taking a reference).
unsafe fn observed() -> bool {
    let ts = ffi::compat::PyThreadState_GetUnchecked() as *const ThreadStateHead;
    if !(*ts).c_tracefunc.is_null() || !(*ts).c_profilefunc.is_null() {
        return true;
    }
    let mut item = (*ts).exc_info;
    loop {
        let exc = (*item).exc_value;
        if !exc.is_null() && exc != ffi::Py_None() {
            return true;
        }
        if (*item).previous_item.is_null() {
            return false;
        }
        item = (*item).previous_item;
    }
}

/// The layout above matches this interpreter (a module built for one minor
/// version only loads there, so this only guards against a misreading):
/// the fields hold what the API reports.
unsafe fn layout_checks_out(py: Python<'_>) -> PyResult<bool> {
    let limit: c_int = py
        .import("sys")?
        .call_method0("getrecursionlimit")?
        .extract()?;
    let tstate = ffi::PyThreadState_Get();
    let ts = tstate as *const ThreadStateHead;
    if (*ts).interp != ffi::PyThreadState_GetInterpreter(tstate)
        || (*ts).py_recursion_limit != limit
        || (*ts).current_exception.is_null() != ffi::PyErr_Occurred().is_null()
        || (*ts).exc_info.is_null()
    {
        return Ok(false);
    }
    let mut item = (*ts).exc_info;
    while ((*item).exc_value.is_null() || (*item).exc_value == ffi::Py_None())
        && !(*item).previous_item.is_null()
    {
        item = (*item).previous_item;
    }
    let top = (*item).exc_value;
    let top = if top == ffi::Py_None() {
        null_mut()
    } else {
        top
    };
    let handled = ffi::PyErr_GetHandledException();
    ffi::Py_XDECREF(handled);
    Ok(top == handled)
}

fn stop_type(py: Python<'_>) -> PyResult<Option<*mut ffi::PyTypeObject>> {
    let tp = TYPE.get_or_try_init(py, || unsafe {
        if !layout_checks_out(py)? {
            return Ok(None);
        }
        let methods = Box::leak(Box::new([
            ffi::PyMethodDef {
                ml_name: c"__reduce__".as_ptr(),
                ml_meth: ffi::PyMethodDefPointer {
                    PyCFunction: reduce,
                },
                ml_flags: ffi::METH_NOARGS,
                ml_doc: null_mut(),
            },
            ffi::PyMethodDef::zeroed(),
        ]));
        // The base's traverse and clear (they do not visit the type, which
        // `TYPE` keeps alive for good anyway).
        let base = ffi::PyExc_StopIteration as *mut ffi::PyTypeObject;
        let mut slots = [
            ffi::PyType_Slot {
                slot: ffi::Py_tp_traverse,
                pfunc: (*base).tp_traverse.map_or(null_mut(), |f| f as *mut c_void),
            },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_clear,
                pfunc: (*base).tp_clear.map_or(null_mut(), |f| f as *mut c_void),
            },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_dealloc,
                pfunc: dealloc as *mut c_void,
            },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_methods,
                pfunc: methods.as_mut_ptr().cast(),
            },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_doc,
                pfunc: c"StopIteration(value) ending a rustasync awaitable (recycled).".as_ptr()
                    as *mut c_void,
            },
            ffi::PyType_Slot {
                slot: 0,
                pfunc: null_mut(),
            },
        ];
        // Named as it prints: a traceback shows `StopIteration: value`.
        // The type is not importable under that name (pickling the type
        // itself fails); its instances pickle as `StopIteration`.
        let mut spec = ffi::PyType_Spec {
            name: c"builtins.StopIteration".as_ptr(),
            basicsize: 0,
            itemsize: 0,
            flags: (ffi::Py_TPFLAGS_DEFAULT
                | ffi::Py_TPFLAGS_HAVE_GC
                | ffi::Py_TPFLAGS_IMMUTABLETYPE) as _,
            slots: slots.as_mut_ptr(),
        };
        let t = ffi::PyType_FromSpecWithBases(&mut spec, ffi::PyExc_StopIteration);
        Bound::from_owned_ptr_or_err(py, t)
            .and_then(|t| Ok(t.cast_into::<PyType>()?))
            .map(|t| Some(t.unbind()))
    })?;
    let tp = tp.as_ref().map(|t| t.as_ptr() as *mut ffi::PyTypeObject);
    if let Some(t) = tp {
        TYPE_PTR.store(t, Ordering::Relaxed);
    }
    Ok(tp)
}

/// `__reduce__`: `(StopIteration, args[, dict])`, so that the exception
/// pickles and copies as a plain `StopIteration(value)`.
unsafe extern "C" fn reduce(obj: *mut ffi::PyObject, _: *mut ffi::PyObject) -> *mut ffi::PyObject {
    let si = obj as *mut ffi::PyStopIterationObject;
    let args = if (*si).args.is_null() {
        ffi::PyTuple_New(0)
    } else {
        ffi::Py_NewRef((*si).args)
    };
    if args.is_null() {
        return null_mut();
    }
    let dict = (*si).dict;
    let with_dict = !dict.is_null() && ffi::PyDict_Size(dict) > 0;
    let out = ffi::PyTuple_New(if with_dict { 3 } else { 2 });
    if out.is_null() {
        ffi::Py_DECREF(args);
        return null_mut();
    }
    ffi::PyTuple_SET_ITEM(out, 0, ffi::Py_NewRef(ffi::PyExc_StopIteration));
    ffi::PyTuple_SET_ITEM(out, 1, args);
    if with_dict {
        ffi::PyTuple_SET_ITEM(out, 2, ffi::Py_NewRef(dict));
    }
    out
}

/// Set `StopIteration(value)` as the raised exception, or hand `value`
/// back when a plain `StopIteration` must be raised instead (see the module
/// documentation).
pub(crate) fn raise(py: Python<'_>, value: Py<PyAny>) -> PyResult<Option<Py<PyAny>>> {
    let mut tp = TYPE_PTR.load(Ordering::Relaxed);
    if tp.is_null() {
        match stop_type(py)? {
            Some(t) => tp = t,
            None => return Ok(Some(value)),
        }
    }
    unsafe {
        if observed() {
            return Ok(Some(value));
        }
        let mut exc = SPARE.swap(null_mut(), Ordering::Relaxed);
        let mut args = null_mut();
        if exc.is_null() {
            let alloc = (*tp).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
            exc = alloc(tp, 0);
            if exc.is_null() {
                return Err(PyErr::fetch(py));
            }
        } else {
            // A new object again: one reference (ours, handed to the
            // raise), a reference to its type, tracers told.
            ffi::PyObject_Init(exc, tp);
            ffi::PyObject_GC_Track(exc.cast());
            // Its kept 1-tuple (if any), which only the shell referenced:
            // tracked again once it holds the value.
            let si = exc as *mut ffi::PyStopIterationObject;
            args = std::mem::replace(&mut (*si).args, null_mut());
        }
        let reused = !args.is_null();
        if !reused {
            args = ffi::PyTuple_New(1);
            if args.is_null() {
                ffi::Py_DECREF(exc);
                return Err(PyErr::fetch(py));
            }
        }
        let v = value.into_ptr();
        *item_slot(args) = ffi::Py_NewRef(v);
        if reused {
            ffi::PyObject_GC_Track(args.cast());
        }
        let si = exc as *mut ffi::PyStopIterationObject;
        (*si).args = args;
        (*si).value = v;
        ffi::PyErr_SetRaisedException(exc);
    }
    Ok(None)
}

/// `tp_dealloc`: drop the value and args now, keep the shell as the spare.
unsafe extern "C" fn dealloc(obj: *mut ffi::PyObject) {
    let si = obj as *mut ffi::PyStopIterationObject;
    let untouched = (*si).dict.is_null()
        && (*si).notes.is_null()
        && (*si).traceback.is_null()
        && (*si).context.is_null()
        && (*si).cause.is_null()
        // Read as the C `char` it is (pyo3-ffi declares a Rust `char`).
        && *(std::ptr::addr_of!((*si).suppress_context) as *const u8) == 0;
    let tp = ffi::Py_TYPE(obj);
    // The GIL is held (no free-threaded build here), so nothing can fill
    // the spare between this check and the store below.
    if untouched && SPARE.load(Ordering::Relaxed).is_null() {
        ffi::PyObject_GC_UnTrack(obj.cast());
        let value = std::mem::replace(&mut (*si).value, null_mut());
        let mut args = (*si).args;
        let mut item = null_mut();
        if !args.is_null()
            && ffi::PyTuple_CheckExact(args) != 0
            && ffi::PyTuple_GET_SIZE(args) == 1
            && ffi::Py_REFCNT(args) == 1
        {
            // Only this instance holds it: keep it, emptied and untracked,
            // so that no one can find it (`gc.get_objects()` lists tracked
            // objects only).
            ffi::PyObject_GC_UnTrack(args.cast());
            item = std::mem::replace(&mut *item_slot(args), null_mut());
            args = null_mut();
        } else {
            (*si).args = null_mut();
        }
        // Parked first: dropping these may run a finaliser that finishes
        // another await, which then finds the spare ready.
        SPARE.store(obj, Ordering::Relaxed);
        // The instance's reference to its heap type (`TYPE` keeps it).
        ffi::Py_DECREF(tp.cast());
        ffi::Py_XDECREF(args);
        ffi::Py_XDECREF(item);
        ffi::Py_XDECREF(value);
        return;
    }
    // Freed as a StopIteration is; a heap type's instance also holds a
    // reference to its type.
    let base = (*(ffi::PyExc_StopIteration as *mut ffi::PyTypeObject)).tp_dealloc;
    if let Some(base) = base {
        base(obj);
    }
    ffi::Py_DECREF(tp.cast());
}

/// The address of a 1-tuple's item.
unsafe fn item_slot(args: *mut ffi::PyObject) -> *mut *mut ffi::PyObject {
    (*(args as *mut ffi::PyTupleObject)).ob_item.as_mut_ptr()
}

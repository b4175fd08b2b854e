//! `StopIteration(value)` for a finished `__next__`, recycled (CPython 3.12+).
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
//! its `args` item at once, exactly when a plain `StopIteration` would have
//! dropped them, and keeps the emptied shell as the one spare for the next
//! completion. The shell is only reused after its reference count reached
//! zero, so nothing can hold or see it; it never keeps an item alive. An
//! instance that anyone changed (a `__traceback__`, `__context__`,
//! `__cause__`, notes or attributes set) is freed normally.
//!
//! What it changes: `next(op)` called by hand raises this subclass
//! (`isinstance(e, StopIteration)`, `e.value`, `e.args` and `repr(e)` are as
//! for `StopIteration(value)`; `type(e) is StopIteration` is not). `send()`
//! raises a plain `StopIteration` (see [`crate::awaitable::as_send`]).

use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// The emptied instance waiting to be reused (reference count zero, not
/// tracked by the collector, `value` NULL, `args` a 1-tuple with a NULL
/// item or NULL).
static SPARE: AtomicPtr<ffi::PyObject> = AtomicPtr::new(null_mut());

static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn stop_type(py: Python<'_>) -> PyResult<*mut ffi::PyTypeObject> {
    let tp = TYPE.get_or_try_init(py, || unsafe {
        // The base's traverse and clear (they do not visit the type, which
        // `TYPE` keeps alive for good anyway).
        let base = ffi::PyExc_StopIteration as *mut ffi::PyTypeObject;
        let mut slots = [
            ffi::PyType_Slot {
                slot: ffi::Py_tp_traverse,
                pfunc: (*base)
                    .tp_traverse
                    .map_or(null_mut(), |f| f as *mut std::ffi::c_void),
            },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_clear,
                pfunc: (*base)
                    .tp_clear
                    .map_or(null_mut(), |f| f as *mut std::ffi::c_void),
            },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_dealloc,
                pfunc: dealloc as *mut std::ffi::c_void,
            },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_doc,
                pfunc: c"StopIteration(value) ending a rustasync awaitable (recycled).".as_ptr()
                    as *mut std::ffi::c_void,
            },
            ffi::PyType_Slot {
                slot: 0,
                pfunc: null_mut(),
            },
        ];
        let mut spec = ffi::PyType_Spec {
            name: c"rustasync._rustasync.StopIteration".as_ptr(),
            basicsize: 0,
            itemsize: 0,
            flags: (ffi::Py_TPFLAGS_DEFAULT | ffi::Py_TPFLAGS_HAVE_GC) as _,
            slots: slots.as_mut_ptr(),
        };
        let t = ffi::PyType_FromSpecWithBases(&mut spec, ffi::PyExc_StopIteration);
        Bound::from_owned_ptr_or_err(py, t)
            .and_then(|t| Ok(t.cast_into::<PyType>()?))
            .map(Bound::unbind)
    })?;
    Ok(tp.as_ptr() as *mut ffi::PyTypeObject)
}

/// Set `StopIteration(value)` as the raised exception.
pub(crate) fn raise(py: Python<'_>, value: Py<PyAny>) -> PyResult<()> {
    let tp = stop_type(py)?;
    unsafe {
        let mut exc = SPARE.swap(null_mut(), Ordering::Acquire);
        let args;
        if exc.is_null() {
            let alloc = (*tp).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
            exc = alloc(tp, 0);
            if exc.is_null() {
                return Err(PyErr::fetch(py));
            }
            args = null_mut();
        } else {
            // Revive the spare: one reference (ours, handed to the raise).
            ffi::Py_INCREF(exc);
            ffi::PyObject_GC_Track(exc.cast());
            let si = exc as *mut ffi::PyStopIterationObject;
            args = std::mem::replace(&mut (*si).args, null_mut());
        }
        let si = exc as *mut ffi::PyStopIterationObject;
        let args = if !args.is_null() {
            if ffi::PyObject_GC_IsTracked(args) == 0 {
                ffi::PyObject_GC_Track(args.cast());
            }
            args
        } else {
            let t = ffi::PyTuple_New(1);
            if t.is_null() {
                ffi::Py_DECREF(exc);
                return Err(PyErr::fetch(py));
            }
            t
        };
        let v = value.into_ptr();
        ffi::Py_INCREF(v);
        ffi::PyTuple_SET_ITEM(args, 0, v);
        (*si).args = args;
        (*si).value = v;
        ffi::PyErr_SetRaisedException(exc);
    }
    Ok(())
}

/// `tp_dealloc`: drop the value now, keep the shell as the spare.
unsafe extern "C" fn dealloc(obj: *mut ffi::PyObject) {
    let si = obj as *mut ffi::PyStopIterationObject;
    let untouched = (*si).dict.is_null()
        && (*si).notes.is_null()
        && (*si).traceback.is_null()
        && (*si).context.is_null()
        && (*si).cause.is_null()
        // Read as the C `char` it is (pyo3-ffi declares a Rust `char`).
        && *(std::ptr::addr_of!((*si).suppress_context) as *const u8) == 0;
    let args = (*si).args;
    let reusable_args = !args.is_null()
        && ffi::PyTuple_CheckExact(args) != 0
        && ffi::PyTuple_GET_SIZE(args) == 1
        && ffi::Py_REFCNT(args) == 1;
    if untouched && reusable_args && SPARE.load(Ordering::Relaxed).is_null() {
        ffi::PyObject_GC_UnTrack(obj.cast());
        let value = std::mem::replace(&mut (*si).value, null_mut());
        let slot = item_slot(args);
        let item = std::mem::replace(&mut *slot, null_mut());
        if SPARE
            .compare_exchange(null_mut(), obj, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            // Parked first: these may run a finaliser that finishes
            // another await, which then finds the spare ready.
            ffi::Py_XDECREF(item);
            ffi::Py_XDECREF(value);
            return;
        }
        *slot = item;
        (*si).value = value;
    }
    // Freed as a StopIteration is; a heap type's instance also holds a
    // reference to its type.
    let tp = ffi::Py_TYPE(obj);
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

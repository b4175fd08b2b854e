//! `QueueOp`'s C slots: a free list of operation objects, and (CPython
//! 3.11) an `am_send` that finishes an `await` without re-entering the
//! interpreter's thread state.
//!
//! Every `await q.get()` / `await q.put(x)` makes one `QueueOp` and frees
//! it a moment later. Allocating and freeing through the generic path
//! (`PyType_GenericAlloc`, PyO3's `tp_dealloc` trampoline, the Rust drop,
//! `PyObject_GC_Del`) was about a sixth of a ready operation. So:
//!
//! * `tp_dealloc`: an operation that is finished and holds nothing but its
//!   queue (`get`, `__anext__`, `get_many`, `join`, and a `put` whose item
//!   was stored) lets go of the queue and is parked, emptied, on a short
//!   free list instead of being freed. Its memory is then no object: it is
//!   not tracked by the collector and holds no reference, to its type or
//!   anything else. Any other operation (one never awaited, which warns;
//!   one still waiting, which leaves its waiter list; one holding items)
//!   goes through PyO3's deallocation as before.
//! * `tp_alloc`: a new operation takes a parked one if there is one and
//!   makes it an object again as an allocation would (`PyObject_Init`:
//!   one reference, a reference to the type, reference tracers told;
//!   zeroed, then tracked by the collector), before PyO3 writes its fields.
//!
//! Only a deallocated object is parked, so an operation anyone still holds
//! is never handed out again. GIL builds with the full API only (the list
//! is guarded by the GIL); elsewhere nothing is patched.

#[cfg(all(not(Py_LIMITED_API), not(Py_GIL_DISABLED), not(PyPy), not(GraalPy)))]
mod imp {
    use super::super::op::QueueOp;
    use pyo3::ffi;
    use pyo3::prelude::*;
    use std::cell::UnsafeCell;
    use std::ptr::null_mut;
    use std::sync::atomic::{AtomicPtr, Ordering};

    /// Parked objects at most: enough for the operations in flight on a
    /// busy loop iteration, small enough not to matter as memory.
    const CAPACITY: usize = 64;

    struct FreeList {
        len: usize,
        slots: [*mut ffi::PyObject; CAPACITY],
    }

    /// Only touched from the slots below, which CPython calls with the GIL
    /// held (this module keeps the GIL on free-threaded builds too, where
    /// the list is not compiled).
    struct Shared(UnsafeCell<FreeList>);
    unsafe impl Sync for Shared {}

    static FREE: Shared = Shared(UnsafeCell::new(FreeList {
        len: 0,
        slots: [null_mut(); CAPACITY],
    }));

    /// `QueueOp`'s type and the `tp_dealloc` PyO3 gave it.
    static TYPE: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(null_mut());
    static PYO3_DEALLOC: AtomicPtr<std::ffi::c_void> = AtomicPtr::new(null_mut());

    unsafe extern "C" fn alloc(
        tp: *mut ffi::PyTypeObject,
        nitems: ffi::Py_ssize_t,
    ) -> *mut ffi::PyObject {
        let free = &mut *FREE.0.get();
        if nitems != 0 || tp != TYPE.load(Ordering::Relaxed) || free.len == 0 {
            return ffi::PyType_GenericAlloc(tp, nitems);
        }
        free.len -= 1;
        let obj = free.slots[free.len];
        // As `PyType_GenericAlloc` leaves it: zeroed past the header, one
        // reference, the type's reference taken, tracked.
        let header = std::mem::size_of::<ffi::PyObject>();
        std::ptr::write_bytes(
            obj.cast::<u8>().add(header),
            0,
            (*tp).tp_basicsize as usize - header,
        );
        ffi::PyObject_Init(obj, tp);
        ffi::PyObject_GC_Track(obj.cast());
        obj
    }

    unsafe extern "C" fn dealloc(obj: *mut ffi::PyObject) {
        let tp = ffi::Py_TYPE(obj);
        let free = &mut *FREE.0.get();
        // A type given a finalizer would see a reused object as already
        // finalized (the collector keeps that bit in the header), so such
        // objects are freed, never parked. The type is immutable, so this
        // only guards against C code patching it.
        if tp == TYPE.load(Ordering::Relaxed) && free.len < CAPACITY && (*tp).tp_finalize.is_none()
        {
            let py = Python::assume_attached();
            let op = pyo3::Borrowed::from_ptr(py, obj).cast_unchecked::<QueueOp>();
            if let Some(queue) = op.get().release_if_spent() {
                ffi::PyObject_GC_UnTrack(obj.cast());
                free.slots[free.len] = obj;
                free.len += 1;
                // What the instance held: its type and its queue (whose
                // own deallocation, if this was the last reference, may
                // run code; the list is consistent by then).
                ffi::Py_DECREF(tp.cast());
                ffi::Py_DECREF(queue);
                return;
            }
        }
        let pyo3_dealloc: Option<ffi::destructor> =
            std::mem::transmute(PYO3_DEALLOC.load(Ordering::Relaxed));
        if let Some(d) = pyo3_dealloc {
            d(obj);
        }
    }

    pub fn install(py: Python<'_>) {
        let tp = py.get_type::<QueueOp>().as_type_ptr();
        unsafe {
            let Some(pyo3_dealloc) = (*tp).tp_dealloc else {
                return;
            };
            // Parking is sound only for an object nothing can point into
            // once it is freed: no weak references (they would come back
            // pointing at the next operation), no instance dict, no
            // subclasses (another layout), no finalizer, a fixed size.
            let plain = (*tp).tp_weaklistoffset == 0
                && (*tp).tp_dictoffset == 0
                && (*tp).tp_flags & ffi::Py_TPFLAGS_BASETYPE == 0
                && (*tp).tp_finalize.is_none()
                && (*tp).tp_itemsize == 0;
            if !plain {
                return;
            }
            PYO3_DEALLOC.store(pyo3_dealloc as *mut std::ffi::c_void, Ordering::Relaxed);
            TYPE.store(tp, Ordering::Relaxed);
            (*tp).tp_alloc = Some(alloc);
            (*tp).tp_dealloc = Some(dealloc);
            ffi::PyType_Modified(tp);
        }
    }
}

/// CPython 3.11's `SEND` takes a finished `await`'s value from `am_send`
/// with no exception. The shared `am_send` enters through
/// `Python::attach`, which, called from the interpreter loop rather than
/// from inside a PyO3 entry point, takes `PyGILState_Ensure` and
/// `PyGILState_Release` on every step (about 140 instructions). This one
/// enters through PyO3's own slot trampoline, as `__next__` does: the
/// thread is marked attached for PyO3 (so that references dropped during
/// the step are released at once) and a panic becomes an exception.
///
/// The trampoline is PyO3's internal API (`impl_`), which a PyO3 release
/// may change: `Cargo.lock` pins the version, and an upgrade must build
/// and pass `tests/test_queue_recycled_ops.py` and the panic tests on 3.11.
/// Only `QueueOp` takes this path. The other awaitables (sleep, gather,
/// channel operations) keep the shared `awaitable::patch_am_send`: they
/// step once or twice per `await` of something that takes a loop
/// iteration or more, where 140 instructions do not show.
#[cfg(all(not(Py_LIMITED_API), not(Py_3_12)))]
mod send {
    use super::super::op::QueueOp;
    use crate::awaitable::{Step, Stepper};
    use pyo3::ffi;
    use pyo3::prelude::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Whether the last step finished the operation (read right after it,
    /// with the GIL still held).
    static RETURNED: AtomicBool = AtomicBool::new(false);

    unsafe fn step(py: Python<'_>, slf: *mut ffi::PyObject) -> PyResult<*mut ffi::PyObject> {
        // SAFETY: installed on QueueOp's type only, so `slf` is a QueueOp.
        let op = unsafe { pyo3::Borrowed::from_ptr(py, slf).cast_unchecked::<QueueOp>() };
        let (returned, v) = match QueueOp::step(&op)? {
            Step::Return(v) => (true, v),
            Step::Yield(v) => (false, v),
        };
        RETURNED.store(returned, Ordering::Relaxed);
        Ok(v.into_ptr())
    }

    unsafe extern "C" fn am_send(
        iter: *mut ffi::PyObject,
        _arg: *mut ffi::PyObject,
        result: *mut *mut ffi::PyObject,
    ) -> ffi::PySendResult {
        let next = pyo3::impl_::trampoline::get_trampoline_function!(iternextfunc, step);
        let v = next(iter);
        *result = v;
        if v.is_null() {
            ffi::PySendResult::PYGEN_ERROR
        } else if RETURNED.load(Ordering::Relaxed) {
            ffi::PySendResult::PYGEN_RETURN
        } else {
            ffi::PySendResult::PYGEN_NEXT
        }
    }

    pub fn install(py: Python<'_>) {
        let tp = py.get_type::<QueueOp>().as_type_ptr();
        unsafe {
            let am = (*tp).tp_as_async;
            if !am.is_null() {
                (*am).am_send = Some(am_send);
                ffi::PyType_Modified(tp);
            }
        }
    }
}

/// Install the free list and (3.11) the `am_send` slot on `QueueOp`.
pub fn install(py: pyo3::Python<'_>) {
    #[cfg(all(not(Py_LIMITED_API), not(Py_3_12)))]
    send::install(py);
    #[cfg(all(not(Py_LIMITED_API), not(Py_GIL_DISABLED), not(PyPy), not(GraalPy)))]
    imp::install(py);
    #[cfg(not(all(not(Py_LIMITED_API), not(Py_GIL_DISABLED), not(PyPy), not(GraalPy))))]
    let _ = py;
}

//! Freeing nested gathers without recursing: CPython's "trashcan", for our
//! type.
//!
//! Freeing a gather drops its children, and a child that is a gather held by
//! nothing else is freed inside that, and so on: the top of a finished
//! `gather(gather(... gather(f)))` 25,000 deep overflowed the C stack when it
//! was freed. CPython's containers, and Python classes such as asyncio's
//! `_GatheringFuture`, free through its trashcan, which puts objects aside
//! past 50 nested deallocations and frees them once the outermost one is
//! done. PyO3's types do not (and the trashcan's API is private and differs
//! between versions), so [`free`] does the same for gathers, with its own
//! count: at most [`UNWIND_LEVEL`] gathers are freed inside each other.

use std::cell::RefCell;

use pyo3::ffi;

/// How deep gathers are freed inside each other before the next one is put
/// aside (CPython's trashcan unwinds at the same depth).
const UNWIND_LEVEL: usize = 50;

/// The gathers being freed on this thread, and those put aside.
struct Trash {
    depth: usize,
    later: Vec<*mut ffi::PyObject>,
}

thread_local! {
    static TRASH: RefCell<Trash> = const {
        RefCell::new(Trash {
            depth: 0,
            later: Vec::new(),
        })
    };
}

impl Trash {
    /// Whether to free `obj` now; if not, it was put aside.
    ///
    /// # Safety
    /// `obj` is a gather being deallocated (no references, finalised).
    unsafe fn enter(&mut self, obj: *mut ffi::PyObject) -> bool {
        if self.depth >= UNWIND_LEVEL {
            // Out of the collector's sight while it waits, as CPython's
            // trashcan requires too.
            ffi::PyObject_GC_UnTrack(obj.cast());
            self.later.push(obj);
            return false;
        }
        self.depth += 1;
        true
    }

    /// One deallocation is done: for the outermost one, the next gather put
    /// aside, to free at the same depth; otherwise, or when none is left,
    /// `None`.
    fn leave(&mut self) -> Option<*mut ffi::PyObject> {
        if self.depth == 1 {
            if let Some(obj) = self.later.pop() {
                return Some(obj);
            }
        }
        self.depth -= 1;
        None
    }
}

/// Deallocate the gather `obj` with `dealloc` (PyO3's `tp_dealloc`), now or,
/// if gathers are already being freed [`UNWIND_LEVEL`] deep on this thread,
/// once the outermost of them is done.
///
/// # Safety
/// `obj` is a gather whose finaliser has run and which nothing references;
/// the thread is attached.
pub(super) unsafe fn free(
    obj: *mut ffi::PyObject,
    dealloc: unsafe extern "C" fn(*mut ffi::PyObject),
) {
    // At thread exit the count may be gone: free at once, as before.
    let Ok(now) = TRASH.try_with(|t| t.borrow_mut().enter(obj)) else {
        return dealloc(obj);
    };
    if !now {
        return;
    }
    dealloc(obj);
    while let Ok(Some(next)) = TRASH.try_with(|t| t.borrow_mut().leave()) {
        dealloc(next);
    }
}

//! Copying and pickling a queue.
//!
//! asyncio's queues copy and pickle through their instance `__dict__`. Here
//! the same state (items in storage order, the unfinished-task count, the
//! shut-down flag, and a subclass's or served class's `__dict__`) is taken
//! out of the Rust core:
//!
//! * `copy.copy(q)` gives a new queue holding the same items, count, flag
//!   and loop binding. asyncio's shallow copy shares its deque with the
//!   original; a Rust queue cannot alias its storage, so the copy is a
//!   snapshot: later puts on one are not seen by the other.
//! * `pickle` and `copy.deepcopy` go through `__reduce__`, which refuses a
//!   queue that tasks are waiting on or that is bound to an event loop, as
//!   asyncio's fail to pickle their futures or loop.

use super::pyqueue::PyQueue;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple};

/// What a copy needs, taken out of the lock.
struct Snapshot {
    items: Vec<Py<PyAny>>,
    unfinished: usize,
    shutdown: bool,
    waiting: bool,
    loops: (Option<Py<PyAny>>, Option<Py<PyAny>>),
}

impl Snapshot {
    fn take(q: &PyQueue, py: Python<'_>) -> PyResult<Snapshot> {
        let core = q.lock()?;
        Ok(Snapshot {
            items: core.items().into_iter().map(|x| x.clone_ref(py)).collect(),
            unfinished: core.unfinished,
            shutdown: core.shutdown,
            waiting: !(core.getters.is_empty()
                && core.putters.is_empty()
                && core.joiners.is_empty()),
            loops: (
                core.loop_.as_ref().map(|l| l.clone_ref(py)),
                core.join_loop.as_ref().map(|l| l.clone_ref(py)),
            ),
        })
    }

    /// Put this state into `q`; what it held before is dropped after the
    /// lock is released.
    fn restore(self, q: &PyQueue) -> PyResult<()> {
        let old = {
            let mut core = q.lock()?;
            let items = core.set_items(self.items);
            core.unfinished = self.unfinished;
            core.shutdown = self.shutdown;
            let loop_ = std::mem::replace(&mut core.loop_, self.loops.0);
            let join_loop = std::mem::replace(&mut core.join_loop, self.loops.1);
            (items, loop_, join_loop)
        };
        drop(old);
        Ok(())
    }
}

/// The instance `__dict__`, if the class gives its instances one.
fn instance_dict<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyDict>>> {
    match obj.getattr(pyo3::intern!(obj.py(), "__dict__")) {
        Ok(d) => Ok(Some(d.cast_into::<PyDict>()?)),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(obj.py()) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `copyreg.__newobj__`: rebuild with `cls.__new__(cls, maxsize)`, without
/// running a subclass's `__init__` (as the default reduction does).
fn newobj(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static NEWOBJ: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    NEWOBJ.import(py, "copyreg", "__newobj__")
}

/// `q.__reduce__()`: `(copyreg.__newobj__, (cls, maxsize), state)`.
pub fn reduce<'py>(slf: &Bound<'py, PyQueue>) -> PyResult<Bound<'py, PyTuple>> {
    let py = slf.py();
    let snap = Snapshot::take(slf.get(), py)?;
    let name = slf.get_type().name()?;
    if snap.waiting {
        return Err(PyTypeError::new_err(format!(
            "cannot pickle '{name}' object: tasks are waiting on it"
        )));
    }
    if snap.loops.0.is_some() || snap.loops.1.is_some() {
        return Err(PyTypeError::new_err(format!(
            "cannot pickle '{name}' object: it is bound to an event loop"
        )));
    }
    let dict = instance_dict(slf.as_any())?;
    let state = (
        PyList::new(py, snap.items)?,
        snap.unfinished,
        snap.shutdown,
        dict,
    );
    let args = (slf.get_type(), slf.get().maxsize_object(py));
    (newobj(py)?, args, state).into_pyobject(py)
}

/// What `__reduce__` saves: items, unfinished count, shut-down flag, dict.
type State<'py> = (Bound<'py, PyList>, usize, bool, Option<Bound<'py, PyDict>>);

/// `q.__setstate__(state)`, the state `__reduce__` gives.
pub fn setstate(slf: &Bound<'_, PyQueue>, state: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = slf.py();
    let parsed: PyResult<State<'_>> = state.extract();
    let Ok((items, unfinished, shutdown, dict)) = parsed else {
        return Err(PyTypeError::new_err(format!(
            "state must be a tuple (list of items, unfinished count >= 0, shutdown flag, \
             dict or None), not {}",
            state.get_type().name()?
        )));
    };
    let snap = Snapshot {
        items: items.iter().map(Bound::unbind).collect(),
        unfinished,
        shutdown,
        waiting: false,
        loops: (None, None),
    };
    snap.restore(slf.get())?;
    if let Some(dict) = dict {
        slf.getattr(pyo3::intern!(py, "__dict__"))?
            .call_method1(pyo3::intern!(py, "update"), (dict,))?;
    }
    Ok(())
}

/// `copy.copy(q)`: a new queue of the same class with the same state.
pub fn copy<'py>(slf: &Bound<'py, PyQueue>) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let cls = slf.get_type();
    let new = cls
        .getattr(pyo3::intern!(py, "__new__"))?
        .call1((&cls, slf.get().maxsize_object(py)))?;
    let Ok(queue) = new.cast::<PyQueue>() else {
        return Err(PyTypeError::new_err(format!(
            "{}.__new__ did not return a queue",
            cls.name()?
        )));
    };
    Snapshot::take(slf.get(), py)?.restore(queue.get())?;
    if let (Some(from), Some(to)) = (instance_dict(slf.as_any())?, instance_dict(&new)?) {
        to.update(from.as_mapping())?;
    }
    Ok(new)
}

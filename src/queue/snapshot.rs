//! Copying and pickling a queue.
//!
//! asyncio's queues copy and pickle through their instance `__dict__`
//! (`copyreg.__newobj__(cls)` plus the dict as state). Here the queue's own
//! state lives in Rust, so `__reduce__` gives
//! `(_rebuild_queue, (cls, args, kwargs, maxsize, items, unfinished, shutdown,
//! loops, waiters), self.__getstate__())`:
//!
//! * `cls.__new__(cls, *args, **kwargs)` makes the new queue, with the
//!   arguments `__getnewargs_ex__`/`__getnewargs__` give (none by default,
//!   as for asyncio's queues), and the Rust state is put into it;
//! * the state is whatever `__getstate__()` returns (instance `__dict__`,
//!   slots, or a subclass's own choice), applied by `copy`/`pickle` as for
//!   any object, so `__setstate__` overrides, slots and `copyreg`
//!   registrations work as they do on asyncio's queues;
//! * the loops the queue is bound to and the futures waiting on it travel
//!   in the arguments. A shallow copy keeps the binding (as asyncio's keeps
//!   `_loop`) and ignores the waiters (a Rust queue cannot share its
//!   waiters or items with another); pickling or deep-copying such a queue
//!   fails on the future or the loop, exactly as asyncio's does.

use super::pyqueue::PyQueue;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};

/// The arguments `__reduce__` gives to `cls.__new__`.
fn new_args<'py>(slf: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let py = slf.py();
    let cls = slf.get_type();
    if cls.hasattr(intern!(py, "__getnewargs_ex__"))? {
        let pair = slf.call_method0(intern!(py, "__getnewargs_ex__"))?;
        return pair.extract().map_err(|_| {
            PyTypeError::new_err("__getnewargs_ex__ should return a tuple (args, kwargs)")
        });
    }
    let args = if cls.hasattr(intern!(py, "__getnewargs__"))? {
        slf.call_method0(intern!(py, "__getnewargs__"))?
    } else {
        PyTuple::empty(py).into_any()
    };
    Ok((args, PyDict::new(py).into_any()))
}

/// `q.__reduce__()`: see the module documentation.
pub fn reduce<'py>(slf: &Bound<'py, PyQueue>) -> PyResult<Bound<'py, PyTuple>> {
    let py = slf.py();
    let me = slf.get();
    // Clones only under the lock; nothing is dropped or called there.
    let (items, unfinished, shutdown, loops, waiters) = {
        let core = me.lock()?;
        let items: Vec<Py<PyAny>> = core.items().into_iter().map(|x| x.clone_ref(py)).collect();
        let waiters: Vec<Py<PyAny>> = core
            .getters
            .iter()
            .chain(&core.putters)
            .chain(&core.joiners)
            .map(|w| w.clone_ref(py))
            .collect();
        let loops = (
            core.loop_.as_ref().map(|l| l.clone_ref(py)),
            core.join_loop.as_ref().map(|l| l.clone_ref(py)),
        );
        (items, core.unfinished, core.shutdown, loops, waiters)
    };
    let (args, kwargs) = new_args(slf.as_any())?;
    let state = slf.call_method0(intern!(py, "__getstate__"))?;
    let rebuild_args = (
        slf.get_type(),
        args,
        kwargs,
        me.maxsize_object(py),
        PyList::new(py, items)?,
        unfinished,
        shutdown,
        PyTuple::new(py, waiters)?,
        loops,
    );
    (rebuild(py)?, rebuild_args, state).into_pyobject(py)
}

fn rebuild(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static REBUILD: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    REBUILD.import(py, "rustasync._rustasync", "_rebuild_queue")
}

/// Put a saved state into `queue`, which must be unused (no waiters, not
/// bound to a loop). Everything is checked before anything changes; what
/// the queue held before is dropped after the lock is released.
fn restore(
    queue: &Bound<'_, PyQueue>,
    maxsize: &Bound<'_, PyAny>,
    items: &Bound<'_, PyAny>,
    unfinished: &Bound<'_, PyAny>,
    shutdown: bool,
    loops: (Option<Py<PyAny>>, Option<Py<PyAny>>),
) -> PyResult<()> {
    let items: Vec<Py<PyAny>> = crate::args::iterate(items, "items")?
        .map(|x| x.map(Bound::unbind))
        .collect::<PyResult<_>>()?;
    let unfinished: usize = unfinished.extract().map_err(|_| {
        PyValueError::new_err(format!(
            "unfinished must be an int from 0 to {}, not {}",
            usize::MAX,
            unfinished
                .repr()
                .map_or_else(|_| "?".into(), |r| r.to_string())
        ))
    })?;
    let me = queue.get();
    if me.lock()?.in_use() {
        return Err(PyTypeError::new_err(
            "cannot restore the state of a queue that tasks wait on or that is bound to a loop",
        ));
    }
    let old_maxsize = me.replace_maxsize(maxsize)?;
    let old = {
        let mut core = me.lock()?;
        let items = core.set_items(items);
        core.unfinished = unfinished;
        core.shutdown = shutdown;
        let loop_ = std::mem::replace(&mut core.loop_, loops.0);
        let join_loop = std::mem::replace(&mut core.join_loop, loops.1);
        (items, loop_, join_loop)
    };
    drop(old);
    drop(old_maxsize);
    Ok(())
}

/// Rebuild a copied or unpickled queue (what `Queue.__reduce__` names).
///
/// Calls `cls.__new__(cls, *args, **kwargs)` and gives the new queue the
/// saved `maxsize`, items (in storage order), unfinished count, shut-down
/// flag and loop binding. `waiters` is only carried so that pickling a
/// queue with waiting tasks fails, as it does for asyncio's queues.
///
/// Raises:
///     TypeError: `cls.__new__` did not return a queue, or an argument has
///         the wrong type (the message names it).
///     ValueError: unfinished is not an int >= 0 that fits.
#[pyfunction]
#[pyo3(signature = (cls, args, kwargs, maxsize, items, unfinished, shutdown, waiters, loops))]
#[allow(clippy::too_many_arguments)]
pub fn _rebuild_queue<'py>(
    cls: &Bound<'py, PyType>,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
    maxsize: &Bound<'py, PyAny>,
    items: &Bound<'py, PyAny>,
    unfinished: &Bound<'py, PyAny>,
    shutdown: bool,
    waiters: &Bound<'py, PyAny>,
    loops: (Option<Py<PyAny>>, Option<Py<PyAny>>),
) -> PyResult<Bound<'py, PyAny>> {
    let _ = waiters;
    let py = cls.py();
    let mut new_args = vec![cls.clone().into_any()];
    new_args.extend(args.iter());
    let new = cls
        .getattr(intern!(py, "__new__"))?
        .call(PyTuple::new(py, new_args)?, kwargs)?;
    let Ok(queue) = new.cast::<PyQueue>() else {
        return Err(PyTypeError::new_err(format!(
            "{}.__new__ did not return a queue",
            cls.name()?
        )));
    };
    restore(queue, maxsize, items, unfinished, shutdown, loops)?;
    Ok(new)
}

/// Give an unused queue a saved state (`maxsize`, items in storage order,
/// unfinished count, shut-down flag); used to load asyncio's own queue
/// pickles into the classes `install()` serves.
///
/// Raises:
///     TypeError: queue is not a rustasync queue, is in use, or an argument
///         has the wrong type.
///     ValueError: unfinished is not an int >= 0 that fits.
#[pyfunction]
pub fn _restore_queue(
    queue: &Bound<'_, PyAny>,
    maxsize: &Bound<'_, PyAny>,
    items: &Bound<'_, PyAny>,
    unfinished: &Bound<'_, PyAny>,
    shutdown: bool,
) -> PyResult<()> {
    let queue = queue
        .cast::<PyQueue>()
        .map_err(|_| PyTypeError::new_err("queue must be a rustasync queue"))?;
    restore(queue, maxsize, items, unfinished, shutdown, (None, None))
}

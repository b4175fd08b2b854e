//! `cancel()`: asyncio's `_GatheringFuture.cancel`, walking nested gathers
//! on a stack of its own.
//!
//! asyncio's `cancel(msg)` returns False if the gather is done; otherwise it
//! calls `child.cancel(msg=msg)` on each argument's child in argument order,
//! marks the gather cancel-requested if one of them accepted, and returns
//! whether one did.
//!
//! # Depth
//!
//! Nested gathers nest these calls. In `gather(gather(... gather(f)))`,
//! stock's `child.cancel()` is a call from Python to Python, which takes no
//! C stack on 3.11+: cancelling goes as deep as the recursion limit allows
//! (100,000 levels with `sys.setrecursionlimit` raised). Made the same way
//! in Rust, each level would take a PyO3 trampoline, a Rust frame and two C
//! calls, over 1 KiB of C stack, and a few thousand levels would overflow
//! the thread's stack and crash the process. So nothing here recurses: a
//! gather child's cancel runs on an explicit stack of [`Frame`]s, in stock's
//! order (depth first, in argument order), with the same calls on every
//! other child and the same return values.
//!
//! A Task between two gathers (`await gather(coro())` where the coroutine
//! awaits another gather) is a C recursion in stock too: the outer gather
//! calls `Task.cancel()`, which calls `cancel()` on the gather the Task waits
//! on. Stock's limit there is the C stack on 3.11 (about 13,000 levels in 8
//! MiB) and the C recursion limit on 3.12+ (`RecursionError` after about 500
//! levels on 3.12.1, 3,300 on 3.13). Ours would take twice stock's C stack
//! per level (PyO3's trampoline and a second C method call cost more than
//! the frame of a Python function), so that recursion is flattened as well.
//! Before calling `cancel()` on an `asyncio.Task` that waits on a gather, the
//! loop notes that gather ([`CROSSING`]). When the Task calls the gather's
//! `cancel()`, that call cancels children as usual up to the first
//! `asyncio.Task` still pending; there it returns True and leaves its frames
//! ([`HANDED`]) to the loop, which goes on with them once `Task.cancel()`
//! returns. Every call comes in stock's order: nothing runs between that
//! `cancel()` returning and `Task.cancel()` returning (it returns True at
//! once when its waiter accepted), and the answer given early is the one
//! stock gives, since `Task.cancel()` of a pending Task accepts.
//!
//! There is no depth limit. Iterating was chosen over a depth guard that
//! raises `RecursionError`, because a guard can only approximate stock's
//! limit (what counts toward it differs between 3.11 and 3.12+, and includes
//! the caller's own frames), so it would fail programs that stock runs; the
//! one difference left is that a chain deeper than stock's limit is
//! cancelled where stock raises `RecursionError` half way. Only a cycle,
//! which stock recurses into until `RecursionError` (a Task waiting on a
//! gather it is a child of, however indirectly), raises `RecursionError`
//! here: a Task calls `cancel()` on a gather whose cancel is under way.

use std::cell::{Cell, RefCell};
use std::mem;

use pyo3::exceptions::PyRecursionError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyTuple, PyType};

use super::children::Child;
use super::future::GatheringFuture;
use super::sleeps::{Opening, SleepCancel};
use super::state::State;

thread_local! {
    /// The gather an `asyncio.Task` is about to call `cancel()` on, for the
    /// cancel loop that is calling the Task's (its address; 0 for none).
    static CROSSING: Cell<usize> = const { Cell::new(0) };
    /// The frames that gather's `cancel()` left to that loop.
    static HANDED: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
}

/// A gather whose `cancel()` is under way: the state of stock's `for child
/// in self._children` loop.
struct Frame {
    gather: Py<GatheringFuture>,
    /// Numbers this call: sleep children it wakes join one batch.
    call: u64,
    nargs: usize,
    /// The next argument to cancel.
    next: usize,
    /// Whether a child accepted.
    accepted: bool,
}

impl Frame {
    /// Start cancelling `gather`; `None` if it is done (`cancel()` is False).
    fn enter(gather: &Bound<'_, GatheringFuture>) -> Option<Frame> {
        let (nargs, call) = {
            let mut inner = gather.get().inner.lock().unwrap();
            if !matches!(inner.state, State::Pending) {
                return None;
            }
            // As asyncio, once per argument: a repeated Task is asked twice
            // (its `cancelling()` count says so).
            inner.serial += 1;
            inner.cancelling += 1;
            (inner.arg_child.len(), inner.serial)
        };
        Some(Frame {
            gather: gather.clone().unbind(),
            call,
            nargs,
            next: 0,
            accepted: false,
        })
    }

    /// Every argument was visited: `cancel()`'s return value.
    fn leave(self) -> bool {
        if self.accepted {
            self.gather.get().inner.lock().unwrap().cancel_requested = true;
        }
        self.accepted
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        self.gather.get().inner.lock().unwrap().cancelling -= 1;
    }
}

/// What cancelling one argument's child leaves to do.
enum ArgStep {
    /// Nothing: a sleep child, cancelled in Rust, and whether it accepted.
    Done(bool),
    /// A gather child: its cancel runs next, as a new [`Frame`].
    Gather(Py<GatheringFuture>),
    /// Any other child: its `cancel(msg=msg)`.
    Future(Py<PyAny>),
    /// No arguments left (or the collector cleared the gather).
    End,
}

/// `gather.cancel(msg)`.
pub(super) fn cancel(
    gather: &Bound<'_, GatheringFuture>,
    msg: Option<&Py<PyAny>>,
) -> PyResult<bool> {
    let py = gather.py();
    // Called by a Task that a cancel loop below is cancelling?
    let crossing = CROSSING.with(|c| c.replace(0)) == gather.as_ptr() as usize;
    if crossing && gather.get().inner.lock().unwrap().cancelling > 0 {
        return Err(PyRecursionError::new_err(
            "maximum recursion depth exceeded while calling a Python object",
        ));
    }
    let Some(mut top) = Frame::enter(gather) else {
        return Ok(false);
    };
    // The frames whose child `top` is, outermost first.
    let mut below: Vec<Frame> = Vec::new();
    loop {
        let step = if top.next < top.nargs {
            top.next += 1;
            cancel_arg(top.gather.bind(py), top.next - 1, top.call, msg)?
        } else {
            ArgStep::End
        };
        match step {
            ArgStep::Done(accepted) => top.accepted |= accepted,
            ArgStep::Gather(child) => {
                // A done gather refuses: False, nothing to add.
                if let Some(frame) = Frame::enter(child.bind(py)) {
                    below.push(mem::replace(&mut top, frame));
                }
            }
            ArgStep::Future(fut) => {
                let task = pending_task(py, fut.bind(py))?;
                if crossing && task.is_some() {
                    // The Task will accept, and so do we: the loop that
                    // called the Task that called us goes on from here.
                    top.next -= 1;
                    below.push(top);
                    HANDED.with(|h| *h.borrow_mut() = below);
                    return Ok(true);
                }
                if let Some(waiter @ 1..) = task {
                    CROSSING.with(|c| c.set(waiter));
                }
                let accepted = cancel_future(py, &fut, msg);
                CROSSING.with(|c| c.set(0));
                let handed = HANDED.with(|h| mem::take(&mut *h.borrow_mut()));
                top.accepted |= accepted?;
                // The frames of the Task's gather, whose True answer `top`
                // has just taken through the Task.
                if !handed.is_empty() {
                    below.push(top);
                    below.extend(handed);
                    top = below.pop().unwrap();
                }
            }
            ArgStep::End => {
                let accepted = top.leave();
                match below.pop() {
                    Some(frame) => {
                        top = frame;
                        top.accepted |= accepted;
                    }
                    None => return Ok(accepted),
                }
            }
        }
    }
}

/// Cancel argument `arg`'s child if it is a sleep, or say which future to
/// cancel.
fn cancel_arg(
    slf: &Bound<'_, GatheringFuture>,
    arg: usize,
    call: u64,
    msg: Option<&Py<PyAny>>,
) -> PyResult<ArgStep> {
    let py = slf.py();
    let me = slf.get();
    let (new_batch, fut, outcome, timers) = {
        let mut guard = me.inner.lock().unwrap();
        let inner = &mut *guard;
        let Some(&i) = inner.arg_child.get(arg) else {
            return Ok(ArgStep::End);
        };
        let Some(slot) = inner.children.get_mut(i) else {
            return Ok(ArgStep::End);
        };
        match &mut slot.child {
            Child::Future(f) => {
                // Its cancel may schedule a wake-up: what comes next does not
                // sit next to the open batch.
                inner.open = None;
                (None, Some(f.clone_ref(py)), SleepCancel::Refused, None)
            }
            Child::Sleep(phase) => {
                let outcome = phase.cancel(py, msg);
                let timers = match &outcome {
                    SleepCancel::Woken {
                        dead_timer: true, ..
                    } => inner.timers.as_ref().map(|t| t.clone_ref(py)),
                    _ => None,
                };
                let new_batch = match &outcome {
                    SleepCancel::Woken { .. } => inner.join_batch(i, Opening::Cancel(call)),
                    _ => None,
                };
                (new_batch, None, outcome, timers)
            }
        }
    };
    // The child's wake-up is scheduled here, where its Task's would be.
    if let Some(id) = new_batch {
        GatheringFuture::schedule_batch(slf, id)?;
    }
    // Its heap entry is dead, as the TimerHandle of a cancelled Task's sleep
    // would be.
    if let Some(t) = timers {
        t.get().note_cancelled(py);
    }
    // What the sleep child let go of (its value, an earlier message) is
    // dropped unlocked: a `__del__` may use this gather.
    let accepted = match outcome {
        SleepCancel::Refused => false,
        SleepCancel::Accepted(dropped) => {
            drop(dropped);
            true
        }
        SleepCancel::Woken { value, .. } => {
            drop(value);
            true
        }
    };
    Ok(match fut {
        // `GatheringFuture` cannot be subclassed: this is exactly our type,
        // whose `cancel()` is the one above.
        Some(f) => match f.bind(py).cast::<GatheringFuture>() {
            Ok(g) => ArgStep::Gather(g.clone().unbind()),
            Err(_) => ArgStep::Future(f),
        },
        None => ArgStep::Done(accepted),
    })
}

/// For an `asyncio.Task` (exactly: a subclass may cancel differently) that
/// is not done, the address of the gather it waits on, or 0 if it waits on
/// something else. Reading them runs no Python code.
fn pending_task(py: Python<'_>, fut: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
    // `None` without C's Task: then there is no crossing to flatten.
    static TASK: PyOnceLock<Option<Py<PyType>>> = PyOnceLock::new();
    let task = TASK.get_or_init(py, || {
        let task = py.import("asyncio.tasks").and_then(|m| m.getattr("_CTask"));
        task.and_then(|t| Ok(t.cast_into::<PyType>()?.unbind()))
            .ok()
    });
    let Some(task) = task else {
        return Ok(None);
    };
    if !fut.get_type().is(task) || fut.call_method0(intern!(py, "done"))?.is_truthy()? {
        return Ok(None);
    }
    let waiter = fut.getattr(intern!(py, "_fut_waiter"))?;
    Ok(Some(if waiter.is_instance_of::<GatheringFuture>() {
        waiter.as_ptr() as usize
    } else {
        0
    }))
}

/// `fut.cancel(msg=msg)`, as asyncio calls it.
fn cancel_future(py: Python<'_>, fut: &Py<PyAny>, msg: Option<&Py<PyAny>>) -> PyResult<bool> {
    static MSG_KW: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();
    let kwnames = MSG_KW.get_or_try_init(py, || PyTuple::new(py, ["msg"]).map(Bound::unbind))?;
    let msg = msg.map_or(unsafe { ffi::Py_None() }, |m| m.as_ptr());
    // `self`, then the keyword argument's value.
    let args = [fut.as_ptr(), msg];
    let ret = unsafe {
        let r = ffi::PyObject_VectorcallMethod(
            intern!(py, "cancel").as_ptr(),
            args.as_ptr(),
            1,
            kwnames.as_ptr(),
        );
        Bound::from_owned_ptr_or_err(py, r)?
    };
    ret.is_truthy()
}

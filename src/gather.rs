//! `rustasync.gather`: asyncio's `gather` with the bookkeeping in Rust.
//!
//! The outer future is a Rust future-like ([`GatheringFuture`]) with the
//! cancel semantics of asyncio's `_GatheringFuture` and the part of the
//! `asyncio.Future` API that asyncio and user code use on a future they did
//! not create (it is not an `asyncio.Future` instance; see its docs). Each
//! child reports to it through a Rust callable, so the per-child Python
//! `_done_callback` of stock asyncio disappears. Children that are un-started
//! `rustasync.sleep` objects are not wrapped in Tasks at all: they go straight
//! into the loop's timer heap.
//!
//! # Locks
//!
//! The gather's state is behind one `Mutex`. No Python object is dropped and
//! no Python code runs while it is held: values are cloned or taken out,
//! the lock released, then Python is called and the values dropped (a
//! `__del__`, `__eq__` or callback may use the same gather).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{IntoPyDict, PyDict, PyList, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::awaitable::{self, next_result, Imports, Step, Stepper};
use crate::sleep::Sleep;
use crate::timers::{GatherLink, LoopTimers, Waker};

/// Where a sleep child is among the steps a Task wrapping `asyncio.sleep`
/// would take. A child in `Starting`, `Ready`, `Cancelling`, or finished and
/// not yet reported, belongs to one [`SleepSteps`] batch, which runs its next
/// step at the place in the loop's queue where the Task's would be.
enum SleepPhase {
    /// Its first step is due: a zero delay then yields once, a positive one
    /// arms its timer (stock's Task takes its deadline at that step, an
    /// iteration after `gather()`).
    Starting { value: Py<PyAny>, delay: f64 },
    /// Waiting for its deadline: in the loop's timer heap under `timer`, or
    /// (an infinite delay) nowhere.
    Waiting {
        value: Py<PyAny>,
        timer: Option<TimerKey>,
    },
    /// The zero delay yielded, or the timer expired: the next step finishes.
    Ready(Py<PyAny>),
    /// Cancelled before it finished: the next step ends it. A cancel that
    /// reached a Task through its waiter keeps the first message; one that
    /// only flagged the Task takes the latest (`keep_first` says which).
    Cancelling {
        msg: Option<Py<PyAny>>,
        keep_first: bool,
    },
    /// Finished with its value.
    Done(Py<PyAny>),
    /// Finished cancelled, with the message of its `CancelledError`.
    Cancelled(Option<Py<PyAny>>),
}

/// The heap entries armed by one batch step with one delay: they share a
/// deadline and sit next to each other in the heap, so they expire together.
#[derive(Clone, Copy, PartialEq)]
struct TimerKey {
    step: u64,
    delay_bits: u64,
}

/// Why the batch sleep children currently join was scheduled. Children join
/// it only while nothing else was scheduled in between, as their Tasks'
/// steps would sit next to each other in the loop's queue.
#[derive(Clone, Copy, PartialEq)]
enum Opening {
    /// Consecutive sleep arguments of `gather()`.
    Creation,
    /// Waiting children cancelled by one `cancel()` call.
    Cancel(u64),
    /// Children whose timers expired together.
    Expiry(TimerKey),
}

impl SleepPhase {
    /// Move to the phase `next` makes of the current one.
    fn advance(&mut self, next: impl FnOnce(SleepPhase) -> SleepPhase) {
        let old = std::mem::replace(self, SleepPhase::Cancelled(None));
        *self = next(old);
    }

    /// Whether the child has a live entry in the loop's timer heap.
    fn in_timer_heap(&self) -> bool {
        matches!(self, SleepPhase::Waiting { timer: Some(_), .. })
    }
}

/// What `cancel()` did to one sleep child.
enum SleepCancel {
    /// Nothing: it is finished.
    Refused,
    /// Accepted; what the child let go of is dropped once unlocked.
    Accepted(Option<Py<PyAny>>),
    /// Accepted from `Waiting`: it needs a step of its own now (a Task's
    /// wake-up, scheduled by its cancelled waiter), and its timer, if it had
    /// one, is dead.
    Woken { value: Py<PyAny>, dead_timer: bool },
}

impl SleepPhase {
    /// `Task.cancel(msg)` for the child.
    fn cancel(&mut self, py: Python<'_>, msg: Option<&Py<PyAny>>) -> SleepCancel {
        let new_msg = || msg.map(|m| m.clone_ref(py));
        match self {
            SleepPhase::Done(_) | SleepPhase::Cancelled(_) => SleepCancel::Refused,
            SleepPhase::Cancelling {
                keep_first: true, ..
            } => SleepCancel::Accepted(None),
            SleepPhase::Cancelling { msg: m, .. } => {
                SleepCancel::Accepted(std::mem::replace(m, new_msg()))
            }
            SleepPhase::Waiting { .. } => {
                let cancelling = SleepPhase::Cancelling {
                    msg: new_msg(),
                    keep_first: true,
                };
                match std::mem::replace(self, cancelling) {
                    SleepPhase::Waiting { value, timer } => SleepCancel::Woken {
                        value,
                        dead_timer: timer.is_some(),
                    },
                    _ => unreachable!(),
                }
            }
            SleepPhase::Starting { .. } | SleepPhase::Ready(_) => {
                let cancelling = SleepPhase::Cancelling {
                    msg: new_msg(),
                    keep_first: false,
                };
                match std::mem::replace(self, cancelling) {
                    SleepPhase::Starting { value, .. } | SleepPhase::Ready(value) => {
                        SleepCancel::Accepted(Some(value))
                    }
                    _ => unreachable!(),
                }
            }
        }
    }
}

enum Child {
    /// A Task or future; its state is read from it.
    Future(Py<PyAny>),
    /// An adopted `rustasync.sleep`.
    Sleep(SleepPhase),
}

/// A child and whether it was reported to the gather (each child counts
/// once toward `nfinished`, however often it is reported).
struct Slot {
    child: Child,
    reported: bool,
}

impl Slot {
    fn new(child: Child) -> Self {
        Slot {
            child,
            reported: false,
        }
    }

    fn sleep_mut(&mut self) -> Option<&mut SleepPhase> {
        match &mut self.child {
            Child::Sleep(phase) => Some(phase),
            Child::Future(_) => None,
        }
    }
}

/// A finished gather's result, or its exception and the traceback to raise
/// it with.
type Outcome = Result<Py<PyAny>, (Py<PyAny>, Option<Py<PyAny>>)>;

/// A child's state as copied out of the gather's lock.
enum ChildView {
    Future(Py<PyAny>),
    Value(Py<PyAny>),
    Cancelled(Option<Py<PyAny>>),
    Unfinished,
}

impl ChildView {
    fn of(py: Python<'_>, slot: &Slot) -> ChildView {
        match &slot.child {
            Child::Future(f) => ChildView::Future(f.clone_ref(py)),
            Child::Sleep(SleepPhase::Done(v)) => ChildView::Value(v.clone_ref(py)),
            Child::Sleep(SleepPhase::Cancelled(msg)) => {
                ChildView::Cancelled(msg.as_ref().map(|m| m.clone_ref(py)))
            }
            Child::Sleep(_) => ChildView::Unfinished,
        }
    }

    /// The value the child contributes to the result list.
    fn value(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let fut = match self {
            ChildView::Future(f) => f,
            ChildView::Value(v) => return Ok(v),
            ChildView::Cancelled(msg) => return cancelled_in_results(py, msg.as_ref()),
            ChildView::Unfinished => return Ok(py.None()),
        };
        let fut = fut.bind(py);
        if truthy(fut, intern!(py, "cancelled"))? {
            let msg = fut.getattr(intern!(py, "_cancel_message"))?.unbind();
            return cancelled_in_results(py, Some(&msg));
        }
        let exc = fut.call_method0(intern!(py, "exception"))?;
        if !exc.is_none() {
            return Ok(exc.unbind());
        }
        Ok(fut.call_method0(intern!(py, "result"))?.unbind())
    }

    /// (cancelled, exception or None) of a finished child; reading a
    /// future's exception marks it retrieved.
    fn outcome(self, py: Python<'_>) -> PyResult<(bool, Option<Py<PyAny>>)> {
        let fut = match self {
            ChildView::Future(f) => f,
            ChildView::Cancelled(_) => return Ok((true, None)),
            ChildView::Value(_) | ChildView::Unfinished => return Ok((false, None)),
        };
        let fut = fut.bind(py);
        if truthy(fut, intern!(py, "cancelled"))? {
            return Ok((true, None));
        }
        let exc = fut.call_method0(intern!(py, "exception"))?;
        Ok((false, (!exc.is_none()).then(|| exc.unbind())))
    }
}

enum State {
    Pending,
    Result(Py<PyAny>),
    /// The exception, and its traceback when it was set: the first
    /// `result()` raises it with that traceback, later ones with none, so
    /// that raising it again and again does not grow it (as asyncio's
    /// Future does).
    Exception {
        exc: Py<PyAny>,
        tb: Option<Py<PyAny>>,
    },
}

impl State {
    /// A failure with `exc` and its traceback as it is now.
    fn exception(py: Python<'_>, exc: Py<PyAny>) -> State {
        let tb = unsafe {
            if ffi::PyExceptionInstance_Check(exc.as_ptr()) != 0 {
                Bound::from_owned_ptr_or_opt(py, ffi::PyException_GetTraceback(exc.as_ptr()))
                    .map(Bound::unbind)
            } else {
                None
            }
        };
        State::Exception { exc, tb }
    }
}

struct Inner {
    state: State,
    callbacks: Vec<(Py<PyAny>, Py<PyAny>)>,
    children: Vec<Slot>,
    /// Child futures by address (they are kept alive in `children`).
    future_index: HashMap<usize, usize>,
    /// For each argument, the index of its (deduplicated) child.
    arg_child: Vec<usize>,
    nfinished: usize,
    cancel_requested: bool,
    /// The sleep children of each batch in flight, by batch id (the ids in
    /// `free_batches` are unused).
    batches: Vec<Vec<usize>>,
    free_batches: Vec<usize>,
    /// The batch that children moving now join, while nothing else has been
    /// scheduled since it was.
    open: Option<(Opening, usize)>,
    /// Numbers batch steps and `cancel()` calls.
    serial: u64,
    log_traceback: bool,
    /// The timer heap's way to this gather, cut once it is done.
    link: Option<Arc<GatherLink>>,
    /// The loop's timers, once a sleep child is in them: told of each entry
    /// the gather gives up on, so that dead entries get compacted.
    timers: Option<Py<LoopTimers>>,
}

impl Inner {
    /// A new batch of `members`, open for `opening`; returns its id (the
    /// caller schedules it, unlocked).
    fn new_batch(&mut self, members: Vec<usize>, opening: Opening) -> usize {
        let id = match self.free_batches.pop() {
            Some(id) => {
                self.batches[id] = members;
                id
            }
            None => {
                self.batches.push(members);
                self.batches.len() - 1
            }
        };
        self.open = Some((opening, id));
        id
    }

    /// Put child `index` in the batch open for `opening`, or in a new one
    /// whose id is returned (to schedule now, at the end of the loop's
    /// queue).
    fn join_batch(&mut self, index: usize, opening: Opening) -> Option<usize> {
        match self.open {
            Some((o, id)) if o == opening => {
                self.batches[id].push(index);
                None
            }
            _ => Some(self.new_batch(vec![index], opening)),
        }
    }
}

/// The future returned by `rustasync.gather()`.
///
/// Like asyncio's `_GatheringFuture`: `cancel()` cancels every child that is
/// not done and does not mark the future cancelled at once; the outcome comes
/// from the children. It is not an `asyncio.Future` instance
/// (`asyncio.isfuture()` is true, `isinstance(f, asyncio.Future)` false).
/// It has `result`, `exception`, `done`, `cancelled`, `cancel`,
/// `add_done_callback`, `remove_done_callback`, `get_loop`, `__await__`, and
/// the private members asyncio's own functions use on a foreign future
/// (`_asyncio_future_blocking`, `_log_traceback`, `_loop`,
/// `_cancel_message`, `_make_cancelled_error`). It has no `set_result` or
/// `set_exception`: its outcome comes from its children, as a Task's comes
/// from its coroutine. Dropped with an exception nobody retrieved, it calls
/// the loop's exception handler with asyncio's message
/// ("_GatheringFuture exception was never retrieved").
#[pyclass(frozen, module = "rustasync._rustasync", name = "GatheringFuture")]
pub struct GatheringFuture {
    loop_: Py<PyAny>,
    return_exceptions: bool,
    blocking: AtomicBool,
    inner: Mutex<Inner>,
}

/// The one callable all child futures of a gather report to.
#[pyclass(frozen, module = "rustasync._rustasync", name = "_GatherChildDone")]
struct ChildDone {
    outer: Py<GatheringFuture>,
}

#[pymethods]
impl ChildDone {
    fn __call__(&self, py: Python<'_>, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        let outer = self.outer.bind(py);
        let index = outer
            .get()
            .inner
            .lock()
            .unwrap()
            .future_index
            .get(&(fut.as_ptr() as usize))
            .copied();
        match index {
            Some(i) => GatheringFuture::child_done(outer, i),
            None => Ok(()),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.outer)
    }
}

/// A batch of sleep children whose Tasks' steps would sit next to each
/// other in the loop's queue: the loop runs this once per iteration, and each
/// run takes every member one step, as asyncio runs each Task's, until all
/// are finished and reported.
#[pyclass(frozen, module = "rustasync._rustasync", name = "_GatherSleepSteps")]
struct SleepSteps {
    outer: Py<GatheringFuture>,
    id: usize,
}

/// What one batch step leaves to do once the gather is unlocked.
#[derive(Default)]
struct StepWork {
    /// Children to report to the gather, in order.
    reports: Vec<usize>,
    /// Children whose timers to arm, with their delays.
    timers: Vec<(usize, f64)>,
    /// Whether the batch runs again next iteration.
    again: bool,
}

#[pymethods]
impl SleepSteps {
    fn __call__(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let outer = me.outer.bind(py);
        let work = outer.get().step_batch(me.id);
        if work.again {
            outer
                .get()
                .loop_
                .bind(py)
                .call_method1(intern!(py, "call_soon"), (slf,))?;
        }
        if !work.timers.is_empty() {
            GatheringFuture::arm_timers(outer, &work.timers)?;
        }
        for index in work.reports {
            GatheringFuture::child_done(outer, index)?;
        }
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.outer)
    }
}

fn truthy(obj: &Bound<'_, PyAny>, method: &Bound<'_, pyo3::types::PyString>) -> PyResult<bool> {
    obj.call_method0(method)?.is_truthy()
}

/// `CancelledError('' if msg is None else msg)`, as gather stores in results.
fn cancelled_in_results(py: Python<'_>, msg: Option<&Py<PyAny>>) -> PyResult<Py<PyAny>> {
    let cls = Imports::get(py)?.cancelled_error.bind(py);
    let exc = match msg {
        Some(m) if !m.is_none(py) => cls.call1((m.bind(py),))?,
        _ => cls.call1(("",))?,
    };
    Ok(exc.unbind())
}

impl GatheringFuture {
    fn is_done(&self) -> bool {
        !matches!(self.inner.lock().unwrap().state, State::Pending)
    }

    /// Whether sleep child `index` still waits for its deadline (the timer
    /// heap's entry for it is live).
    pub(crate) fn sleep_child_pending(&self, index: usize) -> bool {
        match self.inner.lock().unwrap().children.get(index) {
            Some(Slot {
                child: Child::Sleep(phase),
                ..
            }) => phase.in_timer_heap(),
            _ => false,
        }
    }

    /// Called by the timers when an adopted sleep expires: its Task would
    /// wake up next iteration.
    pub(crate) fn sleep_child_expired(slf: &Bound<'_, Self>, index: usize) -> PyResult<()> {
        let new_batch = {
            let mut guard = slf.get().inner.lock().unwrap();
            let inner = &mut *guard;
            let Some(phase @ SleepPhase::Waiting { timer: Some(_), .. }) =
                inner.children.get_mut(index).and_then(Slot::sleep_mut)
            else {
                return Ok(());
            };
            let mut key = None;
            phase.advance(|p| match p {
                SleepPhase::Waiting { value, timer } => {
                    key = timer;
                    SleepPhase::Ready(value)
                }
                other => other,
            });
            key.and_then(|key| inner.join_batch(index, Opening::Expiry(key)))
        };
        match new_batch {
            Some(id) => Self::schedule_batch(slf, id),
            None => Ok(()),
        }
    }

    /// Run batch `id` in the next iteration.
    fn schedule_batch(slf: &Bound<'_, Self>, id: usize) -> PyResult<()> {
        let py = slf.py();
        let steps = Bound::new(
            py,
            SleepSteps {
                outer: slf.clone().unbind(),
                id,
            },
        )?;
        slf.get()
            .loop_
            .bind(py)
            .call_method1(intern!(py, "call_soon"), (steps,))?;
        Ok(())
    }

    /// Schedule `members` as a batch of their own (nothing joins it).
    fn start_batch(slf: &Bound<'_, Self>, members: Vec<usize>) -> PyResult<()> {
        let id = {
            let mut inner = slf.get().inner.lock().unwrap();
            let id = inner.new_batch(members, Opening::Creation);
            inner.open = None;
            id
        };
        Self::schedule_batch(slf, id)
    }

    /// One step of batch `id`: each member moves on as its Task's step
    /// would; what needs Python is returned, to do unlocked.
    fn step_batch(&self, id: usize) -> StepWork {
        let mut guard = self.inner.lock().unwrap();
        let inner = &mut *guard;
        if matches!(inner.open, Some((_, open)) if open == id) {
            inner.open = None;
        }
        let mut work = StepWork::default();
        // A gather cleared by the collector has no batches or children left.
        let Some(members) = inner.batches.get_mut(id).map(std::mem::take) else {
            return work;
        };
        if !matches!(inner.state, State::Pending) {
            // Nothing a sleep child does matters any more.
            inner.free_batches.push(id);
            return work;
        }
        inner.serial += 1;
        let step = inner.serial;
        let mut members = members;
        let children = &mut inner.children;
        members.retain(|&i| {
            let Some(Slot {
                child: Child::Sleep(phase),
                reported,
            }) = children.get_mut(i)
            else {
                return false;
            };
            match phase {
                SleepPhase::Starting { delay, .. } => {
                    let delay = *delay;
                    let timer = (delay > 0.0 && delay.is_finite()).then_some(TimerKey {
                        step,
                        delay_bits: delay.to_bits(),
                    });
                    phase.advance(|p| match p {
                        SleepPhase::Starting { value, .. } if delay <= 0.0 => {
                            SleepPhase::Ready(value)
                        }
                        SleepPhase::Starting { value, .. } => SleepPhase::Waiting { value, timer },
                        other => other,
                    });
                    if timer.is_some() {
                        work.timers.push((i, delay));
                    }
                    // A zero delay yielded; a timer takes over the others.
                    delay <= 0.0
                }
                SleepPhase::Ready(_) | SleepPhase::Cancelling { .. } => {
                    phase.advance(|p| match p {
                        SleepPhase::Ready(value) => SleepPhase::Done(value),
                        SleepPhase::Cancelling { msg, .. } => SleepPhase::Cancelled(msg),
                        other => other,
                    });
                    true
                }
                SleepPhase::Done(_) | SleepPhase::Cancelled(_) => {
                    if !*reported {
                        work.reports.push(i);
                    }
                    false
                }
                SleepPhase::Waiting { .. } => false,
            }
        });
        work.again = !members.is_empty();
        if work.again {
            inner.batches[id] = members;
        } else {
            inner.free_batches.push(id);
        }
        work
    }

    /// Put the children that just took their first step in the loop's timer
    /// heap, each at the loop's time now plus its delay.
    fn arm_timers(slf: &Bound<'_, Self>, timed: &[(usize, f64)]) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (timers, link) = {
            let inner = me.inner.lock().unwrap();
            (
                inner.timers.as_ref().map(|t| t.clone_ref(py)),
                inner.link.clone(),
            )
        };
        let timers = match timers {
            Some(t) => t.into_bound(py),
            None => {
                let t = LoopTimers::for_loop(me.loop_.bind(py))?;
                me.inner.lock().unwrap().timers = Some(t.clone().unbind());
                t
            }
        };
        let link = match link {
            Some(l) => l,
            None => {
                let l = GatherLink::new(slf.clone().unbind());
                me.inner.lock().unwrap().link = Some(l.clone());
                l
            }
        };
        let now: f64 = me
            .loop_
            .bind(py)
            .call_method0(intern!(py, "time"))?
            .extract()?;
        for &(index, delay) in timed {
            let waker = Waker::Gather {
                link: link.clone(),
                index,
            };
            LoopTimers::insert(&timers, now + delay, waker)?;
        }
        Ok(())
    }

    /// What child `index` holds, cloned out of the lock (callers then call
    /// into Python freely).
    fn child_view(&self, py: Python<'_>, index: usize) -> ChildView {
        match self.inner.lock().unwrap().children.get(index) {
            Some(slot) => ChildView::of(py, slot),
            None => ChildView::Unfinished,
        }
    }

    /// The child's `_make_cancelled_error()`.
    fn child_cancelled_error(&self, py: Python<'_>, index: usize) -> PyResult<Py<PyAny>> {
        match self.child_view(py, index) {
            ChildView::Future(f) => Ok(f
                .bind(py)
                .call_method0(intern!(py, "_make_cancelled_error"))?
                .unbind()),
            ChildView::Cancelled(msg) => Ok(awaitable::cancelled_error(py, msg.as_ref())?
                .into_value(py)
                .into_any()),
            ChildView::Value(_) | ChildView::Unfinished => {
                Ok(awaitable::cancelled_error(py, None)?
                    .into_value(py)
                    .into_any())
            }
        }
    }

    /// asyncio's `_done_callback`, for child `index`.
    fn child_done(slf: &Bound<'_, Self>, index: usize) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (last, done, view) = {
            let mut guard = me.inner.lock().unwrap();
            let inner = &mut *guard;
            let slot = match inner.children.get_mut(index) {
                Some(slot) if !slot.reported => slot,
                // Reported already, or cleared by the collector.
                _ => return Ok(()),
            };
            slot.reported = true;
            // A sleep child's outcome needs no copy of its value.
            let view = match &slot.child {
                Child::Future(f) => ChildView::Future(f.clone_ref(py)),
                Child::Sleep(SleepPhase::Cancelled(_)) => ChildView::Cancelled(None),
                Child::Sleep(_) => ChildView::Unfinished,
            };
            inner.nfinished += 1;
            (
                inner.nfinished == inner.children.len(),
                !matches!(inner.state, State::Pending),
                view,
            )
        };
        if done {
            // Mark the exception retrieved.
            let _ = view.outcome(py)?;
            return Ok(());
        }
        if !me.return_exceptions {
            let (cancelled, exc) = view.outcome(py)?;
            if cancelled {
                let exc = me.child_cancelled_error(py, index)?;
                return Self::finish(slf, State::exception(py, exc));
            }
            if let Some(exc) = exc {
                return Self::finish(slf, State::exception(py, exc));
            }
        }
        if last {
            return Self::finish_all(slf, index);
        }
        Ok(())
    }

    /// Every child has reported: the list of results, or the cancellation.
    fn finish_all(slf: &Bound<'_, Self>, index: usize) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (views, arg_child, cancel_requested) = {
            let inner = me.inner.lock().unwrap();
            let views: Vec<ChildView> = inner
                .children
                .iter()
                .map(|slot| ChildView::of(py, slot))
                .collect();
            (views, inner.arg_child.clone(), inner.cancel_requested)
        };
        let values = views
            .into_iter()
            .map(|v| v.value(py))
            .collect::<PyResult<Vec<_>>>()?;
        if cancel_requested {
            // asyncio takes `_make_cancelled_error()` of the last argument's
            // child here (its loop variable), not of the child that finished
            // last.
            let last = *arg_child.last().unwrap_or(&index);
            let exc = me.child_cancelled_error(py, last)?;
            return Self::finish(slf, State::exception(py, exc));
        }
        let results = PyList::new(py, arg_child.iter().map(|&i| values[i].clone_ref(py)))?;
        Self::finish(slf, State::Result(results.into_any().unbind()))
    }

    /// Complete the outer future and schedule its callbacks.
    fn finish(slf: &Bound<'_, Self>, state: State) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (callbacks, link, timers, dead_timers) = {
            let mut inner = me.inner.lock().unwrap();
            if !matches!(inner.state, State::Pending) {
                // `state` is dropped, and the error built, unlocked.
                drop(inner);
                return Err(awaitable::invalid_state(py, "invalid state"));
            }
            inner.log_traceback = matches!(state, State::Exception { .. });
            inner.state = state;
            inner.open = None;
            let timers = inner.timers.as_ref().map(|t| t.clone_ref(py));
            let dead_timers = match &timers {
                Some(_) => inner
                    .children
                    .iter()
                    .filter(|s| matches!(&s.child, Child::Sleep(p) if p.in_timer_heap()))
                    .count(),
                None => 0,
            };
            let link = inner.link.take();
            (
                std::mem::take(&mut inner.callbacks),
                link,
                timers,
                dead_timers,
            )
        };
        // Sleep children still in the heap no longer matter (asyncio's keep
        // running unobserved): their entries go dead, and the heap is told
        // so it can compact them.
        drop(link.and_then(|l| l.cut()));
        if let Some(t) = timers {
            for _ in 0..dead_timers {
                t.get().note_cancelled(py);
            }
        }
        Self::schedule_callbacks(slf, callbacks)
    }

    fn schedule_callbacks(
        slf: &Bound<'_, Self>,
        callbacks: Vec<(Py<PyAny>, Py<PyAny>)>,
    ) -> PyResult<()> {
        if callbacks.is_empty() {
            return Ok(());
        }
        let py = slf.py();
        let loop_ = slf.get().loop_.bind(py);
        let call_soon = loop_.getattr(intern!(py, "call_soon"))?;
        for (cb, ctx) in callbacks {
            awaitable::call_with_context(
                py,
                &call_soon,
                &[cb.bind(py), slf.as_any()],
                ctx.bind(py),
            )?;
        }
        Ok(())
    }

    /// The outcome, cloned out of the lock: `None` while pending. Reading it
    /// counts as retrieving the exception; `raising` takes the traceback it
    /// was stored with (to raise it once with it).
    fn outcome(&self, py: Python<'_>, raising: bool) -> Option<Outcome> {
        let mut guard = self.inner.lock().unwrap();
        let inner = &mut *guard;
        match &mut inner.state {
            State::Pending => None,
            State::Result(v) => Some(Ok(v.clone_ref(py))),
            State::Exception { exc, tb } => {
                let exc = exc.clone_ref(py);
                let tb = if raising { tb.take() } else { None };
                inner.log_traceback = false;
                Some(Err((exc, tb)))
            }
        }
    }

    fn result_of(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self.outcome(py, true) {
            None => Err(awaitable::invalid_state(py, "Result is not set.")),
            Some(Ok(v)) => Ok(v),
            Some(Err((exc, tb))) => {
                // `raise exc.with_traceback(tb)`: the frames of earlier raises
                // are dropped (here, unlocked) rather than grown on.
                let exc = exc.into_bound(py);
                if unsafe { ffi::PyExceptionInstance_Check(exc.as_ptr()) } != 0 {
                    exc.setattr(intern!(py, "__traceback__"), tb)?;
                }
                Err(PyErr::from_value(exc))
            }
        }
    }
}

impl Stepper for GatheringFuture {
    fn step(slf: &Bound<'_, Self>) -> PyResult<Step> {
        let me = slf.get();
        if me.is_done() {
            return Ok(Step::Return(me.result_of(slf.py())?));
        }
        me.blocking.store(true, Ordering::Relaxed);
        Ok(Step::Yield(slf.clone().into_any().unbind()))
    }
}

#[pymethods]
impl GatheringFuture {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        next_result(slf.py(), Self::step(slf)?)
    }

    #[getter(_asyncio_future_blocking)]
    fn asyncio_future_blocking(&self) -> bool {
        self.blocking.load(Ordering::Relaxed)
    }

    #[setter(_asyncio_future_blocking)]
    fn set_asyncio_future_blocking(&self, value: bool) {
        self.blocking.store(value, Ordering::Relaxed);
    }

    #[getter(_log_traceback)]
    fn log_traceback(&self) -> bool {
        self.inner.lock().unwrap().log_traceback
    }

    #[setter(_log_traceback)]
    fn set_log_traceback(&self, value: bool) -> PyResult<()> {
        if value {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "_log_traceback can only be set to False",
            ));
        }
        self.inner.lock().unwrap().log_traceback = false;
        Ok(())
    }

    /// Always None: like asyncio's, this future is never cancelled itself;
    /// a cancelled gather ends with a `CancelledError` exception.
    #[getter]
    fn _cancel_message(&self) -> Option<Py<PyAny>> {
        None
    }

    /// The loop the future is bound to.
    fn get_loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.loop_.clone_ref(py)
    }

    /// The loop, as asyncio's `futures._get_loop()` falls back to reading it.
    #[getter]
    fn _loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.loop_.clone_ref(py)
    }

    /// Whether the future is done (result, exception or cancelled).
    fn done(&self) -> bool {
        self.is_done()
    }

    /// Always False, as for asyncio's gathering future: cancellation ends it
    /// with a `CancelledError` exception instead.
    fn cancelled(&self) -> bool {
        false
    }

    /// The list of results; raises the exception or `CancelledError`, or
    /// `InvalidStateError` if not done.
    fn result(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.result_of(py)
    }

    /// The exception (None if it succeeded); raises if cancelled or not done.
    fn exception(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match self.outcome(py, false) {
            None => Err(awaitable::invalid_state(py, "Exception is not set.")),
            Some(Ok(_)) => Ok(None),
            Some(Err((exc, _))) => Ok(Some(exc)),
        }
    }

    /// Add a callback run with the future once it is done (scheduled with
    /// `loop.call_soon` in `context`, or a copy of the current context).
    #[pyo3(signature = (fn_, *, context=None))]
    fn add_done_callback(
        slf: &Bound<'_, Self>,
        fn_: Py<PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let ctx = match context {
            Some(c) if !c.is_none(py) => c,
            _ => Imports::get(py)?.copy_context.bind(py).call0()?.unbind(),
        };
        let done = {
            let mut inner = slf.get().inner.lock().unwrap();
            if matches!(inner.state, State::Pending) {
                inner.callbacks.push((fn_, ctx));
                return Ok(());
            }
            vec![(fn_, ctx)]
        };
        Self::schedule_callbacks(slf, done)
    }

    /// Remove every registration of `fn`; returns how many were removed.
    #[pyo3(signature = (fn_, /))]
    fn remove_done_callback(&self, fn_: &Bound<'_, PyAny>) -> PyResult<usize> {
        let py = fn_.py();
        // `==` runs Python code that may use this very future (and the
        // removed callbacks' finalisers may too): compare and drop without
        // holding the lock, which is not re-entrant.
        let snapshot: Vec<Py<PyAny>> = {
            let inner = self.inner.lock().unwrap();
            inner
                .callbacks
                .iter()
                .map(|(cb, _)| cb.clone_ref(py))
                .collect()
        };
        let mut matching = Vec::new();
        for cb in &snapshot {
            if cb.bind(py).eq(fn_)? {
                matching.push(cb.as_ptr());
            }
        }
        let removed: Vec<_> = {
            let mut inner = self.inner.lock().unwrap();
            let (gone, keep) = std::mem::take(&mut inner.callbacks)
                .into_iter()
                .partition(|(cb, _)| matching.contains(&cb.as_ptr()));
            inner.callbacks = keep;
            gone
        };
        Ok(removed.len())
    }

    /// Cancel every child that is not done. Returns True if one accepted; the
    /// future then ends with `CancelledError` once the children report.
    #[pyo3(signature = (msg=None))]
    fn cancel(slf: &Bound<'_, Self>, msg: Option<Py<PyAny>>) -> PyResult<bool> {
        let py = slf.py();
        let me = slf.get();
        if me.is_done() {
            return Ok(false);
        }
        // As asyncio, once per argument: a repeated Task is asked twice (its
        // `cancelling()` count says so).
        let (nargs, call) = {
            let mut inner = me.inner.lock().unwrap();
            inner.serial += 1;
            (inner.arg_child.len(), inner.serial)
        };
        let mut ret = false;
        for arg in 0..nargs {
            let (new_batch, fut, outcome, timers) = {
                let mut guard = me.inner.lock().unwrap();
                let inner = &mut *guard;
                let Some(&i) = inner.arg_child.get(arg) else {
                    break;
                };
                let Some(slot) = inner.children.get_mut(i) else {
                    break;
                };
                match &mut slot.child {
                    Child::Future(f) => {
                        // Its cancel may schedule a wake-up: what comes next
                        // does not sit next to the open batch.
                        inner.open = None;
                        (None, Some(f.clone_ref(py)), SleepCancel::Refused, None)
                    }
                    Child::Sleep(phase) => {
                        let outcome = phase.cancel(py, msg.as_ref());
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
            // What the sleep child let go of (its value, an earlier message)
            // is dropped unlocked: a `__del__` may use this gather.
            match outcome {
                SleepCancel::Refused => {}
                SleepCancel::Accepted(dropped) => {
                    ret = true;
                    drop(dropped);
                }
                SleepCancel::Woken { value, .. } => {
                    ret = true;
                    drop(value);
                }
            }
            if let Some(id) = new_batch {
                Self::schedule_batch(slf, id)?;
            }
            // Its heap entry is dead, as the TimerHandle of a cancelled
            // Task's sleep would be.
            if let Some(t) = timers {
                t.get().note_cancelled(py);
            }
            if let Some(f) = fut {
                let kwargs = PyDict::new(py);
                kwargs.set_item(intern!(py, "msg"), msg.as_ref().map(|m| m.bind(py)))?;
                if f.bind(py)
                    .call_method(intern!(py, "cancel"), (), Some(&kwargs))?
                    .is_truthy()?
                {
                    ret = true;
                }
            }
        }
        if ret {
            me.inner.lock().unwrap().cancel_requested = true;
        }
        Ok(ret)
    }

    /// The `CancelledError` this future raises when cancelled.
    fn _make_cancelled_error(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(awaitable::cancelled_error(py, None)?
            .into_value(py)
            .into_any())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let exc = match &self.inner.lock().unwrap().state {
            State::Pending => return Ok("<rustasync GatheringFuture pending>".into()),
            State::Result(_) => return Ok("<rustasync GatheringFuture finished>".into()),
            State::Exception { exc, .. } => exc.clone_ref(py),
        };
        let exc = exc.bind(py).repr()?;
        Ok(format!(
            "<rustasync GatheringFuture finished exception={exc}>"
        ))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        let Ok(inner) = self.inner.try_lock() else {
            return Ok(());
        };
        match &inner.state {
            State::Result(v) => visit.call(v)?,
            State::Exception { exc, tb } => {
                visit.call(exc)?;
                if let Some(tb) = tb {
                    visit.call(tb)?;
                }
            }
            State::Pending => {}
        }
        for (cb, ctx) in &inner.callbacks {
            visit.call(cb)?;
            visit.call(ctx)?;
        }
        if let Some(t) = &inner.timers {
            visit.call(t)?;
        }
        for slot in &inner.children {
            match &slot.child {
                Child::Future(f) => visit.call(f)?,
                Child::Sleep(
                    SleepPhase::Starting { value: v, .. }
                    | SleepPhase::Waiting { value: v, .. }
                    | SleepPhase::Ready(v)
                    | SleepPhase::Done(v)
                    | SleepPhase::Cancelling { msg: Some(v), .. }
                    | SleepPhase::Cancelled(Some(v)),
                ) => visit.call(v)?,
                Child::Sleep(
                    SleepPhase::Cancelling { msg: None, .. } | SleepPhase::Cancelled(None),
                ) => {}
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        // Drop outside the lock: a child's finaliser may call back in. The
        // lock is free unless the collector ran inside a locked section; then
        // nothing is cleared now (the cycle stays until a later collection).
        let taken = self.inner.try_lock().ok().map(|mut inner| {
            inner.arg_child.clear();
            inner.future_index.clear();
            inner.batches.clear();
            inner.free_batches.clear();
            inner.open = None;
            (
                std::mem::take(&mut inner.callbacks),
                std::mem::take(&mut inner.children),
                inner.link.take().and_then(|l| l.cut()),
                inner.timers.take(),
            )
        });
        drop(taken);
    }
}

/// How `gather` takes each argument.
enum Kind<'py> {
    Coroutine,
    Sleep(Bound<'py, Sleep>),
    Other,
}

fn classify<'py>(py: Python<'py>, arg: &Bound<'py, PyAny>) -> PyResult<Option<Kind<'py>>> {
    if unsafe { ffi::PyCoro_CheckExact(arg.as_ptr()) } != 0 {
        return Ok(Some(Kind::Coroutine));
    }
    // A sleep is taken over only once every argument passed this check, so
    // a rejected call leaves it as it was.
    if let Ok(s) = arg.cast::<Sleep>() {
        return Ok(Some(Kind::Sleep(s.clone())));
    }
    let imports = Imports::get(py)?;
    if imports.isfuture.bind(py).call1((arg,))?.is_truthy()?
        || imports.iscoroutine.bind(py).call1((arg,))?.is_truthy()?
        || arg.hasattr(intern!(py, "__await__"))?
    {
        return Ok(Some(Kind::Other));
    }
    Ok(None)
}

/// Close the coroutines among `args` so they do not warn "never awaited".
fn close_coroutines(args: &Bound<'_, PyTuple>) {
    for a in args.iter() {
        if unsafe { ffi::PyCoro_CheckExact(a.as_ptr()) } != 0 {
            let _ = a.call_method0("close");
        }
    }
}

/// The loop for `gather`, found as asyncio's `gather` of the running Python
/// finds it: the running loop; else the loop of the first argument if it is
/// a future; else the event loop asyncio asks for (`events._get_event_loop()`
/// on 3.11, `events.get_event_loop()` on 3.12+), which may be the thread's
/// current loop, a new one (with 3.12's `DeprecationWarning`), or
/// `RuntimeError('There is no current event loop ...')`.
fn gather_loop<'py>(py: Python<'py>, args: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
    if let Some(l) = awaitable::running_loop_opt(py) {
        return Ok(l);
    }
    if let Some(first) = args.iter().next() {
        if Imports::get(py)?
            .isfuture
            .bind(py)
            .call1((&first,))?
            .is_truthy()?
        {
            return py
                .import("asyncio.futures")?
                .call_method1(intern!(py, "_get_loop"), (first,));
        }
    }
    let events = py.import("asyncio.events")?;
    let get_event_loop = match events.getattr(intern!(py, "_get_event_loop")) {
        Ok(f) => f,
        Err(_) => events.getattr(intern!(py, "get_event_loop"))?,
    };
    get_event_loop.call0()
}

/// Every future argument must belong to `loop_` (checked before anything is
/// created, with asyncio's message).
fn check_future_loops(
    py: Python<'_>,
    args: &Bound<'_, PyTuple>,
    loop_: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let isfuture = Imports::get(py)?.isfuture.bind(py);
    for a in args.iter() {
        if unsafe { ffi::PyCoro_CheckExact(a.as_ptr()) } != 0 || a.is_instance_of::<Sleep>() {
            continue;
        }
        if isfuture.call1((&a,))?.is_truthy()?
            && !a.call_method0(intern!(py, "get_loop"))?.is(loop_)
        {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "The future belongs to a different loop than the one specified as the loop argument",
            ));
        }
    }
    Ok(())
}

/// gather(*aws, return_exceptions=False)
/// --
///
/// Run awaitables concurrently and return their results in argument order.
///
/// Like `asyncio.gather` of the running Python (3.12+ report children that
/// are already done without waiting a loop iteration); differences: the bookkeeping is
/// Rust; un-started `rustasync.sleep()` arguments go straight into the loop's
/// timer heap instead of being wrapped in Tasks; a non-awaitable argument (or
/// a future of another loop) is found before any Task is created or any
/// sleep taken over, so nothing is left running and the sleeps and futures
/// among the arguments are left as they were (the coroutines are closed, so
/// that they do not warn "never awaited").
///
/// With no running loop it takes the loop as asyncio's does: the first
/// argument's if that is a future, else the event loop asyncio asks for
/// (3.11: `events._get_event_loop()`, 3.12+: `get_event_loop()`), with the
/// same warning or error.
///
/// Coroutines are wrapped in Tasks on the loop; a repeated argument is
/// awaited once. The first exception propagates while the other children
/// keep running, unless `return_exceptions=True`, where exceptions (and
/// `CancelledError` for cancelled children) are returned in place.
///
/// Raises:
///     TypeError: an argument is not awaitable.
///     RuntimeError: no running loop and no current event loop (asyncio's
///         message).
///     ValueError: a future argument belongs to another loop.
///
/// Cancel safety: cancelling the returned future (or the task awaiting it)
/// cancels every child that is not done; it then ends with `CancelledError`.
/// A child cancelled from outside makes it raise `CancelledError` (or returns
/// one in place with `return_exceptions=True`).
#[pyfunction]
#[pyo3(
    signature = (*aws, return_exceptions=None),
    text_signature = "(*aws, return_exceptions=False)"
)]
pub fn gather<'py>(
    py: Python<'py>,
    aws: &Bound<'py, PyTuple>,
    return_exceptions: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    // Any object, read for its truth value, as asyncio's `if not
    // return_exceptions:` does.
    let return_exceptions = match return_exceptions {
        Some(flag) => flag.is_truthy()?,
        None => false,
    };
    if aws.is_empty() {
        let loop_ = gather_loop(py, aws)?;
        let fut = loop_.call_method0(intern!(py, "create_future"))?;
        fut.call_method1(intern!(py, "set_result"), (PyList::empty(py),))?;
        return Ok(fut);
    }
    // Classify every argument before creating anything.
    let mut kinds = Vec::with_capacity(aws.len());
    for a in aws.iter() {
        match classify(py, &a)? {
            Some(k) => kinds.push(k),
            None => {
                close_coroutines(aws);
                return Err(PyTypeError::new_err(
                    "An asyncio.Future, a coroutine or an awaitable is required",
                ));
            }
        }
    }
    let loop_ = match gather_loop(py, aws).and_then(|l| check_future_loops(py, aws, &l).map(|_| l))
    {
        Ok(l) => l,
        Err(e) => {
            close_coroutines(aws);
            return Err(e);
        }
    };
    let outer = Bound::new(
        py,
        GatheringFuture {
            loop_: loop_.clone().unbind(),
            return_exceptions,
            blocking: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                state: State::Pending,
                callbacks: Vec::new(),
                children: Vec::with_capacity(aws.len()),
                future_index: HashMap::new(),
                arg_child: Vec::with_capacity(aws.len()),
                nfinished: 0,
                cancel_requested: false,
                batches: Vec::new(),
                free_batches: Vec::new(),
                open: None,
                serial: 0,
                log_traceback: false,
                link: None,
                timers: None,
            }),
        },
    )?;
    let dedup = if aws.len() > 1 {
        Some(PyDict::new(py))
    } else {
        None
    };
    let create_task = loop_.getattr(intern!(py, "create_task"))?;
    let ensure_future = Imports::get(py)?.ensure_future.bind(py);
    let mut done_cb: Option<Bound<'py, ChildDone>> = None;
    let report_done_now = py.version_info() >= (3, 12);
    let mut done_now: Vec<usize> = Vec::new();
    // Consecutive sleep arguments: one batch, scheduled where the first
    // one's Task step would be (before anything else is).
    let mut sleeps: Vec<usize> = Vec::new();
    for (arg, kind) in aws.iter().zip(kinds) {
        if let Some(d) = &dedup {
            if let Some(i) = d.get_item(&arg)? {
                let i: usize = i.extract()?;
                outer.get().inner.lock().unwrap().arg_child.push(i);
                continue;
            }
        }
        let index = outer.get().inner.lock().unwrap().children.len();
        if let Some(d) = &dedup {
            d.set_item(&arg, index)?;
        }
        // A sleep that was started already is awaited through a Task, like
        // any awaitable.
        let kind = match kind {
            Kind::Sleep(s) if !s.get().adopt() => Kind::Other,
            kind => kind,
        };
        match kind {
            Kind::Sleep(s) => {
                // Its first step comes where its Task's would: next iteration,
                // with the sleep arguments next to it.
                let s = s.get();
                let phase = SleepPhase::Starting {
                    value: s.result.clone_ref(py),
                    delay: s.delay,
                };
                {
                    let mut inner = outer.get().inner.lock().unwrap();
                    inner.children.push(Slot::new(Child::Sleep(phase)));
                    inner.arg_child.push(index);
                }
                sleeps.push(index);
            }
            Kind::Coroutine | Kind::Other => {
                // A Task's first step, or a done future's callbacks, may be
                // scheduled here.
                if !sleeps.is_empty() {
                    GatheringFuture::start_batch(&outer, std::mem::take(&mut sleeps))?;
                }
                let fut = match kind {
                    Kind::Coroutine => create_task.call1((&arg,))?,
                    _ => {
                        ensure_future.call((&arg,), Some(&[("loop", &loop_)].into_py_dict(py)?))?
                    }
                };
                if !fut.is(&arg) {
                    let _ = fut.setattr(intern!(py, "_log_destroy_pending"), false);
                }
                {
                    let mut inner = outer.get().inner.lock().unwrap();
                    inner.future_index.insert(fut.as_ptr() as usize, index);
                    inner
                        .children
                        .push(Slot::new(Child::Future(fut.clone().unbind())));
                    inner.arg_child.push(index);
                }
                if report_done_now && fut.call_method0(intern!(py, "done"))?.is_truthy()? {
                    // Python 3.12+: children already done (an eager task
                    // factory, a finished future) are reported once the
                    // outer future exists, without a loop iteration.
                    done_now.push(index);
                    continue;
                }
                if done_cb.is_none() {
                    done_cb = Some(Bound::new(
                        py,
                        ChildDone {
                            outer: outer.clone().unbind(),
                        },
                    )?);
                }
                fut.call_method1(
                    intern!(py, "add_done_callback"),
                    (done_cb.as_ref().unwrap(),),
                )?;
            }
        }
    }
    if !sleeps.is_empty() {
        GatheringFuture::start_batch(&outer, sleeps)?;
    }
    for index in done_now {
        GatheringFuture::child_done(&outer, index)?;
    }
    Ok(outer.into_any())
}

impl GatheringFuture {
    /// asyncio's `Future.__del__`: a failed gather whose exception nobody
    /// retrieved reports it to the loop's exception handler.
    fn log_unretrieved(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let me = slf.get();
        let exc = {
            // A finaliser never waits: if the lock is taken, skip the report.
            let Ok(mut inner) = me.inner.try_lock() else {
                return;
            };
            if !std::mem::replace(&mut inner.log_traceback, false) {
                return;
            }
            match &inner.state {
                State::Exception { exc, .. } => exc.clone_ref(py),
                _ => return,
            }
        };
        let handler = me
            .loop_
            .bind(py)
            .getattr(intern!(py, "call_exception_handler"));
        let report = handler
            .as_ref()
            .map_err(|e| e.clone_ref(py))
            .and_then(|handler| {
                let context = PyDict::new(py);
                context.set_item(
                    intern!(py, "message"),
                    // asyncio's words, with its class name, so that logs and
                    // handlers that look for them find them.
                    "_GatheringFuture exception was never retrieved",
                )?;
                context.set_item(intern!(py, "exception"), exc)?;
                context.set_item(intern!(py, "future"), slf)?;
                handler.call1((context,))
            });
        if let Err(e) = report {
            e.write_unraisable(py, handler.ok().as_ref());
        }
    }
}

/// `tp_finalize`: run once per object, by the collector or by [`dealloc`],
/// with the current exception kept aside.
#[cfg(not(Py_LIMITED_API))]
unsafe extern "C" fn finalize(obj: *mut ffi::PyObject) {
    #[cfg(Py_3_12)]
    let saved = ffi::PyErr_GetRaisedException();
    #[cfg(not(Py_3_12))]
    let saved = {
        let (mut t, mut v, mut tb) = (
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        ffi::PyErr_Fetch(&mut t, &mut v, &mut tb);
        (t, v, tb)
    };
    let _ = std::panic::catch_unwind(|| {
        Python::attach(|py| {
            let slf = pyo3::Borrowed::from_ptr(py, obj).cast_unchecked::<GatheringFuture>();
            GatheringFuture::log_unretrieved(&slf);
        })
    });
    #[cfg(Py_3_12)]
    ffi::PyErr_SetRaisedException(saved);
    #[cfg(not(Py_3_12))]
    ffi::PyErr_Restore(saved.0, saved.1, saved.2);
}

/// PyO3's `tp_dealloc` for the type, which does not run finalisers.
#[cfg(not(Py_LIMITED_API))]
static PYO3_DEALLOC: std::sync::OnceLock<ffi::destructor> = std::sync::OnceLock::new();

/// `tp_dealloc`: run the finaliser first (it may resurrect the object, as
/// asyncio's handler does when it keeps the context), then PyO3's.
#[cfg(not(Py_LIMITED_API))]
unsafe extern "C" fn dealloc(obj: *mut ffi::PyObject) {
    if ffi::PyObject_CallFinalizerFromDealloc(obj) < 0 {
        return;
    }
    if let Some(pyo3_dealloc) = PYO3_DEALLOC.get() {
        pyo3_dealloc(obj);
    }
}

/// Give the type a finaliser, as asyncio's Future has (full API only).
fn patch_finalizer(py: Python<'_>) {
    #[cfg(not(Py_LIMITED_API))]
    unsafe {
        let tp = py.get_type::<GatheringFuture>().as_type_ptr();
        // The module is initialised once per process: patch once.
        if let Some(pyo3_dealloc) = (*tp).tp_dealloc {
            if PYO3_DEALLOC.set(pyo3_dealloc).is_ok() {
                (*tp).tp_dealloc = Some(dealloc);
                (*tp).tp_finalize = Some(finalize);
                ffi::PyType_Modified(tp);
            }
        }
    }
    #[cfg(Py_LIMITED_API)]
    let _ = py;
}

/// Register the gather types and function.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<GatheringFuture>()?;
    m.add_function(wrap_pyfunction!(gather, m)?)?;
    awaitable::patch_am_send::<GatheringFuture>(m.py());
    awaitable::patch_am_await_self::<GatheringFuture>(m.py());
    patch_finalizer(m.py());
    Ok(())
}

//! Sleep children: `rustasync.sleep` arguments adopted by a gather.
//!
//! Stock asyncio wraps each in a Task whose steps (start, yield or arm a
//! timer, wake up, finish) and done-callback each take a loop iteration, at
//! a place in the loop's queue. rustasync keeps no Task: each child has a
//! [`SleepPhase`] that only moves forward, and children whose steps would
//! sit next to each other in the queue move together in one [`SleepSteps`]
//! batch, a single loop callback per iteration. Timed children wait in the
//! loop's timer heap (`crate::timers`), which tells the gather when they
//! expire.

use pyo3::prelude::*;
use pyo3::{intern, PyTraverseError, PyVisit};

use super::children::{Child, Slot};
use super::future::GatheringFuture;
use super::state::{Inner, State};
use crate::timers::{GatherLink, LoopTimers, Waker};

/// Where a sleep child is among the steps a Task wrapping `asyncio.sleep`
/// would take. A child in `Starting`, `Ready`, `Cancelling`, or finished and
/// not yet reported, belongs to one [`SleepSteps`] batch, which runs its next
/// step at the place in the loop's queue where the Task's would be.
pub(super) enum SleepPhase {
    /// Its first step is due: a zero delay then yields once, a positive one
    /// arms its timer (stock's Task takes its deadline at that step, an
    /// iteration after `gather()`).
    Starting { value: Py<PyAny>, delay: f64 },
    /// Waiting for its deadline: in the loop's timer heap under `timer` (an
    /// infinite delay too: its entry is never due).
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
pub(super) struct TimerKey {
    pub(super) step: u64,
    pub(super) delay_bits: u64,
}

/// Why the batch sleep children currently join was scheduled. Children join
/// it only while nothing else was scheduled in between, as their Tasks'
/// steps would sit next to each other in the loop's queue.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Opening {
    /// Consecutive sleep arguments of `gather()`.
    Creation,
    /// Waiting children cancelled by one `cancel()` call.
    Cancel(u64),
    /// Children whose timers expired together.
    Expiry(TimerKey),
}

impl SleepPhase {
    /// Move to the phase `next` makes of the current one.
    pub(super) fn advance(&mut self, next: impl FnOnce(SleepPhase) -> SleepPhase) {
        let old = std::mem::replace(self, SleepPhase::Cancelled(None));
        *self = next(old);
    }

    /// Whether the child has a live entry in the loop's timer heap.
    pub(super) fn in_timer_heap(&self) -> bool {
        matches!(self, SleepPhase::Waiting { timer: Some(_), .. })
    }
}

/// What `cancel()` did to one sleep child.
pub(super) enum SleepCancel {
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
    pub(super) fn cancel(&mut self, py: Python<'_>, msg: Option<&Py<PyAny>>) -> SleepCancel {
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

impl Inner {
    /// A new batch of `members`, open for `opening`; returns its id (the
    /// caller schedules it, unlocked).
    pub(super) fn new_batch(&mut self, members: Vec<usize>, opening: Opening) -> usize {
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
    pub(super) fn join_batch(&mut self, index: usize, opening: Opening) -> Option<usize> {
        match self.open {
            Some((o, id)) if o == opening => {
                self.batches[id].push(index);
                None
            }
            _ => Some(self.new_batch(vec![index], opening)),
        }
    }
}

impl GatheringFuture {
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
    pub(super) fn schedule_batch(slf: &Bound<'_, Self>, id: usize) -> PyResult<()> {
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
    pub(super) fn start_batch(slf: &Bound<'_, Self>, members: Vec<usize>) -> PyResult<()> {
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
                    // `inf` too: its entry (never due) keeps the gather, and the
                    // Task awaiting it, reachable from the loop, as stock's
                    // `call_later(inf)` handle of a sleep Task does.
                    let timer = (delay > 0.0).then_some(TimerKey {
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
}

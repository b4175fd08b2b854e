//! One timer structure per event loop for every rustasync sleep.
//!
//! Stock `asyncio.sleep` costs a Python `TimerHandle`, a `heappush` and a
//! handle run per sleep. rustasync keeps all of a loop's sleeps in one Rust
//! binary heap and arms a single `loop.call_at` for the earliest deadline.
//! When it fires, every expired entry is woken in deadline order, then FIFO
//! for equal deadlines, as stock does; then the next deadline is armed.
//!
//! Deadlines are on the loop's own clock (`loop.time()`, `loop.call_at`), so
//! `asyncio.timeout`, `wait_for` and tools that patch the loop clock keep
//! working. Cancelled entries are skipped when they come up, and the heap is
//! rebuilt without them once they are the majority (as asyncio does with its
//! own scheduled handles).
//!
//! The loop owns its timers through the armed handle; the thread's registry
//! only finds them (weakly). A closed loop drops its scheduled handles, and
//! with them its timers once no sleep refers to them; a collected loop takes
//! them with it.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::{PyWeakrefMethods, PyWeakrefReference};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::gather::GatheringFuture;

/// A gather's hold on the heap entries of its sleep children.
///
/// The entries reach the gather only through this link, which the gather
/// cuts once it is done: from then on its entries are dead, and the heap no
/// longer keeps the gather (and its results) alive until their deadlines.
pub struct GatherLink {
    outer: Mutex<Option<Py<GatheringFuture>>>,
}

impl GatherLink {
    pub fn new(outer: Py<GatheringFuture>) -> Arc<Self> {
        Arc::new(GatherLink {
            outer: Mutex::new(Some(outer)),
        })
    }

    /// Cut the link; returns the reference it held (drop it unlocked).
    pub fn cut(&self) -> Option<Py<GatheringFuture>> {
        self.outer.lock().ok().and_then(|mut o| o.take())
    }

    fn get(&self, py: Python<'_>) -> Option<Py<GatheringFuture>> {
        let o = self.outer.lock().ok()?;
        o.as_ref().map(|g| g.clone_ref(py))
    }
}

/// What to wake when a deadline passes.
pub enum Waker {
    /// Set the result of an asyncio future a Task waits on (unless it is
    /// done). The value the sleep returns stays with the sleep, so a
    /// cancelled entry holds no user object while it waits in the heap.
    Future { fut: Py<PyAny> },
    /// A sleep adopted by `gather` as its child `index`.
    Gather { link: Arc<GatherLink>, index: usize },
}

impl Waker {
    fn is_cancelled(&self, py: Python<'_>) -> bool {
        match self {
            Waker::Future { fut } => fut
                .bind(py)
                .call_method0(intern!(py, "done"))
                .and_then(|d| d.is_truthy())
                .unwrap_or(true),
            Waker::Gather { link, index } => match link.get(py) {
                Some(outer) => !outer.get().sleep_child_pending(*index),
                None => true,
            },
        }
    }

    /// Wake the sleeper; `Ok(false)` if it had been cancelled meanwhile.
    fn fire(self, py: Python<'_>) -> PyResult<bool> {
        match self {
            Waker::Future { fut } => {
                let fut = fut.bind(py);
                if fut.call_method0(intern!(py, "done"))?.is_truthy()? {
                    return Ok(false);
                }
                fut.call_method1(intern!(py, "set_result"), (py.None(),))?;
                Ok(true)
            }
            Waker::Gather { link, index } => match link.get(py) {
                Some(outer) if outer.get().sleep_child_pending(index) => {
                    GatheringFuture::sleep_child_expired(outer.bind(py), index)?;
                    Ok(true)
                }
                _ => Ok(false),
            },
        }
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            Waker::Future { fut } => visit.call(fut),
            // The link is shared by several entries and holds one reference:
            // visiting it from each entry would over-count. Not visiting it
            // only makes the gather look externally referenced, which it is
            // (the thread's timer registry is not seen by the collector).
            Waker::Gather { .. } => Ok(()),
        }
    }
}

struct Entry {
    when: f64,
    seq: u64,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed, so `BinaryHeap` (a max-heap) pops the earliest deadline,
    /// then the earliest inserted.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .when
            .total_cmp(&self.when)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(Default)]
struct Heap {
    entries: BinaryHeap<Entry>,
    seq: u64,
    /// Deadline and handle of the armed `loop.call_at`, if any.
    armed: Option<(f64, Py<PyAny>)>,
    /// Entries known to be cancelled but still in the heap.
    cancelled: usize,
}

/// The timers of one event loop; called by the loop when the armed deadline
/// passes.
///
/// Ownership: the loop owns its timers, through the armed `call_at` handle
/// (armed whenever an entry is pending, at `inf` for sleeps that never
/// expire, as stock's `call_later(inf)` does). The thread's registry holds
/// them only weakly, so they never keep a loop alive, and a task sleeping
/// on them is reachable from its loop exactly as with stock `asyncio.sleep`.
#[pyclass(frozen, weakref, module = "rustasync._rustasync", name = "_LoopTimers")]
pub struct LoopTimers {
    loop_: Py<PyAny>,
    resolution: f64,
    heap: Mutex<Heap>,
}

/// Rebuild the heap without cancelled entries once they pass this share.
const COMPACT_MIN: usize = 64;

impl LoopTimers {
    fn new(loop_: &Bound<'_, PyAny>) -> Self {
        let py = loop_.py();
        let resolution = loop_
            .getattr(intern!(py, "_clock_resolution"))
            .and_then(|r| r.extract::<f64>())
            .unwrap_or(1e-9);
        LoopTimers {
            loop_: loop_.clone().unbind(),
            resolution,
            heap: Mutex::new(Heap::default()),
        }
    }

    /// The timers of `loop_`, created on first use.
    pub fn for_loop<'py>(loop_: &Bound<'py, PyAny>) -> PyResult<Bound<'py, LoopTimers>> {
        let py = loop_.py();
        let ptr = loop_.as_ptr() as usize;
        // Live timers hold their loop strongly, so while a slot's timers
        // exist no other loop can have that address.
        let found = REGISTRY.with(|reg| {
            let reg = reg.borrow();
            reg.iter()
                .filter(|s| s.loop_ptr == ptr)
                .find_map(|s| s.timers.bind(py).upgrade_as::<LoopTimers>().ok().flatten())
        });
        if let Some(t) = found {
            return Ok(t);
        }
        let timers = Bound::new(py, LoopTimers::new(loop_))?;
        let weak = PyWeakrefReference::new(&timers)?.unbind();
        // A miss: forget the slots of timers that are gone (dropped outside
        // the borrow).
        let stale: Vec<Slot> = REGISTRY.with(|reg| {
            let mut reg = reg.borrow_mut();
            let (live, stale) = std::mem::take(&mut *reg)
                .into_iter()
                .partition(|s| s.timers.bind(py).upgrade().is_some());
            *reg = live;
            reg.push(Slot {
                loop_ptr: ptr,
                timers: weak,
            });
            stale
        });
        drop(stale);
        Ok(timers)
    }

    /// The loop's current time.
    pub fn now(&self, py: Python<'_>) -> PyResult<f64> {
        self.loop_
            .bind(py)
            .call_method0(intern!(py, "time"))?
            .extract()
    }

    /// Wake `waker` once the loop clock reaches `when`.
    pub fn insert(slf: &Bound<'_, Self>, when: f64, waker: Waker) -> PyResult<()> {
        let me = slf.get();
        let rearm = {
            let mut heap = me.heap.lock().unwrap();
            let seq = heap.seq;
            heap.seq += 1;
            heap.entries.push(Entry { when, seq, waker });
            match &heap.armed {
                Some((armed_when, _)) if *armed_when <= when => None,
                _ => heap.armed.take().map(|(_, h)| Some(h)).or(Some(None)),
            }
        };
        if let Some(old) = rearm {
            if let Some(handle) = old {
                handle
                    .bind(slf.py())
                    .call_method0(intern!(slf.py(), "cancel"))?;
            }
            Self::arm(slf, when)?;
        }
        Ok(())
    }

    /// Note that one entry was cancelled; compact when they dominate.
    pub fn note_cancelled(&self, py: Python<'_>) {
        let old = {
            let mut heap = self.heap.lock().unwrap();
            heap.cancelled += 1;
            if heap.cancelled >= COMPACT_MIN && heap.cancelled * 2 > heap.entries.len() {
                heap.cancelled = 0;
                std::mem::take(&mut heap.entries)
            } else {
                return;
            }
        };
        // Sorted out unlocked: telling a cancelled entry asks Python, and
        // dropping one may run a finaliser that sleeps again.
        let (live, dead): (Vec<Entry>, Vec<Entry>) = old
            .into_vec()
            .into_iter()
            .partition(|e| !e.waker.is_cancelled(py));
        self.heap.lock().unwrap().entries.extend(live);
        drop(dead);
    }

    fn arm(slf: &Bound<'_, Self>, when: f64) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let handle = me
            .loop_
            .bind(py)
            .call_method1(intern!(py, "call_at"), (when, slf))?;
        let old = me
            .heap
            .lock()
            .unwrap()
            .armed
            .replace((when, handle.unbind()));
        drop(old);
        Ok(())
    }

    /// Number of entries in the heap (cancelled ones included).
    pub fn pending(&self) -> usize {
        self.heap.lock().unwrap().entries.len()
    }
}

#[pymethods]
impl LoopTimers {
    /// Run by the loop when the armed deadline passes: wake every expired
    /// sleep in deadline order, then arm the next deadline.
    fn __call__(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let end = me.now(py)? + me.resolution;
        let mut due = Vec::new();
        // The handle that just ran, dropped unlocked.
        let fired;
        let next = {
            let mut heap = me.heap.lock().unwrap();
            // The loop decided the armed deadline is due even if its clock
            // reads a hair earlier (uvloop rounds to milliseconds).
            fired = heap.armed.take();
            let armed = fired.as_ref().map(|(w, _)| *w).unwrap_or(f64::NEG_INFINITY);
            let limit = if armed >= end { armed } else { end };
            while let Some(top) = heap.entries.peek() {
                if top.when < limit || top.when <= armed {
                    due.push(heap.entries.pop().unwrap().waker);
                } else {
                    break;
                }
            }
            heap.entries.peek().map(|e| e.when)
        };
        drop(fired);
        if let Some(when) = next {
            Self::arm(slf, when)?;
        }
        let mut first_err = None;
        let mut were_cancelled = 0;
        for waker in due {
            match waker.fire(py) {
                Ok(true) => {}
                Ok(false) => were_cancelled += 1,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if were_cancelled > 0 {
            // Only entries that had been counted as cancelled leave the count.
            let mut heap = me.heap.lock().unwrap();
            heap.cancelled = heap
                .cancelled
                .saturating_sub(were_cancelled)
                .min(heap.entries.len());
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn __repr__(&self) -> String {
        format!("<rustasync loop timers: {} pending>", self.pending())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        if let Ok(heap) = self.heap.try_lock() {
            for e in heap.entries.iter() {
                e.waker.traverse(&visit)?;
            }
            if let Some((_, h)) = &heap.armed {
                visit.call(h)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        // Drop the entries outside the lock: their finalisers may call back in.
        let old = self
            .heap
            .lock()
            .ok()
            .map(|mut heap| (std::mem::take(&mut heap.entries), heap.armed.take()));
        drop(old);
    }
}

struct Slot {
    loop_ptr: usize,
    timers: Py<PyWeakrefReference>,
}

thread_local! {
    /// The timers of the loops that run in this thread (usually one), held
    /// weakly: each loop owns its own.
    static REGISTRY: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

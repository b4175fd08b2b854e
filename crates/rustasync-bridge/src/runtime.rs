//! Getting results back onto an asyncio loop: the per-loop wakeup batcher.
//!
//! Work finished on another thread (a tokio worker, a plain thread) must
//! never run on the loop from that thread. It is queued as a [`Completion`]
//! on the loop's [`LoopWaker`]; the first completion of a burst (an atomic
//! "scheduled" flag) wakes the loop once, and a drain callback on the loop
//! thread runs every queued completion. A burst of N completions costs one
//! wakeup, not N.
//!
//! How the loop is woken:
//!
//! * Normally through the waker's own socket pair, whose reading end is
//!   registered with `loop.add_reader`: the waking thread writes one byte.
//!   It never touches the interpreter, so a tokio worker never waits for
//!   it, and a thread still waking a loop while the interpreter shuts down
//!   is harmless. The write also costs less than `call_soon_threadsafe`.
//! * Where `add_reader` is not available, with one `call_soon_threadsafe`
//!   per burst: `loop.is_closed()` is checked first and the `RuntimeError`
//!   of a loop closed in between is swallowed. Threads not attached to the
//!   interpreter leave that call to one waker thread.
//!
//! A completion raised on the loop's own thread runs at once: no hop.
//!
//! Nothing is ever scheduled on a closed loop: its reader is gone with its
//! selector, so a wakeup byte is never read and the completions queued for
//! it are simply never run (they are bounded by the waiters it had).

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Wake;

use pyo3::exceptions::{PyNotImplementedError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyCFunction, PyWeakrefMethods, PyWeakrefReference};

/// Something to finish on the loop thread, attached to the interpreter.
pub trait Completion: Send + Sync + 'static {
    fn complete(self: Arc<Self>, py: Python<'_>);

    /// Its loop is closed or gone: `complete` will never run. Called with no
    /// lock of ours held; must not call into Python.
    fn abandon(self: Arc<Self>) {}
}

/// A small per-thread id that is cheaper to read than `ThreadId`.
fn thread_key() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local!(static KEY: Cell<u64> = const { Cell::new(0) });
    KEY.with(|k| {
        if k.get() == 0 {
            k.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        k.get()
    })
}

/// How long a drain may be due before a push writes its byte again.
const REWAKE_MS: u64 = 5;

/// Milliseconds since the first call: cheap, monotonic.
fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

#[cfg(unix)]
type Socket = std::os::unix::net::UnixStream;

/// The socket pair whose reading end the loop watches.
struct Signal {
    #[cfg(unix)]
    rx: Socket,
    #[cfg(unix)]
    tx: Socket,
}

impl Signal {
    #[cfg(unix)]
    fn new() -> std::io::Result<Self> {
        let (rx, tx) = Socket::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        Ok(Signal { rx, tx })
    }

    #[cfg(not(unix))]
    fn new() -> std::io::Result<Self> {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    fn fd(&self) -> i64 {
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            self.rx.as_raw_fd() as i64
        }
        #[cfg(not(unix))]
        unreachable!()
    }

    fn notify(&self) {
        // A full buffer means a wakeup is already pending: fine to drop.
        #[cfg(unix)]
        let _ = (&self.tx).write(&[1]);
    }

    fn clear(&self) {
        #[cfg(unix)]
        {
            let mut buf = [0u8; 64];
            while let Ok(n) = (&self.rx).read(&mut buf) {
                if n < buf.len() {
                    break;
                }
            }
        }
    }
}

/// The wakeup batcher of one asyncio event loop.
///
/// It holds its loop only weakly: the loop owns the waker (through the
/// reader callback it has registered), never the other way round, so a
/// dropped loop is collected and its socket pair closed with it.
pub struct LoopWaker {
    event_loop: Py<PyWeakrefReference>,
    /// The loop's address, for a cheap cache lookup (confirmed through the
    /// weak reference, since an address can be reused once a loop is gone).
    loop_ptr: usize,
    thread: u64,
    /// The fork generation the waker was made in: a child never reuses it.
    generation: u64,
    pending: Mutex<Vec<Arc<dyn Completion>>>,
    /// Work in progress on the loop that must hear of its death (tasks
    /// awaited from Rust): abandoned when the waker is killed.
    watchers: Mutex<Vec<Weak<dyn Completion>>>,
    scheduled: AtomicBool,
    /// When `scheduled` was last set or its byte written again
    /// ([`monotonic_ms`]).
    scheduled_at: AtomicU64,
    dead: AtomicBool,
    /// `None`: the loop has no `add_reader`; use `call_soon_threadsafe`.
    signal: Option<Signal>,
    drain: PyOnceLock<Py<PyAny>>,
    me: Weak<LoopWaker>,
}

impl LoopWaker {
    /// A waker for `event_loop`, created on the loop's thread.
    fn new(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<Arc<Self>> {
        let weak = PyWeakrefReference::new(event_loop)?.unbind();
        let make = |signal: Option<Signal>| {
            Arc::new_cyclic(|me| LoopWaker {
                event_loop: weak.clone_ref(py),
                loop_ptr: event_loop.as_ptr() as usize,
                thread: thread_key(),
                generation: fork_generation(),
                pending: Mutex::new(Vec::new()),
                watchers: Mutex::new(Vec::new()),
                scheduled: AtomicBool::new(false),
                scheduled_at: AtomicU64::new(0),
                dead: AtomicBool::new(false),
                signal,
                drain: PyOnceLock::new(),
                me: me.clone(),
            })
        };
        let Ok(sig) = Signal::new() else {
            return Ok(make(None));
        };
        let fd = sig.fd();
        let w = make(Some(sig));
        // The loop owns the reader, the reader owns the waker: the waker
        // (and its sockets) lives until the loop drops the reader, on close
        // or when the loop itself is collected.
        let keep = ReaderGuard(w.clone());
        let reader = PyCFunction::new_closure(py, None, None, move |args, _kw| {
            keep.0.run_pending(args.py());
        })?;
        match event_loop.call_method1(pyo3::intern!(py, "add_reader"), (fd, reader)) {
            Ok(_) => Ok(w),
            Err(e) if e.is_instance_of::<PyNotImplementedError>(py) => Ok(make(None)),
            Err(e) => Err(e),
        }
    }

    /// The loop, unless it has been collected.
    pub fn event_loop<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        self.event_loop.bind(py).upgrade()
    }

    fn is_for(&self, py: Python<'_>, lp: &Bound<'_, PyAny>) -> bool {
        self.loop_ptr == lp.as_ptr() as usize
            && self.generation == fork_generation()
            && !self.dead.load(Ordering::Acquire)
            && self.event_loop(py).is_some_and(|l| l.is(lp))
    }

    /// The calling thread is the one that made the waker (its loop's), in
    /// this process.
    pub(crate) fn on_own_thread(&self) -> bool {
        thread_key() == self.thread && self.generation == fork_generation()
    }

    /// Run `c` on the loop thread as soon as possible.
    pub fn push(&self, c: Arc<dyn Completion>) {
        if self.dead.load(Ordering::Acquire) {
            return abandon_all(vec![c]);
        }
        if self.on_own_thread() {
            // At exit, left undone (see `exit`): never dropped either, as
            // that could run Python code too.
            let Some(_beneath) = crate::exit::python_beneath() else {
                return std::mem::forget(c);
            };
            // Possibly from a `Drop` while an exception propagates (a ticket
            // dropped in a dealloc hands its item on): keep it aside.
            Python::attach(|py| crate::awaitable::with_exception_aside(py, || c.complete(py)));
            return;
        }
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(c);
        if self.dead.load(Ordering::Acquire) {
            // Killed between the check above and the push: nobody else will
            // take what we just queued.
            return self.kill();
        }
        if self.scheduled.swap(true, Ordering::AcqRel) {
            // A drain is due. Should its byte have been consumed without a
            // drain (the socket is shared with any process forked from this
            // one), the loop would never be woken again: once it has been
            // due for a while, a push writes again (at most one extra byte
            // per `REWAKE_MS`; never one per completion).
            if let Some(sig) = &self.signal {
                let now = monotonic_ms();
                let since = self.scheduled_at.load(Ordering::Relaxed);
                if now.saturating_sub(since) >= REWAKE_MS
                    && self
                        .scheduled_at
                        .compare_exchange(since, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    sig.notify();
                }
            }
        } else {
            self.scheduled_at.store(monotonic_ms(), Ordering::Relaxed);
            // Only a thread already attached asks Python (never one that
            // would have to wait for the interpreter, nor one at exit).
            let attached = unsafe { pyo3::ffi::PyGILState_Check() } == 1
                && Python::try_attach(|_| ()).is_some();
            if attached
                && !Python::attach(|py| {
                    crate::awaitable::with_exception_aside(py, || self.is_live(py))
                })
            {
                // A thread that can ask finds the loop closed: its waiters
                // will never run; give their places (and items) back.
                return self.kill();
            }
            if let Some(sig) = &self.signal {
                sig.notify();
            } else if attached {
                Python::attach(|py| self.schedule(py));
            } else if let Some(me) = self.me.upgrade() {
                schedule_from_waker_thread(me);
            }
        }
    }

    /// The `call_soon_threadsafe` fallback.
    fn schedule(&self, py: Python<'_>) {
        let Some(lp) = self.event_loop(py) else {
            return self.kill();
        };
        if loop_is_closed(&lp) {
            return self.kill();
        }
        let drain = self.drain.get_or_init(py, || {
            let me = self.me.clone();
            PyCFunction::new_closure(py, None, None, move |args, _kw| {
                if let Some(w) = me.upgrade() {
                    w.run_pending(args.py());
                }
            })
            .expect("creating the drain callback")
            .into_any()
            .unbind()
        });
        if let Err(e) = lp.call_method1(pyo3::intern!(py, "call_soon_threadsafe"), (drain,)) {
            // Closed between the check and the call: the documented race.
            if !e.is_instance_of::<PyRuntimeError>(py) {
                e.write_unraisable(py, Some(&lp));
            }
            self.kill();
        }
    }

    fn kill(&self) {
        self.dead.store(true, Ordering::Release);
        // Abandoned and dropped outside the lock: a completion may hold
        // Python objects, and abandoning one may wake others.
        let mut dropped =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let watchers =
            std::mem::take(&mut *self.watchers.lock().unwrap_or_else(|e| e.into_inner()));
        dropped.extend(watchers.iter().filter_map(Weak::upgrade));
        abandon_all(dropped);
    }

    /// Have `c` abandoned when the loop is found dead (closed, collected,
    /// or left behind by a fork), at once if it is already. Held weakly:
    /// nothing is kept alive by being watched.
    pub fn watch(&self, c: Weak<dyn Completion>) {
        if !self.dead.load(Ordering::Acquire) {
            let mut w = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
            if w.len() >= 64 && w.len().is_power_of_two() {
                w.retain(|x| x.strong_count() > 0);
            }
            w.push(c.clone());
            // Killed meanwhile: kill() took the list before this push.
            if !self.dead.load(Ordering::Acquire) {
                return;
            }
        }
        if let Some(c) = c.upgrade() {
            abandon_all(vec![c]);
        }
    }

    /// The drain: runs on the loop thread.
    ///
    /// Once the interpreter is exiting it runs nothing (see `exit`): what
    /// is left in the batch is leaked, since dropping it could run Python
    /// code as well.
    fn run_pending(&self, py: Python<'_>) {
        // A forked child still running the parent's loop: the socket pair is
        // shared with the parent, whose wakeups these bytes are. Left for it
        // (the reader stays registered: the child shares the parent's
        // epoll instance, which unregistering would change for both).
        if self.generation != fork_generation() {
            return;
        }
        if let Some(sig) = &self.signal {
            sig.clear();
        }
        let Some(_beneath) = crate::exit::python_beneath() else {
            return;
        };
        self.scheduled.store(false, Ordering::Release);
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut batch = batch.into_iter();
        while let Some(c) = batch.next() {
            if crate::exit::exiting() {
                std::mem::forget(c);
                return batch.for_each(std::mem::forget);
            }
            c.complete(py);
        }
    }
}

/// Owned by the loop's reader callback: when the loop drops the reader (it
/// closed its selector, or it was collected), the waker's loop is gone for
/// good, and every wakeup still pending or yet to come is abandoned.
struct ReaderGuard(Arc<LoopWaker>);

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.0.kill();
    }
}

/// Abandon completions without recursion: abandoning one (a receiver giving
/// its item back) can wake the next waiter of the same dead loop, whose
/// abandonment is then queued here instead of nesting. Thousands of waiters
/// on a closed loop cost a loop, not a deep stack.
fn abandon_all(cs: Vec<Arc<dyn Completion>>) {
    thread_local! {
        static QUEUE: RefCell<Option<Vec<Arc<dyn Completion>>>> = const { RefCell::new(None) };
    }
    let nested = QUEUE
        .try_with(|q| match &mut *q.borrow_mut() {
            Some(queue) => {
                queue.extend(cs.iter().cloned());
                true
            }
            None => false,
        })
        .unwrap_or(false);
    if nested {
        return;
    }
    let _ = QUEUE.try_with(|q| *q.borrow_mut() = Some(Vec::new()));
    let mut next = cs;
    while !next.is_empty() {
        for c in next {
            c.abandon();
        }
        next = QUEUE
            .try_with(|q| {
                q.borrow_mut()
                    .as_mut()
                    .map(std::mem::take)
                    .unwrap_or_default()
            })
            .unwrap_or_default();
    }
    let _ = QUEUE.try_with(|q| *q.borrow_mut() = None);
}

/// Schedule a drain from a thread that is not attached to the interpreter
/// (a tokio worker, a blocked thread). Attaching there could wait up to the
/// interpreter's switch interval while the loop thread runs Python, stalling
/// that thread's other work; one waker thread does the waiting instead. A
/// forked child starts its own waker thread on first use.
fn schedule_from_waker_thread(w: Arc<LoopWaker>) {
    use std::sync::mpsc;
    struct Slot {
        generation: u64,
        tx: Mutex<mpsc::Sender<Arc<LoopWaker>>>,
    }
    static SLOT: AtomicPtr<Slot> = AtomicPtr::new(std::ptr::null_mut());
    let generation = fork_generation();
    let slot = per_generation(
        &SLOT,
        generation,
        |s| s.generation,
        || {
            let (tx, rx) = mpsc::channel::<Arc<LoopWaker>>();
            std::thread::Builder::new()
                .name("rustasync-bridge-waker".into())
                .spawn(move || {
                    while let Ok(w) = rx.recv() {
                        Python::attach(|py| {
                            w.schedule(py);
                            // Whatever else queued up meanwhile, under one attach.
                            while let Ok(w) = rx.try_recv() {
                                w.schedule(py);
                            }
                        });
                    }
                })
                .ok()?;
            Some(Slot {
                generation,
                tx: Mutex::new(tx),
            })
        },
    );
    if let Some(slot) = slot {
        let _ = slot.tx.lock().unwrap_or_else(|e| e.into_inner()).send(w);
    }
}

/// The value in `slot` if it belongs to `generation`, else a new one from
/// `make`, installed there. A value of an older generation (a parent
/// process, before `fork()`) is leaked, never dropped: its threads do not
/// exist in this process. Values live for the rest of the process.
fn per_generation<T: 'static>(
    slot: &'static AtomicPtr<T>,
    generation: u64,
    gen_of: impl Fn(&T) -> u64,
    make: impl FnOnce() -> Option<T>,
) -> Option<&'static T> {
    let cur = slot.load(Ordering::Acquire);
    if let Some(v) = unsafe { cur.as_ref() } {
        if gen_of(v) == generation {
            return Some(v);
        }
    }
    let new = Box::into_raw(Box::new(make()?));
    match slot.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Some(unsafe { &*new }),
        Err(winner) => {
            // Another thread installed one first: use it; ours was never
            // shared (leaked rather than dropped, as its threads may run).
            unsafe { winner.as_ref() }
        }
    }
}

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Bumped in a child process right after `fork()`.
pub fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// Run by `os.register_at_fork(after_in_child=...)`: the child has none of
/// the parent's threads (tokio workers, the loop waker thread), so every
/// per-process resource is re-created lazily on next use.
fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::AcqRel);
    // The parent's wakers: their sockets are shared with the parent and
    // their loops are the parent's. Closed here (attached: this is a hook
    // run by `os.fork()`), never reused.
    let old = CACHE.try_with(|c| c.try_borrow_mut().map(|mut c| std::mem::take(&mut *c)));
    drop(old);
}

/// Register the fork hook with `os.register_at_fork`, once per process
/// (a forked child inherits the registration). Called on first use of the
/// loop wakers and of the bridge: before that there is nothing to reset.
pub fn ensure_fork_hook(py: Python<'_>) -> PyResult<()> {
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    if REGISTERED.load(Ordering::Acquire) {
        return Ok(());
    }
    // Attached: no other thread can get here meanwhile.
    REGISTERED.store(true, Ordering::Release);
    let os = py.import("os")?;
    if os.hasattr("register_at_fork")? {
        let hook = PyCFunction::new_closure(py, None, None, |_args, _kw| after_fork_in_child())?;
        let kw = pyo3::types::PyDict::new(py);
        kw.set_item("after_in_child", hook)?;
        os.call_method("register_at_fork", (), Some(&kw))?;
    }
    Ok(())
}

/// The crate's own tokio runtime: multi-threaded, with the time and I/O
/// drivers, created on first use, and created again in a forked child
/// (whose parent runtime has no threads).
///
/// Bridged futures run here unless the extension gave a runtime of its own
/// to [`init_with_handle`]; [`handle`] says which one is in use.
pub fn tokio_runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    struct Slot {
        generation: u64,
        rt: tokio::runtime::Runtime,
    }
    static SLOT: AtomicPtr<Slot> = AtomicPtr::new(std::ptr::null_mut());
    let generation = fork_generation();
    let mut err = None;
    let slot = per_generation(
        &SLOT,
        generation,
        |s| s.generation,
        || match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("rustasync-bridge-tokio")
            .build()
        {
            Ok(rt) => Some(Slot { generation, rt }),
            Err(e) => {
                err = Some(e);
                None
            }
        },
    );
    match slot {
        Some(s) => Ok(&s.rt),
        None => Err(PyRuntimeError::new_err(format!(
            "could not start the tokio runtime: {}",
            err.map(|e| e.to_string()).unwrap_or_default()
        ))),
    }
}

/// A runtime given by the extension, for the process it was given in.
struct GivenHandle {
    generation: u64,
    handle: tokio::runtime::Handle,
    /// Set when the runtime shuts down (it drops every task, a sentinel
    /// of ours included).
    shut_down: Arc<AtomicBool>,
}

/// Owned by a task that never ends: dropped when its runtime shuts down.
struct ShutDownSentinel(Arc<AtomicBool>);

impl Drop for ShutDownSentinel {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

static GIVEN: AtomicPtr<GivenHandle> = AtomicPtr::new(std::ptr::null_mut());

/// Run bridged futures on the runtime of `handle` (one the extension
/// already owns) instead of the crate's own runtime, from now on.
///
/// Futures already spawned stay where they are. The runtime must keep
/// running its tasks without anyone calling `block_on` (a multi-threaded
/// runtime, or a current-thread runtime driven by a thread of its own).
///
/// # Shutdown
///
/// A task that never ends is spawned on the runtime to hear of its
/// shutdown. Once the runtime shuts down, awaitables whose futures it was
/// running raise `RuntimeError` (the future was dropped unfinished), and so
/// do later calls, until another runtime is given.
///
/// # Fork
///
/// The handle is used only in the process that gave it. A forked child
/// has none of the parent runtime's threads, so there the crate falls back
/// to its own runtime, created on first use, unless the child gives a new
/// handle (for instance from an `os.register_at_fork(after_in_child=...)`
/// hook of the extension that makes a new runtime).
///
/// ```no_run
/// static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
/// let rt = RUNTIME.get_or_init(|| {
///     tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
/// });
/// rustasync_bridge::runtime::init_with_handle(rt.handle().clone());
/// ```
pub fn init_with_handle(handle: tokio::runtime::Handle) {
    let shut_down = Arc::new(AtomicBool::new(false));
    let sentinel = ShutDownSentinel(shut_down.clone());
    drop(handle.spawn(async move {
        let _sentinel = sentinel;
        std::future::pending::<()>().await
    }));
    let new = Box::into_raw(Box::new(GivenHandle {
        generation: fork_generation(),
        handle,
        shut_down,
    }));
    // The previous one is leaked, not dropped: a reader may still hold it.
    // Handles are small and given rarely.
    GIVEN.swap(new, Ordering::AcqRel);
}

/// [`init_with_handle`] with the handle of a runtime that lives for the
/// rest of the process.
pub fn init_with_runtime(runtime: &'static tokio::runtime::Runtime) {
    init_with_handle(runtime.handle().clone())
}

/// The runtime bridged futures are spawned on: the one given to
/// [`init_with_handle`] in this process, else the crate's own
/// ([`tokio_runtime`]).
///
/// Raises `RuntimeError` once the given runtime has shut down (until
/// another is given).
pub fn handle() -> PyResult<tokio::runtime::Handle> {
    if let Some(g) = unsafe { GIVEN.load(Ordering::Acquire).as_ref() } {
        if g.generation == fork_generation() {
            if g.shut_down.load(Ordering::Acquire) {
                return Err(PyRuntimeError::new_err(
                    "the tokio runtime given with init_with_handle has shut down",
                ));
            }
            return Ok(g.handle.clone());
        }
    }
    Ok(tokio_runtime()?.handle().clone())
}

/// `asyncio.get_running_loop()`.
pub fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static GET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    GET.import(py, "asyncio", "get_running_loop")?.call0()
}

struct CacheEntry {
    waker: Weak<LoopWaker>,
    /// Only for a loop without `add_reader`, whose waker nothing else owns
    /// between bursts. The waker holds its loop weakly, so this pins nothing.
    _keep: Option<Arc<LoopWaker>>,
}

thread_local! {
    /// The wakers of the loops this thread runs (usually one), most recent
    /// first. Entries are weak: the loops own their wakers.
    static CACHE: RefCell<Vec<CacheEntry>> = const { RefCell::new(Vec::new()) };
}

/// The running loop of this thread and its waker.
///
/// Raises `RuntimeError` when no loop is running, like
/// `asyncio.get_running_loop()`.
pub fn current_loop_waker(py: Python<'_>) -> PyResult<Arc<LoopWaker>> {
    let lp = running_loop(py)?;
    loop_waker(py, &lp)
}

/// The waker of `lp`, a loop running on this thread.
pub fn loop_waker(py: Python<'_>, lp: &Bound<'_, PyAny>) -> PyResult<Arc<LoopWaker>> {
    let found = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let i = c
            .iter()
            .position(|e| e.waker.upgrade().is_some_and(|w| w.is_for(py, lp)))?;
        if i != 0 {
            c.swap(0, i);
        }
        c[0].waker.upgrade()
    });
    if let Some(w) = found {
        return Ok(w);
    }
    ensure_fork_hook(py)?;
    // A miss: forget the wakers of loops that are gone or closed, then make
    // one for this loop. Dropped outside the borrow.
    // `is_live` calls `loop.is_closed()`, which may run Python code (a
    // `__del__` that uses the bridge): the entries are checked out of the
    // cache, then the live ones go back after what was added meanwhile.
    let entries: Vec<CacheEntry> = CACHE.with(|c| std::mem::take(&mut *c.borrow_mut()));
    let (live, stale): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|e| e.waker.upgrade().is_some_and(|w| w.is_live(py)));
    CACHE.with(|c| c.borrow_mut().extend(live));
    for e in stale {
        if let Some(w) = e.waker.upgrade() {
            w.kill();
        }
    }
    let w = LoopWaker::new(py, lp)?;
    let keep = w.signal.is_none().then(|| w.clone());
    CACHE.with(|c| {
        c.borrow_mut().insert(
            0,
            CacheEntry {
                waker: Arc::downgrade(&w),
                _keep: keep,
            },
        )
    });
    Ok(w)
}

/// `loop.is_closed()`, a loop that cannot answer counting as closed.
pub(crate) fn loop_is_closed(lp: &Bound<'_, PyAny>) -> bool {
    lp.call_method0(pyo3::intern!(lp.py(), "is_closed"))
        .and_then(|v| v.is_truthy())
        .unwrap_or(true)
}

/// Take what a `Mutex<Option<T>>` holds, a poisoned lock included.
pub(crate) fn take<T>(m: &std::sync::Mutex<Option<T>>) -> Option<T> {
    m.lock().unwrap_or_else(|e| e.into_inner()).take()
}

impl LoopWaker {
    /// Its loop still exists, is open, and belongs to this process.
    fn is_live(&self, py: Python<'_>) -> bool {
        if self.generation != fork_generation() || self.dead.load(Ordering::Acquire) {
            return false;
        }
        self.event_loop(py).is_some_and(|lp| !loop_is_closed(&lp))
    }
}

/// An asyncio future to resolve with `None` on its loop: the wakeup for a
/// task suspended on it. Also usable as a `std::task::Waker`.
pub struct FutureWake {
    waker: Arc<LoopWaker>,
    fut: Py<PyAny>,
    /// Run if the loop turns out closed when the wakeup is delivered.
    on_dead: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl FutureWake {
    /// Create `loop.create_future()` on the running loop, marked as being
    /// awaited (`_asyncio_future_blocking`), ready to be yielded to a Task.
    pub fn new(py: Python<'_>) -> PyResult<Arc<Self>> {
        let lp = running_loop(py)?;
        let waker = loop_waker(py, &lp)?;
        let fut = lp.call_method0(pyo3::intern!(py, "create_future"))?;
        fut.setattr(pyo3::intern!(py, "_asyncio_future_blocking"), true)?;
        Ok(Arc::new(FutureWake {
            waker,
            fut: fut.unbind(),
            on_dead: Mutex::new(None),
        }))
    }

    /// What to do if the wakeup finds the loop closed (e.g. give a handed
    /// item back to the channel). Must not call into Python.
    pub fn set_on_dead(&self, f: Box<dyn FnOnce() + Send>) {
        let old = self
            .on_dead
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(f);
        drop(old);
    }

    fn run_on_dead(&self) {
        let f = self
            .on_dead
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(f) = f {
            f();
        }
    }

    pub fn future(&self) -> &Py<PyAny> {
        &self.fut
    }

    pub fn loop_waker(&self) -> &Arc<LoopWaker> {
        &self.waker
    }
}

impl Completion for FutureWake {
    fn complete(self: Arc<Self>, py: Python<'_>) {
        let fut = self.fut.bind(py);
        let done = fut
            .call_method0(pyo3::intern!(py, "done"))
            .and_then(|d| d.is_truthy())
            .unwrap_or(true);
        if !done {
            if let Err(e) = fut.call_method1(pyo3::intern!(py, "set_result"), (py.None(),)) {
                // A loop closed under us on its own thread: nothing to wake.
                if !e.is_instance_of::<PyRuntimeError>(py) {
                    e.write_unraisable(py, Some(fut));
                }
                if !self.waker.is_live(py) {
                    self.waker.kill();
                    self.run_on_dead();
                }
            }
        }
    }

    fn abandon(self: Arc<Self>) {
        self.run_on_dead();
    }
}

impl Wake for FutureWake {
    fn wake(self: Arc<Self>) {
        let w = self.waker.clone();
        w.push(self);
    }
}

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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Wake;

use pyo3::exceptions::{PyNotImplementedError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyCFunction;

/// Something to finish on the loop thread, attached to the interpreter.
pub trait Completion: Send + Sync + 'static {
    fn complete(self: Arc<Self>, py: Python<'_>);
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
pub struct LoopWaker {
    event_loop: Py<PyAny>,
    thread: u64,
    pending: Mutex<Vec<Arc<dyn Completion>>>,
    scheduled: AtomicBool,
    dead: AtomicBool,
    /// `None`: the loop has no `add_reader`; use `call_soon_threadsafe`.
    signal: Option<Signal>,
    drain: PyOnceLock<Py<PyAny>>,
    me: Weak<LoopWaker>,
}

impl LoopWaker {
    /// A waker for `event_loop`, created on the loop's thread.
    fn new(py: Python<'_>, event_loop: Bound<'_, PyAny>) -> PyResult<Arc<Self>> {
        let signal = Signal::new().ok();
        let w = Arc::new_cyclic(|me| LoopWaker {
            event_loop: event_loop.clone().unbind(),
            thread: thread_key(),
            pending: Mutex::new(Vec::new()),
            scheduled: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            signal,
            drain: PyOnceLock::new(),
            me: me.clone(),
        });
        if let Some(sig) = &w.signal {
            // The reader keeps the waker (and so the socket) alive for as
            // long as the loop has it registered: until the loop closes.
            let keep = w.clone();
            let reader = PyCFunction::new_closure(py, None, None, move |args, _kw| {
                keep.run_pending(args.py());
            })?;
            match event_loop.call_method1(pyo3::intern!(py, "add_reader"), (sig.fd(), reader)) {
                Ok(_) => return Ok(w),
                Err(e) if e.is_instance_of::<PyNotImplementedError>(py) => {}
                Err(e) => return Err(e),
            }
            return Ok(Arc::new_cyclic(|me| LoopWaker {
                event_loop: event_loop.unbind(),
                thread: thread_key(),
                pending: Mutex::new(Vec::new()),
                scheduled: AtomicBool::new(false),
                dead: AtomicBool::new(false),
                signal: None,
                drain: PyOnceLock::new(),
                me: me.clone(),
            }));
        }
        Ok(w)
    }

    pub fn event_loop(&self) -> &Py<PyAny> {
        &self.event_loop
    }

    /// Run `c` on the loop thread as soon as possible.
    pub fn push(&self, c: Arc<dyn Completion>) {
        if self.dead.load(Ordering::Acquire) {
            return;
        }
        if thread_key() == self.thread {
            Python::attach(|py| c.complete(py));
            return;
        }
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(c);
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            if let Some(sig) = &self.signal {
                sig.notify();
            } else if unsafe { pyo3::ffi::PyGILState_Check() } == 1 {
                Python::attach(|py| self.schedule(py));
            } else if let Some(me) = self.me.upgrade() {
                schedule_from_waker_thread(me);
            }
        }
    }

    /// The `call_soon_threadsafe` fallback.
    fn schedule(&self, py: Python<'_>) {
        let lp = self.event_loop.bind(py);
        let closed = lp
            .call_method0(pyo3::intern!(py, "is_closed"))
            .and_then(|v| v.is_truthy())
            .unwrap_or(true);
        if closed {
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
                e.write_unraisable(py, Some(lp));
            }
            self.kill();
        }
    }

    fn kill(&self) {
        self.dead.store(true, Ordering::Release);
        let dropped = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        drop(dropped);
    }

    /// The drain: runs on the loop thread.
    fn run_pending(&self, py: Python<'_>) {
        if let Some(sig) = &self.signal {
            sig.clear();
        }
        self.scheduled.store(false, Ordering::Release);
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for c in batch {
            c.complete(py);
        }
    }
}

/// Schedule a drain from a thread that is not attached to the interpreter
/// (a tokio worker, a blocked thread). Attaching there could wait up to the
/// interpreter's switch interval while the loop thread runs Python, stalling
/// that thread's other work; one waker thread does the waiting instead.
fn schedule_from_waker_thread(w: Arc<LoopWaker>) {
    use std::sync::mpsc;
    use std::sync::OnceLock;
    static WAKER_THREAD: OnceLock<Mutex<mpsc::Sender<Arc<LoopWaker>>>> = OnceLock::new();
    let tx = WAKER_THREAD.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Arc<LoopWaker>>();
        std::thread::Builder::new()
            .name("rustasync-loop-waker".into())
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
            .expect("spawning the loop waker thread");
        Mutex::new(tx)
    });
    let _ = tx.lock().unwrap_or_else(|e| e.into_inner()).send(w);
}

/// `asyncio.get_running_loop()`.
pub fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static GET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    GET.import(py, "asyncio", "get_running_loop")?.call0()
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<LoopWaker>>> = const { RefCell::new(None) };
}

/// The running loop of this thread and its waker.
///
/// Raises `RuntimeError` when no loop is running, like
/// `asyncio.get_running_loop()`.
pub fn current_loop_waker(py: Python<'_>) -> PyResult<Arc<LoopWaker>> {
    let lp = running_loop(py)?;
    CURRENT.with(|cur| {
        let mut cur = cur.borrow_mut();
        if let Some(w) = cur.as_ref() {
            if w.event_loop.bind(py).is(&lp) && !w.dead.load(Ordering::Acquire) {
                return Ok(w.clone());
            }
        }
        let w = LoopWaker::new(py, lp)?;
        *cur = Some(w.clone());
        Ok(w)
    })
}

/// An asyncio future to resolve with `None` on its loop: the wakeup for a
/// task suspended on it. Also usable as a `std::task::Waker`.
pub struct FutureWake {
    waker: Arc<LoopWaker>,
    fut: Py<PyAny>,
}

impl FutureWake {
    /// Create `loop.create_future()` on the running loop, marked as being
    /// awaited (`_asyncio_future_blocking`), ready to be yielded to a Task.
    pub fn new(py: Python<'_>) -> PyResult<Arc<Self>> {
        let waker = current_loop_waker(py)?;
        let fut = waker
            .event_loop
            .bind(py)
            .call_method0(pyo3::intern!(py, "create_future"))?;
        fut.setattr(pyo3::intern!(py, "_asyncio_future_blocking"), true)?;
        Ok(Arc::new(FutureWake {
            waker,
            fut: fut.unbind(),
        }))
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
            }
        }
    }
}

impl Wake for FutureWake {
    fn wake(self: Arc<Self>) {
        let w = self.waker.clone();
        w.push(self);
    }
}

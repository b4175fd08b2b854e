//! The tutorial's `asyncq.py` simulation, run as tokio tasks over the
//! channel engine.
//!
//! `nprod` producers each make a random number (1..=10, or
//! `items_per_producer`) of random 10-hex-digit items; before each item a
//! producer "sleeps" a random 0..=10 seconds (times `sleep_scale`). `ncon`
//! consumers loop: sleep a random 0..=10 seconds, receive an item, record
//! how long it sat in the channel. With `zero_sleep` every sleep becomes a
//! bare yield (asyncio's `sleep(0)`), which makes the run a measure of the
//! machinery alone. `yield_every = n` (zero sleeps only) keeps every sleep's
//! line but yields on every n-th sleep of a task: tasks then run in bursts
//! of up to n items. Every item is still produced once and consumed once,
//! and the lines are the same; what changes is the interleaving (coarser)
//! and the latencies (an item may wait behind a burst). A consumer that
//! finds the channel empty still suspends until an item arrives.
//! Unlike the tutorial, production ends by closing the channel, so
//! consumers finish by draining it (no `join()` + cancel).
//!
//! Output lines are the tutorial's, byte for byte. Each task writes them as
//! ASCII into its own buffer (fixed parts formatted once per task, numbers
//! by hand, no per-line allocation) and hands full 16 KiB chunks to the
//! emitter, which passes them to the Python `emit` callable in batches, on
//! the loop thread, through the loop's wakeup batcher: one call per burst,
//! not per line. `emit` gets a list of lines, or with `as_text` one `str`
//! per batch (no per-line Python objects). All lines are emitted before the
//! awaitable completes.
//!
//! # Cancellation
//! When the awaitable is cancelled (or closed, or dropped before the run
//! ended) the bridge drops its Rust future on the tokio runtime's next step.
//! The run then stops: the emitter is marked cancelled, so no batch is
//! handed to `emit` any more (lines not yet emitted are dropped), the
//! producer and consumer tasks are aborted at their next await point, and
//! the dedicated runtime's thread returns. A batch the loop was already
//! about to emit before that step can still be emitted; the Python
//! `_asyncq_engine.run()` drops it too.
//!
//! # Randomness
//! Each task draws from its own SplitMix64 generator seeded with
//! `seed ^ (task number × 0x9E3779B97F4A7C15)`, so with a `seed` the counts,
//! sleeps and item values are reproducible (the interleaving of lines is
//! not: tasks run on several threads). Without a seed one is taken from the
//! clock. Items come from that generator rather than `os.urandom`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::core::Channel;
use crate::runtime::{current_loop_waker, Completion, LoopWaker};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (the bias for such small ranges is negligible).
    fn int(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// Ten random hex digits (five random bytes, as `os.urandom(5).hex()`).
    fn item(&mut self) -> Hex10 {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let v = self.next();
        let mut out = [0u8; 10];
        for (i, d) in out.iter_mut().enumerate() {
            *d = DIGITS[((v >> (4 * (9 - i))) & 0xf) as usize];
        }
        Hex10(out)
    }
}

/// An item's value: ten ASCII hex digits, without a heap allocation.
#[derive(Clone, Copy)]
struct Hex10([u8; 10]);

/// Output lines written back to back, each ending in `\n`. Everything
/// written is ASCII (names, digits, hex), so the bytes are valid UTF-8 and
/// map one to one onto a Python `str` of the same length.
struct Chunk {
    text: Vec<u8>,
    lines: u64,
}

/// Append `n` in decimal.
fn put_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Append `d` in seconds with five decimals, as Python's
/// `f"{d.total_seconds():0.5f}"` prints it.
///
/// The value is rounded from whole nanoseconds to units of 10 µs. A
/// remainder other than exactly 5,000 ns is unambiguous: the `f64` the
/// tutorial formats lies within a tiny fraction of a nanosecond of the exact
/// value, so it rounds the same way. An exact half goes through the float
/// formatter, which rounds the `f64` itself.
fn put_secs5(out: &mut Vec<u8>, d: Duration) {
    // u64 nanoseconds cover 584 years; longer waits take the float path.
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let (mut units, rem) = (ns / 10_000, ns % 10_000);
    if rem == 5_000 || ns == u64::MAX {
        use std::io::Write;
        let _ = write!(out, "{:.5}", d.as_secs_f64());
        return;
    }
    if rem > 5_000 {
        units += 1;
    }
    put_u64(out, units / 100_000);
    let mut f = units % 100_000;
    let mut digits = [b'.', 0, 0, 0, 0, 0];
    for d in digits[1..].iter_mut().rev() {
        *d = b'0' + (f % 10) as u8;
        f /= 10;
    }
    out.extend_from_slice(&digits);
}

/// A task's fixed text, formatted once: its eleven possible "sleeping"
/// lines and the start of its item line up to the item.
struct Voice {
    sleeping: Vec<Vec<u8>>,
    head: Vec<u8>,
}

impl Voice {
    fn new(who: &str, head: &str) -> Self {
        Voice {
            sleeping: (0..=10)
                .map(|i| format!("{who} sleeping for {i} seconds.\n").into_bytes())
                .collect(),
            head: format!("{who} {head} <").into_bytes(),
        }
    }
}

/// Buffers output lines and hands them to Python in batches.
struct Emitter {
    buf: Mutex<Vec<Chunk>>,
    /// Emptied chunk buffers, handed back to the tasks: the run reuses a
    /// few warm buffers instead of touching fresh memory for every chunk.
    spare: Mutex<Vec<Vec<u8>>>,
    queued: AtomicBool,
    emit: Option<Py<PyAny>>,
    /// `emit` takes one `str` per batch instead of a list of lines.
    as_text: bool,
    /// The loop `emit` runs on (`None` when there is no `emit`).
    waker: Option<Arc<LoopWaker>>,
    error: Mutex<Option<PyErr>>,
    lines: AtomicU64,
    /// The awaitable was cancelled: emit nothing more, stop the run.
    cancelled: AtomicBool,
    /// Woken by [`Emitter::cancel`], for the dedicated runtime's thread.
    stop: tokio::sync::Notify,
}

impl Emitter {
    fn new(emit: Option<Py<PyAny>>, as_text: bool, waker: Option<Arc<LoopWaker>>) -> Self {
        Emitter {
            buf: Mutex::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
            queued: AtomicBool::new(false),
            emit,
            as_text,
            waker,
            error: Mutex::new(None),
            lines: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
            stop: tokio::sync::Notify::new(),
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Stop the run: nothing more reaches `emit`, and the dedicated
    /// runtime's `block_on` returns.
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        // A stored permit: the thread may not be waiting yet.
        self.stop.notify_one();
    }

    fn add(self: &Arc<Self>, chunk: Chunk) {
        self.lines.fetch_add(chunk.lines, Ordering::Relaxed);
        if self.is_cancelled() {
            return;
        }
        let Some(waker) = &self.waker else { return };
        self.buf
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(chunk);
        if !self.queued.swap(true, Ordering::AcqRel) {
            waker.push(self.clone());
        }
    }

    fn flush(&self, py: Python<'_>) {
        self.queued.store(false, Ordering::Release);
        let chunks = std::mem::take(&mut *self.buf.lock().unwrap_or_else(|e| e.into_inner()));
        let Some(emit) = &self.emit else { return };
        if chunks.is_empty() || self.is_cancelled() {
            return;
        }
        let r = if self.as_text {
            ascii_str(py, &chunks).and_then(|t| emit.bind(py).call1((t,)))
        } else {
            let lines = chunks.iter().flat_map(|c| {
                let text = &c.text[..c.text.len().saturating_sub(1)];
                text.split(|&b| b == b'\n')
                    .map(|l| std::str::from_utf8(l).expect("output lines are ASCII"))
            });
            PyList::new(py, lines).and_then(|l| emit.bind(py).call1((l,)))
        };
        if let Err(e) = r {
            let mut err = self.error.lock().unwrap_or_else(|e| e.into_inner());
            err.get_or_insert(e);
        }
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        for mut c in chunks {
            if spare.len() < Self::SPARE {
                c.text.clear();
                spare.push(c.text);
            }
        }
    }

    /// At most this many spare buffers are kept.
    const SPARE: usize = 64;

    /// An empty buffer for a new chunk.
    fn buffer(&self) -> Vec<u8> {
        let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
        spare.unwrap_or_else(|| Vec::with_capacity(Lines::CHUNK + 128))
    }
}

/// One Python `str` holding every chunk's text, copied once.
fn ascii_str<'py>(py: Python<'py>, chunks: &[Chunk]) -> PyResult<Bound<'py, PyAny>> {
    use pyo3::ffi;
    let len: usize = chunks.iter().map(|c| c.text.len()).sum();
    let size = ffi::Py_ssize_t::try_from(len)
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("output batch too large"))?;
    // SAFETY: PyUnicode_New(size, 127) makes a compact ASCII string with
    // room for `size` one-byte characters, which we fill completely before
    // anyone else sees it. Every byte is ASCII (see `Chunk`).
    unsafe {
        let obj = ffi::PyUnicode_New(size, 127);
        let obj = Bound::from_owned_ptr_or_err(py, obj)?;
        let mut dst = ffi::PyUnicode_1BYTE_DATA(obj.as_ptr());
        for c in chunks {
            debug_assert!(c.text.is_ascii());
            std::ptr::copy_nonoverlapping(c.text.as_ptr(), dst, c.text.len());
            dst = dst.add(c.text.len());
        }
        Ok(obj)
    }
}

impl Completion for Emitter {
    fn complete(self: Arc<Self>, py: Python<'_>) {
        self.flush(py);
    }
}

/// What the awaitable resolves to; converting it (on the loop thread)
/// flushes the last lines and raises an error `emit` raised.
struct Summary {
    emitter: Arc<Emitter>,
    produced: u64,
    consumed: u64,
    elapsed: f64,
}

impl<'py> IntoPyObject<'py> for Summary {
    type Target = PyDict;
    type Output = Bound<'py, PyDict>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.emitter.flush(py);
        if let Some(e) = self
            .emitter
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            return Err(e);
        }
        let d = PyDict::new(py);
        d.set_item("produced", self.produced)?;
        d.set_item("consumed", self.consumed)?;
        d.set_item("lines", self.emitter.lines.load(Ordering::Relaxed))?;
        d.set_item("elapsed", self.elapsed)?;
        Ok(d)
    }
}

/// `asyncio.sleep(0)`: go to the back of the run queue once. (tokio's
/// `yield_now` defers the wakeup until the I/O driver has been polled.)
async fn bare_yield() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

/// A task's own line buffer, handed to the emitter in chunks.
struct Lines {
    chunk: Chunk,
    out: Arc<Emitter>,
}

impl Lines {
    /// Bytes per chunk: a few hundred lines, so a batch costs the loop
    /// thread one call per few hundred lines.
    const CHUNK: usize = 16 * 1024;

    fn new(out: &Arc<Emitter>) -> Self {
        Lines {
            chunk: Chunk {
                text: out.buffer(),
                lines: 0,
            },
            out: out.clone(),
        }
    }

    /// A whole line, newline included.
    fn line(&mut self, text: &[u8]) {
        self.chunk.text.extend_from_slice(text);
        self.end_line();
    }

    /// Start a line with `head`; the caller writes the rest, up to and
    /// including its newline, then calls `end_line`.
    fn start(&mut self, head: &[u8]) -> &mut Vec<u8> {
        let t = &mut self.chunk.text;
        t.reserve(head.len() + 64);
        t.extend_from_slice(head);
        t
    }

    fn end_line(&mut self) {
        self.chunk.lines += 1;
        if self.chunk.text.len() >= Self::CHUNK {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.chunk.lines > 0 {
            let fresh = Chunk {
                text: self.out.buffer(),
                lines: 0,
            };
            self.out.add(std::mem::replace(&mut self.chunk, fresh));
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.flush();
    }
}

struct Item {
    value: Hex10,
    made: Instant,
}

#[derive(Clone, Copy)]
struct Sleeps {
    zero: bool,
    scale: f64,
    /// With `zero`: yield on every `yield_every`-th sleep only.
    yield_every: u32,
    /// This task's sleeps since its last yield.
    since_yield: u32,
    /// Read the clock once per wakeup of the task (see `now`).
    clock_per_wakeup: bool,
    /// The time read since the task last woke up.
    woke_at: Option<Instant>,
}

/// Await `f`, reporting whether the task suspended in it.
async fn noting_suspend<F: std::future::Future>(f: F) -> (F::Output, bool) {
    let mut f = std::pin::pin!(f);
    let mut suspended = false;
    let out = std::future::poll_fn(|cx| {
        let r = f.as_mut().poll(cx);
        suspended |= r.is_pending();
        r
    })
    .await;
    (out, suspended)
}

impl Sleeps {
    /// The time for stamping and timing items. On the single-thread
    /// runtime it is read once per wakeup of the task: a task that handles
    /// several items in one go (`yield_every` > 1) stamps them all with the
    /// time it woke up. Nothing else runs on the thread meanwhile, so a
    /// latency can be off by at most the length of one such burst, and is
    /// never negative: an item a consumer gets in a burst was sent before
    /// the burst began. With a yield per sleep every item gets its own
    /// readings.
    fn now(&mut self) -> Instant {
        if !self.clock_per_wakeup {
            return Instant::now();
        }
        *self.woke_at.get_or_insert_with(Instant::now)
    }

    fn suspended(&mut self) {
        self.woke_at = None;
    }

    async fn randsleep(&mut self, rng: &mut Rng, voice: &Voice, out: &mut Lines) {
        let i = rng.int(0, 10);
        out.line(&voice.sleeping[i as usize]);
        if self.zero {
            self.since_yield += 1;
            if self.since_yield >= self.yield_every {
                self.since_yield = 0;
                bare_yield().await;
                self.suspended();
            }
        } else {
            // Lines show up while the task sleeps, not in chunks.
            out.flush();
            tokio::time::sleep(Duration::from_secs_f64(i as f64 * self.scale)).await;
            self.suspended();
        }
    }
}

/// One producer; returns how many items it sent (fewer than it meant to
/// when the channel was closed first).
async fn produce(
    name: usize,
    mut rng: Rng,
    count: Option<u64>,
    ch: Arc<Channel<Item>>,
    mut sleeps: Sleeps,
    out: Arc<Emitter>,
) -> u64 {
    let n = count.unwrap_or_else(|| rng.int(1, 10));
    let voice = Voice::new(&format!("Producer {name}"), "added");
    let mut out = Lines::new(&out);
    let mut sent = 0;
    while sent < n {
        sleeps.randsleep(&mut rng, &voice, &mut out).await;
        let value = rng.item();
        let made = sleeps.now();
        let (r, waited) = noting_suspend(ch.send(Item { value, made })).await;
        if waited {
            sleeps.suspended();
        }
        if r.is_err() {
            break;
        }
        sent += 1;
        let l = out.start(&voice.head);
        l.extend_from_slice(&value.0);
        l.extend_from_slice(b"> to queue.\n");
        out.end_line();
    }
    sent
}

async fn consume(
    name: usize,
    mut rng: Rng,
    ch: Arc<Channel<Item>>,
    mut sleeps: Sleeps,
    out: Arc<Emitter>,
) -> u64 {
    let voice = Voice::new(&format!("Consumer {name}"), "got element");
    let mut out = Lines::new(&out);
    let mut got = 0;
    loop {
        sleeps.randsleep(&mut rng, &voice, &mut out).await;
        let (item, waited) = noting_suspend(ch.recv()).await;
        if waited {
            sleeps.suspended();
        }
        let Ok(item) = item else {
            return got;
        };
        let dt = sleeps.now().saturating_duration_since(item.made);
        let l = out.start(&voice.head);
        l.extend_from_slice(&item.value.0);
        l.extend_from_slice(b"> in ");
        put_secs5(l, dt);
        l.extend_from_slice(b" seconds.\n");
        out.end_line();
        got += 1;
    }
}

fn join_error(e: tokio::task::JoinError) -> PyErr {
    match e.try_into_panic() {
        Ok(payload) => crate::errors::panic_to_pyerr(payload),
        Err(e) => pyo3::exceptions::PyRuntimeError::new_err(e.to_string()),
    }
}

/// Run the asyncq simulation on tokio (awaitable resolving to a dict with
/// `produced`, `consumed`, `lines`, `elapsed`).
///
/// `emit` is called on the loop thread with batches of output: a
/// `list[str]` of lines, or with `as_text=True` one `str` in which every
/// line ends with `\n` (None: lines are only counted). See the Rust module
/// docs for the randomness, how the run ends and `yield_every`.
///
/// The tasks run on a dedicated single-thread tokio runtime (one thread,
/// many tasks, as in asyncio); `shared_runtime=True` spawns them on the
/// shared multi-thread runtime instead.
///
/// Cancel safety: cancelling the awaiting task (or closing or dropping the
/// awaitable before the run ended) stops the run on the runtime's next
/// step: from then on `emit` is not called (lines not yet emitted are
/// dropped), and the producer and consumer tasks are dropped at their next
/// await point, on either runtime. A batch already scheduled on the loop
/// before that step may still be emitted (`_asyncq_engine.run()` drops it).
#[pyfunction]
#[pyo3(signature = (nprod = 5, ncon = 10, seed = None, zero_sleep = false, emit = None, items_per_producer = None, sleep_scale = 1.0, shared_runtime = false, as_text = false, yield_every = 1))]
#[allow(clippy::too_many_arguments)]
pub fn run_asyncq(
    py: Python<'_>,
    nprod: usize,
    ncon: usize,
    seed: Option<u64>,
    zero_sleep: bool,
    emit: Option<Py<PyAny>>,
    items_per_producer: Option<u64>,
    sleep_scale: f64,
    shared_runtime: bool,
    as_text: bool,
    yield_every: u32,
) -> PyResult<Bound<'_, PyAny>> {
    if !(sleep_scale.is_finite() && sleep_scale >= 0.0) {
        return Err(PyValueError::new_err(
            "sleep_scale must be a non-negative number",
        ));
    }
    if ncon == 0 && nprod > 0 {
        return Err(PyValueError::new_err(
            "ncon must be at least 1 when there are producers",
        ));
    }
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(444)
    });
    let waker = match emit {
        Some(_) => Some(current_loop_waker(py)?),
        None => None,
    };
    let emitter = Arc::new(Emitter::new(emit, as_text, waker));
    if yield_every == 0 {
        return Err(PyValueError::new_err("yield_every must be at least 1"));
    }
    let sleeps = Sleeps {
        zero: zero_sleep,
        scale: sleep_scale,
        yield_every,
        since_yield: 0,
        clock_per_wakeup: !shared_runtime,
        woke_at: None,
    };
    let rng = move |task: u64| Rng(seed ^ task.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let cancel = CancelOnDrop(Some(emitter.clone()));
    let stop = emitter.clone();
    let sim = async move {
        let start = Instant::now();
        let ch = Arc::new(Channel::new(None));
        let producers: Vec<_> = (0..nprod)
            .map(|n| {
                let fut = produce(
                    n,
                    rng(n as u64),
                    items_per_producer,
                    ch.clone(),
                    sleeps,
                    emitter.clone(),
                );
                tokio::spawn(fut)
            })
            .collect();
        let consumers: Vec<_> = (0..ncon)
            .map(|n| {
                let fut = consume(
                    n,
                    rng((nprod + n) as u64),
                    ch.clone(),
                    sleeps,
                    emitter.clone(),
                );
                tokio::spawn(fut)
            })
            .collect();
        // Dropping the run (cancelled) drops its tasks too.
        let _tasks = AbortOnDrop(
            producers
                .iter()
                .chain(&consumers)
                .map(|t| t.abort_handle())
                .collect(),
        );
        let mut produced = 0;
        let mut failure = None;
        for p in producers {
            match p.await {
                Ok(n) => produced += n,
                Err(e) => failure = failure.or(Some(join_error(e))),
            }
        }
        ch.close();
        let mut consumed = 0;
        for c in consumers {
            match c.await {
                Ok(n) => consumed += n,
                Err(e) => failure = failure.or(Some(join_error(e))),
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(Summary {
            emitter,
            produced,
            consumed,
            elapsed: start.elapsed().as_secs_f64(),
        })
    };
    if shared_runtime {
        return crate::bridge::future_into_py(py, cancel.around(sim));
    }
    // One thread, many tasks: asyncio's model. Per item the work is tiny, so
    // handing items between worker threads would cost more than it gives.
    // The thread is not dropped with the awaitable: it watches `stop`.
    let run = move || {
        let mut rt = tokio::runtime::Builder::new_current_thread();
        if !zero_sleep {
            rt.enable_time();
        }
        rt.build()
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?
            .block_on(unless_cancelled(sim, &stop))
    };
    crate::bridge::future_into_py(
        py,
        cancel.around(async move {
            match tokio::task::spawn_blocking(run).await {
                Ok(r) => r,
                Err(e) => Err(join_error(e)),
            }
        }),
    )
}

/// Aborts the tasks when dropped.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Cancels the run when dropped before [`CancelOnDrop::around`]'s future
/// finished: the bridge drops that future when the awaitable is cancelled,
/// closed or dropped.
struct CancelOnDrop(Option<Arc<Emitter>>);

impl CancelOnDrop {
    async fn around<T>(mut self, f: impl Future<Output = T>) -> T {
        let out = f.await;
        self.0 = None;
        out
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(e) = self.0.take() {
            e.cancel();
        }
    }
}

/// `f`, or a `CancelledError` as soon as the run is cancelled.
async fn unless_cancelled<T>(
    f: impl Future<Output = PyResult<T>>,
    emitter: &Emitter,
) -> PyResult<T> {
    let mut f = std::pin::pin!(f);
    let mut stopped = std::pin::pin!(emitter.stop.notified());
    std::future::poll_fn(|cx| {
        if emitter.is_cancelled() || stopped.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(pyo3::exceptions::asyncio::CancelledError::new_err(
                "run cancelled",
            )));
        }
        f.as_mut().poll(cx)
    })
    .await
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run_asyncq, m)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs5(d: Duration) -> String {
        let mut v = Vec::new();
        put_secs5(&mut v, d);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn latency_matches_float_formatting() {
        let mut rng = Rng(1);
        let edges = [
            0,
            1,
            4_999,
            5_000,
            5_001,
            9_999,
            10_000,
            15_000,
            25_000,
            995_000,
            999_995_000,
            999_999_999,
            1_000_000_000,
            12_345_675_000,
            99_999_995_000,
        ];
        let random = (0..200_000).map(|i| match i % 3 {
            0 => rng.int(0, 100_000),
            1 => rng.int(0, 10_000_000_000),
            _ => rng.int(0, 2_000) * 5_000,
        });
        for ns in edges.into_iter().chain(random) {
            let d = Duration::from_nanos(ns);
            assert_eq!(secs5(d), format!("{:.5}", d.as_secs_f64()), "{ns} ns");
        }
    }

    fn zero_sleeps() -> Sleeps {
        Sleeps {
            zero: true,
            scale: 0.0,
            yield_every: 1,
            since_yield: 0,
            clock_per_wakeup: false,
            woke_at: None,
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn producer_counts_only_what_it_sent() {
        let out = Arc::new(Emitter::new(None, false, None));
        let ch = Arc::new(Channel::new(Some(2)));
        let (sent, received) = block_on(async {
            let p = tokio::spawn(produce(0, Rng(1), Some(5), ch.clone(), zero_sleeps(), out));
            let first = ch.recv().await.is_ok();
            ch.close();
            (p.await.unwrap(), first)
        });
        assert!(received);
        // One taken, two buffered when the channel closed: at most three.
        assert!((1..5).contains(&sent), "sent {sent}");
        assert_eq!(sent as usize, 1 + ch.len());
    }

    #[test]
    fn producer_on_a_closed_channel_sends_nothing() {
        let out = Arc::new(Emitter::new(None, false, None));
        let ch = Arc::new(Channel::new(None));
        ch.close();
        let sent = block_on(produce(0, Rng(1), Some(5), ch, zero_sleeps(), out));
        assert_eq!(sent, 0);
    }

    #[test]
    fn a_cancelled_run_stops_and_adds_nothing() {
        let out = Arc::new(Emitter::new(None, false, None));
        let pending = std::future::pending::<PyResult<()>>();
        out.cancel();
        assert!(block_on(unless_cancelled(pending, &out)).is_err());
        // Cancelled later, while waiting.
        let out = Arc::new(Emitter::new(None, false, None));
        let o = out.clone();
        let r = block_on(async move {
            let t = tokio::spawn(async move {
                unless_cancelled(std::future::pending::<PyResult<()>>(), &o)
                    .await
                    .is_err()
            });
            tokio::task::yield_now().await;
            out.cancel();
            t.await.unwrap()
        });
        assert!(r);
    }

    #[test]
    fn decimal() {
        for n in [0, 7, 10, 99, 12_345, u64::MAX] {
            let mut v = Vec::new();
            put_u64(&mut v, n);
            assert_eq!(v, n.to_string().into_bytes());
        }
    }
}

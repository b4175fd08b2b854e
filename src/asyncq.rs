//! The tutorial's `asyncq.py` simulation, run as tokio tasks over the
//! channel engine.
//!
//! `nprod` producers each make a random number (1..=10, or
//! `items_per_producer`) of random 10-hex-digit items; before each item a
//! producer "sleeps" a random 0..=10 seconds (times `sleep_scale`). `ncon`
//! consumers loop: sleep a random 0..=10 seconds, receive an item, record
//! how long it sat in the channel. With `zero_sleep` every sleep becomes a
//! bare `yield_now()`, which makes the run a measure of the machinery alone.
//! Unlike the tutorial, production ends by closing the channel, so
//! consumers finish by draining it (no `join()` + cancel).
//!
//! Output lines are the tutorial's. They are buffered and handed to the
//! Python `emit(lines)` callable in batches, on the loop thread, through the
//! loop's wakeup batcher: one call per burst, not per line. All lines are
//! emitted before the awaitable completes.
//!
//! # Randomness
//! Each task draws from its own SplitMix64 generator seeded with
//! `seed ^ (task number × 0x9E3779B97F4A7C15)`, so with a `seed` the counts,
//! sleeps and item values are reproducible (the interleaving of lines is
//! not: tasks run on several threads). Without a seed one is taken from the
//! clock. Items come from that generator rather than `os.urandom`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

impl std::fmt::Display for Hex10 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.0).expect("hex digits are ASCII"))
    }
}

/// Lines formatted back to back into one buffer, with their end offsets:
/// two allocations per chunk instead of one per line.
#[derive(Default)]
struct Chunk {
    text: String,
    ends: Vec<usize>,
}

/// Buffers output lines and hands them to Python in batches.
struct Emitter {
    buf: Mutex<Vec<Chunk>>,
    queued: AtomicBool,
    emit: Option<Py<PyAny>>,
    waker: Arc<LoopWaker>,
    error: Mutex<Option<PyErr>>,
    lines: AtomicU64,
}

impl Emitter {
    fn add(self: &Arc<Self>, chunk: Chunk) {
        self.lines
            .fetch_add(chunk.ends.len() as u64, Ordering::Relaxed);
        if self.emit.is_none() {
            return;
        }
        self.buf
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(chunk);
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.waker.push(self.clone());
        }
    }

    fn flush(&self, py: Python<'_>) {
        self.queued.store(false, Ordering::Release);
        let chunks = std::mem::take(&mut *self.buf.lock().unwrap_or_else(|e| e.into_inner()));
        let Some(emit) = &self.emit else { return };
        if chunks.is_empty() {
            return;
        }
        let lines = chunks.iter().flat_map(|c| {
            let starts = std::iter::once(0).chain(c.ends.iter().copied());
            starts
                .zip(c.ends.iter().copied())
                .map(|(a, b)| &c.text[a..b])
        });
        let r = PyList::new(py, lines).and_then(|l| emit.bind(py).call1((l,)));
        if let Err(e) = r {
            let mut err = self.error.lock().unwrap_or_else(|e| e.into_inner());
            err.get_or_insert(e);
        }
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
    const CHUNK: usize = 64;

    fn new(out: &Arc<Emitter>) -> Self {
        Lines {
            chunk: Self::fresh(),
            out: out.clone(),
        }
    }

    fn fresh() -> Chunk {
        Chunk {
            text: String::with_capacity(Self::CHUNK * 48),
            ends: Vec::with_capacity(Self::CHUNK),
        }
    }

    fn push(&mut self, line: std::fmt::Arguments<'_>) {
        use std::fmt::Write;
        let _ = self.chunk.text.write_fmt(line);
        self.chunk.ends.push(self.chunk.text.len());
        if self.chunk.ends.len() >= Self::CHUNK {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.chunk.ends.is_empty() {
            self.out
                .add(std::mem::replace(&mut self.chunk, Self::fresh()));
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
}

impl Sleeps {
    async fn randsleep(self, rng: &mut Rng, who: &str, out: &mut Lines) {
        let i = rng.int(0, 10);
        out.push(format_args!("{who} sleeping for {i} seconds."));
        if self.zero {
            bare_yield().await;
        } else {
            // Lines show up while the task sleeps, not in chunks.
            out.flush();
            tokio::time::sleep(Duration::from_secs_f64(i as f64 * self.scale)).await;
        }
    }
}

async fn produce(
    name: usize,
    mut rng: Rng,
    count: Option<u64>,
    ch: Arc<Channel<Item>>,
    sleeps: Sleeps,
    out: Arc<Emitter>,
) -> u64 {
    let n = count.unwrap_or_else(|| rng.int(1, 10));
    let who = format!("Producer {name}");
    let mut out = Lines::new(&out);
    for _ in 0..n {
        sleeps.randsleep(&mut rng, &who, &mut out).await;
        let value = rng.item();
        if ch
            .send(Item {
                value,
                made: Instant::now(),
            })
            .await
            .is_err()
        {
            break;
        }
        out.push(format_args!("{who} added <{value}> to queue."));
    }
    n
}

async fn consume(
    name: usize,
    mut rng: Rng,
    ch: Arc<Channel<Item>>,
    sleeps: Sleeps,
    out: Arc<Emitter>,
) -> u64 {
    let who = format!("Consumer {name}");
    let mut out = Lines::new(&out);
    let mut got = 0;
    loop {
        sleeps.randsleep(&mut rng, &who, &mut out).await;
        let Ok(item) = ch.recv().await else {
            return got;
        };
        let dt = item.made.elapsed().as_secs_f64();
        let value = item.value;
        out.push(format_args!(
            "{who} got element <{value}> in {dt:0.5} seconds."
        ));
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
/// `emit(lines: list[str])` is called on the loop thread with batches of
/// output lines (None: lines are only counted). See the Rust module docs
/// for the randomness and how the run ends.
///
/// The tasks run on a dedicated single-thread tokio runtime (one thread,
/// many tasks, as in asyncio); `shared_runtime=True` spawns them on the
/// shared multi-thread runtime instead.
///
/// Cancel safety: cancelling the awaiting task does not stop a run on the
/// dedicated runtime (it finishes in the background, its lines dropped); on
/// the shared runtime the tasks are dropped at their next await point.
#[pyfunction]
#[pyo3(signature = (nprod = 5, ncon = 10, seed = None, zero_sleep = false, emit = None, items_per_producer = None, sleep_scale = 1.0, shared_runtime = false))]
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
    let emitter = Arc::new(Emitter {
        buf: Mutex::new(Vec::new()),
        queued: AtomicBool::new(false),
        emit,
        waker: current_loop_waker(py)?,
        error: Mutex::new(None),
        lines: AtomicU64::new(0),
    });
    let sleeps = Sleeps {
        zero: zero_sleep,
        scale: sleep_scale,
    };
    let rng = move |task: u64| Rng(seed ^ task.wrapping_mul(0x9E37_79B9_7F4A_7C15));
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
        return crate::bridge::future_into_py(py, sim);
    }
    // One thread, many tasks: asyncio's model. Per item the work is tiny, so
    // handing items between worker threads would cost more than it gives.
    crate::bridge::future_into_py(py, async move {
        let run = move || {
            let mut rt = tokio::runtime::Builder::new_current_thread();
            if !zero_sleep {
                rt.enable_time();
            }
            rt.build()
                .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?
                .block_on(sim)
        };
        match tokio::task::spawn_blocking(run).await {
            Ok(r) => r,
            Err(e) => Err(join_error(e)),
        }
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run_asyncq, m)?)
}

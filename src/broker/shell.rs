//! `rustasync.NatsChannel`: the Python face of a [`Link`]. Thin: it parses
//! arguments, encodes items, and turns the link's Rust futures into
//! awaitables with [`crate::bridge::future_into_py`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pyo3::exceptions::{PyStopAsyncIteration, PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::args::{self, ConnectArgs};
use super::codec::Codec;
use super::link::{Error, Link, Progress};
use super::pull::AckCmd;
use super::received::{Mode, Received};
use super::sendop::NatsSendManyOp;
use super::{BrokerConnectionError, BrokerError};
use crate::bridge::future_into_py;
use crate::channel::closed_error;

/// A producer/consumer channel on a NATS JetStream stream, shared by every
/// process that connects to the same stream and consumer.
///
/// Create one with `await NatsChannel.connect(servers, stream, ...)` (or
/// `NatsChannel.connect_blocking(...)` in a plain thread). Like `Channel`:
/// `send`, `send_many`, `recv`, `recv_many`, `async for`, `close`, and
/// blocking variants for threads; items are `bytes` (or any object with
/// `codec="pickle"` or `"json"`). Differences: delivery is at least once;
/// each received item must be acknowledged with `task_done()` (or
/// `ack="on_receive"`), else the server delivers it again after `ack_wait`
/// seconds, to this or another consumer; `close()` closes this handle, not
/// the stream. A handle nobody refers to closes once the operations
/// started on it are done, and hands the items received through it and
/// not acknowledged back to the server. See docs/distributed.md.
#[pyclass(frozen, module = "rustasync._rustasync", name = "NatsChannel")]
pub struct PyNatsChannel {
    link: Arc<Link>,
    /// Shared with the operations started on this handle: the link closes
    /// once the handle and all of them are gone.
    owner: Arc<Owner>,
    codec: Codec,
    ack_on_receive: bool,
}

impl PyNatsChannel {
    fn new(link: Arc<Link>, codec: Codec, ack_on_receive: bool) -> Self {
        PyNatsChannel {
            owner: Arc::new(Owner(link.clone())),
            link,
            codec,
            ack_on_receive,
        }
    }
}

/// Closes the link when the handle and every operation pending on it are
/// gone. Nothing can acknowledge the items received through it any more:
/// they are handed back to the server at once, with the buffered ones.
pub struct Owner(Arc<Link>);

impl Drop for Owner {
    fn drop(&mut self) {
        if self.0.inherited() {
            // The parent's link, in a forked child: its locks and runtime
            // are the parent's. Leak it, as the parent's runtime is leaked.
            std::mem::forget(self.0.clone());
        } else {
            self.0.close();
            self.0.hand_back_unacked();
        }
    }
}

/// The error every method of a handle inherited through `fork()` raises.
fn inherited_error() -> PyErr {
    BrokerError::new_err(
        "this NatsChannel was connected in the parent process; \
         connect again in the child (after fork())",
    )
}

/// The error of a receive on a closed handle: BrokerError if the puller
/// closed it because the consumer's settings are not those given.
fn closed_error_of(link: &Link) -> PyErr {
    match link.failure() {
        Some(why) => BrokerError::new_err(why),
        None => closed_error(),
    }
}

/// A Rust-side error as the Python exception users catch.
pub fn to_pyerr(e: Error) -> PyErr {
    match e {
        Error::BadUrl(m) => PyValueError::new_err(m),
        Error::Connect(m) => BrokerConnectionError::new_err(m),
        Error::StreamMissing(m) | Error::Other(m) => BrokerError::new_err(m),
        Error::TooLarge(m) => PyValueError::new_err(m),
        Error::Timeout(m) => PyTimeoutError::new_err(m),
        Error::Closed => closed_error(),
    }
}

/// The error of a batch send, with how many items were acknowledged as
/// its `sent` attribute. Needs the interpreter: call it on a Python thread.
fn with_sent(py: Python<'_>, e: Error, sent: usize) -> PyErr {
    let err = to_pyerr(e);
    let _ = err.value(py).setattr("sent", sent);
    err
}

/// What a send resolves to, raised or returned on the loop thread when the
/// awaiting task resumes (tokio workers never touch the interpreter).
struct SendOutcome {
    result: Result<usize, (usize, Error)>,
    count: bool,
}

impl<'py> IntoPyObject<'py> for SendOutcome {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.result {
            Ok(n) if self.count => Ok(n.into_pyobject(py)?.into_any()),
            Ok(_) => Ok(py.None().into_bound(py)),
            Err((sent, e)) => Err(with_sent(py, e, sent)),
        }
    }
}

impl PyNatsChannel {
    /// Refuse to use a handle inherited from the parent through `fork()`.
    fn check(&self) -> PyResult<()> {
        if self.link.inherited() {
            return Err(inherited_error());
        }
        Ok(())
    }

    fn payloads(
        &self,
        items: &Bound<'_, PyAny>,
        msg_ids: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<(Bytes, Option<String>)>> {
        self.check()?;
        let mut out = Vec::new();
        for item in crate::args::iterate(items, "items")? {
            out.push((self.codec.encode(&item?)?, None));
        }
        if let Some(ids) = msg_ids {
            if ids.is_instance_of::<PyString>() {
                return Err(PyTypeError::new_err(
                    "msg_ids must be a sequence of str, not a str",
                ));
            }
            let mut list = Vec::new();
            for id in crate::args::iterate(ids, "msg_ids")? {
                let id = id?;
                let Ok(s) = id.cast::<PyString>() else {
                    return Err(PyTypeError::new_err(format!(
                        "msg_ids must hold str, not {}",
                        id.get_type().name()?
                    )));
                };
                let s = s.to_str()?.to_owned();
                args::msg_id(&s, "msg_ids")?;
                list.push(s);
            }
            let ids = list;
            if ids.len() != out.len() {
                return Err(PyValueError::new_err(format!(
                    "msg_ids has {} ids for {} items",
                    ids.len(),
                    out.len()
                )));
            }
            for (slot, id) in out.iter_mut().zip(ids) {
                slot.1 = Some(id);
            }
        }
        Ok(out)
    }

    fn one(
        &self,
        item: &Bound<'_, PyAny>,
        msg_id: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<(Bytes, Option<String>)>> {
        self.check()?;
        let msg_id = args::msg_id_arg(msg_id)?;
        Ok(vec![(self.codec.encode(item)?, msg_id)])
    }

    fn received(&self, items: Vec<super::pull::Delivery>, mode: Mode) -> Received {
        Received {
            items,
            link: self.link.clone(),
            _owner: self.owner.clone(),
            codec: self.codec,
            ack_on_receive: self.ack_on_receive,
            mode,
        }
    }

    fn recv_op<'py>(
        &self,
        py: Python<'py>,
        max: Option<usize>,
        iter: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.check()?;
        if self.link.is_closed() {
            return Err(if iter && self.link.failure().is_none() {
                PyStopAsyncIteration::new_err(())
            } else {
                closed_error_of(&self.link)
            });
        }
        let receiving = self.link.receiving_guard();
        self.link.ensure_pulling();
        let link = self.link.clone();
        let owner = self.owner.clone();
        let (codec, ack_on_receive) = (self.codec, self.ack_on_receive);
        let mode = if max.is_some() { Mode::Many } else { Mode::One };
        future_into_py(py, async move {
            let got = match max {
                None => link.buffer.recv().await.map(|d| vec![d]),
                Some(n) => link.buffer.recv_many(n).await,
            };
            drop(receiving);
            match got {
                Ok(items) => Ok(Received {
                    items,
                    link,
                    _owner: owner,
                    codec,
                    ack_on_receive,
                    mode,
                }),
                Err(_) if iter && link.failure().is_none() => {
                    Err(PyStopAsyncIteration::new_err(()))
                }
                Err(_) => Err(closed_error_of(&link)),
            }
        })
    }

    /// The send as an awaitable; `progress` follows how many items were
    /// acknowledged.
    fn send_op<'py>(
        &self,
        py: Python<'py>,
        payloads: Vec<(Bytes, Option<String>)>,
        count: bool,
        progress: Arc<Progress>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if self.link.is_closed() {
            return Err(with_sent(py, Error::Closed, 0));
        }
        let link = self.link.clone();
        let owner = self.owner.clone();
        future_into_py(py, async move {
            let result =
                super::rt::on_io(async move { link.publish(payloads, progress).await }).await?;
            drop(owner);
            Ok(SendOutcome { result, count })
        })
    }

    fn send_blocking_impl(
        &self,
        py: Python<'_>,
        payloads: Vec<(Bytes, Option<String>)>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        if self.link.is_closed() {
            return Err(with_sent(py, Error::Closed, 0));
        }
        let deadline = args::deadline(timeout)?;
        let link = self.link.clone();
        let progress = Arc::new(Progress::default());
        let p = progress.clone();
        match super::blocking::wait(py, async move { link.publish(payloads, p).await }, deadline)? {
            Some(Ok(n)) => Ok(n),
            Some(Err((sent, e))) => Err(with_sent(py, e, sent)),
            // `sent`: the prefix acknowledged before the deadline.
            None => Err(with_sent(
                py,
                Error::Timeout("send timed out".to_owned()),
                progress.sent.load(Ordering::Relaxed),
            )),
        }
    }

    fn recv_blocking_impl(
        &self,
        py: Python<'_>,
        max: Option<usize>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.check()?;
        if self.link.is_closed() {
            return Err(closed_error_of(&self.link));
        }
        let deadline = args::deadline(timeout)?;
        let _receiving = self.link.receiving_guard();
        self.link.ensure_pulling();
        let buffer = &self.link.buffer;
        let (r, sig) = crate::channel::blocking(py, |check| {
            buffer.recv_many_blocking_with(max.unwrap_or(1), deadline, check)
        });
        use crate::core::RecvTimeoutError as E;
        match r {
            Ok(items) => {
                let mode = if max.is_some() { Mode::Many } else { Mode::One };
                Ok(self.received(items, mode).convert(py)?.unbind())
            }
            Err(E::Timeout) => Err(PyTimeoutError::new_err("receive timed out")),
            Err(E::Closed) => Err(closed_error_of(&self.link)),
            Err(E::Interrupted) => Err(sig.expect("interrupted by a signal")),
        }
    }
}

#[pymethods]
impl PyNatsChannel {
    /// Connect to NATS and bind a stream and a durable pull consumer
    /// (awaitable; resolves to the `NatsChannel`).
    ///
    /// `servers`: a URL ("nats://127.0.0.1:4222") or a list of URLs of one
    /// cluster. `stream`: the JetStream stream; created (work-queue
    /// retention, `storage`, `replicas`, a de-duplication window of
    /// `dedup_window` seconds) if missing and `create` is true. `subject`:
    /// what is published and consumed (default: the stream's name).
    /// `consumer`: the durable consumer's name, shared by every process
    /// that receives (default: the stream's name); created by the first
    /// receive if missing, never by a handle that only sends. `ack`:
    /// "explicit" (`task_done()` acknowledges) or "on_receive". `ack_wait`:
    /// seconds before an unacknowledged item is delivered again, and
    /// `max_deliver`: deliveries at most (-1: no limit); left out (None),
    /// an existing consumer's settings are used, and 30 s and no limit for
    /// a consumer created. `prefetch`: items pulled ahead into the local
    /// buffer (kept from expiring while this handle receives).
    /// `max_inflight`: publishes waiting for their JetStream ack at once.
    /// `timeout`: how long to wait for the server's replies (publish acks,
    /// API calls).
    ///
    /// Raises:
    ///     BrokerConnectionError: no server in `servers` could be reached
    ///         (the message names them).
    ///     BrokerError: the stream is missing (and `create` is false), the
    ///         server refused the stream, or the consumer exists with other
    ///         settings than those given (the message names them).
    ///     TimeoutError: the server did not answer (JetStream disabled?).
    ///     ValueError: a malformed URL or argument, or an invalid `stream`,
    ///         `subject` or `consumer` name (checked before connecting).
    ///
    /// Cancel safety: cancelling drops the half-made connection; nothing
    /// is left behind but a stream or consumer that was already created.
    #[staticmethod]
    #[pyo3(signature = (servers, stream, *, subject = None, consumer = None, codec = None,
        ack = "explicit", ack_wait = None, max_deliver = None, dedup_window = 120.0,
        prefetch = 256, max_inflight = 4096, timeout = 5.0, connect_timeout = 5.0,
        create = true, storage = "file", replicas = 1))]
    #[allow(clippy::too_many_arguments)]
    fn connect<'py>(
        py: Python<'py>,
        servers: &Bound<'py, PyAny>,
        stream: String,
        subject: Option<String>,
        consumer: Option<String>,
        codec: Option<&str>,
        ack: &str,
        ack_wait: Option<f64>,
        max_deliver: Option<i64>,
        dedup_window: f64,
        prefetch: usize,
        max_inflight: usize,
        timeout: f64,
        connect_timeout: f64,
        create: bool,
        storage: &str,
        replicas: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let a = ConnectArgs::parse(
            servers,
            stream,
            subject,
            consumer,
            codec,
            ack,
            ack_wait,
            max_deliver,
            dedup_window,
            prefetch,
            max_inflight,
            timeout,
            connect_timeout,
            create,
            storage,
            replicas,
        )?;
        // The IO runtime is made again in a forked child only once the
        // fork hook is registered.
        crate::runtime::ensure_fork_hook(py)?;
        future_into_py(py, async move {
            let link = super::rt::on_io(Link::connect(a.opts))
                .await?
                .map_err(to_pyerr)?;
            Ok(PyNatsChannel::new(link, a.codec, a.ack_on_receive))
        })
    }

    /// `connect` for plain threads: blocks (interpreter released) until
    /// connected; same arguments, same exceptions.
    #[staticmethod]
    #[pyo3(signature = (servers, stream, *, subject = None, consumer = None, codec = None,
        ack = "explicit", ack_wait = None, max_deliver = None, dedup_window = 120.0,
        prefetch = 256, max_inflight = 4096, timeout = 5.0, connect_timeout = 5.0,
        create = true, storage = "file", replicas = 1))]
    #[allow(clippy::too_many_arguments)]
    fn connect_blocking(
        py: Python<'_>,
        servers: &Bound<'_, PyAny>,
        stream: String,
        subject: Option<String>,
        consumer: Option<String>,
        codec: Option<&str>,
        ack: &str,
        ack_wait: Option<f64>,
        max_deliver: Option<i64>,
        dedup_window: f64,
        prefetch: usize,
        max_inflight: usize,
        timeout: f64,
        connect_timeout: f64,
        create: bool,
        storage: &str,
        replicas: usize,
    ) -> PyResult<PyNatsChannel> {
        let a = ConnectArgs::parse(
            servers,
            stream,
            subject,
            consumer,
            codec,
            ack,
            ack_wait,
            max_deliver,
            dedup_window,
            prefetch,
            max_inflight,
            timeout,
            connect_timeout,
            create,
            storage,
            replicas,
        )?;
        crate::runtime::ensure_fork_hook(py)?;
        // Bounded: every server tried once, then the JetStream requests
        // (stream lookup, creation, consumer), each within `timeout`.
        let o = &a.opts;
        let budget = o
            .connect_timeout
            .saturating_mul(u32::try_from(o.servers.len()).unwrap_or(u32::MAX))
            .saturating_add(o.timeout.saturating_mul(3))
            .saturating_add(Duration::from_secs(1))
            .min(Duration::from_secs(1 << 40));
        let names = o.servers.join(", ");
        let link = super::blocking::wait(py, Link::connect(a.opts), Some(Instant::now() + budget))?
            .ok_or_else(|| {
                PyTimeoutError::new_err(format!(
                    "cannot connect to NATS at {names}: no answer within {budget:?}"
                ))
            })?
            .map_err(to_pyerr)?;
        Ok(PyNatsChannel::new(link, a.codec, a.ack_on_receive))
    }

    /// Publish `item` and wait for JetStream to acknowledge it (awaitable).
    ///
    /// `msg_id`: a de-duplication id; the stream drops a second message
    /// with the same id within its de-duplication window.
    ///
    /// Raises:
    ///     ChannelClosed: this handle is closed.
    ///     TimeoutError: no ack from the server within `timeout` (the item
    ///         may or may not be stored: retry with the same `msg_id`).
    ///     ValueError: the item is larger than the server accepts.
    ///     TypeError: not bytes (without a codec).
    ///     BrokerError: the server refused it (no stream for the subject).
    ///
    /// Cancel safety: a cancelled send may or may not have been stored;
    /// with a `msg_id`, sending again is safe.
    #[pyo3(signature = (item, *, msg_id = None))]
    fn send<'py>(
        &self,
        py: Python<'py>,
        item: &Bound<'py, PyAny>,
        msg_id: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let p = self.one(item, msg_id)?;
        self.send_op(py, p, false, Default::default())
    }

    /// Publish every item of `items` in order, many in flight, and wait
    /// for all their acks (awaitable); resolves to the number sent.
    ///
    /// `msg_ids`: one de-duplication id per item.
    ///
    /// Raises:
    ///     ChannelClosed, TimeoutError, ValueError, TypeError, BrokerError:
    ///         as `send`; the exception's `sent` attribute tells how many
    ///         items (a prefix) were acknowledged.
    ///
    /// Cancel safety: a prefix of the items is stored, and some after it
    /// may be. Keep the operation (`op = ch.send_many(xs)`; `await op`):
    /// `op.sent` tells how many items JetStream acknowledged, also after
    /// a cancellation; with `msg_ids`, sending them all again is safe.
    #[pyo3(signature = (items, *, msg_ids = None))]
    fn send_many<'py>(
        &self,
        py: Python<'py>,
        items: &Bound<'py, PyAny>,
        msg_ids: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<NatsSendManyOp> {
        let p = self.payloads(items, msg_ids)?;
        let progress = Arc::new(Progress::default());
        let inner = self.send_op(py, p, true, progress.clone())?;
        Ok(NatsSendManyOp::new(inner.unbind(), progress))
    }

    /// Receive one item, waiting while none is available (awaitable).
    ///
    /// Raises:
    ///     ChannelClosed: this handle is closed.
    ///     ValueError: the item cannot be decoded with the codec; it is
    ///         terminated (`+TERM`: never delivered again, to any consumer).
    ///
    /// Cancel safety: nothing is lost. An item not yet handed over stays
    /// first in the local buffer; one already taken from it is handed back
    /// to the server for immediate redelivery.
    fn recv<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.recv_op(py, None, false)
    }

    /// Receive between 1 and `max_items` items as a list (awaitable).
    ///
    /// Raises:
    ///     ValueError: `max_items < 1`, or an item cannot be decoded.
    ///     ChannelClosed: this handle is closed.
    ///
    /// Cancel safety: as `recv()`.
    fn recv_many<'py>(
        &self,
        py: Python<'py>,
        max_items: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let n = args::max_items(max_items)?;
        self.recv_op(py, Some(n), false)
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The next item; `async for` ends once this handle is closed.
    ///
    /// Cancel safety: as `recv()`.
    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.recv_op(py, None, true)
    }

    /// Acknowledge the `count` oldest items received through this handle
    /// and not yet acknowledged: like `asyncio.Queue.task_done()`, once per
    /// item processed. The server then never delivers them again. Acks are
    /// sent in the background; `wait_closed()` waits for them.
    ///
    /// Raises:
    ///     ValueError: called more times than there were items received
    ///         (`count` of any size beyond them: nothing is acknowledged),
    ///         `count < 1`, or in `ack="on_receive"` mode.
    ///     TypeError: `count` is not an int (a bool is refused too).
    #[pyo3(signature = (count = None), text_signature = "($self, count=1)")]
    fn task_done(&self, count: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.check()?;
        let n = match count {
            None => 1,
            // asyncio's task_done() takes no argument: a bool here is a
            // mistake, not a count of 1.
            Some(count) if count.is_instance_of::<pyo3::types::PyBool>() => {
                return Err(PyTypeError::new_err("count must be an int, not bool"))
            }
            Some(count) => crate::args::index(count, "count")?,
        };
        if n < 1 {
            return Err(PyValueError::new_err(format!(
                "count must be >= 1, got {n}"
            )));
        }
        let count = usize::try_from(n).unwrap_or(usize::MAX);
        if self.ack_on_receive {
            return Err(PyValueError::new_err(
                "task_done() with ack='on_receive': items are acknowledged when received",
            ));
        }
        let replies: Vec<_> = {
            let mut u = self.link.unacked.lock().unwrap_or_else(|e| e.into_inner());
            if count > u.len() {
                return Err(PyValueError::new_err("task_done() called too many times"));
            }
            u.drain(..count).map(|(reply, _)| reply).collect()
        };
        for r in replies {
            let _ = self.link.acks.send(AckCmd::Ack(r));
        }
        self.link.touch();
        Ok(())
    }

    /// Close this handle; returns False if it was already closed.
    ///
    /// Sends and receives then raise `ChannelClosed` (`async for` ends).
    /// Every item pulled from the server and not yet received (in the
    /// local buffer or still on its way) is handed back to the server for
    /// immediate redelivery; items received and not yet
    /// acknowledged can still be acknowledged with `task_done()`. The
    /// stream, the consumer and other handles are not affected.
    ///
    /// In a child made by `fork()` from the process that connected it,
    /// does nothing and returns False: the connection is the parent's.
    fn close(&self) -> bool {
        if self.link.inherited() {
            return false;
        }
        self.link.close()
    }

    /// Wait until every ack and nak sent so far (on a closed handle: the
    /// naks of its buffered items) has been written to the server, or
    /// `timeout` (of `connect`) has passed while it is unreachable
    /// (awaitable). Bounded however many are pending: while the server is
    /// unreachable, acks the client cannot queue within `timeout` are
    /// dropped (the server delivers those items again).
    ///
    /// A closed handle's last pull requests live on for up to 2 s on the
    /// server; what they deliver is naked in the background as it
    /// arrives, while the process lives (after it exits, those items are
    /// delivered again after `ack_wait`). With a `max_deliver` limit, the
    /// buffer is handed back only once those requests have ended (a nak
    /// before could bring an item back to them, spending a delivery), and
    /// this waits for that: up to about 2 s.
    ///
    /// Cancel safety: cancelling only stops the waiting.
    fn wait_closed<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.check()?;
        let link = self.link.clone();
        // Without a `max_deliver` limit, close() naked the buffer at once
        // and the puller naks each late delivery as it comes: nothing to
        // wait for but the acker. With one, the buffer is naked once the
        // last pull requests have ended: wait for that. Bounded: the
        // session gives up after a few seconds, or `timeout`.
        let drained =
            (link.is_closed() && link.max_deliver() > 0).then(|| link.drained.subscribe());
        let bound = super::pull::ENDING_BOUND + link.opts.timeout;
        future_into_py(py, async move {
            super::rt::on_io(async move {
                if let Some(mut drained) = drained {
                    let _ = tokio::time::timeout(bound, drained.wait_for(|d| *d)).await;
                }
                let (tx, rx) = tokio::sync::oneshot::channel();
                let _ = link.acks.send(AckCmd::Flush(tx));
                let _ = rx.await;
            })
            .await?;
            Ok(())
        })
    }

    /// True once `close()` has been called.
    #[getter]
    fn closed(&self) -> bool {
        self.link.is_closed()
    }

    /// Number of items pulled ahead into the local buffer, not yet received.
    fn __len__(&self) -> PyResult<usize> {
        self.check()?;
        Ok(self.link.buffer.len())
    }

    /// A snapshot: `buffered`, `unacked` (received, waiting for
    /// `task_done`), `closed`, `servers`, `stream`, `subject`, `consumer`,
    /// `codec`, `ack`, `ack_wait` and `max_deliver` (None: no limit) in
    /// force.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.check()?;
        let o = &self.link.opts;
        // Read under the locks, then build the dict: no Python runs while
        // a Rust lock is held.
        let buffered = self.link.buffer.len();
        let unacked = self
            .link
            .unacked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        let d = PyDict::new(py);
        d.set_item("buffered", buffered)?;
        d.set_item("unacked", unacked)?;
        d.set_item("closed", self.link.is_closed())?;
        d.set_item("servers", o.servers.clone())?;
        d.set_item("stream", &o.stream)?;
        d.set_item("subject", &o.subject)?;
        d.set_item("consumer", &o.consumer)?;
        let max_deliver = self.link.max_deliver();
        d.set_item("ack_wait", self.link.ack_wait().as_secs_f64())?;
        d.set_item("max_deliver", (max_deliver > 0).then_some(max_deliver))?;
        d.set_item("codec", self.codec.name())?;
        d.set_item(
            "ack",
            if self.ack_on_receive {
                "on_receive"
            } else {
                "explicit"
            },
        )?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let o = &self.link.opts;
        format!(
            "<rustasync.NatsChannel servers={:?} stream={:?} subject={:?} consumer={:?} closed={}>",
            o.servers.join(","),
            o.stream,
            o.subject,
            o.consumer,
            self.link.is_closed()
        )
    }

    /// `send` from a plain thread: blocks (interpreter released) until
    /// JetStream acknowledges the item.
    ///
    /// Raises:
    ///     TimeoutError: not acknowledged within `timeout` seconds (or the
    ///         channel's `timeout`).
    ///     ChannelClosed, ValueError, TypeError, BrokerError: as `send`.
    #[pyo3(signature = (item, *, msg_id = None, timeout = None))]
    fn send_blocking(
        &self,
        py: Python<'_>,
        item: &Bound<'_, PyAny>,
        msg_id: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let p = self.one(item, msg_id)?;
        self.send_blocking_impl(py, p, timeout).map(|_| ())
    }

    /// `send_many` from a plain thread; returns the number sent.
    ///
    /// Raises:
    ///     as `send_blocking`, with the `sent` attribute of `send_many`.
    #[pyo3(signature = (items, *, msg_ids = None, timeout = None))]
    fn send_many_blocking(
        &self,
        py: Python<'_>,
        items: &Bound<'_, PyAny>,
        msg_ids: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let p = self.payloads(items, msg_ids)?;
        self.send_blocking_impl(py, p, timeout)
    }

    /// `recv` from a plain thread, blocking (interpreter released) while
    /// no item is available.
    ///
    /// Raises:
    ///     TimeoutError: nothing arrived within `timeout` seconds.
    ///     ChannelClosed: this handle is closed.
    #[pyo3(signature = (timeout = None))]
    fn recv_blocking(
        &self,
        py: Python<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.recv_blocking_impl(py, None, timeout)
    }

    /// `recv_many` from a plain thread.
    ///
    /// Raises:
    ///     TimeoutError, ChannelClosed: as `recv_blocking`.
    ///     ValueError: `max_items < 1`.
    #[pyo3(signature = (max_items, timeout = None))]
    fn recv_many_blocking(
        &self,
        py: Python<'_>,
        max_items: &Bound<'_, PyAny>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let n = args::max_items(max_items)?;
        self.recv_blocking_impl(py, Some(n), timeout)
    }
}

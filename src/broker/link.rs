//! The connection to NATS and the JetStream objects behind one
//! `NatsChannel`: no Python here.
//!
//! A [`Link`] owns the client, the JetStream context, the stream's and the
//! durable consumer's names, and two background tokio tasks:
//!
//! * the **puller** ([`super::pull`]), started by the first receive, which
//!   binds the durable consumer (creating it if it is missing: a handle
//!   that only sends never does) and keeps a bounded local buffer (a
//!   [`crate::core::Channel`]) filled from it;
//! * the **acker** ([`super::pull::run_acker`]), which sends acks and naks
//!   in bursts, without a flush per message.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::{self, consumer, stream};
use async_nats::{ConnectErrorKind, ServerAddr, Subject};
use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};

use super::pull::{AckCmd, Delivery};
use super::settings::{self, InForce};
use crate::core;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What can go wrong, in Rust terms; `super::shell` maps each to a Python
/// exception.
#[derive(Debug)]
pub enum Error {
    /// An unparsable server URL.
    BadUrl(String),
    /// No server could be reached (or the connection was refused).
    Connect(String),
    /// The stream does not exist (and was not to be created).
    StreamMissing(String),
    /// A message larger than the server's `max_payload`.
    TooLarge(String),
    /// No reply from the server in time (acks, API calls).
    Timeout(String),
    /// This handle was closed.
    Closed,
    /// Anything else the server or the client reported.
    Other(String),
}

/// How to connect and what to bind to.
pub struct Options {
    pub servers: Vec<String>,
    pub stream: String,
    pub subject: String,
    pub consumer: String,
    pub create: bool,
    pub memory: bool,
    pub replicas: usize,
    pub dedup_window: Duration,
    /// None: the existing consumer's, or 30 s for one created.
    pub ack_wait: Option<Duration>,
    /// None: the existing consumer's, or no limit (-1) for one created.
    pub max_deliver: Option<i64>,
    pub prefetch: usize,
    pub max_inflight: usize,
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

/// Pull requests a consumer created here lets wait at once (the server's
/// default is 512; each receiving handle keeps one or two waiting).
pub const MAX_WAITING: i64 = 16_384;

/// `ack_wait` of a consumer created without one.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

/// One connection, one stream, one durable consumer.
pub struct Link {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub opts: Options,
    stream: stream::Stream,
    /// The consumer's `ack_wait` (in nanoseconds) and `max_deliver` (-1:
    /// no limit): the existing consumer's, else those it is created with;
    /// read again each time the puller binds the consumer.
    ack_wait: AtomicU64,
    max_deliver: AtomicI64,
    /// Why the puller gave up (the consumer's settings are not those
    /// given): receives raise it once the handle is closed.
    failure: Mutex<Option<String>>,
    /// Set once the puller has ended its last pull session: everything it
    /// pulled is in the buffer or handed back.
    pub drained: tokio::sync::watch::Sender<bool>,
    /// Bounds the publishes waiting for their JetStream ack, across calls.
    inflight: Arc<Semaphore>,
    /// Items pulled from the server, not yet handed to the application.
    pub buffer: Arc<core::Channel<Delivery>>,
    pub acks: mpsc::UnboundedSender<AckCmd>,
    /// Reply subjects of items handed out and not yet acknowledged, with
    /// when each was handed out, oldest first (explicit-ack mode).
    pub unacked: Mutex<VecDeque<(Subject, Instant)>>,
    pulling: AtomicBool,
    closed: AtomicBool,
    pub shutdown: tokio::sync::Notify,
    /// Poked when a receive starts or ends (it took items: room for more).
    pub room: tokio::sync::Notify,
    /// Receives in progress, and when the last one ended (milliseconds
    /// since `born`).
    receives: AtomicUsize,
    last_receive: AtomicU64,
    born: Instant,
    /// The fork generation this link was connected in. In a forked child
    /// the runtime, the tasks and the socket behind it are the parent's:
    /// the child must not touch them (see [`Link::inherited`]).
    generation: u64,
}

fn servers_text(servers: &[String]) -> String {
    servers.join(", ")
}

impl Link {
    /// Connect, find (or create) the stream and bind the durable consumer.
    pub async fn connect(opts: Options) -> Result<Arc<Link>, Error> {
        let names = servers_text(&opts.servers);
        let addrs = opts
            .servers
            .iter()
            .map(|s| {
                s.parse::<ServerAddr>()
                    .map_err(|e| Error::BadUrl(format!("invalid NATS server URL {s:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client = async_nats::ConnectOptions::new()
            .name("rustasync")
            .connection_timeout(opts.connect_timeout)
            .max_reconnects(None)
            .connect(addrs)
            .await
            .map_err(|e| {
                let why = match e.kind() {
                    ConnectErrorKind::TimedOut => "timed out".to_owned(),
                    _ => e.to_string(),
                };
                Error::Connect(format!("cannot connect to NATS at {names}: {why}"))
            })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(opts.timeout)
            // Our own semaphore bounds what is in flight; the context's
            // must never be the one that blocks.
            .max_ack_inflight(opts.max_inflight.saturating_mul(2).saturating_add(64))
            .backpressure_on_inflight(true)
            .build(client.clone());
        let stream = Self::bind_stream(&js, &opts, &names).await?;
        let (ack_wait, max_deliver) = Self::check_consumer(&client, &stream, &opts).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(super::pull::run_acker(client.clone(), rx, opts.timeout));
        Ok(Arc::new(Link {
            client,
            js,
            inflight: Arc::new(Semaphore::new(opts.max_inflight)),
            buffer: Arc::new(core::Channel::new(Some(opts.prefetch))),
            stream,
            ack_wait: AtomicU64::new(nanos(ack_wait)),
            max_deliver: AtomicI64::new(max_deliver),
            failure: Mutex::new(None),
            drained: tokio::sync::watch::Sender::new(false),
            opts,
            acks: tx,
            unacked: Mutex::new(VecDeque::new()),
            pulling: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            shutdown: tokio::sync::Notify::new(),
            room: tokio::sync::Notify::new(),
            receives: AtomicUsize::new(0),
            last_receive: AtomicU64::new(0),
            born: Instant::now(),
            generation: crate::runtime::fork_generation(),
        }))
    }

    async fn bind_stream(
        js: &jetstream::Context,
        opts: &Options,
        names: &str,
    ) -> Result<stream::Stream, Error> {
        match js.get_stream(&opts.stream).await {
            Ok(s) => return Ok(s),
            Err(e) => match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND => {}
                jetstream::context::GetStreamErrorKind::Request => {
                    return Err(Error::Timeout(format!(
                        "no JetStream reply from {names} for stream {:?} \
                         (JetStream disabled, or a cluster still electing its leader): {e}",
                        opts.stream
                    )))
                }
                _ => return Err(Error::Other(format!("stream {:?}: {e}", opts.stream))),
            },
        }
        if !opts.create {
            return Err(Error::StreamMissing(format!(
                "stream {:?} does not exist on {names} (pass create=True to create it)",
                opts.stream
            )));
        }
        let config = stream::Config {
            name: opts.stream.clone(),
            subjects: vec![opts.subject.clone()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: if opts.memory {
                stream::StorageType::Memory
            } else {
                stream::StorageType::File
            },
            num_replicas: opts.replicas,
            duplicate_window: opts.dedup_window,
            ..Default::default()
        };
        js.get_or_create_stream(config)
            .await
            .map_err(|e| Error::Other(format!("cannot create stream {:?}: {e}", opts.stream)))
    }

    /// Check the durable consumer's settings, if it exists, against those
    /// given ([`settings::check`]). Returns the `ack_wait` and
    /// `max_deliver` in force. Creates nothing: the puller does, on the
    /// first receive ([`Link::bind_consumer`]).
    async fn check_consumer(
        client: &async_nats::Client,
        stream: &stream::Stream,
        opts: &Options,
    ) -> Result<InForce, Error> {
        let info = match stream.consumer_info(&opts.consumer).await {
            Ok(info) => info,
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
                return Ok((
                    opts.ack_wait.unwrap_or(DEFAULT_ACK_WAIT),
                    opts.max_deliver.unwrap_or(-1),
                ))
            }
            Err(e) if e.kind() == ConsumerInfoErrorKind::TimedOut => {
                return Err(Error::Timeout(format!(
                    "no JetStream reply for consumer {:?}: {e}",
                    opts.consumer
                )))
            }
            Err(e) => return Err(Error::Other(format!("consumer {:?}: {e}", opts.consumer))),
        };
        let filters = settings::filter_subjects(client, opts).await?;
        let subjects = &stream.cached_info().config.subjects;
        settings::check(&info.config, &filters, subjects, opts)
    }

    /// The durable consumer, created with this handle's settings if it is
    /// missing (one that appeared since [`Link::connect`] is used as it is).
    pub async fn bind_consumer(&self) -> Result<consumer::PullConsumer, Error> {
        let config = consumer::pull::Config {
            durable_name: Some(self.opts.consumer.clone()),
            filter_subject: self.opts.subject.clone(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait(),
            max_deliver: self.max_deliver(),
            max_ack_pending: 65_536,
            // Every receiving handle keeps a pull request or two waiting:
            // the server's default (512) would starve handles beyond it.
            max_waiting: MAX_WAITING,
            num_replicas: 0,
            ..Default::default()
        };
        let c: consumer::PullConsumer = self
            .stream
            .get_or_create_consumer(&self.opts.consumer, config)
            .await
            .map_err(|e| Error::Other(format!("consumer {:?}: {e}", self.opts.consumer)))?;
        let filters = settings::filter_subjects(&self.client, &self.opts).await?;
        let subjects = &self.stream.cached_info().config.subjects;
        match settings::check(&c.cached_info().config, &filters, subjects, &self.opts) {
            Ok((ack_wait, max_deliver)) => {
                self.ack_wait.store(nanos(ack_wait), Ordering::Release);
                self.max_deliver.store(max_deliver, Ordering::Release);
                Ok(c)
            }
            Err(e) => {
                if let Error::Other(why) = &e {
                    *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
                    self.close();
                }
                Err(e)
            }
        }
    }

    /// The consumer's `ack_wait` in force.
    pub fn ack_wait(&self) -> Duration {
        Duration::from_nanos(self.ack_wait.load(Ordering::Acquire))
    }

    /// The consumer's `max_deliver` in force (-1: no limit).
    pub fn max_deliver(&self) -> i64 {
        self.max_deliver.load(Ordering::Acquire)
    }

    /// Why the puller closed this handle, if it did: the consumer's
    /// settings are not those given.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The application did something with its items (a receive or
    /// `task_done()` ended): the idle window starts again.
    pub fn touch(&self) {
        let now = self.born.elapsed().as_millis() as u64;
        self.last_receive.fetch_max(now, Ordering::AcqRel);
    }

    /// Mark a receive in progress until the guard is dropped: the puller
    /// pulls, and keeps buffered items alive, while the application
    /// receives.
    pub fn receiving_guard(self: &Arc<Self>) -> ReceiveGuard {
        self.receives.fetch_add(1, Ordering::AcqRel);
        self.room.notify_one();
        ReceiveGuard(self.clone())
    }

    /// True while the application works with this handle: a receive is in
    /// progress, or the oldest item it received and has not acknowledged
    /// was handed over less than `ack_wait` ago (it is processing it), or
    /// a receive or `task_done()` ended within the last three quarters of
    /// `ack_wait`. An item unacknowledged for longer has been delivered
    /// elsewhere by now: its holder is stuck (a forgotten `task_done()`, a
    /// hung worker), and must not keep its buffer alive for ever.
    pub fn receiving(&self) -> bool {
        if self.receives.load(Ordering::Acquire) > 0 {
            return true;
        }
        let ack_wait = self.ack_wait();
        let oldest = self
            .unacked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .front()
            .map(|&(_, at)| at);
        if oldest.is_some_and(|at| at.elapsed() < ack_wait) {
            return true;
        }
        self.idle_for() < ack_wait * 3 / 4
    }

    /// How long since a receive or `task_done()` last ended.
    pub fn idle_for(&self) -> Duration {
        let now = self.born.elapsed().as_millis() as u64;
        let last = self.last_receive.load(Ordering::Acquire);
        Duration::from_millis(now.saturating_sub(last))
    }

    /// How often buffered items are kept alive: a quarter of `ack_wait`.
    pub fn keepalive_period(&self) -> Duration {
        (self.ack_wait() / 4).max(Duration::from_millis(20))
    }

    /// Restart the ack wait of every item waiting in the buffer.
    pub fn keep_buffered_alive(&self) {
        let mut replies = Vec::new();
        let _ = self.buffer.try_for_each_item(|d| {
            replies.push(d.reply.clone());
            Ok::<(), ()>(())
        });
        for reply in replies {
            let _ = self.acks.send(AckCmd::Progress(reply));
        }
    }

    /// True in a forked child of the process that connected this link:
    /// its runtime has no threads there and its locks may be held forever.
    pub fn inherited(&self) -> bool {
        self.generation != crate::runtime::fork_generation()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Close this handle: stop pulling, hand the buffered items back to the
    /// server (and those still arriving: see [`super::pull`]). Returns
    /// false if it was already closed.
    pub fn close(&self) -> bool {
        if self.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.buffer.close();
        let pulling = self.pulling.swap(true, Ordering::AcqRel);
        if !pulling || self.max_deliver() <= 0 {
            // At once: other consumers get them now. A nak'd item may come
            // back to one of this handle's last pull requests (the puller
            // naks it again once they have ended), which spends a
            // delivery: with a `max_deliver` limit, the puller hands the
            // buffer back only once its pull requests have ended.
            super::pull::hand_back(self);
        }
        if pulling {
            self.shutdown.notify_waiters();
            self.shutdown.notify_one();
        } else {
            // No puller, and none will start: nothing to wait for.
            self.drained.send_replace(true);
        }
        true
    }

    /// Nak every item received and not acknowledged: the server delivers
    /// them again at once. For a handle that is gone (nothing can
    /// acknowledge them any more).
    pub fn hand_back_unacked(&self) {
        let replies: Vec<Subject> = {
            let mut u = self.unacked.lock().unwrap_or_else(|e| e.into_inner());
            u.drain(..).map(|(reply, _)| reply).collect()
        };
        for reply in replies {
            let _ = self.acks.send(AckCmd::Nak(reply));
        }
    }

    /// Start the puller on the first receive.
    pub fn ensure_pulling(self: &Arc<Self>) {
        if !self.pulling.swap(true, Ordering::AcqRel) {
            match super::rt::io_runtime() {
                Ok(rt) => drop(rt.spawn(super::pull::run_puller(self.clone()))),
                // No runtime, no puller: the next receive tries again.
                Err(_) => self.pulling.store(false, Ordering::Release),
            }
        }
    }

    /// Publish `items` to the stream, many in flight, and wait for every
    /// JetStream ack. On failure, returns how many were acknowledged (a
    /// prefix) with the error.
    /// `progress` follows the count, and how many items were handed to
    /// the client (an upper bound of what may be stored), for a caller
    /// that stops waiting.
    pub async fn publish(
        &self,
        items: Vec<(Bytes, Option<String>)>,
        progress: Arc<Progress>,
    ) -> Result<usize, (usize, Error)> {
        let mut acked = 0usize;
        let mut waiting: VecDeque<InFlight> = VecDeque::new();
        for (payload, id) in items {
            if self.is_closed() {
                return Err((acked, Error::Closed));
            }
            // Never block on the shared limit while holding acks of our own:
            // collect our oldest first.
            let permit = loop {
                match self.inflight.clone().try_acquire_owned() {
                    Ok(p) => break p,
                    Err(_) => match waiting.pop_front() {
                        Some(f) => {
                            self.finish(f).await.map_err(|e| (acked, e))?;
                            acked += 1;
                            progress.sent.store(acked, Ordering::Relaxed);
                        }
                        None => {
                            break self
                                .inflight
                                .clone()
                                .acquire_owned()
                                .await
                                .map_err(|_| (acked, Error::Closed))?
                        }
                    },
                }
            };
            // Counted before it goes: cancelled halfway, it may be stored.
            progress.published.fetch_add(1, Ordering::Relaxed);
            match self.send_one(&payload, &id).await {
                Ok(ack) => waiting.push_back(InFlight {
                    ack,
                    payload,
                    id,
                    _permit: permit,
                }),
                Err(e) => {
                    // What is already on its way counts: `sent` is then
                    // exactly the prefix stored before this item.
                    for f in waiting.drain(..) {
                        self.finish(f).await.map_err(|e| (acked, e))?;
                        acked += 1;
                        progress.sent.store(acked, Ordering::Relaxed);
                    }
                    return Err((acked, publish_error(e, &self.opts)));
                }
            }
        }
        while let Some(f) = waiting.pop_front() {
            self.finish(f).await.map_err(|e| (acked, e))?;
            acked += 1;
            progress.sent.store(acked, Ordering::Relaxed);
        }
        Ok(acked)
    }

    async fn send_one(
        &self,
        payload: &Bytes,
        id: &Option<String>,
    ) -> Result<PublishAckFuture, PublishError> {
        let mut msg = jetstream::message::PublishMessage::build().payload(payload.clone());
        if let Some(id) = id {
            msg = msg.message_id(id);
        }
        self.js.send_publish(self.opts.subject.clone(), msg).await
    }

    /// Wait for one ack. "No responders" (no stream leader: a cluster is
    /// electing one after losing a node) is retried every 250 ms for up to
    /// `timeout`, as the official clients do.
    async fn finish(&self, f: InFlight) -> Result<(), Error> {
        let InFlight {
            mut ack,
            payload,
            id,
            _permit,
        } = f;
        let give_up = tokio::time::Instant::now() + self.opts.timeout;
        loop {
            match ack.await {
                Ok(_) => return Ok(()),
                Err(e)
                    if e.kind() == PublishErrorKind::StreamNotFound
                        && tokio::time::Instant::now() < give_up =>
                {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    ack = self
                        .send_one(&payload, &id)
                        .await
                        .map_err(|e| publish_error(e, &self.opts))?;
                }
                Err(e) => return Err(publish_error(e, &self.opts)),
            }
        }
    }
}

/// How far a publish got: `sent`, the prefix JetStream acknowledged;
/// `published`, the items handed to the client for the server. Whatever
/// was stored of them is at least `sent` and at most `published` items.
#[derive(Default)]
pub struct Progress {
    pub sent: AtomicUsize,
    pub published: AtomicUsize,
}

/// A receive in progress ([`Link::receiving_guard`]).
pub struct ReceiveGuard(Arc<Link>);

impl Drop for ReceiveGuard {
    fn drop(&mut self) {
        let link = &self.0;
        link.touch();
        link.receives.fetch_sub(1, Ordering::AcqRel);
        link.room.notify_one();
    }
}

/// A publish waiting for its ack, with what is needed to send it again.
struct InFlight {
    ack: PublishAckFuture,
    payload: Bytes,
    id: Option<String>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

fn publish_error(e: jetstream::context::PublishError, opts: &Options) -> Error {
    match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => Error::TooLarge(format!(
            "message too large for NATS at {}: {e}",
            servers_text(&opts.servers)
        )),
        PublishErrorKind::TimedOut => Error::Timeout(format!(
            "no JetStream ack within {:?} from {} (stream {:?})",
            opts.timeout,
            servers_text(&opts.servers),
            opts.stream
        )),
        PublishErrorKind::StreamNotFound => Error::StreamMissing(format!(
            "no stream takes subject {:?} on {}",
            opts.subject,
            servers_text(&opts.servers)
        )),
        _ => Error::Other(format!("publish to {:?} failed: {e}", opts.subject)),
    }
}

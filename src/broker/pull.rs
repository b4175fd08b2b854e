//! The two background tasks of a [`Link`]: the puller fills the local
//! buffer from the durable pull consumer; the acker sends acks and naks.
//!
//! # Flow control
//!
//! The puller subscribes to an inbox of its own and sends the pull
//! requests itself, for no more items than the local buffer has room for
//! (counting those requested and not yet delivered). Everything the server
//! delivers therefore goes straight into the buffer: nothing waits inside
//! the client where `close()` could not reach it. When a pull session ends
//! because the handle closes or goes idle, no more requests are sent and
//! the inbox is read until each request made has ended (its items all
//! delivered, or its expiry or end reported); only then is it
//! unsubscribed, and whatever a closed handle received is naked, so the
//! server hands it to another consumer at once. Unsubscribing earlier
//! would drop the items already on their way: they would wait for
//! `ack_wait`.
//!
//! # Items waiting in the buffer
//!
//! While the application works with the handle (a receive in progress,
//! an item received less than `ack_wait` ago and not acknowledged, or a
//! receive or a `task_done()` within the last three quarters of
//! `ack_wait`), buffered items are kept alive with `+WPI` (work in
//! progress) every quarter of `ack_wait`: waiting in the buffer does not
//! use up their ack wait. An idle handle (or one stuck on an item it never
//! acknowledges) pulls no more until it receives again, and hands its
//! buffered items back (naks them); with a deliveries limit, only after a
//! few times `ack_wait` (see [`idle`]).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::BatchConfig;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::{StatusCode, Subject};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::link::Link;
use crate::core::TrySendError;

/// How often the server shows a pull request is alive while it has nothing
/// to deliver; three missed in a row start a new pull session, so a
/// receiver waits about this long three times after a node or a leader is
/// lost.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long the server keeps one pull request: short, as a session that
/// ends (close, idle) waits for its requests to end (at least twice the
/// heartbeat, as the server requires).
const EXPIRES: Duration = Duration::from_secs(2);

/// The longest a closing session reads on for its pull requests to end
/// (and the margin the missed heartbeats allow).
pub const ENDING_BOUND: Duration = Duration::from_secs(2 + 3);

const MIN_PAUSE: Duration = Duration::from_millis(20);

/// One message pulled from the consumer and not yet acknowledged.
pub struct Delivery {
    pub payload: Bytes,
    /// Where the ack goes (`$JS.ACK.<stream>.<consumer>...`).
    pub reply: Subject,
    /// When it arrived: its ack wait started then (or at a keep-alive since).
    pub arrived: Instant,
}

/// What the acker sends for a delivery, or a request to flush.
pub enum AckCmd {
    Ack(Subject),
    /// Give it back for redelivery now.
    Nak(Subject),
    /// Still being worked on: restart its ack wait.
    Progress(Subject),
    /// Never deliver it again.
    Term(Subject),
    /// Flush what was sent so far, then answer.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Send acks and naks as they come, many per write; flush after each
/// burst so that a quiet acker leaves nothing buffered. Bounded while the
/// server is unreachable: a burst gives up once the client has taken
/// nothing for `timeout` (its queue is full), drops what is queued behind
/// it and answers the flushes waiting there. Whatever was not written is
/// delivered again by the server, as at-least-once allows.
pub async fn run_acker(
    client: async_nats::Client,
    mut rx: mpsc::UnboundedReceiver<AckCmd>,
    timeout: Duration,
) {
    let mut burst = Vec::with_capacity(256);
    while rx.recv_many(&mut burst, 4096).await > 0 {
        let mut flushed = Vec::new();
        let mut stalled = false;
        for cmd in burst.drain(..) {
            let (reply, body): (Subject, &'static [u8]) = match cmd {
                AckCmd::Ack(reply) => (reply, b"+ACK"),
                AckCmd::Nak(reply) => (reply, b"-NAK"),
                AckCmd::Progress(reply) => (reply, b"+WPI"),
                AckCmd::Term(reply) => (reply, b"+TERM"),
                AckCmd::Flush(done) => {
                    flushed.push(done);
                    continue;
                }
            };
            if stalled {
                continue;
            }
            // Fails only once the client is gone; times out while its
            // queue is full (no connection).
            let sent = client.publish(reply, Bytes::from_static(body));
            stalled = tokio::time::timeout(timeout, sent).await.is_err();
        }
        if stalled {
            // Everything queued behind the stall goes the same way; the
            // flushes among it are answered.
            while let Ok(cmd) = rx.try_recv() {
                if let AckCmd::Flush(done) = cmd {
                    flushed.push(done);
                }
            }
        } else {
            let _ = tokio::time::timeout(timeout, client.flush()).await;
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
    let _ = tokio::time::timeout(timeout, client.flush()).await;
}

/// Why a pull session ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// The handle was closed.
    Closed,
    /// The application stopped receiving.
    Idle,
    /// The connection, the pull request or the consumer's leader was lost.
    Lost,
    /// The consumer was deleted (or cannot be pulled from): bind it again.
    ConsumerGone,
}

/// Keep the local buffer filled from the consumer until the link is
/// closed. Errors (server restarts, leader changes, a consumer deleted
/// under us) are retried with a growing pause; receivers just wait.
pub async fn run_puller(link: Arc<Link>) {
    let mut pause = MIN_PAUSE;
    let mut consumer: Option<PullConsumer> = None;
    while !link.is_closed() {
        if !link.receiving() {
            idle(&link).await;
            continue;
        }
        let c = match &consumer {
            Some(c) => c.clone(),
            None => match link.bind_consumer().await {
                Ok(c) => consumer.insert(c).clone(),
                Err(_) => {
                    backoff(&link, &mut pause).await;
                    continue;
                }
            },
        };
        match session(&link, &c, &mut pause).await {
            End::Closed => break,
            End::Idle => {}
            End::Lost => backoff(&link, &mut pause).await,
            End::ConsumerGone => {
                consumer = None;
                backoff(&link, &mut pause).await;
            }
        }
    }
    hand_back(&link);
    link.drained.send_replace(true);
}

/// How long an idle handle keeps its buffered items alive when the
/// consumer limits deliveries, in multiples of `ack_wait` since it last
/// received or acknowledged.
const IDLE_KEEP_WAITS: u32 = 4;

/// Nobody receives: pull nothing until someone does. Buffered items go
/// back to the server, unless the consumer limits deliveries: then a nak
/// would spend one of an item's few deliveries without the application
/// ever seeing it, so they are kept alive here instead (the handle holds
/// at most `prefetch` of them; close() hands them back), for
/// [`IDLE_KEEP_WAITS`] times `ack_wait`: a handle idle that long (or
/// stuck on an item it never acknowledges) hands them back too, rather
/// than hold them from other consumers for ever.
async fn idle(link: &Link) {
    let keep = link.max_deliver() > 0 && link.idle_for() < link.ack_wait() * IDLE_KEEP_WAITS;
    if !keep {
        hand_back(link);
    }
    let tick = link.keepalive_period();
    tokio::select! {
        _ = link.room.notified() => {}
        _ = link.shutdown.notified() => {}
        _ = tokio::time::sleep(tick), if keep && !link.buffer.is_empty() => {
            link.keep_buffered_alive();
        }
    }
}

/// Nak everything buffered: the server redelivers it at once.
pub fn hand_back(link: &Link) {
    for d in link.buffer.take_all() {
        let _ = link.acks.send(AckCmd::Nak(d.reply));
    }
}

/// One subscription and the pull requests answered on it.
///
/// A session that ends because the handle closes or goes idle first lets
/// every pull request it made end ([`pull`]): only then is the inbox
/// unsubscribed, so nothing the server sent for them is dropped on the
/// way (items then still on the wire would wait for `ack_wait`). Lost
/// sessions (their pull requests are believed gone) are unsubscribed at
/// once, and what still arrives within `timeout` is naked.
async fn session(link: &Link, consumer: &PullConsumer, pause: &mut Duration) -> End {
    let inbox = Subject::from(link.client.new_inbox());
    let Ok(mut sub) = link.client.subscribe(inbox.clone()).await else {
        return End::Lost;
    };
    // Deliveries not for the buffer (closed, or more than it holds):
    // naked once no pull request of ours is left for the server to
    // hand them to again.
    let mut refused = Vec::new();
    let end = pull(link, consumer, &inbox, &mut sub, pause, &mut refused).await;
    let give_back = |replies: &mut Vec<Subject>| {
        for reply in replies.drain(..) {
            let _ = link.acks.send(AckCmd::Nak(reply));
        }
    };
    match end {
        End::Closed | End::Idle => {
            let _ = sub.unsubscribe().await;
            give_back(&mut refused);
        }
        End::Lost | End::ConsumerGone => {
            give_back(&mut refused);
            let _ = tokio::time::timeout(link.opts.timeout, async {
                if sub.drain().await.is_ok() {
                    while let Some(m) = sub.next().await {
                        if let Some(reply) = m.reply.filter(|_| m.status.is_none()) {
                            let _ = link.acks.send(AckCmd::Nak(reply));
                        }
                    }
                }
            })
            .await;
        }
    }
    end
}

/// Send pull requests and store what they deliver, until the handle
/// closes, goes idle, or the session is lost. Closing or idle, it stops
/// asking and reads on until every request it made has ended (each item
/// delivered, or the request's end seen), for at most [`EXPIRES`] after
/// the last one (plus a heartbeat's margin): pull requests are short so
/// that this ends soon.
async fn pull(
    link: &Link,
    consumer: &PullConsumer,
    inbox: &Subject,
    sub: &mut async_nats::Subscriber,
    pause: &mut Duration,
    refused: &mut Vec<Subject>,
) -> End {
    let prefetch = link.opts.prefetch;
    // Requested and neither delivered nor expired yet.
    let mut pending = 0usize;
    let mut heard = Instant::now();
    let mut asked_last = Instant::now();
    let tick = link.keepalive_period();
    let mut next_tick = Instant::now() + tick;
    // Set once the session is ending: no more pull requests.
    let mut stopping: Option<End> = None;
    loop {
        if link.is_closed() {
            stopping = Some(End::Closed);
        }
        if let Some(end) = stopping.filter(|_| pending == 0) {
            return end;
        }
        let room = prefetch.saturating_sub(link.buffer.len() + pending);
        if stopping.is_none() && room > 0 && (pending == 0 || room * 2 >= prefetch) {
            let request = BatchConfig {
                batch: room,
                expires: Some(EXPIRES),
                idle_heartbeat: HEARTBEAT,
                ..Default::default()
            };
            // Bounded: the client's queue is full while it has no connection.
            let asked = consumer.request_batch(request, inbox.clone());
            let sent = tokio::select! {
                r = tokio::time::timeout(link.opts.timeout, asked) => r,
                _ = link.shutdown.notified() => {
                    // It may have gone out: read on as for the others.
                    pending += room;
                    asked_last = Instant::now();
                    heard = Instant::now();
                    stopping = Some(End::Closed);
                    continue;
                }
            };
            if !matches!(sent, Ok(Ok(()))) {
                return End::Lost;
            }
            if pending == 0 {
                heard = Instant::now();
            }
            pending += room;
            asked_last = Instant::now();
        }
        tokio::select! {
            m = sub.next() => {
                let Some(m) = m else { return End::Lost };
                heard = Instant::now();
                match status(&m) {
                    Status::Item(reply) => {
                        pending = pending.saturating_sub(1);
                        *pause = MIN_PAUSE;
                        let d = Delivery {
                            payload: m.payload,
                            reply,
                            arrived: Instant::now(),
                        };
                        if let Err(reply) = store(link, d, stopping.is_some()).await {
                            if link.max_deliver() <= 0 {
                                // Naked now it may come back here, but each
                                // return uses up one item of this handle's
                                // last pull requests: they end soon, and it
                                // goes to another consumer.
                                let _ = link.acks.send(AckCmd::Nak(reply));
                            } else {
                                // A return would spend one of its few
                                // deliveries: nak it once no request is left.
                                refused.push(reply);
                            }
                        }
                    }
                    Status::Heartbeat => {}
                    Status::Ended(n) => pending = pending.saturating_sub(n),
                    Status::Lost => return stopping.unwrap_or(End::Lost),
                    Status::ConsumerGone => return End::ConsumerGone,
                }
            }
            _ = link.room.notified(), if stopping.is_none() => {}
            _ = tokio::time::sleep_until(heard + HEARTBEAT * 3), if pending > 0 => {
                // The pull request is gone (a node or the consumer's
                // leader died): start over.
                *pause = MIN_PAUSE;
                return stopping.unwrap_or(End::Lost);
            }
            _ = tokio::time::sleep_until(asked_last + EXPIRES + HEARTBEAT), if stopping.is_some() => {
                // Every request has expired on the server by now.
                return stopping.unwrap_or(End::Lost);
            }
            _ = tokio::time::sleep_until(next_tick) => {
                next_tick = Instant::now() + tick;
                if stopping.is_none() && !link.receiving() {
                    stopping = Some(End::Idle);
                }
                // Also while ending: what waits for the requests to end
                // must not use up its ack wait.
                link.keep_buffered_alive();
                for reply in refused.iter() {
                    let _ = link.acks.send(AckCmd::Progress(reply.clone()));
                }
            }
            _ = link.shutdown.notified(), if stopping != Some(End::Closed) => {
                stopping = Some(End::Closed);
            }
        }
    }
}

/// Put a delivery in the buffer; it has room for it unless the server sent
/// more than was asked for (then wait for room, unless the session is
/// `ending`: nobody may be receiving). A closed buffer refuses it: its
/// ack subject comes back.
async fn store(link: &Link, d: Delivery, ending: bool) -> Result<(), Subject> {
    let d = match link.buffer.try_send(d) {
        Ok(()) => return Ok(()),
        Err(TrySendError::Full(d)) if !ending => d,
        Err(TrySendError::Full(d) | TrySendError::Closed(d)) => return Err(d.reply),
    };
    link.buffer.send(d).await.map_err(|c| c.0.reply)
}

enum Status {
    /// A stored message, with the subject its ack goes to.
    Item(Subject),
    Heartbeat,
    /// A pull request ended with this many items undelivered.
    Ended(usize),
    /// Start a new session (and a new pull request).
    Lost,
    ConsumerGone,
}

fn status(m: &async_nats::Message) -> Status {
    let Some(code) = m.status.filter(|&c| c != StatusCode::OK) else {
        return match &m.reply {
            Some(reply) => Status::Item(reply.clone()),
            None => Status::Heartbeat,
        };
    };
    let description = m.description.as_deref().unwrap_or("");
    if code == StatusCode::IDLE_HEARTBEAT {
        return Status::Heartbeat;
    }
    if description == "Consumer Deleted" || description == "Consumer is push based" {
        return Status::ConsumerGone;
    }
    if code == StatusCode::TIMEOUT || code == StatusCode::REQUEST_TERMINATED {
        // The request expired or was ended (e.g. a leader change), with
        // what it had left to deliver; without that count, start over.
        let left = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Pending-Messages"))
            .and_then(|v| v.as_str().parse::<usize>().ok());
        return match left {
            Some(n) => Status::Ended(n),
            None => Status::Lost,
        };
    }
    // No responders (no leader), and anything unexpected.
    Status::Lost
}

async fn backoff(link: &Link, pause: &mut Duration) {
    tokio::select! {
        _ = tokio::time::sleep(*pause) => {}
        _ = link.shutdown.notified() => {}
    }
    *pause = (*pause * 2).min(Duration::from_secs(1));
}

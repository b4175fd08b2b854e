//! The two background tasks of a [`Link`]: the puller fills the local
//! buffer from the durable pull consumer; the acker sends acks and naks.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::MessagesErrorKind;
use async_nats::Subject;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::link::Link;

/// How often the server shows a pull request is alive while it has nothing
/// to deliver; two missed in a row start a new pull request, so a receiver
/// waits about this long twice after a node or a leader is lost.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// One message pulled from the consumer and not yet acknowledged.
pub struct Delivery {
    pub payload: Bytes,
    /// Where the ack goes (`$JS.ACK.<stream>.<consumer>...`).
    pub reply: Subject,
}

/// What the acker sends for a delivery, or a request to flush.
pub enum AckCmd {
    Ack(Subject),
    /// Give it back for redelivery now.
    Nak(Subject),
    /// Flush what was sent so far, then answer.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Send acks and naks as they come, many per write; flush after each
/// burst so that a quiet acker leaves nothing buffered. A flush waits at
/// most `timeout` (the server may be gone): whatever was not written is
/// delivered again by the server, as at-least-once allows.
pub async fn run_acker(
    client: async_nats::Client,
    mut rx: mpsc::UnboundedReceiver<AckCmd>,
    timeout: Duration,
) {
    let mut burst = Vec::with_capacity(256);
    while rx.recv_many(&mut burst, 4096).await > 0 {
        let mut flushed = Vec::new();
        for cmd in burst.drain(..) {
            let r = match cmd {
                AckCmd::Ack(reply) => client.publish(reply, Bytes::from_static(b"+ACK")).await,
                AckCmd::Nak(reply) => client.publish(reply, Bytes::from_static(b"-NAK")).await,
                AckCmd::Flush(done) => {
                    flushed.push(done);
                    Ok(())
                }
            };
            // Only fails once the client is gone; the server redelivers
            // whatever was not acknowledged.
            drop(r);
        }
        let _ = tokio::time::timeout(timeout, client.flush()).await;
        for done in flushed {
            let _ = done.send(());
        }
    }
    let _ = tokio::time::timeout(timeout, client.flush()).await;
}

/// Keep the local buffer filled from the consumer until the link is
/// closed. Errors (server restarts, leader changes, a consumer deleted
/// under us) are retried with a growing pause; receivers just wait.
pub async fn run_puller(link: Arc<Link>) {
    pull_until_closed(&link).await;
    // The pull subscription is gone (its unsubscribe is on the wire ahead
    // of these naks), so the server hands the items to other consumers,
    // not back to this one.
    hand_back(&link);
}

/// Nak everything buffered: the server redelivers it at once.
pub fn hand_back(link: &Link) {
    for d in link.buffer.take_all() {
        let _ = link.acks.send(AckCmd::Nak(d.reply));
    }
}

async fn pull_until_closed(link: &Link) {
    let mut pause = Duration::from_millis(20);
    let batch = link.opts.prefetch.max(1);
    while !link.is_closed() {
        let started = link
            .consumer
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(HEARTBEAT)
            .expires(HEARTBEAT * 10)
            .messages();
        let mut messages = tokio::select! {
            r = started => match r {
                Ok(m) => m,
                Err(_) => {
                    backoff(link, &mut pause).await;
                    continue;
                }
            },
            _ = link.shutdown.notified() => return,
        };
        loop {
            let next = tokio::select! {
                m = messages.next() => m,
                _ = link.shutdown.notified() => return,
            };
            match next {
                Some(Ok(m)) => {
                    pause = Duration::from_millis(20);
                    let Some(reply) = m.message.reply.clone() else {
                        continue;
                    };
                    let d = Delivery {
                        payload: m.message.payload.clone(),
                        reply,
                    };
                    if let Err(crate::core::Closed(d)) = link.buffer.send(d).await {
                        drop(messages);
                        let _ = link.acks.send(AckCmd::Nak(d.reply));
                        return;
                    }
                }
                // Missed heartbeats mean the pull request is gone (a node or
                // the consumer's leader died): start a new one at once.
                Some(Err(e)) if e.kind() == MessagesErrorKind::MissingHeartbeat => {
                    pause = Duration::from_millis(20);
                    break;
                }
                Some(Err(_)) | None => break,
            }
        }
        backoff(link, &mut pause).await;
    }
}

async fn backoff(link: &Link, pause: &mut Duration) {
    tokio::select! {
        _ = tokio::time::sleep(*pause) => {}
        _ = link.shutdown.notified() => {}
    }
    *pause = (*pause * 2).min(Duration::from_secs(1));
}

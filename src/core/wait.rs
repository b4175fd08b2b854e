//! Waiting on a [`Channel`]: `async` for tokio (or any executor) and
//! blocking for plain threads.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use super::chan::{
    Channel, Closed, RecvPoll, RecvStart, RecvTicket, SendPoll, SendStart, SendTicket, TryRecvError,
};

/// How long a blocked thread sleeps before it runs its interrupt check.
const INTERRUPT_SLICE: Duration = Duration::from_millis(50);

/// Why a blocking send gave up; the item is handed back.
#[derive(PartialEq, Eq)]
pub enum SendTimeoutError<T> {
    Timeout(T),
    Closed(T),
    /// The interrupt check asked to stop.
    Interrupted(T),
}

impl<T> std::fmt::Debug for SendTimeoutError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Timeout(_) => "Timeout(..)",
            Self::Closed(_) => "Closed(..)",
            Self::Interrupted(_) => "Interrupted(..)",
        })
    }
}

/// Why a blocking receive gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvTimeoutError {
    Timeout,
    /// Closed and fully drained.
    Closed,
    /// The interrupt check asked to stop.
    Interrupted,
}

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

fn thread_waker() -> Waker {
    Waker::from(Arc::new(ThreadWaker(thread::current())))
}

/// Park until woken, the deadline, or the end of an interrupt slice.
/// Returns false when the deadline has passed.
fn park(deadline: Option<Instant>) -> bool {
    let slice = match deadline {
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                return false;
            }
            (d - now).min(INTERRUPT_SLICE)
        }
        None => INTERRUPT_SLICE,
    };
    thread::park_timeout(slice);
    true
}

impl<T: Send> Channel<T> {
    /// Send, waiting while the channel is full.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes means the item was not sent
    /// (it is dropped with the future); a permit it had been granted goes to
    /// the next waiting sender.
    pub async fn send(self: &Arc<Self>, item: T) -> Result<(), Closed<T>> {
        let mut item = Some(item);
        let mut ticket: Option<SendTicket<T>> = None;
        poll_fn(|cx| {
            let it = item.take().expect("polled after completion");
            let r = match ticket.as_mut() {
                None => match self.send_or_wait(it, cx.waker()) {
                    SendStart::Sent => return Poll::Ready(Ok(())),
                    SendStart::Closed(it) => return Poll::Ready(Err(Closed(it))),
                    SendStart::Wait(t, it) => {
                        ticket = Some(t);
                        it
                    }
                },
                Some(t) => match t.poll(it, Some(cx.waker())) {
                    SendPoll::Sent => return Poll::Ready(Ok(())),
                    SendPoll::Closed(it) => return Poll::Ready(Err(Closed(it))),
                    SendPoll::Pending(it) => it,
                },
            };
            item = Some(r);
            Poll::Pending
        })
        .await
    }

    /// Receive, waiting while the channel is empty. `Err(Closed)` once the
    /// channel is closed and drained.
    ///
    /// # Cancel safety
    /// Dropping the future never loses an item: one already handed to it is
    /// put back first in line.
    pub async fn recv(self: &Arc<Self>) -> Result<T, Closed> {
        let mut ticket: Option<RecvTicket<T>> = None;
        poll_fn(|cx| {
            let t = match ticket.as_mut() {
                Some(t) => t,
                None => match self.recv_or_wait(cx.waker()) {
                    RecvStart::Item(item) => return Poll::Ready(Ok(item)),
                    RecvStart::Closed => return Poll::Ready(Err(Closed(()))),
                    RecvStart::Wait(t) => ticket.insert(t),
                },
            };
            match t.poll(Some(cx.waker())) {
                RecvPoll::Ready(item) => Poll::Ready(Ok(item)),
                RecvPoll::Closed => Poll::Ready(Err(Closed(()))),
                RecvPoll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Receive between 1 and `max` items, waiting while the channel is empty.
    ///
    /// # Cancel safety
    /// As [`Channel::recv`]: nothing is lost if the future is dropped.
    pub async fn recv_many(self: &Arc<Self>, max: usize) -> Result<Vec<T>, Closed> {
        let first = self.recv().await?;
        let mut out = Vec::with_capacity(max.clamp(1, 1024));
        out.push(first);
        let _ = self.try_recv_many(max.saturating_sub(1), &mut out);
        Ok(out)
    }

    /// Send from a plain thread, blocking while the channel is full, until
    /// `deadline` (`None`: no limit).
    pub fn send_blocking(
        self: &Arc<Self>,
        item: T,
        deadline: Option<Instant>,
    ) -> Result<(), SendTimeoutError<T>> {
        self.send_blocking_with(item, deadline, || false)
    }

    /// [`Channel::send_blocking`], calling `interrupt` every few tens of
    /// milliseconds while blocked; `true` gives up with `Interrupted`.
    pub fn send_blocking_with(
        self: &Arc<Self>,
        item: T,
        deadline: Option<Instant>,
        mut interrupt: impl FnMut() -> bool,
    ) -> Result<(), SendTimeoutError<T>> {
        let waker = thread_waker();
        let (mut ticket, mut item) = match self.send_or_wait(item, &waker) {
            SendStart::Sent => return Ok(()),
            SendStart::Closed(it) => return Err(SendTimeoutError::Closed(it)),
            SendStart::Wait(t, it) => (t, it),
        };
        loop {
            item = match ticket.poll(item, None) {
                SendPoll::Sent => return Ok(()),
                SendPoll::Closed(it) => return Err(SendTimeoutError::Closed(it)),
                SendPoll::Pending(it) => it,
            };
            if !park(deadline) {
                return Err(SendTimeoutError::Timeout(item));
            }
            if !ticket.is_ready() && interrupt() {
                return Err(SendTimeoutError::Interrupted(item));
            }
        }
    }

    /// Send every item in order from a plain thread, blocking while full.
    /// On error, `items` holds what was not sent.
    pub fn send_many_blocking(
        self: &Arc<Self>,
        items: &mut VecDeque<T>,
        deadline: Option<Instant>,
        mut interrupt: impl FnMut() -> bool,
    ) -> Result<(), SendTimeoutError<()>> {
        loop {
            if self.try_send_many(items).is_err() {
                return Err(SendTimeoutError::Closed(()));
            }
            let Some(item) = items.pop_front() else {
                return Ok(());
            };
            if let Err(e) = self.send_blocking_with(item, deadline, &mut interrupt) {
                let (it, e) = match e {
                    SendTimeoutError::Timeout(it) => (it, SendTimeoutError::Timeout(())),
                    SendTimeoutError::Closed(it) => (it, SendTimeoutError::Closed(())),
                    SendTimeoutError::Interrupted(it) => (it, SendTimeoutError::Interrupted(())),
                };
                items.push_front(it);
                return Err(e);
            }
        }
    }

    /// Receive from a plain thread, blocking while empty, until `deadline`.
    pub fn recv_blocking(
        self: &Arc<Self>,
        deadline: Option<Instant>,
    ) -> Result<T, RecvTimeoutError> {
        self.recv_blocking_with(deadline, || false)
    }

    /// [`Channel::recv_blocking`] with an interrupt check, as
    /// [`Channel::send_blocking_with`].
    pub fn recv_blocking_with(
        self: &Arc<Self>,
        deadline: Option<Instant>,
        mut interrupt: impl FnMut() -> bool,
    ) -> Result<T, RecvTimeoutError> {
        let waker = thread_waker();
        let mut ticket = match self.recv_or_wait(&waker) {
            RecvStart::Item(item) => return Ok(item),
            RecvStart::Closed => return Err(RecvTimeoutError::Closed),
            RecvStart::Wait(t) => t,
        };
        loop {
            match ticket.poll(None) {
                RecvPoll::Ready(item) => return Ok(item),
                RecvPoll::Closed => return Err(RecvTimeoutError::Closed),
                RecvPoll::Pending => {}
            }
            if !park(deadline) {
                // One last look: an item handed over just now is ours.
                return match ticket.poll(None) {
                    RecvPoll::Ready(item) => Ok(item),
                    RecvPoll::Closed => Err(RecvTimeoutError::Closed),
                    RecvPoll::Pending => Err(RecvTimeoutError::Timeout),
                };
            }
            if !ticket.is_ready() && interrupt() {
                return Err(RecvTimeoutError::Interrupted);
            }
        }
    }

    /// Receive between 1 and `max` items from a plain thread.
    pub fn recv_many_blocking_with(
        self: &Arc<Self>,
        max: usize,
        deadline: Option<Instant>,
        interrupt: impl FnMut() -> bool,
    ) -> Result<Vec<T>, RecvTimeoutError> {
        let mut out = Vec::new();
        match self.try_recv_many(max, &mut out) {
            Ok(_) => return Ok(out),
            Err(TryRecvError::Closed) => return Err(RecvTimeoutError::Closed),
            Err(TryRecvError::Empty) => {}
        }
        out.push(self.recv_blocking_with(deadline, interrupt)?);
        let _ = self.try_recv_many(max.saturating_sub(1), &mut out);
        Ok(out)
    }
}

//! The channel state machine: items, waiting receivers, waiting senders.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

/// A bounded or unbounded multi-producer multi-consumer FIFO channel.
///
/// Share it as `Arc<Channel<T>>`; every operation takes `&self` or
/// `&Arc<Self>`. See the [module documentation](super) for the model.
pub struct Channel<T> {
    capacity: Option<usize>,
    state: Mutex<State<T>>,
    /// Holders of an `Arc` to this channel that said they will never use it
    /// again (see [`Channel::mark_idle`]).
    idle: std::sync::atomic::AtomicUsize,
}

struct State<T> {
    items: VecDeque<T>,
    /// Units of capacity promised to woken senders that have not used them yet.
    reserved: usize,
    closed: bool,
    /// Only receivers whose slot is `Waiting`; non-empty implies `items` is empty.
    receivers: VecDeque<Arc<Waiter<RecvSlot<T>>>>,
    /// Only senders whose slot is `Waiting`.
    senders: VecDeque<Arc<Waiter<SendSlot>>>,
    sent: u64,
    received: u64,
}

struct Waiter<S> {
    inner: Mutex<WaiterInner<S>>,
}

struct WaiterInner<S> {
    slot: S,
    waker: Option<Waker>,
}

enum RecvSlot<T> {
    Waiting,
    Item(T),
    Closed,
    Gone,
}

enum SendSlot {
    Waiting,
    Permit,
    Closed,
    Gone,
}

/// The channel is closed; carries the item that could not be sent (or `()`).
#[derive(PartialEq, Eq)]
pub struct Closed<T = ()>(pub T);

impl<T> fmt::Debug for Closed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Closed(..)")
    }
}

/// Why [`Channel::try_send`] failed; the item is handed back.
#[derive(PartialEq, Eq)]
pub enum TrySendError<T> {
    Full(T),
    Closed(T),
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("Full(..)"),
            Self::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

/// Why [`Channel::try_recv`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing to receive right now.
    Empty,
    /// Closed and fully drained: nothing will ever arrive.
    Closed,
}

/// Counters and sizes, read under the lock in one go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub len: usize,
    pub capacity: Option<usize>,
    pub closed: bool,
    pub waiting_senders: usize,
    pub waiting_receivers: usize,
    pub sent: u64,
    pub received: u64,
    /// Capacity promised to woken senders that have not sent yet: it counts
    /// against the bound, as queued items do.
    pub reserved: usize,
}

/// Outcome of [`Channel::send_or_wait`].
pub enum SendStart<T> {
    Sent,
    Closed(T),
    /// Full: the caller keeps the item and waits on the ticket.
    Wait(SendTicket<T>, T),
}

/// Outcome of [`Channel::recv_or_wait`].
pub enum RecvStart<T> {
    Item(T),
    Closed,
    /// Empty: wait on the ticket.
    Wait(RecvTicket<T>),
}

/// Outcome of [`SendTicket::poll`].
pub enum SendPoll<T> {
    Sent,
    Closed(T),
    Pending(T),
}

/// Outcome of [`RecvTicket::poll`].
pub enum RecvPoll<T> {
    Ready(T),
    Closed,
    Pending,
}

/// Wakers collected under the lock, called after it is released.
#[derive(Default)]
struct Wakeups {
    first: Option<Waker>,
    rest: Vec<Waker>,
}

impl Wakeups {
    fn push(&mut self, w: Option<Waker>) {
        let Some(w) = w else { return };
        if self.first.is_none() {
            self.first = Some(w);
        } else {
            self.rest.push(w);
        }
    }

    fn wake(self) {
        if let Some(w) = self.first {
            w.wake();
        }
        for w in self.rest {
            w.wake();
        }
    }
}

fn lock<S>(m: &Mutex<S>) -> MutexGuard<'_, S> {
    // A panic while holding a lock never leaves the state half-updated in a
    // way that matters more than losing the whole channel would, so carry on.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T> State<T> {
    fn has_room(&self, capacity: Option<usize>) -> bool {
        match capacity {
            None => true,
            Some(c) => self.items.len() + self.reserved < c,
        }
    }

    /// Give `item` to the first waiting receiver, or queue it.
    fn deliver(&mut self, item: T, wake: &mut Wakeups) {
        if let Some(r) = self.receivers.pop_front() {
            let mut w = lock(&r.inner);
            debug_assert!(matches!(w.slot, RecvSlot::Waiting));
            w.slot = RecvSlot::Item(item);
            wake.push(w.waker.take());
            self.received += 1;
        } else {
            self.items.push_back(item);
        }
    }

    /// An item handed to a receiver that gave up comes back first in line.
    fn put_back(&mut self, item: T, wake: &mut Wakeups) {
        self.received -= 1;
        if let Some(r) = self.receivers.pop_front() {
            let mut w = lock(&r.inner);
            w.slot = RecvSlot::Item(item);
            wake.push(w.waker.take());
            self.received += 1;
        } else {
            self.items.push_front(item);
        }
    }

    /// Turn free capacity into permits for waiting senders.
    fn grant_permits(&mut self, capacity: Option<usize>, wake: &mut Wakeups) {
        while !self.senders.is_empty() && self.has_room(capacity) {
            let s = self.senders.pop_front().expect("checked non-empty");
            let mut w = lock(&s.inner);
            w.slot = SendSlot::Permit;
            wake.push(w.waker.take());
            self.reserved += 1;
        }
    }

    fn pop(&mut self, capacity: Option<usize>, wake: &mut Wakeups) -> Option<T> {
        let item = self.items.pop_front()?;
        self.received += 1;
        self.grant_permits(capacity, wake);
        Some(item)
    }
}

impl<T> Channel<T> {
    /// A channel holding at most `capacity` items (`None`: unbounded).
    ///
    /// # Panics
    /// If `capacity` is `Some(0)`.
    pub fn new(capacity: Option<usize>) -> Self {
        assert!(capacity != Some(0), "capacity must be at least 1");
        Channel {
            capacity,
            state: Mutex::new(State {
                items: VecDeque::new(),
                reserved: 0,
                closed: false,
                receivers: VecDeque::new(),
                senders: VecDeque::new(),
                sent: 0,
                received: 0,
            }),
            idle: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// A holder of an `Arc` to this channel will not use it any more, though
    /// it keeps it (e.g. a finished operation object). Undo with
    /// [`Channel::unmark_idle`] when that `Arc` is dropped.
    pub fn mark_idle(&self) {
        self.idle.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// See [`Channel::mark_idle`].
    pub fn unmark_idle(&self) {
        self.idle.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// How many `Arc`s to this channel may still be used (strong count
    /// minus the idle ones).
    pub fn live_handles(this: &Arc<Self>) -> usize {
        Arc::strong_count(this).saturating_sub(this.idle.load(std::sync::atomic::Ordering::Acquire))
    }

    pub fn capacity(&self) -> Option<usize> {
        self.capacity
    }

    /// Items queued right now (not counting items handed to receivers).
    pub fn len(&self) -> usize {
        lock(&self.state).items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    pub fn stats(&self) -> Stats {
        let s = lock(&self.state);
        Stats {
            len: s.items.len(),
            capacity: self.capacity,
            closed: s.closed,
            waiting_senders: s.senders.len(),
            waiting_receivers: s.receivers.len(),
            sent: s.sent,
            received: s.received,
            reserved: s.reserved,
        }
    }

    /// True when a send would have to wait: no room (queued items plus
    /// capacity reserved for woken senders fill the bound) and no receiver
    /// waiting. Exactly when [`Channel::try_send`] reports `Full`.
    pub fn is_full(&self) -> bool {
        let s = lock(&self.state);
        s.receivers.is_empty() && !s.has_room(self.capacity)
    }

    /// Close the channel. Returns `false` if it was already closed.
    ///
    /// Waiting receivers wake and drain what is left; waiting senders wake
    /// and get their item back. Later sends fail at once.
    pub fn close(&self) -> bool {
        let mut wake = Wakeups::default();
        {
            let mut s = lock(&self.state);
            if s.closed {
                return false;
            }
            s.closed = true;
            for r in s.receivers.drain(..) {
                let mut w = lock(&r.inner);
                w.slot = RecvSlot::Closed;
                wake.push(w.waker.take());
            }
            for snd in s.senders.drain(..) {
                let mut w = lock(&snd.inner);
                w.slot = SendSlot::Closed;
                wake.push(w.waker.take());
            }
        }
        wake.wake();
        true
    }

    /// Send without waiting.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut wake = Wakeups::default();
        {
            let mut s = lock(&self.state);
            if s.closed {
                return Err(TrySendError::Closed(item));
            }
            if s.receivers.is_empty() && !s.has_room(self.capacity) {
                return Err(TrySendError::Full(item));
            }
            s.sent += 1;
            s.deliver(item, &mut wake);
        }
        wake.wake();
        Ok(())
    }

    /// Send as many items from the front of `items` as fit right now, in
    /// order. Returns how many were sent.
    pub fn try_send_many(&self, items: &mut VecDeque<T>) -> Result<usize, Closed> {
        let mut wake = Wakeups::default();
        let mut n = 0;
        {
            let mut s = lock(&self.state);
            if s.closed {
                return Err(Closed(()));
            }
            while !items.is_empty() && (!s.receivers.is_empty() || s.has_room(self.capacity)) {
                let item = items.pop_front().expect("checked non-empty");
                s.sent += 1;
                s.deliver(item, &mut wake);
                n += 1;
            }
        }
        wake.wake();
        Ok(n)
    }

    /// Receive without waiting.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut wake = Wakeups::default();
        let r = {
            let mut s = lock(&self.state);
            match s.pop(self.capacity, &mut wake) {
                Some(item) => Ok(item),
                None if s.closed => Err(TryRecvError::Closed),
                None => Err(TryRecvError::Empty),
            }
        };
        wake.wake();
        r
    }

    /// Move up to `max` queued items to `out`. Returns how many were moved.
    pub fn try_recv_many(&self, max: usize, out: &mut Vec<T>) -> Result<usize, TryRecvError> {
        let mut wake = Wakeups::default();
        let r = {
            let mut s = lock(&self.state);
            let n = max.min(s.items.len());
            if n == 0 {
                if max > 0 && s.closed {
                    Err(TryRecvError::Closed)
                } else if max > 0 {
                    Err(TryRecvError::Empty)
                } else {
                    Ok(0)
                }
            } else {
                out.extend(s.items.drain(..n));
                s.received += n as u64;
                s.grant_permits(self.capacity, &mut wake);
                Ok(n)
            }
        };
        wake.wake();
        r
    }

    fn waiter<S>(slot: S, waker: &Waker) -> Arc<Waiter<S>> {
        Arc::new(Waiter {
            inner: Mutex::new(WaiterInner {
                slot,
                waker: Some(waker.clone()),
            }),
        })
    }

    /// Send, or queue as a waiting sender that `waker` will be woken for.
    pub fn send_or_wait(self: &Arc<Self>, item: T, waker: &Waker) -> SendStart<T> {
        let mut wake = Wakeups::default();
        let r = {
            let mut s = lock(&self.state);
            if s.closed {
                SendStart::Closed(item)
            } else if !s.receivers.is_empty() || s.has_room(self.capacity) {
                s.sent += 1;
                s.deliver(item, &mut wake);
                SendStart::Sent
            } else {
                let w = Self::waiter(SendSlot::Waiting, waker);
                s.senders.push_back(w.clone());
                SendStart::Wait(
                    SendTicket {
                        chan: self.clone(),
                        waiter: w,
                        done: false,
                    },
                    item,
                )
            }
        };
        wake.wake();
        r
    }

    /// Receive, or queue as a waiting receiver that `waker` will be woken for.
    pub fn recv_or_wait(self: &Arc<Self>, waker: &Waker) -> RecvStart<T> {
        let mut wake = Wakeups::default();
        let r = {
            let mut s = lock(&self.state);
            if let Some(item) = s.pop(self.capacity, &mut wake) {
                RecvStart::Item(item)
            } else if s.closed {
                RecvStart::Closed
            } else {
                let w = Self::waiter(RecvSlot::Waiting, waker);
                s.receivers.push_back(w.clone());
                RecvStart::Wait(RecvTicket {
                    chan: self.clone(),
                    waiter: w,
                    done: false,
                })
            }
        };
        wake.wake();
        r
    }
}

fn update_waker(slot: &mut Option<Waker>, waker: Option<&Waker>) {
    if let Some(new) = waker {
        match slot {
            Some(old) if old.will_wake(new) => {}
            _ => *slot = Some(new.clone()),
        }
    }
}

/// A receiver's place in line. Dropping it before it produced a result
/// gives up the place; an item already handed to it is put back first in
/// line (to the next waiting receiver, else the front of the queue).
pub struct RecvTicket<T> {
    chan: Arc<Channel<T>>,
    waiter: Arc<Waiter<RecvSlot<T>>>,
    done: bool,
}

impl<T> RecvTicket<T> {
    /// Check for a result; while pending, `waker` (if given) replaces the
    /// stored one.
    pub fn poll(&mut self, waker: Option<&Waker>) -> RecvPoll<T> {
        if self.done {
            return RecvPoll::Closed;
        }
        let mut w = lock(&self.waiter.inner);
        match std::mem::replace(&mut w.slot, RecvSlot::Gone) {
            RecvSlot::Item(item) => {
                self.done = true;
                RecvPoll::Ready(item)
            }
            RecvSlot::Closed => {
                drop(w);
                self.done = true;
                // Items put back after the close are still to be drained.
                match self.chan.try_recv() {
                    Ok(item) => RecvPoll::Ready(item),
                    Err(_) => RecvPoll::Closed,
                }
            }
            slot => {
                w.slot = slot;
                update_waker(&mut w.waker, waker);
                RecvPoll::Pending
            }
        }
    }

    /// True once `poll` would not return `Pending`.
    pub fn is_ready(&self) -> bool {
        self.done || !matches!(lock(&self.waiter.inner).slot, RecvSlot::Waiting)
    }

    /// A handle that gives up this place in line from elsewhere (e.g. the
    /// waker, when it finds that the receiver can never run again): the
    /// ticket then stays pending for ever, and an item already handed to
    /// it goes back first in line.
    pub fn revoker(&self) -> RecvRevoker<T> {
        RecvRevoker {
            chan: Arc::downgrade(&self.chan),
            waiter: Arc::downgrade(&self.waiter),
        }
    }
}

/// See [`RecvTicket::revoker`].
pub struct RecvRevoker<T> {
    chan: std::sync::Weak<Channel<T>>,
    waiter: std::sync::Weak<Waiter<RecvSlot<T>>>,
}

impl<T> RecvRevoker<T> {
    /// Give up the ticket's place; see [`RecvTicket::revoker`].
    pub fn revoke(&self) {
        if let (Some(chan), Some(waiter)) = (self.chan.upgrade(), self.waiter.upgrade()) {
            give_up(&chan, &waiter);
        }
    }
}

/// Take a receiver out of line; put back an item it was handed.
fn give_up<T>(chan: &Channel<T>, waiter: &Arc<Waiter<RecvSlot<T>>>) {
    let mut wake = Wakeups::default();
    {
        let mut s = lock(&chan.state);
        let mut w = lock(&waiter.inner);
        match std::mem::replace(&mut w.slot, RecvSlot::Gone) {
            RecvSlot::Waiting => {
                s.receivers.retain(|r| !Arc::ptr_eq(r, waiter));
            }
            RecvSlot::Item(item) => {
                drop(w);
                s.put_back(item, &mut wake);
            }
            RecvSlot::Closed | RecvSlot::Gone => {}
        }
    }
    wake.wake();
}

impl<T> Drop for RecvTicket<T> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        give_up(&self.chan, &self.waiter);
    }
}

/// A sender's place in line while the channel is full. The item stays with
/// the caller until [`SendTicket::poll`] reports it sent. Dropping the ticket
/// gives up the place and passes on a permit it had been granted.
pub struct SendTicket<T> {
    chan: Arc<Channel<T>>,
    waiter: Arc<Waiter<SendSlot>>,
    done: bool,
}

impl<T> SendTicket<T> {
    /// Send `item` if a permit has been granted; hands it back otherwise.
    pub fn poll(&mut self, item: T, waker: Option<&Waker>) -> SendPoll<T> {
        if self.done {
            return SendPoll::Closed(item);
        }
        let mut wake = Wakeups::default();
        let r = {
            let mut s = lock(&self.chan.state);
            let mut w = lock(&self.waiter.inner);
            match w.slot {
                SendSlot::Permit => {
                    w.slot = SendSlot::Gone;
                    drop(w);
                    self.done = true;
                    s.reserved -= 1;
                    if s.closed {
                        SendPoll::Closed(item)
                    } else {
                        s.sent += 1;
                        s.deliver(item, &mut wake);
                        SendPoll::Sent
                    }
                }
                SendSlot::Closed | SendSlot::Gone => {
                    w.slot = SendSlot::Gone;
                    self.done = true;
                    SendPoll::Closed(item)
                }
                SendSlot::Waiting => {
                    update_waker(&mut w.waker, waker);
                    SendPoll::Pending(item)
                }
            }
        };
        wake.wake();
        r
    }

    /// True once `poll` would not return `Pending`.
    pub fn is_ready(&self) -> bool {
        self.done || !matches!(lock(&self.waiter.inner).slot, SendSlot::Waiting)
    }
}

impl<T> Drop for SendTicket<T> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        give_up_send(&self.chan, &self.waiter);
    }
}

impl<T> SendTicket<T> {
    /// A handle that gives up this place in line from elsewhere (the waker,
    /// when the sender can never run again): a permit it was granted passes
    /// on, and the ticket then stays pending for ever.
    pub fn revoker(&self) -> SendRevoker<T> {
        SendRevoker {
            chan: Arc::downgrade(&self.chan),
            waiter: Arc::downgrade(&self.waiter),
        }
    }
}

/// See [`SendTicket::revoker`].
pub struct SendRevoker<T> {
    chan: std::sync::Weak<Channel<T>>,
    waiter: std::sync::Weak<Waiter<SendSlot>>,
}

impl<T> SendRevoker<T> {
    /// Give up the ticket's place; see [`SendTicket::revoker`].
    pub fn revoke(&self) {
        if let (Some(chan), Some(waiter)) = (self.chan.upgrade(), self.waiter.upgrade()) {
            give_up_send(&chan, &waiter);
        }
    }
}

/// Take a sender out of line; pass on a permit it was granted.
fn give_up_send<T>(chan: &Channel<T>, waiter: &Arc<Waiter<SendSlot>>) {
    let mut wake = Wakeups::default();
    {
        let mut s = lock(&chan.state);
        let mut w = lock(&waiter.inner);
        match std::mem::replace(&mut w.slot, SendSlot::Gone) {
            SendSlot::Waiting => {
                s.senders.retain(|x| !Arc::ptr_eq(x, waiter));
            }
            SendSlot::Permit => {
                drop(w);
                s.reserved -= 1;
                if !s.closed {
                    s.grant_permits(chan.capacity, &mut wake);
                }
            }
            SendSlot::Closed | SendSlot::Gone => {}
        }
    }
    wake.wake();
}

impl<T> Channel<T> {
    /// Visit every queued item, unless the lock is busy (then nothing is
    /// visited). For garbage-collector traversal.
    pub fn try_for_each_item<E>(&self, mut f: impl FnMut(&T) -> Result<(), E>) -> Result<(), E> {
        if let Ok(s) = self.state.try_lock() {
            for item in &s.items {
                f(item)?;
            }
        }
        Ok(())
    }

    /// Remove and return every queued item.
    pub fn take_all(&self) -> Vec<T> {
        let mut wake = Wakeups::default();
        let items: Vec<T> = {
            let mut s = lock(&self.state);
            let items: Vec<T> = s.items.drain(..).collect();
            s.received += items.len() as u64;
            s.grant_permits(self.capacity, &mut wake);
            items
        };
        wake.wake();
        items
    }
}

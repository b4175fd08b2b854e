//! The producer/consumer engine: a bounded or unbounded MPMC channel.
//!
//! Nothing in this module knows about Python. Items are any `T: Send`;
//! waiting parties are represented by a [`std::task::Waker`], so the same
//! engine serves tokio tasks ([`Channel::send`], [`Channel::recv`]), plain
//! threads ([`Channel::send_blocking`], [`Channel::recv_blocking`]) and the
//! asyncio layer in `crate::channel`, which builds its own wakers.
//!
//! # Model
//!
//! * Items are kept in FIFO order in one queue behind one mutex.
//! * **Receivers get hand-off.** A receiver that has to wait is queued; a
//!   sender that finds a queued receiver moves its item straight into that
//!   receiver's slot and wakes it. A receiver that gives up (cancelled,
//!   timed out, dropped) after an item was handed to it puts the item back:
//!   to the next waiting receiver if there is one, else to the *front* of the
//!   queue. Items are never lost or duplicated.
//! * **Senders get permits.** On a full channel a sender waits for a permit
//!   (one reserved unit of capacity) and keeps its item until it is woken.
//!   A sender that gives up returns the permit to the next waiting sender;
//!   its item never entered the channel.
//! * **Close** wakes every waiter. Receivers drain what is left, then get
//!   [`Closed`]; senders get their item back at once, including senders that
//!   held an unused permit.
//!
//! Wakers are always called after the channel lock has been released.

mod chan;
mod wait;

#[cfg(test)]
mod tests;

pub use chan::{
    Channel, Closed, RecvPoll, RecvRevoker, RecvStart, RecvTicket, SendPoll, SendRevoker,
    SendStart, SendTicket, Stats, TryRecvError, TrySendError,
};
pub use wait::{RecvTimeoutError, SendTimeoutError};

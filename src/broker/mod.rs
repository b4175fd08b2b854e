//! `rustasync.NatsChannel`: the producer/consumer channel on NATS
//! JetStream, driven by `async-nats` on rustasync's tokio runtime and
//! awaited through [`crate::bridge`].
//!
//! # Model
//!
//! * A **stream** stores what producers publish to its **subject**; every
//!   publish waits for the stream's ack, many publishes in flight at once
//!   ([`link::Link::publish`]), one wake-up of the loop per call.
//! * A **durable pull consumer**, shared by every process that receives,
//!   hands each stored item to one of them. A background task
//!   ([`pull::run_puller`]) pulls batches into a bounded local buffer, the
//!   same [`crate::core::Channel`] engine that backs `rustasync.Channel`;
//!   `recv` takes from that buffer (at once if something is there).
//! * Delivery is at least once: an item handed to the application stays
//!   pending on the server until it is acknowledged (`task_done()`, or at
//!   once with `ack="on_receive"`), and is delivered again after `ack_wait`
//!   otherwise, to this or another process. Acks and naks go out in
//!   bursts from one background task ([`pull::run_acker`]).
//!
//! # Cancel safety
//!
//! A cancelled receive never loses an item: one still in the buffer stays
//! first in line (the engine's own rule), and one already taken out of it
//! is naked, so the server redelivers it at once ([`received::Received`]).
//! A cancelled send may or may not have been stored: send again with the
//! same message id and the stream's de-duplication drops the copy.
//!
//! # Layers
//!
//! [`link`] and [`pull`] are plain Rust (async-nats and the core engine);
//! [`shell`] is the Python class; [`codec`] turns objects into bytes.

use pyo3::prelude::*;

mod args;
mod blocking;
mod codec;
pub mod link;
pub mod pull;
mod received;
pub mod rt;
mod sendop;
mod settings;
mod shell;

pub use shell::PyNatsChannel;

pyo3::create_exception!(
    rustasync,
    BrokerError,
    pyo3::exceptions::PyException,
    "An error reported by the message broker (NATS JetStream): a missing stream, a refused stream or consumer configuration, a failed publish."
);

pyo3::create_exception!(
    rustasync,
    BrokerConnectionError,
    pyo3::exceptions::PyConnectionError,
    "No NATS server could be reached; the message names the URLs tried."
);

/// Register the class and its exceptions on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<PyNatsChannel>()?;
    m.add_class::<sendop::NatsSendManyOp>()?;
    // Awaitable-returning methods answer `iscoroutinefunction` as async defs.
    crate::markers::mark_methods(
        &py.get_type::<PyNatsChannel>(),
        &["send", "send_many", "recv", "recv_many", "wait_closed"],
    )?;
    m.add("BrokerError", py.get_type::<BrokerError>())?;
    m.add(
        "BrokerConnectionError",
        py.get_type::<BrokerConnectionError>(),
    )?;
    Ok(())
}

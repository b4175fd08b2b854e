//! rustasync: asyncio primitives implemented in Rust.
//!
//! The extension module `rustasync._rustasync`. Each concern lives in its own
//! file; this file only declares the modules and builds the Python module.

use pyo3::prelude::*;

pub mod args;
// The awaitable core and the loop wakers live in the bridge crate; the rest
// of the extension names them as before.
pub use rustasync_bridge::{awaitable, runtime};
pub mod asyncq;
pub mod bridge;
#[cfg(feature = "test-hooks")]
pub mod bridgehooks;
#[cfg(feature = "nats")]
pub mod broker;
pub mod channel;
pub mod core;
pub mod errors;
pub mod gather;
pub mod markers;
pub mod queue;
pub mod sleep;
#[cfg(feature = "test-hooks")]
pub mod testhooks;
pub mod timers;

/// `gil_used = true`: the design assumes one thread attached to the
/// interpreter at a time (see docs/design.md); a free-threaded build keeps
/// the GIL enabled while this module is loaded.
#[pymodule(gil_used = true)]
fn _rustasync(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    sleep::register(m)?;
    gather::register(m)?;
    queue::register(m)?;
    channel::register(m)?;
    bridge::register(m)?;
    #[cfg(feature = "nats")]
    broker::register(m)?;
    asyncq::register(m)?;
    markers::register(m)?;
    #[cfg(feature = "test-hooks")]
    testhooks::register(m)?;
    #[cfg(feature = "test-hooks")]
    bridgehooks::register(m)?;
    Ok(())
}

//! rustasync: asyncio primitives implemented in Rust.
//!
//! The extension module `rustasync._rustasync`. Each concern lives in its own
//! file; this file only declares the modules and builds the Python module.

use pyo3::prelude::*;

pub mod asyncq;
pub mod bridge;
pub mod channel;
pub mod core;
pub mod errors;
pub mod runtime;

#[pymodule]
fn _rustasync(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    channel::register(m)?;
    bridge::register(m)?;
    asyncq::register(m)?;
    Ok(())
}

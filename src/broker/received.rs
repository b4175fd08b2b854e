//! Deliveries on their way to Python: converted (and, in ack-on-receive
//! mode, acknowledged) on the loop thread when the awaiting task resumes;
//! handed back to the server if they never get there. An item the codec
//! cannot decode is reported once and terminated (`+TERM`): delivered
//! again, it would fail again, forever.

use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;

use super::codec::Codec;
use super::link::Link;
use super::pull::{AckCmd, Delivery};
use super::shell::Owner;

#[derive(Clone, Copy)]
pub enum Mode {
    One,
    Many,
}

/// What a receive resolves to. Dropped without being converted (the
/// receiving task was cancelled after the items left the buffer), it naks
/// them: the server redelivers them at once, nothing waits for the ack wait.
pub struct Received {
    pub items: Vec<Delivery>,
    pub link: Arc<Link>,
    /// Keeps the handle's link open until the items are handed over.
    pub _owner: Arc<Owner>,
    pub codec: Codec,
    pub ack_on_receive: bool,
    pub mode: Mode,
}

impl Received {
    /// Decode every item. The first that fails to decode is terminated
    /// (never delivered again) and reported; the others go back to the
    /// server for immediate redelivery.
    pub fn convert<'py>(mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let items = std::mem::take(&mut self.items);
        let mut out = Vec::with_capacity(items.len());
        let mut it = items.into_iter();
        for d in it.by_ref() {
            match self.codec.decode(py, &d.payload) {
                Ok(v) => out.push((v, d.reply, d.arrived)),
                Err(e) => {
                    let _ = self.link.acks.send(AckCmd::Term(d.reply));
                    let rest = out
                        .into_iter()
                        .map(|(_, r, _)| r)
                        .chain(it.map(|d| d.reply));
                    for reply in rest {
                        let _ = self.link.acks.send(AckCmd::Nak(reply));
                    }
                    return Err(PyValueError::new_err(format!(
                        "cannot decode a NatsChannel item with codec {:?} \
                         (it was removed from the consumer, never to be delivered again): {e}",
                        self.codec.name().unwrap_or("bytes")
                    )));
                }
            }
        }
        let values: Vec<Bound<'py, PyAny>> = if self.ack_on_receive {
            out.into_iter()
                .map(|(v, reply, _)| {
                    let _ = self.link.acks.send(AckCmd::Ack(reply));
                    v
                })
                .collect()
        } else {
            // The application has `ack_wait` from now to acknowledge them:
            // restart the ack wait of those that waited in the buffer (the
            // last keep-alive may be up to a quarter of `ack_wait` old).
            let since = self.link.keepalive_period() / 4;
            for (_, reply, arrived) in &out {
                if arrived.elapsed() >= since {
                    let _ = self.link.acks.send(AckCmd::Progress(reply.clone()));
                }
            }
            let now = std::time::Instant::now();
            let mut unacked = self.link.unacked.lock().unwrap_or_else(|e| e.into_inner());
            out.into_iter()
                .map(|(v, reply, _)| {
                    unacked.push_back((reply, now));
                    v
                })
                .collect()
        };
        match self.mode {
            Mode::Many => Ok(PyList::new(py, values)?.into_any()),
            Mode::One => Ok(values
                .into_iter()
                .next()
                .expect("a receive resolves to at least one item")),
        }
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        for d in self.items.drain(..) {
            let _ = self.link.acks.send(AckCmd::Nak(d.reply));
        }
    }
}

impl<'py> IntoPyObject<'py> for Received {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.convert(py)
    }
}

//! Arguments of `NatsChannel.connect` and of the blocking methods.

use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyString;

use super::codec::Codec;
use super::link::Options;

pub struct ConnectArgs {
    pub opts: Options,
    pub codec: Codec,
    pub ack_on_receive: bool,
}

fn seconds(name: &str, v: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(v).map_err(|_| {
        PyValueError::new_err(format!("{name} must be a non-negative number of seconds"))
    })
}

fn positive(name: &str, v: usize) -> PyResult<usize> {
    if v == 0 {
        return Err(PyValueError::new_err(format!("{name} must be at least 1")));
    }
    Ok(v)
}

/// A URL, a comma-separated list of URLs, or a sequence of URLs.
fn servers(v: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let list: Vec<String> = if let Ok(s) = v.cast::<PyString>() {
        vec![s.to_str()?.to_owned()]
    } else {
        v.extract()?
    };
    let out: Vec<String> = list
        .iter()
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if out.is_empty() {
        return Err(PyValueError::new_err("servers names no NATS URL"));
    }
    Ok(out)
}

impl ConnectArgs {
    #[allow(clippy::too_many_arguments)]
    pub fn parse(
        servers_arg: &Bound<'_, PyAny>,
        stream: String,
        subject: Option<String>,
        consumer: Option<String>,
        codec: Option<&str>,
        ack: &str,
        ack_wait: f64,
        max_deliver: Option<i64>,
        dedup_window: f64,
        prefetch: usize,
        max_inflight: usize,
        timeout: f64,
        connect_timeout: f64,
        create: bool,
        storage: &str,
        replicas: usize,
    ) -> PyResult<ConnectArgs> {
        let ack_on_receive = match ack {
            "explicit" => false,
            "on_receive" => true,
            other => {
                return Err(PyValueError::new_err(format!(
                    "ack must be 'explicit' or 'on_receive', not {other:?}"
                )))
            }
        };
        let memory = match storage {
            "file" => false,
            "memory" => true,
            other => {
                return Err(PyValueError::new_err(format!(
                    "storage must be 'file' or 'memory', not {other:?}"
                )))
            }
        };
        if stream.is_empty() || stream.contains(['.', '*', '>', ' ']) {
            return Err(PyValueError::new_err(format!(
                "invalid stream name {stream:?} (no '.', '*', '>' or spaces)"
            )));
        }
        let subject = subject.unwrap_or_else(|| stream.clone());
        let consumer = consumer.unwrap_or_else(|| stream.clone());
        Ok(ConnectArgs {
            opts: Options {
                servers: servers(servers_arg)?,
                stream,
                subject,
                consumer,
                create,
                memory,
                replicas: positive("replicas", replicas)?,
                dedup_window: seconds("dedup_window", dedup_window)?,
                ack_wait: seconds("ack_wait", ack_wait)?,
                max_deliver: max_deliver.unwrap_or(-1),
                prefetch: positive("prefetch", prefetch)?,
                max_inflight: positive("max_inflight", max_inflight)?,
                timeout: seconds("timeout", timeout)?,
                connect_timeout: seconds("connect_timeout", connect_timeout)?,
            },
            codec: Codec::parse(codec)?,
            ack_on_receive,
        })
    }
}

/// A `timeout` argument of a blocking method, as a deadline.
pub fn deadline(timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Instant>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_none() => Ok(None),
        Some(t) => {
            let d = seconds("timeout", t.extract()?)?;
            Ok(Some(Instant::now() + d.min(Duration::from_secs(1 << 40))))
        }
    }
}

/// A `max_items` argument: an int >= 1.
pub fn max_items(v: &Bound<'_, PyAny>) -> PyResult<usize> {
    if v.is_instance_of::<pyo3::types::PyBool>() {
        return Err(pyo3::exceptions::PyTypeError::new_err(
            "max_items must be an int, not bool",
        ));
    }
    let n = crate::args::index(v, "max_items")?;
    if n < 1 {
        return Err(PyValueError::new_err("max_items must be at least 1"));
    }
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

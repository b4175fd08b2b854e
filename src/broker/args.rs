//! Arguments of `NatsChannel.connect` and of the blocking methods.

use std::time::{Duration, Instant};

use pyo3::exceptions::{PyTypeError, PyValueError};
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

/// The most publishes in flight one handle allows: far above any useful
/// value, far below what the semaphores behind it can count.
pub const MAX_INFLIGHT: usize = 1 << 30;

/// A number of seconds that must be more than zero.
fn positive_seconds(name: &str, v: f64) -> PyResult<Duration> {
    let d = seconds(name, v)?;
    if d.is_zero() {
        return Err(PyValueError::new_err(format!(
            "{name} must be a positive number of seconds"
        )));
    }
    Ok(d)
}

/// `max_deliver`: None (not given), -1 for no limit, else at least 1.
fn max_deliver(v: Option<i64>) -> PyResult<Option<i64>> {
    match v {
        None => Ok(None),
        Some(-1) => Ok(Some(-1)),
        Some(n) if n >= 1 => Ok(Some(n)),
        Some(n) => Err(PyValueError::new_err(format!(
            "max_deliver must be at least 1, or -1 for no limit, not {n}"
        ))),
    }
}

/// A `msg_id` argument: None or a str (see [`msg_id`]).
pub fn msg_id_arg(v: Option<&Bound<'_, PyAny>>) -> PyResult<Option<String>> {
    match v {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => {
            let Ok(s) = v.cast::<PyString>() else {
                return Err(PyTypeError::new_err(format!(
                    "msg_id must be a str or None, not {}",
                    v.get_type().name()?
                )));
            };
            let s = s.to_str()?.to_owned();
            msg_id(&s, "msg_id")?;
            Ok(Some(s))
        }
    }
}

/// A `msg_id` (a `Nats-Msg-Id` header value): no CR or LF, which would
/// end the header line.
pub fn msg_id(id: &str, name: &str) -> PyResult<()> {
    if id.contains(['\r', '\n']) {
        return Err(PyValueError::new_err(format!(
            "{name} must not contain CR or LF characters, got {id:?}"
        )));
    }
    Ok(())
}

/// The longest stream or consumer name JetStream accepts, in bytes
/// (nats-server's `JSMaxNameLen`).
const MAX_NAME_BYTES: usize = 255;

/// A stream or consumer name (`what`): not empty, at most
/// [`MAX_NAME_BYTES`] bytes of UTF-8, and none of the characters NATS
/// reserves in them (`.`, `*`, `>`, path separators, whitespace and
/// control characters).
fn name(what: &str, v: &str) -> PyResult<()> {
    if v.len() > MAX_NAME_BYTES {
        return Err(PyValueError::new_err(format!(
            "invalid {what} name: {} bytes long, JetStream allows at most {MAX_NAME_BYTES}",
            v.len()
        )));
    }
    let bad = v.chars().find(|&c| {
        matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace() || c.is_control()
    });
    if v.is_empty() || bad.is_some() {
        return Err(PyValueError::new_err(format!(
            "invalid {what} name {v:?}: it must be non-empty, without '.', '*', '>', \
             '/', '\\', whitespace or control characters"
        )));
    }
    Ok(())
}

/// The subject items are published to: dot-separated non-empty tokens,
/// no wildcards (`*`, `>`), whitespace or control characters.
fn subject(v: &str) -> PyResult<()> {
    let bad = v
        .chars()
        .any(|c| matches!(c, '*' | '>') || c.is_whitespace() || c.is_control());
    if v.is_empty() || bad || v.split('.').any(str::is_empty) {
        return Err(PyValueError::new_err(format!(
            "invalid subject {v:?}: it must be dot-separated non-empty tokens, \
             without wildcards ('*', '>'), whitespace or control characters"
        )));
    }
    Ok(())
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
        ack_wait: Option<f64>,
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
        name("stream", &stream)?;
        let subject = subject.unwrap_or_else(|| stream.clone());
        self::subject(&subject)?;
        let consumer = consumer.unwrap_or_else(|| stream.clone());
        name("consumer", &consumer)?;
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
                ack_wait: ack_wait
                    .map(|w| positive_seconds("ack_wait", w))
                    .transpose()?,
                max_deliver: self::max_deliver(max_deliver)?,
                prefetch: positive("prefetch", prefetch)?,
                max_inflight: if max_inflight > MAX_INFLIGHT {
                    return Err(PyValueError::new_err(format!(
                        "max_inflight must be at most {MAX_INFLIGHT}, not {max_inflight}"
                    )));
                } else {
                    positive("max_inflight", max_inflight)?
                },
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
            // As `Channel`'s blocking methods: a number of seconds, any
            // size (a huge one waits as good as forever).
            let secs: f64 = t.extract::<f64>().map_err(|e: PyErr| {
                if e.is_instance_of::<PyTypeError>(t.py()) {
                    PyTypeError::new_err(format!(
                        "timeout must be a number or None, not {}",
                        t.get_type()
                            .name()
                            .map(|n| n.to_string())
                            .unwrap_or_default()
                    ))
                } else {
                    e
                }
            })?;
            if secs.is_nan() || secs < 0.0 {
                return Err(PyValueError::new_err(
                    "timeout must be a non-negative number of seconds",
                ));
            }
            let d = Duration::from_secs_f64(secs.min((1u64 << 40) as f64));
            Ok(Some(Instant::now() + d))
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

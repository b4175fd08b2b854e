//! The settings of an existing durable consumer, checked against those a
//! handle was given: at connect and again whenever the puller binds the
//! consumer (another handle may have created it since).
//!
//! The consumer's `filter_subjects` (plural) is not in the info async-nats
//! decodes without its `server_2_10` feature, so it is read from the raw
//! JSON reply of the info request ([`filter_subjects`]).

use std::time::Duration;

use async_nats::jetstream::consumer;
use bytes::Bytes;

use super::link::{Error, Options};

/// The `ack_wait` and `max_deliver` (-1: no limit) in force.
pub type InForce = (Duration, i64);

/// Compare an existing consumer's `config` with `opts`: explicit
/// `ack_wait` and `max_deliver` must be the consumer's, it must take
/// exactly `opts.subject` (its filters, `filter_subject` and `filters`;
/// without any, the stream must have no other subject than ours) and be a
/// pull consumer with explicit acks.
pub fn check(
    config: &consumer::Config,
    filters: &[String],
    stream_subjects: &[String],
    opts: &Options,
) -> Result<InForce, Error> {
    let c = config;
    let has_max = if c.max_deliver <= 0 {
        -1
    } else {
        c.max_deliver
    };
    let mut diff = Vec::new();
    if c.deliver_subject.is_some() {
        diff.push("it is a push consumer, NatsChannel pulls".to_owned());
    }
    if c.ack_policy != consumer::AckPolicy::Explicit {
        diff.push(format!(
            "its ack policy is {:?}, NatsChannel needs explicit acks",
            c.ack_policy
        ));
    }
    if let Some(w) = opts.ack_wait.filter(|w| *w != c.ack_wait) {
        diff.push(format!(
            "ack_wait={} given, the consumer has {}",
            w.as_secs_f64(),
            c.ack_wait.as_secs_f64()
        ));
    }
    if let Some(m) = opts.max_deliver.filter(|m| *m != has_max) {
        let show = |n: i64| {
            if n < 0 {
                "no limit".to_owned()
            } else {
                n.to_string()
            }
        };
        diff.push(format!(
            "max_deliver={} given, the consumer has {}",
            show(m),
            show(has_max)
        ));
    }
    let mut takes: Vec<&str> = filters.iter().map(String::as_str).collect();
    if !c.filter_subject.is_empty() {
        takes.push(&c.filter_subject);
    }
    let ours = if takes.is_empty() {
        stream_subjects.iter().all(|s| *s == opts.subject)
    } else {
        takes.iter().all(|s| *s == opts.subject)
    };
    if !ours {
        let what = if takes.is_empty() {
            format!("every subject of the stream {stream_subjects:?}")
        } else {
            format!("{takes:?}")
        };
        diff.push(format!(
            "subject={:?} given, the consumer takes {what}",
            opts.subject
        ));
    }
    if !diff.is_empty() {
        return Err(Error::Other(format!(
            "consumer {:?} of stream {:?} exists with other settings: {} \
             (leave a setting out to use the consumer's; delete the consumer \
             to change it)",
            opts.consumer,
            opts.stream,
            diff.join("; ")
        )));
    }
    Ok((c.ack_wait, has_max))
}

/// The consumer's `config.filter_subjects`, read from the raw reply of
/// `$JS.API.CONSUMER.INFO`.
pub async fn filter_subjects(
    client: &async_nats::Client,
    opts: &Options,
) -> Result<Vec<String>, Error> {
    let subject = format!("$JS.API.CONSUMER.INFO.{}.{}", opts.stream, opts.consumer);
    let asked = client.request(subject, Bytes::new());
    let reply = match tokio::time::timeout(opts.timeout, asked).await {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return Err(Error::Timeout(format!("consumer {:?}: {e}", opts.consumer))),
        Err(_) => {
            return Err(Error::Timeout(format!(
                "no JetStream reply for consumer {:?}",
                opts.consumer
            )))
        }
    };
    let text = std::str::from_utf8(&reply.payload).unwrap_or("");
    let mut p = json::Parser::new(text);
    let found = p.object_path(&["config", "filter_subjects"]);
    Ok(found.unwrap_or_default())
}

/// Just enough JSON to find one array of strings in the server's reply.
mod json {
    pub struct Parser<'a> {
        s: &'a [u8],
        i: usize,
    }

    impl<'a> Parser<'a> {
        pub fn new(s: &'a str) -> Self {
            Parser {
                s: s.as_bytes(),
                i: 0,
            }
        }

        fn ws(&mut self) {
            while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
                self.i += 1;
            }
        }

        fn eat(&mut self, c: u8) -> bool {
            self.ws();
            if self.s.get(self.i) == Some(&c) {
                self.i += 1;
                true
            } else {
                false
            }
        }

        /// The array of strings at `path` (keys of nested objects) from the
        /// top-level object; None if absent or not such an array.
        pub fn object_path(&mut self, path: &[&str]) -> Option<Vec<String>> {
            let (key, rest) = path.split_first()?;
            if !self.eat(b'{') {
                return None;
            }
            if self.eat(b'}') {
                return None;
            }
            loop {
                let k = self.string()?;
                if !self.eat(b':') {
                    return None;
                }
                if k == *key {
                    return if rest.is_empty() {
                        self.strings()
                    } else {
                        self.object_path(rest)
                    };
                }
                self.skip(0)?;
                if !self.eat(b',') {
                    return None;
                }
            }
        }

        fn strings(&mut self) -> Option<Vec<String>> {
            if !self.eat(b'[') {
                return None;
            }
            let mut out = Vec::new();
            if self.eat(b']') {
                return Some(out);
            }
            loop {
                out.push(self.string()?);
                if self.eat(b']') {
                    return Some(out);
                }
                if !self.eat(b',') {
                    return None;
                }
            }
        }

        fn string(&mut self) -> Option<String> {
            if !self.eat(b'"') {
                return None;
            }
            let mut out = String::new();
            loop {
                let c = *self.s.get(self.i)?;
                self.i += 1;
                match c {
                    b'"' => return Some(out),
                    b'\\' => {
                        let e = *self.s.get(self.i)?;
                        self.i += 1;
                        match e {
                            b'u' => {
                                let hex = self.s.get(self.i..self.i + 4)?;
                                self.i += 4;
                                let n =
                                    u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                                // Surrogate pairs never occur in subjects we
                                // compare with; keep them as U+FFFD.
                                out.push(char::from_u32(n).unwrap_or('\u{fffd}'));
                            }
                            b'n' => out.push('\n'),
                            b't' => out.push('\t'),
                            b'r' => out.push('\r'),
                            b'b' => out.push('\u{8}'),
                            b'f' => out.push('\u{c}'),
                            other => out.push(other as char),
                        }
                    }
                    _ => {
                        // Copy the whole UTF-8 sequence starting here.
                        let start = self.i - 1;
                        let mut end = self.i;
                        while self.s.get(end).is_some_and(|b| b & 0xC0 == 0x80) {
                            end += 1;
                        }
                        out.push_str(std::str::from_utf8(&self.s[start..end]).ok()?);
                        self.i = end;
                    }
                }
            }
        }

        /// Skip one value of any kind.
        fn skip(&mut self, depth: usize) -> Option<()> {
            if depth > 64 {
                return None;
            }
            self.ws();
            match *self.s.get(self.i)? {
                b'"' => self.string().map(|_| ()),
                b'{' | b'[' => {
                    let close = if self.s[self.i] == b'{' { b'}' } else { b']' };
                    let object = close == b'}';
                    self.i += 1;
                    if self.eat(close) {
                        return Some(());
                    }
                    loop {
                        if object {
                            self.string()?;
                            if !self.eat(b':') {
                                return None;
                            }
                        }
                        self.skip(depth + 1)?;
                        if self.eat(close) {
                            return Some(());
                        }
                        if !self.eat(b',') {
                            return None;
                        }
                    }
                }
                _ => {
                    // A number, true, false or null.
                    while self.s.get(self.i).is_some_and(|c| {
                        !matches!(c, b',' | b'}' | b']') && !c.is_ascii_whitespace()
                    }) {
                        self.i += 1;
                    }
                    Some(())
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::Parser;

        #[test]
        fn finds_nested_strings() {
            let text = r#"{"type":"x","name":"c","config":{"metadata":{"filter_subjects":"no"},
                "ack_wait":30,"nested":[{"a":[1,2,{"b":null}]}],"filter_subjects":["a.\u003e","b\"c","ü"]}}"#;
            let got = Parser::new(text).object_path(&["config", "filter_subjects"]);
            assert_eq!(
                got,
                Some(vec!["a.>".to_owned(), "b\"c".to_owned(), "ü".to_owned()])
            );
            let none = Parser::new(r#"{"config":{"ack_wait":1}}"#)
                .object_path(&["config", "filter_subjects"]);
            assert_eq!(none, None);
        }
    }
}

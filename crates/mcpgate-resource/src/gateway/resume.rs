//! Event streams a client can resume (Streamable HTTP's resumability).
//!
//! When a forwarded request's answer becomes an event stream, each event
//! carries an id, `<stream>/<seq>`. What the upstream sends goes into a
//! bounded log that outlives the client's connection: a client whose
//! connection drops does not cancel its request (the specification asks
//! servers not to read a disconnection as a cancellation), and a `GET`
//! with `Last-Event-ID` picks up after the last event it saw, to the end.
//!
//! Per client session at most [`MAX_STREAMS`] logs are kept; a log whose
//! end a client has read is forgotten at once. Past the bound the oldest
//! ended log goes first, else the oldest running one, whose request is
//! then cancelled upstream. A log keeps its newest [`MAX_EVENTS`] events,
//! and ended logs of a session at most [`MAX_ENDED_BYTES`] in all.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Body;
use bytes::Bytes;
use tokio::sync::Notify;

/// Logs kept per client session.
pub const MAX_STREAMS: usize = 32;
/// Events kept per log; older ones cannot be replayed.
pub const MAX_EVENTS: usize = 256;
/// Bytes of ended, unread logs kept per client session.
pub const MAX_ENDED_BYTES: usize = 16 << 20;

/// The resumable streams of one client session.
#[derive(Debug, Default)]
pub struct Streams {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    logs: VecDeque<Arc<Log>>,
}

/// What one forwarded request sent the client, and whether it ended.
#[derive(Debug)]
pub struct Log {
    id: u64,
    state: Mutex<State>,
    changed: Notify,
    // Set when the log is dropped from its session to make room: the
    // request it carries is given up.
    evicted: AtomicBool,
    evict: Notify,
}

#[derive(Debug, Default)]
struct State {
    events: VecDeque<(u64, Bytes)>,
    next_seq: u64,
    bytes: usize,
    ended: bool,
    // A reader sent the last event: nobody needs the log any more.
    delivered: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change is whole under the lock: a panic leaves it consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Streams {
    /// A new log, making room for it.
    pub fn start(&self) -> Arc<Log> {
        let mut inner = lock(&self.inner);
        inner.logs.retain(|log| !lock(&log.state).delivered);
        while inner.logs.len() >= MAX_STREAMS {
            let ended = inner.logs.iter().position(|log| lock(&log.state).ended);
            let Some(gone) = inner.logs.remove(ended.unwrap_or(0)) else {
                break;
            };
            gone.stop();
        }
        inner.next += 1;
        let log = Arc::new(Log {
            id: inner.next,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        });
        inner.logs.push_back(log.clone());
        log
    }

    /// The rest of a stream after `last_event_id` (`<stream>/<seq>`), if
    /// that stream is still kept.
    pub fn resume(&self, last_event_id: &str) -> Option<Body> {
        let (stream, seq) = last_event_id.split_once('/')?;
        let (stream, seq) = (stream.parse::<u64>().ok()?, seq.parse::<u64>().ok()?);
        let log = lock(&self.inner)
            .logs
            .iter()
            .find(|log| log.id == stream)?
            .clone();
        Some(log.reader(seq))
    }

    /// Forgets ended logs past the byte bound, oldest first.
    fn trim_ended(&self) {
        let mut inner = lock(&self.inner);
        let mut total: usize = inner
            .logs
            .iter()
            .map(|log| {
                let state = lock(&log.state);
                if state.ended { state.bytes } else { 0 }
            })
            .sum();
        while total > MAX_ENDED_BYTES {
            let Some(at) = inner.logs.iter().position(|log| lock(&log.state).ended) else {
                break;
            };
            if let Some(gone) = inner.logs.remove(at) {
                total = total.saturating_sub(lock(&gone.state).bytes);
            }
        }
    }
}

impl Log {
    /// Adds an event.
    pub fn push(&self, event: Bytes) {
        {
            let mut state = lock(&self.state);
            state.next_seq += 1;
            let seq = state.next_seq;
            state.bytes += event.len();
            state.events.push_back((seq, event));
            while state.events.len() > MAX_EVENTS {
                if let Some((_, old)) = state.events.pop_front() {
                    state.bytes -= old.len();
                }
            }
        }
        self.changed.notify_waiters();
    }

    /// Adds the last event: the request's answer.
    pub fn end(&self, answer: Bytes, streams: &Streams) {
        self.push(answer);
        lock(&self.state).ended = true;
        self.changed.notify_waiters();
        streams.trim_ended();
    }

    /// Whether the log was dropped to make room (its request is given up).
    pub async fn evicted(&self) {
        let notified = self.evict.notified();
        if self.evicted.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }

    fn stop(&self) {
        self.evicted.store(true, Ordering::Release);
        self.evict.notify_waiters();
        // Readers end rather than wait for what will not come.
        lock(&self.state).ended = true;
        self.changed.notify_waiters();
    }

    /// The events after `seq`, as an event stream that ends with the log.
    pub fn reader(self: Arc<Self>, seq: u64) -> Body {
        let stream = futures::stream::unfold(Some((self, seq)), |cursor| async move {
            let (log, mut seq) = cursor?;
            loop {
                let (out, done) = log.after(&mut seq);
                if !out.is_empty() {
                    let next = (!done).then_some((log, seq));
                    return Some((Ok::<_, Infallible>(Bytes::from(out)), next));
                }
                if done {
                    return None;
                }
                let notified = log.changed.notified();
                tokio::pin!(notified);
                // Registered, then looked again: no push falls between.
                notified.as_mut().enable();
                if log.has_after(seq) {
                    continue;
                }
                notified.await;
            }
        });
        Body::from_stream(stream)
    }

    // The events after `*seq` as event-stream text (moving `*seq` past
    // them), and whether that is the end of the log.
    fn after(&self, seq: &mut u64) -> (Vec<u8>, bool) {
        let mut state = lock(&self.state);
        let from = *seq;
        let mut out = Vec::new();
        for (n, event) in state.events.iter().filter(|(n, _)| *n > from) {
            sse_event_with_id(&mut out, &format!("{}/{n}", self.id), event);
            *seq = *n;
        }
        let done = state.ended && state.events.back().is_none_or(|(n, _)| *n <= *seq);
        if done && !self.evicted.load(Ordering::Acquire) {
            state.delivered = true;
        }
        (out, done)
    }

    fn has_after(&self, seq: u64) -> bool {
        let state = lock(&self.state);
        state.ended || state.events.back().is_some_and(|(n, _)| *n > seq)
    }
}

/// Appends one `message` event with id `id` carrying `data`.
pub fn sse_event_with_id(out: &mut Vec<u8>, id: &str, data: &[u8]) {
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(id.as_bytes());
    out.push(b'\n');
    super::reply::sse_event(out, data);
}

#[cfg(test)]
mod tests {
    use super::*;
    async fn read_all(body: Body) -> String {
        let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn a_reader_gets_every_event_with_its_id_and_ends_with_the_log() {
        let streams = Streams::default();
        let log = streams.start();
        log.push(Bytes::from_static(b"{\"a\":1}"));
        let reader = tokio::spawn(read_all(log.clone().reader(0)));
        tokio::task::yield_now().await;
        log.push(Bytes::from_static(b"{\"a\":2}"));
        log.end(Bytes::from_static(b"{\"done\":true}"), &streams);
        let text = reader.await.expect("reader");
        assert_eq!(
            text,
            "id: 1/1\nevent: message\ndata: {\"a\":1}\n\n\
             id: 1/2\nevent: message\ndata: {\"a\":2}\n\n\
             id: 1/3\nevent: message\ndata: {\"done\":true}\n\n"
        );
        // Read to its end: forgotten when the next stream starts.
        let _next = streams.start();
        assert!(streams.resume("1/1").is_none());
    }

    #[tokio::test]
    async fn a_stream_resumes_after_the_last_event_seen() {
        let streams = Streams::default();
        let log = streams.start();
        for n in 1..=3 {
            log.push(Bytes::from(format!("{{\"n\":{n}}}")));
        }
        log.end(Bytes::from_static(b"{\"done\":true}"), &streams);
        let text = read_all(streams.resume("1/2").expect("kept")).await;
        assert!(text.starts_with("id: 1/3\n"), "{text}");
        assert!(text.contains("id: 1/4\n") && !text.contains("id: 1/2\n"));
        for bad in ["2/1", "x/1", "1", "1/y", ""] {
            assert!(streams.resume(bad).is_none(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn past_the_bound_the_oldest_ended_log_goes_first_then_the_oldest_running() {
        let streams = Streams::default();
        let first = streams.start();
        let ended = streams.start();
        ended.end(Bytes::from_static(b"{}"), &streams);
        for _ in 2..MAX_STREAMS {
            streams.start();
        }
        streams.start();
        assert!(streams.resume("2/0").is_none(), "the ended log made room");
        assert!(!first.evicted.load(Ordering::Acquire));
        streams.start();
        assert!(
            first.evicted.load(Ordering::Acquire),
            "then the oldest running"
        );
        // Its request's pump learns it at once, even if it asks later.
        first.evicted().await;
    }

    #[test]
    fn a_log_keeps_its_newest_events_only() {
        let streams = Streams::default();
        let log = streams.start();
        for n in 0..MAX_EVENTS + 10 {
            log.push(Bytes::from(n.to_string()));
        }
        let state = lock(&log.state);
        assert_eq!(state.events.len(), MAX_EVENTS);
        assert_eq!(state.events.front().map(|(n, _)| *n), Some(11));
    }
}

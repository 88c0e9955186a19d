//! A forwarded request's answer to the client: one JSON body when the
//! upstream answered with nothing before it, else an event stream that
//! carries what the upstream sent on the way (progress, logs, its own
//! requests) and ends with the answer; that stream can be resumed
//! ([`super::resume`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use rmcp::model::{ErrorCode, ErrorData, RequestId};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Forwarded;
use super::resume::Streams;
use crate::closing::Closing;
use crate::wire;

/// How a forwarded request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The upstream answered.
    Answered,
    /// It did not answer in time; the answer is the gateway's error.
    TimedOut,
    /// It went away first; the answer is the gateway's error.
    Gone,
}

/// What the final answer goes through before the client sees it: a list
/// filtered by policy, an audit record of the outcome.
pub type Finish =
    Box<dyn FnOnce(Bytes, Ended) -> std::pin::Pin<Box<dyn Future<Output = Bytes> + Send>> + Send>;

/// The answer as the upstream gave it.
pub fn passthrough() -> Finish {
    Box::new(|answer, _| Box::pin(std::future::ready(answer)))
}

/// The error a client gets when the upstream took too long.
pub fn timeout_error(after: Duration) -> ErrorData {
    ErrorData::new(
        ErrorCode(-32001),
        format!(
            "the upstream server did not answer within {} s; the request was cancelled",
            after.as_secs()
        ),
        None,
    )
}

// How a request ended, when not with something on the way.
enum End {
    Done(Bytes),
    Gone,
    Timeout,
}

// The next message on the way (`Ok`), or how the request ended.
async fn next(fwd: &mut Forwarded, deadline: Instant) -> Result<Bytes, End> {
    tokio::select! {
        biased;
        event = fwd.call.events.recv() => match event {
            Some(event) => Ok(event),
            // The routes dropped this request without answering it.
            None => Err(match (&mut fwd.call.done).await {
                Ok(answer) => End::Done(answer),
                Err(_) => End::Gone,
            }),
        },
        done = &mut fwd.call.done => Err(match done {
            Ok(answer) => End::Done(answer),
            Err(_) => End::Gone,
        }),
        () = tokio::time::sleep_until(deadline) => Err(End::Timeout),
    }
}

// The client's last message for request `id`: the upstream's answer, or
// the gateway's error; through `finish` either way. A timeout tells the
// upstream to stop.
async fn last(id: &RequestId, mut fwd: Forwarded, end: End, finish: Finish) -> Bytes {
    let (answer, ended) = match end {
        End::Done(answer) => {
            fwd.answered();
            (answer, Ended::Answered)
        }
        End::Gone => {
            fwd.answered();
            (wire::error(Some(id), &gone()), Ended::Gone)
        }
        End::Timeout => {
            let after = fwd.timeout;
            fwd.abandon("timed out");
            (
                wire::error(Some(id), &timeout_error(after)),
                Ended::TimedOut,
            )
        }
    };
    finish(answer, ended).await
}

fn drain(events: &mut mpsc::Receiver<Bytes>, out: &mut Vec<u8>) {
    while let Ok(event) = events.try_recv() {
        sse_event(out, &event);
    }
}

/// Answers the client's request `id` with what the upstream sends; an
/// event stream is kept in `streams` for the client to resume.
pub async fn respond(
    id: RequestId,
    mut fwd: Forwarded,
    finish: Finish,
    streams: &Arc<Streams>,
) -> Response {
    let deadline = Instant::now() + fwd.timeout;
    match next(&mut fwd, deadline).await {
        Ok(first) => stream(id, fwd, finish, first, deadline, streams.clone()),
        Err(end) => json(last(&id, fwd, end, finish).await),
    }
}

/// Sends what the upstream sends for the client's request `id`, and then
/// its answer, to `out`: the event stream of a session on the legacy
/// HTTP+SSE transport, where answers never travel in the POST's response.
pub async fn relay(id: RequestId, mut fwd: Forwarded, finish: Finish, out: mpsc::Sender<Bytes>) {
    let deadline = Instant::now() + fwd.timeout;
    let end = loop {
        match next(&mut fwd, deadline).await {
            Ok(event) => {
                if out.send(event).await.is_err() {
                    // The client left; dropping the request cancels it.
                    return;
                }
            }
            Err(end) => break end,
        }
    };
    if matches!(end, End::Done(_)) {
        while let Ok(event) = fwd.call.events.try_recv() {
            let _ = out.send(event).await;
        }
    }
    let _ = out.send(last(&id, fwd, end, finish).await).await;
}

fn gone() -> ErrorData {
    ErrorData::internal_error("the upstream server went away before answering", None)
}

// The request's messages go into a log of their own, which the client
// reads now and may resume later: a connection that drops does not end
// the request.
fn stream(
    id: RequestId,
    mut fwd: Forwarded,
    finish: Finish,
    first: Bytes,
    deadline: Instant,
    streams: Arc<Streams>,
) -> Response {
    let log = streams.start();
    log.push(first);
    let pump = log.clone();
    tokio::spawn(async move {
        let end = loop {
            tokio::select! {
                biased;
                // Dropped to make room: dropping the request cancels it.
                () = pump.evicted() => return,
                event = next(&mut fwd, deadline) => match event {
                    Ok(event) => pump.push(event),
                    Err(end) => break end,
                },
            }
        };
        if matches!(end, End::Done(_)) {
            while let Ok(event) = fwd.call.events.try_recv() {
                pump.push(event);
            }
        }
        let answer = last(&id, fwd, end, finish).await;
        pump.end(answer, &streams);
    });
    event_stream(log.reader(0))
}

/// A response carrying `body` as `text/event-stream`.
pub fn event_stream(body: Body) -> Response {
    (
        StatusCode::OK,
        [
            (CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// The standalone stream of a session (`GET`): whatever the upstream sends
/// that belongs to no request, until the client leaves, the session ends or
/// the server shuts down.
pub fn standalone(events: mpsc::Receiver<Bytes>, closing: Closing) -> Response {
    let body = futures::stream::unfold((events, closing), |(mut events, closing)| async move {
        let event = tokio::select! {
            event = events.recv() => event?,
            () = closing.closed() => return None,
        };
        let mut out = Vec::with_capacity(event.len() + 32);
        sse_event(&mut out, &event);
        drain(&mut events, &mut out);
        Some((Ok::<_, Infallible>(Bytes::from(out)), (events, closing)))
    });
    event_stream(Body::from_stream(body))
}

/// Appends one `message` event carrying `data` (a JSON text; a line break
/// inside it, legal JSON whitespace, starts another `data:` line).
pub fn sse_event(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(b"event: message\n");
    for line in data.split(|b| *b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.push(b'\n');
    }
    out.push(b'\n');
}

fn json(body: Bytes) -> Response {
    wire::json(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_lines_into_data_fields() {
        let mut out = Vec::new();
        sse_event(&mut out, b"{\"a\":\n1}");
        assert_eq!(out, b"event: message\ndata: {\"a\":\ndata: 1}\n\n");
    }
}

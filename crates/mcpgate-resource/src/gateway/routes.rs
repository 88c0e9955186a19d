//! Who is waiting for what on one upstream connection.
//!
//! Each side numbers its own requests, so every id is rewritten on the way
//! through: a client's request goes up under the gateway's next number and
//! its answer comes back under the client's id; a request of the upstream's
//! (sampling, elicitation, roots) goes down under a gateway number and the
//! client's answer goes up under the upstream's id. Notifications follow the
//! request they belong to: progress by its token, everything else by the
//! request whose stream carried it (HTTP) or, where the transport does not
//! say (stdio), the newest request in flight; what belongs to none goes to
//! the session's standalone stream, if the client opened one.
//!
//! The table is behind a plain mutex that is never held across an await.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use rmcp::model::RequestId;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::frame::{self, AnswerId, Frame, Outcome, Shape};

/// How many messages may wait for a slow client on one request's stream
/// before progress and log notifications are dropped.
pub(crate) const EVENT_BACKLOG: usize = 64;

/// The messages of one request in flight, as the client will see them.
#[derive(Debug)]
pub struct Call {
    /// The gateway's number for it upstream.
    pub number: u64,
    /// What the upstream sent on the way: notifications and requests.
    pub events: mpsc::Receiver<Bytes>,
    /// The answer, already under the client's id.
    pub done: oneshot::Receiver<Bytes>,
}

#[derive(Debug)]
struct Pending {
    client_id: Option<RequestId>,
    events: mpsc::Sender<Bytes>,
    done: oneshot::Sender<Bytes>,
    progress: Option<Box<RawValue>>,
}

#[derive(Debug)]
struct Asked {
    upstream_id: Box<RawValue>,
}

#[derive(Debug, Default)]
struct Table {
    pending: HashMap<u64, Pending>,
    asked: HashMap<u64, Asked>,
    standalone: Option<mpsc::Sender<Bytes>>,
    newest: Option<u64>,
}

/// The routing table of one upstream connection.
#[derive(Debug, Default)]
pub struct Routes {
    table: Mutex<Table>,
    // Shared by every connection of a gateway, so that a number the client
    // answers names one request of one upstream, however many a session
    // reaches.
    next: Arc<AtomicU64>,
    shared: bool,
    // Behind a gateway of several upstreams: what this one's resource URIs
    // start with, as clients see them.
    uri_prefix: Option<Arc<str>>,
    // The upstream said its tools changed: pins are reviewed again before
    // the next call.
    tools_changed: AtomicBool,
}

/// What [`Routes::inbound`] wants sent back upstream, if anything.
pub type Reply = Option<Bytes>;

impl Routes {
    /// The table of a connection several clients share: a message goes to
    /// a client only when it is certainly theirs (the stream that carried
    /// it, a progress token no other request in flight uses); nothing goes
    /// to the newest request or a standalone stream, which may be another
    /// user's.
    pub fn shared() -> Self {
        Self {
            shared: true,
            ..Self::default()
        }
    }

    /// Numbers requests from `numbers`, shared with the other connections
    /// of the gateway.
    pub fn numbered_by(mut self, numbers: Arc<AtomicU64>) -> Self {
        self.next = numbers;
        self
    }

    /// Shows the upstream's resource URIs (in `notifications/resources/updated`)
    /// under `prefix`.
    pub fn with_uri_prefix(mut self, prefix: Option<Arc<str>>) -> Self {
        self.uri_prefix = prefix;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Every change is one insert or remove: a panic leaves it whole.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the upstream announced a change of its tools since the last
    /// call; clears the mark.
    pub fn take_tools_changed(&self) -> bool {
        self.tools_changed.swap(false, Ordering::AcqRel)
    }

    fn number(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers a request; returns the message to send upstream and the
    /// client's view of its progress. `client_id` is `None` for the
    /// gateway's own requests, whose answer keeps the gateway's number.
    pub fn request(
        &self,
        client_id: Option<RequestId>,
        method: &str,
        params: Option<&RawValue>,
    ) -> (Bytes, Call) {
        let number = self.number();
        let (events_tx, events) = mpsc::channel(EVENT_BACKLOG);
        let (done_tx, done) = oneshot::channel();
        let pending = Pending {
            client_id,
            events: events_tx,
            done: done_tx,
            progress: frame::progress_token(params),
        };
        {
            let mut table = self.lock();
            table.pending.insert(number, pending);
            table.newest = Some(number);
        }
        (
            frame::request(number, method, params),
            Call {
                number,
                events,
                done,
            },
        )
    }

    /// Forgets request `number` (given up on: timed out, or the client
    /// left); the `notifications/cancelled` to send upstream if it was
    /// still in flight.
    pub fn abandon(&self, number: u64, reason: &str) -> Option<Bytes> {
        let mut table = self.lock();
        table.pending.remove(&number)?;
        if table.newest == Some(number) {
            table.newest = table.pending.keys().max().copied();
        }
        drop(table);
        Some(cancelled(AnswerId::Number(number), reason))
    }

    /// The upstream form of the client's `notifications/cancelled` for its
    /// request `client_id`, if that request is in flight here.
    pub fn cancel(&self, client_id: &RequestId, reason: Option<&str>) -> Option<Bytes> {
        let table = self.lock();
        let number = table
            .pending
            .iter()
            .find(|(_, p)| p.client_id.as_ref() == Some(client_id))
            .map(|(n, _)| *n)?;
        drop(table);
        Some(cancelled(
            AnswerId::Number(number),
            reason.unwrap_or("cancelled by the client"),
        ))
    }

    /// The upstream form of the client's answer to the gateway's request
    /// `id`; `None` when no such request is open (answered already, or never
    /// asked).
    pub fn answer(&self, id: &RequestId, outcome: Outcome<'_>) -> Option<Bytes> {
        let RequestId::Number(n) = id else {
            return None;
        };
        let asked = self.lock().asked.remove(&u64::try_from(*n).ok()?)?;
        Some(frame::response(AnswerId::Raw(&asked.upstream_id), outcome))
    }

    /// Sets the standalone stream, replacing (and so ending) any other.
    pub fn open_standalone(&self) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(EVENT_BACKLOG);
        self.set_standalone(tx);
        rx
    }

    /// Sets the standalone stream to `tx`, which other connections of the
    /// same client session may feed too. Never on a shared connection.
    pub fn set_standalone(&self, tx: mpsc::Sender<Bytes>) {
        if !self.shared {
            self.lock().standalone = Some(tx);
        }
    }

    /// Routes one message from the upstream. `related` is the request whose
    /// stream carried it, where the transport says.
    pub fn inbound(&self, bytes: &[u8], related: Option<u64>) -> Reply {
        let Some(frame) = Frame::parse(bytes) else {
            tracing::warn!(target: "mcpgate::upstream", len = bytes.len(), "the upstream sent something that is not JSON-RPC; ignored");
            return None;
        };
        match frame.shape()? {
            Shape::Response { id, outcome } => {
                let number = frame::our_number(id)?;
                let pending = {
                    let mut table = self.lock();
                    let pending = table.pending.remove(&number);
                    if table.newest == Some(number) {
                        table.newest = table.pending.keys().max().copied();
                    }
                    pending
                }?;
                let answer = match &pending.client_id {
                    Some(client) => frame::response(AnswerId::Client(client), outcome),
                    None => frame::response(AnswerId::Number(number), outcome),
                };
                // The client may have left; nothing to do then.
                let _ = pending.done.send(answer);
                None
            }
            Shape::Request { id, method } => {
                let number = self.number();
                let message = frame::request(number, method, frame.params);
                let mut table = self.lock();
                let sink = route(&table, related, self.shared).cloned();
                let delivered = sink.is_some_and(|sink| sink.try_send(message).is_ok());
                if !delivered {
                    drop(table);
                    tracing::warn!(target: "mcpgate::upstream", method, "the upstream asked the client something with no stream open to carry it; refused");
                    let error = RawValue::from_string(
                        r#"{"code":-32603,"message":"the client has no open stream to receive this request"}"#
                            .to_owned(),
                    )
                    .ok()?;
                    return Some(frame::response(AnswerId::Raw(id), Outcome::Error(&error)));
                }
                table.asked.insert(
                    number,
                    Asked {
                        upstream_id: id.to_owned(),
                    },
                );
                None
            }
            Shape::Notification { method } => {
                if method == "notifications/tools/list_changed" {
                    self.tools_changed.store(true, Ordering::Release);
                }
                let table = self.lock();
                let (sink, message) = match method {
                    "notifications/progress" => {
                        let token = progress_of(frame.params);
                        let sink = token.and_then(|token| {
                            let mut owners = table.pending.values().filter(|p| {
                                p.progress
                                    .as_deref()
                                    .is_some_and(|t| t.get() == token.get())
                            });
                            let first = owners.next();
                            // Two requests with one token (clients choose
                            // them): the progress is nobody's for sure.
                            if self.shared && owners.next().is_some() {
                                return None;
                            }
                            first.map(|p| &p.events)
                        });
                        (sink, Bytes::copy_from_slice(bytes))
                    }
                    "notifications/cancelled" => {
                        // The upstream withdrew a request of its own: name
                        // it by the number the client knows.
                        let number = cancelled_request(frame.params).and_then(|id| {
                            table
                                .asked
                                .iter()
                                .find(|(_, a)| a.upstream_id.get() == id.get())
                                .map(|(n, _)| *n)
                        })?;
                        (
                            route(&table, related, self.shared),
                            cancelled(AnswerId::Number(number), "cancelled by the server"),
                        )
                    }
                    "notifications/resources/updated" if self.uri_prefix.is_some() => (
                        route(&table, related, self.shared),
                        self.prefixed_update(&frame, bytes),
                    ),
                    _ => (
                        route(&table, related, self.shared),
                        Bytes::copy_from_slice(bytes),
                    ),
                };
                if let Some(sink) = sink
                    && sink.try_send(message).is_err()
                {
                    tracing::debug!(target: "mcpgate::upstream", method, "a notification was dropped: the client is not reading");
                }
                None
            }
        }
    }

    /// Answers every request in flight with `error` (the connection is
    /// gone) and forgets the upstream's open requests.
    pub fn fail_all(&self, code: i32, message: &str) {
        let (pending, _asked) = {
            let mut table = self.lock();
            table.newest = None;
            (
                std::mem::take(&mut table.pending),
                std::mem::take(&mut table.asked),
            )
        };
        let error = error_json(code, message);
        for (number, p) in pending {
            let answer = match &p.client_id {
                Some(client) => frame::response(AnswerId::Client(client), Outcome::Error(&error)),
                None => frame::response(AnswerId::Number(number), Outcome::Error(&error)),
            };
            let _ = p.done.send(answer);
        }
    }

    /// How many requests are in flight.
    pub fn in_flight(&self) -> usize {
        self.lock().pending.len()
    }

    // `notifications/resources/updated` with its URI as clients know it.
    fn prefixed_update(&self, frame: &Frame<'_>, bytes: &[u8]) -> Bytes {
        let (Some(prefix), Some(params)) = (&self.uri_prefix, frame.params) else {
            return Bytes::copy_from_slice(bytes);
        };
        let Ok(mut params) = serde_json::from_str::<serde_json::Value>(params.get()) else {
            return Bytes::copy_from_slice(bytes);
        };
        if let Some(uri) = params.get_mut("uri")
            && let Some(s) = uri.as_str()
        {
            *uri = format!("{prefix}{s}").into();
        }
        match RawValue::from_string(params.to_string()) {
            Ok(params) => frame::notification("notifications/resources/updated", Some(&params)),
            Err(_) => Bytes::copy_from_slice(bytes),
        }
    }
}

/// A JSON-RPC error object.
pub fn error_json(code: i32, message: &str) -> Box<RawValue> {
    let json = serde_json::json!({ "code": code, "message": message }).to_string();
    // A JSON object is always a raw value.
    RawValue::from_string(json).unwrap_or_else(|_| {
        RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| unreachable!())
    })
}

// The stream for a message: its own request's, else the newest request's
// (stdio says nothing about which request a message belongs to), else the
// standalone one.
fn route(table: &Table, related: Option<u64>, shared: bool) -> Option<&mpsc::Sender<Bytes>> {
    let own = related.and_then(|n| table.pending.get(&n));
    if shared {
        return own.map(|p| &p.events);
    }
    own.or_else(|| table.newest.and_then(|n| table.pending.get(&n)))
        .map(|p| &p.events)
        .or(table.standalone.as_ref())
}

fn cancelled(id: AnswerId<'_>, reason: &str) -> Bytes {
    let id = match id {
        AnswerId::Number(n) => n.to_string(),
        AnswerId::Raw(raw) => raw.get().to_owned(),
        AnswerId::Client(RequestId::Number(n)) => n.to_string(),
        AnswerId::Client(RequestId::String(s)) => serde_json::Value::from(&**s).to_string(),
    };
    let reason = serde_json::Value::from(reason).to_string();
    let params = format!(r#"{{"requestId":{id},"reason":{reason}}}"#);
    match RawValue::from_string(params) {
        Ok(params) => frame::notification("notifications/cancelled", Some(&params)),
        Err(_) => frame::notification("notifications/cancelled", None),
    }
}

fn progress_of(params: Option<&RawValue>) -> Option<&RawValue> {
    #[derive(Deserialize)]
    struct P<'a> {
        #[serde(borrow, rename = "progressToken")]
        token: &'a RawValue,
    }
    serde_json::from_str::<P<'_>>(params?.get())
        .ok()
        .map(|p| p.token)
}

fn cancelled_request(params: Option<&RawValue>) -> Option<&RawValue> {
    #[derive(Deserialize)]
    struct P<'a> {
        #[serde(borrow, rename = "requestId")]
        id: &'a RawValue,
    }
    serde_json::from_str::<P<'_>>(params?.get())
        .ok()
        .map(|p| p.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).expect("raw")
    }

    fn value(b: &[u8]) -> Value {
        serde_json::from_slice(b).expect("json")
    }

    #[tokio::test]
    async fn an_answer_returns_under_the_client_id() {
        let routes = Routes::default();
        let (up, mut call) =
            routes.request(Some(RequestId::String("c-1".into())), "tools/call", None);
        let n = value(&up)["id"].as_u64().expect("number");
        assert_eq!(n, call.number);
        let reply = format!(r#"{{"jsonrpc":"2.0","id":{n},"result":{{"ok":true}}}}"#);
        assert!(routes.inbound(reply.as_bytes(), None).is_none());
        let done = (&mut call.done).await.expect("answer");
        assert_eq!(
            value(&done),
            json!({"jsonrpc": "2.0", "id": "c-1", "result": {"ok": true}})
        );
        assert_eq!(routes.in_flight(), 0);
        // A second answer to the same number is ignored.
        assert!(routes.inbound(reply.as_bytes(), None).is_none());
    }

    #[tokio::test]
    async fn progress_follows_its_token_and_server_requests_round_trip() {
        let routes = Routes::default();
        let params = raw(r#"{"name":"slow","_meta":{"progressToken":42}}"#);
        let (_, mut slow) = routes.request(Some(RequestId::Number(1)), "tools/call", Some(&params));
        let (_, mut other) = routes.request(Some(RequestId::Number(2)), "tools/call", None);
        routes.inbound(
            br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":42,"progress":1}}"#,
            None,
        );
        assert_eq!(
            value(&slow.events.try_recv().expect("progress"))["params"]["progress"],
            1
        );
        assert!(other.events.try_recv().is_err());

        // The upstream asks the client something while request 1 runs.
        routes.inbound(
            br#"{"jsonrpc":"2.0","id":"up-7","method":"sampling/createMessage","params":{}}"#,
            Some(slow.number),
        );
        let asked = value(&slow.events.try_recv().expect("request"));
        let g = asked["id"].as_i64().expect("gateway number");
        let up = routes
            .answer(
                &RequestId::Number(g),
                Outcome::Result(&raw(r#"{"role":"assistant"}"#)),
            )
            .expect("known");
        assert_eq!(
            value(&up),
            json!({"jsonrpc": "2.0", "id": "up-7", "result": {"role": "assistant"}})
        );
        // Answered once only.
        assert!(
            routes
                .answer(&RequestId::Number(g), Outcome::Result(&raw("{}")))
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_server_request_with_nowhere_to_go_is_refused_upstream() {
        let routes = Routes::default();
        let reply = routes
            .inbound(
                br#"{"jsonrpc":"2.0","id":5,"method":"elicitation/create","params":{}}"#,
                None,
            )
            .expect("refusal");
        let v = value(&reply);
        assert_eq!(v["id"], 5);
        assert_eq!(v["error"]["code"], -32603);
        // With a standalone stream, it goes there.
        let mut standalone = routes.open_standalone();
        assert!(
            routes
                .inbound(br#"{"jsonrpc":"2.0","id":6,"method":"roots/list"}"#, None)
                .is_none()
        );
        assert_eq!(
            value(&standalone.try_recv().expect("request"))["method"],
            "roots/list"
        );
    }

    #[tokio::test]
    async fn a_shared_connection_delivers_only_what_is_certainly_yours() {
        let routes = Routes::shared();
        let mine = raw(r#"{"_meta":{"progressToken":1}}"#);
        let (_, mut alice) = routes.request(Some(RequestId::Number(1)), "tools/call", Some(&mine));
        let (_, mut bob) = routes.request(Some(RequestId::Number(1)), "tools/call", Some(&mine));
        let mut standalone = routes.open_standalone();
        // A log line and a request from a stdio child belong to nobody known.
        routes.inbound(
            br#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#,
            None,
        );
        let refused = routes
            .inbound(
                br#"{"jsonrpc":"2.0","id":1,"method":"sampling/createMessage"}"#,
                None,
            )
            .expect("refused upstream");
        assert!(value(&refused)["error"].is_object());
        // Both chose token 1: the progress is dropped, not guessed.
        routes.inbound(
            br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}"#,
            None,
        );
        assert!(alice.events.try_recv().is_err());
        assert!(bob.events.try_recv().is_err());
        assert!(standalone.try_recv().is_err());
        // What came on alice's own stream is hers.
        routes.inbound(
            br#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#,
            Some(alice.number),
        );
        assert!(alice.events.try_recv().is_ok());
        assert!(bob.events.try_recv().is_err());
    }

    #[tokio::test]
    async fn cancellation_and_failure() {
        let routes = Routes::default();
        let (_, call) = routes.request(Some(RequestId::Number(9)), "tools/call", None);
        let up = routes
            .cancel(&RequestId::Number(9), None)
            .expect("in flight");
        assert_eq!(value(&up)["params"]["requestId"], call.number);
        assert!(routes.cancel(&RequestId::Number(10), None).is_none());

        routes.fail_all(-32603, "the upstream server exited");
        let done = call.done.await.expect("answer");
        let v = value(&done);
        assert_eq!(v["id"], 9);
        assert_eq!(v["error"]["message"], "the upstream server exited");

        let (_, gone) = routes.request(None, "ping", None);
        assert!(routes.abandon(gone.number, "timed out").is_some());
        assert!(routes.abandon(gone.number, "timed out").is_none());
    }
}

//! JSON-RPC messages between the gateway and an upstream server.
//!
//! A message is read once into borrowed parts and rewritten by splicing
//! those parts into a new envelope: ids change on the way through (each
//! side numbers its own requests), everything else passes byte for byte.

use bytes::Bytes;
use rmcp::model::RequestId;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::wire::write_id;

/// One message as the upstream sent it.
#[derive(Debug, Deserialize)]
pub struct Frame<'a> {
    /// Its id, as written.
    #[serde(borrow, default)]
    pub id: Option<&'a RawValue>,
    /// Its method (requests and notifications).
    #[serde(borrow, default)]
    pub method: Option<std::borrow::Cow<'a, str>>,
    /// Its params, as written.
    #[serde(borrow, default)]
    pub params: Option<&'a RawValue>,
    /// A response's result.
    #[serde(borrow, default)]
    pub result: Option<&'a RawValue>,
    /// A response's error.
    #[serde(borrow, default)]
    pub error: Option<&'a RawValue>,
}

/// What a message is.
#[derive(Debug)]
pub enum Shape<'a> {
    /// A request: answer expected.
    Request {
        /// Its id.
        id: &'a RawValue,
        /// Its method.
        method: &'a str,
    },
    /// A notification.
    Notification {
        /// Its method.
        method: &'a str,
    },
    /// An answer to one of the gateway's requests: its `result` or `error`.
    Response {
        /// The id of the request answered.
        id: &'a RawValue,
        /// Its `result` or `error`.
        outcome: Outcome<'a>,
    },
}

/// A response's `result` or `error`.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// `result`.
    Result(&'a RawValue),
    /// `error`.
    Error(&'a RawValue),
}

impl<'a> Frame<'a> {
    /// Reads one message; `None` for anything that is not JSON-RPC.
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    /// What it is, or `None` for a shape JSON-RPC does not have.
    pub fn shape(&'a self) -> Option<Shape<'a>> {
        match (self.method.as_deref(), self.id) {
            (Some(method), Some(id)) => Some(Shape::Request { id, method }),
            (Some(method), None) => Some(Shape::Notification { method }),
            (None, Some(id)) => {
                let outcome = match (self.result, self.error) {
                    (Some(r), None) => Outcome::Result(r),
                    (None, Some(e)) => Outcome::Error(e),
                    _ => return None,
                };
                Some(Shape::Response { id, outcome })
            }
            (None, None) => None,
        }
    }
}

fn open(capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity + 64);
    out.extend_from_slice(br#"{"jsonrpc":"2.0""#);
    out
}

fn method_and_params(out: &mut Vec<u8>, method: &str, params: Option<&RawValue>) {
    out.extend_from_slice(br#","method":"#);
    // A method name always serialises.
    let _ = serde_json::to_writer(&mut *out, method);
    if let Some(params) = params {
        out.extend_from_slice(br#","params":"#);
        out.extend_from_slice(params.get().as_bytes());
    }
}

/// A request numbered `id`.
pub fn request(id: u64, method: &str, params: Option<&RawValue>) -> Bytes {
    let mut out = open(params.map_or(0, |p| p.get().len()));
    out.extend_from_slice(br#","id":"#);
    out.extend_from_slice(id.to_string().as_bytes());
    method_and_params(&mut out, method, params);
    out.push(b'}');
    out.into()
}

/// A notification.
pub fn notification(method: &str, params: Option<&RawValue>) -> Bytes {
    let mut out = open(params.map_or(0, |p| p.get().len()));
    method_and_params(&mut out, method, params);
    out.push(b'}');
    out.into()
}

/// Where a response's id comes from.
#[derive(Debug, Clone, Copy)]
pub enum AnswerId<'a> {
    /// An id as the other side wrote it.
    Raw(&'a RawValue),
    /// A client's request id.
    Client(&'a RequestId),
    /// One of the gateway's own numbers.
    Number(u64),
}

/// A response carrying `outcome` under `id`.
pub fn response(id: AnswerId<'_>, outcome: Outcome<'_>) -> Bytes {
    let (key, body): (&[u8], &RawValue) = match outcome {
        Outcome::Result(r) => (br#","result":"#, r),
        Outcome::Error(e) => (br#","error":"#, e),
    };
    let mut out = open(body.get().len());
    out.extend_from_slice(br#","id":"#);
    match id {
        AnswerId::Raw(raw) => out.extend_from_slice(raw.get().as_bytes()),
        AnswerId::Client(id) => write_id(&mut out, id),
        AnswerId::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
    }
    out.extend_from_slice(key);
    out.extend_from_slice(body.get().as_bytes());
    out.push(b'}');
    out.into()
}

/// The `_meta.progressToken` of a request's params, if any.
pub fn progress_token(params: Option<&RawValue>) -> Option<Box<RawValue>> {
    #[derive(Deserialize)]
    struct Params<'a> {
        #[serde(borrow, rename = "_meta")]
        meta: Option<Meta<'a>>,
    }
    #[derive(Deserialize)]
    struct Meta<'a> {
        #[serde(borrow, rename = "progressToken")]
        progress_token: Option<&'a RawValue>,
    }
    let params: Params<'_> = serde_json::from_str(params?.get()).ok()?;
    params.meta?.progress_token.map(ToOwned::to_owned)
}

/// The number in an id the gateway wrote, if it is one.
pub fn our_number(id: &RawValue) -> Option<u64> {
    id.get().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).expect("raw")
    }

    #[test]
    fn requests_are_renumbered_and_params_pass_untouched() {
        let params = raw(r#"{"name":"x","arguments":{"a":[1,2,{"b":"\u00e9"}]}}"#);
        let out = request(7, "tools/call", Some(&params));
        let v: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["id"], 7);
        assert_eq!(v["method"], "tools/call");
        assert!(String::from_utf8_lossy(&out).contains(params.get()));
    }

    #[test]
    fn responses_take_the_client_id_back() {
        let body = br#"{"jsonrpc":"2.0","id":12,"result":{"content":[]}}"#;
        let frame = Frame::parse(body).expect("frame");
        let Some(Shape::Response { id, outcome }) = frame.shape() else {
            panic!("not a response");
        };
        assert_eq!(our_number(id), Some(12));
        let client = RequestId::String("abc".into());
        let out = response(AnswerId::Client(&client), outcome);
        let v: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(
            v,
            json!({"jsonrpc": "2.0", "id": "abc", "result": {"content": []}})
        );
    }

    #[test]
    fn shapes_are_told_apart() {
        let note =
            Frame::parse(br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#)
                .expect("frame");
        assert!(matches!(note.shape(), Some(Shape::Notification { .. })));
        let req = Frame::parse(br#"{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage"}"#)
            .expect("frame");
        assert!(matches!(req.shape(), Some(Shape::Request { .. })));
        let both =
            Frame::parse(br#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#).expect("frame");
        assert!(both.shape().is_none());
        assert!(Frame::parse(b"not json").is_none());
    }

    #[test]
    fn progress_tokens_are_found() {
        let p = raw(r#"{"_meta":{"progressToken":"t-1"},"name":"x"}"#);
        assert_eq!(
            progress_token(Some(&p)).map(|t| t.get().to_owned()),
            Some(r#""t-1""#.into())
        );
        assert!(progress_token(Some(&raw(r#"{"name":"x"}"#))).is_none());
        assert!(progress_token(None).is_none());
    }
}

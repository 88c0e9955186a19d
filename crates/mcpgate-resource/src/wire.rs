//! JSON-RPC on the wire: one message in, one reply out.
//!
//! The body is read once into a borrowed envelope (method, id, the params
//! as raw JSON), so that a request is never parsed twice and `params` reach
//! whatever answers them untouched. Replies are written straight to bytes
//! with rmcp's model types inside.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use rmcp::model::{ErrorCode, ErrorData, RequestId};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A request's id as sent: absent, `null` (refused: MCP ids are never
/// null), or a string or number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Id {
    /// No `id` member: a notification, or a response without one.
    #[default]
    Absent,
    /// `"id": null`.
    Null,
    /// A usable id.
    Given(RequestId),
    /// Any other JSON type.
    Invalid,
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl<'de> Visitor<'de> for IdVisitor {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON-RPC id")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Id, E> {
                Ok(Id::Null)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
                Ok(Id::Given(RequestId::Number(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
                Ok(i64::try_from(v).map_or(Id::Invalid, |v| Id::Given(RequestId::Number(v))))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Id, E> {
                Ok(Id::Invalid)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Id, E> {
                Ok(Id::Invalid)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                Ok(Id::Given(RequestId::String(v.into())))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Id, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Id::Invalid)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Id, A::Error> {
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Id::Invalid)
            }
        }
        d.deserialize_any(IdVisitor)
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Id,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

/// One JSON-RPC message from the client.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// A request, to be answered.
    Request {
        /// Its id.
        id: RequestId,
        /// Its method.
        method: Cow<'a, str>,
        /// Its params, as sent.
        params: Option<&'a RawValue>,
    },
    /// A notification: nothing is answered.
    Notification {
        /// Its method.
        method: Cow<'a, str>,
        /// Its params, as sent.
        params: Option<&'a RawValue>,
    },
    /// The client's answer to a request of the server's.
    Response {
        /// The id of the server's request it answers.
        id: RequestId,
        /// Its `result`, or its `error`, as sent.
        outcome: &'a RawValue,
        /// Whether `outcome` is an `error`.
        is_error: bool,
    },
}

/// Why a body is not one JSON-RPC message.
#[derive(Debug)]
pub enum Malformed {
    /// Not JSON at all (-32700).
    Parse(String),
    /// JSON, but not a JSON-RPC message mcpgate takes (-32600).
    Invalid(&'static str, Option<RequestId>),
}

impl Malformed {
    /// The JSON-RPC error to answer with.
    pub fn error(&self) -> (Option<RequestId>, ErrorData) {
        match self {
            Malformed::Parse(e) => (
                None,
                ErrorData::new(ErrorCode::PARSE_ERROR, format!("Parse error: {e}"), None),
            ),
            Malformed::Invalid(why, id) => (id.clone(), ErrorData::invalid_request(*why, None)),
        }
    }
}

/// Reads one message. Batches (removed from MCP in 2025-06-18) are refused.
pub fn parse(body: &[u8]) -> Result<Incoming<'_>, Malformed> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        // Still has to be JSON to be told it is the wrong JSON.
        serde_json::from_slice::<de::IgnoredAny>(body)
            .map_err(|e| Malformed::Parse(e.to_string()))?;
        return Err(Malformed::Invalid("batches are not supported", None));
    }
    let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            // Valid JSON of the wrong shape.
            Malformed::Invalid("not a JSON-RPC 2.0 message", None)
        } else {
            Malformed::Parse(e.to_string())
        }
    })?;
    let given = match &envelope.id {
        Id::Given(id) => Some(id.clone()),
        _ => None,
    };
    if envelope.jsonrpc.as_deref() != Some("2.0") {
        return Err(Malformed::Invalid("jsonrpc must be \"2.0\"", given));
    }
    match (envelope.method, envelope.id) {
        (Some(method), Id::Given(id)) => Ok(Incoming::Request {
            id,
            method,
            params: envelope.params,
        }),
        (Some(method), Id::Absent) => Ok(Incoming::Notification {
            method,
            params: envelope.params,
        }),
        (Some(_), _) => Err(Malformed::Invalid(
            "a request id must be a string or an integer",
            None,
        )),
        (None, Id::Given(id)) => match (envelope.result, envelope.error) {
            (Some(outcome), None) => Ok(Incoming::Response {
                id,
                outcome,
                is_error: false,
            }),
            (None, Some(outcome)) => Ok(Incoming::Response {
                id,
                outcome,
                is_error: true,
            }),
            _ => Err(Malformed::Invalid(
                "a response carries exactly one of result and error",
                None,
            )),
        },
        (None, _) => Err(Malformed::Invalid("a message needs a method", given)),
    }
}

/// An HTTP answer carrying one JSON-RPC message.
pub fn json(status: http::StatusCode, body: Bytes) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    const JSON: http::HeaderValue = http::HeaderValue::from_static("application/json");
    (status, [(http::header::CONTENT_TYPE, JSON)], body).into_response()
}

/// A successful reply: `{"jsonrpc":"2.0","id":…,"result":…}`.
pub fn result(id: &RequestId, result: &impl Serialize) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    write_id(&mut out, id);
    out.extend_from_slice(br#","result":"#);
    if serde_json::to_writer(&mut out, result).is_err() {
        // Model types always serialise; should one not, say so in-band.
        return error(
            Some(id),
            &ErrorData::internal_error("the result could not be serialised", None),
        );
    }
    out.push(b'}');
    out.into()
}

/// A successful reply whose result is already JSON.
pub fn raw_result(id: &RequestId, result: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(result.len() + 48);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    write_id(&mut out, id);
    out.extend_from_slice(br#","result":"#);
    out.extend_from_slice(result);
    out.push(b'}');
    out.into()
}

/// An error reply.
pub fn error(id: Option<&RequestId>, error: &ErrorData) -> Bytes {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    match id {
        Some(id) => write_id(&mut out, id),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(br#","error":"#);
    if serde_json::to_writer(&mut out, error).is_err() {
        out.extend_from_slice(br#"{"code":-32603,"message":"internal error"}"#);
    }
    out.push(b'}');
    out.into()
}

/// Writes `id` as JSON.
pub fn write_id(out: &mut Vec<u8>, id: &RequestId) {
    match id {
        RequestId::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        RequestId::String(s) => {
            // A string id always serialises.
            let _ = serde_json::to_writer(&mut *out, &**s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn a_request_keeps_its_params_raw() {
        let body = br#"{"jsonrpc":"2.0","id":"a\"b","method":"tools/call","params":{"name":"x"}}"#;
        let Ok(Incoming::Request { id, method, params }) = parse(body) else {
            panic!("not a request");
        };
        assert_eq!(id, RequestId::String("a\"b".into()));
        assert_eq!(method, "tools/call");
        assert_eq!(params.map(RawValue::get), Some(r#"{"name":"x"}"#));
    }

    #[test]
    fn shapes_are_told_apart() {
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Incoming::Notification { .. })
        ));
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#),
            Ok(Incoming::Response {
                is_error: false,
                ..
            })
        ));
        assert!(matches!(parse(b"{nope"), Err(Malformed::Parse(_))));
        assert!(matches!(
            parse(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#),
            Err(Malformed::Invalid("batches are not supported", None))
        ));
        assert!(matches!(
            parse(br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#),
            Err(Malformed::Invalid(_, Some(RequestId::Number(1))))
        ));
        for id in ["null", "1.5", "true", "[1]", "{}"] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
            assert!(
                matches!(parse(body.as_bytes()), Err(Malformed::Invalid(_, None))),
                "{id}"
            );
        }
        assert!(matches!(parse(b"42"), Err(Malformed::Invalid(_, None))));
    }

    #[test]
    fn replies_are_json_rpc() {
        let ok: Value =
            serde_json::from_slice(&result(&RequestId::Number(7), &json!({"a": 1}))).expect("json");
        assert_eq!(ok, json!({"jsonrpc": "2.0", "id": 7, "result": {"a": 1}}));
        let raw: Value = serde_json::from_slice(&raw_result(&RequestId::String("x".into()), b"{}"))
            .expect("json");
        assert_eq!(raw, json!({"jsonrpc": "2.0", "id": "x", "result": {}}));
        let err: Value =
            serde_json::from_slice(&error(None, &ErrorData::invalid_request("no", None)))
                .expect("json");
        assert_eq!(err["id"], Value::Null);
        assert_eq!(err["error"]["code"], -32600);
    }
}

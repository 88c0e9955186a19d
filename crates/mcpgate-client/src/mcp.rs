//! A minimal MCP client over Streamable HTTP: JSON-RPC requests posted to
//! the endpoint, answers read as JSON or from an SSE stream, the session
//! id carried along.
//!
//! Hand-written rather than rmcp's client transport because the auth loop
//! must see every HTTP status: a 401 or 403 on any request (not only the
//! first) starts discovery or a scope step-up, then the same request is
//! sent again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};
use url::Url;

use crate::challenge::{self, BearerChallenge};

/// The protocol versions offered, newest first.
pub const OFFERED_VERSION: &str = crate::PROTOCOL_VERSION;

/// What the server answered.
#[derive(Debug)]
pub enum Reply {
    /// A JSON-RPC response (result or error), or `Null` for an accepted
    /// notification.
    Message(Value),
    /// 401: sign in (again).
    Unauthorized(Option<BearerChallenge>),
    /// 403: the token lacks something; `insufficient_scope` names it.
    Forbidden(Option<BearerChallenge>),
}

/// Transport failures.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The request could not be sent or read.
    #[error("cannot reach {url}: {source}")]
    Http {
        /// URL.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an HTTP error and no JSON-RPC error.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The server's answer holds no response to the request.
    #[error("{url} sent no JSON-RPC response")]
    NoResponse {
        /// URL.
        url: String,
    },
}

/// One MCP endpoint.
#[derive(Debug)]
pub struct McpHttp {
    http: reqwest::Client,
    url: Url,
    session_id: Mutex<Option<String>>,
    protocol_version: Mutex<Option<String>>,
    next_id: AtomicU64,
    /// Speak the stateless 2026-07-28 wire: no initialize, the version in
    /// every request's header and `_meta`.
    stateless: Option<String>,
    /// The version `initialize` offers.
    offered: String,
}

/// The first protocol version without `initialize` (SEP-2575).
pub const STATELESS_VERSION: &str = "2026-07-28";

impl McpHttp {
    /// An endpoint at `url`, speaking `version` (default: the newest
    /// stateful one, negotiated by `initialize`).
    pub fn new(http: reqwest::Client, url: Url, version: Option<&str>) -> Self {
        let stateless = version
            .filter(|v| *v >= STATELESS_VERSION)
            .map(str::to_owned);
        Self {
            http,
            url,
            session_id: Mutex::new(None),
            protocol_version: Mutex::new(stateless.clone()),
            next_id: AtomicU64::new(1),
            stateless,
            offered: version.unwrap_or(OFFERED_VERSION).to_owned(),
        }
    }

    /// Whether this is the stateless (2026-07-28) wire.
    pub fn is_stateless(&self) -> bool {
        self.stateless.is_some()
    }

    /// The endpoint URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// A JSON-RPC request body with a fresh id (and, on the stateless
    /// wire, the `_meta` every request carries).
    pub fn request(&self, method: &str, mut params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Some(version) = &self.stateless
            && let Some(obj) = params.as_object_mut()
        {
            let meta = obj.entry("_meta").or_insert_with(|| json!({}));
            meta["io.modelcontextprotocol/protocolVersion"] = json!(version);
            meta["io.modelcontextprotocol/clientInfo"] =
                json!({ "name": "mcpgate", "version": env!("CARGO_PKG_VERSION") });
            meta["io.modelcontextprotocol/clientCapabilities"] = json!({});
        }
        json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
    }

    /// The `initialize` request.
    pub fn initialize(&self) -> Value {
        self.request(
            "initialize",
            json!({
                "protocolVersion": self.offered,
                "capabilities": {},
                "clientInfo": { "name": "mcpgate", "version": env!("CARGO_PKG_VERSION") },
            }),
        )
    }

    /// Records what `initialize` negotiated.
    pub fn initialized(&self, result: &Value) {
        if let Some(v) = result["protocolVersion"].as_str() {
            *self
                .protocol_version
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(v.to_owned());
        }
    }

    /// Forgets the session (after a 404, or to start over).
    pub fn reset(&self) {
        *self.session_id.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self
            .protocol_version
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Whether a session is open.
    pub fn has_session(&self) -> bool {
        self.session_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Posts one JSON-RPC message with `token`.
    pub async fn post(&self, body: &Value, token: Option<&str>) -> Result<Reply, McpError> {
        let mut req = self
            .http
            .post(self.url.clone())
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if self.stateless.is_some() {
            // The routing headers of the stateless wire.
            if let Some(m) = body["method"].as_str() {
                req = req.header("mcp-method", m);
            }
            if let Some(n) = body["params"]["name"].as_str() {
                req = req.header("mcp-name", n);
            }
        }
        if let Some(id) = self
            .session_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            req = req.header("mcp-session-id", id);
        }
        if let Some(v) = self
            .protocol_version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            req = req.header("mcp-protocol-version", v);
        }
        let resp = req.send().await.map_err(|source| McpError::Http {
            url: self.url.to_string(),
            source,
        })?;
        let status = resp.status();
        let challenge = challenge::parse(
            resp.headers()
                .get_all("www-authenticate")
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        match status {
            StatusCode::UNAUTHORIZED => return Ok(Reply::Unauthorized(challenge)),
            StatusCode::FORBIDDEN => return Ok(Reply::Forbidden(challenge)),
            _ => {}
        }
        if let Some(id) = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            *self.session_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.to_owned());
        }
        if status == StatusCode::ACCEPTED || body.get("id").is_none() {
            return Ok(Reply::Message(Value::Null));
        }
        let is_sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let text = resp.text().await.map_err(|source| McpError::Http {
            url: self.url.to_string(),
            source,
        })?;
        if !status.is_success() {
            // A JSON-RPC error body is still an answer.
            if let Ok(v) = serde_json::from_str::<Value>(&text)
                && v.get("error").is_some()
            {
                return Ok(Reply::Message(v));
            }
            return Err(McpError::Status {
                url: self.url.to_string(),
                status: status.as_u16(),
            });
        }
        let message = if is_sse {
            sse_response(&text, &body["id"])
        } else {
            serde_json::from_str(&text).ok()
        };
        message
            .map(Reply::Message)
            .ok_or_else(|| McpError::NoResponse {
                url: self.url.to_string(),
            })
    }
}

/// The JSON-RPC response with `id` among the events of an SSE body.
fn sse_response(text: &str, id: &Value) -> Option<Value> {
    let mut data = String::new();
    let mut found = None;
    for line in text.lines().chain(std::iter::once("")) {
        if line.is_empty() {
            if !data.is_empty()
                && let Ok(v) = serde_json::from_str::<Value>(&data)
                && v.get("id") == Some(id)
                && (v.get("result").is_some() || v.get("error").is_some())
            {
                found = Some(v);
            }
            data.clear();
        } else if let Some(d) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_response_among_sse_events() {
        let text = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\nid: 2\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"ok\":true}}\n\n";
        let v = sse_response(text, &json!(7)).expect("response");
        assert_eq!(v["result"]["ok"], true);
        assert!(sse_response(text, &json!(8)).is_none());
    }
}

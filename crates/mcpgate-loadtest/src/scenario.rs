//! What is sent: the three wire shapes (stateless 2026-07-28, 16 sessions,
//! one session), the three methods, and the 2025-06-18 session handshake.

use std::str::FromStr;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::driver::Conn;
use crate::http1::Request;
use crate::servers::Server;

pub const STATELESS_VERSION: &str = "2026-07-28";
pub const SESSION_VERSION: &str = "2025-06-18";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// The 2026-07-28 wire: no session, everything in each request.
    Stateless,
    /// 16 sessions shared by the connections (connection i, session i % 16).
    Sessions16,
    /// Every connection on one session: an agent's parallel tool calls.
    Session1,
}

impl Scenario {
    pub const ALL: [Scenario; 3] = [Self::Stateless, Self::Sessions16, Self::Session1];

    pub fn name(self) -> &'static str {
        match self {
            Self::Stateless => "stateless",
            Self::Sessions16 => "sessions16",
            Self::Session1 => "session1",
        }
    }

    /// How many sessions the scenario opens.
    pub fn sessions(self) -> usize {
        match self {
            Self::Stateless => 0,
            Self::Sessions16 => 16,
            Self::Session1 => 1,
        }
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| format!("unknown scenario {s:?} (stateless, sessions16, session1)"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Ping,
    ToolsList,
    ToolsCall,
}

impl Method {
    pub const ALL: [Method; 3] = [Self::Ping, Self::ToolsList, Self::ToolsCall];

    pub fn name(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::ToolsList => "tools/list",
            Self::ToolsCall => "tools/call",
        }
    }

    /// The method sent: the 2026-07-28 wire has no `ping`, and
    /// `server/discover`, which also does no work, stands in for it.
    fn on_the_wire(self, stateless: bool) -> &'static str {
        match self {
            Self::Ping if stateless => "server/discover",
            _ => self.name(),
        }
    }
}

impl FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| format!("unknown method {s:?} (ping, tools/list, tools/call)"))
    }
}

/// The JSON-RPC request; `meta` adds the 2026-07-28 `_meta` fields.
fn body(method: Method, id: u64, meta: bool) -> Value {
    let mut params = match method {
        Method::ToolsCall => json!({"name": "whoami", "arguments": {}}),
        Method::Ping | Method::ToolsList => json!({}),
    };
    if meta {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": STATELESS_VERSION,
            "io.modelcontextprotocol/clientInfo": {"name": "load", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {}
        });
    }
    json!({"jsonrpc": "2.0", "id": id, "method": method.on_the_wire(meta), "params": params})
}

/// One stateless request, headers and `_meta` included.
pub fn stateless(method: Method, id: u64, token: &str) -> Request {
    let mut req = Request::json(&body(method, id, true))
        .header("mcp-protocol-version", STATELESS_VERSION)
        .header("mcp-method", method.on_the_wire(true));
    if method == Method::ToolsCall {
        req = req.header("mcp-name", "whoami");
    }
    req.header("authorization", &format!("Bearer {token}"))
}

/// One request on an open session.
pub fn in_session(method: Method, id: u64, session: &str, token: &str) -> Request {
    Request::json(&body(method, id, false))
        .header("mcp-protocol-version", SESSION_VERSION)
        .header("mcp-session-id", session)
        .header("authorization", &format!("Bearer {token}"))
}

/// The per-connection request lists for a measurement. Each connection
/// uses its own JSON-RPC id, so that no two requests in flight on one
/// session share an id.
pub fn plans(
    server: &Server,
    scenario: Scenario,
    method: Method,
    connections: usize,
    sessions: &[String],
    token: &str,
) -> anyhow::Result<Vec<Vec<Arc<[u8]>>>> {
    (0..connections)
        .map(|i| {
            let id = i as u64 + 1;
            let req = match scenario {
                Scenario::Stateless => stateless(method, id, token),
                Scenario::Sessions16 | Scenario::Session1 => {
                    let session = sessions
                        .get(i % sessions.len().max(1))
                        .context("no session open")?;
                    in_session(method, id, session, token)
                }
            };
            Ok(vec![Arc::from(req.to_bytes(&server.host, "/mcp"))])
        })
        .collect()
}

/// The 2025-06-18 handshake: `initialize`, then `notifications/initialized`
/// on the session it opened. `Ok(None)` if the server refused the
/// `initialize` (a cap on sessions, say); other failures are errors.
pub async fn open_session(
    conn: &mut Conn,
    host: &str,
    token: &str,
) -> anyhow::Result<Option<String>> {
    let init = Request::json(&json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": SESSION_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "load", "version": "1"}
        }
    }))
    .header("mcp-protocol-version", SESSION_VERSION)
    .header("authorization", &format!("Bearer {token}"));
    let r = conn.exchange(&init.to_bytes(host, "/mcp")).await?;
    if r.status != 200 {
        return Ok(None);
    }
    if !r.is_good() {
        bail!(
            "initialize answered without a result: {}",
            r.body_prefix(300)
        );
    }
    let session = r
        .session_id
        .context("initialize answered without an mcp-session-id")?;
    let note = Request::json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .header("mcp-protocol-version", SESSION_VERSION)
        .header("mcp-session-id", &session)
        .header("authorization", &format!("Bearer {token}"));
    let r = conn.exchange(&note.to_bytes(host, "/mcp")).await?;
    if r.status != 202 {
        bail!(
            "notifications/initialized: status {} (expected 202), body: {}",
            r.status,
            r.body_prefix(300)
        );
    }
    Ok(Some(session))
}

/// Opens `n` sessions for one token; the echo gets names, not a handshake.
pub async fn open_sessions(
    server: &Server,
    echo: bool,
    n: usize,
    token: &str,
) -> anyhow::Result<Vec<String>> {
    if echo || n == 0 {
        return Ok((0..n).map(|i| format!("echo-{i}")).collect());
    }
    let mut conn = Conn::open(server.addr).await?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let s = open_session(&mut conn, &server.host, token)
            .await?
            .context("the server refused to open a session")?;
        out.push(s);
    }
    Ok(out)
}

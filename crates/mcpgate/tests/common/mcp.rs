//! A small MCP client for the gateway tests: JSON-RPC over Streamable HTTP
//! with reqwest (answers read whether they come as JSON or as an event
//! stream), and user tokens from the embedded development IdP through the
//! device-code flow, approved on its page as any listed user.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde_json::{Value, json};

/// The revision the tests speak.
pub const PROTOCOL: &str = "2025-06-18";

/// An access token. `Debug` hides it, so that a failing assertion never
/// prints one.
#[derive(Clone)]
pub struct Bearer(String);

impl Bearer {
    /// The token itself, for the `Authorization` header and leak checks.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer([redacted])")
    }
}

/// One HTTP answer: status, headers and the JSON-RPC messages it carried
/// (an event stream may carry notifications before the answer).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub messages: Vec<Value>,
}

impl Reply {
    /// The JSON-RPC response: the message with a result or an error.
    pub fn answer(&self) -> &Value {
        self.messages
            .iter()
            .rev()
            .find(|m| m.get("result").is_some() || m.get("error").is_some())
            .unwrap_or_else(|| {
                panic!(
                    "no JSON-RPC answer (HTTP {}): {:?}",
                    self.status, self.messages
                )
            })
    }

    /// The JSON-RPC error code, if the answer is an error.
    pub fn error_code(&self) -> Option<i64> {
        self.answer().get("error").and_then(|e| e["code"].as_i64())
    }

    /// The result of a successful answer; fails the test on an error.
    pub fn result(&self) -> &Value {
        let answer = self.answer();
        assert!(
            answer.get("error").is_none() && self.status.is_success(),
            "expected a result (HTTP {}): {answer}",
            self.status
        );
        &answer["result"]
    }

    /// A tool call's first text block.
    pub fn text(&self) -> &str {
        let result = self.result();
        assert_ne!(result["isError"], true, "the tool failed: {result}");
        result["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no text block: {result}"))
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Reads an answer to a POST, as JSON or as an event stream.
pub async fn read_reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let sse = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream"));
    let body = response.text().await.expect("the answer's body");
    let messages = if sse {
        events(&body)
    } else if body.trim().is_empty() {
        Vec::new()
    } else {
        match serde_json::from_str::<Value>(&body) {
            Ok(Value::Array(batch)) => batch,
            Ok(one) => vec![one],
            Err(e) => panic!("HTTP {status}: a body that is not JSON ({e}): {body}"),
        }
    };
    Reply {
        status,
        headers,
        messages,
    }
}

/// The JSON messages of an event stream's `data` fields (priming events,
/// which carry none, are skipped).
fn events(body: &str) -> Vec<Value> {
    let body = body.replace("\r\n", "\n");
    body.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            let text = data.join("\n");
            (!text.trim().is_empty()).then(|| {
                serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("an event that is not JSON ({e}): {text}"))
            })
        })
        .collect()
}

/// One MCP session at the gateway.
#[derive(Debug)]
pub struct Session {
    http: reqwest::Client,
    url: String,
    token: Option<Bearer>,
    id: String,
    next: u64,
    extra: reqwest::header::HeaderMap,
}

impl Session {
    /// The session's `Mcp-Session-Id`.
    #[allow(dead_code, reason = "not every test ends a session itself")]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Initializes a session at `url` (with `token`, unless authentication
    /// is off) and sends `notifications/initialized`.
    pub async fn open(url: &str, token: Option<&Bearer>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("HTTP client");
        let mut session = Self {
            http,
            url: url.to_owned(),
            token: token.cloned(),
            id: String::new(),
            next: 1,
            extra: reqwest::header::HeaderMap::new(),
        };
        let reply = session
            .post(json!({
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": PROTOCOL,
                    "capabilities": {},
                    "clientInfo": { "name": "gateway-tests", "version": "1" },
                },
            }))
            .await;
        reply.result();
        session.id = reply
            .header("mcp-session-id")
            .expect("initialize answers with Mcp-Session-Id")
            .to_owned();
        let initialized = session
            .post(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .await;
        assert!(
            initialized.status.is_success(),
            "notifications/initialized: HTTP {}",
            initialized.status
        );
        session
    }

    /// Sends header `name: value` with every request from now on.
    #[allow(dead_code, reason = "not every test sends headers of its own")]
    pub fn set_header(&mut self, name: &'static str, value: &str) {
        self.extra
            .insert(name, value.parse().expect("a header value"));
    }

    /// Uses `token` from now on (a client that signed in again).
    pub fn set_token(&mut self, token: &Bearer) {
        self.token = Some(token.clone());
    }

    /// POSTs one JSON-RPC message.
    pub async fn post(&self, message: Value) -> Reply {
        let mut request = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .headers(self.extra.clone())
            .json(&message);
        if !self.id.is_empty() {
            request = request
                .header("mcp-session-id", &self.id)
                .header("mcp-protocol-version", PROTOCOL);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        read_reply(request.send().await.expect("POST to the gateway")).await
    }

    /// Sends request `method` with `params`.
    pub async fn request(&mut self, method: &str, params: Value) -> Reply {
        let id = self.next;
        self.next += 1;
        self.post(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
            .await
    }

    /// Calls `tool` with `arguments`.
    pub async fn call(&mut self, tool: &str, arguments: Value) -> Reply {
        self.request(
            "tools/call",
            json!({ "name": tool, "arguments": arguments }),
        )
        .await
    }

    /// `fixture_echo`'s answer to `text`.
    pub async fn echo(&mut self, text: &str) -> String {
        self.call("fixture_echo", json!({ "text": text }))
            .await
            .text()
            .to_owned()
    }

    /// The tools `tools/list` shows.
    pub async fn tools(&mut self) -> Vec<Value> {
        let reply = self.request("tools/list", json!({})).await;
        reply.result()["tools"]
            .as_array()
            .expect("a tools array")
            .clone()
    }
}

/// The names in a tool list.
pub fn names(tools: &[Value]) -> Vec<&str> {
    tools.iter().filter_map(|t| t["name"].as_str()).collect()
}

/// The embedded development IdP, as `serve`'s ready file describes it.
#[derive(Debug)]
pub struct DevIdp {
    http: reqwest::Client,
    authority: String,
    device_page: String,
    client_id: String,
}

impl DevIdp {
    /// From the ready file of a `serve` that embeds the IdP; its CA is
    /// trusted, and the public client signs users in.
    pub fn from_ready(ready: &Value) -> Self {
        let idp = &ready["idp"];
        let ca = std::fs::read(idp["ca_file"].as_str().expect("the IdP's CA file"))
            .expect("read the IdP's CA");
        let http = reqwest::Client::builder()
            .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&ca).expect("PEM"))
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        let client_id = idp["clients"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["public"] == true))
            .and_then(|c| c["client_id"].as_str())
            .expect("a public client")
            .to_owned();
        Self {
            http,
            authority: idp["authority"].as_str().expect("authority").to_owned(),
            device_page: idp["device_login_url"]
                .as_str()
                .expect("device page")
                .to_owned(),
            client_id,
        }
    }

    /// A delegated token for `user` with `scope` (space-separated), by the
    /// device-code flow: started as a client, approved on the IdP's page as
    /// the user (one click: listed users need no password on loopback),
    /// then redeemed.
    pub async fn token(&self, user: &str, scope: &str) -> Bearer {
        let started: Value = self
            .http
            .post(format!("{}/oauth2/v2.0/devicecode", self.authority))
            .form(&[("client_id", self.client_id.as_str()), ("scope", scope)])
            .send()
            .await
            .expect("devicecode")
            .json()
            .await
            .expect("devicecode JSON");
        let user_code = started["user_code"]
            .as_str()
            .unwrap_or_else(|| panic!("no user code: {started}"));
        let device_code = started["device_code"].as_str().expect("device code");

        let page = self
            .http
            .get(&self.device_page)
            .send()
            .await
            .expect("device page");
        let cookie = crate::common::csrf_cookie(&page);
        let mut form = crate::common::hidden_fields(&page.text().await.expect("page"));
        form.extend([
            ("user_code".to_owned(), user_code.to_owned()),
            ("username".to_owned(), user.to_owned()),
            ("action".to_owned(), "approve".to_owned()),
        ]);
        let approved = self
            .http
            .post(&self.device_page)
            .header("cookie", cookie)
            .form(&form)
            .send()
            .await
            .expect("approve");
        assert_eq!(approved.status(), StatusCode::OK, "approving as {user}");

        let answer: Value = self
            .http
            .post(format!("{}/oauth2/v2.0/token", self.authority))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("client_id", self.client_id.as_str()),
                ("device_code", device_code),
            ])
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("token JSON");
        let token = answer["access_token"].as_str().unwrap_or_else(|| {
            panic!(
                "no token for {user} ({}: {})",
                answer["error"], answer["error_description"]
            )
        });
        Bearer(token.to_owned())
    }
}

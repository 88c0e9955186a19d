//! A protected MCP server on loopback in front of the test issuer.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::Ordering;

use mcpgate_resource::downstream::UserDetailsSource;
use mcpgate_resource::endpoint::Endpoint;
use mcpgate_resource::session::{ManualClock, SessionLimits};
use mcpgate_resource::{Access, ResourceSettings, Stats, router_with_endpoint};
use mcpgate_testkit::{API_APP_ID, TestIssuer};
use mcpgate_token::{ValidationPolicy, Validator};
use serde_json::{Value, json};

pub const SCOPE: &str = "api://99999999-8888-4777-8666-555555555555/mcp:tools";

pub struct Gate {
    pub issuer: TestIssuer,
    pub base: String,
    pub settings: ResourceSettings,
    pub http: reqwest::Client,
    pub stats: Arc<Stats>,
    pub endpoint: Arc<Endpoint>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub fn policy(issuer: &TestIssuer) -> ValidationPolicy {
    ValidationPolicy {
        issuers: vec![issuer.issuer()],
        audiences: vec![format!("api://{API_APP_ID}"), API_APP_ID.to_owned()],
        required_scopes: vec![SCOPE.to_owned()],
        ..Default::default()
    }
}

impl Gate {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with the default policy, edited by `edit`.
    pub async fn start_with(edit: impl FnOnce(&mut ValidationPolicy)) -> Self {
        let issuer = TestIssuer::start().await;
        let mut p = policy(&issuer);
        edit(&mut p);
        let validator = Validator::builder(p).build().expect("policy compiles");
        Self::serve(issuer, Access::Validate(Arc::new(validator))).await
    }

    pub async fn open() -> Self {
        let issuer = TestIssuer::start().await;
        Self::serve(issuer, Access::Open).await
    }

    /// Starts with the default policy and a `get_user_details` source.
    pub async fn with_user_details(source: Arc<dyn UserDetailsSource>) -> Self {
        let issuer = TestIssuer::start().await;
        let validator = Validator::builder(policy(&issuer))
            .build()
            .expect("policy compiles");
        Self::serve_with(issuer, Access::Validate(Arc::new(validator)), |s| {
            s.user_details = Some(source)
        })
        .await
    }

    /// Starts with the default policy and these session limits, on a clock
    /// the test moves.
    pub async fn with_sessions(limits: SessionLimits, clock: Arc<ManualClock>) -> Self {
        let issuer = TestIssuer::start().await;
        let validator = Validator::builder(policy(&issuer))
            .build()
            .expect("policy compiles");
        Self::serve_with(issuer, Access::Validate(Arc::new(validator)), |s| {
            s.sessions = limits;
            s.clock = clock;
        })
        .await
    }

    /// Starts with the default policy and settings edited by `edit`.
    pub async fn with_settings(edit: impl FnOnce(&mut ResourceSettings)) -> Self {
        let issuer = TestIssuer::start().await;
        let validator = Validator::builder(policy(&issuer))
            .build()
            .expect("policy compiles");
        Self::serve_with(issuer, Access::Validate(Arc::new(validator)), edit).await
    }

    async fn serve(issuer: TestIssuer, access: Access) -> Self {
        Self::serve_with(issuer, access, |_| {}).await
    }

    async fn serve_with(
        issuer: TestIssuer,
        access: Access,
        edit: impl FnOnce(&mut ResourceSettings),
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let base = format!("http://{addr}");
        let mut settings = ResourceSettings::new(base.parse().expect("url"), vec![issuer.issuer()]);
        settings.scopes = vec![SCOPE.to_owned()];
        settings.max_body_bytes = 64 * 1024;
        edit(&mut settings);
        let stats = Arc::new(Stats::default());
        let (app, endpoint) = router_with_endpoint(&settings, access, stats.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            issuer,
            base,
            settings,
            http: reqwest::Client::new(),
            stats,
            endpoint,
            server,
        }
    }

    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base)
    }

    pub fn tool_calls(&self) -> u64 {
        self.stats.tool_calls.load(Ordering::SeqCst)
    }

    /// A valid token for the default policy.
    pub fn token(&self) -> String {
        self.issuer
            .sign("key-a", &self.issuer.claims(mcpgate_testkit::unix_now()))
    }

    /// A valid token for another user, `oid`.
    pub fn token_for(&self, oid: &str) -> String {
        let claims = mcpgate_testkit::with(
            self.issuer.claims(mcpgate_testkit::unix_now()),
            &[
                ("oid", json!(oid)),
                ("sub", json!(format!("pairwise-{oid}"))),
            ],
        );
        self.issuer.sign("key-a", &claims)
    }

    /// A valid token with `claims` changed as given.
    pub fn token_with(&self, changes: &[(&str, Value)]) -> String {
        let claims =
            mcpgate_testkit::with(self.issuer.claims(mcpgate_testkit::unix_now()), changes);
        self.issuer.sign("key-a", &claims)
    }

    /// `tools/call whoami` in the stateless 2026-07-28 form, which needs no
    /// session.
    pub fn whoami_request(&self) -> reqwest::RequestBuilder {
        self.stateless("tools/call", Some("whoami"), whoami_body())
    }

    /// A stateless 2026-07-28 request with its routing headers.
    pub fn stateless(
        &self,
        method: &str,
        name: Option<&str>,
        body: Value,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(self.mcp_url())
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method);
        if let Some(name) = name {
            request = request.header("mcp-name", name);
        }
        request.json(&body)
    }
}

pub fn whoami_body() -> Value {
    call_body("whoami")
}

/// `tools/call NAME` with no arguments, in the stateless form.
pub fn call_body(name: &str) -> Value {
    stateless_body("tools/call", json!({ "name": name, "arguments": {} }))
}

/// A stateless 2026-07-28 JSON-RPC request: `params` plus the `_meta` the
/// wire requires.
pub fn stateless_body(method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    json!({ "jsonrpc": "2.0", "id": 7, "method": method, "params": params })
}

/// The JSON-RPC message in a response body, plain JSON or one SSE event.
pub fn jsonrpc(body: &str) -> Value {
    if let Ok(v) = serde_json::from_str(body) {
        return v;
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("id").is_some())
        .unwrap_or(Value::Null)
}

pub fn www_authenticate(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

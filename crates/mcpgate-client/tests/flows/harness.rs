//! A small authorization server and a protected MCP server, each a real
//! axum server on a loopback port, recording what the client sends. They
//! approve without a page and issue tokens that name their scopes, so that
//! the MCP server can ask for a step-up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use mcpgate_client::redirect::{Browser, NoBrowser};
use mcpgate_client::store::Store;
use mcpgate_client::{Client, ClientOptions, Credentials, SignIn};
use serde_json::{Value, json};
use url::Url;

/// What an authorization server offers.
#[derive(Debug, Clone)]
pub struct AsOptions {
    /// `grant_types_supported` (none: the field is left out).
    pub grant_types: Option<Vec<&'static str>>,
    /// Offer dynamic registration.
    pub dcr: bool,
    /// Offer Client ID Metadata Documents.
    pub cimd: bool,
    /// Offer the device code grant.
    pub device: bool,
    /// Endpoint URLs to publish instead of its own (for insecure ones).
    pub token_endpoint_override: Option<String>,
    /// Refuse every token request with this body (status 400).
    pub refuse_with: Option<Value>,
    /// Publish the RFC 8414 metadata document.
    pub publish_metadata: bool,
    /// Refuse refreshes with this body (status 400), unless the refresh
    /// token comes from a sign-in that sent claims.
    pub refuse_refresh_with: Option<Value>,
    /// The tokens' `expires_in`.
    pub expires_in: u64,
}

impl Default for AsOptions {
    fn default() -> Self {
        Self {
            grant_types: None,
            dcr: true,
            cimd: false,
            device: false,
            token_endpoint_override: None,
            refuse_with: None,
            publish_metadata: true,
            refuse_refresh_with: None,
            expires_in: 3600,
        }
    }
}

/// One request the authorization server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `authorize`, `token`, `register`, `device`, `metadata`.
    pub endpoint: &'static str,
    /// Query or form parameters (or the registration's JSON).
    pub params: HashMap<String, String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

/// A running authorization server.
#[derive(Clone)]
pub struct AuthServer {
    /// Its issuer (its base URL, no trailing slash).
    pub issuer: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl AuthServer {
    /// Everything it saw.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// What it saw at one endpoint.
    pub fn seen_at(&self, endpoint: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.endpoint == endpoint)
            .collect()
    }
}

#[derive(Clone)]
struct AsState {
    issuer: String,
    options: AsOptions,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl AsState {
    fn record(&self, endpoint: &'static str, params: HashMap<String, String>, headers: &HeaderMap) {
        self.seen.lock().expect("lock").push(Seen {
            endpoint,
            params,
            authorization: headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
    }
}

/// The metadata document of an authorization server at `base`.
fn metadata(state: &AsState) -> Value {
    let i = &state.issuer;
    let mut doc = json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": state.options.token_endpoint_override.clone().unwrap_or(format!("{i}/token")),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt", "none"],
        "client_id_metadata_document_supported": state.options.cimd,
    });
    if state.options.dcr {
        doc["registration_endpoint"] = format!("{i}/register").into();
    }
    if state.options.device {
        doc["device_authorization_endpoint"] = format!("{i}/device").into();
    }
    if let Some(g) = &state.options.grant_types {
        doc["grant_types_supported"] = json!(g);
    }
    doc
}

fn as_routes(state: AsState) -> Router {
    let mut router = Router::new();
    if state.options.publish_metadata {
        router = router.route(
            "/.well-known/oauth-authorization-server",
            get(|State(s): State<AsState>, headers: HeaderMap| async move {
                s.record("metadata", HashMap::new(), &headers);
                axum::Json(metadata(&s))
            }),
        );
    }
    router
        .route(
            "/authorize",
            get(
                |State(s): State<AsState>,
                 headers: HeaderMap,
                 Query(q): Query<HashMap<String, String>>| async move {
                    s.record("authorize", q.clone(), &headers);
                    let Some(mut to) = q.get("redirect_uri").and_then(|u| Url::parse(u).ok())
                    else {
                        return StatusCode::BAD_REQUEST.into_response();
                    };
                    // The code carries the scopes asked, for the token, and
                    // a sign-in that was asked for claims ends with a
                    // second factor: its token says so.
                    let mut code = format!("code:{}", q.get("scope").cloned().unwrap_or_default());
                    if q.contains_key("claims") {
                        code.push(' ');
                        code.push_str(MFA_MARK);
                    }
                    to.query_pairs_mut()
                        .append_pair("code", &code)
                        .append_pair("state", q.get("state").map_or("", String::as_str));
                    Redirect::to(to.as_str()).into_response()
                },
            ),
        )
        .route(
            "/token",
            post(
                |State(s): State<AsState>,
                 headers: HeaderMap,
                 Form(f): Form<HashMap<String, String>>| async move {
                    s.record("token", f.clone(), &headers);
                    if let Some(body) = &s.options.refuse_with {
                        return (StatusCode::BAD_REQUEST, axum::Json(body.clone())).into_response();
                    }
                    let refresh = f.get("grant_type").map(String::as_str) == Some("refresh_token");
                    if refresh
                        && let Some(body) = &s.options.refuse_refresh_with
                        && !f
                            .get("refresh_token")
                            .is_some_and(|r| r.ends_with(MFA_MARK))
                    {
                        return (StatusCode::BAD_REQUEST, axum::Json(body.clone())).into_response();
                    }
                    let scope = match f.get("grant_type").map(String::as_str) {
                        Some("authorization_code") => f
                            .get("code")
                            .and_then(|c| c.strip_prefix("code:"))
                            .unwrap_or_default()
                            .to_owned(),
                        _ => f.get("scope").cloned().unwrap_or_default(),
                    };
                    // A refresh token from a sign-in that sent claims
                    // remembers it.
                    let mfa = scope.split(' ').any(|s| s == MFA_MARK)
                        || f.get("refresh_token")
                            .is_some_and(|r| r.ends_with(MFA_MARK));
                    let refresh_token = if mfa {
                        format!("refresh-secret-value-{MFA_MARK}")
                    } else {
                        "refresh-secret-value".to_owned()
                    };
                    axum::Json(json!({
                        "access_token": format!("tok:{}", scope.replace(' ', ",")),
                        "token_type": "Bearer",
                        "expires_in": s.options.expires_in,
                        "refresh_token": refresh_token,
                        "scope": scope,
                    }))
                    .into_response()
                },
            ),
        )
        .route(
            "/register",
            post(
                |State(s): State<AsState>,
                 headers: HeaderMap,
                 axum::Json(body): axum::Json<Value>| async move {
                    let params = body
                        .as_object()
                        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
                        .unwrap_or_default();
                    s.record("register", params, &headers);
                    (
                        StatusCode::CREATED,
                        axum::Json(json!({
                            "client_id": "dcr-client",
                            "redirect_uris": body["redirect_uris"],
                            "token_endpoint_auth_method": "none",
                        })),
                    )
                },
            ),
        )
        .route(
            "/device",
            post(
                |State(s): State<AsState>,
                 headers: HeaderMap,
                 Form(f): Form<HashMap<String, String>>| async move {
                    s.record("device", f, &headers);
                    axum::Json(json!({
                        "device_code": "device-secret-value",
                        "user_code": "ABCD-EFGH",
                        "verification_uri": format!("{}/devicelogin", s.issuer),
                        "expires_in": 600,
                        "interval": 1,
                    }))
                },
            ),
        )
        .with_state(state)
}

/// An authorization server on its own loopback port.
pub async fn auth_server(options: AsOptions) -> AuthServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let router = as_routes(AsState {
        issuer: issuer.clone(),
        options,
        seen: seen.clone(),
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    AuthServer { issuer, seen }
}

/// How the MCP server publishes its authorization.
#[derive(Debug, Clone)]
pub enum Discovery {
    /// RFC 9728 resource metadata naming this issuer (any string).
    Prm {
        /// The issuer named.
        issuer: String,
    },
    /// 2025-03-26: no resource metadata; the server's own origin is the
    /// authorization server (with its metadata document, or none).
    Legacy {
        /// Whether the origin publishes RFC 8414 metadata.
        metadata: bool,
    },
}

/// What a token from a sign-in that sent claims carries among its scopes.
pub const MFA_MARK: &str = "amr:mfa";

/// The claims the MCP server's challenge asks for.
pub const CLAIMS: &str = r#"{"access_token":{"capolids":{"essential":true,"values":["p1"]}}}"#;

/// When the MCP server answers `tools/call` with a claims challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimsRule {
    /// Until the token comes from a sign-in that sent claims.
    UntilSatisfied,
    /// Always (a policy no sign-in satisfies).
    Always,
    /// Always, with a claims value that is not base64 of JSON.
    Malformed,
}

/// What the MCP server wants.
#[derive(Debug, Clone)]
pub struct McpOptions {
    /// How it points to its authorization server.
    pub discovery: Discovery,
    /// The scope named in the 401 challenge (none: left out).
    pub challenge_scope: Option<&'static str>,
    /// `scopes_supported` in the resource metadata.
    pub scopes_supported: Vec<&'static str>,
    /// A scope `tools/call` needs beyond the others (step-up).
    pub call_needs: Option<&'static str>,
    /// A claims challenge `tools/call` answers with.
    pub call_needs_claims: Option<ClaimsRule>,
}

/// A running MCP server.
pub struct McpServer {
    /// Its endpoint.
    pub url: Url,
    /// The authorization server on its origin (legacy mode).
    pub origin_as: Option<AuthServer>,
}

#[derive(Clone)]
struct McpState {
    base: String,
    options: McpOptions,
}

fn scopes_of(headers: &HeaderMap) -> Option<Vec<String>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?;
    let scopes = token.strip_prefix("tok:")?;
    Some(
        scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

async fn mcp(State(s): State<McpState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let prm = format!("{}/.well-known/oauth-protected-resource/mcp", s.base);
    let legacy = matches!(s.options.discovery, Discovery::Legacy { .. });
    let challenge = |extra: &str| {
        // A 2025-03-26 server points to no resource metadata.
        let mut v = if legacy {
            "Bearer realm=\"mcp\"".to_owned()
        } else {
            format!("Bearer resource_metadata=\"{prm}\"")
        };
        if let Some(scope) = s.options.challenge_scope {
            v.push_str(&format!(", scope=\"{scope}\""));
        }
        v.push_str(extra);
        v
    };
    let Some(held) = scopes_of(&headers) else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, challenge(""))],
        )
            .into_response();
    };
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let method = msg["method"].as_str().unwrap_or_default();
    if method == "tools/call"
        && let Some(need) = s.options.call_needs
        && !held.iter().any(|h| h == need)
    {
        let mut all: Vec<String> = s
            .options
            .challenge_scope
            .map(|c| vec![c.to_owned()])
            .unwrap_or_default();
        all.push(need.to_owned());
        return (
            StatusCode::FORBIDDEN,
            [(
                header::WWW_AUTHENTICATE,
                format!(
                    "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{prm}\"",
                    all.join(" ")
                ),
            )],
        )
            .into_response();
    }
    if method == "tools/call"
        && let Some(rule) = s.options.call_needs_claims
    {
        use base64::Engine as _;
        let satisfied = held.iter().any(|h| h == MFA_MARK);
        let claims = match rule {
            ClaimsRule::UntilSatisfied if satisfied => None,
            ClaimsRule::UntilSatisfied | ClaimsRule::Always => {
                Some(base64::engine::general_purpose::STANDARD.encode(CLAIMS))
            }
            ClaimsRule::Malformed => Some("bm90IGpzb24=".to_owned()),
        };
        if let Some(claims) = claims {
            return (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    challenge(&format!(
                        ", error=\"insufficient_claims\", claims=\"{claims}\", error_description=\"MFA required\""
                    )),
                )],
            )
                .into_response();
        }
    }
    if msg.get("id").is_none() {
        return StatusCode::ACCEPTED.into_response();
    }
    let result = match method {
        "initialize" => json!({
            "protocolVersion": "2025-11-25",
            "capabilities": { "tools": {} },
            "serverInfo": { "name": "harness", "version": "0" },
        }),
        "tools/list" => {
            json!({ "tools": [{ "name": "whoami", "inputSchema": { "type": "object" } }] })
        }
        "tools/call" => json!({ "content": [{ "type": "text", "text": held.join(" ") }] }),
        _ => json!({}),
    };
    axum::Json(json!({ "jsonrpc": "2.0", "id": msg["id"], "result": result })).into_response()
}

/// A protected MCP server on its own loopback port.
pub async fn mcp_server(options: McpOptions, legacy_as: AsOptions) -> McpServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let state = McpState {
        base: base.clone(),
        options: options.clone(),
    };
    let mut router = Router::new()
        .route("/mcp", post(mcp))
        .with_state(state.clone());
    let mut origin_as = None;
    match &options.discovery {
        Discovery::Prm { issuer } => {
            let doc = json!({
                "resource": format!("{base}/mcp"),
                "authorization_servers": [issuer],
                "scopes_supported": options.scopes_supported,
            });
            router = router.route(
                "/.well-known/oauth-protected-resource/mcp",
                get(move || async move { axum::Json(doc) }),
            );
        }
        Discovery::Legacy { metadata } => {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let routes = as_routes(AsState {
                issuer: base.clone(),
                options: AsOptions {
                    publish_metadata: *metadata,
                    ..legacy_as
                },
                seen: seen.clone(),
            });
            router = router.merge(routes);
            origin_as = Some(AuthServer {
                issuer: base.clone(),
                seen,
            });
        }
    }
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    McpServer {
        url: Url::parse(&format!("{base}/mcp")).expect("url"),
        origin_as,
    }
}

/// A browser that cannot be opened (a machine with no display).
pub struct NoDisplay;

impl Browser for NoDisplay {
    fn available(&self) -> Result<(), NoBrowser> {
        Err(NoBrowser::NoDisplay)
    }

    fn open(&self, _: &Url) -> Result<(), NoBrowser> {
        Err(NoBrowser::NoDisplay)
    }
}

/// A fresh store in a temporary directory (kept alive by the guard).
pub fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    (Store::new(dir.path()), dir)
}

/// The client under test, with what it printed.
pub struct TestClient {
    /// The client.
    pub client: Client,
    /// Its prompts.
    pub said: Arc<Mutex<Vec<String>>>,
}

/// Options for a client of `url` signing in as `sign_in`.
pub fn options(store: &Store, sign_in: SignIn, credentials: Credentials) -> ClientOptions {
    ClientOptions {
        credentials,
        sign_in,
        scopes: vec![],
        store: store.clone(),
        notify: Arc::new(|_: &str| {}),
        protocol_version: None,
        browser: Arc::new(NoDisplay),
    }
}

/// A client with `options`, its prompts recorded.
pub fn client(url: &Url, mut options: ClientOptions) -> TestClient {
    let said = Arc::new(Mutex::new(Vec::new()));
    let sink = said.clone();
    options.notify = Arc::new(move |m: &str| sink.lock().expect("lock").push(m.to_owned()));
    let http = reqwest::Client::builder().build().expect("http");
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http");
    TestClient {
        client: Client::new(http, no_redirect, url.clone(), options),
        said,
    }
}

//! The client users get: MCP requests with a token, and, when the server
//! says 401 or 403, the authorization the specification prescribes —
//! discovery, client identity, sign-in, the token cached and refreshed.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Mutex;
use url::Url;

use crate::challenge::BearerChallenge;
use crate::discovery::{self, AuthServer, DiscoveryError};
use crate::mcp::{McpError, McpHttp, Reply};
use crate::oauth::{
    self, AuthorizeRequest, ClientAuth, FlowError, Pkce, TokenSet, random_string, token_request,
    unix_now,
};
use crate::redirect::{self, Loopback};
use crate::store::{CachedTokens, Registration, Store};

/// At most this many sign-ins (first one plus step-ups) per operation.
const MAX_AUTH_ROUNDS: usize = 3;
/// Refresh this long before expiry.
const REFRESH_MARGIN: u64 = 60;

/// How a person (or a script) signs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignIn {
    /// Authorization code in the system browser, with a loopback redirect.
    Browser,
    /// Authorization code, following the redirect with an HTTP client
    /// (servers that approve without a page; scripts, conformance runs).
    NonInteractive,
    /// Device code: a code to enter on another device.
    DeviceCode,
    /// Client credentials (no user).
    ClientCredentials,
}

/// What the client is configured with.
#[derive(Clone)]
pub struct ClientOptions {
    /// A pre-registered client id.
    pub client_id: Option<String>,
    /// Its secret (from a file or the environment, never a flag).
    pub client_secret: Option<String>,
    /// A Client ID Metadata Document URL to use as client id where the
    /// authorization server supports it.
    pub client_metadata_url: Option<String>,
    /// How to sign in.
    pub sign_in: SignIn,
    /// Scopes to ask for besides what the server names.
    pub scopes: Vec<String>,
    /// Registrations and tokens.
    pub store: Store,
    /// Where prompts go (stderr in the CLI).
    pub notify: Arc<dyn Fn(&str) + Send + Sync>,
    /// The MCP protocol version to speak; `2026-07-28` and later use the
    /// stateless wire. Default: negotiated by `initialize`.
    pub protocol_version: Option<String>,
    /// A private key for `private_key_jwt`, used when there is no secret.
    pub client_key: Option<crate::assertion::ClientKey>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("client_id", &self.client_id)
            .field("sign_in", &self.sign_in)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// Why an operation failed, with what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Discovery.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// Sign-in.
    #[error(transparent)]
    Flow(#[from] FlowError),
    /// Transport.
    #[error(transparent)]
    Mcp(#[from] McpError),
    /// The server keeps refusing.
    #[error("{0}")]
    Refused(String),
    /// The server answered with a JSON-RPC error.
    #[error("the server answered error {code}: {message}")]
    Rpc {
        /// Code.
        code: i64,
        /// Message.
        message: String,
    },
    /// The store could not be written.
    #[error("token cache: {0}")]
    Store(#[from] std::io::Error),
}

/// The current authorization.
#[derive(Debug, Clone)]
struct Auth {
    meta: Option<AuthServer>,
    registration: Registration,
    issuer: String,
    token_endpoint: String,
    resource_indicator: Option<String>,
    scopes: Vec<String>,
    tokens: TokenSet,
}

/// A client for one MCP server.
pub struct Client {
    http: reqwest::Client,
    http_no_redirect: reqwest::Client,
    mcp: McpHttp,
    options: ClientOptions,
    auth: Mutex<Option<Auth>>,
    initialized: Mutex<bool>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", self.mcp.url())
            .finish_non_exhaustive()
    }
}

fn union(a: &[String], b: &[String]) -> Vec<String> {
    let mut out = a.to_vec();
    for s in b {
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

impl Client {
    /// A client for `url`. `http` must not follow redirects across
    /// origins blindly; a second client without redirects is derived for
    /// the non-interactive mode.
    pub fn new(
        http: reqwest::Client,
        http_no_redirect: reqwest::Client,
        url: Url,
        options: ClientOptions,
    ) -> Self {
        Self {
            mcp: McpHttp::new(http.clone(), url, options.protocol_version.as_deref()),
            http,
            http_no_redirect,
            options,
            auth: Mutex::new(None),
            initialized: Mutex::new(false),
        }
    }

    fn notify(&self, msg: &str) {
        (self.options.notify)(msg);
    }

    /// The server URL.
    pub fn url(&self) -> &Url {
        self.mcp.url()
    }

    /// The cached authorization for this server, if any.
    fn cached_auth(&self) -> Option<Auth> {
        let t = self
            .options
            .store
            .latest_tokens(self.url().as_str(), self.options.client_id.as_deref())?;
        let registration = self
            .options
            .store
            .registration(&t.issuer)
            .unwrap_or(Registration {
                issuer: t.issuer.clone(),
                client_id: t.client_id.clone(),
                client_secret: self.options.client_secret.clone(),
                redirect_uris: vec![],
                token_endpoint_auth_method: None,
            });
        Some(Auth {
            meta: None,
            token_endpoint: t.token_endpoint.clone().unwrap_or_default(),
            resource_indicator: t.resource_indicator.clone(),
            registration,
            issuer: t.issuer,
            scopes: t.scopes,
            tokens: t.tokens,
        })
    }

    /// How to authenticate at the token endpoint: a key's assertion when
    /// there is no secret; else as the registration said, else Basic when
    /// the server takes it (RFC 6749's default), else post.
    fn client_auth(
        &self,
        reg: &Registration,
        meta: Option<&AuthServer>,
        issuer: &str,
        token_endpoint: &str,
    ) -> Result<ClientAuth, ClientError> {
        let Some(secret) = reg.client_secret.clone() else {
            if let Some(key) = &self.options.client_key {
                // RFC 7523's audience is the issuer; Entra wants its token
                // endpoint.
                let audience = if meta.is_some_and(AuthServer::is_entra_v2) {
                    token_endpoint
                } else {
                    issuer
                };
                let jwt = key
                    .assertion(&reg.client_id, audience)
                    .map_err(|e| ClientError::Refused(e.to_string()))?;
                return Ok(ClientAuth::Assertion(jwt));
            }
            return Ok(ClientAuth::None);
        };
        let basic = match reg.token_endpoint_auth_method.as_deref() {
            Some("none") => return Ok(ClientAuth::None),
            Some("client_secret_post") => false,
            Some("client_secret_basic") => true,
            _ => meta.is_none_or(|m| {
                m.token_endpoint_auth_methods_supported.is_empty()
                    || m.token_endpoint_auth_methods_supported
                        .iter()
                        .any(|a| a == "client_secret_basic")
            }),
        };
        Ok(ClientAuth::Secret { secret, basic })
    }

    fn save(&self, auth: &Auth) -> Result<(), ClientError> {
        self.options.store.save_tokens(&CachedTokens {
            resource: self.url().to_string(),
            issuer: auth.issuer.clone(),
            client_id: auth.registration.client_id.clone(),
            scopes: auth.scopes.clone(),
            token_endpoint: Some(auth.token_endpoint.clone()),
            resource_indicator: auth.resource_indicator.clone(),
            tokens: auth.tokens.clone(),
        })?;
        Ok(())
    }

    /// Refreshes when the access token is about to expire. Holds the
    /// store's lock so that another process refreshing at the same moment
    /// waits and then uses the token this one got.
    async fn refresh_if_due(&self, auth: &mut Auth) -> Result<bool, ClientError> {
        let due = auth
            .tokens
            .expires_at
            .is_some_and(|e| e <= unix_now() + REFRESH_MARGIN);
        if !due {
            return Ok(true);
        }
        let Some(_) = auth.tokens.refresh_token.clone() else {
            return Ok(false);
        };
        let store = self.options.store.clone();
        let (resource, issuer, client_id) = (
            self.url().to_string(),
            auth.issuer.clone(),
            auth.registration.client_id.clone(),
        );
        let lock = tokio::task::spawn_blocking(move || store.lock(&resource, &issuer, &client_id))
            .await
            .map_err(|e| ClientError::Refused(e.to_string()))??;
        // Another process may have refreshed while this one waited: what
        // the store holds now is either its fresh token or the one to spend.
        let current = self
            .options
            .store
            .tokens(
                self.url().as_str(),
                &auth.issuer,
                &auth.registration.client_id,
            )
            .map_or_else(|| auth.tokens.clone(), |c| c.tokens);
        if current
            .expires_at
            .is_some_and(|e| e > unix_now() + REFRESH_MARGIN)
        {
            auth.tokens = current;
            drop(lock);
            return Ok(true);
        }
        let Some(refresh_token) = current.refresh_token.clone() else {
            return Ok(false);
        };
        let mut form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token),
        ];
        if !auth.scopes.is_empty() {
            form.push(("scope", auth.scopes.join(" ")));
        }
        if let Some(r) = &auth.resource_indicator {
            form.push(("resource", r.clone()));
        }
        let result = token_request(
            &self.http,
            &auth.token_endpoint,
            &auth.registration.client_id,
            &self.client_auth(
                &auth.registration,
                auth.meta.as_ref(),
                &auth.issuer,
                &auth.token_endpoint,
            )?,
            form,
        )
        .await;
        match result {
            Ok(mut t) => {
                if t.refresh_token.is_none() {
                    t.refresh_token = current.refresh_token;
                }
                auth.tokens = t;
                self.save(auth)?;
                drop(lock);
                Ok(true)
            }
            Err(FlowError::Refused(e)) => {
                self.notify(&format!(
                    "the refresh token was refused ({}); signing in again",
                    e.error
                ));
                drop(lock);
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The access token to send now, if one is held (refreshed if due).
    async fn current_token(&self) -> Result<Option<String>, ClientError> {
        let mut guard = self.auth.lock().await;
        if guard.is_none() {
            *guard = self.cached_auth();
        }
        let Some(auth) = guard.as_mut() else {
            return Ok(None);
        };
        if self.refresh_if_due(auth).await? {
            Ok(Some(auth.tokens.access_token.clone()))
        } else {
            *guard = None;
            Ok(None)
        }
    }

    /// Runs the authorization the specification prescribes for a 401 (or a
    /// 403 `insufficient_scope` step-up).
    async fn authorize(
        &self,
        challenge: Option<&BearerChallenge>,
        step_up: bool,
    ) -> Result<(), ClientError> {
        let server = self.url().clone();
        let (prm, issuer, meta) =
            match discovery::protected_resource(&self.http, &server, challenge).await {
                Ok(prm) => {
                    let Some(issuer) = prm.authorization_servers.first().cloned() else {
                        return Err(ClientError::Refused(format!(
                            "{server} names no authorization server in its metadata"
                        )));
                    };
                    let meta = discovery::auth_server(&self.http, &issuer).await?;
                    (Some(prm), issuer, meta)
                }
                // A server of the 2025-03-26 revision: no resource metadata.
                Err(DiscoveryError::NotFound { .. }) => {
                    let meta = discovery::legacy_auth_server(&self.http, &server).await?;
                    (None, meta.issuer.clone(), meta)
                }
                Err(e) => return Err(e.into()),
            };
        let needs_pkce = matches!(
            self.options.sign_in,
            SignIn::Browser | SignIn::NonInteractive
        );
        if needs_pkce && !meta.supports_s256() {
            return Err(ClientError::Refused(format!(
                "{issuer} does not advertise PKCE with S256 (code_challenge_methods_supported): refusing to sign in there"
            )));
        }

        // Scopes: the challenge's, else the metadata's; a step-up adds
        // to what was held.
        let named = challenge.map(BearerChallenge::scopes).unwrap_or_default();
        let mut scopes = if named.is_empty() {
            prm.as_ref()
                .map(|p| p.scopes_supported.clone())
                .unwrap_or_default()
        } else {
            named
        };
        scopes = union(&scopes, &self.options.scopes);
        let previous = self.auth.lock().await.clone();
        if step_up && let Some(prev) = &previous {
            scopes = union(&prev.scopes, &scopes);
        }
        // Entra issues refresh tokens only for `offline_access`; elsewhere
        // the client asks for exactly what the server named.
        if meta.is_entra_v2()
            && !scopes.is_empty()
            && self.options.sign_in != SignIn::ClientCredentials
            && !scopes.iter().any(|s| s == "offline_access")
        {
            scopes.push("offline_access".into());
        }
        // RFC 8707 names the MCP server; Entra v2 refuses the parameter
        // next to v2 scopes (AADSTS9010010), so it is left out there.
        let resource = prm
            .as_ref()
            .filter(|_| !meta.is_entra_v2())
            .map(|p| p.resource.clone());

        let registration = self.identify(&meta, &issuer).await?;
        let token_endpoint = meta
            .token_endpoint
            .clone()
            .ok_or_else(|| ClientError::Refused(format!("{issuer} publishes no token endpoint")))?;
        let auth = self.client_auth(&registration, Some(&meta), &issuer, &token_endpoint)?;

        let tokens = match self.options.sign_in {
            SignIn::ClientCredentials => {
                let mut form = vec![("grant_type", "client_credentials".to_owned())];
                if !scopes.is_empty() {
                    form.push(("scope", scopes.join(" ")));
                }
                if let Some(r) = &resource {
                    form.push(("resource", r.clone()));
                }
                token_request(
                    &self.http,
                    &token_endpoint,
                    &registration.client_id,
                    &auth,
                    form,
                )
                .await?
            }
            SignIn::DeviceCode => {
                let endpoint = meta.device_authorization_endpoint.clone().ok_or_else(|| {
                    ClientError::Refused(format!(
                        "{issuer} has no device authorization endpoint: sign in with a browser instead"
                    ))
                })?;
                let device = oauth::device_authorization(
                    &self.http,
                    &endpoint,
                    &registration.client_id,
                    &scopes,
                    resource.as_deref(),
                )
                .await?;
                self.notify(&device.message.clone().unwrap_or_else(|| {
                    format!(
                        "To sign in, open {} and enter the code {}",
                        device.verification_uri, device.user_code
                    )
                }));
                oauth::poll_device(
                    &self.http,
                    &token_endpoint,
                    &registration.client_id,
                    &auth,
                    &device,
                )
                .await?
            }
            SignIn::Browser | SignIn::NonInteractive => {
                let port = registration
                    .redirect_uris
                    .iter()
                    .filter_map(|u| Url::parse(u).ok())
                    .find_map(|u| u.port());
                let loopback = Loopback::bind(port).await?;
                let request = AuthorizeRequest {
                    client_id: registration.client_id.clone(),
                    redirect_uri: loopback.redirect_uri.clone(),
                    scopes: scopes.clone(),
                    resource: resource.clone(),
                    state: random_string(),
                    pkce: Pkce::new(),
                };
                let endpoint = meta.authorization_endpoint.clone().ok_or_else(|| {
                    ClientError::Refused(format!("{issuer} publishes no authorization endpoint"))
                })?;
                let url = request.url(&endpoint)?;
                let redirected = if self.options.sign_in == SignIn::NonInteractive {
                    redirect::follow(&self.http_no_redirect, &url, &loopback.redirect_uri).await?
                } else {
                    self.notify(&format!("Sign in at: {url}"));
                    if !redirect::open_browser(&url) {
                        self.notify("(could not open a browser: open the URL above yourself)");
                    }
                    loopback.wait(Duration::from_secs(300)).await?
                };
                let code = oauth::read_authorization_response(&redirected, &request.state, &meta)?;
                let mut form = vec![
                    ("grant_type", "authorization_code".to_owned()),
                    ("code", code),
                    ("redirect_uri", request.redirect_uri.clone()),
                    ("code_verifier", request.pkce.verifier.clone()),
                ];
                if let Some(r) = &resource {
                    form.push(("resource", r.clone()));
                }
                token_request(
                    &self.http,
                    &token_endpoint,
                    &registration.client_id,
                    &auth,
                    form,
                )
                .await?
            }
        };
        let auth = Auth {
            meta: Some(meta),
            registration,
            issuer,
            token_endpoint,
            resource_indicator: resource,
            scopes,
            tokens,
        };
        self.save(&auth)?;
        *self.auth.lock().await = Some(auth);
        Ok(())
    }

    /// The client identity at this authorization server, in the
    /// specification's order: pre-registered, Client ID Metadata Document,
    /// dynamic registration.
    async fn identify(&self, meta: &AuthServer, issuer: &str) -> Result<Registration, ClientError> {
        if let Some(id) = &self.options.client_id {
            // Kept (without any secret) so that later runs at this issuer
            // need no --client-id.
            let kept = Registration {
                issuer: issuer.to_owned(),
                client_id: id.clone(),
                client_secret: None,
                redirect_uris: vec![],
                token_endpoint_auth_method: None,
            };
            if self
                .options
                .store
                .registration(issuer)
                .is_none_or(|r| r.client_id != *id)
            {
                self.options.store.save_registration(&kept)?;
            }
            return Ok(Registration {
                client_secret: self.options.client_secret.clone(),
                ..kept
            });
        }
        if let Some(mut r) = self.options.store.registration(issuer) {
            if r.client_secret.is_none() {
                r.client_secret = self.options.client_secret.clone();
            }
            return Ok(r);
        }
        if meta.client_id_metadata_document_supported
            && let Some(url) = &self.options.client_metadata_url
        {
            return Ok(Registration {
                issuer: issuer.to_owned(),
                client_id: url.clone(),
                client_secret: None,
                redirect_uris: vec![],
                token_endpoint_auth_method: Some("none".into()),
            });
        }
        let Some(endpoint) = &meta.registration_endpoint else {
            return Err(ClientError::Refused(format!(
                "{issuer} supports no dynamic client registration: pass --client-id with a client registered there{}",
                if meta.is_entra_v2() {
                    " (for Entra ID: the Application (client) ID of a public client app registration with a http://localhost redirect URI)"
                } else {
                    ""
                }
            )));
        };
        let loopback = Loopback::bind(None).await?;
        let redirect_uri = loopback.redirect_uri.clone();
        drop(loopback);
        let client_credentials = self.options.sign_in == SignIn::ClientCredentials;
        let body = json!({
            "client_name": "mcpgate",
            "redirect_uris": [redirect_uri],
            "grant_types": if client_credentials { json!(["client_credentials"]) } else { json!(["authorization_code", "refresh_token"]) },
            "response_types": if client_credentials { json!([]) } else { json!(["code"]) },
            "token_endpoint_auth_method": if client_credentials { "client_secret_basic" } else { "none" },
            "application_type": "native",
        });
        let resp = self
            .http
            .post(endpoint)
            .json(&body)
            .send()
            .await
            .map_err(|source| FlowError::Http {
                url: endpoint.clone(),
                source,
            })?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(ClientError::Refused(format!(
                "dynamic client registration at {endpoint} failed ({status}): {}",
                value["error_description"]
                    .as_str()
                    .or(value["error"].as_str())
                    .unwrap_or("no reason given")
            )));
        }
        let Some(client_id) = value["client_id"].as_str() else {
            return Err(ClientError::Refused(format!(
                "dynamic client registration at {endpoint} returned no client_id"
            )));
        };
        let registration = Registration {
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: value["client_secret"].as_str().map(str::to_owned),
            redirect_uris: value["redirect_uris"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_else(|| vec![redirect_uri]),
            token_endpoint_auth_method: value["token_endpoint_auth_method"]
                .as_str()
                .map(str::to_owned),
        };
        self.options.store.save_registration(&registration)?;
        Ok(registration)
    }

    /// Sends one JSON-RPC message, signing in as the server asks.
    async fn send(&self, body: &Value) -> Result<Value, ClientError> {
        let mut rounds = 0;
        loop {
            let token = self.current_token().await?;
            match self.mcp.post(body, token.as_deref()).await? {
                Reply::Message(v) => return Ok(v),
                Reply::Unauthorized(challenge) => {
                    rounds += 1;
                    if rounds > MAX_AUTH_ROUNDS {
                        return Err(ClientError::Refused(format!(
                            "{} still refuses the token after {MAX_AUTH_ROUNDS} sign-ins{}",
                            self.url(),
                            challenge
                                .and_then(|c| c.error_description)
                                .map(|d| format!(": {d}"))
                                .unwrap_or_default()
                        )));
                    }
                    *self.auth.lock().await = None;
                    self.authorize(challenge.as_ref(), false).await?;
                }
                Reply::Forbidden(challenge) => {
                    let insufficient = challenge.as_ref().and_then(|c| c.error.as_deref())
                        == Some("insufficient_scope");
                    rounds += 1;
                    if !insufficient || rounds > MAX_AUTH_ROUNDS {
                        return Err(ClientError::Refused(format!(
                            "{} refuses this operation (403{}){}",
                            self.url(),
                            challenge
                                .as_ref()
                                .and_then(|c| c.scope.as_deref())
                                .map(|s| format!(", needs scope {s}"))
                                .unwrap_or_default(),
                            if insufficient {
                                " even after asking for more scopes"
                            } else {
                                ""
                            }
                        )));
                    }
                    self.authorize(challenge.as_ref(), true).await?;
                }
            }
        }
    }

    /// A request's result, or its JSON-RPC error.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        self.ensure_initialized().await?;
        let body = self.mcp.request(method, params);
        let reply = self.send(&body).await?;
        result_of(reply)
    }

    /// `initialize` and `notifications/initialized`, once.
    pub async fn ensure_initialized(&self) -> Result<(), ClientError> {
        let mut done = self.initialized.lock().await;
        if *done {
            return Ok(());
        }
        if self.mcp.is_stateless() {
            // 2026-07-28 has no initialize; `server/discover` tells what
            // the server offers. A server without it is still usable.
            let body = self.mcp.request("server/discover", json!({}));
            let _ = self.send(&body).await?;
            *done = true;
            return Ok(());
        }
        let reply = self.send(&self.mcp.initialize()).await?;
        let result = result_of(reply)?;
        self.mcp.initialized(&result);
        self.send(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .await?;
        *done = true;
        Ok(())
    }

    /// `tools/list`.
    pub async fn list_tools(&self) -> Result<Value, ClientError> {
        self.request("tools/list", json!({})).await
    }

    /// `tools/call`.
    pub async fn call_tool(&self, name: &str, arguments: Value) -> Result<Value, ClientError> {
        self.request(
            "tools/call",
            json!({ "name": name, "arguments": arguments }),
        )
        .await
    }

    /// Signs in if needed and returns a valid access token.
    pub async fn token(&self) -> Result<String, ClientError> {
        self.ensure_initialized().await?;
        self.current_token()
            .await?
            .ok_or_else(|| ClientError::Refused(format!("{} did not ask for a token", self.url())))
    }

    /// Forwards a raw JSON-RPC message from a host (the stdio bridge): the
    /// host runs `initialize` itself; the negotiated version is noted.
    pub async fn forward(&self, message: &Value) -> Result<Value, ClientError> {
        let reply = self.send(message).await?;
        if message["method"] == "initialize"
            && let Some(result) = reply.get("result")
        {
            self.mcp.initialized(result);
            *self.initialized.lock().await = true;
        }
        Ok(reply)
    }
}

fn result_of(reply: Value) -> Result<Value, ClientError> {
    if let Some(e) = reply.get("error") {
        return Err(ClientError::Rpc {
            code: e["code"].as_i64().unwrap_or(0),
            message: e["message"].as_str().unwrap_or_default().to_owned(),
        });
    }
    Ok(reply.get("result").cloned().unwrap_or(Value::Null))
}

//! The client users get: MCP requests with a token, and, when the server
//! says 401 or 403, the authorization the specification prescribes —
//! discovery ([`crate::discovery`]), the scopes ([`crate::scopes`]), the
//! client's identity ([`crate::registration`]), a grant
//! ([`crate::grants`]) — then the token cached and refreshed
//! ([`crate::session`]).

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Mutex;
use url::Url;

use crate::challenge::BearerChallenge;
use crate::claims::Claims;
use crate::discovery::{self, AuthServer};
pub use crate::error::ClientError;
pub use crate::grants::SignIn;
use crate::grants::{self, Grant, TokenEndpoint};
use crate::mcp::{McpHttp, Reply};
use crate::oauth::TokenSet;
use crate::redirect::Browser;
use crate::registration::{self, Credentials, Identity};
use crate::scopes;
use crate::session::{Refresh, Session};
use crate::store::Store;

/// At most this many sign-ins (first one plus step-ups) per operation.
const MAX_AUTH_ROUNDS: usize = 3;

/// What the client is configured with.
#[derive(Clone)]
pub struct ClientOptions {
    /// The client's identity: a pre-registered id with its secret or key
    /// and the authorization server they belong to, or a Client ID
    /// Metadata Document URL. `Debug` shows no secret.
    pub credentials: Credentials,
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
    /// How a browser is opened ([`crate::redirect::SystemBrowser`]).
    pub browser: Arc<dyn Browser>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("credentials", &self.credentials)
            .field("sign_in", &self.sign_in)
            .field("scopes", &self.scopes)
            .field("store", &self.store)
            .field("protocol_version", &self.protocol_version)
            .finish_non_exhaustive()
    }
}

/// A client for one MCP server.
pub struct Client {
    http: reqwest::Client,
    http_no_redirect: reqwest::Client,
    mcp: McpHttp,
    options: ClientOptions,
    auth: Mutex<Option<Session>>,
    initialized: Mutex<bool>,
    // Claims a refused refresh asked for: the next sign-in sends them.
    pending_claims: std::sync::Mutex<Option<Claims>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", self.mcp.url())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `url`. `http` must not follow redirects across
    /// origins blindly; `http_no_redirect` follows none, for the
    /// non-interactive mode.
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
            pending_claims: std::sync::Mutex::new(None),
        }
    }

    fn notify(&self, msg: &str) {
        (self.options.notify)(msg);
    }

    /// The server URL.
    pub fn url(&self) -> &Url {
        self.mcp.url()
    }

    /// The access token to send now, if one is held (refreshed if due).
    async fn current_token(&self) -> Result<Option<String>, ClientError> {
        let mut guard = self.auth.lock().await;
        if guard.is_none() {
            *guard = Session::cached(
                &self.options.credentials,
                &self.options.store,
                self.url().as_str(),
            );
        }
        let Some(auth) = guard.as_mut() else {
            return Ok(None);
        };
        let notify = |m: &str| self.notify(m);
        let refreshed = auth
            .refresh_if_due(
                &self.http,
                &self.options.store,
                self.url().as_str(),
                &notify,
            )
            .await?;
        match refreshed {
            Refresh::Fresh => Ok(Some(auth.tokens.access_token.secret().to_owned())),
            Refresh::SignIn => {
                *guard = None;
                Ok(None)
            }
            Refresh::SignInWithClaims(claims) => {
                // The request goes without a token; its 401 signs in, and
                // that sign-in sends the claims.
                *self
                    .pending_claims
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(claims);
                *guard = None;
                Ok(None)
            }
        }
    }

    /// Claims a refused refresh asked for, to send with the next sign-in.
    fn take_pending_claims(&self) -> Option<Claims> {
        self.pending_claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Runs the authorization the specification prescribes for a 401 (or a
    /// 403 `insufficient_scope` step-up, or a claims challenge: both keep
    /// the scopes held). `claims` go on the authorization request.
    async fn authorize(
        &self,
        challenge: Option<&BearerChallenge>,
        step_up: bool,
        claims: Option<&Claims>,
    ) -> Result<(), ClientError> {
        let server = self.url().clone();
        let creds = &self.options.credentials;
        let found = discovery::discover(&self.http, &server, challenge).await?;
        let (prm, issuer, meta) = (found.prm, found.issuer, found.meta);
        // Before anything is sent to the authorization server.
        registration::check_issuer(creds, server.as_str(), &issuer)?;

        let confidential = creds.client_id.is_some() && creds.confidential();
        let notify = |m: &str| self.notify(m);
        let grant = grants::choose(
            self.options.sign_in,
            &meta,
            &issuer,
            confidential,
            self.options.browser.as_ref(),
            &notify,
        )?;
        if grant.uses_pkce() && !meta.supports_s256() {
            return Err(ClientError::NoPkce { issuer });
        }

        let held = if step_up {
            self.auth.lock().await.as_ref().map(|a| a.scopes.clone())
        } else {
            None
        };
        let scopes = scopes::with_entra_rules(
            scopes::select(
                challenge,
                prm.as_ref(),
                &self.options.scopes,
                held.as_deref(),
            ),
            &meta,
            grant.has_user(),
        );
        let resource = scopes::resource_indicator(prm.as_ref(), &meta, &scopes);

        let mut identity = registration::identify(
            &self.http,
            creds,
            &self.options.store,
            server.as_str(),
            &meta,
            &issuer,
            grant,
        )
        .await?;
        let token_endpoint =
            meta.token_endpoint
                .clone()
                .ok_or_else(|| ClientError::MissingEndpoint {
                    issuer: issuer.clone(),
                    endpoint: "token endpoint",
                    hint: "",
                })?;
        let client_auth = identity.client_auth(Some(&meta), &issuer, &token_endpoint)?;
        let endpoint = TokenEndpoint {
            http: &self.http,
            url: &token_endpoint,
            client_id: &identity.registration.client_id,
            auth: &client_auth,
        };
        let tokens = self
            .run_grant(
                grant,
                &endpoint,
                &identity,
                &meta,
                &issuer,
                &scopes,
                resource.as_deref(),
                claims,
            )
            .await?;
        if identity.commit(&self.options.store)? {
            self.notify(&format!(
                "The client secret or key of {} is now bound to {issuer}: it will be sent to no other authorization server (--issuer names it explicitly).",
                identity.registration.client_id
            ));
        }
        let auth = Session {
            meta: Some(meta),
            identity,
            issuer,
            token_endpoint,
            resource_indicator: resource,
            scopes,
            tokens,
        };
        auth.save(&self.options.store, self.url().as_str())?;
        *self.auth.lock().await = Some(auth);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_grant(
        &self,
        grant: Grant,
        endpoint: &TokenEndpoint<'_>,
        identity: &Identity,
        meta: &AuthServer,
        issuer: &str,
        scopes: &[String],
        resource: Option<&str>,
        claims: Option<&Claims>,
    ) -> Result<TokenSet, ClientError> {
        let notify = |m: &str| self.notify(m);
        let runner = grants::Runner {
            http_no_redirect: &self.http_no_redirect,
            browser: &self.options.browser,
            notify: &notify,
        };
        runner
            .run(
                grant, endpoint, identity, meta, issuer, scopes, resource, claims,
            )
            .await
    }

    /// Sends one JSON-RPC message, signing in as the server asks. A claims
    /// challenge (`insufficient_claims`) gets one interactive sign-in that
    /// sends its claims, and the message is sent once more; a second one
    /// is an error.
    async fn send(&self, body: &Value) -> Result<Value, ClientError> {
        let mut rounds = 0;
        let mut claims_sent = false;
        loop {
            let token = self.current_token().await?;
            match self.mcp.post(body, token.as_deref()).await? {
                Reply::Message(v) => return Ok(v),
                Reply::Unauthorized(challenge) => {
                    let asked = match challenge
                        .as_ref()
                        .filter(|c| c.is_insufficient_claims())
                        .and_then(BearerChallenge::claims)
                    {
                        Some(Ok(claims)) => Some(claims),
                        Some(Err(reason)) => {
                            return Err(ClientError::BadClaims {
                                server: self.url().to_string(),
                                reason,
                            });
                        }
                        // No claims named: an ordinary 401.
                        None => None,
                    };
                    if let Some(claims) = asked {
                        let description =
                            challenge.as_ref().and_then(|c| c.error_description.clone());
                        if claims_sent {
                            return Err(ClientError::ClaimsStillInsufficient {
                                server: self.url().to_string(),
                                claims: claims.to_string(),
                                description,
                            });
                        }
                        claims_sent = true;
                        self.notify(&format!(
                            "{} asks for a sign-in that satisfies more ({}): signing in again with claims {claims}",
                            self.url(),
                            description.as_deref().unwrap_or("insufficient_claims"),
                        ));
                        // The scopes held are kept (as on a step-up).
                        self.authorize(challenge.as_ref(), true, Some(&claims))
                            .await?;
                        continue;
                    }
                    rounds += 1;
                    if rounds > MAX_AUTH_ROUNDS {
                        return Err(ClientError::StillUnauthorized {
                            server: self.url().to_string(),
                            rounds: MAX_AUTH_ROUNDS,
                            description: challenge.and_then(|c| c.error_description),
                        });
                    }
                    *self.auth.lock().await = None;
                    let pending = self.take_pending_claims();
                    self.authorize(challenge.as_ref(), false, pending.as_ref())
                        .await?;
                }
                Reply::Forbidden(challenge) => {
                    let insufficient = challenge.as_ref().and_then(|c| c.error.as_deref())
                        == Some("insufficient_scope");
                    rounds += 1;
                    if !insufficient || rounds > MAX_AUTH_ROUNDS {
                        return Err(ClientError::Forbidden {
                            server: self.url().to_string(),
                            scope: challenge.and_then(|c| c.scope),
                            after_step_up: insufficient,
                        });
                    }
                    self.authorize(challenge.as_ref(), true, None).await?;
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
            .ok_or_else(|| ClientError::NoTokenAsked {
                server: self.url().to_string(),
            })
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

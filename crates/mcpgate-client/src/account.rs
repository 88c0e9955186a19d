//! A user's sign-in at an identity provider as a public client, for an
//! API's scopes (Microsoft Graph's `User.Read`, say), with no MCP server in
//! between: what a local stdio server needs to act for its user.
//!
//! The tokens are kept in the same store as `mcpgate login`'s, keyed by
//! the API; the access token is refreshed silently shortly before it
//! expires, and a refused refresh token leads to a fresh sign-in rather
//! than an error; a refresh refused for want of claims (Entra's
//! AADSTS50076), or an API's claims challenge handed to
//! [`Account::sign_in_with_claims`], leads to an interactive sign-in that
//! sends them. One sign-in at a time: a caller that arrives while one runs
//! waits for it.

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::claims::Claims;
use crate::discovery::{self, AuthServer};
use crate::error::ClientError;
use crate::grants::{self, Runner, SignIn, TokenEndpoint};
use crate::redirect::Browser;
use crate::registration::{Credentials, Identity};
use crate::scopes;
use crate::session::{Refresh, Session};
use crate::store::Store;

/// What the account signs in with.
#[derive(Clone)]
pub struct AccountOptions {
    /// The authority, as MSAL takes it (`https://login.microsoftonline.com/<tenant>`),
    /// or an OpenID issuer.
    pub authority: String,
    /// The public client's id.
    pub client_id: String,
    /// The API's scopes.
    pub scopes: Vec<String>,
    /// The API the tokens are for: their key in the store.
    pub api: String,
    /// Browser (falling back to a device code) or device code.
    pub sign_in: SignIn,
    /// Where the tokens are kept.
    pub store: Store,
    /// Where prompts go.
    pub notify: Arc<dyn Fn(&str) + Send + Sync>,
    /// How a browser is opened.
    pub browser: Arc<dyn Browser>,
}

impl std::fmt::Debug for AccountOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountOptions")
            .field("authority", &self.authority)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("api", &self.api)
            .field("sign_in", &self.sign_in)
            .finish_non_exhaustive()
    }
}

/// The user's tokens for one API.
pub struct Account {
    http: reqwest::Client,
    http_no_redirect: reqwest::Client,
    options: AccountOptions,
    // Held through a whole sign-in: the single flight.
    held: Mutex<Option<Session>>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// An account; nothing is asked of anyone until [`Self::token`].
    pub fn new(
        http: reqwest::Client,
        http_no_redirect: reqwest::Client,
        options: AccountOptions,
    ) -> Self {
        Self {
            http,
            http_no_redirect,
            options,
            held: Mutex::new(None),
        }
    }

    fn credentials(&self) -> Credentials {
        Credentials {
            client_id: Some(self.options.client_id.clone()),
            ..Credentials::default()
        }
    }

    /// An access token for the API: the kept one, refreshed if due, else
    /// one from a sign-in (which the user is prompted for).
    pub async fn token(&self) -> Result<String, ClientError> {
        let mut held = self.held.lock().await;
        if held.is_none() {
            *held = Session::cached(&self.credentials(), &self.options.store, &self.options.api);
        }
        let mut claims = None;
        if let Some(session) = held.as_mut() {
            let notify = |m: &str| (self.options.notify)(m);
            let refreshed = session
                .refresh_if_due(&self.http, &self.options.store, &self.options.api, &notify)
                .await?;
            match refreshed {
                Refresh::Fresh => return Ok(session.tokens.access_token.secret().to_owned()),
                Refresh::SignIn => {}
                Refresh::SignInWithClaims(asked) => claims = Some(asked),
            }
            *held = None;
        }
        self.sign_in_holding(&mut held, claims.as_ref()).await
    }

    /// Signs in anew, interactively, sending `claims` (an API's claims
    /// challenge: Graph's `WWW-Authenticate: Bearer
    /// error="insufficient_claims", claims="…"`); the held tokens are
    /// replaced. A caller tries its API call once more with the token, and
    /// reports a second challenge rather than asking again.
    pub async fn sign_in_with_claims(&self, claims: &Claims) -> Result<String, ClientError> {
        let mut held = self.held.lock().await;
        *held = None;
        (self.options.notify)(&format!(
            "{} asks for a sign-in that satisfies more: signing in again with claims {claims}",
            self.options.api
        ));
        self.sign_in_holding(&mut held, Some(claims)).await
    }

    async fn sign_in_holding(
        &self,
        held: &mut Option<Session>,
        claims: Option<&Claims>,
    ) -> Result<String, ClientError> {
        let session = self.sign_in(claims).await?;
        session.save(&self.options.store, &self.options.api)?;
        let token = session.tokens.access_token.secret().to_owned();
        *held = Some(session);
        Ok(token)
    }

    /// Forgets the tokens (here and in the store): the next call signs in
    /// anew. How many kept token sets were removed.
    pub async fn forget(&self) -> usize {
        *self.held.lock().await = None;
        self.options.store.remove_tokens(&self.options.api)
    }

    async fn sign_in(&self, claims: Option<&Claims>) -> Result<Session, ClientError> {
        let (issuer, meta) = self.discover().await?;
        let notify = |m: &str| (self.options.notify)(m);
        let grant = grants::choose(
            self.options.sign_in,
            &meta,
            &issuer,
            false,
            self.options.browser.as_ref(),
            &notify,
        )?;
        if grant.uses_pkce() && !meta.supports_s256() {
            return Err(ClientError::NoPkce { issuer });
        }
        let scopes = scopes::with_entra_rules(self.options.scopes.clone(), &meta, true);
        let identity = Identity::public(&issuer, &self.options.client_id);
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
            client_id: &self.options.client_id,
            auth: &client_auth,
        };
        let runner = Runner {
            http_no_redirect: &self.http_no_redirect,
            browser: &self.options.browser,
            notify: &notify,
        };
        let tokens = runner
            .run(
                grant, &endpoint, &identity, &meta, &issuer, &scopes, None, claims,
            )
            .await?;
        Ok(Session {
            meta: Some(meta),
            identity,
            issuer,
            token_endpoint,
            resource_indicator: None,
            scopes,
            tokens,
        })
    }

    /// The issuer behind the authority, and its metadata: Entra's (and
    /// the development IdP's) authority names the tenant, whose v2.0
    /// issuer is below it; any other authority is its own issuer.
    async fn discover(&self) -> Result<(String, AuthServer), ClientError> {
        let authority = self.options.authority.trim_end_matches('/');
        let candidates = if authority.ends_with("/v2.0") {
            vec![authority.to_owned()]
        } else {
            vec![format!("{authority}/v2.0"), authority.to_owned()]
        };
        let mut last = None;
        for issuer in candidates {
            match discovery::auth_server(&self.http, &issuer).await {
                Ok(meta) => return Ok((meta.issuer.clone(), meta)),
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .map(ClientError::from)
            .unwrap_or(ClientError::MissingEndpoint {
                issuer: authority.to_owned(),
                endpoint: "OpenID configuration",
                hint: "",
            }))
    }
}

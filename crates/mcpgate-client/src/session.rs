//! The authorization held for one server between requests: found in the
//! store, refreshed shortly before it expires (under the store's lock, so
//! that two processes never spend one refresh token), kept again.

use crate::claims::Claims;
use crate::discovery::AuthServer;
use crate::error::{ClientError, FlowError};
use crate::grants::TokenEndpoint;
use crate::oauth::{TokenSet, unix_now};
use crate::registration::{self, Credentials, Identity};
use crate::store::{CachedTokens, Store};

/// What a refresh (when due) came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// The access token is good: refreshed, or not yet due.
    Fresh,
    /// No usable token (none to refresh with, or the refresh token was
    /// refused): sign in again.
    SignIn,
    /// The refresh was refused for want of claims (Entra's AADSTS50076
    /// once a Conditional Access policy applies): sign in interactively,
    /// sending them.
    SignInWithClaims(Claims),
}

/// Refresh this long before expiry.
const REFRESH_MARGIN: u64 = 60;

/// The authorization in use for one server: what a refresh needs, and the
/// tokens. `Debug` shows no token.
#[derive(Debug, Clone)]
pub struct Session {
    pub(crate) meta: Option<AuthServer>,
    pub(crate) identity: Identity,
    pub(crate) issuer: String,
    pub(crate) token_endpoint: String,
    pub(crate) resource_indicator: Option<String>,
    pub(crate) scopes: Vec<String>,
    pub(crate) tokens: TokenSet,
}

impl Session {
    /// The cached authorization for `server`, if any (and if the
    /// configured credentials may be used with it).
    pub fn cached(creds: &Credentials, store: &Store, server: &str) -> Option<Self> {
        let t = store.latest_tokens(server, creds.client_id.as_deref())?;
        let identity = registration::for_cached(creds, store, server, &t.issuer, &t.client_id)?;
        Some(Self {
            meta: None,
            token_endpoint: t.token_endpoint.clone().unwrap_or_default(),
            resource_indicator: t.resource_indicator.clone(),
            identity,
            issuer: t.issuer,
            scopes: t.scopes,
            tokens: t.tokens,
        })
    }

    /// Keeps the tokens for `server`.
    pub fn save(&self, store: &Store, server: &str) -> Result<(), ClientError> {
        store.save_tokens(&CachedTokens {
            resource: server.to_owned(),
            issuer: self.issuer.clone(),
            client_id: self.identity.registration.client_id.clone(),
            scopes: self.scopes.clone(),
            token_endpoint: Some(self.token_endpoint.clone()),
            resource_indicator: self.resource_indicator.clone(),
            tokens: self.tokens.clone(),
        })?;
        Ok(())
    }

    /// Refreshes when the access token is about to expire. Holds the
    /// store's lock so that another process refreshing at the same moment
    /// waits and then uses the token this one got.
    pub async fn refresh_if_due(
        &mut self,
        http: &reqwest::Client,
        store: &Store,
        server: &str,
        notify: &(dyn Fn(&str) + Sync),
    ) -> Result<Refresh, ClientError> {
        let due = self
            .tokens
            .expires_at
            .is_some_and(|e| e <= unix_now() + REFRESH_MARGIN);
        if !due {
            return Ok(Refresh::Fresh);
        }
        if self.tokens.refresh_token.is_none() {
            return Ok(Refresh::SignIn);
        }
        let client_id = self.identity.registration.client_id.clone();
        let (held, resource, issuer, id) = (
            store.clone(),
            server.to_owned(),
            self.issuer.clone(),
            client_id.clone(),
        );
        let lock = tokio::task::spawn_blocking(move || held.lock(&resource, &issuer, &id))
            .await
            .map_err(ClientError::Task)??;
        // Another process may have refreshed while this one waited: what
        // the store holds now is either its fresh token or the one to spend.
        let current = store
            .tokens(server, &self.issuer, &client_id)
            .map_or_else(|| self.tokens.clone(), |c| c.tokens);
        if current
            .expires_at
            .is_some_and(|e| e > unix_now() + REFRESH_MARGIN)
        {
            self.tokens = current;
            drop(lock);
            return Ok(Refresh::Fresh);
        }
        let Some(refresh_token) = current.refresh_token.clone() else {
            return Ok(Refresh::SignIn);
        };
        let client_auth =
            self.identity
                .client_auth(self.meta.as_ref(), &self.issuer, &self.token_endpoint)?;
        let endpoint = TokenEndpoint {
            http,
            url: &self.token_endpoint,
            client_id: &client_id,
            auth: &client_auth,
        };
        let result = endpoint
            .refresh(
                &refresh_token,
                &self.scopes,
                self.resource_indicator.as_deref(),
            )
            .await;
        match result {
            Ok(mut t) => {
                if t.refresh_token.is_none() {
                    t.refresh_token = current.refresh_token;
                }
                self.tokens = t;
                self.save(store, server)?;
                drop(lock);
                Ok(Refresh::Fresh)
            }
            Err(FlowError::Refused(e)) => {
                drop(lock);
                if let Some(claims) = e.claims_challenge() {
                    // The grant stands; the identity provider wants more of
                    // the sign-in (a second factor, say) than it had.
                    notify(&format!(
                        "the identity provider asks for more than the cached sign-in satisfies ({}: {}); signing in again with claims {claims}",
                        e.error,
                        e.description.as_deref().unwrap_or("no description"),
                    ));
                    return Ok(Refresh::SignInWithClaims(claims));
                }
                notify(&format!(
                    "the refresh token was refused ({}); signing in again",
                    e.error
                ));
                Ok(Refresh::SignIn)
            }
            Err(e) => Err(e.into()),
        }
    }
}

//! `GET /authorize`: the MCP client's authorization request.
//!
//! Two stages, as RFC 6749 §4.1.2.1 requires: until the client and its
//! redirect URI are known good, every refusal is an error page and nothing
//! goes anywhere ([`UntrustedError`]); after that, refusals go back to the
//! client's redirect URI with `error`, `state` and `iss`
//! ([`RequestError`]).
//!
//! The user is then sent to the upstream first, and the consent page comes
//! at the callback: consent is per (user, client), and the broker learns
//! who the user is only from the upstream. No code reaches the client
//! before consent either way; the upstream sends its code to the broker's
//! own callback, never to the client.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::Response;
use http::StatusCode;
use mcpgate_client::claims::{Claims, ClaimsError};
use mcpgate_client::oauth::Pkce;
use mcpgate_store::{PendingAuthorization, SealError, StoreError};

use crate::config::OFFLINE_ACCESS;
use crate::grant::{PendingSecret, pending_key, seal};
use crate::params::{ParamError, Params};
use crate::pkce::{CodeChallenge, PkceError};
use crate::redirect::find_match;
use crate::registration::is_scope;
use crate::secret::{RandomUnavailable, random_token};
use crate::server::{
    Broker, ClientLookupError, LoadedClient, Peer, page_error, peer_addr, redirect, redirect_error,
    store_error,
};
use crate::upstream::UpstreamAuthorization;
use crate::wire::{ErrorCode, OAuthError};

/// The longest `state` a client may send; it is stored and sent back.
pub const MAX_STATE_LEN: usize = 1024;

/// A refusal before the redirect URI is trusted: shown, never redirected.
#[derive(Debug, thiserror::Error)]
pub enum UntrustedError {
    /// The query is malformed.
    #[error(transparent)]
    Params(#[from] ParamError),
    /// The client is unknown, or its document unusable.
    #[error(transparent)]
    Client(#[from] ClientLookupError),
    /// The redirect URI is not one the client registered.
    #[error("the redirect_uri is not registered for this client")]
    RedirectUri,
    /// Too many authorization requests from this address.
    #[error("too many sign-in attempts from this address; try again in a minute")]
    RateLimited,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl UntrustedError {
    /// The OAuth error shown on the page.
    pub fn to_oauth(&self) -> OAuthError {
        match self {
            UntrustedError::Params(e) => OAuthError::new(ErrorCode::InvalidRequest, e.to_string()),
            UntrustedError::Client(e) => e.to_oauth(),
            UntrustedError::RedirectUri => {
                OAuthError::new(ErrorCode::InvalidRequest, self.to_string())
            }
            UntrustedError::RateLimited => {
                OAuthError::new(ErrorCode::TemporarilyUnavailable, self.to_string())
            }
            UntrustedError::Store(e) => store_error(e),
        }
    }
}

/// A refusal once the redirect URI is trusted: sent back to it.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// `response_type` is missing.
    #[error("response_type is required")]
    NoResponseType,
    /// `response_type` is not `code`.
    #[error("only response_type=code is supported")]
    ResponseType,
    /// PKCE is missing or not S256.
    #[error(transparent)]
    Pkce(#[from] PkceError),
    /// A scope is not offered, not registered by the client, or malformed.
    #[error("the scope {0:?} is not offered to this client")]
    Scope(String),
    /// Only `offline_access` was asked for: a token must be for something.
    #[error("ask for at least one scope besides offline_access")]
    NoResourceScope,
    /// `resource` is not one of this server's resources.
    #[error("the resource is not one this server issues tokens for")]
    Resource,
    /// `state` is too long.
    #[error("state is longer than {MAX_STATE_LEN} bytes")]
    StateTooLong,
    /// `claims` is not a JSON object of at most 4 KiB.
    #[error("claims: {0}")]
    Claims(#[source] ClaimsError),
    /// No randomness.
    #[error(transparent)]
    Random(#[from] RandomUnavailable),
    /// Sealing failed.
    #[error("the pending sign-in could not be sealed")]
    Seal(#[source] SealError),
    /// The store failed or is full.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RequestError {
    /// The OAuth error sent back.
    pub fn to_oauth(&self) -> OAuthError {
        let code = match self {
            RequestError::NoResponseType | RequestError::StateTooLong | RequestError::Claims(_) => {
                ErrorCode::InvalidRequest
            }
            RequestError::ResponseType => ErrorCode::UnsupportedResponseType,
            RequestError::Pkce(e) => return e.to_oauth(),
            RequestError::Scope(_) | RequestError::NoResourceScope => ErrorCode::InvalidScope,
            RequestError::Resource => ErrorCode::InvalidTarget,
            RequestError::Random(_) | RequestError::Seal(_) => ErrorCode::ServerError,
            RequestError::Store(e) => return store_error(e),
        };
        OAuthError::new(code, self.to_string())
    }
}

pub(crate) async fn authorize(
    State(broker): State<Arc<Broker>>,
    peer: Peer,
    RawQuery(query): RawQuery,
) -> Response {
    let (client, redirect_uri, params) = match trust(&broker, peer, query.as_deref()).await {
        Ok(t) => t,
        Err(e) => {
            let o = e.to_oauth();
            tracing::info!(error = %e, "broker: authorization request refused (shown)");
            return page_error(
                o.status(),
                "This sign-in request cannot be used",
                &o.error_description,
                None,
            );
        }
    };
    // The client's state is echoed only when it is within bounds.
    let state = params.get("state").filter(|s| s.len() <= MAX_STATE_LEN);
    match request(&broker, &client, &redirect_uri, &params).await {
        Ok(location) => redirect(StatusCode::FOUND, &location),
        Err(e) => {
            tracing::info!(client_id = %client.id, error = %e, "broker: authorization request refused");
            redirect_error(
                &broker,
                &redirect_uri,
                state,
                &e.to_oauth(),
                StatusCode::FOUND,
            )
        }
    }
}

/// The client and its redirect URI, or a page.
async fn trust(
    broker: &Broker,
    peer: Peer,
    query: Option<&str>,
) -> Result<(LoadedClient, String, Params), UntrustedError> {
    if !broker
        .within_rate(
            "authorize",
            peer_addr(&peer),
            broker.config.authorize_rate_limit,
        )
        .await?
    {
        return Err(UntrustedError::RateLimited);
    }
    let params = Params::parse(query.unwrap_or_default().as_bytes())?;
    let client_id = params.require("client_id")?;
    let client = broker.load_client(client_id).await?;
    let requested = params.require("redirect_uri")?;
    if find_match(client.metadata.redirect_uris(), requested).is_none() {
        return Err(UntrustedError::RedirectUri);
    }
    let redirect_uri = requested.to_owned();
    Ok((client, redirect_uri, params))
}

/// Checks the rest, stores the pending sign-in, and answers with the
/// upstream authorization URL.
async fn request(
    broker: &Broker,
    client: &LoadedClient,
    redirect_uri: &str,
    params: &Params,
) -> Result<String, RequestError> {
    if params.get("state").is_some_and(|s| s.len() > MAX_STATE_LEN) {
        return Err(RequestError::StateTooLong);
    }
    match params.get("response_type") {
        None => return Err(RequestError::NoResponseType),
        Some("code") => {}
        Some(_) => return Err(RequestError::ResponseType),
    }
    let challenge = CodeChallenge::parse(
        params.get("code_challenge"),
        params.get("code_challenge_method"),
    )?;
    let scopes = scopes(broker, client, params.get("scope"))?;
    // After a claims challenge the client asks for claims (a second
    // factor): the upstream sign-in is where they can be met.
    let claims = params
        .get("claims")
        .map(Claims::from_json)
        .transpose()
        .map_err(RequestError::Claims)?;
    let resource = match params.get("resource") {
        None => broker.config.resources[0].clone(),
        Some(r) if broker.config.resources.iter().any(|c| c == r) => r.to_owned(),
        Some(_) => return Err(RequestError::Resource),
    };

    let state = random_token(32)?;
    let nonce = random_token(16)?;
    let pkce = Pkce::new();
    let key = pending_key("upstream", &state);
    let sealed = seal(
        &broker.cipher,
        key.to_hex().as_bytes(),
        &PendingSecret::Upstream {
            verifier: pkce.verifier.secret().to_owned(),
            nonce: nonce.clone(),
        },
    )
    .map_err(RequestError::Seal)?;
    let pending = PendingAuthorization {
        client_id: mcpgate_store::ClientId::new(client.id.as_str()),
        redirect_uri: redirect_uri.to_owned(),
        client_state: params.get("state").map(str::to_owned),
        code_challenge: challenge.as_str().to_owned(),
        scopes,
        resource: Some(resource),
        sealed: Some(sealed),
    };
    broker
        .store
        .put_pending(&key, &pending, broker.config.pending_lifetime)
        .await?;
    let url = broker.upstream.authorization_url(&UpstreamAuthorization {
        redirect_uri: &broker.callback_uri,
        state: &state,
        code_challenge: &pkce.challenge,
        nonce: &nonce,
        login_hint: None,
        claims: claims.as_ref(),
    });
    Ok(url.to_string())
}

/// The scopes granted: those asked (or every offered one when none are),
/// each offered and, when the client registered a `scope`, registered.
fn scopes(
    broker: &Broker,
    client: &LoadedClient,
    asked: Option<&str>,
) -> Result<Vec<String>, RequestError> {
    let registered: Option<Vec<&str>> = client.metadata.scope().map(|s| s.split(' ').collect());
    let mut out: Vec<String> = Vec::new();
    match asked {
        None => {
            for s in &broker.config.scopes {
                if registered.as_ref().is_none_or(|r| r.contains(&s.as_str())) {
                    out.push(s.clone());
                }
            }
        }
        Some(asked) => {
            if !is_scope(asked) {
                let shown: String = asked.chars().take(40).collect();
                return Err(RequestError::Scope(shown));
            }
            for s in asked.split(' ') {
                let offered = broker.config.scopes.iter().any(|o| o == s);
                let allowed = registered.as_ref().is_none_or(|r| r.contains(&s));
                if !offered || !allowed {
                    return Err(RequestError::Scope(s.chars().take(40).collect()));
                }
                if !out.iter().any(|o| o == s) {
                    out.push(s.to_owned());
                }
            }
        }
    }
    if out.iter().all(|s| s == OFFLINE_ACCESS) {
        return Err(RequestError::NoResourceScope);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_and_redirected_refusals_map_to_oauth_codes() {
        assert_eq!(
            UntrustedError::RedirectUri.to_oauth().error,
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            UntrustedError::Client(ClientLookupError::Unknown)
                .to_oauth()
                .error,
            ErrorCode::InvalidClient
        );
        assert_eq!(
            UntrustedError::RateLimited.to_oauth().error,
            ErrorCode::TemporarilyUnavailable
        );
        assert_eq!(
            RequestError::ResponseType.to_oauth().error,
            ErrorCode::UnsupportedResponseType
        );
        assert_eq!(
            RequestError::Resource.to_oauth().error,
            ErrorCode::InvalidTarget
        );
        assert_eq!(
            RequestError::Pkce(PkceError::PlainRefused).to_oauth().error,
            ErrorCode::InvalidRequest
        );
        // A scope echoed back is bounded and wire-safe.
        let o = RequestError::Scope("\"x\"".repeat(100)).to_oauth();
        assert_eq!(o.error, ErrorCode::InvalidScope);
        assert!(!o.error_description.contains('"'));
    }
}

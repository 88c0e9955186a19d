//! `GET /auth/callback`: the upstream sends the user back. The `state` is
//! taken from the store once (a forged or replayed one spends nothing and
//! gets an error page); the upstream code is redeemed as a confidential
//! client with the broker's PKCE verifier (never an RFC 8707 `resource`);
//! the upstream tokens tell who the user is. Then consent: skipped for a
//! pre-authorized client, a consent the user gave before (stored or in a
//! valid cookie), or the development auto-approve user; otherwise the
//! consent page, with the upstream tokens held sealed in a second pending
//! record until the user decides. Once consented, the upstream tokens are
//! stored sealed and the client gets a one-time code.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::header::SET_COOKIE;
use http::{HeaderMap, HeaderValue, StatusCode};
use mcpgate_store::{
    CodeRecord, PendingAuthorization, SealError, StoreError, Subject, UpstreamTokens,
};

use crate::audit;
use crate::consent_cookie::{self, ConsentBinding};
use crate::consent_page::ConsentPage;
use crate::grant::{
    Identity, IdentityError, PendingSecret, UpstreamGrant, grant_key, open, pending_key, seal,
};
use crate::metadata::paths;
use crate::params::Params;
use crate::redirect::find_match;
use crate::registration::ClientId;
use crate::secret::{AuthorizationCode, CsrfToken, RandomUnavailable, random_token};
use crate::server::{
    Broker, ClientLookupError, client_redirect_url, page_error, redirect, redirect_error,
    store_error,
};
use crate::upstream::UpstreamError;
use crate::wire::{ErrorCode, OAuthError};

/// Why a callback failed.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// No `state`, or one the store does not hold (forged, replayed, expired).
    #[error("this sign-in has expired or was already completed")]
    UnknownState,
    /// The upstream answered with an error.
    #[error("the identity provider did not sign you in ({0})")]
    Upstream(String),
    /// The response names another issuer than the upstream (RFC 9207).
    #[error("the sign-in response came from another identity provider")]
    WrongIssuer,
    /// The upstream sent neither code nor error.
    #[error("the identity provider sent no code")]
    NoCode,
    /// Redeeming the upstream code failed.
    #[error("the identity provider refused the sign-in")]
    Redeem(#[source] UpstreamError),
    /// The upstream token names nobody.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The client vanished while the user signed in.
    #[error(transparent)]
    Client(#[from] ClientLookupError),
    /// The pending record's sealed part does not open.
    #[error("the pending sign-in could not be opened")]
    Seal(#[from] SealError),
    /// No randomness.
    #[error(transparent)]
    Random(#[from] RandomUnavailable),
    /// The store failed or is full.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CallbackError {
    /// The OAuth error reported to the client.
    pub fn to_oauth(&self) -> OAuthError {
        let code = match self {
            CallbackError::UnknownState | CallbackError::WrongIssuer => ErrorCode::InvalidRequest,
            CallbackError::Upstream(_) | CallbackError::NoCode => ErrorCode::AccessDenied,
            CallbackError::Redeem(_)
            | CallbackError::Identity(_)
            | CallbackError::Seal(_)
            | CallbackError::Random(_) => ErrorCode::ServerError,
            CallbackError::Client(e) => return e.to_oauth(),
            CallbackError::Store(e) => return store_error(e),
        };
        OAuthError::new(code, self.to_string())
    }
}

pub(crate) async fn callback(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match Params::parse(query.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(e) => {
            return page_error(
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                &e.to_string(),
                None,
            );
        }
    };
    let Some(state) = params.get("state") else {
        return unknown_state();
    };
    let key = pending_key("upstream", state);
    let pending = match broker.store.take_pending(&key).await {
        Ok(Some(p)) => p,
        Ok(None) => return unknown_state(),
        Err(e) => {
            let o = store_error(&e);
            return page_error(o.status(), "Sign-in failed", &o.error_description, None);
        }
    };
    match signed_in(&broker, &headers, &params, &key, &pending).await {
        Ok(response) => response,
        Err(e) => {
            // The cause keeps the upstream's own refusal (AADSTS code,
            // trace and correlation ids); it holds no token.
            let cause = std::error::Error::source(&e).map(ToString::to_string);
            tracing::warn!(client_id = %pending.client_id, error = %e, cause = ?cause, "broker: callback failed");
            let o = e.to_oauth();
            audit::sign_in(&broker, pending.client_id.as_str(), None, Some(&o));
            let back = client_redirect_url(
                &broker,
                &pending.redirect_uri,
                &[
                    ("error", o.code()),
                    ("error_description", &o.error_description),
                ],
                pending.client_state.as_deref(),
            );
            // The person sees why; the link reports it to the application.
            page_error(o.status(), "Sign-in failed", &e.to_string(), Some(&back))
        }
    }
}

fn unknown_state() -> Response {
    page_error(
        StatusCode::BAD_REQUEST,
        "Sign-in failed",
        &CallbackError::UnknownState.to_string(),
        None,
    )
}

async fn signed_in(
    broker: &Broker,
    headers: &HeaderMap,
    params: &Params,
    key: &mcpgate_store::TokenHash,
    pending: &PendingAuthorization,
) -> Result<Response, CallbackError> {
    let sealed = pending.sealed.as_ref().ok_or(SealError::Open)?;
    let PendingSecret::Upstream { verifier, .. } =
        open::<PendingSecret>(&broker.cipher, key.to_hex().as_bytes(), sealed)?
    else {
        return Err(SealError::Open.into());
    };
    // RFC 9207: a response naming another issuer is a mix-up attempt.
    if params
        .get("iss")
        .is_some_and(|iss| iss != broker.upstream.issuer())
    {
        return Err(CallbackError::WrongIssuer);
    }
    if let Some(error) = params.get("error") {
        let mut shown: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(40)
            .collect();
        // Entra's description (AADSTS code, trace id) is what a person
        // needs; it is escaped on the page and bounded here.
        if let Some(d) = params.get("error_description") {
            shown.push_str(": ");
            shown.extend(d.chars().filter(|c| !c.is_control()).take(200));
        }
        return Err(CallbackError::Upstream(shown));
    }
    let code = params.get("code").ok_or(CallbackError::NoCode)?;
    let tokens = broker
        .upstream
        .redeem(code, &broker.callback_uri, &verifier)
        .await
        .map_err(CallbackError::Redeem)?;
    let identity = Identity::from_access_token(tokens.access_token.secret())?;
    let grant = UpstreamGrant {
        identity,
        access_token: tokens.access_token.secret().to_owned(),
        refresh_token: tokens.refresh_token.as_ref().map(|t| t.secret().to_owned()),
        expires_at: tokens.expires_at,
    };
    tracing::info!(
        client_id = %pending.client_id,
        oid = %grant.identity.oid,
        "broker: signed in upstream"
    );
    if consented(broker, headers, pending, &grant.identity).await? {
        let location = issue_code(broker, pending, grant).await?;
        return Ok(redirect(StatusCode::FOUND, &location));
    }
    consent_page(broker, pending, grant).await
}

/// Whether consent is already given for this (user, client, scopes).
async fn consented(
    broker: &Broker,
    headers: &HeaderMap,
    pending: &PendingAuthorization,
    identity: &Identity,
) -> Result<bool, CallbackError> {
    let client = pending.client_id.as_str();
    if broker
        .config
        .pre_authorized_clients
        .iter()
        .any(|c| c == client)
    {
        return Ok(true);
    }
    if let (Some(auto), Some(user)) = (
        &broker.config.dev_auto_approve,
        &identity.preferred_username,
    ) && auto.eq_ignore_ascii_case(user)
    {
        tracing::warn!(client_id = client, user = %user, "broker: consent auto-approved (development)");
        return Ok(true);
    }
    let subject = Subject::new(&identity.oid);
    if let Some(stored) = broker
        .store
        .get_consent(&subject, &pending.client_id)
        .await?
        && pending.scopes.iter().all(|s| stored.scopes.contains(s))
    {
        return Ok(true);
    }
    let client_id = ClientId::new(client);
    let scopes: Vec<&str> = pending.scopes.iter().map(String::as_str).collect();
    let binding = ConsentBinding {
        client_id: &client_id,
        subject: &identity.oid,
        scopes: &scopes,
    };
    Ok(consent_cookie::verify(
        &broker.consent_key,
        &binding,
        headers,
        broker.now().to_system(),
    )
    .is_ok())
}

/// The consent form's CSRF value for a pending id: an HMAC, so that it is
/// checked before the pending record is touched (a forged form spends
/// nothing).
pub(crate) fn csrf_for(broker: &Broker, pending_id: &str) -> CsrfToken {
    CsrfToken::new(
        broker
            .consent_key
            .tag("consent-csrf", pending_id.as_bytes()),
    )
}

/// The name of the cookie that carries the CSRF value to this browser
/// only: `__Host-` where the issuer is https, plain on http loopback
/// (where a browser may drop a `Secure` cookie).
pub(crate) fn csrf_cookie_name(broker: &Broker, pending_id: &str) -> String {
    let suffix: String = broker
        .consent_key
        .tag("consent-csrf-name", pending_id.as_bytes())
        .chars()
        .take(12)
        .collect();
    if broker.config.issuer.is_https() {
        format!("__Host-mcpgate-csrf-{suffix}")
    } else {
        format!("mcpgate-csrf-{suffix}")
    }
}

pub(crate) fn csrf_cookie(broker: &Broker, pending_id: &str, value: Option<&str>) -> String {
    let secure = if broker.config.issuer.is_https() {
        "; Secure"
    } else {
        ""
    };
    let max_age = match value {
        Some(_) => broker.config.pending_lifetime.as_secs(),
        None => 0,
    };
    format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict{secure}; Max-Age={max_age}",
        csrf_cookie_name(broker, pending_id),
        value.unwrap_or_default()
    )
}

async fn consent_page(
    broker: &Broker,
    pending: &PendingAuthorization,
    grant: UpstreamGrant,
) -> Result<Response, CallbackError> {
    let client = broker.load_client(pending.client_id.as_str()).await?;
    let redirect_uri = find_match(client.metadata.redirect_uris(), &pending.redirect_uri)
        .ok_or(ClientLookupError::Unknown)?
        .clone();
    let pending_id = random_token(32)?;
    let key = pending_key("consent", &pending_id);
    let user = grant.identity.display().to_owned();
    let sealed = seal(
        &broker.cipher,
        key.to_hex().as_bytes(),
        &PendingSecret::Consent { grant },
    )?;
    let record = PendingAuthorization {
        sealed: Some(sealed),
        ..pending.clone()
    };
    broker
        .store
        .put_pending(&key, &record, broker.config.pending_lifetime)
        .await?;
    let csrf = csrf_for(broker, &pending_id);
    let scopes: Vec<&str> = pending.scopes.iter().map(String::as_str).collect();
    let action = format!("{}{}", broker.config.issuer.base_path(), paths::CONSENT);
    let page = ConsentPage {
        client_name: client.metadata.client_name(),
        client_id: &client.id,
        origin: client.origin(),
        redirect_uri: &redirect_uri,
        scopes: &scopes,
        user: &user,
        csrf: &csrf,
        action: &action,
        hidden: &[("pending", &pending_id)],
    };
    let mut response = page.response().into_response();
    if let Ok(v) = HeaderValue::from_str(&csrf_cookie(broker, &pending_id, Some(csrf.secret()))) {
        response.headers_mut().append(SET_COOKIE, v);
    }
    Ok(response)
}

/// Stores the sealed upstream grant and a one-time code; the client's
/// redirect with `code`, `state` and `iss`.
pub(crate) async fn issue_code(
    broker: &Broker,
    pending: &PendingAuthorization,
    grant: UpstreamGrant,
) -> Result<String, CallbackError> {
    let upstream_key = grant_key(
        grant.identity.tid.as_deref(),
        &grant.identity.oid,
        pending.client_id.as_str(),
    );
    let now = broker.now();
    let subject = Subject::new(&grant.identity.oid);
    let sealed = seal(&broker.cipher, upstream_key.as_str().as_bytes(), &grant)?;
    broker
        .store
        .put_upstream(
            &upstream_key,
            &UpstreamTokens {
                sealed,
                expires_at: now.plus(broker.config.refresh_token_lifetime),
            },
        )
        .await?;
    let code = AuthorizationCode::generate()?;
    let record = CodeRecord {
        client_id: pending.client_id.clone(),
        redirect_uri: pending.redirect_uri.clone(),
        code_challenge: pending.code_challenge.clone(),
        scopes: pending.scopes.clone(),
        resource: pending.resource.clone(),
        subject,
        upstream: Some(upstream_key),
        issued_at: now,
    };
    let hash = mcpgate_store::TokenHash::from_bytes(*code.digest().as_bytes());
    broker
        .store
        .put_code(&hash, &record, broker.config.code_lifetime)
        .await?;
    audit::sign_in(
        broker,
        pending.client_id.as_str(),
        Some(&grant.identity),
        None,
    );
    Ok(client_redirect_url(
        broker,
        &pending.redirect_uri,
        &[("code", code.secret())],
        pending.client_state.as_deref(),
    ))
}

/// Sends the client an error through its redirect URI (after a decision).
pub(crate) fn deny(broker: &Broker, pending: &PendingAuthorization) -> Response {
    redirect_error(
        broker,
        &pending.redirect_uri,
        pending.client_state.as_deref(),
        &OAuthError::new(ErrorCode::AccessDenied, "the user denied the request"),
        StatusCode::SEE_OTHER,
    )
}

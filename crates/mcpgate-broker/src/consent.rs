//! `POST /authorize/consent`: the user's decision on the consent page.
//!
//! The CSRF value is checked before anything is read or spent: it must be
//! the HMAC of the pending id, in the form and in the `SameSite=Strict`
//! cookie set with the page (so a cross-site post carries no cookie). Only
//! then is the pending record taken, once. Approval stores the consent,
//! sets the consent cookie and issues the code; denial sends
//! `access_denied` back. Either way the CSRF cookie is cleared.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::header::SET_COOKIE;
use http::{HeaderMap, HeaderValue, StatusCode};
use mcpgate_store::{ConsentRecord, SealError, StoreError, Subject};

use crate::audit;
use crate::callback::{CallbackError, csrf_cookie, csrf_cookie_name, csrf_for, deny, issue_code};
use crate::consent_cookie::{self, ConsentBinding};
use crate::consent_page::fields;
use crate::grant::{PendingSecret, open, pending_key};
use crate::params::{ParamError, Params};
use crate::registration::ClientId;
use crate::server::{Broker, client_redirect_url, cookie, page_error, redirect, store_error};
use crate::wire::{ErrorCode, OAuthError};

/// Why a consent form was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// The form is malformed.
    #[error(transparent)]
    Params(#[from] ParamError),
    /// The CSRF value is missing or wrong, in the form or the cookie.
    #[error("this form was not sent from the consent page this browser was shown")]
    Csrf,
    /// The decision is neither approve nor deny.
    #[error("the decision must be approve or deny")]
    Decision,
    /// The pending consent is unknown, used or expired.
    #[error("this consent request has expired or was already answered")]
    Unknown,
    /// The sealed part does not open.
    #[error("the pending consent could not be opened")]
    Seal(#[from] SealError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ConsentError {
    /// The OAuth error shown.
    pub fn to_oauth(&self) -> OAuthError {
        match self {
            ConsentError::Params(_) | ConsentError::Decision | ConsentError::Unknown => {
                OAuthError::new(ErrorCode::InvalidRequest, self.to_string())
            }
            ConsentError::Csrf => OAuthError::new(ErrorCode::AccessDenied, self.to_string()),
            ConsentError::Seal(_) => OAuthError::new(ErrorCode::ServerError, self.to_string()),
            ConsentError::Store(e) => store_error(e),
        }
    }
}

pub(crate) async fn consent(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match decide(&broker, &headers, body).await {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(error = %e, "broker: consent form refused");
            let o = e.to_oauth();
            page_error(o.status(), "Consent not recorded", &e.to_string(), None)
        }
    }
}

async fn decide(
    broker: &Broker,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ConsentError> {
    let params = Params::from_body(body).await?;
    let pending_id = params.require("pending")?;
    let expected = csrf_for(broker, pending_id);
    let form_ok = params
        .get(fields::CSRF)
        .is_some_and(|v| expected.matches(v));
    let cookie_ok =
        cookie(headers, &csrf_cookie_name(broker, pending_id)).is_some_and(|v| expected.matches(v));
    if !form_ok || !cookie_ok {
        return Err(ConsentError::Csrf);
    }
    let approve = match params.get(fields::DECISION) {
        Some(fields::APPROVE) => true,
        Some(fields::DENY) => false,
        _ => return Err(ConsentError::Decision),
    };
    let key = pending_key("consent", pending_id);
    let pending = broker
        .store
        .take_pending(&key)
        .await?
        .ok_or(ConsentError::Unknown)?;
    let sealed = pending.sealed.as_ref().ok_or(SealError::Open)?;
    let PendingSecret::Consent { grant } =
        open::<PendingSecret>(&broker.cipher, key.to_hex().as_bytes(), sealed)?
    else {
        return Err(SealError::Open.into());
    };
    let clear = csrf_cookie(broker, pending_id, None);
    if !approve {
        tracing::info!(client_id = %pending.client_id, oid = %grant.identity.oid, "broker: consent denied");
        let refusal = OAuthError::new(ErrorCode::AccessDenied, "the user denied the request");
        audit::sign_in(
            broker,
            pending.client_id.as_str(),
            Some(&grant.identity),
            Some(&refusal),
        );
        let mut r = deny(broker, &pending);
        append_cookie(&mut r, &clear);
        return Ok(r);
    }

    let now = broker.now();
    let subject = Subject::new(&grant.identity.oid);
    let client_id = ClientId::new(pending.client_id.as_str());
    let scopes: Vec<&str> = pending.scopes.iter().map(String::as_str).collect();
    let consent_cookie = consent_cookie::issue(
        &broker.consent_key,
        &ConsentBinding {
            client_id: &client_id,
            subject: &grant.identity.oid,
            scopes: &scopes,
        },
        now.to_system(),
        broker.config.consent_lifetime,
    );
    let result = async {
        broker
            .store
            .put_consent(
                &subject,
                &pending.client_id,
                &ConsentRecord {
                    scopes: pending.scopes.clone(),
                    granted_at: now,
                    expires_at: now.plus(broker.config.consent_lifetime),
                },
            )
            .await
            .map_err(CallbackError::Store)?;
        issue_code(broker, &pending, grant).await
    }
    .await;
    let mut r = match result {
        Ok(location) => {
            tracing::info!(client_id = %pending.client_id, "broker: consent given");
            let mut r = redirect(StatusCode::SEE_OTHER, &location);
            append_cookie(&mut r, &consent_cookie);
            r
        }
        Err(e) => {
            let o = e.to_oauth();
            let back = client_redirect_url(
                broker,
                &pending.redirect_uri,
                &[
                    ("error", o.code()),
                    ("error_description", &o.error_description),
                ],
                pending.client_state.as_deref(),
            );
            page_error(o.status(), "Sign-in failed", &e.to_string(), Some(&back))
        }
    };
    append_cookie(&mut r, &clear);
    Ok(r)
}

fn append_cookie(r: &mut Response, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().append(SET_COOKIE, v);
    }
}

//! `POST /revoke` (RFC 7009). A refresh token revokes its whole family,
//! when the authenticated client is the one it was issued to. Anything
//! else (an unknown token, another client's, an access token, which is a
//! short-lived JWT nothing can recall) is answered 200 and changes
//! nothing, as §2.2 asks, so that the answer says nothing about tokens.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use mcpgate_store::{StoreError, TokenHash};

use crate::client_auth::{ClientAuthError, authenticate};
use crate::params::{ParamError, Params};
use crate::secret::RefreshToken;
use crate::server::{Broker, json_response, oauth_error, store_error};
use crate::wire::{ErrorCode, OAuthError};

/// Why a revocation request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// The form is malformed or has no `token`.
    #[error(transparent)]
    Params(#[from] ParamError),
    /// Client authentication failed.
    #[error(transparent)]
    Client(#[from] ClientAuthError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RevokeError {
    /// The OAuth error.
    pub fn to_oauth(&self) -> OAuthError {
        match self {
            RevokeError::Params(e) => OAuthError::new(ErrorCode::InvalidRequest, e.to_string()),
            RevokeError::Client(e) => e.to_oauth(),
            RevokeError::Store(e) => store_error(e),
        }
    }
}

pub(crate) async fn revoke(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle(&broker, &headers, body).await {
        Ok(()) => json_response(StatusCode::OK, "{}".to_owned(), true),
        Err(e) => {
            tracing::info!(error = %e, "broker: revocation refused");
            oauth_error(&e.to_oauth())
        }
    }
}

async fn handle(broker: &Broker, headers: &HeaderMap, body: Body) -> Result<(), RevokeError> {
    let params = Params::from_body(body).await?;
    let token = RefreshToken::presented(params.require("token")?);
    let client = authenticate(broker, headers, &params).await?;
    let hash = TokenHash::from_bytes(*token.digest().as_bytes());
    let Some(state) = broker.store.get_refresh(&hash).await? else {
        return Ok(());
    };
    if state.record.client_id.as_str() != client.id.as_str() {
        return Ok(());
    }
    if let Some(family) = broker.store.revoke_refresh(&hash).await? {
        tracing::info!(client_id = %client.id, family = %family, "broker: refresh family revoked");
    }
    Ok(())
}

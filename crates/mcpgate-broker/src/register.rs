//! `POST /register` (RFC 7591): validated metadata, a fresh client id (and
//! secret, for a confidential client), stored with a lifetime; bounded by
//! the body cap, a per-source rate limit and the store's client cap.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use mcpgate_store::{ClientRecord, ClientSource, StoreError, TokenHash};

use crate::registration::{
    ClientMetadata, MAX_REGISTRATION_BODY, RegistrationError, register as make_registration,
};
use crate::secret::RandomUnavailable;
use crate::server::{Broker, Peer, json_response, oauth_error, peer_addr, store_error};
use crate::wire::{ErrorCode, OAuthError};

/// Why a registration was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Too many registrations from this address.
    #[error("too many registrations from this address; try again later")]
    RateLimited,
    /// The body could not be read within the cap.
    #[error("the registration request is larger than {MAX_REGISTRATION_BODY} bytes or unreadable")]
    Body,
    /// The metadata broke a rule.
    #[error(transparent)]
    Metadata(#[from] RegistrationError),
    /// No randomness for the id or secret.
    #[error(transparent)]
    Random(#[from] RandomUnavailable),
    /// The store failed or is full.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RegisterError {
    /// The OAuth error.
    pub fn to_oauth(&self) -> OAuthError {
        match self {
            RegisterError::RateLimited => {
                OAuthError::new(ErrorCode::TemporarilyUnavailable, self.to_string())
            }
            RegisterError::Body => {
                OAuthError::new(ErrorCode::InvalidClientMetadata, self.to_string())
            }
            RegisterError::Metadata(e) => e.to_oauth(),
            RegisterError::Random(_) => OAuthError::new(ErrorCode::ServerError, self.to_string()),
            RegisterError::Store(e) => store_error(e),
        }
    }
}

pub(crate) async fn register(
    State(broker): State<Arc<Broker>>,
    peer: Peer,
    body: Body,
) -> Response {
    match handle(&broker, peer, body).await {
        Ok(json) => json_response(StatusCode::CREATED, json, true),
        Err(e) => {
            tracing::info!(error = %e, "broker: registration refused");
            oauth_error(&e.to_oauth())
        }
    }
}

async fn handle(broker: &Broker, peer: Peer, body: Body) -> Result<String, RegisterError> {
    // The rate limit first: a refused caller costs a counter, nothing more.
    if !broker
        .within_rate(
            "register",
            peer_addr(&peer),
            broker.config.register_rate_limit,
        )
        .await?
    {
        return Err(RegisterError::RateLimited);
    }
    let bytes = axum::body::to_bytes(body, MAX_REGISTRATION_BODY)
        .await
        .map_err(|_| RegisterError::Body)?;
    let metadata = ClientMetadata::from_registration(&bytes)?;
    let now = broker.now();
    let (client, response) = make_registration(metadata, now.as_millis() / 1000)?;
    let record = ClientRecord {
        id: mcpgate_store::ClientId::new(client.client_id.as_str()),
        source: ClientSource::Dcr,
        metadata: serde_json::to_value(&client.metadata).unwrap_or_default(),
        secret_hash: client
            .secret_hash
            .map(|h| TokenHash::from_bytes(*h.as_bytes())),
        created_at: now,
        expires_at: Some(now.plus(broker.config.client_lifetime)),
    };
    broker.store.put_client(&record).await?;
    tracing::info!(client_id = %client.client_id, "broker: client registered");
    // The response holds the secret once; serializing plain data cannot fail.
    Ok(serde_json::to_string(&response).unwrap_or_default())
}

//! Client authentication at `/token` and `/revoke`, per the method the
//! client registered: `none` (public: the client id, no secret),
//! `client_secret_basic` (HTTP Basic, RFC 6749 §2.3.1's form-encoded id
//! and secret) or `client_secret_post` (both in the body). A client that
//! authenticates another way than it registered is refused, and so is one
//! that uses two ways at once.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::params::Params;
use crate::registration::TokenEndpointAuthMethod;
use crate::secret::ClientSecretHash;
use crate::server::{Broker, ClientLookupError, LoadedClient};
use crate::wire::{ErrorCode, OAuthError};

/// Why a client was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    /// No client id anywhere.
    #[error("the client is not identified (client_id or HTTP Basic)")]
    Missing,
    /// A malformed `Authorization` header.
    #[error("the Authorization header is not valid HTTP Basic")]
    MalformedBasic,
    /// Two ways at once, or two different client ids.
    #[error("use exactly one client authentication method")]
    Ambiguous,
    /// The client is unknown.
    #[error(transparent)]
    Lookup(#[from] ClientLookupError),
    /// The method used is not the one registered.
    #[error("this client must authenticate with {0}")]
    WrongMethod(&'static str),
    /// The secret is wrong.
    #[error("client authentication failed")]
    BadSecret,
}

impl ClientAuthError {
    /// The OAuth error: `invalid_client`, or what the lookup says.
    pub fn to_oauth(&self) -> OAuthError {
        match self {
            ClientAuthError::Lookup(ClientLookupError::Store(e)) => crate::server::store_error(e),
            ClientAuthError::Missing
            | ClientAuthError::MalformedBasic
            | ClientAuthError::Ambiguous
            | ClientAuthError::Lookup(_)
            | ClientAuthError::WrongMethod(_)
            | ClientAuthError::BadSecret => {
                OAuthError::new(ErrorCode::InvalidClient, self.to_string())
            }
        }
    }
}

/// The client id and secret from HTTP Basic.
fn basic(headers: &HeaderMap) -> Result<Option<(String, String)>, ClientAuthError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ClientAuthError::MalformedBasic)?;
    let (scheme, rest) = value
        .split_once(' ')
        .ok_or(ClientAuthError::MalformedBasic)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ClientAuthError::MalformedBasic);
    }
    let decoded = STANDARD
        .decode(rest.trim())
        .map_err(|_| ClientAuthError::MalformedBasic)?;
    let text = String::from_utf8(decoded).map_err(|_| ClientAuthError::MalformedBasic)?;
    let (id, secret) = text
        .split_once(':')
        .ok_or(ClientAuthError::MalformedBasic)?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok(Some((unescape(id), unescape(secret))))
}

/// Authenticates the client of a token or revocation request.
pub(crate) async fn authenticate(
    broker: &Broker,
    headers: &HeaderMap,
    params: &Params,
) -> Result<LoadedClient, ClientAuthError> {
    let basic = basic(headers)?;
    let form_id = params.get("client_id");
    let form_secret = params.get("client_secret");
    let (id, used, secret) = match (&basic, form_id, form_secret) {
        (Some((id, secret)), form_id, None) => {
            if form_id.is_some_and(|f| f != id) {
                return Err(ClientAuthError::Ambiguous);
            }
            (
                id.as_str(),
                TokenEndpointAuthMethod::ClientSecretBasic,
                Some(secret.as_str()),
            )
        }
        (Some(_), _, Some(_)) => return Err(ClientAuthError::Ambiguous),
        (None, Some(id), Some(secret)) => {
            (id, TokenEndpointAuthMethod::ClientSecretPost, Some(secret))
        }
        (None, Some(id), None) => (id, TokenEndpointAuthMethod::None, None),
        (None, None, _) => return Err(ClientAuthError::Missing),
    };
    let client = broker.load_client(id).await?;
    let registered = client.metadata.token_endpoint_auth_method();
    if registered != used {
        return Err(ClientAuthError::WrongMethod(registered.as_str()));
    }
    if let Some(secret) = secret {
        let hash = client.secret_hash.ok_or(ClientAuthError::BadSecret)?;
        if !ClientSecretHash::from_bytes(*hash.as_bytes()).verify(secret) {
            return Err(ClientAuthError::BadSecret);
        }
    }
    Ok(client)
}

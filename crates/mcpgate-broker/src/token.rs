//! `POST /token`: the authorization code grant (PKCE checked) and the
//! refresh token grant (rotated on every use). Every check runs on what
//! the store reads back before anything is spent, so a refused request
//! spends nothing; the store's compare-and-set (`redeem_code`,
//! `rotate_refresh`) then decides races. A replayed code revokes the family
//! it bought; a reused refresh token revokes its family.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use mcpgate_store::{
    FamilyId, Redemption, RefreshRecord, Rotation, SealError, StoreError, TokenHash, UpstreamKey,
    UpstreamTokens,
};
use serde_json::json;

use crate::audit::{self, TokenFacts};
use crate::client_auth::{ClientAuthError, authenticate};
use crate::grant::{UpstreamGrant, open};
use crate::mint::Mint;
use crate::params::{ParamError, Params};
use crate::pkce::{CodeChallenge, CodeVerifier, PkceError};
use crate::registration::GrantType;
use crate::secret::{AuthorizationCode, RandomUnavailable, RefreshToken};
use crate::server::{Broker, LoadedClient, json_response, oauth_error, store_error};
use crate::wire::{ErrorCode, OAuthError};

/// Why a token request was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The form is malformed or lacks a parameter.
    #[error(transparent)]
    Params(#[from] ParamError),
    /// Client authentication failed.
    #[error(transparent)]
    Client(#[from] ClientAuthError),
    /// A grant type this server does not serve.
    #[error("grant_type must be authorization_code or refresh_token")]
    UnsupportedGrant,
    /// The client did not register this grant type.
    #[error("this client is not registered for this grant type")]
    GrantNotRegistered,
    /// The code is unknown, expired, or another client's.
    #[error("the authorization code is invalid or expired")]
    BadCode,
    /// The code was used before; what it bought is now revoked.
    #[error("the authorization code was already used; the tokens it issued are revoked")]
    CodeReplayed,
    /// `redirect_uri` differs from the authorization request's.
    #[error("redirect_uri does not match the authorization request")]
    RedirectUri,
    /// `resource` differs from the grant's.
    #[error("the resource does not match the grant")]
    Resource,
    /// PKCE failed.
    #[error(transparent)]
    Pkce(#[from] PkceError),
    /// The refresh token is unknown, expired, revoked, or another client's.
    #[error("the refresh token is invalid, expired or revoked")]
    BadRefresh,
    /// The refresh token was used before; its family is now revoked.
    #[error("the refresh token was already used; its grant is revoked")]
    RefreshReused,
    /// A scope wider than the grant's.
    #[error("the requested scope exceeds the grant")]
    ScopeWidened,
    /// The grant's upstream sign-in is gone (logged out, expired).
    #[error("the sign-in behind this grant has ended; sign in again")]
    GrantEnded,
    /// The sealed grant does not open.
    #[error("the stored grant could not be opened")]
    Seal(#[from] SealError),
    /// No randomness.
    #[error(transparent)]
    Random(#[from] RandomUnavailable),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TokenError {
    /// The OAuth error.
    pub fn to_oauth(&self) -> OAuthError {
        let code = match self {
            TokenError::Params(_) => ErrorCode::InvalidRequest,
            TokenError::Client(e) => return e.to_oauth(),
            TokenError::UnsupportedGrant => ErrorCode::UnsupportedGrantType,
            TokenError::GrantNotRegistered => ErrorCode::UnauthorizedClient,
            TokenError::BadCode
            | TokenError::CodeReplayed
            | TokenError::RedirectUri
            | TokenError::BadRefresh
            | TokenError::RefreshReused
            | TokenError::GrantEnded => ErrorCode::InvalidGrant,
            TokenError::Resource => ErrorCode::InvalidTarget,
            TokenError::Pkce(e) => return e.to_oauth(),
            TokenError::ScopeWidened => ErrorCode::InvalidScope,
            TokenError::Seal(_) | TokenError::Random(_) => ErrorCode::ServerError,
            TokenError::Store(e) => return store_error(e),
        };
        OAuthError::new(code, self.to_string())
    }
}

pub(crate) async fn token(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let mut facts = TokenFacts::default();
    match handle(&broker, &headers, body, &mut facts).await {
        Ok(json) => {
            audit::token(&broker, facts, None, started.elapsed());
            json_response(StatusCode::OK, json, true)
        }
        Err(e) => {
            tracing::info!(error = %e, "broker: token request refused");
            let refusal = e.to_oauth();
            audit::token(&broker, facts, Some(&refusal), started.elapsed());
            oauth_error(&refusal)
        }
    }
}

async fn handle(
    broker: &Broker,
    headers: &HeaderMap,
    body: Body,
    facts: &mut TokenFacts,
) -> Result<String, TokenError> {
    let params = Params::from_body(body).await?;
    let grant_type = params.require("grant_type")?;
    let grant = match grant_type {
        "authorization_code" => GrantType::AuthorizationCode,
        "refresh_token" => GrantType::RefreshToken,
        _ => return Err(TokenError::UnsupportedGrant),
    };
    facts.grant_type = Some(match grant {
        GrantType::AuthorizationCode => "authorization_code",
        GrantType::RefreshToken => "refresh_token",
    });
    let client = authenticate(broker, headers, &params).await?;
    facts.client_id = Some(client.id.to_string());
    if !client.metadata.grant_types().contains(&grant) {
        return Err(TokenError::GrantNotRegistered);
    }
    match grant {
        GrantType::AuthorizationCode => code_grant(broker, &client, &params, facts).await,
        GrantType::RefreshToken => refresh_grant(broker, &client, &params, facts).await,
    }
}

async fn code_grant(
    broker: &Broker,
    client: &LoadedClient,
    params: &Params,
    facts: &mut TokenFacts,
) -> Result<String, TokenError> {
    let code = AuthorizationCode::presented(params.require("code")?);
    let hash = TokenHash::from_bytes(*code.digest().as_bytes());
    let state = broker
        .store
        .get_code(&hash)
        .await?
        .ok_or(TokenError::BadCode)?;
    let record = state.record;
    if record.client_id.as_str() != client.id.as_str() {
        return Err(TokenError::BadCode);
    }
    facts.oid = Some(record.subject.to_string());
    if let Some(bought) = state.redeemed_by {
        broker.store.revoke_family(&bought).await?;
        tracing::warn!(client_id = %client.id, family = %bought, "broker: authorization code replayed; family revoked");
        return Err(TokenError::CodeReplayed);
    }
    if params.require("redirect_uri")? != record.redirect_uri {
        return Err(TokenError::RedirectUri);
    }
    if let Some(r) = params.get("resource")
        && Some(r) != record.resource.as_deref()
    {
        return Err(TokenError::Resource);
    }
    let verifier = CodeVerifier::parse(params.get("code_verifier"))?;
    // The stored challenge was checked at /authorize; re-wrapped to verify.
    let challenge = CodeChallenge::parse(Some(&record.code_challenge), Some("S256"))?;
    challenge.verify(&verifier)?;
    let upstream = record.upstream.clone().ok_or(TokenError::GrantEnded)?;
    let (grant, _) = load_grant(broker, &upstream).await?;
    facts.user(&grant.identity);

    let family = FamilyId::random();
    match broker.store.redeem_code(&hash, &family).await? {
        Redemption::Redeemed => {}
        Redemption::AlreadyRedeemed { family: bought } => {
            broker.store.revoke_family(&bought).await?;
            return Err(TokenError::CodeReplayed);
        }
        Redemption::Unknown => return Err(TokenError::BadCode),
    }
    let resource = record
        .resource
        .clone()
        .unwrap_or_else(|| broker.config.resources[0].clone());
    let refresh = if client
        .metadata
        .grant_types()
        .contains(&GrantType::RefreshToken)
    {
        let token = RefreshToken::generate()?;
        let now = broker.now();
        broker
            .store
            .put_refresh(
                &TokenHash::from_bytes(*token.digest().as_bytes()),
                &RefreshRecord {
                    family: family.clone(),
                    client_id: record.client_id.clone(),
                    subject: record.subject.clone(),
                    scopes: record.scopes.clone(),
                    resource: Some(resource.clone()),
                    upstream: Some(upstream),
                    issued_at: now,
                    expires_at: now.plus(broker.config.refresh_token_lifetime),
                },
            )
            .await?;
        Some(token)
    } else {
        None
    };
    tracing::info!(client_id = %client.id, family = %family, "broker: code redeemed");
    respond(
        broker,
        client,
        &grant,
        &record.scopes,
        &resource,
        &family,
        refresh,
    )
}

async fn refresh_grant(
    broker: &Broker,
    client: &LoadedClient,
    params: &Params,
    facts: &mut TokenFacts,
) -> Result<String, TokenError> {
    let presented = RefreshToken::presented(params.require("refresh_token")?);
    let hash = TokenHash::from_bytes(*presented.digest().as_bytes());
    let state = broker
        .store
        .get_refresh(&hash)
        .await?
        .ok_or(TokenError::BadRefresh)?;
    let record = state.record;
    if record.client_id.as_str() != client.id.as_str() || state.family_revoked {
        return Err(TokenError::BadRefresh);
    }
    facts.oid = Some(record.subject.to_string());
    // Narrowing is allowed for this access token; the grant keeps its
    // scopes (RFC 6749 §6), so the new refresh token carries them all.
    let scopes: Vec<String> = match params.get("scope") {
        None => record.scopes.clone(),
        Some(asked) => {
            let asked: Vec<String> = asked.split(' ').map(str::to_owned).collect();
            if !asked.iter().all(|s| record.scopes.contains(s)) {
                return Err(TokenError::ScopeWidened);
            }
            asked
        }
    };
    if let Some(r) = params.get("resource")
        && Some(r) != record.resource.as_deref()
    {
        return Err(TokenError::Resource);
    }
    let upstream = record.upstream.clone().ok_or(TokenError::GrantEnded)?;
    // A reused token goes to the store anyway: its rotation revokes the
    // family, which is the point.
    let grant = if state.used {
        None
    } else {
        Some(load_grant(broker, &upstream).await?)
    };
    let new = RefreshToken::generate()?;
    let now = broker.now();
    let new_record = RefreshRecord {
        issued_at: now,
        expires_at: now.plus(broker.config.refresh_token_lifetime),
        ..record.clone()
    };
    let rotation = broker
        .store
        .rotate_refresh(
            &hash,
            &TokenHash::from_bytes(*new.digest().as_bytes()),
            &new_record,
        )
        .await?;
    match rotation {
        Rotation::Rotated => {}
        Rotation::Reuse { family } => {
            tracing::warn!(client_id = %client.id, family = %family, "broker: refresh token reused; family revoked");
            return Err(TokenError::RefreshReused);
        }
        Rotation::Revoked { .. } | Rotation::Unknown => return Err(TokenError::BadRefresh),
    }
    let (grant, stored) = grant.ok_or(TokenError::RefreshReused)?;
    facts.user(&grant.identity);
    // The upstream grant lives as long as the refresh token that uses it.
    broker
        .store
        .put_upstream(
            &upstream,
            &UpstreamTokens {
                expires_at: new_record.expires_at.max(stored.expires_at),
                ..stored
            },
        )
        .await?;
    let resource = record
        .resource
        .clone()
        .unwrap_or_else(|| broker.config.resources[0].clone());
    respond(
        broker,
        client,
        &grant,
        &scopes,
        &resource,
        &record.family,
        Some(new),
    )
}

/// The sealed upstream grant: who the user is. Gone means the sign-in
/// ended (logout), and no new token is minted for it.
async fn load_grant(
    broker: &Broker,
    key: &UpstreamKey,
) -> Result<(UpstreamGrant, UpstreamTokens), TokenError> {
    let stored = broker
        .store
        .get_upstream(key)
        .await?
        .ok_or(TokenError::GrantEnded)?;
    let grant = open(&broker.cipher, key.as_str().as_bytes(), &stored.sealed)?;
    Ok((grant, stored))
}

fn respond(
    broker: &Broker,
    client: &LoadedClient,
    grant: &UpstreamGrant,
    scopes: &[String],
    resource: &str,
    family: &FamilyId,
    refresh: Option<RefreshToken>,
) -> Result<String, TokenError> {
    let minted = broker.mint(&Mint {
        identity: &grant.identity,
        client_id: client.id.as_str(),
        scopes,
        resource,
        family: family.as_str(),
    })?;
    let mut body = json!({
        "access_token": minted.token,
        "token_type": "Bearer",
        "expires_in": minted.expires_in,
        "scope": scopes.join(" "),
    });
    if let Some(r) = refresh {
        body["refresh_token"] = json!(r.secret());
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_rfc_6749_codes_and_never_echo_a_token() {
        let cases = [
            (
                TokenError::UnsupportedGrant,
                ErrorCode::UnsupportedGrantType,
            ),
            (
                TokenError::GrantNotRegistered,
                ErrorCode::UnauthorizedClient,
            ),
            (TokenError::CodeReplayed, ErrorCode::InvalidGrant),
            (TokenError::RedirectUri, ErrorCode::InvalidGrant),
            (TokenError::RefreshReused, ErrorCode::InvalidGrant),
            (TokenError::Resource, ErrorCode::InvalidTarget),
            (TokenError::ScopeWidened, ErrorCode::InvalidScope),
            (
                TokenError::Pkce(PkceError::Mismatch),
                ErrorCode::InvalidGrant,
            ),
            (
                TokenError::Store(StoreError::Full(mcpgate_store::Kind::Code)),
                ErrorCode::TemporarilyUnavailable,
            ),
            (
                TokenError::Client(ClientAuthError::BadSecret),
                ErrorCode::InvalidClient,
            ),
        ];
        for (e, code) in cases {
            let o = e.to_oauth();
            assert_eq!(o.error, code, "{e}");
            assert!(!o.error_description.is_empty());
        }
        assert_eq!(
            TokenError::Resource.to_oauth().status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            TokenError::Client(ClientAuthError::Missing)
                .to_oauth()
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
}

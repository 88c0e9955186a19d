//! Acting for the user downstream: [`Broker::upstream_token_for`] opens the
//! upstream grant kept for a (user, MCP client) pair, refreshes it at the
//! upstream when it has expired (sealing the new tokens back), and
//! exchanges the user's upstream token On-Behalf-Of for the downstream
//! scopes asked (Graph `User.Read`). The MCP client's own token is never
//! sent anywhere: it only names the grant.

use mcpgate_client::secret::AccessToken;
use mcpgate_store::{SealError, StoreError, UpstreamKey, UpstreamTokens};
use mcpgate_token::Principal;

use crate::grant::{UpstreamGrant, grant_key, open, seal};
use crate::server::Broker;
use crate::upstream::UpstreamError;

/// How long before its expiry an upstream token is refreshed.
const REFRESH_MARGIN_SECS: u64 = 60;

/// A token for a downstream API, obtained for the user.
#[derive(Debug)]
pub struct DownstreamToken {
    /// The access token (prints as `[redacted]`).
    pub access_token: AccessToken,
    /// Its expiry, Unix seconds, when the upstream said.
    pub expires_at: Option<u64>,
}

/// Why no downstream token could be had.
#[derive(Debug, thiserror::Error)]
pub enum DownstreamError {
    /// The caller's token was not issued by this broker, or names no user
    /// or client.
    #[error("the caller's token was not issued by this server's sign-in")]
    NotBrokerToken,
    /// No upstream grant is kept for this user and client (signed out,
    /// expired, or never signed in here).
    #[error("this server holds no sign-in for the user; sign in again")]
    NoGrant,
    /// The upstream grant has expired and holds no refresh token.
    #[error("the user's sign-in has expired and cannot be renewed; sign in again")]
    Expired,
    /// The upstream refused the refresh or the exchange, or could not be
    /// reached.
    #[error("the identity provider gave no token for the user")]
    Upstream(#[source] UpstreamError),
    /// The sealed grant does not open.
    #[error("the stored sign-in could not be opened")]
    Seal(#[from] SealError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DownstreamError {
    /// The claims the user must sign in again satisfying, when the
    /// upstream refused the refresh or the exchange for want of them.
    pub fn claims_challenge(&self) -> Option<mcpgate_client::claims::Claims> {
        match self {
            DownstreamError::Upstream(e) => e.claims_challenge(),
            DownstreamError::NotBrokerToken
            | DownstreamError::NoGrant
            | DownstreamError::Expired
            | DownstreamError::Seal(_)
            | DownstreamError::Store(_) => None,
        }
    }

    /// Whether the user must sign in again (as opposed to an outage).
    pub fn needs_sign_in(&self) -> bool {
        match self {
            DownstreamError::NotBrokerToken
            | DownstreamError::NoGrant
            | DownstreamError::Expired => true,
            DownstreamError::Upstream(UpstreamError::Flow(
                mcpgate_client::error::FlowError::Refused(_),
            )) => true,
            DownstreamError::Upstream(_) | DownstreamError::Seal(_) | DownstreamError::Store(_) => {
                false
            }
        }
    }
}

impl Broker {
    /// A token for `scopes` (e.g. `https://graph.microsoft.com/User.Read`)
    /// for the user `caller` stands for, where `caller` is the principal of
    /// a token this broker issued (validated by the MCP server). The grant
    /// is found from the token's tenant, object id and client (`azp`).
    pub async fn upstream_token_for(
        &self,
        caller: &Principal,
        scopes: &[String],
    ) -> Result<DownstreamToken, DownstreamError> {
        if caller.issuer != self.config.issuer.as_str() {
            return Err(DownstreamError::NotBrokerToken);
        }
        let oid = caller
            .object_id
            .as_deref()
            .ok_or(DownstreamError::NotBrokerToken)?;
        let client = caller
            .client_app_id
            .as_deref()
            .ok_or(DownstreamError::NotBrokerToken)?;
        let key = grant_key(caller.tenant_id.as_deref(), oid, client);
        self.upstream_token_for_grant(&key, scopes).await
    }

    /// The same, for a grant named by its key.
    pub async fn upstream_token_for_grant(
        &self,
        key: &UpstreamKey,
        scopes: &[String],
    ) -> Result<DownstreamToken, DownstreamError> {
        let stored = self
            .store
            .get_upstream(key)
            .await?
            .ok_or(DownstreamError::NoGrant)?;
        let mut grant: UpstreamGrant = open(&self.cipher, key.as_str().as_bytes(), &stored.sealed)?;
        let now = self.now_secs();
        if grant
            .expires_at
            .is_some_and(|exp| exp <= now + REFRESH_MARGIN_SECS)
        {
            let refresh = grant
                .refresh_token
                .as_deref()
                .ok_or(DownstreamError::Expired)?;
            let fresh = self
                .upstream
                .refresh(refresh)
                .await
                .map_err(DownstreamError::Upstream)?;
            grant.access_token = fresh.access_token.secret().to_owned();
            grant.expires_at = fresh.expires_at;
            if let Some(r) = fresh.refresh_token {
                grant.refresh_token = Some(r.secret().to_owned());
            }
            let sealed = seal(&self.cipher, key.as_str().as_bytes(), &grant)?;
            self.store
                .put_upstream(
                    key,
                    &UpstreamTokens {
                        sealed,
                        expires_at: stored.expires_at,
                    },
                )
                .await?;
            tracing::info!(oid = %grant.identity.oid, "broker: upstream grant refreshed");
        }
        let obo = self
            .upstream
            .on_behalf_of(&grant.access_token, scopes)
            .await
            .map_err(DownstreamError::Upstream)?;
        Ok(DownstreamToken {
            access_token: obo.access_token,
            expires_at: obo.expires_at,
        })
    }
}

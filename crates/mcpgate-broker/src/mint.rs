//! Minting the broker's access tokens: RS256 JWTs signed by the key ring,
//! in the claim shapes `mcpgate-token`'s validator reads (`scp` space
//! separated, `azp` the client, `oid`/`tid` the user, `ver` 2.0).

use serde_json::json;

use crate::config::OFFLINE_ACCESS;
use crate::grant::Identity;
use crate::secret::{RandomUnavailable, random_token};
use crate::server::Broker;

/// What one access token is for.
#[derive(Debug)]
pub(crate) struct Mint<'a> {
    pub identity: &'a Identity,
    pub client_id: &'a str,
    pub scopes: &'a [String],
    pub resource: &'a str,
    /// The refresh family (the grant), as `sid`.
    pub family: &'a str,
}

/// A minted token and its lifetime in seconds.
pub(crate) struct Minted {
    pub token: String,
    pub expires_in: u64,
}

impl Broker {
    pub(crate) fn mint(&self, m: &Mint<'_>) -> Result<Minted, RandomUnavailable> {
        let now = self.now_secs();
        let lifetime = self.config.access_token_lifetime.as_secs();
        // offline_access is about refresh tokens, not what this token may do.
        let scp: Vec<&str> = m
            .scopes
            .iter()
            .map(String::as_str)
            .filter(|s| *s != OFFLINE_ACCESS)
            .collect();
        let mut claims = json!({
            "iss": self.config.issuer.as_str(),
            "aud": m.resource,
            "sub": m.identity.oid,
            "oid": m.identity.oid,
            "scp": scp.join(" "),
            "azp": m.client_id,
            "client_id": m.client_id,
            "ver": "2.0",
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": random_token(16)?,
            "sid": m.family,
        });
        for (name, value) in [
            ("tid", &m.identity.tid),
            ("name", &m.identity.name),
            ("preferred_username", &m.identity.preferred_username),
        ] {
            if let Some(v) = value {
                claims[name] = json!(v);
            }
        }
        Ok(Minted {
            token: self.keys.sign(&claims, None),
            expires_in: lifetime,
        })
    }
}

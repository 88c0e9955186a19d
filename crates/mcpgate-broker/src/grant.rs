//! What the broker keeps for a grant between requests, sealed: the
//! upstream tokens it bought for the user, who the user is, and, while a
//! sign-in is pending, its own PKCE verifier toward the upstream. Every
//! value is sealed with the [`TokenCipher`] to the key of the record that
//! holds it, so the store never sees a token and a copied ciphertext opens
//! nowhere else.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcpgate_store::{SealError, Sealed, TokenCipher, TokenHash, UpstreamKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Who signed in upstream, from the upstream access token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The user's object id: the stable subject of every token minted.
    pub oid: String,
    /// The tenant.
    pub tid: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Sign-in name.
    pub preferred_username: Option<String>,
}

/// Why the upstream token names nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The access token is not a JWT with a JSON payload.
    #[error("the upstream access token is not a JWT")]
    NotJwt,
    /// It has neither `oid` nor `sub`.
    #[error("the upstream access token names no user (no oid or sub)")]
    NoSubject,
}

impl Identity {
    /// Reads the user from the upstream access token. Its signature is not
    /// checked here: the token came straight from the upstream's token
    /// endpoint over TLS in answer to the broker's own authenticated
    /// request (OpenID Connect Core §3.1.3.7 lets TLS stand in for the
    /// signature in that case), and it is never accepted from anyone else.
    pub fn from_access_token(token: &str) -> Result<Self, IdentityError> {
        let payload = token.split('.').nth(1).ok_or(IdentityError::NotJwt)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| IdentityError::NotJwt)?;
        let claims: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| IdentityError::NotJwt)?;
        let text = |name: &str| {
            claims[name]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let oid = text("oid")
            .or_else(|| text("sub"))
            .ok_or(IdentityError::NoSubject)?;
        Ok(Self {
            oid,
            tid: text("tid"),
            name: text("name"),
            preferred_username: text("preferred_username").or_else(|| text("upn")),
        })
    }

    /// What the consent page calls the user.
    pub fn display(&self) -> &str {
        self.preferred_username
            .as_deref()
            .or(self.name.as_deref())
            .unwrap_or(&self.oid)
    }
}

/// The upstream grant of one (user, MCP client) pair, as sealed in the
/// store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct UpstreamGrant {
    pub identity: Identity,
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Unix seconds; `None` if the upstream did not say.
    pub expires_at: Option<u64>,
}

/// What a pending record carries sealed, by stage.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum PendingSecret {
    /// Sent upstream, awaiting `/auth/callback`.
    Upstream { verifier: String, nonce: String },
    /// Signed in, awaiting the consent form.
    Consent { grant: UpstreamGrant },
}

/// The store key of the upstream grant of `identity` through `client_id`:
/// one per (user, client), derived rather than random so that the MCP
/// server finds it from a validated token's claims alone (tenant, object
/// id, `azp`). A newer sign-in of the same pair replaces it.
pub fn grant_key(tid: Option<&str>, oid: &str, client_id: &str) -> UpstreamKey {
    let mut h = Sha256::new();
    for part in [tid.unwrap_or(""), oid, client_id] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    UpstreamKey::new(format!("grant-{hex}"))
}

/// The pending-record key for a value sent out, separated by stage so that
/// an upstream `state` cannot be replayed as a consent id or back.
pub(crate) fn pending_key(stage: &str, value: &str) -> TokenHash {
    let mut input = Vec::with_capacity(stage.len() + 1 + value.len());
    input.extend_from_slice(stage.as_bytes());
    input.push(0);
    input.extend_from_slice(value.as_bytes());
    TokenHash::of(&input)
}

pub(crate) fn seal<T: Serialize>(
    cipher: &TokenCipher,
    record_key: &[u8],
    value: &T,
) -> Result<Sealed, SealError> {
    // Plain data serializes.
    let plain = serde_json::to_vec(value).unwrap_or_default();
    cipher.seal(record_key, &plain)
}

pub(crate) fn open<T: for<'de> Deserialize<'de>>(
    cipher: &TokenCipher,
    record_key: &[u8],
    sealed: &Sealed,
) -> Result<T, SealError> {
    let plain = cipher.open(record_key, sealed)?;
    serde_json::from_slice(plain.expose()).map_err(|_| SealError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_keys_separate_users_tenants_and_clients() {
        let a = grant_key(Some("t"), "u", "c");
        assert_eq!(a, grant_key(Some("t"), "u", "c"));
        assert_ne!(a, grant_key(Some("t"), "u", "d"));
        assert_ne!(a, grant_key(Some("x"), "u", "c"));
        assert_ne!(
            grant_key(Some("ab"), "c", "d"),
            grant_key(Some("a"), "bc", "d")
        );
    }

    #[test]
    fn identity_from_claims() {
        let payload = URL_SAFE_NO_PAD
            .encode(r#"{"oid":"o1","tid":"t1","name":"Alice","preferred_username":"alice@x"}"#);
        let id = Identity::from_access_token(&format!("h.{payload}.s")).expect("identity");
        assert_eq!(id.oid, "o1");
        assert_eq!(id.display(), "alice@x");
        let none = URL_SAFE_NO_PAD.encode(r#"{"tid":"t1"}"#);
        assert_eq!(
            Identity::from_access_token(&format!("h.{none}.s")),
            Err(IdentityError::NoSubject)
        );
        assert_eq!(
            Identity::from_access_token("opaque"),
            Err(IdentityError::NotJwt)
        );
    }
}

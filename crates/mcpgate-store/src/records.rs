//! What the store holds: plain typed records, and the newtypes that key them.
//!
//! Secrets never appear here as raw values: one-time codes, refresh tokens
//! and the broker's `state` are keyed by their SHA-256 ([`TokenHash`]), and
//! upstream tokens are held as AEAD ciphertext ([`Sealed`]).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::seal::Sealed;

/// A point in time as the store writes it: milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The timestamp of `time`; a time before the epoch reads as the epoch.
    pub fn from_system(time: SystemTime) -> Self {
        let ms = time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Self(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// The timestamp `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The same instant as a [`SystemTime`].
    pub fn to_system(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }

    /// This instant moved `by` later, saturating.
    pub fn plus(self, by: Duration) -> Self {
        Self(
            self.0
                .saturating_add(u64::try_from(by.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// The time left from `now` until this instant; `None` once it has come.
    pub fn remaining_from(self, now: Timestamp) -> Option<Duration> {
        (self.0 > now.0).then(|| Duration::from_millis(self.0 - now.0))
    }
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The value.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// An OAuth client id: random for DCR, a URL for CIMD, configured for static clients.
    ClientId
);
id_type!(
    /// A refresh-token family: every token rotated from one authorization code.
    FamilyId
);
id_type!(
    /// The user a grant was made for (the upstream `oid`/`sub`).
    Subject
);
id_type!(
    /// Who owns an MCP session (the identity the broker or validator derived).
    IdentityKey
);
id_type!(
    /// Where a grant's sealed upstream tokens are kept.
    UpstreamKey
);
id_type!(
    /// An MCP session id (`Mcp-Session-Id`); an identifier, not a credential.
    SessionId
);

impl FamilyId {
    /// A fresh family id: 128 random bits, hex.
    pub fn random() -> Self {
        Self(random_id())
    }
}

impl UpstreamKey {
    /// A fresh key for a grant's upstream tokens: 128 random bits, hex.
    pub fn random() -> Self {
        Self(random_id())
    }
}

pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // No safe way on without the system RNG; aws-lc aborts the same way.
    #[allow(clippy::expect_used)]
    aws_lc_rs::rand::fill(&mut bytes).expect("system random generator");
    hex(&bytes)
}

/// The SHA-256 of a secret (a code, a refresh token, a `state`): what the
/// store keys them by, so that a copy of the store yields no usable secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash of `secret`.
    pub fn of(secret: &[u8]) -> Self {
        Self(Sha256::digest(secret).into())
    }

    /// A hash already computed.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The hash's bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, as the backends key by it.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is safe to print; eight bytes are enough to tell two apart.
        write!(f, "TokenHash({}…)", &self.to_hex()[..16])
    }
}

impl Serialize for TokenHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut out = [0u8; 32];
        let digits = text.as_bytes();
        if digits.len() != 64 {
            return Err(serde::de::Error::custom("a token hash is 64 hex digits"));
        }
        for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(serde::de::Error::custom)?;
            *byte = u8::from_str_radix(pair, 16)
                .map_err(|_| serde::de::Error::custom("a token hash is 64 hex digits"))?;
        }
        Ok(Self(out))
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// How a client came to be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientSource {
    /// Dynamic Client Registration (RFC 7591).
    Dcr,
    /// A Client ID Metadata Document fetched from the client id's URL.
    Cimd,
    /// Configured by the operator.
    Static,
}

/// A registered client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientRecord {
    /// The client id.
    pub id: ClientId,
    /// How it was registered.
    pub source: ClientSource,
    /// Its metadata as validated by the broker (RFC 7591 field names).
    pub metadata: serde_json::Value,
    /// The SHA-256 of its client secret, for a confidential DCR client.
    pub secret_hash: Option<TokenHash>,
    /// When it was registered.
    pub created_at: Timestamp,
    /// When the registration lapses (a CIMD cache entry, an unused DCR
    /// client); `None` keeps it until deleted.
    pub expires_at: Option<Timestamp>,
}

/// What the broker remembers between sending the user upstream and the
/// upstream's callback; keyed by the hash of the `state` it sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingAuthorization {
    /// The MCP client asking.
    pub client_id: ClientId,
    /// Its redirect URI, already matched against the registration.
    pub redirect_uri: String,
    /// The client's own `state`, returned to it unchanged.
    pub client_state: Option<String>,
    /// The client's PKCE S256 challenge.
    pub code_challenge: String,
    /// The scopes asked for.
    pub scopes: Vec<String>,
    /// The RFC 8707 resource the grant is for.
    pub resource: Option<String>,
    /// Whatever the broker must keep secret across the round trip (its PKCE
    /// verifier and nonce toward the upstream), sealed to this record's key.
    pub sealed: Option<Sealed>,
}

/// An authorization code issued to an MCP client; keyed by the code's hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeRecord {
    /// The client it was issued to.
    pub client_id: ClientId,
    /// The redirect URI it was sent to.
    pub redirect_uri: String,
    /// The client's PKCE S256 challenge.
    pub code_challenge: String,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// The resource the grant is bound to.
    pub resource: Option<String>,
    /// The signed-in user.
    pub subject: Subject,
    /// Where the upstream tokens bought by this sign-in are kept.
    pub upstream: Option<UpstreamKey>,
    /// When it was issued.
    pub issued_at: Timestamp,
}

/// A code as read back: the record and whether it was already redeemed.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeState {
    /// The code's record.
    pub record: CodeRecord,
    /// The family its redemption started, once redeemed.
    pub redeemed_by: Option<FamilyId>,
}

/// The outcome of [`Store::redeem_code`](crate::Store::redeem_code).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Redemption {
    /// This call redeemed the code for the given family.
    Redeemed,
    /// The code was redeemed before: a replay. The caller revokes `family`.
    AlreadyRedeemed {
        /// The family the first redemption started.
        family: FamilyId,
    },
    /// No such code, or it expired.
    Unknown,
}

/// A refresh token; keyed by the token's hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshRecord {
    /// Its family. On rotation the new token joins the old one's family,
    /// whatever this field says.
    pub family: FamilyId,
    /// The client it was issued to.
    pub client_id: ClientId,
    /// The user.
    pub subject: Subject,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// The resource the grant is bound to.
    pub resource: Option<String>,
    /// Where the upstream tokens for this grant are kept.
    pub upstream: Option<UpstreamKey>,
    /// When it was issued.
    pub issued_at: Timestamp,
    /// When it stops being accepted; the store forgets it then.
    pub expires_at: Timestamp,
}

/// A refresh token as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshState {
    /// The token's record.
    pub record: RefreshRecord,
    /// Whether it was already rotated.
    pub used: bool,
    /// Whether its family was revoked.
    pub family_revoked: bool,
}

/// The outcome of [`Store::rotate_refresh`](crate::Store::rotate_refresh).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Rotation {
    /// The old token is now used and the new one stored.
    Rotated,
    /// The old token was used before: the family is now revoked.
    Reuse {
        /// The revoked family.
        family: FamilyId,
    },
    /// The family was revoked earlier; nothing changed.
    Revoked {
        /// The revoked family.
        family: FamilyId,
    },
    /// No such token, or it expired; nothing changed.
    Unknown,
}

/// A user's consent to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentRecord {
    /// The scopes consented to.
    pub scopes: Vec<String>,
    /// When consent was given.
    pub granted_at: Timestamp,
    /// When it must be asked again.
    pub expires_at: Timestamp,
}

/// The upstream (Entra) tokens of one grant, sealed with
/// [`TokenCipher`](crate::TokenCipher) to their [`UpstreamKey`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamTokens {
    /// The ciphertext.
    pub sealed: Sealed,
    /// When the store may forget them (the upstream refresh token's lifetime).
    pub expires_at: Timestamp,
}

/// The pin of one upstream tool (gateway mode): the definition first
/// approved, and a changed one waiting for approval. Keyed by
/// (`upstream`, `tool`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRecord {
    /// The upstream MCP server, as configured.
    pub upstream: String,
    /// The tool's name.
    pub tool: String,
    /// The digest of the pinned definition.
    pub digest: String,
    /// The pinned definition (its canonical JSON).
    pub definition: String,
    /// A definition seen since that differs from the pin.
    pub pending: Option<PendingPin>,
    /// When the tool was first seen.
    pub first_seen: Timestamp,
    /// When the pin (or its pending change) last changed.
    pub changed_at: Timestamp,
}

/// A changed tool definition not yet approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingPin {
    /// Its digest.
    pub digest: String,
    /// The definition (its canonical JSON).
    pub definition: String,
}

/// What the store keeps for an MCP session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    pub owner: IdentityKey,
}

/// What another replica needs to resume an MCP session, kept beside its
/// owner under [`session_state_key`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SessionStateRecord {
    pub state: String,
}

/// The key a session's state is kept under, among the sessions.
pub(crate) fn session_state_key(id: &SessionId) -> String {
    format!("state:{}", id.as_str())
}

/// A code as the backends keep it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredCode {
    pub record: CodeRecord,
    pub redeemed_by: Option<FamilyId>,
}

/// A refresh token as the backends keep it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredRefresh {
    pub record: RefreshRecord,
    pub used: bool,
}

/// A family's state; it lives as long as its longest-lived token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FamilyState {
    pub revoked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hash_is_sha256_hex() {
        let h = TokenHash::of(b"abc");
        assert_eq!(
            h.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(format!("{h:?}"), "TokenHash(ba7816bf8f01cfea…)");
    }

    #[test]
    fn timestamps_count_milliseconds() {
        let t = Timestamp::from_millis(1_000);
        assert_eq!(t.plus(Duration::from_millis(500)).as_millis(), 1_500);
        assert_eq!(
            t.remaining_from(Timestamp::from_millis(400)),
            Some(Duration::from_millis(600))
        );
        assert_eq!(t.remaining_from(t), None);
        assert_eq!(Timestamp::from_system(t.to_system()), t);
    }

    #[test]
    fn family_ids_are_random() {
        assert_ne!(FamilyId::random(), FamilyId::random());
        assert_eq!(FamilyId::random().as_str().len(), 32);
    }
}

//! Who the caller is, told to an HTTP upstream without their token: signed
//! identity headers.
//!
//! Each request carries the user's identifiers and a timestamp in
//! `X-MCPGate-*` headers, and `X-MCPGate-Signature: v1=<base64url>`, an
//! HMAC-SHA256 under a secret the gateway and the upstream share, over
//!
//! ```text
//! v1\n<timestamp>\n<oid>\n<upn>\n<tid>\n<client app>\n<hex SHA-256 of the body>
//! ```
//!
//! (an absent value is empty). The upstream recomputes it, compares in
//! constant time, and refuses a timestamp more than a few minutes off, so a
//! captured request cannot be replayed for long or with another body. The
//! caller's token never leaves the gateway.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::{digest, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderName, HeaderValue};
use mcpgate_token::Principal;

/// The signing secret shared with an upstream. Its `Debug` shows nothing.
pub struct IdentityKey(hmac::Key);

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentityKey(<redacted>)")
    }
}

/// The secret is too short to sign with.
#[derive(Debug, thiserror::Error)]
#[error("the identity-header secret must be at least 32 bytes (it was {0})")]
pub struct ShortSecret(pub usize);

impl IdentityKey {
    /// A key from the shared secret (at least 32 bytes).
    pub fn new(secret: &[u8]) -> Result<Self, ShortSecret> {
        if secret.len() < 32 {
            return Err(ShortSecret(secret.len()));
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }
}

/// Header names, lower-case as HTTP/2 sends them.
pub const OID: &str = "x-mcpgate-user-oid";
/// The sign-in name.
pub const UPN: &str = "x-mcpgate-user-upn";
/// The tenant.
pub const TID: &str = "x-mcpgate-user-tid";
/// The client application.
pub const CLIENT_APP: &str = "x-mcpgate-client-app";
/// Seconds since the epoch when signed.
pub const TIMESTAMP: &str = "x-mcpgate-timestamp";
/// `v1=<base64url HMAC-SHA256>`.
pub const SIGNATURE: &str = "x-mcpgate-signature";

/// One session's caller, ready to be signed onto each request.
#[derive(Debug, Clone)]
pub struct Identity {
    values: [String; 4],
}

impl Identity {
    /// The identity of `caller` (`None` with authentication off: every
    /// value empty, still signed, so the upstream knows it came through the
    /// gateway).
    pub fn of(caller: Option<&Principal>) -> Self {
        let text = |v: Option<&String>| v.map(|s| header_safe(s)).unwrap_or_default();
        let values = match caller {
            Some(p) => [
                text(p.object_id.as_ref().or(Some(&p.subject))),
                text(p.preferred_username.as_ref()),
                text(p.tenant_id.as_ref()),
                text(p.client_app_id.as_ref()),
            ],
            None => Default::default(),
        };
        Self { values }
    }

    /// The headers for a request whose body is `body`, signed at `now`.
    pub fn headers(
        &self,
        key: &IdentityKey,
        body: &[u8],
        now: SystemTime,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let timestamp = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string();
        let signature = sign(key, &timestamp, &self.values, body);
        let mut headers = Vec::with_capacity(6);
        for (name, value) in [OID, UPN, TID, CLIENT_APP].into_iter().zip(&self.values) {
            if !value.is_empty()
                && let Ok(value) = HeaderValue::from_str(value)
            {
                headers.push((HeaderName::from_static(name), value));
            }
        }
        if let Ok(value) = HeaderValue::from_str(&timestamp) {
            headers.push((HeaderName::from_static(TIMESTAMP), value));
        }
        if let Ok(value) = HeaderValue::from_str(&format!("v1={signature}")) {
            headers.push((HeaderName::from_static(SIGNATURE), value));
        }
        headers
    }
}

/// The signature of one request, as an upstream recomputes it.
pub fn sign(key: &IdentityKey, timestamp: &str, values: &[String; 4], body: &[u8]) -> String {
    let body_hash = digest::digest(&digest::SHA256, body);
    let hex: String = body_hash
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let canonical = format!(
        "v1\n{timestamp}\n{}\n{}\n{}\n{}\n{hex}",
        values[0], values[1], values[2], values[3]
    );
    URL_SAFE_NO_PAD.encode(hmac::sign(&key.0, canonical.as_bytes()).as_ref())
}

// Identifiers are ASCII in practice; anything else (or a control
// character, which could split a header) is percent-encoded.
fn header_safe(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> IdentityKey {
        IdentityKey::new(&[7u8; 32]).expect("key")
    }

    #[test]
    fn a_short_secret_is_refused_and_a_key_never_shows() {
        assert!(IdentityKey::new(b"short").is_err());
        assert_eq!(format!("{:?}", key()), "IdentityKey(<redacted>)");
    }

    #[test]
    fn the_signature_covers_the_body_and_the_time() {
        let id = Identity {
            values: [
                "oid-1".into(),
                "alice@contoso.com".into(),
                "tid-1".into(),
                "app-1".into(),
            ],
        };
        let at = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let headers = id.headers(&key(), b"{}", at);
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .and_then(|(_, v)| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(get(OID), "oid-1");
        assert_eq!(get(TIMESTAMP), "1700000000");
        let expected = sign(&key(), "1700000000", &id.values, b"{}");
        assert_eq!(get(SIGNATURE), format!("v1={expected}"));
        assert_ne!(expected, sign(&key(), "1700000000", &id.values, b"{ }"));
        assert_ne!(expected, sign(&key(), "1700000001", &id.values, b"{}"));
    }

    #[test]
    fn values_cannot_break_a_header() {
        assert_eq!(header_safe("Zoë\r\nX-Evil: 1"), "Zo%C3%AB%0D%0AX-Evil:%201");
    }
}

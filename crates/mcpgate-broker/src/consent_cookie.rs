//! The consent cookie: proof that this browser's user approved this client
//! for these scopes, so that the consent page need not be shown again until
//! it expires. It is `__Host-` (set by this host only, over https, for
//! `/`), `Secure`, `HttpOnly`, `SameSite=Lax`, and its value is an
//! HMAC-SHA256 over the client id, the subject, the scopes and the expiry,
//! so it cannot be forged, moved to another client or another user, or
//! stretched. Each client has its own cookie name, so consenting to one
//! does not displace another.
//!
//! The value carries only the expiry and the tag; the client id, subject
//! and scopes come from the request being authorized, and a cookie made for
//! any other combination fails the MAC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::registration::ClientId;
use crate::secret::RandomUnavailable;

/// The prefix of every consent cookie's name.
pub const COOKIE_PREFIX: &str = "__Host-mcpgate-consent-";
/// The version tag of the value's format, also bound into the MAC.
const VERSION: &str = "v1";
/// The longest cookie value read.
const MAX_VALUE_LEN: usize = 128;

/// The HMAC key consent cookies are signed with. Persist it (config or key
/// file): a new key silently asks everyone for consent again.
pub struct ConsentKey(hmac::Key);

impl ConsentKey {
    /// A key from 32 or more secret bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConsentCookieError> {
        if bytes.len() < 32 {
            return Err(ConsentCookieError::KeyTooShort);
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, bytes)))
    }

    /// A fresh random key, and its bytes for the caller to persist.
    pub fn generate() -> Result<(Self, [u8; 32]), RandomUnavailable> {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| RandomUnavailable)?;
        Ok((Self(hmac::Key::new(hmac::HMAC_SHA256, &bytes)), bytes))
    }
}

impl ConsentKey {
    /// An HMAC-SHA256 tag over `message` under a purpose label, for the
    /// broker's other browser-bound values (the consent form's CSRF value).
    pub(crate) fn tag(&self, purpose: &str, message: &[u8]) -> String {
        let mut input = Vec::with_capacity(purpose.len() + 1 + message.len());
        input.extend_from_slice(purpose.as_bytes());
        input.push(0);
        input.extend_from_slice(message);
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.0, &input).as_ref())
    }
}

impl std::fmt::Debug for ConsentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsentKey([redacted])")
    }
}

/// What a consent is for: one client, one user, one set of scopes.
#[derive(Debug, Clone, Copy)]
pub struct ConsentBinding<'a> {
    /// The client.
    pub client_id: &'a ClientId,
    /// The user's stable subject identifier (the upstream `oid`/`sub`).
    pub subject: &'a str,
    /// The scopes consented to; order and duplicates do not matter.
    pub scopes: &'a [&'a str],
}

impl ConsentBinding<'_> {
    /// The cookie name for this client.
    pub fn cookie_name(&self) -> String {
        cookie_name(self.client_id)
    }

    /// The MAC input: every field length-prefixed, so that no two bindings
    /// share an encoding.
    fn message(&self, expires: u64) -> Vec<u8> {
        let mut scopes: Vec<&str> = self.scopes.to_vec();
        scopes.sort_unstable();
        scopes.dedup();
        let scopes = scopes.join(" ");
        let mut out = Vec::new();
        for part in [
            "mcpgate consent",
            VERSION,
            self.client_id.as_str(),
            self.subject,
            scopes.as_str(),
        ] {
            out.extend_from_slice(&(part.len() as u64).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out.extend_from_slice(&expires.to_be_bytes());
        out
    }
}

/// The name of the consent cookie for `client_id`: a hash of it, since a
/// client id (a URL, for metadata documents) is not a valid cookie name.
pub fn cookie_name(client_id: &ClientId) -> String {
    let digest = Sha256::digest(client_id.as_str().as_bytes());
    format!("{COOKIE_PREFIX}{}", URL_SAFE_NO_PAD.encode(&digest[..12]))
}

/// Why a consent cookie was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConsentCookieError {
    /// The key given is shorter than 32 bytes.
    #[error("the consent key must be at least 32 bytes")]
    KeyTooShort,
    /// The request carries no consent cookie for this client.
    #[error("no consent cookie for this client")]
    Missing,
    /// The value is not `v1.<expiry>.<tag>`.
    #[error("the consent cookie is malformed")]
    Malformed,
    /// The MAC does not match: forged, or for another client, user or
    /// scopes.
    #[error("the consent cookie is not valid for this client, user and scopes")]
    BadSignature,
    /// It has expired.
    #[error("the consent cookie has expired")]
    Expired,
}

/// Makes the `Set-Cookie` value recording consent for `binding` until
/// `now + ttl`.
pub fn issue(
    key: &ConsentKey,
    binding: &ConsentBinding<'_>,
    now: SystemTime,
    ttl: Duration,
) -> String {
    let expires = unix(now).saturating_add(ttl.as_secs());
    let tag = hmac::sign(&key.0, &binding.message(expires));
    format!(
        "{name}={VERSION}.{expires}.{tag}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}",
        name = binding.cookie_name(),
        tag = URL_SAFE_NO_PAD.encode(tag.as_ref()),
        max_age = ttl.as_secs(),
    )
}

/// Checks the consent cookie for `binding` among a request's `Cookie`
/// headers.
pub fn verify(
    key: &ConsentKey,
    binding: &ConsentBinding<'_>,
    headers: &http::HeaderMap,
    now: SystemTime,
) -> Result<(), ConsentCookieError> {
    let name = binding.cookie_name();
    let value = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .ok_or(ConsentCookieError::Missing)?;
    verify_value(key, binding, value, now)
}

/// Checks one cookie value for `binding`.
pub fn verify_value(
    key: &ConsentKey,
    binding: &ConsentBinding<'_>,
    value: &str,
    now: SystemTime,
) -> Result<(), ConsentCookieError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(ConsentCookieError::Malformed);
    }
    let mut parts = value.split('.');
    let (Some(VERSION), Some(expires), Some(tag), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ConsentCookieError::Malformed);
    };
    let expires: u64 = expires.parse().map_err(|_| ConsentCookieError::Malformed)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| ConsentCookieError::Malformed)?;
    if tag.len() != 32 {
        return Err(ConsentCookieError::Malformed);
    }
    // The MAC first, so that an attacker learns nothing from the expiry.
    hmac::verify(&key.0, &binding.message(expires), &tag)
        .map_err(|_| ConsentCookieError::BadSignature)?;
    if unix(now) >= expires {
        return Err(ConsentCookieError::Expired);
    }
    Ok(())
}

/// The `Set-Cookie` value that removes the consent cookie for a client.
pub fn clear(client_id: &ClientId) -> String {
    format!(
        "{}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0",
        cookie_name(client_id)
    )
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const T0: u64 = 1_800_000_000;
    const DAY: Duration = Duration::from_secs(86_400);

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn key(byte: u8) -> ConsentKey {
        ConsentKey::from_bytes(&[byte; 32]).expect("key")
    }

    /// The cookie's `name=value`, as a browser sends it back.
    fn sent_back(set_cookie: &str) -> http::HeaderMap {
        let pair = set_cookie.split(';').next().unwrap_or_default();
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {pair}")).expect("header"),
        );
        h
    }

    fn value_of(set_cookie: &str) -> &str {
        set_cookie
            .split(';')
            .next()
            .and_then(|p| p.split_once('='))
            .map(|(_, v)| v)
            .unwrap_or_default()
    }

    #[test]
    fn the_cookie_has_every_attribute() {
        let client = ClientId::new("client-a");
        let b = ConsentBinding {
            client_id: &client,
            subject: "user-1",
            scopes: &["mcp:tools"],
        };
        let c = issue(&key(1), &b, at(T0), DAY);
        assert!(c.starts_with(COOKIE_PREFIX), "{c}");
        for attr in [
            "; Path=/",
            "; Secure",
            "; HttpOnly",
            "; SameSite=Lax",
            "; Max-Age=86400",
        ] {
            assert!(c.contains(attr), "{attr} missing from {c}");
        }
        assert!(
            !c.contains("Domain="),
            "__Host- cookies must not name a domain"
        );
    }

    #[test]
    fn a_valid_cookie_verifies_until_it_expires() {
        let client = ClientId::new("client-a");
        let b = ConsentBinding {
            client_id: &client,
            subject: "user-1",
            scopes: &["a", "b"],
        };
        let c = issue(&key(1), &b, at(T0), DAY);
        assert_eq!(verify(&key(1), &b, &sent_back(&c), at(T0 + 10)), Ok(()));
        // Scope order and duplicates do not matter.
        let same = ConsentBinding {
            scopes: &["b", "a", "a"],
            ..b
        };
        assert_eq!(verify(&key(1), &same, &sent_back(&c), at(T0 + 10)), Ok(()));
        assert_eq!(
            verify(&key(1), &b, &sent_back(&c), at(T0 + DAY.as_secs())),
            Err(ConsentCookieError::Expired)
        );
    }

    #[test]
    fn another_clients_users_or_scopes_cookie_is_refused() {
        let a = ClientId::new("client-a");
        let b_id = ClientId::new("client-b");
        let for_a = ConsentBinding {
            client_id: &a,
            subject: "user-1",
            scopes: &["mcp:tools"],
        };
        let c = issue(&key(1), &for_a, at(T0), DAY);
        let value = value_of(&c);

        let for_b = ConsentBinding {
            client_id: &b_id,
            ..for_a
        };
        // Sent under client B's name: the MAC binds the client id.
        assert_eq!(
            verify_value(&key(1), &for_b, value, at(T0)),
            Err(ConsentCookieError::BadSignature)
        );
        // Sent as is: client B's cookie name is not there.
        assert_eq!(
            verify(&key(1), &for_b, &sent_back(&c), at(T0)),
            Err(ConsentCookieError::Missing)
        );
        let other_user = ConsentBinding {
            subject: "user-2",
            ..for_a
        };
        assert_eq!(
            verify_value(&key(1), &other_user, value, at(T0)),
            Err(ConsentCookieError::BadSignature)
        );
        let more_scopes = ConsentBinding {
            scopes: &["mcp:tools", "offline_access"],
            ..for_a
        };
        assert_eq!(
            verify_value(&key(1), &more_scopes, value, at(T0)),
            Err(ConsentCookieError::BadSignature)
        );
        // Signed with another key.
        assert_eq!(
            verify_value(&key(2), &for_a, value, at(T0)),
            Err(ConsentCookieError::BadSignature)
        );
    }

    #[test]
    fn forged_values_are_refused() {
        let client = ClientId::new("client-a");
        let b = ConsentBinding {
            client_id: &client,
            subject: "user-1",
            scopes: &[],
        };
        let c = issue(&key(1), &b, at(T0), DAY);
        let value = value_of(&c);
        let (head, tag) = value.rsplit_once('.').expect("tag");
        // A later expiry with the old tag.
        let stretched = format!("v1.{}.{tag}", T0 + 100 * DAY.as_secs());
        assert_eq!(
            verify_value(&key(1), &b, &stretched, at(T0)),
            Err(ConsentCookieError::BadSignature)
        );
        let zero_tag = format!("{head}.{}", URL_SAFE_NO_PAD.encode([0u8; 32]));
        assert_eq!(
            verify_value(&key(1), &b, &zero_tag, at(T0)),
            Err(ConsentCookieError::BadSignature)
        );
        for bad in [
            "",
            "yes",
            "v1.1.",
            "v2.1.AAAA",
            "v1.x.AAAA",
            "v1.1.AA!A",
            &format!("{value}.extra"),
            &"v".repeat(500),
        ] {
            assert_eq!(
                verify_value(&key(1), &b, bad, at(T0)),
                Err(ConsentCookieError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn names_differ_per_client_and_keys_are_long_enough() {
        assert_ne!(
            cookie_name(&ClientId::new("a")),
            cookie_name(&ClientId::new("b"))
        );
        let url_id = ClientId::new("https://app.example/client.json");
        let name = cookie_name(&url_id);
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert!(clear(&url_id).contains("Max-Age=0"));
        assert_eq!(
            ConsentKey::from_bytes(&[0; 31]).map(|_| ()),
            Err(ConsentCookieError::KeyTooShort)
        );
        assert_eq!(format!("{:?}", key(1)), "ConsentKey([redacted])");
    }
}

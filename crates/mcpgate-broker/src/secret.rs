//! Newtypes for the secrets the broker handles: client secrets, CSRF
//! values. Each prints as `[redacted]` in `Debug`, so that no `{:?}` of a
//! struct holding one can put it in a log or an error; the value is
//! reached only through `secret()`. Generated values come from the
//! system's CSPRNG through aws-lc-rs.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// `n` random bytes, base64url without padding.
pub(crate) fn random_token(n: usize) -> Result<String, RandomUnavailable> {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| RandomUnavailable)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The system's random source failed; nothing secret can be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random number generator is unavailable")]
pub struct RandomUnavailable;

/// A client secret issued by dynamic registration. Serialized as its value,
/// for the one response that hands it to the client; stored only as a
/// [`ClientSecretHash`].
#[derive(Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// A fresh secret: 32 random bytes.
    pub fn generate() -> Result<Self, RandomUnavailable> {
        random_token(32).map(Self)
    }

    /// The value itself, for the one place that sends it.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// What the store keeps instead of the secret.
    pub fn hash(&self) -> ClientSecretHash {
        ClientSecretHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret([redacted])")
    }
}

/// The SHA-256 of a client secret. A plain hash suffices: the secret is
/// 256 random bits, not a password, so there is nothing to brute-force.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ClientSecretHash([u8; 32]);

impl ClientSecretHash {
    /// Wraps stored bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `presented` is the secret, compared in constant time.
    pub fn verify(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        verify_slices_are_equal(&digest, &self.0).is_ok()
    }
}

impl std::fmt::Debug for ClientSecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecretHash([redacted])")
    }
}

/// A CSRF value for one form: random, compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct CsrfToken(String);

impl CsrfToken {
    /// A fresh value: 32 random bytes.
    pub fn generate() -> Result<Self, RandomUnavailable> {
        random_token(32).map(Self)
    }

    /// Wraps a value read back (from the session that issued it).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the hidden form field.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Whether a submitted value is this one, in constant time.
    pub fn matches(&self, submitted: &str) -> bool {
        verify_slices_are_equal(self.0.as_bytes(), submitted.as_bytes()).is_ok()
    }
}

impl std::fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfToken([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_value() -> Result<(), RandomUnavailable> {
        let s = ClientSecret::generate()?;
        let c = CsrfToken::generate()?;
        for printed in [
            format!("{s:?}"),
            format!("{c:?}"),
            format!("{:?}", s.hash()),
        ] {
            assert!(printed.contains("[redacted]"));
            assert!(!printed.contains(s.secret()) && !printed.contains(c.secret()));
        }
        Ok(())
    }

    #[test]
    fn secret_hash_verifies_only_the_secret() -> Result<(), RandomUnavailable> {
        let s = ClientSecret::generate()?;
        assert_eq!(s.secret().len(), 43);
        let h = s.hash();
        assert!(h.verify(s.secret()));
        assert!(!h.verify(&s.secret()[1..]));
        assert!(!h.verify(""));
        assert_ne!(ClientSecret::generate()?.secret(), s.secret());
        Ok(())
    }

    #[test]
    fn csrf_matches_exactly() {
        let c = CsrfToken::new("abc");
        assert!(c.matches("abc"));
        assert!(!c.matches("abd") && !c.matches("ab") && !c.matches("abcd"));
    }
}

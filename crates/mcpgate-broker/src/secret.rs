//! Newtypes for the secrets the broker handles: client secrets,
//! authorization codes, refresh tokens, CSRF values. Each prints as `[redacted]` in `Debug`, so that no `{:?}` of a
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

macro_rules! bearer_secret {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Not `Clone`: it is minted once and handed out once; the store
        /// keeps its [`SecretDigest`], which is also how a presented value
        /// is looked up.
        #[derive(PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            /// A fresh value: 32 random bytes.
            pub fn generate() -> Result<Self, RandomUnavailable> {
                random_token(32).map(Self)
            }

            /// Wraps a value a client presented.
            pub fn presented(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The value itself, for the one response that carries it.
            pub fn secret(&self) -> &str {
                &self.0
            }

            /// The store's key for it.
            pub fn digest(&self) -> SecretDigest {
                SecretDigest(Sha256::digest(self.0.as_bytes()).into())
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

bearer_secret!(
    /// A one-time authorization code returned to an MCP client.
    AuthorizationCode
);
bearer_secret!(
    /// A refresh token issued to an MCP client.
    RefreshToken
);

/// The SHA-256 of a code or token: what the store keys on, so that a copy
/// of the store yields no usable credential. Lookup by digest needs no
/// constant-time compare: the digest of a guess reveals nothing about
/// the stored values.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretDigest([u8; 32]);

impl SecretDigest {
    /// Wraps stored bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A prefix is enough to correlate log lines, and is no credential.
        write!(
            f,
            "SecretDigest({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
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
    fn codes_and_tokens_are_redacted_and_keyed_by_digest() -> Result<(), RandomUnavailable> {
        let code = AuthorizationCode::generate()?;
        let token = RefreshToken::generate()?;
        assert_eq!(format!("{code:?}"), "AuthorizationCode([redacted])");
        assert_eq!(format!("{token:?}"), "RefreshToken([redacted])");
        let presented = AuthorizationCode::presented(code.secret());
        assert_eq!(presented.digest(), code.digest());
        assert_ne!(AuthorizationCode::presented("x").digest(), code.digest());
        let printed = format!("{:?}", code.digest());
        assert!(printed.len() < 30 && !printed.contains(code.secret()));
        Ok(())
    }

    #[test]
    fn csrf_matches_exactly() {
        let c = CsrfToken::new("abc");
        assert!(c.matches("abc"));
        assert!(!c.matches("abd") && !c.matches("ab") && !c.matches("abcd"));
    }
}

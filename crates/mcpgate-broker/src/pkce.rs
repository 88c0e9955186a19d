//! PKCE (RFC 7636) as OAuth 2.1 and MCP require it: `S256` only. A
//! challenge is checked when `/authorize` receives it; the verifier when
//! `/token` redeems the code, compared in constant time.
//!
//! `plain` is refused, and so is a request that names no method: RFC 7636
//! §4.3 makes an absent method mean `plain`.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::wire::{ErrorCode, OAuthError};

/// The shortest verifier RFC 7636 §4.1 allows.
pub const VERIFIER_MIN_LEN: usize = 43;
/// The longest verifier RFC 7636 §4.1 allows.
pub const VERIFIER_MAX_LEN: usize = 128;
/// The length of an S256 challenge: base64url of 32 bytes, unpadded.
const CHALLENGE_LEN: usize = 43;

/// Why a PKCE value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkceError {
    /// `/authorize` had no `code_challenge`.
    #[error("code_challenge is required (PKCE S256)")]
    MissingChallenge,
    /// `code_challenge_method` was `plain`, or absent (which means `plain`).
    #[error("code_challenge_method must be S256; plain is not allowed")]
    PlainRefused,
    /// `code_challenge_method` named something else.
    #[error("code_challenge_method {0:?} is not supported; use S256")]
    UnsupportedMethod(String),
    /// The challenge is not 43 base64url characters.
    #[error("code_challenge is not a base64url SHA-256 digest")]
    MalformedChallenge,
    /// `/token` had no `code_verifier`.
    #[error("code_verifier is required")]
    MissingVerifier,
    /// The verifier is not 43–128 unreserved characters.
    #[error("code_verifier must be 43 to 128 characters of [A-Za-z0-9-._~]")]
    MalformedVerifier,
    /// The verifier does not hash to the challenge.
    #[error("code_verifier does not match the code_challenge")]
    Mismatch,
}

impl PkceError {
    /// The OAuth error: challenge problems are `invalid_request` at
    /// `/authorize`; verifier problems are `invalid_grant` at `/token`
    /// (RFC 7636 §4.4.1 and §4.6).
    pub fn to_oauth(&self) -> OAuthError {
        let code = match self {
            PkceError::MissingChallenge
            | PkceError::PlainRefused
            | PkceError::UnsupportedMethod(_)
            | PkceError::MalformedChallenge
            | PkceError::MissingVerifier => ErrorCode::InvalidRequest,
            PkceError::MalformedVerifier | PkceError::Mismatch => ErrorCode::InvalidGrant,
        };
        OAuthError::new(code, self.to_string())
    }
}

/// A code verifier presented at `/token`: syntax checked, spent once, so
/// neither `Clone` nor printable.
pub struct CodeVerifier(String);

impl CodeVerifier {
    /// Checks RFC 7636 §4.1 syntax: 43–128 characters of
    /// `[A-Za-z0-9-._~]`.
    pub fn parse(value: Option<&str>) -> Result<Self, PkceError> {
        let value = value.ok_or(PkceError::MissingVerifier)?;
        let ok_len = (VERIFIER_MIN_LEN..=VERIFIER_MAX_LEN).contains(&value.len());
        let ok_chars = value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        if ok_len && ok_chars {
            Ok(Self(value.to_owned()))
        } else {
            Err(PkceError::MalformedVerifier)
        }
    }

    /// The value itself.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for CodeVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeVerifier([redacted])")
    }
}

/// An S256 code challenge, bound to the authorization code it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeChallenge(String);

impl CodeChallenge {
    /// Reads `code_challenge` and `code_challenge_method` from an
    /// authorization request.
    pub fn parse(challenge: Option<&str>, method: Option<&str>) -> Result<Self, PkceError> {
        let challenge = challenge.ok_or(PkceError::MissingChallenge)?;
        match method {
            Some("S256") => {}
            None | Some("plain") => return Err(PkceError::PlainRefused),
            Some(other) => {
                let shown: String = other.chars().take(32).collect();
                return Err(PkceError::UnsupportedMethod(shown));
            }
        }
        let ok = challenge.len() == CHALLENGE_LEN
            && challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && URL_SAFE_NO_PAD.decode(challenge).is_ok();
        if ok {
            Ok(Self(challenge.to_owned()))
        } else {
            Err(PkceError::MalformedChallenge)
        }
    }

    /// The challenge a verifier yields: `BASE64URL(SHA256(verifier))`.
    pub fn s256(verifier: &CodeVerifier) -> Self {
        Self(URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.0.as_bytes())))
    }

    /// The challenge, for the store.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `verifier` hashes to this challenge, compared in constant
    /// time.
    pub fn verify(&self, verifier: &CodeVerifier) -> Result<(), PkceError> {
        let computed = Self::s256(verifier);
        verify_slices_are_equal(computed.0.as_bytes(), self.0.as_bytes())
            .map_err(|_| PkceError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636 Appendix B.
    const RFC_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const RFC_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc_7636_appendix_b_vector_verifies() -> Result<(), PkceError> {
        let challenge = CodeChallenge::parse(Some(RFC_CHALLENGE), Some("S256"))?;
        let verifier = CodeVerifier::parse(Some(RFC_VERIFIER))?;
        assert_eq!(CodeChallenge::s256(&verifier), challenge);
        challenge.verify(&verifier)
    }

    #[test]
    fn a_different_verifier_is_a_mismatch() -> Result<(), PkceError> {
        let challenge = CodeChallenge::parse(Some(RFC_CHALLENGE), Some("S256"))?;
        let other = CodeVerifier::parse(Some(&"a".repeat(43)))?;
        assert_eq!(challenge.verify(&other), Err(PkceError::Mismatch));
        assert_eq!(
            PkceError::Mismatch.to_oauth().error,
            ErrorCode::InvalidGrant
        );
        Ok(())
    }

    #[test]
    fn plain_and_absent_methods_are_refused() {
        assert_eq!(
            CodeChallenge::parse(Some(RFC_CHALLENGE), Some("plain")),
            Err(PkceError::PlainRefused)
        );
        // RFC 7636 §4.3: absent means plain.
        assert_eq!(
            CodeChallenge::parse(Some(RFC_CHALLENGE), None),
            Err(PkceError::PlainRefused)
        );
        assert_eq!(
            CodeChallenge::parse(Some(RFC_CHALLENGE), Some("s256")),
            Err(PkceError::UnsupportedMethod("s256".into()))
        );
        assert_eq!(
            CodeChallenge::parse(None, Some("S256")),
            Err(PkceError::MissingChallenge)
        );
        assert_eq!(
            PkceError::PlainRefused.to_oauth().error,
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn a_challenge_must_be_a_digest() {
        for bad in [
            "",
            &RFC_CHALLENGE[1..],
            &format!("{RFC_CHALLENGE}A"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw=cM",
        ] {
            assert_eq!(
                CodeChallenge::parse(Some(bad), Some("S256")),
                Err(PkceError::MalformedChallenge),
                "{bad}"
            );
        }
    }

    #[test]
    fn verifier_syntax_per_rfc_7636() {
        assert!(CodeVerifier::parse(Some(&"a".repeat(43))).is_ok());
        assert!(CodeVerifier::parse(Some(&"-._~aZ09".repeat(16))).is_ok());
        for bad in [
            "a".repeat(42),
            "a".repeat(129),
            format!("{}+", "a".repeat(42)),
            format!("{} ", "a".repeat(42)),
            format!("{}é", "a".repeat(41)),
        ] {
            assert_eq!(
                CodeVerifier::parse(Some(&bad)).map(|_| ()),
                Err(PkceError::MalformedVerifier),
                "{bad}"
            );
        }
        assert_eq!(
            CodeVerifier::parse(None).map(|_| ()),
            Err(PkceError::MissingVerifier)
        );
    }

    #[test]
    fn verifier_debug_is_redacted() -> Result<(), PkceError> {
        let v = CodeVerifier::parse(Some(RFC_VERIFIER))?;
        assert_eq!(format!("{v:?}"), "CodeVerifier([redacted])");
        Ok(())
    }
}

//! Certificate credentials: a confidential app that registers a
//! certificate (or its public key) proves who it is with a JWT it signs
//! (`private_key_jwt`, RFC 7523 §2.2), as Entra's certificate credentials
//! work. This is what lets a server such as the mcpgate broker run with no
//! secret at all, and be tested that way with no tenant.
//!
//! Entra's rules, which these follow: `aud` is the tenant's token endpoint,
//! `iss` and `sub` are the client id, `exp` is required, and the signature
//! verifies with one of the app's registered keys.
//! <https://learn.microsoft.com/entra/identity-platform/certificate-credentials>

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::IdpError;
use crate::token_error::TokenError;

/// How far apart the IdP's and the client's clocks may be, as Entra allows.
const CLOCK_SKEW_SECS: u64 = 300;

/// The `client_assertion_type` of a JWT client assertion.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// One registered key. `Debug` shows its thumbprint only.
#[derive(Clone)]
pub struct CertificateCredential {
    key: DecodingKey,
    ec: bool,
    /// SHA-256 of the PEM's DER body, base64url: how people tell keys apart.
    thumbprint: String,
}

impl std::fmt::Debug for CertificateCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateCredential")
            .field("thumbprint", &self.thumbprint)
            .field("ec", &self.ec)
            .finish()
    }
}

impl CertificateCredential {
    /// Reads a PEM certificate or public key (RSA or P-256).
    pub fn load(path: &Path) -> Result<Self, IdpError> {
        let pem = std::fs::read(path).map_err(|e| IdpError::io(path, e))?;
        Self::from_pem(&pem).map_err(|why| {
            IdpError::Config(format!("certificate credential {}: {why}", path.display()))
        })
    }

    /// Parses a PEM certificate or public key (RSA or P-256).
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let thumbprint = URL_SAFE_NO_PAD.encode(Sha256::digest(pem));
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self {
                key,
                ec: false,
                thumbprint,
            });
        }
        DecodingKey::from_ec_pem(pem)
            .map(|key| Self {
                key,
                ec: true,
                thumbprint,
            })
            .map_err(|_| "not a PEM RSA or EC certificate or public key".to_owned())
    }

    fn fits(&self, alg: Algorithm) -> bool {
        match alg {
            Algorithm::RS256 | Algorithm::PS256 => !self.ec,
            Algorithm::ES256 => self.ec,
            _ => false,
        }
    }
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: Option<String>,
    sub: Option<String>,
    exp: Option<u64>,
    nbf: Option<u64>,
}

/// Checks `assertion` for `client_id`, which registered `credentials`,
/// against the token endpoint URLs it may name as audience, at `now`
/// (Unix seconds, the IdP's clock).
pub fn verify(
    client_id: &str,
    credentials: &[CertificateCredential],
    assertion: &str,
    audiences: &[String],
    now: u64,
) -> Result<(), TokenError> {
    if credentials.is_empty() {
        return Err(TokenError::AssertionUnsupported {
            client_id: client_id.to_owned(),
        });
    }
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| {
        TokenError::ClientAssertionInvalid("the client assertion is not a signed JWT")
    })?;
    if !matches!(
        header.alg,
        Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256
    ) {
        return Err(TokenError::ClientAssertionInvalid(
            "the client assertion must be signed with RS256, PS256 or ES256",
        ));
    }
    let mut validation = Validation::new(header.alg);
    // Time is checked below against the IdP's own clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.required_spec_claims.clear();
    validation.set_audience(audiences);
    let mut claims = None;
    for credential in credentials.iter().filter(|c| c.fits(header.alg)) {
        match jsonwebtoken::decode::<AssertionClaims>(assertion, &credential.key, &validation) {
            Ok(data) => {
                claims = Some(data.claims);
                break;
            }
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidAudience) => {
                return Err(TokenError::ClientAssertionAudience);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(_)
                ) =>
            {
                return Err(TokenError::ClientAssertionAudience);
            }
            Err(_) => {}
        }
    }
    let Some(claims) = claims else {
        return Err(TokenError::ClientAssertionSignature {
            client_id: client_id.to_owned(),
        });
    };
    let names_client = |c: &Option<String>| c.as_deref() == Some(client_id);
    if !names_client(&claims.iss) || !names_client(&claims.sub) {
        return Err(TokenError::ClientAssertionOtherClient);
    }
    let Some(exp) = claims.exp else {
        return Err(TokenError::ClientAssertionInvalid(
            "the client assertion has no exp claim",
        ));
    };
    let early = claims
        .nbf
        .is_some_and(|nbf| nbf > now.saturating_add(CLOCK_SKEW_SECS));
    if exp.saturating_add(CLOCK_SKEW_SECS) < now || early {
        return Err(TokenError::ClientAssertionTimeRange);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const ENDPOINT: &str = "https://127.0.0.1:1/t/oauth2/v2.0/token";

    fn key_pair() -> (EncodingKey, CertificateCredential) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let encoding = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("private");
        let credential =
            CertificateCredential::from_pem(key.public_key_pem().as_bytes()).expect("public");
        (encoding, credential)
    }

    fn assertion(key: &EncodingKey, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, key).expect("signed")
    }

    fn claims(now: u64) -> serde_json::Value {
        json!({"iss": "app", "sub": "app", "aud": ENDPOINT, "exp": now + 600, "nbf": now, "jti": "1"})
    }

    fn check(credential: &CertificateCredential, jwt: &str, now: u64) -> Result<(), TokenError> {
        verify(
            "app",
            std::slice::from_ref(credential),
            jwt,
            &[ENDPOINT.to_owned()],
            now,
        )
    }

    #[test]
    fn a_well_formed_assertion_passes_and_every_flaw_is_named() {
        let now = 1_800_000_000;
        let (key, credential) = key_pair();
        check(&credential, &assertion(&key, claims(now)), now).expect("valid");

        let (other_key, _) = key_pair();
        assert_eq!(
            check(&credential, &assertion(&other_key, claims(now)), now),
            Err(TokenError::ClientAssertionSignature {
                client_id: "app".into()
            })
        );
        let mut wrong = claims(now);
        wrong["aud"] = json!("https://elsewhere.example/token");
        assert_eq!(
            check(&credential, &assertion(&key, wrong), now),
            Err(TokenError::ClientAssertionAudience)
        );
        let mut wrong = claims(now);
        wrong["sub"] = json!("someone-else");
        assert_eq!(
            check(&credential, &assertion(&key, wrong), now),
            Err(TokenError::ClientAssertionOtherClient)
        );
        assert_eq!(
            check(&credential, &assertion(&key, claims(now)), now + 3_600),
            Err(TokenError::ClientAssertionTimeRange)
        );
        assert!(check(&credential, "not.a.jwt", now).is_err());
        assert_eq!(
            verify("app", &[], &assertion(&key, claims(now)), &[], now),
            Err(TokenError::AssertionUnsupported {
                client_id: "app".into()
            })
        );
    }

    #[test]
    fn debug_shows_the_thumbprint_only() {
        let (_, credential) = key_pair();
        let text = format!("{credential:?}");
        assert!(text.contains("thumbprint"), "{text}");
        assert!(!text.contains("BEGIN"), "{text}");
    }
}

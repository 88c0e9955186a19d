//! `private_key_jwt` client authentication (RFC 7523 §2.2): a short-lived
//! JWT signed with the client's private key, fresh for every request.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::oauth::{random_string, unix_now};

/// A client's signing key.
#[derive(Clone)]
pub struct ClientKey {
    key: EncodingKey,
    alg: Algorithm,
    kid: Option<String>,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The key file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("the client key is not a usable PEM private key for {alg}: {reason}")]
pub struct KeyError {
    alg: String,
    reason: String,
}

impl ClientKey {
    /// A PEM private key: EC P-256 (ES256, the default for EC keys) or RSA
    /// (RS256). `alg` overrides the choice.
    pub fn from_pem(pem: &[u8], alg: Option<&str>, kid: Option<String>) -> Result<Self, KeyError> {
        let text = String::from_utf8_lossy(pem);
        let alg = match alg {
            Some(name) => name.parse::<Algorithm>().map_err(|e| KeyError {
                alg: name.to_owned(),
                reason: e.to_string(),
            })?,
            None if text.contains("RSA PRIVATE KEY") => Algorithm::RS256,
            None => match EncodingKey::from_ec_pem(pem) {
                Ok(_) => Algorithm::ES256,
                Err(_) => Algorithm::RS256,
            },
        };
        let key = match alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 => {
                EncodingKey::from_rsa_pem(pem)
            }
            other => {
                return Err(KeyError {
                    alg: format!("{other:?}"),
                    reason: "only ES256/ES384 and RS256/RS384/RS512/PS256 sign client assertions"
                        .into(),
                });
            }
        }
        .map_err(|e| KeyError {
            alg: format!("{alg:?}"),
            reason: e.to_string(),
        })?;
        Ok(Self { key, alg, kid })
    }

    /// An assertion for `client_id` at `audience`, valid five minutes.
    pub fn assertion(&self, client_id: &str, audience: &str) -> Result<String, KeyError> {
        let now = unix_now();
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        let claims = json!({
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "jti": random_string(),
            "iat": now,
            "exp": now + 300,
        });
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| KeyError {
            alg: format!("{:?}", self.alg),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A throwaway P-256 key, for this test only.
    const EC_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgevZzL1gdAFr88hb2
OF/2NxApJCzGCEDdfSp6VQO30hyhRANCAAQRWz+jn65BtOMvdyHKcvjBeBSDZH2r
1RTwjmYSi9R/zpBnuQ4EiMnCqfMPWiZqB4QdbAd0E7oH50VpuZ1P087G
-----END PRIVATE KEY-----
";

    #[test]
    fn assertions_carry_rfc7523_claims_and_are_fresh() {
        let key = ClientKey::from_pem(EC_PEM.as_bytes(), None, Some("k1".into())).expect("EC key");
        assert_eq!(key.alg, Algorithm::ES256);
        let a = key
            .assertion("client", "https://as.example")
            .expect("signs");
        let b = key
            .assertion("client", "https://as.example")
            .expect("signs");
        assert_ne!(a, b, "a new jti each time");
        let header = jsonwebtoken::decode_header(&a).expect("header");
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some("k1"));
        let payload: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                a.split('.').nth(1).expect("payload"),
            )
            .expect("b64"),
        )
        .expect("json");
        assert_eq!(payload["iss"], "client");
        assert_eq!(payload["sub"], "client");
        assert_eq!(payload["aud"], "https://as.example");
        assert!(payload["exp"].as_u64() > payload["iat"].as_u64());
        assert!(ClientKey::from_pem(b"not a key", Some("ES256"), None).is_err());
    }
}

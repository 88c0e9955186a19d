//! Claims challenges: what an identity provider (Entra ID's Conditional
//! Access, say) asks of a sign-in beyond what the held token shows, such as
//! multi-factor authentication.
//!
//! A challenge reaches the client in one of two ways: a resource server's
//! `WWW-Authenticate: Bearer error="insufficient_claims", claims="<base64>"`
//! (as Microsoft Graph and `mcpgate serve` send it), or a token endpoint's
//! refusal whose body carries `claims` (AADSTS50076 on a refresh). Either
//! way the answer is the same: sign in interactively again, sending the
//! claims JSON as the authorization request's `claims` parameter (OpenID
//! Connect Core §5.5), then try once more.
//!
//! A claims value is not a secret (it names policies, not people), so it
//! may be logged; it is bounded in size all the same, and must be a JSON
//! object.

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};

/// The largest claims value accepted (its JSON, in bytes).
pub const MAX_CLAIMS: usize = 4096;

/// The `error` of a Bearer challenge that carries claims.
pub const INSUFFICIENT_CLAIMS: &str = "insufficient_claims";

/// Why a claims value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    /// Larger than [`MAX_CLAIMS`].
    #[error("the claims value is {len} bytes, more than the {MAX_CLAIMS} accepted")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// Not base64 (standard or URL-safe, padded or not).
    #[error("the claims value is not base64")]
    NotBase64,
    /// Not a JSON object.
    #[error("the claims value is not a JSON object")]
    NotJsonObject,
}

/// A claims request: a JSON object, at most [`MAX_CLAIMS`] bytes, kept as
/// the text the identity provider sent (it is passed on unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims(String);

// Standard and URL-safe alphabets, each with or without padding.
const STANDARD_ANY_PAD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const URL_SAFE_ANY_PAD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl Claims {
    /// A claims value from its JSON text.
    pub fn from_json(json: &str) -> Result<Self, ClaimsError> {
        let json = json.trim();
        if json.len() > MAX_CLAIMS {
            return Err(ClaimsError::TooLarge { len: json.len() });
        }
        match serde_json::from_str::<serde_json::Value>(json) {
            Ok(serde_json::Value::Object(_)) => Ok(Self(json.to_owned())),
            _ => Err(ClaimsError::NotJsonObject),
        }
    }

    /// A claims value from a challenge's `claims` parameter: base64 of
    /// the JSON, standard (as Entra and Graph send it) or URL-safe, with
    /// or without padding.
    pub fn from_base64(encoded: &str) -> Result<Self, ClaimsError> {
        let encoded = encoded.trim();
        // Base64 is 4/3 of its content: refuse before decoding.
        if encoded.len() > MAX_CLAIMS.div_ceil(3) * 4 {
            return Err(ClaimsError::TooLarge {
                len: encoded.len() / 4 * 3,
            });
        }
        let bytes = STANDARD_ANY_PAD
            .decode(encoded)
            .or_else(|_| URL_SAFE_ANY_PAD.decode(encoded))
            .map_err(|_| ClaimsError::NotBase64)?;
        let json = std::str::from_utf8(&bytes).map_err(|_| ClaimsError::NotJsonObject)?;
        Self::from_json(json)
    }

    /// The JSON text, as the `claims` parameter of an authorization
    /// request takes it.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// Standard base64 with padding, as `WWW-Authenticate` carries it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.as_bytes())
    }
}

impl std::fmt::Display for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{self, URL_SAFE_NO_PAD};

    const MFA: &str = r#"{"access_token":{"capolids":{"essential":true,"values":["c0a1"]}}}"#;

    #[test]
    fn reads_every_base64_form() {
        let forms = [
            STANDARD.encode(MFA),
            general_purpose::STANDARD_NO_PAD.encode(MFA),
            general_purpose::URL_SAFE.encode(MFA),
            URL_SAFE_NO_PAD.encode(MFA),
        ];
        for form in forms {
            let claims = Claims::from_base64(&form).expect("claims");
            assert_eq!(claims.as_json(), MFA, "{form}");
        }
        assert_eq!(
            Claims::from_json(MFA).expect("json").to_base64(),
            STANDARD.encode(MFA)
        );
    }

    #[test]
    fn url_safe_characters_are_read() {
        // Bytes that encode to `-`/`_` in URL-safe and `+`/`/` in standard.
        let json = r#"{"a":"???>>>"}"#;
        let url_safe = URL_SAFE_NO_PAD.encode(json);
        assert!(
            url_safe.contains('_') || url_safe.contains('-'),
            "{url_safe}"
        );
        assert_eq!(
            Claims::from_base64(&url_safe).expect("claims").as_json(),
            json
        );
    }

    #[test]
    fn refuses_what_is_not_a_bounded_json_object() {
        assert_eq!(
            Claims::from_base64("not base64!"),
            Err(ClaimsError::NotBase64)
        );
        assert_eq!(
            Claims::from_base64(&STANDARD.encode("not json")),
            Err(ClaimsError::NotJsonObject)
        );
        assert_eq!(
            Claims::from_base64(&STANDARD.encode("[1,2]")),
            Err(ClaimsError::NotJsonObject)
        );
        assert_eq!(
            Claims::from_base64(&STANDARD.encode([0xff, 0xfe])),
            Err(ClaimsError::NotJsonObject)
        );
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_CLAIMS));
        assert!(matches!(
            Claims::from_json(&big),
            Err(ClaimsError::TooLarge { .. })
        ));
        assert!(matches!(
            Claims::from_base64(&STANDARD.encode(&big)),
            Err(ClaimsError::TooLarge { .. })
        ));
    }
}

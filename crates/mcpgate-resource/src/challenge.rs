//! The answers to a request that may not pass: 400, 401 or 403 with a
//! `WWW-Authenticate: Bearer` challenge (RFC 6750 §3, RFC 9728 §5.1) that
//! tells the client where the Protected Resource Metadata is and which
//! scopes to ask for; and the claims challenge relayed when the identity
//! provider wants more of the caller's sign-in (Conditional Access: a
//! second factor) before it gives this server a token to act for them.

use axum::Json;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::{CACHE_CONTROL, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use mcpgate_token::ValidationError;
use serde_json::json;

use crate::bearer::BearerError;

/// Why a request to the MCP endpoint was turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRejection {
    /// The request carries no usable token, or carries it the wrong way.
    Request(BearerError),
    /// The token was refused.
    Token(ValidationError),
    /// The token is good, and the identity provider refused this server a
    /// token to act for its holder until they sign in satisfying these
    /// claims (Entra's AADSTS50076 on On-Behalf-Of): relayed as
    /// `error="insufficient_claims", claims="<base64>"`, as Microsoft Graph
    /// does, so that the client signs in again sending them.
    Claims(ClaimsChallenge),
}

/// The claims an identity provider asks a new sign-in to satisfy, as it
/// sent them (a JSON object). Not a secret: it names policies, not people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimsChallenge(String);

impl ClaimsChallenge {
    /// The largest claims value relayed: past it, the refusal is an
    /// ordinary failure.
    pub const MAX_LEN: usize = 4096;

    /// A challenge from the claims JSON; `None` when it is longer than
    /// [`Self::MAX_LEN`] or not a JSON object.
    pub fn new(json: &str) -> Option<Self> {
        let json = json.trim();
        if json.len() > Self::MAX_LEN {
            return None;
        }
        match serde_json::from_str::<serde_json::Value>(json) {
            Ok(serde_json::Value::Object(_)) => Some(Self(json.to_owned())),
            _ => None,
        }
    }

    /// The claims JSON.
    pub fn json(&self) -> &str {
        &self.0
    }

    /// Standard base64 with padding, as Entra and Graph put it in
    /// `WWW-Authenticate`.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.as_bytes())
    }
}

/// What every challenge names: the PRM URL and the scopes to request.
#[derive(Debug, Clone)]
pub struct ChallengeContext {
    /// The URL of this resource's Protected Resource Metadata.
    pub resource_metadata: String,
    /// The scopes a client should request, space separated.
    pub scope: String,
}

impl AuthRejection {
    /// Renders the rejection. Exhaustive on purpose: a new error kind must be
    /// mapped here before it compiles.
    pub fn into_response(self, ctx: &ChallengeContext) -> Response {
        let (status, error, description) = match &self {
            // RFC 6750 §3.1: a request with no bearer credentials gets a
            // challenge with no error code, so that the client signs in.
            AuthRejection::Request(BearerError::Missing | BearerError::OtherScheme) => {
                (StatusCode::UNAUTHORIZED, None, None)
            }
            AuthRejection::Request(
                e @ (BearerError::InQuery | BearerError::Duplicated | BearerError::MalformedToken),
            ) => (StatusCode::BAD_REQUEST, Some("invalid_request"), Some(e.describe().to_owned())),
            AuthRejection::Token(e) => match e {
                ValidationError::InsufficientScope { .. } => {
                    (StatusCode::FORBIDDEN, Some("insufficient_scope"), Some(e.to_string()))
                }
                ValidationError::TooLarge { .. }
                | ValidationError::Malformed(_)
                | ValidationError::AlgorithmNotAllowed { .. }
                | ValidationError::GraphToken { .. }
                | ValidationError::UntrustedIssuer { .. }
                | ValidationError::IssuerTenantMismatch { .. }
                | ValidationError::TenantNotAllowed { .. }
                | ValidationError::UnknownKey { .. }
                | ValidationError::BadSignature
                | ValidationError::WrongAudience { .. }
                | ValidationError::MissingClaim(_)
                | ValidationError::Expired { .. }
                | ValidationError::NotYetValid { .. }
                | ValidationError::IssuedInFuture { .. }
                | ValidationError::AppOnlyNotAllowed
                | ValidationError::ClientAppNotAllowed(_) => {
                    (StatusCode::UNAUTHORIZED, Some("invalid_token"), Some(e.to_string()))
                }
                // The caller's token may be fine; we could not check it. Still
                // a 401 (never a 500 the client would retry blindly), with a
                // description that says whose fault it is.
                ValidationError::KeysUnavailable(_) => (
                    StatusCode::UNAUTHORIZED,
                    Some("invalid_token"),
                    Some("the token could not be verified: the issuer's signing keys are unavailable".to_owned()),
                ),
            },
            AuthRejection::Claims(_) => (
                StatusCode::UNAUTHORIZED,
                Some("insufficient_claims"),
                Some("the identity provider requires more of your sign-in (such as multi-factor authentication) before this server may act for you: sign in again, sending the claims given".to_owned()),
            ),
        };
        let claims = match &self {
            AuthRejection::Claims(c) => Some(c),
            AuthRejection::Request(_) | AuthRejection::Token(_) => None,
        };
        let description = description.map(|d| quotable(&d));
        let mut params = Vec::new();
        if let Some(error) = error {
            params.push(format!("error=\"{error}\""));
        }
        if let Some(c) = claims {
            // Base64 needs no quoting.
            params.push(format!("claims=\"{}\"", c.to_base64()));
        }
        if let Some(d) = &description {
            params.push(format!("error_description=\"{d}\""));
        }
        params.push(format!(
            "resource_metadata=\"{}\"",
            quotable(&ctx.resource_metadata)
        ));
        if !ctx.scope.is_empty() {
            params.push(format!("scope=\"{}\"", quotable(&ctx.scope)));
        }
        let challenge = format!("Bearer {}", params.join(", "));
        let body = match error {
            Some(error) if claims.is_some() => json!({
                "error": error,
                "error_description": description,
                "claims": claims.map(ClaimsChallenge::json),
            }),
            Some(error) => json!({ "error": error, "error_description": description }),
            None => {
                json!({ "error": "unauthorized", "error_description": "this MCP server requires an OAuth access token" })
            }
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            headers.insert(WWW_AUTHENTICATE, v);
        }
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// Makes text safe inside an auth-param quoted string: RFC 6750 allows
/// printable ASCII except `"` and `\` in `error_description`. Claim values
/// echoed here come from the token, so they are also cut short.
fn quotable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if (' '..='~').contains(&c) => c,
            _ => '?',
        })
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ChallengeContext {
        ChallengeContext {
            resource_metadata: "http://127.0.0.1:1/.well-known/oauth-protected-resource/mcp".into(),
            scope: "api://app/mcp:tools".into(),
        }
    }

    fn challenge(r: &Response) -> &str {
        r.headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[test]
    fn missing_token_gets_a_bare_challenge() {
        let r = AuthRejection::Request(BearerError::Missing).into_response(&ctx());
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            challenge(&r),
            "Bearer resource_metadata=\"http://127.0.0.1:1/.well-known/oauth-protected-resource/mcp\", scope=\"api://app/mcp:tools\""
        );
    }

    #[test]
    fn another_scheme_is_answered_as_no_token() {
        let bare = AuthRejection::Request(BearerError::Missing).into_response(&ctx());
        let other = AuthRejection::Request(BearerError::OtherScheme).into_response(&ctx());
        assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(challenge(&other), challenge(&bare));
        assert!(!challenge(&other).contains("error="));
    }

    #[test]
    fn a_malformed_header_is_a_bad_request() {
        let r = AuthRejection::Request(BearerError::MalformedToken).into_response(&ctx());
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(
            challenge(&r).starts_with("Bearer error=\"invalid_request\""),
            "{}",
            challenge(&r)
        );
    }

    #[test]
    fn a_claims_challenge_carries_the_claims_in_standard_base64() {
        // 70 bytes: base64 needs padding.
        let json = r#"{"access_token":{"capolids":{"essential":true,"values":["c0a12"]}}}"#;
        assert_eq!(json.len() % 3, 1);
        let claims = ClaimsChallenge::new(json).expect("a JSON object");
        let r = AuthRejection::Claims(claims).into_response(&ctx());
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let c = challenge(&r);
        assert!(
            c.starts_with("Bearer error=\"insufficient_claims\", claims=\""),
            "{c}"
        );
        assert!(
            c.contains(
                "resource_metadata=\"http://127.0.0.1:1/.well-known/oauth-protected-resource/mcp\""
            ),
            "{c}"
        );
        assert!(
            c.contains("error_description=\"the identity provider requires"),
            "{c}"
        );
        let encoded = c
            .split("claims=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("claims");
        assert!(encoded.ends_with("=="), "padded: {encoded}");
        let decoded = STANDARD.decode(encoded).expect("standard base64");
        assert_eq!(decoded, json.as_bytes());
        assert_eq!(
            r.headers().get(CACHE_CONTROL).and_then(|v| v.to_str().ok()),
            Some("no-store")
        );
    }

    #[test]
    fn claims_are_relayed_only_bounded_and_as_an_object() {
        assert!(ClaimsChallenge::new("not json").is_none());
        assert!(ClaimsChallenge::new("[1]").is_none());
        assert!(ClaimsChallenge::new("\"{}\"").is_none());
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(ClaimsChallenge::MAX_LEN));
        assert!(ClaimsChallenge::new(&big).is_none());
        let ok = format!(r#"{{"a":"{}"}}"#, "x".repeat(ClaimsChallenge::MAX_LEN - 10));
        assert!(ClaimsChallenge::new(&ok).is_some());
    }

    #[test]
    fn descriptions_are_quotable() {
        let r = AuthRejection::Token(ValidationError::UntrustedIssuer {
            iss: "evil\"\\\u{7f}é".into(),
        })
        .into_response(&ctx());
        let c = challenge(&r);
        let description = c
            .split("error_description=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("has a description");
        assert!(description.starts_with("the token's issuer 'evil"), "{c}");
        assert!(description.ends_with("is not trusted here"), "{c}");
        assert!(!description.contains('\\'), "{c}");
        assert!(
            description.chars().all(|ch| (' '..='~').contains(&ch)),
            "{c}"
        );
    }
}

//! OAuth error JSON (RFC 6749 §5.2, RFC 7591 §3.2.2): the one shape every
//! refusal of this crate takes on the wire. Each module's error enum maps
//! to an [`OAuthError`] with an exhaustive `match`, so that a new error
//! cannot reach a client unmapped.

use http::StatusCode;
use serde::Serialize;

/// The `error` codes this crate sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// RFC 6749: the request is missing or has a malformed parameter.
    InvalidRequest,
    /// RFC 6749: client authentication failed or the client is unknown.
    InvalidClient,
    /// RFC 6749: the grant (code, verifier, refresh token) is invalid.
    InvalidGrant,
    /// RFC 6749: the client may not use this grant or response type.
    UnauthorizedClient,
    /// RFC 6749: the requested scope is invalid.
    InvalidScope,
    /// RFC 6749: the resource owner or server denied the request.
    AccessDenied,
    /// RFC 6749: the server failed; the client may retry later.
    ServerError,
    /// RFC 7591: a redirect URI in a registration is invalid.
    InvalidRedirectUri,
    /// RFC 7591: another registration field is invalid.
    InvalidClientMetadata,
    /// RFC 6749: the response type is not served.
    UnsupportedResponseType,
    /// RFC 6749: the grant type is not served.
    UnsupportedGrantType,
    /// RFC 8707: the resource is not one this server issues tokens for.
    InvalidTarget,
    /// RFC 6749: the server is overloaded (a store at its cap, a rate
    /// limit); the client may retry later.
    TemporarilyUnavailable,
}

impl ErrorCode {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::ServerError => "server_error",
            ErrorCode::InvalidRedirectUri => "invalid_redirect_uri",
            ErrorCode::InvalidClientMetadata => "invalid_client_metadata",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }

    /// The HTTP status this code is sent with from a JSON endpoint.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            ErrorCode::AccessDenied => StatusCode::FORBIDDEN,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::InvalidRequest
            | ErrorCode::InvalidGrant
            | ErrorCode::UnauthorizedClient
            | ErrorCode::InvalidScope
            | ErrorCode::InvalidRedirectUri
            | ErrorCode::InvalidClientMetadata
            | ErrorCode::UnsupportedResponseType
            | ErrorCode::UnsupportedGrantType
            | ErrorCode::InvalidTarget => StatusCode::BAD_REQUEST,
        }
    }
}

/// An OAuth error response body: `{"error": …, "error_description": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OAuthError {
    /// The error code.
    pub error: ErrorCode,
    /// A human-readable description, already safe for the wire.
    pub error_description: String,
}

impl OAuthError {
    /// An error whose description is made wire-safe: RFC 6749 allows
    /// printable ASCII except `"` and `\`, and descriptions may echo client
    /// input, so anything else is replaced and the text is cut short.
    pub fn new(error: ErrorCode, description: impl AsRef<str>) -> Self {
        Self {
            error,
            error_description: sanitize_description(description.as_ref()),
        }
    }

    /// The HTTP status to send it with.
    pub fn status(&self) -> StatusCode {
        self.error.status()
    }

    /// The `error` code as on the wire.
    pub fn code(&self) -> &'static str {
        self.error.as_str()
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        // Serializing a struct of an enum and a String cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{\"error\":\"server_error\"}"))
    }
}

/// The longest description sent.
const MAX_DESCRIPTION: usize = 300;

fn sanitize_description(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if (' '..='~').contains(&c) => c,
            _ => '?',
        })
        .take(MAX_DESCRIPTION)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_wire_safe_and_bounded() {
        let e = OAuthError::new(ErrorCode::InvalidRequest, "a \"q\" \\ é\n".repeat(100));
        assert!(e.error_description.len() <= MAX_DESCRIPTION);
        assert!(
            e.error_description
                .chars()
                .all(|c| (' '..='~').contains(&c) && c != '"' && c != '\\')
        );
        assert!(e.error_description.starts_with("a 'q' / ??"));
    }

    #[test]
    fn json_shape_and_status() {
        let e = OAuthError::new(ErrorCode::InvalidRedirectUri, "no");
        assert_eq!(
            e.to_json(),
            r#"{"error":"invalid_redirect_uri","error_description":"no"}"#
        );
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(ErrorCode::InvalidClient.status(), StatusCode::UNAUTHORIZED);
    }
}

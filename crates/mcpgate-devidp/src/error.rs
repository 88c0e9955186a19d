//! Errors in Entra's own JSON form, so that clients written against Entra
//! (MSAL above all) parse them unchanged.
//!
//! Entra's body: `error`, `error_description` (`"AADSTS<code>: <text>
//! Trace ID: … Correlation ID: … Timestamp: …"`), `error_codes`,
//! `timestamp`, `trace_id`, `correlation_id`, `error_uri`. See
//! <https://learn.microsoft.com/entra/identity-platform/reference-error-codes>.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::util::{entra_timestamp, new_guid, unix_now_system};

/// One Entra error: the OAuth error code, the AADSTS number and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AadError {
    /// HTTP status: 400, or 401 for client authentication failures.
    pub status: StatusCode,
    /// The OAuth 2.0 `error` value.
    pub error: &'static str,
    /// The AADSTS number.
    pub code: u32,
    /// What went wrong, without any secret or token.
    pub message: String,
    /// Entra's `suberror` (`consent_required`, …), when it sends one.
    pub suberror: Option<&'static str>,
    /// A claims challenge: the JSON the client sends back as the `claims`
    /// parameter of an interactive request. Entra writes it as a JSON
    /// string, not an object.
    pub claims: Option<String>,
}

impl AadError {
    /// A 400 error.
    pub fn new(error: &'static str, code: u32, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error,
            code,
            message: message.into(),
            suberror: None,
            claims: None,
        }
    }

    /// With a claims challenge (`claims`, a JSON string).
    pub fn with_claims(mut self, claims: String) -> Self {
        self.claims = Some(claims);
        self
    }

    /// With Entra's `suberror`.
    pub fn with_suberror(mut self, suberror: &'static str) -> Self {
        self.suberror = Some(suberror);
        self
    }

    /// With another HTTP status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// `AADSTS900144`: a required parameter is absent.
    pub fn missing(param: &str) -> Self {
        Self::new(
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{param}'."),
        )
    }

    /// `AADSTS700016`: no such application in the tenant.
    pub fn unknown_client(client_id: &str, tenant: &str) -> Self {
        Self::new(
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."
            ),
        )
    }

    /// `AADSTS90002`: the tenant in the URL does not exist.
    pub fn unknown_tenant(tenant: &str) -> Self {
        Self::new(
            "invalid_tenant",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        )
    }

    /// `AADSTS65001`: the user or an administrator has not consented.
    pub fn consent_required(client_id: &str, resource: &str) -> Self {
        Self::new(
            "invalid_grant",
            65001,
            format!(
                "The user or administrator has not consented to use the application with ID '{client_id}'. Send an interactive authorization request for this user and resource '{resource}'."
            ),
        )
        .with_suberror("consent_required")
    }

    /// `AADSTS90055`: the IdP holds as many `what` as it may; 429, try
    /// later. Unauthenticated callers cannot grow its memory without bound.
    pub fn busy(what: &str) -> Self {
        Self::new(
            "temporarily_unavailable",
            90055,
            format!(
                "There are too many {what} in progress on this identity provider. Try again later."
            ),
        )
        .with_status(StatusCode::TOO_MANY_REQUESTS)
    }

    /// `AADSTS90033`: a transient failure (the grant store cannot be
    /// reached); 503, try again.
    pub fn transient() -> Self {
        Self::new(
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        )
        .with_status(StatusCode::SERVICE_UNAVAILABLE)
    }

    /// `AADSTS90015`: a request, or one of its parameters, is longer than
    /// the IdP reads.
    pub fn too_long(what: &str, max: usize) -> Self {
        Self::new(
            "invalid_request",
            90015,
            format!("The {what} is too long (at most {max} characters)."),
        )
        .with_status(StatusCode::BAD_REQUEST)
    }

    /// The full `error_description` Entra writes.
    pub fn description(&self, trace_id: &str, correlation_id: &str, timestamp: &str) -> String {
        format!(
            "AADSTS{}: {} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}",
            self.code, self.message
        )
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let trace_id = new_guid();
        let correlation_id = new_guid();
        let timestamp = entra_timestamp(unix_now_system());
        let mut body = json!({
            "error": self.error,
            "error_description": self.description(&trace_id, &correlation_id, &timestamp),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        });
        if let Some(sub) = self.suberror {
            body["suberror"] = json!(sub);
        }
        if let Some(claims) = &self.claims {
            body["claims"] = json!(claims);
        }
        body
    }
}

impl std::fmt::Display for AadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: AADSTS{}: {}", self.error, self.code, self.message)
    }
}

impl std::error::Error for AadError {}

impl IntoResponse for AadError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body())).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
        headers.insert(header::PRAGMA, "no-cache".parse().expect("static"));
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            headers.insert(header::RETRY_AFTER, "30".parse().expect("static"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"mcpgate-devidp\"".parse().expect("static"),
            );
        }
        resp
    }
}

/// Failures starting the identity provider or reading its state.
#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    /// The configuration file does not parse or is inconsistent.
    #[error("identity provider configuration: {0}")]
    Config(String),
    /// A file in the data directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Key or certificate generation failed.
    #[error("cryptography: {0}")]
    Crypto(String),
    /// The listener could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An unsafe setting on a non-loopback address.
    #[error("{0}")]
    Refused(String),
}

impl From<mcpgate_keys::KeyError> for IdpError {
    fn from(e: mcpgate_keys::KeyError) -> Self {
        match e {
            mcpgate_keys::KeyError::Io { path, source } => IdpError::Io { path, source },
            other @ mcpgate_keys::KeyError::Corrupt { .. } => IdpError::Config(other.to_string()),
            mcpgate_keys::KeyError::Crypto(why) => IdpError::Crypto(why),
        }
    }
}

impl IdpError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claims_challenge_is_a_json_string_in_the_body() {
        let e = AadError::new("invalid_grant", 50076, "MFA.")
            .with_suberror("basic_action")
            .with_claims(r#"{"access_token":{}}"#.to_owned());
        let body = e.body();
        assert_eq!(body["claims"], json!(r#"{"access_token":{}}"#));
        assert_eq!(body["suberror"], "basic_action");
        assert!(AadError::missing("x").body().get("claims").is_none());
    }
}

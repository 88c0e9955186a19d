//! The errors of an OAuth exchange, keeping what the server said apart from
//! transport and parse failures (as oauth2-rs's `src/error.rs` does). An
//! authorization server's refusal keeps its `error`, `error_description`,
//! `error_uri`, the HTTP status and the raw body (truncated): Entra's
//! trace and correlation ids live only there, and they are what a person
//! debugging a sign-in needs.

use crate::claims::Claims;

/// How much of a server's error body is kept.
pub const MAX_BODY: usize = 2048;

/// The first [`MAX_BODY`] bytes of `body`, cut at a character boundary, as
/// text; what was cut is counted.
pub fn truncate_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if text.len() <= MAX_BODY {
        return text.into_owned();
    }
    let mut end = MAX_BODY;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &text[..end], text.len() - end)
}

/// An OAuth error answer (RFC 6749 §5.2, RFC 8628 §3.5, RFC 7591 §3.2.2, or
/// the authorization response's `error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}{}{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default(),
    status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
pub struct OAuthError {
    /// `error`: the code, such as `invalid_grant`.
    pub error: String,
    /// `error_description`.
    pub description: Option<String>,
    /// `error_uri`.
    pub uri: Option<String>,
    /// The HTTP status it came with (none for an authorization response).
    pub status: Option<u16>,
    /// The body as the server sent it, truncated to [`MAX_BODY`]. Its
    /// `claims`, if any, are read by [`Self::claims_challenge`].
    pub body: String,
}

#[derive(serde::Deserialize)]
struct Wire {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
    #[serde(default)]
    error_uri: Option<String>,
}

// Entra sends `claims` as a JSON string holding the object; an object is
// taken too.
#[derive(serde::Deserialize)]
struct WithClaims {
    claims: serde_json::Value,
}

impl OAuthError {
    /// Reads an error body; `None` when it carries no OAuth `error`.
    pub fn from_body(status: u16, body: &[u8]) -> Option<Self> {
        let wire: Wire = serde_json::from_slice(body).ok()?;
        Some(Self {
            error: wire.error,
            description: wire.error_description,
            uri: wire.error_uri,
            status: Some(status),
            body: truncate_body(body),
        })
    }

    /// Whether the code is `code`.
    pub fn is(&self, code: &str) -> bool {
        self.error == code
    }

    /// The claims a new, interactive sign-in must satisfy, when the server
    /// refused for want of them (Entra: `interaction_required` or
    /// `invalid_grant` with `claims`, AADSTS50076), read from the body kept
    /// (a body cut short carries none).
    pub fn claims_challenge(&self) -> Option<Claims> {
        let with: WithClaims = serde_json::from_str(&self.body).ok()?;
        match with.claims {
            serde_json::Value::String(text) => Claims::from_json(&text).ok(),
            object @ serde_json::Value::Object(_) => Claims::from_json(&object.to_string()).ok(),
            _ => None,
        }
    }
}

/// Failures of an OAuth exchange.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The authorization server refused, in OAuth's own form.
    #[error("the authorization server refused: {0}")]
    Refused(OAuthError),
    /// The request could not be sent or its answer not read.
    #[error("cannot reach {url}: {source}")]
    Http {
        /// URL.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// An answer that is not what the protocol says. The body is kept for
    /// error statuses only: a successful answer may hold tokens.
    #[error("the {endpoint} endpoint's answer (HTTP {status}) is not a valid {what}: {detail}")]
    Malformed {
        /// Which endpoint (`token`, `device authorization`, `registration`).
        endpoint: &'static str,
        /// What was expected.
        what: &'static str,
        /// The HTTP status.
        status: u16,
        /// What is wrong (no values from the body).
        detail: String,
        /// The raw body of an error status, truncated.
        body: Option<String>,
    },
    /// The authorization response's `state` is not this request's.
    #[error(
        "the authorization response's state does not match the request: refusing it (possible CSRF)"
    )]
    StateMismatch,
    /// RFC 9207: the response names another issuer.
    #[error(
        "the authorization response comes from issuer {got}, not {expected}: refusing it (RFC 9207 mix-up defence)"
    )]
    IssuerMismatch {
        /// The `iss` received.
        got: String,
        /// The issuer asked.
        expected: String,
    },
    /// RFC 9207: `iss` is promised and missing.
    #[error(
        "{issuer} says it sends `iss` in authorization responses, and this one has none: refusing it (RFC 9207)"
    )]
    IssuerMissing {
        /// The issuer.
        issuer: String,
    },
    /// The authorization response has neither `code` nor `error`.
    #[error("the authorization response has no code")]
    NoCode,
    /// A URL the flow must use is not one.
    #[error("{what} {url:?} is not a valid URL: {reason}")]
    BadUrl {
        /// Which URL.
        what: &'static str,
        /// The text.
        url: String,
        /// Why.
        reason: String,
    },
    /// The device code expired before anyone approved it.
    #[error("the device code expired before it was approved")]
    DeviceCodeExpired,
    /// No loopback listener could be opened.
    #[error("cannot listen on loopback for the redirect: {0}")]
    Loopback(#[source] std::io::Error),
    /// No valid callback arrived before the sign-in's deadline.
    #[error("no sign-in arrived before the timeout ({0} s)")]
    CallbackTimeout(u64),
    /// Non-interactive mode: the authorization server wants a person.
    #[error(
        "the authorization endpoint answered {0} instead of redirecting: it wants a person; sign in interactively"
    )]
    NotRedirected(u16),
    /// Non-interactive mode: a redirect that goes neither to the server
    /// itself nor to the redirect URI, or too many of them.
    #[error("the authorization endpoint's redirects went wrong: {0}")]
    Redirect(&'static str),
}

/// Why a client operation failed, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Discovery.
    #[error(transparent)]
    Discovery(#[from] crate::discovery::DiscoveryError),
    /// An OAuth exchange (sign-in, refresh, registration).
    #[error(transparent)]
    Flow(#[from] FlowError),
    /// The MCP transport.
    #[error(transparent)]
    Mcp(#[from] crate::mcp::McpError),
    /// The client key could not sign an assertion.
    #[error(transparent)]
    Key(#[from] crate::assertion::KeyError),
    /// The store could not be read or written.
    #[error("token cache: {0}")]
    Store(#[from] std::io::Error),
    /// The server's authorization server is not the one configured.
    #[error(
        "{server} signs in at {named}, not at {configured} (the authorization server configured with --issuer): refusing to sign in there"
    )]
    WrongAuthorizationServer {
        /// The MCP server.
        server: String,
        /// The issuer configured.
        configured: String,
        /// The issuer its metadata names.
        named: String,
    },
    /// The configured client secret or key belongs to another
    /// authorization server: it is not sent to this one.
    #[error(
        "the client secret or key of {client_id} belongs to {bound}, and {server} signs in at {named}: refusing to send it there (pass --issuer {named} if that server is really where this client is registered)"
    )]
    CredentialsBoundElsewhere {
        /// The client id.
        client_id: String,
        /// Where its credentials belong.
        bound: String,
        /// The MCP server.
        server: String,
        /// The issuer its metadata names.
        named: String,
    },
    /// A secret or key was configured with no client id to go with it.
    #[error("a client secret or key is configured without --client-id: it belongs to a client id")]
    CredentialsWithoutClientId,
    /// No way to identify this client at the authorization server.
    #[error(
        "{issuer} supports no dynamic client registration: pass --client-id with a client registered there{}",
        if *entra { " (for Entra ID: the Application (client) ID of a public client app registration with a http://localhost redirect URI)" } else { "" }
    )]
    NoClientIdentity {
        /// The issuer.
        issuer: String,
        /// Whether it is Entra ID.
        entra: bool,
    },
    /// The authorization server lacks an endpoint the grant needs.
    #[error("{issuer} publishes no {endpoint}{hint}")]
    MissingEndpoint {
        /// The issuer.
        issuer: String,
        /// Which endpoint.
        endpoint: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// PKCE with S256 is not offered.
    #[error(
        "{issuer} does not advertise PKCE with S256 (code_challenge_methods_supported): refusing to sign in there"
    )]
    NoPkce {
        /// The issuer.
        issuer: String,
    },
    /// No browser here, and no device code there.
    #[error(
        "no browser can be opened here ({reason}), and {issuer} offers no device code sign-in: pass --non-interactive if it approves without a page, or sign in on a machine with a browser"
    )]
    NoBrowser {
        /// Why.
        reason: crate::redirect::NoBrowser,
        /// The issuer.
        issuer: String,
    },
    /// The server asked for claims again after a sign-in that sent them.
    #[error(
        "{server} still asks for claims after a sign-in that sent them (insufficient_claims: {claims}){}",
        description.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
    )]
    ClaimsStillInsufficient {
        /// The server.
        server: String,
        /// The claims it asks for now (not secret).
        claims: String,
        /// Its `error_description`.
        description: Option<String>,
    },
    /// A claims challenge whose claims cannot be read.
    #[error(
        "{server} asked for claims (insufficient_claims), and its claims value is unusable: {reason}"
    )]
    BadClaims {
        /// The server.
        server: String,
        /// Why.
        #[source]
        reason: crate::claims::ClaimsError,
    },
    /// The server still answers 401 after several sign-ins.
    #[error("{server} still refuses the token after {rounds} sign-ins{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    StillUnauthorized {
        /// The server.
        server: String,
        /// Sign-ins tried.
        rounds: usize,
        /// Its `error_description`.
        description: Option<String>,
    },
    /// The server answers 403.
    #[error("{server} refuses this operation (403{}){}",
        scope.as_deref().map(|s| format!(", needs scope {s}")).unwrap_or_default(),
        if *after_step_up { " even after asking for more scopes" } else { "" })]
    Forbidden {
        /// The server.
        server: String,
        /// The scope it names.
        scope: Option<String>,
        /// Whether a step-up was tried.
        after_step_up: bool,
    },
    /// `token` against a server that asked for none.
    #[error("{server} did not ask for a token")]
    NoTokenAsked {
        /// The server.
        server: String,
    },
    /// The server answered with a JSON-RPC error.
    #[error("the server answered error {code}: {message}")]
    Rpc {
        /// Code.
        code: i64,
        /// Message.
        message: String,
    },
    /// A blocking task (taking the store's lock, opening the browser)
    /// did not finish.
    #[error("a background task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_code_description_and_raw_body() {
        let body =
            br#"{"error":"invalid_grant","error_description":"AADSTS70000: bad","trace_id":"t-1"}"#;
        let e = OAuthError::from_body(400, body).expect("an OAuth error");
        assert_eq!(e.error, "invalid_grant");
        assert_eq!(e.description.as_deref(), Some("AADSTS70000: bad"));
        assert!(e.body.contains("trace_id"), "raw body kept: {}", e.body);
        assert_eq!(e.to_string(), "invalid_grant: AADSTS70000: bad (HTTP 400)");
        assert!(OAuthError::from_body(500, b"<html>oops</html>").is_none());
        assert!(e.claims_challenge().is_none());
    }

    #[test]
    fn keeps_entras_claims_string_and_an_object() {
        let body = br#"{"error":"invalid_grant","error_description":"AADSTS50076: MFA","error_codes":[50076],"suberror":"basic_action","claims":"{\"access_token\":{\"capolids\":{\"essential\":true,\"values\":[\"p1\"]}}}"}"#;
        let e = OAuthError::from_body(400, body).expect("an OAuth error");
        let claims = e.claims_challenge().expect("claims");
        assert_eq!(
            claims.as_json(),
            r#"{"access_token":{"capolids":{"essential":true,"values":["p1"]}}}"#
        );
        let body = br#"{"error":"interaction_required","claims":{"access_token":{"acrs":{"essential":true,"value":"c1"}}}}"#;
        let e = OAuthError::from_body(400, body).expect("an OAuth error");
        assert!(e.claims_challenge().is_some());
        for bad in [
            br#"{"error":"invalid_grant","claims":"not json"}"#.as_slice(),
            br#"{"error":"invalid_grant","claims":7}"#,
        ] {
            let e = OAuthError::from_body(400, bad).expect("an OAuth error");
            assert!(e.claims_challenge().is_none());
        }
    }

    #[test]
    fn long_bodies_are_truncated_at_a_character() {
        let body = "é".repeat(MAX_BODY);
        let kept = truncate_body(body.as_bytes());
        assert!(kept.len() < body.len());
        assert!(kept.ends_with("more bytes)"));
    }
}

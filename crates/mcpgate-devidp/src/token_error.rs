//! Why the token endpoint refuses a request, one variant per answer, and
//! the one exhaustive mapping of each to Entra's error (OAuth `error`,
//! AADSTS number, status, text). A new refusal cannot reach the wire
//! without a line here; none carries a secret or a token.
//!
//! Codes follow
//! <https://learn.microsoft.com/entra/identity-platform/reference-error-codes>.

use axum::http::StatusCode;

use crate::conditional_access::Unmet;
use crate::error::AadError;

/// A refusal of the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// `grant_type` names a grant the IdP does not know (70003).
    UnsupportedGrantType(String),
    /// `client_id` in the body differs from the one in Basic (700016).
    ClientIdMismatch,
    /// A public client presented a secret or an assertion (700025).
    PublicClientWithCredential,
    /// A client assertion from an app that registered no certificate
    /// (700027).
    AssertionUnsupported {
        /// The client.
        client_id: String,
    },
    /// `client_assertion_type` is not the JWT bearer type (AADSTS50027's
    /// family: the assertion cannot be read).
    ClientAssertionType,
    /// The client assertion cannot be read (50027).
    ClientAssertionInvalid(&'static str),
    /// No registered key verifies the client assertion (700027).
    ClientAssertionSignature {
        /// The client.
        client_id: String,
    },
    /// The client assertion names another audience than this token
    /// endpoint (700027, with the reason).
    ClientAssertionAudience,
    /// The client assertion's `iss`/`sub` is not the client id (700021).
    ClientAssertionOtherClient,
    /// The client assertion is expired or not yet valid (700024).
    ClientAssertionTimeRange,
    /// Both a secret and an assertion were sent (700016's family).
    TwoCredentials,
    /// A confidential client sent no credential (7000218).
    CredentialMissing,
    /// The secret is wrong (7000215).
    SecretWrong {
        /// The client.
        client_id: String,
    },
    /// The grant's user is no longer in the directory (50034).
    UserGone,
    /// The code is not known (9002313).
    CodeUnknown,
    /// The code was issued to another client (70000).
    CodeOtherClient,
    /// The code was already redeemed (54005).
    CodeRedeemed,
    /// The code has expired (70008).
    CodeExpired,
    /// `redirect_uri` differs from the authorize request's (500112).
    RedirectMismatch {
        /// What the token request sent.
        given: String,
        /// What the authorize request sent.
        expected: String,
    },
    /// The PKCE verifier does not match the challenge (501481).
    VerifierMismatch,
    /// A verifier for a code requested without a challenge (501481).
    VerifierWithoutChallenge,
    /// The refresh token is not known (9002313).
    RefreshUnknown,
    /// The refresh token was issued to another client (70000).
    RefreshOtherClient,
    /// The refresh token's family is revoked (50173).
    RefreshRevoked,
    /// A rotated refresh token came back: the family is now revoked (50173).
    RefreshReused,
    /// The refresh token has expired (700082).
    RefreshExpired,
    /// Client credentials need `<resource>/.default` (1002012).
    ClientCredentialsScope(String),
    /// The device code is not known (70000).
    DeviceUnknown,
    /// The device code was issued to another client (70000).
    DeviceOtherClient,
    /// The device code has expired (70020).
    DeviceExpired,
    /// Nobody has answered the device code yet (70016).
    AuthorizationPending,
    /// Polled faster than the interval (70016).
    SlowDown,
    /// The user declined (65004). RFC 8628 calls it `access_denied`;
    /// Entra's documentation `authorization_declined`; MCP clients follow
    /// the RFC.
    DeviceDeclined,
    /// The device code was already redeemed (54005).
    DeviceRedeemed,
    /// The jwt-bearer grant without `requested_token_use=on_behalf_of`
    /// (50027).
    OboNotRequested,
    /// The OBO assertion's signature does not verify (50013).
    AssertionSignature,
    /// The OBO assertion is not from this IdP (50013).
    AssertionIssuer,
    /// The OBO assertion is outside its lifetime (500133).
    AssertionTime,
    /// The OBO assertion is for another audience (50013).
    AssertionAudience {
        /// The assertion's audience.
        aud: String,
        /// The client presenting it.
        client_id: String,
    },
    /// The OBO assertion is an app-only token: Entra answers
    /// `unauthorized_client` with 7000114, naming the client that asked.
    AssertionAppOnly {
        /// The client presenting it.
        client_id: String,
    },
    /// The OBO assertion's user is not in the directory (50034).
    AssertionUserGone,
    /// OBO asked for the client itself (90009).
    OboForItself,
    /// A Conditional Access rule (or the request's `claims`) needs a second
    /// factor the grant's sign-in did not do (50076, `basic_action`, with
    /// the claims challenge): `invalid_grant` for a code, refresh token or
    /// device code, `interaction_required` for On-Behalf-Of, as Entra
    /// answers
    /// (<https://learn.microsoft.com/entra/identity-platform/v2-oauth2-on-behalf-of-flow#error-response-example>).
    MfaRequired {
        /// The resource app id asked for.
        resource: String,
        /// What the grant lacks: the challenge's content.
        unmet: Unmet,
        /// The grant is On-Behalf-Of.
        on_behalf_of: bool,
    },
}

impl From<TokenError> for AadError {
    fn from(e: TokenError) -> Self {
        use TokenError as E;
        let client = |code, message: String| {
            AadError::new("invalid_client", code, message).with_status(StatusCode::UNAUTHORIZED)
        };
        let grant = |code, message: &str| AadError::new("invalid_grant", code, message);
        let device = |error, code, message: &str| AadError::new(error, code, message);
        match e {
            E::UnsupportedGrantType(g) => AadError::new(
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{g}'."),
            ),
            E::ClientIdMismatch => client(
                700016,
                "The client_id in the body does not match the one in the Authorization header."
                    .into(),
            ),
            E::PublicClientWithCredential => client(
                700025,
                "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.".into(),
            ),
            E::AssertionUnsupported { client_id } => client(
                700027,
                format!(
                    "Client assertion failed signature validation: no certificate credential is registered for application '{client_id}'."
                ),
            ),
            E::ClientAssertionType => client(
                50027,
                format!("Invalid JWT token: client_assertion_type must be '{}'.", crate::client_assertion::JWT_BEARER_ASSERTION),
            ),
            E::ClientAssertionInvalid(why) => client(50027, format!("Invalid JWT token: {why}.")),
            E::ClientAssertionSignature { client_id } => client(
                700027,
                format!(
                    "Client assertion failed signature validation: no certificate credential registered for application '{client_id}' verifies it."
                ),
            ),
            E::ClientAssertionAudience => client(
                700027,
                "Client assertion contains an invalid audience: it must be this tenant's token endpoint.".into(),
            ),
            E::ClientAssertionOtherClient => client(
                700021,
                "Client assertion application identifier doesn't match 'client_id' parameter.".into(),
            ),
            E::ClientAssertionTimeRange => client(
                700024,
                "Client assertion is not within its valid time range.".into(),
            ),
            E::TwoCredentials => client(
                700016,
                "Only one client credential may be presented: 'client_secret' or 'client_assertion'.".into(),
            ),
            E::CredentialMissing => client(
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".into(),
            ),
            E::SecretWrong { client_id } => client(
                7000215,
                format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                ),
            ),
            E::UserGone => grant(50034, "The user account no longer exists."),
            E::CodeUnknown => grant(
                9002313,
                "Invalid request. Request is malformed or invalid: the authorization code is not known.",
            ),
            E::CodeOtherClient => grant(
                70000,
                "Provided grant is invalid or malformed: the authorization code was issued to another client.",
            ),
            E::CodeRedeemed => grant(
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
            ),
            E::CodeExpired => grant(
                70008,
                "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
            ),
            E::RedirectMismatch { given, expected } => AadError::new(
                "invalid_grant",
                500112,
                format!(
                    "The reply address '{given}' does not match the reply address '{expected}' provided when requesting Authorization code."
                ),
            ),
            E::VerifierMismatch => grant(
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            ),
            E::VerifierWithoutChallenge => grant(
                501481,
                "A code_verifier was sent for a code requested without code_challenge.",
            ),
            E::RefreshUnknown => grant(
                9002313,
                "Invalid request. Request is malformed or invalid: the refresh token is not known (it may have been revoked).",
            ),
            E::RefreshOtherClient => grant(
                70000,
                "Provided grant is invalid or malformed: the refresh token was issued to another client.",
            ),
            E::RefreshRevoked => grant(
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is needed.",
            ),
            E::RefreshReused => grant(
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is needed. (A refresh token was used twice; every token of its family is revoked.)",
            ),
            E::RefreshExpired => grant(700082, "The refresh token has expired due to inactivity."),
            E::ClientCredentialsScope(scope) => AadError::new(
                "invalid_scope",
                1002012,
                format!(
                    "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            ),
            E::DeviceUnknown => device("bad_verification_code", 70000, "The device code is not known."),
            E::DeviceOtherClient => device(
                "bad_verification_code",
                70000,
                "The device code was issued to another client.",
            ),
            E::DeviceExpired => device(
                "expired_token",
                70020,
                "The provided value for the input parameter 'device_code' is not valid. This device code has expired.",
            ),
            E::AuthorizationPending => device(
                "authorization_pending",
                70016,
                "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
            ),
            E::SlowDown => device(
                "slow_down",
                70016,
                "OAuth 2.0 device flow error. Polling faster than the interval; slow down.",
            ),
            E::DeviceDeclined => device(
                "access_denied",
                65004,
                "User declined to consent to access the app.",
            ),
            E::DeviceRedeemed => grant(54005, "The device code was already redeemed."),
            E::OboNotRequested => AadError::new(
                "invalid_request",
                50027,
                "The jwt-bearer grant needs requested_token_use=on_behalf_of.",
            ),
            E::AssertionSignature => grant(50013, "Assertion failed signature validation."),
            E::AssertionIssuer => grant(50013, "Assertion is not issued by this identity provider."),
            E::AssertionTime => grant(500133, "Assertion is not within its valid time range."),
            E::AssertionAudience { aud, client_id } => AadError::new(
                "invalid_grant",
                50013,
                format!(
                    "Assertion audience does not match the Client app presenting the assertion. The audience in the assertion was '{aud}' and the expected audience is '{client_id}' or one of the Application Id URIs of this application."
                ),
            ),
            E::AssertionAppOnly { client_id } => AadError::new(
                "unauthorized_client",
                7000114,
                format!("Application '{client_id}' is not allowed to make application on-behalf-of calls."),
            ),
            E::AssertionUserGone => grant(50034, "The user account in the assertion does not exist."),
            E::OboForItself => AadError::new(
                "invalid_request",
                90009,
                "Application is requesting a token for itself. On-Behalf-Of is for a downstream API.",
            ),
            E::MfaRequired {
                resource,
                unmet,
                on_behalf_of,
            } => AadError::new(
                if on_behalf_of {
                    "interaction_required"
                } else {
                    "invalid_grant"
                },
                50076,
                format!(
                    "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '{resource}'."
                ),
            )
            .with_suberror("basic_action")
            .with_claims(unmet.claims()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_entra_errors() {
        let e: AadError = TokenError::SecretWrong {
            client_id: "c".into(),
        }
        .into();
        assert_eq!(
            (e.error, e.code, e.status),
            ("invalid_client", 7000215, StatusCode::UNAUTHORIZED)
        );
        let e: AadError = TokenError::DeviceDeclined.into();
        assert_eq!((e.error, e.code), ("access_denied", 65004));
        let e: AadError = TokenError::UnsupportedGrantType("password".into()).into();
        assert_eq!((e.error, e.code), ("unsupported_grant_type", 70003));
    }

    #[test]
    fn an_unmet_mfa_rule_is_50076_with_its_claims_challenge() {
        let unmet = Unmet {
            capolids: ["c0a1".to_owned()].into(),
            acrs: Default::default(),
        };
        let claims = r#"{"access_token":{"capolids":{"essential":true,"values":["c0a1"]}}}"#;
        for (on_behalf_of, error) in [(false, "invalid_grant"), (true, "interaction_required")] {
            let e: AadError = TokenError::MfaRequired {
                resource: "api-id".into(),
                unmet: unmet.clone(),
                on_behalf_of,
            }
            .into();
            assert_eq!(
                (e.error, e.code, e.status),
                (error, 50076, StatusCode::BAD_REQUEST)
            );
            let body = e.body();
            assert_eq!(body["suberror"], "basic_action");
            assert_eq!(body["claims"], claims, "a JSON string, exactly");
            assert_eq!(body["error_codes"], serde_json::json!([50076]));
            let text = body["error_description"].as_str().expect("description");
            assert!(
                text.starts_with("AADSTS50076: Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access 'api-id'. Trace ID: "),
                "{text}"
            );
        }
    }
}

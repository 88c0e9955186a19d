//! Why a sign-in stops at the authorization endpoint or its pages, one
//! variant per answer, and the one exhaustive mapping of each to Entra's
//! error. Whether it is shown as a page or sent back to the client is the
//! caller's choice (a redirect only once the redirect URI is known good).

use axum::http::StatusCode;

use crate::error::AadError;

/// A refusal of the authorization endpoint or a sign-in form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// The redirect URI does not parse (50011).
    RedirectInvalid,
    /// The redirect URI is not registered for the client (50011).
    RedirectNotRegistered {
        /// What the request sent.
        redirect_uri: String,
        /// The client.
        client_id: String,
    },
    /// `response_mode` other than query, fragment, form_post (900144).
    ResponseModeUnsupported(String),
    /// `response_type` other than `code` (700054).
    ResponseTypeUnsupported(String),
    /// A public client without PKCE (9002325).
    PkceRequired,
    /// `plain` PKCE, or a challenge without a method (9002325).
    PkcePlain,
    /// A PKCE method other than S256 (9002325).
    PkceMethodUnsupported(String),
    /// A challenge that is not 43 base64url characters (501491).
    ChallengeSize,
    /// The auto-approved user is not in the directory (50034).
    AutoApproveUserMissing(String),
    /// `prompt=none` and nobody is signed in (50058).
    InteractionRequired,
    /// `prompt=none` and consent is missing (65001, `consent_required`).
    ConsentRequired {
        /// The client.
        client_id: String,
        /// The resource asked.
        resource: String,
    },
    /// Wrong password, or a one-click sign-in that is not allowed (50126).
    BadCredentials,
    /// No such user (50034).
    UserUnknown(String),
    /// The sign-in page expired or was answered (50058).
    PageExpired,
    /// The form did not come from the page that showed it (90012, 403).
    CsrfFailed,
    /// The user declined consent (65004).
    Declined,
    /// `prompt=none`, and Conditional Access needs a second factor the
    /// session's sign-in did not do (50076, `interaction_required`).
    SecondFactorRequired {
        /// The resource asked.
        resource: String,
    },
    /// A wrong second-factor code (500121).
    SecondFactorWrong,
    /// Too many wrong second-factor codes: the sign-in ends (500121).
    SecondFactorLocked,
}

impl From<AuthorizeError> for AadError {
    fn from(e: AuthorizeError) -> Self {
        use AuthorizeError as E;
        let invalid = |code, message: String| AadError::new("invalid_request", code, message);
        match e {
            E::RedirectInvalid => invalid(50011, "The redirect URI is not a valid URL.".into()),
            E::RedirectNotRegistered {
                redirect_uri,
                client_id,
            } => invalid(
                50011,
                format!(
                    "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application '{client_id}'. Make sure the redirect URI sent in the request matches one added to your application in the Azure portal."
                ),
            ),
            E::ResponseModeUnsupported(mode) => invalid(
                900144,
                format!("The response_mode '{mode}' is not supported."),
            ),
            E::ResponseTypeUnsupported(t) => AadError::new(
                "unsupported_response_type",
                700054,
                format!("response_type '{t}' is not enabled for the application."),
            ),
            E::PkceRequired => invalid(
                9002325,
                "Proof Key for Code Exchange is required for public clients. Send code_challenge with code_challenge_method=S256.".into(),
            ),
            E::PkcePlain => invalid(
                9002325,
                "Proof Key for Code Exchange must use code_challenge_method=S256; 'plain' is not accepted.".into(),
            ),
            E::PkceMethodUnsupported(m) => invalid(
                9002325,
                format!("The code_challenge_method '{m}' is not supported; use S256."),
            ),
            E::ChallengeSize => invalid(
                501491,
                "Invalid size of Code_Challenge parameter: an S256 challenge is 43 base64url characters.".into(),
            ),
            E::AutoApproveUserMissing(name) => invalid(
                50034,
                format!("The user account {name} does not exist in the directory."),
            ),
            E::InteractionRequired => AadError::new(
                "interaction_required",
                50058,
                "A silent sign-in request was sent but no user is signed in.",
            ),
            E::ConsentRequired {
                client_id,
                resource,
            } => {
                let mut e = AadError::consent_required(&client_id, &resource);
                e.error = "consent_required";
                e
            }
            E::BadCredentials => AadError::new(
                "invalid_grant",
                50126,
                "Error validating credentials due to invalid username or password.",
            ),
            E::UserUnknown(username) => AadError::new(
                "invalid_grant",
                50034,
                format!(
                    "The user account {username} does not exist in the directory. To sign into this application, the account must be added to the directory."
                ),
            ),
            E::PageExpired => invalid(
                50058,
                "This sign-in page has expired or was already used. Start the sign-in again from the application.".into(),
            ),
            E::CsrfFailed => invalid(
                90012,
                "The form was not submitted from the page that showed it (CSRF check failed). Reload the page, or start the sign-in again.".into(),
            )
            .with_status(StatusCode::FORBIDDEN),
            E::Declined => AadError::new(
                "access_denied",
                65004,
                "User declined to consent to access the app.",
            ),
            E::SecondFactorRequired { resource } => AadError::new(
                "interaction_required",
                50076,
                format!(
                    "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '{resource}'."
                ),
            )
            .with_suberror("basic_action"),
            E::SecondFactorWrong => AadError::new(
                "invalid_grant",
                500121,
                "Authentication failed during strong authentication request: the code is not right. Enter the code from your authenticator app.",
            ),
            E::SecondFactorLocked => AadError::new(
                "access_denied",
                500121,
                "Authentication failed during strong authentication request: too many wrong codes. Start the sign-in again from the application.",
            ),
        }
    }
}

//! Authentication at the MCP endpoint: a token is taken and validated,
//! and the caller handed to whatever answers.

use std::sync::Arc;

use axum::response::Response;
use http::request::Parts;
use mcpgate_token::{Principal, Validator};

use crate::bearer;
use crate::challenge::{AuthRejection, ChallengeContext};

/// What authentication needs.
#[derive(Debug)]
pub struct AuthState {
    /// The validator, with the policy's own requirement.
    pub validator: Arc<Validator>,
    /// What challenges name.
    pub challenge: ChallengeContext,
}

/// The caller, if the request carries a valid token that meets the
/// policy; else the challenge to answer with. Called inline by the
/// endpoint, not as a layer: a layer would box a future per request.
pub async fn authenticate(state: &AuthState, parts: &Parts) -> Result<Arc<Principal>, Response> {
    let outcome = match bearer::extract(&parts.headers, parts.uri.query()) {
        Ok(token) => state
            .validator
            .validate(token)
            .await
            .map_err(AuthRejection::Token),
        Err(e) => Err(AuthRejection::Request(e)),
    };
    match outcome {
        Ok(principal) => {
            // The request's span (opened by the server around each
            // request) carries who asked, for traces.
            let span = tracing::Span::current();
            span.record("enduser.id", principal.object_id.as_deref().unwrap_or(""));
            span.record(
                "enduser.tenant",
                principal.tenant_id.as_deref().unwrap_or(""),
            );
            span.record(
                "client.app",
                principal.client_app_id.as_deref().unwrap_or(""),
            );
            tracing::debug!(
                target: "mcpgate::auth",
                oid = principal.object_id.as_deref().unwrap_or(""),
                client_app = principal.client_app_id.as_deref().unwrap_or(""),
                kind = principal.kind.as_str(),
                "token accepted"
            );
            Ok(principal)
        }
        Err(rejection) => Err(refuse(state, rejection)),
    }
}

/// The answer to a refused request, counted and logged: the challenge
/// `rejection` renders. The endpoint also refuses this way a good token
/// whose holder must sign in again satisfying claims
/// ([`AuthRejection::Claims`]).
pub fn refuse(state: &AuthState, rejection: AuthRejection) -> Response {
    let reason = match &rejection {
        AuthRejection::Token(e) => e.code(),
        AuthRejection::Request(e) => e.code(),
        AuthRejection::Claims(_) => "insufficient_claims",
    };
    metrics::counter!("mcpgate_token_refusals_total", "reason" => reason).increment(1);
    tracing::Span::current().record("decision", "unauthenticated");
    match &rejection {
        AuthRejection::Token(e) if e.is_server_side() => {
            tracing::warn!(target: "mcpgate::auth", error = %e, "could not verify a token");
        }
        AuthRejection::Token(e) => {
            tracing::info!(target: "mcpgate::auth", reason = e.code(), "token refused");
        }
        AuthRejection::Request(e) => {
            tracing::debug!(target: "mcpgate::auth", reason = e.describe(), "request refused");
        }
        // Claims name policies, not people: they may be logged.
        AuthRejection::Claims(c) => {
            tracing::info!(target: "mcpgate::auth", claims = c.json(), "the identity provider asks more of the caller's sign-in: relayed as insufficient_claims");
        }
    }
    rejection.into_response(&state.challenge)
}

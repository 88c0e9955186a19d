//! The authentication middleware in front of the MCP endpoint: a token is
//! taken, validated, and the caller handed to the tools in the request's
//! extensions.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::Method;
use mcpgate_token::{Principal, Validator};

use crate::bearer;
use crate::challenge::{AuthRejection, ChallengeContext};
use crate::session::{self, SessionBindings};

/// The authenticated caller, as the request's extensions carry it to tool
/// handlers (inside rmcp's `http::request::Parts`).
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<Principal>);

/// What the middleware needs.
#[derive(Debug)]
pub struct AuthState {
    /// The validator, with the policy's own requirement.
    pub validator: Arc<Validator>,
    /// What challenges name.
    pub challenge: ChallengeContext,
    /// Who owns which MCP session.
    pub sessions: SessionBindings,
}

/// Lets a request through only with a valid token that meets the policy.
pub async fn require_bearer(
    State(state): State<Arc<AuthState>>,
    mut request: Request,
    next: Next,
) -> Response {
    // CORS preflights carry no credentials by design.
    if request.method() == Method::OPTIONS {
        return next.run(request).await;
    }
    let outcome = match bearer::extract(request.headers(), request.uri().query()) {
        Ok(token) => state
            .validator
            .validate(token)
            .await
            .map_err(AuthRejection::Token),
        Err(e) => Err(AuthRejection::Request(e)),
    };
    match outcome {
        Ok(principal) => {
            tracing::debug!(
                target: "mcpgate::auth",
                oid = principal.object_id.as_deref().unwrap_or(""),
                client_app = principal.client_app_id.as_deref().unwrap_or(""),
                kind = principal.kind.as_str(),
                "token accepted"
            );
            request.extensions_mut().insert(Caller(principal.clone()));
            session::bind(&state.sessions, &principal, request, next).await
        }
        Err(rejection) => {
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
            }
            rejection.into_response(&state.challenge)
        }
    }
}

//! Binding `Mcp-Session-Id` to the caller who opened the session, so that a
//! session id that leaks cannot be used by anyone else (MCP security best
//! practices, "session hijacking").

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use serde_json::json;

use mcpgate_token::Principal;

const SESSION_HEADER: &str = "mcp-session-id";

/// Who opened each session.
#[derive(Debug)]
pub struct SessionBindings {
    owners: moka::sync::Cache<String, Arc<str>>,
}

impl SessionBindings {
    /// Bindings forgotten after `idle` without use.
    pub fn new(idle: Duration) -> Self {
        Self {
            owners: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(idle)
                .build(),
        }
    }
}

/// Refuses a session id presented by anyone but its owner, and records the
/// owner of each new session. Called by the authentication middleware once
/// the caller is known (one layer rather than two: each `from_fn` layer
/// boxes a future per request).
pub async fn bind(
    bindings: &SessionBindings,
    principal: &Principal,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(id) = &presented {
        // Unknown and foreign sessions look alike: nothing tells an attacker
        // that a guessed id exists.
        match bindings.owners.get(id) {
            Some(owner) if *owner == principal.identity_key() => {}
            _ => return session_not_found(),
        }
    }
    let closing = request.method() == Method::DELETE;
    let response = next.run(request).await;
    if let Some(id) = response
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        && presented.is_none()
    {
        bindings
            .owners
            .insert(id.to_owned(), principal.identity_key().into());
    }
    if closing
        && response.status().is_success()
        && let Some(id) = &presented
    {
        bindings.owners.invalidate(id);
    }
    response
}

fn session_not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "jsonrpc": "2.0",
            "error": { "code": -32001, "message": "Session not found" },
            "id": null,
        })),
    )
        .into_response()
}

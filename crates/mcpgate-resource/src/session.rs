//! Binding `Mcp-Session-Id` to the caller who opened the session, so that a
//! session id that leaks cannot be used by anyone else (MCP security best
//! practices, "session hijacking").
//!
//! With several replicas, a [`SharedSessions`] store holds the owners and
//! what rmcp needs to resume a session (its `initialize` parameters), so
//! that a session opened at one replica continues at another. Each replica
//! still answers a session it knows from memory: the store is read only for
//! a session first seen here.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
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

/// A boxed future, so that the store can be held as a trait object.
pub type SessionFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sessions every replica sees (a shared store). Failures are the
/// implementation's to log; a session it cannot vouch for is not found.
pub trait SharedSessions: Send + Sync + fmt::Debug {
    /// Who opened session `id`, renewing its idle time.
    fn owner<'a>(&'a self, id: &'a str) -> SessionFuture<'a, Option<String>>;
    /// Records who opened session `id`.
    fn record_owner<'a>(&'a self, id: &'a str, owner: &'a str) -> SessionFuture<'a, ()>;
    /// Ends session `id` everywhere.
    fn forget<'a>(&'a self, id: &'a str) -> SessionFuture<'a, ()>;
    /// What rmcp kept to resume session `id` (JSON).
    fn load_state<'a>(&'a self, id: &'a str) -> SessionFuture<'a, Result<Option<String>, String>>;
    /// Keeps what rmcp needs to resume session `id` (JSON).
    fn store_state<'a>(
        &'a self,
        id: &'a str,
        state: String,
    ) -> SessionFuture<'a, Result<(), String>>;
}

/// Who opened each session.
#[derive(Debug)]
pub struct SessionBindings {
    owners: moka::sync::Cache<String, Arc<str>>,
    shared: Option<Arc<dyn SharedSessions>>,
}

impl SessionBindings {
    /// Bindings forgotten after `idle` without use; `shared` makes them
    /// known to every replica.
    pub fn new(idle: Duration, shared: Option<Arc<dyn SharedSessions>>) -> Self {
        Self {
            owners: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(idle)
                .build(),
            shared,
        }
    }

    /// The owner of `id`: from memory, else from the shared store (a
    /// session opened at another replica), then remembered here.
    async fn owner(&self, id: &str) -> Option<Arc<str>> {
        if let Some(owner) = self.owners.get(id) {
            return Some(owner);
        }
        let owner: Arc<str> = self.shared.as_ref()?.owner(id).await?.into();
        self.owners.insert(id.to_owned(), owner.clone());
        Some(owner)
    }
}

/// rmcp's hook for resuming, at this replica, a session another opened.
#[derive(Debug)]
pub struct ResumableSessions(pub Arc<dyn SharedSessions>);

#[async_trait::async_trait]
impl rmcp::transport::streamable_http_server::session::store::SessionStore for ResumableSessions {
    async fn load(
        &self,
        session_id: &str,
    ) -> Result<
        Option<rmcp::transport::streamable_http_server::session::store::SessionState>,
        rmcp::transport::streamable_http_server::session::store::SessionStoreError,
    > {
        match self.0.load_state(session_id).await? {
            Some(json) => Ok(Some(serde_json::from_str(&json)?)),
            None => Ok(None),
        }
    }

    async fn store(
        &self,
        session_id: &str,
        state: &rmcp::transport::streamable_http_server::session::store::SessionState,
    ) -> Result<(), rmcp::transport::streamable_http_server::session::store::SessionStoreError>
    {
        let json = serde_json::to_string(state)?;
        Ok(self.0.store_state(session_id, json).await?)
    }

    async fn delete(
        &self,
        session_id: &str,
    ) -> Result<(), rmcp::transport::streamable_http_server::session::store::SessionStoreError>
    {
        self.0.forget(session_id).await;
        Ok(())
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
        match bindings.owner(id).await {
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
        let owner = principal.identity_key();
        if let Some(shared) = &bindings.shared {
            shared.record_owner(id, &owner).await;
        }
        bindings.owners.insert(id.to_owned(), owner.into());
    }
    if closing
        && response.status().is_success()
        && let Some(id) = &presented
    {
        bindings.owners.invalidate(id);
        if let Some(shared) = &bindings.shared {
            shared.forget(id).await;
        }
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

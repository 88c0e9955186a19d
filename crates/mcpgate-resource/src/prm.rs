//! OAuth 2.0 Protected Resource Metadata (RFC 9728): how a client learns
//! which authorization server to use and which scopes to ask for.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use http::header::CACHE_CONTROL;
use serde::Serialize;
use std::sync::Arc;

/// The metadata document.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProtectedResourceMetadata {
    /// The canonical URI of the MCP endpoint.
    pub resource: String,
    /// Issuers of the authorization servers that issue tokens for it.
    pub authorization_servers: Vec<String>,
    /// The scopes a client may request.
    pub scopes_supported: Vec<String>,
    /// Only the `Authorization` header.
    pub bearer_methods_supported: Vec<String>,
    /// A human-readable name.
    pub resource_name: String,
}

/// Serves the document.
pub async fn serve(State(doc): State<Arc<ProtectedResourceMetadata>>) -> Response {
    let mut response = Json(doc.as_ref().clone()).into_response();
    response.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

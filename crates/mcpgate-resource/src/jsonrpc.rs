//! A malformed JSON-RPC body is a 400 with a JSON-RPC parse error
//! (-32700). rmcp answers unparseable JSON with 415, which tells a client
//! its media type is wrong when it is not; this guard answers first.

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use http::{Method, StatusCode};
use serde::de::IgnoredAny;
use serde_json::json;

/// Checks that a JSON POST body parses before the MCP service sees it.
/// The body is already bounded by the router's body limit.
pub async fn require_json_syntax(request: Request, next: Next) -> Response {
    let is_json = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
        });
    if request.method() != Method::POST || !is_json {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response(),
    };
    if let Err(e) = serde_json::from_slice::<IgnoredAny>(&bytes) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "jsonrpc": "2.0",
                "error": { "code": -32700, "message": format!("Parse error: {e}") },
                "id": null,
            })),
        )
            .into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

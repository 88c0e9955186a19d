//! The 2024-11-05 HTTP+SSE transport, for MCP clients that still speak
//! only it, in front of the same gateway and behind the same protection.
//!
//! `GET /sse` (authenticated like `/mcp`) opens a session and an event
//! stream whose first event, `endpoint`, names where to POST:
//! `/messages?session_id=…`. Every POST there (by the same caller) gets 202,
//! and its answer, like everything else the upstream sends, comes on the
//! stream. The session ends with the stream.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::request::Parts;
use http::{Method, StatusCode};
use mcpgate_token::Principal;
use rmcp::model::{ErrorData, ProtocolVersion};
use tokio::sync::mpsc;

use crate::endpoint::{
    Endpoint, owner, parse_or_refuse, presented_token, read_body, refuse, session_not_found,
    upstream_initialized,
};
use crate::gateway::reply::{event_stream, sse_event};
use crate::protocol;
use crate::wire::{self, Incoming};

/// Where the event stream opens.
pub const SSE_PATH: &str = "/sse";
/// Where messages are POSTed.
pub const MESSAGES_PATH: &str = "/messages";

// How many messages may wait for a slow client.
const BACKLOG: usize = 64;

/// The session a POST names.
#[derive(Debug, serde::Deserialize)]
pub struct Named {
    session_id: String,
}

// The same Host/Origin check and token as `/mcp`.
async fn admit(ep: &Endpoint, parts: &Parts) -> Result<Option<Arc<Principal>>, Response> {
    if let Some(refusal) = ep.origin_refusal(parts) {
        return Err(refusal);
    }
    ep.caller(parts).await
}

// Ends the session when its stream is dropped (the client left).
struct Ending {
    ep: Arc<Endpoint>,
    id: Arc<str>,
    owner: String,
}

impl Drop for Ending {
    fn drop(&mut self) {
        let (ep, id, owner) = (
            self.ep.clone(),
            self.id.clone(),
            std::mem::take(&mut self.owner),
        );
        ep.legacy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        tokio::spawn(async move {
            ep.sessions.close(&id, &owner).await;
        });
    }
}

/// `GET /sse`: a session and its event stream.
pub async fn sse(State(ep): State<Arc<Endpoint>>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    if parts.method != Method::GET {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let caller = match admit(&ep, &parts).await {
        Ok(caller) => caller,
        Err(refusal) => return refusal,
    };
    let owner = owner(caller.as_ref()).to_owned();
    let session = match ep
        .sessions
        .open(&owner, ProtocolVersion::V_2024_11_05)
        .await
    {
        Ok(session) => session,
        Err(e) => {
            return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response();
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(BACKLOG);
    ep.legacy
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(session.id.clone(), tx);
    let mut first = Vec::new();
    first.extend_from_slice(b"event: endpoint\ndata: ");
    first.extend_from_slice(MESSAGES_PATH.as_bytes());
    first.extend_from_slice(b"?session_id=");
    first.extend_from_slice(session.id.as_bytes());
    first.extend_from_slice(b"\n\n");
    let ending = Ending {
        ep: ep.clone(),
        id: session.id.clone(),
        owner,
    };
    let head = futures::stream::once(std::future::ready(Ok::<_, std::convert::Infallible>(
        Bytes::from(first),
    )));
    let rest = futures::stream::unfold((rx, ending), |(mut rx, ending)| async move {
        let message = rx.recv().await?;
        let mut out = Vec::with_capacity(message.len() + 32);
        sse_event(&mut out, &message);
        Some((Ok(Bytes::from(out)), (rx, ending)))
    });
    event_stream(Body::from_stream(futures::StreamExt::chain(head, rest)))
}

/// `POST /messages?session_id=…`: one message of a legacy session.
pub async fn messages(
    State(ep): State<Arc<Endpoint>>,
    Query(named): Query<Named>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    if parts.method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let caller = match admit(&ep, &parts).await {
        Ok(caller) => caller,
        Err(refusal) => return refusal,
    };
    let Some(session) = ep
        .sessions
        .find(&named.session_id, owner(caller.as_ref()))
        .await
    else {
        return session_not_found();
    };
    let out = ep
        .legacy
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&session.id)
        .cloned();
    let Some(out) = out else {
        return session_not_found();
    };
    let bytes = match read_body(body, ep.max_body).await {
        Ok(bytes) => bytes,
        Err(refusal) => return refusal,
    };
    let message = match parse_or_refuse(&bytes) {
        Ok(m) => m,
        Err(refusal) => return refusal,
    };
    let Some(gateway) = ep.gateway.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let presented = presented_token(&gateway, &parts.headers);
    if let Incoming::Request { id, method, params } = &message
        && method == "initialize"
    {
        let Some(params) = params else {
            let error = ErrorData::invalid_params("initialize needs params", None);
            return refuse(StatusCode::BAD_REQUEST, Some(id), &error);
        };
        let asked = serde_json::from_str::<serde_json::Value>(params.get())
            .ok()
            .and_then(|p| {
                p.get("protocolVersion")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let version = protocol::negotiate(
            &serde_json::from_value(serde_json::Value::String(asked))
                .unwrap_or(ProtocolVersion::V_2024_11_05),
        );
        let answer = match gateway
            .open(&session.id, caller.as_deref(), presented.as_ref(), params)
            .await
        {
            Ok(upstream) => {
                // What the upstream sends outside any request goes on the
                // same stream.
                if let Some(links) = gateway.session(&session.id) {
                    let mut standalone = links.standalone();
                    let out = out.clone();
                    tokio::spawn(async move {
                        while let Some(message) = standalone.recv().await {
                            if out.send(message).await.is_err() {
                                return;
                            }
                        }
                    });
                }
                upstream_initialized(id, &upstream, &version)
            }
            Err(e) => wire::error(
                Some(id),
                &ErrorData::internal_error(
                    format!("the upstream MCP server is unavailable: {e}"),
                    None,
                ),
            ),
        };
        let _ = out.send(answer).await;
        return StatusCode::ACCEPTED.into_response();
    }
    ep.forward(
        &gateway,
        &session.id,
        caller.as_ref(),
        presented.as_ref(),
        message,
        Some(&out),
    )
    .await
}

/// A refusal made for the streamable transport, delivered the legacy way:
/// a JSON-RPC answer goes on the stream (the POST gets 202); an HTTP-level
/// one (403 with a challenge, 429) stays the POST's answer.
pub async fn to_stream(refusal: Response, out: &mpsc::Sender<Bytes>) -> Response {
    if refusal.status() != StatusCode::OK {
        return refusal;
    }
    if let Ok(body) = to_bytes(refusal.into_body(), usize::MAX).await {
        let _ = out.send(body).await;
    }
    StatusCode::ACCEPTED.into_response()
}

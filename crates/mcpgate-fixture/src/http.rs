//! Streamable HTTP at `/mcp`, with rmcp's own session manager; the ready
//! file that tells a test where it listens; and closing a POST's SSE
//! stream in the middle of a call (SEP-1699), which rmcp can do but gives
//! no handler the means to ask for.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use rmcp::RoleServer;
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::sync::watch;

use crate::server::{Fixture, Shared, Transport};

/// Listens on `bind` until SIGINT or SIGTERM.
///
/// rmcp's default config is what the suite checks: sessions, SSE priming
/// events with a retry field, and `Host` limited to loopback names (DNS
/// rebinding protection), so a gateway must reach it on loopback too.
pub async fn serve(
    test_tools: bool,
    bind: SocketAddr,
    ready_file: Option<&Path>,
) -> anyhow::Result<()> {
    let sessions = Arc::new(LocalSessionManager::default());
    let shared = Shared::new(test_tools, Transport::Http(sessions.clone()));
    let service = StreamableHttpService::new(
        move || Ok(Fixture::new(shared.clone())),
        sessions,
        StreamableHttpServerConfig::default(),
    );
    let app = axum::Router::new()
        .route_service("/mcp", service)
        .layer(axum::middleware::from_fn(note_post_stream));

    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let addr = listener.local_addr().context("no local address")?;
    let mcp_url = format!("http://{addr}/mcp");
    eprintln!("mcpgate-fixture: MCP at {mcp_url}");
    if let Some(path) = ready_file {
        write_ready_file(path, &mcp_url)?;
    }

    // An SSE answer is written in several small pieces (headers, priming
    // event, message, end): with Nagle on, each call waits out the
    // client's delayed ACK (45 ms a call, measured; the echo benchmark
    // goes through here).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("TCP_NODELAY not set: {e}");
        }
    });
    tokio::select! {
        served = axum::serve(listener, app) => served.context("HTTP server failed"),
        () = shutdown_signal() => Ok(()),
    }
}

/// Which SSE stream of its session a POST was answered on, as rmcp numbers
/// it (`<n>` in the priming event's id `0/<n>`). The middleware learns it
/// from the response; the handler, which runs meanwhile, reads it here
/// (rmcp hands the handler the request's `http::request::Parts`).
#[derive(Debug, Clone)]
pub struct PostStream(watch::Receiver<Option<u64>>);

async fn note_post_stream(mut request: Request, next: Next) -> Response {
    if request.method() != http::Method::POST {
        return next.run(request).await;
    }
    let (tx, rx) = watch::channel(None);
    request.extensions_mut().insert(PostStream(rx));
    let response = next.run(request).await;
    let sse = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !sse {
        return response;
    }
    // The priming event comes first, at once; pass it on unchanged.
    let (parts, body) = response.into_parts();
    let mut stream = body.into_data_stream();
    let first = stream.next().await;
    if let Some(Ok(chunk)) = &first
        && let Some(id) = priming_stream_id(chunk)
    {
        let _ = tx.send(Some(id));
    }
    Response::from_parts(
        parts,
        Body::from_stream(futures::stream::iter(first).chain(stream)),
    )
}

/// `<n>` of an SSE event whose id is `<index>/<n>`.
fn priming_stream_id(chunk: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(chunk).ok()?;
    let id = text.lines().find_map(|l| l.strip_prefix("id:"))?.trim();
    id.split_once('/')?.1.parse().ok()
}

/// Closes the SSE stream of the POST that carries `context`'s request, in
/// the middle of the call (SEP-1699 polling): the client is told to come
/// back after `retry` with `Last-Event-ID`, and rmcp replays what was sent
/// meanwhile, the answer included. False when there is no such stream
/// (stdio, a JSON answer, no session).
pub async fn close_post_stream(
    sessions: &LocalSessionManager,
    context: &RequestContext<RoleServer>,
    retry: Duration,
) -> bool {
    let Some(parts) = context.extensions.get::<http::request::Parts>() else {
        return false;
    };
    let session = parts
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok());
    let (Some(session), Some(PostStream(rx))) = (session, parts.extensions.get::<PostStream>())
    else {
        return false;
    };
    let mut rx = rx.clone();
    let stream = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(Option::is_some)).await;
    // Copied out at once: the watch guard must not be held across an await.
    let Some(stream) = stream.ok().and_then(Result::ok).and_then(|r| *r) else {
        return false;
    };
    let handle = sessions.sessions.read().await.get(session).cloned();
    match handle {
        Some(handle) => handle.close_sse_stream(stream, Some(retry)).await.is_ok(),
        None => false,
    }
}

/// Writes `{"mcp_url": ...}` to a sibling temporary file and renames it
/// over `path`, so a reader polling for the file never sees half of it.
fn write_ready_file(path: &Path, mcp_url: &str) -> anyhow::Result<()> {
    let body = serde_json::json!({ "mcp_url": mcp_url }).to_string();
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = Path::new(&tmp_name);
    std::fs::write(tmp, body).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_number_is_read_from_the_priming_event_id() {
        assert_eq!(
            priming_stream_id(b"id: 0/7\nretry: 3000\ndata: \n\n"),
            Some(7)
        );
        assert_eq!(priming_stream_id(b"id:0/12\ndata:\n\n"), Some(12));
        assert_eq!(priming_stream_id(b"retry: 3000\n\n"), None);
        assert_eq!(priming_stream_id(b"id: 0\ndata: \n\n"), None);
    }

    #[test]
    fn ready_file_is_one_json_object_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ready.json");
        write_ready_file(&path, "http://127.0.0.1:1/mcp").expect("written");
        let text = std::fs::read_to_string(&path).expect("read");
        let json: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            json,
            serde_json::json!({ "mcp_url": "http://127.0.0.1:1/mcp" })
        );
        assert!(!dir.path().join("ready.json.tmp").exists());
    }
}

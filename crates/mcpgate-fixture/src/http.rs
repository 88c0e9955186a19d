//! Streamable HTTP at `/mcp`, with rmcp's own session manager, and the
//! ready file that tells a test where it listens.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use crate::server::{Fixture, Shared};

/// Listens on `bind` until SIGINT or SIGTERM.
///
/// rmcp's default config is what the suite checks: sessions, SSE priming
/// events with a retry field, and `Host` limited to loopback names (DNS
/// rebinding protection), so a gateway must reach it on loopback too.
pub async fn serve(
    shared: Arc<Shared>,
    bind: SocketAddr,
    ready_file: Option<&Path>,
) -> anyhow::Result<()> {
    let service = StreamableHttpService::new(
        move || Ok(Fixture::new(shared.clone())),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let app = axum::Router::new().route_service("/mcp", service);

    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let addr = listener.local_addr().context("no local address")?;
    let mcp_url = format!("http://{addr}/mcp");
    eprintln!("mcpgate-fixture: MCP at {mcp_url}");
    if let Some(path) = ready_file {
        write_ready_file(path, &mcp_url)?;
    }

    tokio::select! {
        served = axum::serve(listener, app) => served.context("HTTP server failed"),
        () = shutdown_signal() => Ok(()),
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

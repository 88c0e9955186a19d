//! The ceiling for the benchmark: a bare axum HTTP/1.1 server whose
//! `POST /mcp` parses the JSON-RPC request and answers an empty result
//! with the same id. No MCP, no auth, no sessions: what is left is what
//! any Rust JSON-over-HTTP server pays, so `mcpgate serve`'s throughput is
//! reported as a fraction of this one's.
//!
//! It uses the same allocator as `mcpgate serve` (mimalloc), so that the
//! ratios measure mcpgate's work, not a choice of allocator.
//!
//! Started like `mcpgate serve`: `--bind 127.0.0.1:0 --ready-file PATH`
//! (the file gets `{"mcp_url": "http://127.0.0.1:PORT/mcp"}`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use axum::extract::Json;
use axum::routing::post;
use clap::Parser;
use serde_json::{Value, json};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A JSON-RPC echo on POST /mcp.
#[derive(Debug, Parser)]
struct Args {
    /// Listen address; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Write `{"mcp_url": …}` here once listening.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

async fn mcp(Json(request): Json<Value>) -> Json<Value> {
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    Json(json!({"jsonrpc": "2.0", "id": id, "result": {}}))
}

// The same runtime as `mcpgate serve`: multi-threaded.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    let addr = listener.local_addr()?;
    if let Some(path) = &args.ready_file {
        write_ready(path, &json!({ "mcp_url": format!("http://{addr}/mcp") }))?;
    }
    // As in serve: small answers must not wait on Nagle's algorithm (axum
    // does not set TCP_NODELAY by itself).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = axum::Router::new().route("/mcp", post(mcp));
    axum::serve(listener, app).await.context("server failed")
}

/// Writes the ready file as serve does: a new file with an unpredictable
/// name beside it, renamed over `path`, so that a reader never sees half of
/// it and a planted symlink is never followed.
fn write_ready(path: &std::path::Path, value: &Value) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, value.to_string().as_bytes())?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

//! `mcpgate-fixture`: a real upstream MCP server for testing mcpgate's
//! gateway mode, built on rmcp.
//!
//! It serves the tools, resources and prompts that the server scenarios of
//! `@modelcontextprotocol/conformance@0.1.16` call (so the suite can be run
//! against it, and through the gateway in front of it), and with
//! `--test-tools` the `fixture_*` tools the gateway's own tests need (echo,
//! sleep, crash, environment, description mutation, identity headers).
//!
//! - `mcpgate-fixture stdio`: MCP over stdin/stdout; logs go to stderr only.
//! - `mcpgate-fixture http --bind 127.0.0.1:0 [--ready-file PATH]`:
//!   Streamable HTTP at `/mcp`, stateful (sessions), loopback `Host` only.
//!
//! Modules: [`server`] (the handler and its per-session state), [`suite`]
//! (what the conformance suite calls), [`extra`] (the `fixture_*` tools),
//! [`http`] (the listener and its ready file).
//!
//! This is a test fixture: `fixture_env` discloses the whole environment
//! and `fixture_crash` ends the process. Never run it where either matters.

mod extra;
mod http;
mod server;
mod suite;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rmcp::ServiceExt;

use crate::server::{Fixture, Shared, Transport};

#[derive(Parser)]
#[command(name = "mcpgate-fixture", version, about)]
struct Cli {
    /// Also list the `fixture_*` test tools (without it, the tool list is
    /// exactly the conformance suite's).
    #[arg(long, global = true)]
    test_tools: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve MCP over stdin and stdout.
    Stdio,
    /// Serve MCP over Streamable HTTP at `/mcp`.
    Http {
        /// Address to listen on; port 0 takes a free one.
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: SocketAddr,
        /// Once listening, write `{"mcp_url": "..."}` here (atomically).
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // stdout carries the protocol over stdio: every log line goes to stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MCPGATE_FIXTURE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    match cli.command {
        Command::Stdio => {
            let shared = Shared::new(cli.test_tools, Transport::Stdio);
            let service = Fixture::new(shared)
                .serve(rmcp::transport::stdio())
                .await
                .context("MCP over stdio failed to start")?;
            service.waiting().await.context("MCP over stdio failed")?;
            Ok(())
        }
        Command::Http { bind, ready_file } => {
            http::serve(cli.test_tools, bind, ready_file.as_deref()).await
        }
    }
}

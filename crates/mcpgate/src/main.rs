//! `mcpgate`: parses the command line and runs one subcommand.

mod audit;
mod broker;
mod cli;
mod cmd;
mod config;
mod devidp;
mod gateway;
mod ops;
mod outbound;
mod pins;
mod policy_watch;
mod ready;
mod request_span;
mod series;
mod telemetry;
mod validator;
mod waiting;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use clap::Parser;

// Requests are allocated on one worker thread and often freed on another;
// glibc's malloc serialises that on its arena locks (seen in perf under
// load), mimalloc frees to the owning thread without a lock.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // An MCP host shows a stdio server's stderr to its user: warnings only.
    let level = match cli.command {
        Command::Stdio(_) => "warn",
        _ => "info",
    };
    // Traces are for the servers; a client command's would be noise.
    let servers = matches!(cli.command, Command::Serve(_) | Command::Idp(_));
    let telemetry = telemetry::init(cli.log_format, level, servers);
    let traces = telemetry.traces_on();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcpgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => cmd::serve::run(*args, traces).await,
            Command::Explain(args) => cmd::explain::run(args).await,
            Command::Check(args) => cmd::check::run(args).await,
            Command::Idp(args) => cmd::idp::run(args).await,
            Command::Login(args) => cmd::client::login(args).await,
            Command::Logout(args) => cmd::client::logout(args).await,
            Command::Token(args) => cmd::client::token(args).await,
            Command::Tools { client, output } => cmd::client::tools(client, output).await,
            Command::Call {
                client,
                tool,
                arguments,
                output,
            } => cmd::client::call(client, tool, arguments, output).await,
            Command::Bridge(args) => cmd::client::bridge(args).await,
            Command::Stdio(args) => cmd::stdio::run(args).await,
            Command::Audit(args) => cmd::audit::run(args).await,
            Command::Pins(args) => cmd::pins::run(args).await,
            Command::Completions { shell } => cmd::shell::completions(shell),
            Command::Man { command } => cmd::shell::man(&command),
        }
    });
    // Spans still buffered are exported before the runtime goes.
    runtime
        .block_on(async { tokio::task::spawn_blocking(move || telemetry.shutdown()).await })
        .ok();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mcpgate: {e:#}");
            ExitCode::from(2)
        }
    }
}

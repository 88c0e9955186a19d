//! The benchmark of issue 10, "the serving path at wire speed", on
//! loopback. Three servers: `mcpgate-echo` (a bare axum JSON-RPC echo, the
//! ceiling), `mcpgate serve` validating tokens from an in-process issuer,
//! and `mcpgate serve --no-auth`; three wire shapes (stateless 2026-07-28,
//! 16 sessions, one session) and three methods. Rounds alternate the
//! servers so that their ratios come from one machine in one state. Then
//! the memory of an open session, on fresh servers. Targets are printed as
//! PASS or MISS, never asserted; `--smoke` asserts only that it all works.
//!
//! The full benchmark, with release binaries:
//! `cargo build --release -p mcpgate -p mcpgate-loadtest && target/release/mcpgate-loadtest`
//!
//! Then the gateway ([`gateway`]): `tools/call` through `mcpgate serve
//! --upstream-url | --upstream-cmd` against the same call made directly to
//! `mcpgate-fixture`, over HTTP and over stdio (build it too: `-p
//! mcpgate-fixture`).
//!
//! Modules: [`driver`] (the wrk-like client, and why), [`http1`] (its
//! parser), [`scenario`] (what is sent), [`servers`] (child processes),
//! [`bench`] (the rounds), [`rss`] (session memory, soak), [`gateway`]
//! (the gateway's rounds) with [`stdio`] (its direct stdio driver),
//! [`report`].

mod bench;
mod driver;
mod gateway;
mod http1;
mod report;
mod rss;
mod scenario;
mod servers;
mod stdio;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use mcpgate_testkit::{TestIssuer, unix_now};

use scenario::{Method, Scenario};
use servers::{Binaries, Kind};

/// Loopback benchmark of the MCP serving path against a bare echo server.
#[derive(Debug, Parser)]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Rounds; each measures every scenario and method on all three servers.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// What to run: stateless, sessions16, session1, rss, gateway (both of
    /// gateway-http, gateway-stdio) (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<Part>,
    /// Methods: ping, tools/list, tools/call (comma-separated).
    #[arg(long, value_delimiter = ',')]
    methods: Vec<Method>,
    /// Sessions per batch in the memory test.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Seconds of tools/call over the memory test's sessions, sampling RSS
    /// every 10 s; 0 is off.
    #[arg(long, default_value_t = 0)]
    soak: u64,
    /// Everything at tiny size, asserting only that it all works.
    #[arg(long)]
    smoke: bool,
    /// The mcpgate binary; default: beside this one.
    #[arg(long)]
    mcpgate: Option<PathBuf>,
    /// The mcpgate-echo binary; default: beside this one.
    #[arg(long)]
    echo: Option<PathBuf>,
    /// The mcpgate-fixture binary (the gateway's upstream); default: beside
    /// this one.
    #[arg(long)]
    fixture: Option<PathBuf>,
    /// A configuration file for the gateways (`serve --config`), to measure
    /// what a setting costs (`[audit] store = false`, say).
    #[arg(long, value_name = "FILE")]
    gateway_config: Option<PathBuf>,
}

/// A part of the benchmark `--only` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Scenario(Scenario),
    Rss,
    /// The gateway benchmark on these upstreams.
    Gateway(&'static [gateway::Upstream]),
}

impl std::str::FromStr for Part {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        use gateway::Upstream::{Http, Stdio};
        match s {
            "rss" => Ok(Self::Rss),
            "gateway" => Ok(Self::Gateway(&[Http, Stdio])),
            "gateway-http" => Ok(Self::Gateway(&[Http])),
            "gateway-stdio" => Ok(Self::Gateway(&[Stdio])),
            _ => s.parse().map(Self::Scenario).map_err(|_| {
                format!(
                    "unknown part {s:?} (stateless, sessions16, session1, rss, gateway, \
                     gateway-http, gateway-stdio)"
                )
            }),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.seconds = 0.3;
        args.rounds = 1;
        args.connections = 4;
        args.sessions = 50;
    }
    let started = Instant::now();
    let here = std::env::current_exe()?;
    let bins = Binaries {
        mcpgate: args
            .mcpgate
            .clone()
            .unwrap_or_else(|| here.with_file_name("mcpgate")),
        echo: args
            .echo
            .clone()
            .unwrap_or_else(|| here.with_file_name("mcpgate-echo")),
        fixture: args
            .fixture
            .clone()
            .unwrap_or_else(|| here.with_file_name("mcpgate-fixture")),
    };
    let scenarios: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| args.only.is_empty() || args.only.contains(&Part::Scenario(*s)))
        .collect();
    let methods = if args.methods.is_empty() {
        Method::ALL.to_vec()
    } else {
        args.methods.clone()
    };
    let issuer = TestIssuer::start().await;

    let mut results = Vec::new();
    if !scenarios.is_empty() {
        let servers =
            Kind::ALL.map(|kind| servers::start(&bins, kind, &issuer.issuer()).map(|s| (kind, s)));
        let [echo, auth, open] = servers;
        let (echo, auth, open) = (echo?, auth?, open?);
        let token = issuer.sign("key-a", &issuer.claims(unix_now()));
        let all = [(echo.0, &echo.1), (auth.0, &auth.1), (open.0, &open.1)];
        let mut sessions = Vec::new();
        for (kind, server) in all {
            let mut per_scenario = Vec::new();
            for &sc in &scenarios {
                let opened =
                    scenario::open_sessions(server, kind == Kind::Echo, sc.sessions(), &token)
                        .await
                        .with_context(|| format!("opening sessions on {}", kind.name()))?;
                per_scenario.push(opened);
            }
            sessions.push(per_scenario);
        }
        let plan = bench::Plan {
            scenarios,
            methods,
            connections: args.connections,
            rounds: args.rounds,
            measure: Duration::from_secs_f64(args.seconds),
            warm_up: Duration::from_secs_f64(if args.smoke { 0.3 } else { 1.0 }),
        };
        let targets = bench::Targets {
            servers: all,
            sessions,
        };
        results = bench::run(&targets, &plan, &token).await?;
    }

    let mut rss_kb = None;
    if args.only.is_empty() || args.only.contains(&Part::Rss) {
        let settle = Duration::from_millis(if args.smoke { 200 } else { 1000 });
        let soak = (args.soak > 0).then(|| (Duration::from_secs(args.soak), args.connections));
        rss_kb = Some(rss::run(&bins, &issuer, args.sessions, settle, soak).await?);
    }

    let mut upstreams = Vec::new();
    for u in [gateway::Upstream::Http, gateway::Upstream::Stdio] {
        let wanted = args
            .only
            .iter()
            .any(|p| matches!(p, Part::Gateway(us) if us.contains(&u)));
        if args.only.is_empty() || wanted {
            upstreams.push(u);
        }
    }
    let mut gateway_results = Vec::new();
    if !upstreams.is_empty() {
        let plan = gateway::Plan {
            upstreams,
            config: args.gateway_config.clone(),
            connections: args.connections,
            rounds: args.rounds,
            measure: Duration::from_secs_f64(args.seconds),
            warm_up: Duration::from_secs_f64(if args.smoke { 0.3 } else { 1.0 }),
        };
        let token = issuer.sign("key-a", &issuer.claims(unix_now()));
        gateway_results = gateway::run(&bins, &plan, &issuer.issuer(), &token).await?;
    }

    report::print_summary(&results, rss_kb.as_deref());
    gateway::print_summary(&gateway_results);
    if args.smoke {
        // Errors and empty measurements already failed the run above.
        println!(
            "\nsmoke: all measurements completed without errors in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

//! Load test on loopback. Starts the real `mcpgate serve` twice, once
//! validating tokens from an in-process issuer and once with `--no-auth`,
//! and drives `tools/call whoami` at both in alternating rounds, so that the
//! ratio of their throughputs is measured in one run on one machine.
//!
//! Build both binaries in release mode, then run:
//! `cargo build --release -p mcpgate -p mcpgate-loadtest && target/release/mcpgate-loadtest`

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use mcpgate_testkit::{API_APP_ID, TestIssuer, unix_now};
use serde_json::{Value, json};

/// Loopback load test of the protected MCP endpoint.
#[derive(Debug, Parser)]
struct Args {
    /// Seconds per measured round and server.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds (each measures both servers, alternating).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Concurrent connections.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The mcpgate binary; default: beside this one.
    #[arg(long)]
    mcpgate: Option<PathBuf>,
}

struct Server {
    child: Child,
    mcp_url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &PathBuf, extra: &[String], name: &str) -> anyhow::Result<Server> {
    let ready =
        std::env::temp_dir().join(format!("mcpgate-load-{}-{name}.json", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let mut child = Command::new(bin)
        .arg("serve")
        .args(["--bind", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .args(extra)
        .env("MCPGATE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready)
            && let Ok(v) = serde_json::from_str::<Value>(&text)
        {
            let mcp_url = v["mcp_url"].as_str().unwrap_or_default().to_owned();
            return Ok(Server { child, mcp_url });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{name} server never became ready");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn body() -> String {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "whoami", "arguments": {}, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "load", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {}
        }}
    })
    .to_string()
}

/// CPU seconds (user + system) a process has used so far, from
/// `/proc/<pid>/stat`; `None` where there is no procfs.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces, in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // The kernel counts in clock ticks; USER_HZ is 100 on Linux.
    Some((utime + stime) / 100.0)
}

struct Measured {
    per_sec: f64,
    errors: u64,
    server_cpu_us_per_request: Option<f64>,
}

async fn measure(server: &Server, token: Option<&str>, concurrency: usize, secs: u64) -> Measured {
    let pid = server.child.id();
    let before = cpu_seconds(pid);
    let (per_sec, errors, total) = drive(&server.mcp_url, token, concurrency, secs).await;
    let cpu = before
        .zip(cpu_seconds(pid))
        .map(|(b, a)| (a - b) * 1e6 / total.max(1) as f64);
    Measured {
        per_sec,
        errors,
        server_cpu_us_per_request: cpu,
    }
}

/// Requests per second over `secs`, the errors seen, and the requests done.
async fn drive(url: &str, token: Option<&str>, concurrency: usize, secs: u64) -> (f64, u64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let body = body();
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = reqwest::Client::new();
            let (ok, errors) = (ok.clone(), errors.clone());
            let (url, body, token) = (url.to_owned(), body.clone(), token.map(str::to_owned));
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let mut req = client
                        .post(&url)
                        .header("accept", "application/json, text/event-stream")
                        .header("content-type", "application/json")
                        .header("mcp-protocol-version", "2026-07-28")
                        .header("mcp-method", "tools/call")
                        .header("mcp-name", "whoami")
                        .body(body.clone());
                    if let Some(t) = &token {
                        req = req.bearer_auth(t);
                    }
                    let good = match req.send().await {
                        Ok(r) if r.status() == 200 => r
                            .text()
                            .await
                            .map(|t| t.contains("\"result\""))
                            .unwrap_or(false),
                        _ => false,
                    };
                    if good { &ok } else { &errors }.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let done = ok.load(Ordering::Relaxed);
    (done as f64 / elapsed, errors.load(Ordering::Relaxed), done)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match args.mcpgate {
        Some(b) => b,
        None => std::env::current_exe()?.with_file_name("mcpgate"),
    };
    let issuer = TestIssuer::start().await;
    let auth_args = vec![
        "--issuer".to_owned(),
        issuer.issuer(),
        "--audience".to_owned(),
        API_APP_ID.to_owned(),
        "--required-scope".to_owned(),
        format!("api://{API_APP_ID}/mcp:tools"),
    ];
    let authed = start(&bin, &auth_args, "auth")?;
    let open = start(&bin, &["--no-auth".to_owned()], "open")?;
    let token = issuer.sign("key-a", &issuer.claims(unix_now()));

    // Warm both: connections, the JWKS fetch, the verified-token cache.
    drive(&authed.mcp_url, Some(&token), args.concurrency, 1).await;
    drive(&open.mcp_url, Some(&token), args.concurrency, 1).await;

    println!("round  auth req/s  no-auth req/s  ratio  server CPU µs/req: auth  no-auth");
    let mut ratios = Vec::new();
    let mut cpu_ratios = Vec::new();
    for round in 1..=args.rounds {
        let a = measure(&authed, Some(&token), args.concurrency, args.seconds).await;
        // The same request, token included: only the server's work differs.
        let b = measure(&open, Some(&token), args.concurrency, args.seconds).await;
        if a.errors + b.errors > 0 {
            bail!(
                "round {round}: {} errors with auth, {} without",
                a.errors,
                b.errors
            );
        }
        let ratio = a.per_sec / b.per_sec;
        ratios.push(ratio);
        let (ca, cb) = (a.server_cpu_us_per_request, b.server_cpu_us_per_request);
        if let Some((ca, cb)) = ca.zip(cb) {
            cpu_ratios.push(ca / cb);
        }
        let show = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        println!(
            "{round:>5}  {:>10.0}  {:>13.0}  {ratio:.3}  {:>26}  {:>7}",
            a.per_sec,
            b.per_sec,
            show(ca),
            show(cb)
        );
    }
    if !cpu_ratios.is_empty() {
        cpu_ratios.sort_by(f64::total_cmp);
        println!(
            "median server CPU per request, auth / no-auth: {:.3}",
            cpu_ratios[cpu_ratios.len() / 2]
        );
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    println!("median ratio (auth / no-auth): {median:.3}");
    Ok(())
}

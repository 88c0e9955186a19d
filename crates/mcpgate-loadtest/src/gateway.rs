//! The gateway benchmark: `tools/call fixture_echo` through `mcpgate
//! serve --upstream-url | --upstream-cmd` against the same call made
//! directly to the upstream (`mcpgate-fixture`), in alternating rounds, so
//! that each ratio gateway ÷ direct comes from one run on one machine.
//!
//! - HTTP upstream: one fixture over Streamable HTTP; direct to its `/mcp`,
//!   through a no-auth gateway and through a gateway validating tokens,
//!   each with one session per connection (the gateway opens one upstream
//!   session per client session, so both sides see as many sessions).
//! - stdio upstream: direct is [`crate::stdio`] talking to one fixture
//!   child with as many requests in flight as there are connections;
//!   through is a no-auth gateway with one session per connection (a child
//!   each) and with every connection on one session (one child).
//!
//! CPU is read per process: the gateway's, and the upstream's (the HTTP
//! fixture; the stdio children, summed over the gateway's live children).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;

use crate::driver::{self, Outcome};
use crate::http1::Request;
use crate::report::{median, min_max, show};
use crate::scenario::{self, SESSION_VERSION};
use crate::servers::{self, Binaries, Kind, Server};
use crate::stdio::StdioServer;

/// The upstreams the benchmark can put behind the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    Http,
    Stdio,
}

/// One way of making the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    HttpDirect,
    HttpGateway,
    HttpGatewayAuth,
    StdioDirect,
    /// One gateway session (so one child) per connection.
    StdioGateway,
    /// Every connection on one gateway session (one child).
    StdioGatewayShared,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Self::HttpDirect => "direct",
            Self::HttpGateway => "gateway no-auth",
            Self::HttpGatewayAuth => "gateway auth",
            Self::StdioDirect => "direct (stdio driver)",
            Self::StdioGateway => "gateway, session/conn",
            Self::StdioGatewayShared => "gateway, 1 session",
        }
    }

    fn upstream(self) -> Upstream {
        match self {
            Self::HttpDirect | Self::HttpGateway | Self::HttpGatewayAuth => Upstream::Http,
            Self::StdioDirect | Self::StdioGateway | Self::StdioGatewayShared => Upstream::Stdio,
        }
    }

    /// What this route is compared with, and the issue's floor for the
    /// throughput ratio; `None` for the baselines themselves.
    fn target(self) -> Option<(Route, f64)> {
        match self {
            Self::HttpGateway | Self::HttpGatewayAuth => Some((Self::HttpDirect, 0.9)),
            Self::StdioGateway | Self::StdioGatewayShared => Some((Self::StdioDirect, 0.8)),
            Self::HttpDirect | Self::StdioDirect => None,
        }
    }
}

/// Where a process's CPU time is read.
#[derive(Debug, Clone, Copy)]
enum Cpu {
    Pid(u32),
    /// The live children of this process, summed.
    ChildrenOf(u32),
}

impl Cpu {
    fn seconds(self) -> Option<f64> {
        match self {
            Self::Pid(pid) => servers::cpu_seconds(pid),
            Self::ChildrenOf(pid) => servers::children_of(pid)
                .map(|c| c.into_iter().filter_map(servers::cpu_seconds).sum()),
        }
    }
}

enum Drive {
    Http {
        addr: std::net::SocketAddr,
        plans: Vec<Vec<Arc<[u8]>>>,
    },
    Stdio(Box<StdioServer>),
}

struct Target {
    route: Route,
    drive: Drive,
    gateway_cpu: Option<Cpu>,
    upstream_cpu: Option<Cpu>,
}

/// One measurement of one route.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// CPU per good request of the gateway process (none when direct).
    pub gateway_cpu_us: Option<f64>,
    /// CPU per good request of the upstream process(es).
    pub upstream_cpu_us: Option<f64>,
}

/// Every round's samples, per route, in the order measured.
pub type Results = Vec<(Route, Vec<Sample>)>;

/// The running processes; they end when this is dropped.
struct Rig {
    _servers: Vec<Server>,
    targets: Vec<Target>,
}

/// The text every call sends; short, as in the gateway's own tests.
const ECHO_TEXT: &str = "hello";

fn call_params() -> serde_json::Value {
    json!({"name": "fixture_echo", "arguments": {"text": ECHO_TEXT}})
}

/// `tools/call fixture_echo` on `session`. The token goes to every server
/// (the fixture and the no-auth gateway ignore it), so that every route
/// reads the same bytes.
fn http_call(id: u64, session: &str, token: &str) -> Request {
    Request::json(&json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": call_params()
    }))
    .header("mcp-protocol-version", SESSION_VERSION)
    .header("mcp-session-id", session)
    .header("authorization", &format!("Bearer {token}"))
}

fn stdio_call(id: u64) -> Vec<u8> {
    let mut line = json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": call_params()
    })
    .to_string()
    .into_bytes();
    line.push(b'\n');
    line
}

/// `path` as one word of a command line that is split as a shell would.
fn shell_word(path: &Path) -> String {
    let s = path.to_string_lossy();
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Opens `sessions` sessions on `server` and spreads `connections` over
/// them (connection i on session i % sessions).
async fn http_target(
    route: Route,
    server: &Server,
    upstream_cpu: Cpu,
    sessions: usize,
    connections: usize,
    token: &str,
) -> anyhow::Result<Target> {
    let ids = scenario::open_sessions(server, false, sessions, token)
        .await
        .with_context(|| format!("opening sessions for {}", route.name()))?;
    let plans = (0..connections)
        .map(|i| {
            let req = http_call(i as u64 + 1, &ids[i % ids.len()], token);
            vec![Arc::from(req.to_bytes(&server.host, "/mcp"))]
        })
        .collect();
    let direct = route == Route::HttpDirect;
    Ok(Target {
        route,
        drive: Drive::Http {
            addr: server.addr,
            plans,
        },
        gateway_cpu: (!direct).then_some(Cpu::Pid(server.pid())),
        upstream_cpu: Some(upstream_cpu),
    })
}

/// Starts the servers `upstreams` need and opens their sessions.
async fn rig(bins: &Binaries, plan: &Plan, issuer: &str, token: &str) -> anyhow::Result<Rig> {
    let (upstreams, connections) = (&plan.upstreams, plan.connections);
    // `serve` and its options, then what each gateway adds.
    let serve = |rest: &[String]| -> Vec<String> {
        let mut args = vec!["serve".to_owned()];
        if let Some(config) = &plan.config {
            args.extend(["--config".to_owned(), config.to_string_lossy().into_owned()]);
        }
        args.extend_from_slice(rest);
        args
    };
    if !bins.fixture.exists() {
        bail!(
            "{} not found: build it (cargo build [--release] -p mcpgate-fixture) or pass --fixture",
            bins.fixture.display()
        );
    }
    let mut servers = Vec::new();
    let mut targets = Vec::new();
    if upstreams.contains(&Upstream::Http) {
        let fixture = Server::start(
            &bins.fixture,
            &["--test-tools".into(), "http".into()],
            "fixture",
        )?;
        let url = format!("http://{}/mcp", fixture.host);
        let open = Server::start(
            &bins.mcpgate,
            &serve(&["--no-auth".into(), "--upstream-url".into(), url.clone()]),
            "gateway-http",
        )?;
        // The auth server's flags, without the `serve` they start with.
        let mut auth_args: Vec<String> = servers::args_for(Kind::Auth, issuer)
            .into_iter()
            .skip(1)
            .collect();
        auth_args.extend(["--upstream-url".into(), url]);
        let auth = Server::start(&bins.mcpgate, &serve(&auth_args), "gateway-http-auth")?;
        eprintln!(
            "gateway, HTTP upstream: fixture pid {}, gateway no-auth pid {}, gateway auth pid {}",
            fixture.pid(),
            open.pid(),
            auth.pid()
        );
        let up = Cpu::Pid(fixture.pid());
        let n = connections;
        targets.push(http_target(Route::HttpDirect, &fixture, up, n, n, token).await?);
        targets.push(http_target(Route::HttpGateway, &open, up, n, n, token).await?);
        targets.push(http_target(Route::HttpGatewayAuth, &auth, up, n, n, token).await?);
        servers.extend([fixture, open, auth]);
    }
    if upstreams.contains(&Upstream::Stdio) {
        let direct = StdioServer::start(&bins.fixture, &["--test-tools", "stdio"]).await?;
        let cmd = format!("{} --test-tools stdio", shell_word(&bins.fixture));
        // One gateway for both session layouts: it runs one at a time, and
        // the idle children cost nothing.
        let gw = Server::start(
            &bins.mcpgate,
            &serve(&["--no-auth".into(), "--upstream-cmd".into(), cmd]),
            "gateway-stdio",
        )?;
        let direct_pid = direct
            .pid()
            .context("the stdio fixture has already exited")?;
        eprintln!(
            "gateway, stdio upstream: direct fixture pid {direct_pid}, gateway pid {}",
            gw.pid()
        );
        targets.push(Target {
            route: Route::StdioDirect,
            drive: Drive::Stdio(Box::new(direct)),
            gateway_cpu: None,
            upstream_cpu: Some(Cpu::Pid(direct_pid)),
        });
        let up = Cpu::ChildrenOf(gw.pid());
        let n = connections;
        targets.push(http_target(Route::StdioGateway, &gw, up, n, n, token).await?);
        targets.push(http_target(Route::StdioGatewayShared, &gw, up, 1, n, token).await?);
        servers.push(gw);
    }
    Ok(Rig {
        _servers: servers,
        targets,
    })
}

/// One measurement; errors of any kind fail the run.
async fn measure(
    target: &mut Target,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Sample> {
    let read = |cpu: Option<Cpu>| cpu.and_then(Cpu::seconds);
    let (g0, u0) = (read(target.gateway_cpu), read(target.upstream_cpu));
    let o: Outcome = match &mut target.drive {
        Drive::Http { addr, plans } => driver::drive(*addr, plans.clone(), duration).await?,
        Drive::Stdio(server) => server.drive(connections, duration, stdio_call).await?,
    };
    let (g1, u1) = (read(target.gateway_cpu), read(target.upstream_cpu));
    let label = format!("gateway benchmark, {}", target.route.name());
    if o.errors > 0 {
        bail!(
            "{label}: {} errors in {} requests; first: {}",
            o.errors,
            o.errors + o.ok,
            o.first_error.unwrap_or_default()
        );
    }
    if o.ok == 0 {
        bail!("{label}: no request completed");
    }
    let per_req =
        |b: Option<f64>, a: Option<f64>| b.zip(a).map(|(b, a)| (a - b) * 1e6 / o.ok as f64);
    Ok(Sample {
        per_sec: o.per_sec(),
        p50_us: o.quantile_us(0.5),
        p99_us: o.quantile_us(0.99),
        gateway_cpu_us: per_req(g0, g1),
        upstream_cpu_us: per_req(u0, u1),
    })
}

/// What to run and for how long.
pub struct Plan {
    pub upstreams: Vec<Upstream>,
    /// A configuration file for every gateway (`serve --config`), to
    /// measure a setting's cost: `[audit] store = false`, say.
    pub config: Option<std::path::PathBuf>,
    pub connections: usize,
    pub rounds: u32,
    pub measure: Duration,
    pub warm_up: Duration,
}

/// Starts the servers, warms every route, measures `plan.rounds` rounds
/// (each route once per round, in turn) and prints one table per upstream.
pub async fn run(
    bins: &Binaries,
    plan: &Plan,
    issuer: &str,
    token: &str,
) -> anyhow::Result<Results> {
    let mut rig = rig(bins, plan, issuer, token).await?;
    for t in &mut rig.targets {
        measure(t, plan.connections, plan.warm_up).await?;
    }
    let mut results: Results = rig.targets.iter().map(|t| (t.route, Vec::new())).collect();
    for round in 1..=plan.rounds {
        eprintln!("gateway round {round} of {}", plan.rounds);
        for (t, (_, samples)) in rig.targets.iter_mut().zip(&mut results) {
            samples.push(measure(t, plan.connections, plan.measure).await?);
        }
    }
    for upstream in [Upstream::Http, Upstream::Stdio] {
        print_table(upstream, plan.connections, &results);
    }
    Ok(results)
}

fn samples_of(results: &Results, route: Route) -> Option<&[Sample]> {
    results
        .iter()
        .find(|(r, _)| *r == route)
        .map(|(_, s)| s.as_slice())
}

/// Per-round ratios `a / b` of `f`.
fn ratios(a: &[Sample], b: &[Sample], f: impl Fn(&Sample) -> f64) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| f(x) / f(y)).collect()
}

fn print_table(upstream: Upstream, connections: usize, results: &Results) {
    let rows: Vec<_> = results
        .iter()
        .filter(|(r, _)| r.upstream() == upstream)
        .collect();
    if rows.is_empty() {
        return;
    }
    let title = match upstream {
        Upstream::Http => "HTTP upstream (fixture over Streamable HTTP, a session per connection)",
        Upstream::Stdio => "stdio upstream (fixture over stdin/stdout)",
    };
    println!();
    println!("== gateway, {title}: tools/call fixture_echo ({connections} connections)");
    println!(
        "  route                     req/s   p50 µs   p99 µs   gateway CPU µs/req   upstream CPU µs/req   ÷direct (min–max)"
    );
    for (route, s) in &rows {
        let med = |f: &dyn Fn(&Sample) -> Option<f64>| median(s.iter().filter_map(f).collect());
        let ratio = route
            .target()
            .and_then(|(base, _)| samples_of(results, base))
            .map(|base| ratios(s, base, |x| x.per_sec));
        let ratio = match ratio {
            Some(v) if !v.is_empty() => {
                let (lo, hi) = min_max(&v);
                format!("{} ({lo:.3}–{hi:.3})", show(median(v), 3))
            }
            _ => "-".to_owned(),
        };
        println!(
            "  {:<22} {:>8}  {:>7}  {:>7}  {:>19}  {:>20}   {ratio}",
            route.name(),
            show(med(&|x| Some(x.per_sec)), 0),
            show(med(&|x| Some(x.p50_us as f64)), 0),
            show(med(&|x| Some(x.p99_us as f64)), 0),
            show(med(&|x| x.gateway_cpu_us), 1),
            show(med(&|x| x.upstream_cpu_us), 1),
        );
    }
}

/// The issue's targets, PASS or MISS (never asserted), with the p99 ratio
/// beside each for the reader.
pub fn print_summary(results: &Results) {
    if results.is_empty() {
        return;
    }
    println!();
    println!("== gateway targets: tools/call through ÷ direct (reported, not asserted)");
    for (route, s) in results {
        let Some((base, floor)) = route.target() else {
            continue;
        };
        let Some(b) = samples_of(results, base) else {
            continue;
        };
        let v = median(ratios(s, b, |x| x.per_sec));
        let p99 = median(ratios(s, b, |x| x.p99_us as f64));
        let verdict = match v {
            Some(v) if v >= floor => "PASS",
            Some(_) => "MISS",
            None => "n/a",
        };
        let upstream = match route.upstream() {
            Upstream::Http => "HTTP",
            Upstream::Stdio => "stdio",
        };
        println!(
            "  {verdict:<5} {:<44} {:>7}  (target ≥ {floor}; p99 ratio {})",
            format!("{upstream} {}", route.name()),
            show(v, 3),
            show(p99, 2)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words() {
        assert_eq!(shell_word(Path::new("/a/b-c/x_y.1")), "/a/b-c/x_y.1");
        assert_eq!(shell_word(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }

    #[test]
    fn requests_carry_the_call() {
        let line = String::from_utf8(stdio_call(12)).expect("utf-8");
        assert!(line.ends_with("}\n") && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["id"], 12);
        assert_eq!(v["params"]["name"], "fixture_echo");
        let http = http_call(3, "s-1", "t").to_bytes("h:1", "/mcp");
        let text = String::from_utf8(http).expect("utf-8");
        assert!(text.contains("\r\nmcp-session-id: s-1\r\n"));
        assert!(text.contains("\"fixture_echo\""));
    }

    #[test]
    fn every_gateway_route_has_a_baseline_on_its_upstream() {
        let all = [
            Route::HttpDirect,
            Route::HttpGateway,
            Route::HttpGatewayAuth,
            Route::StdioDirect,
            Route::StdioGateway,
            Route::StdioGatewayShared,
        ];
        for r in all {
            match r.target() {
                Some((base, _)) => {
                    assert_eq!(base.upstream(), r.upstream(), "{r:?}");
                    assert!(base.target().is_none(), "{base:?} is a baseline");
                }
                None => assert!(matches!(r, Route::HttpDirect | Route::StdioDirect)),
            }
        }
    }
}

//! Broker mode as users run it: `mcpgate serve` on defaults is the
//! authorization server its MCP clients sign in at. Nothing is lost when it
//! is killed (SQLite), and two replicas sharing Redis behind a round-robin
//! balancer serve one set of users.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_mcpgate");

struct Serve {
    child: Child,
    ready: Value,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn mcp_url(&self) -> String {
        self.ready["mcp_url"].as_str().expect("mcp_url").to_owned()
    }
}

/// A port nobody listens on right now (the test then binds it again; on
/// loopback, nothing else races for it in practice).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

// The child is reaped by `Serve`'s Drop, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn serve(dir: &Path, name: &str, args: &[String], envs: &[(&str, String)]) -> Serve {
    let ready = dir.join(format!("{name}-ready.json"));
    let _ = std::fs::remove_file(&ready);
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
    let child = Command::new(BIN)
        .arg("serve")
        .args(args)
        .arg("--ready-file")
        .arg(&ready)
        .env_remove("MCPGATE_CONFIG")
        .env("MCPGATE_IDP_AUTO_APPROVE", "alice@mcpgate.test")
        // Every use of a token refreshes it (the client refreshes a minute
        // ahead): the refresh path is what a restart must not break.
        .env("MCPGATE_BROKER__ACCESS_TOKEN_LIFETIME_SECS", "30")
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn mcpgate serve");
    let (child, ready) = common::wait_ready(child, &ready, Duration::from_secs(60));
    Serve { child, ready }
}

/// `mcpgate call URL TOOL` signing in without a browser, with its cache in
/// `cache` and the IdP's CA trusted.
fn call(url: &str, tool: &str, cache: &Path, ca: &str, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["call", url, tool, "--non-interactive", "--ca-file", ca])
        .arg("--cache-dir")
        .arg(cache)
        .args(extra)
        .env_remove("MCPGATE_CONFIG")
        .env_remove("MCPGATE_CACHE_DIR")
        .output()
        .expect("run mcpgate call")
}

fn structured(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mcpgate call failed ({}): {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        text
    );
    let v: Value = serde_json::from_str(&text).expect("JSON result");
    v["structuredContent"].clone()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mcpgate-broker-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

#[test]
fn a_kill_9_signs_nobody_out() {
    let dir = temp_dir("restart");
    let (port, idp_port) = (free_port(), free_port());
    let args = vec![
        "--bind".to_owned(),
        format!("127.0.0.1:{port}"),
        "--idp-bind".to_owned(),
        format!("127.0.0.1:{idp_port}"),
        "--data-dir".to_owned(),
        dir.join("data").display().to_string(),
    ];
    let first = serve(&dir, "first", &args, &[]);
    let url = first.mcp_url();
    let ca = first.ready["idp"]["ca_file"]
        .as_str()
        .expect("CA file")
        .to_owned();
    let cache = dir.join("cache");

    let who = structured(&call(&url, "whoami", &cache, &ca, &[]));
    assert_eq!(who["preferred_username"], "alice@mcpgate.test");
    assert_eq!(
        who["issuer"],
        url.trim_end_matches("/mcp"),
        "signed in through the broker"
    );

    // kill -9: no shutdown, no flush beyond what each write already did.
    let mut first = first;
    first.child.kill().expect("kill -9");
    let _ = first.child.wait();
    drop(first);

    let second = serve(&dir, "second", &args, &[]);
    assert_eq!(second.mcp_url(), url);
    // The client's cached refresh token is redeemed at the restarted
    // broker (its access token lives 30 s, inside the refresh margin), and
    // the user's upstream grant still acts for them.
    let who = structured(&call(&url, "whoami", &cache, &ca, &[]));
    assert_eq!(who["preferred_username"], "alice@mcpgate.test");
    let me = structured(&call(&url, "get_user_details", &cache, &ca, &[]));
    assert_eq!(me["userPrincipalName"], "alice@mcpgate.test");
    drop(second);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_claims_challenge_for_graph_is_relayed_and_met_through_the_broker() {
    use mcpgate_devidp::IdpConfig;
    use mcpgate_devidp::conditional_access::{Requirement, RuleConfig};
    let dir = temp_dir("claims");
    // Alice signs in to mcpgate's API without MFA; Graph, which
    // get_user_details reads On-Behalf-Of her, requires it.
    let mut directory = IdpConfig::builtin();
    directory.conditional_access.push(RuleConfig {
        name: "MFA for Graph for alice".to_owned(),
        id: None,
        users: vec!["alice@mcpgate.test".to_owned()],
        resources: vec!["graph".to_owned()],
        require: Requirement::Mfa,
    });
    let idp_file = dir.join("idp.toml");
    std::fs::write(&idp_file, toml::to_string(&directory).expect("TOML")).expect("write");
    let args = vec![
        "--bind".to_owned(),
        format!("127.0.0.1:{}", free_port()),
        "--data-dir".to_owned(),
        dir.join("data").display().to_string(),
        "--idp-directory".to_owned(),
        idp_file.display().to_string(),
    ];
    let server = serve(&dir, "claims", &args, &[]);
    let url = server.mcp_url();
    let ca = server.ready["idp"]["ca_file"]
        .as_str()
        .expect("CA file")
        .to_owned();
    let cache = dir.join("cache");

    // The broker's exchange is refused with a claims challenge, relayed as
    // 401 insufficient_claims; the client signs in again at the broker
    // with the claims, which the broker passes on to the IdP's sign-in
    // (MFA, auto-approved here), and the call goes through.
    let out = call(&url, "get_user_details", &cache, &ca, &[]);
    let me = structured(&out);
    assert_eq!(me["userPrincipalName"], "alice@mcpgate.test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("signing in again with claims"), "{stderr}");
    assert!(stderr.contains("capolids"), "{stderr}");
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// A round-robin TCP balancer on loopback: each connection goes to the
/// next backend that accepts it.
fn balancer(backends: Vec<SocketAddr>) -> (SocketAddr, std::sync::mpsc::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind balancer");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut next = 0usize;
        for client in listener.incoming() {
            if stopped.try_recv().is_ok() {
                return;
            }
            let Ok(client) = client else { continue };
            // Try each backend once, starting with the next in turn: a
            // dead replica is skipped, as a balancer's health check would.
            let upstream = (0..backends.len()).find_map(|i| {
                let target = backends[(next + i) % backends.len()];
                std::net::TcpStream::connect(target).ok()
            });
            next = next.wrapping_add(1);
            let Some(upstream) = upstream else { continue };
            let (Ok(client_read), Ok(upstream_read)) = (client.try_clone(), upstream.try_clone())
            else {
                continue;
            };
            let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            };
            pipe(client_read, upstream);
            pipe(upstream_read, client);
        }
    });
    (addr, stop)
}

#[test]
fn two_replicas_on_redis_serve_one_set_of_users() {
    let dir = temp_dir("replicas");
    let idp_dir = dir.join("idp");
    // One upstream identity provider, as a tenant would be.
    let idp_ready = dir.join("idp-ready.json");
    let idp = Command::new(BIN)
        .args(["idp", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(&idp_dir)
        .arg("--ready-file")
        .arg(&idp_ready)
        .env("MCPGATE_IDP_AUTO_APPROVE", "alice@mcpgate.test")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mcpgate idp");
    let (idp, info) = common::wait_ready(idp, &idp_ready, Duration::from_secs(60));
    let _idp = Serve {
        child: idp,
        ready: info.clone(),
    };
    let issuer = info["issuer"].as_str().expect("issuer").to_owned();
    let me_url = format!("{}/v1.0/me", info["base_url"].as_str().expect("base URL"));
    let ca = info["ca_file"].as_str().expect("CA").to_owned();
    let server_app = info["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .find(|c| c["public"] == false && c["scopes"].as_array().is_some_and(|s| !s.is_empty()))
        .expect("the MCP server app")
        .clone();
    let app_id = server_app["client_id"].as_str().expect("app id").to_owned();
    let secret_file = server_app["secret_file"]
        .as_str()
        .expect("secret file")
        .to_owned();

    // Two replicas behind one public URL, sharing Redis and the broker's
    // keys (one data directory), trusting the tenant.
    let (port_a, port_b) = (free_port(), free_port());
    let (front, stop) = balancer(vec![
        format!("127.0.0.1:{port_a}").parse().expect("addr"),
        format!("127.0.0.1:{port_b}").parse().expect("addr"),
    ]);
    let prefix = format!("mcpgate-test-{}-{port_a}", std::process::id());
    let config = dir.join("mcpgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
public_url = "http://{front}"
ca_file = "{ca}"
store = "redis://127.0.0.1:6379/0"
store_prefix = "{prefix}"

[auth]
issuers = ["{issuer}"]
audiences = ["api://{app_id}", "{app_id}"]
required_scopes = ["api://{app_id}/mcp:tools"]

[broker]
issuer = "{issuer}"
client_id = "{app_id}"
client_secret_file = "{secret_file}"
graph_url = "{me_url}"
"#
        ),
    )
    .expect("config");
    let replica = |name: &str, port: u16| {
        serve(
            &dir,
            name,
            &[
                "--bind".to_owned(),
                format!("127.0.0.1:{port}"),
                "--data-dir".to_owned(),
                dir.join("data").display().to_string(),
                "--config".to_owned(),
                config.display().to_string(),
            ],
            &[],
        )
    };
    // One after the other: the first creates the shared keys.
    let a = replica("a", port_a);
    let b = replica("b", port_b);
    let url = format!("http://{front}/mcp");
    assert_eq!(a.mcp_url(), url);
    assert_eq!(b.mcp_url(), url);

    // Registration, authorization, callback and token requests land on
    // both replicas in turn; then tool calls on the stateless wire.
    let cache = dir.join("cache");
    let stateless = ["--protocol-version", "2026-07-28"];
    for _ in 0..3 {
        let who = structured(&call(&url, "whoami", &cache, &ca, &stateless));
        assert_eq!(who["preferred_username"], "alice@mcpgate.test");
    }
    let me = structured(&call(&url, "get_user_details", &cache, &ca, &stateless));
    assert_eq!(me["userPrincipalName"], "alice@mcpgate.test");

    // A stateful session (2025-11-25): every request on a new connection,
    // so the balancer hands them to the replicas in turn; the one that did
    // not open the session resumes it from the store.
    let token = Command::new(BIN)
        .args(["token", &url, "--non-interactive", "--ca-file", &ca])
        .arg("--cache-dir")
        .arg(&cache)
        .output()
        .expect("mcpgate token");
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    assert!(!token.is_empty(), "mcpgate token printed nothing");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(one_session_across_replicas(&url, &token));

    // One replica dies; the other carries on, refresh tokens and all.
    drop(a);
    for _ in 0..2 {
        let who = structured(&call(&url, "whoami", &cache, &ca, &stateless));
        assert_eq!(who["preferred_username"], "alice@mcpgate.test");
    }
    drop(b);
    let _ = stop.send(());
    clean_redis(&prefix);
    let _ = std::fs::remove_dir_all(dir);
}

async fn one_session_across_replicas(url: &str, token: &str) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let post = |body: serde_json::Value, session: Option<&str>| {
        let mut request = http
            .post(url)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .json(&body);
        if let Some(id) = session {
            request = request.header("mcp-session-id", id);
        }
        request.send()
    };
    let init = post(
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "replicas-test", "version": "1"}}}),
        None,
    )
    .await
    .expect("initialize");
    assert_eq!(init.status(), 200);
    let session = init
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("a session id")
        .to_owned();
    let ack = post(
        serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        Some(&session),
    )
    .await
    .expect("initialized");
    assert!(ack.status().is_success(), "initialized: {}", ack.status());
    for id in 2..6 {
        let resp = post(
            serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "whoami", "arguments": {}}}),
            Some(&session),
        )
        .await
        .expect("tools/call");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        assert_eq!(status, 200, "call {id} in the session: {text}");
        // Plain JSON, or the one SSE event that carries the answer.
        let msg: Value = serde_json::from_str(&text)
            .ok()
            .or_else(|| {
                text.lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
                    .find(|v| v.get("id").is_some())
            })
            .unwrap_or_else(|| panic!("no JSON-RPC answer in: {text}"));
        assert_eq!(
            msg["result"]["structuredContent"]["preferred_username"], "alice@mcpgate.test",
            "{msg}"
        );
    }
}

/// Deletes the test's keys (its own prefix only) from the shared Redis.
fn clean_redis(prefix: &str) {
    let _ = Command::new("redis-cli")
        .args(["--scan", "--pattern", &format!("{prefix}:*")])
        .output()
        .map(|out| {
            let keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect();
            if !keys.is_empty() {
                let _ = Command::new("redis-cli").arg("del").args(&keys).output();
            }
        });
}

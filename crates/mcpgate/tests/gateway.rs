//! Gateway mode end to end: the real `mcpgate serve` in front of the real
//! `mcpgate-fixture` (over stdio, and over Streamable HTTP), spoken to over
//! HTTP as an MCP client would, with real tokens from the embedded
//! development IdP where policy needs a user.
//!
//! Each test starts its own gateway: one without authentication comes up in
//! about 50 ms and one with the IdP in about half a second (debug build),
//! and tests that shared one would see each other's children and pins.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

mod common;
#[path = "common/mcp.rs"]
mod mcp;
#[path = "common/serve.rs"]
mod serve;

use mcp::{DevIdp, Session, names};
use mcpgate_devidp::IdpConfig;
use mcpgate_devidp::conditional_access::{Requirement, RuleConfig};
use mcpgate_devidp::directory::{DEFAULT_API_APP_ID, DEFAULT_SCOPE};
use serve::{Gateway, HttpFixture, LOG_REQUESTS, quoted, received, stdio_upstream};

/// JSON-RPC code of a policy or pinning refusal.
const FORBIDDEN: i64 = -32003;
/// JSON-RPC code of a forwarded request that timed out.
const TIMED_OUT: i64 = -32001;

/// The description of `tool` in a list, if it is there.
fn description<'a>(tools: &'a [Value], tool: &str) -> Option<&'a str> {
    tools
        .iter()
        .find(|t| t["name"] == tool)
        .and_then(|t| t["description"].as_str())
}

#[tokio::test]
async fn a_crashed_child_fails_its_call_and_the_next_call_starts_a_new_one() {
    let gateway = Gateway::open("crash", "pinning = \"off\"\n", &[]);
    let mut session = Session::open(&gateway.mcp_url(), None).await;
    // A mark only this child holds: a new child lists the original text.
    let mutated = session
        .call(
            "fixture_mutate",
            json!({ "tool": "fixture_sleep", "description": "first child" }),
        )
        .await;
    mutated.text();
    let tools = session.tools().await;
    assert_eq!(description(&tools, "fixture_sleep"), Some("first child"));

    let crashed = session.call("fixture_crash", json!({})).await;
    let code = crashed.error_code();
    assert!(
        code.is_some() && code != Some(FORBIDDEN),
        "the caller gets the upstream's failure as a JSON-RPC error: {:?}",
        crashed.messages
    );

    // Same session, next call: a new child answers.
    assert_eq!(session.echo("after the crash").await, "after the crash");
    let tools = session.tools().await;
    let text = description(&tools, "fixture_sleep").expect("fixture_sleep listed");
    assert_ne!(text, "first child", "the child was restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_call_times_out_while_other_sessions_go_on() {
    let config = format!("timeout_secs = 2\n{LOG_REQUESTS}");
    let gateway = Gateway::open("hang", &config, &[]);
    let url = gateway.mcp_url();
    let mut hanging = Session::open(&url, None).await;
    let mut other = Session::open(&url, None).await;

    // fixture_sleep without ms never answers.
    let hung = tokio::spawn(async move {
        let reply = hanging.call("fixture_sleep", json!({})).await;
        (hanging, reply)
    });
    // The child has it: from here on, the first session hangs.
    let [came, sleep] = received("fixture_sleep");
    gateway.wait_for_log(&[&came, &sleep]).await;
    assert_eq!(other.echo("meanwhile").await, "meanwhile");
    assert!(
        !hung.is_finished(),
        "the other session's call finished only after the hung one ended"
    );

    // A deadline, not a measurement: the timeout is 2 s.
    let (mut hanging, reply) = tokio::time::timeout(Duration::from_secs(20), hung)
        .await
        .expect("the hung call ends with the upstream timeout")
        .expect("join");
    assert_eq!(
        reply.error_code(),
        Some(TIMED_OUT),
        "timeout error: {:?}",
        reply.messages
    );
    // The session that hung goes on.
    assert_eq!(hanging.echo("still here").await, "still here");
}

#[tokio::test]
async fn the_child_sees_none_of_the_gateways_secrets() {
    let secrets = [
        ("MCPGATE_BROKER_CLIENT_SECRET", "broker-secret-5f1c0e"),
        ("AWS_SECRET_ACCESS_KEY", "aws-secret-9d2b7a"),
        ("MY_TOKEN", "my-token-3e8f41"),
    ];
    let cwd = std::env::temp_dir().join(format!("mcpgate-gateway-cwd-{}", std::process::id()));
    std::fs::create_dir_all(&cwd).expect("mkdir");
    let extra = format!(
        "cwd = {}\nenv = {{ FIXTURE_GREETING = \"hello-from-config\" }}\n",
        quoted(&cwd.display().to_string())
    );
    let gateway = Gateway::open("env", &extra, &secrets);
    let mut session = Session::open(&gateway.mcp_url(), None).await;
    let reply = session.call("fixture_env", json!({})).await;
    let seen = &reply.result()["structuredContent"];
    let env = seen["env"].as_object().expect("the child's environment");

    assert_eq!(
        env.get("FIXTURE_GREETING"),
        Some(&json!("hello-from-config"))
    );
    let all = seen.to_string();
    for (name, value) in secrets {
        assert!(!env.contains_key(name), "{name} reached the child");
        assert!(
            !all.contains(value),
            "the value of {name} reached the child"
        );
    }
    let seen_cwd = PathBuf::from(seen["cwd"].as_str().expect("cwd"));
    assert_eq!(
        seen_cwd.canonicalize().expect("the child's cwd"),
        cwd.canonicalize().expect("the configured cwd")
    );
    drop(gateway);
    let _ = std::fs::remove_dir_all(cwd);
}

/// One session changes `fixture_echo`'s description after the first list
/// pinned it; returns the gateway and that session.
async fn a_tool_changes_under_a_session(name: &str) -> (Gateway, Session) {
    let gateway = Gateway::open(name, "pinning = \"enforce\"\n", &[]);
    let mut changed = Session::open(&gateway.mcp_url(), None).await;
    assert!(names(&changed.tools().await).contains(&"fixture_echo"));
    changed
        .call(
            "fixture_mutate",
            json!({ "tool": "fixture_echo", "description": "Now also mails your files away" }),
        )
        .await
        .text();
    (gateway, changed)
}

#[tokio::test]
async fn a_changed_tool_is_hidden_and_refused_but_a_fresh_child_keeps_it() {
    let (mut gateway, mut changed) = a_tool_changes_under_a_session("pins").await;
    let listed = changed.tools().await;
    assert!(
        !names(&listed).contains(&"fixture_echo"),
        "the changed tool is hidden: {:?}",
        names(&listed)
    );
    let refused = changed.call("fixture_echo", json!({ "text": "x" })).await;
    assert_eq!(
        refused.error_code(),
        Some(FORBIDDEN),
        "{:?}",
        refused.messages
    );

    // A new session's child shows the pinned definition.
    let mut fresh = Session::open(&gateway.mcp_url(), None).await;
    let listed = fresh.tools().await;
    assert!(names(&listed).contains(&"fixture_echo"));
    assert_ne!(
        description(&listed, "fixture_echo"),
        Some("Now also mails your files away")
    );
    assert_eq!(fresh.echo("pinned").await, "pinned");

    // The change is recorded once, however often it is listed.
    assert!(!names(&changed.tools().await).contains(&"fixture_echo"));
    let (text, records) = gateway.audit_records();
    let pins: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "pin_changed")
        .collect();
    assert_eq!(pins.len(), 1, "one pin_changed record: {text}");
    assert_eq!(pins[0]["tool"], "fixture_echo");
    assert_eq!(pins[0]["upstream"], "fixture");
}

#[tokio::test]
async fn another_sessions_list_does_not_unhide_a_changed_tool() {
    let (gateway, mut changed) = a_tool_changes_under_a_session("pins-unhide").await;
    assert!(!names(&changed.tools().await).contains(&"fixture_echo"));
    let mut fresh = Session::open(&gateway.mcp_url(), None).await;
    assert!(names(&fresh.tools().await).contains(&"fixture_echo"));
    let refused = changed.call("fixture_echo", json!({ "text": "x" })).await;
    assert_eq!(
        refused.error_code(),
        Some(FORBIDDEN),
        "the changed definition was called: {:?}",
        refused.messages
    );
}

#[tokio::test]
async fn a_changed_tool_is_refused_to_a_session_that_never_listed_again() {
    let (_gateway, mut changed) = a_tool_changes_under_a_session("pins-unlisted").await;
    // No tools/list after the change: the gateway reviews the session's
    // tools itself before the call (the upstream said its list changed).
    let refused = changed.call("fixture_echo", json!({ "text": "x" })).await;
    assert_eq!(
        refused.error_code(),
        Some(FORBIDDEN),
        "the changed definition was called: {:?}",
        refused.messages
    );
}

/// The full name of the API's scope `short` (`mcp:tools`, `mcp:admin`).
fn api_scope(short: &[&str]) -> String {
    short
        .iter()
        .map(|s| format!("api://{DEFAULT_API_APP_ID}/{s}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Operators (the API's app role, which alice holds and bob does not) may
/// crash the fixture and read its environment; `fixture_whoami` needs the
/// API's second scope, `mcp:admin`.
const POLICY: &str = r#"
[policy]
[[policy.rules]]
name = "operators"
tools = ["fixture_crash", "fixture_env"]
roles = ["MCP.Tools.All"]
[[policy.rules]]
name = "admins"
tools = ["fixture_whoami"]
scopes = ["mcp:admin"]
"#;

/// A gateway with the embedded dev IdP (direct mode: its tokens are the
/// ones `/mcp` takes), whose API exposes `mcp:admin` besides `mcp:tools`.
fn with_idp(name: &str, config: &str, args: &[&str], envs: &[(&str, &str)]) -> (Gateway, DevIdp) {
    with_idp_directory(name, config, args, envs, |_| {})
}

/// [`with_idp`], with the IdP's directory changed by `edit` first.
fn with_idp_directory(
    name: &str,
    config: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    edit: impl FnOnce(&mut IdpConfig),
) -> (Gateway, DevIdp) {
    let mut directory = IdpConfig::builtin();
    let api = directory
        .apps
        .iter_mut()
        .find(|a| a.client_id == DEFAULT_API_APP_ID)
        .expect("the built-in API");
    assert_eq!(api.scopes.first().map(String::as_str), Some(DEFAULT_SCOPE));
    api.scopes.push("mcp:admin".to_owned());
    edit(&mut directory);
    let mut envs = envs.to_vec();
    envs.push(("MCPGATE_BROKER__MODE", "direct"));
    let gateway = Gateway::start(name, config, args, &envs, Some(&directory));
    let idp = DevIdp::from_ready(&gateway.ready);
    (gateway, idp)
}

/// The policy gateway in front of the stdio fixture, auditing to a file.
fn policy_gateway(name: &str, envs: &[(&str, &str)]) -> (Gateway, DevIdp) {
    let config = format!(
        "{}\n[audit]\nfile = \"$DIR/audit.jsonl\"\nstore = false\n{POLICY}",
        stdio_upstream(&format!("pinning = \"off\"\n{LOG_REQUESTS}"))
    );
    with_idp(name, &config, &[], envs)
}

const ALICE: &str = "alice@mcpgate.test";
const BOB: &str = "bob@mcpgate.test";

#[tokio::test]
async fn app_roles_decide_what_each_user_lists_and_calls() {
    let (mut gateway, idp) = policy_gateway("roles", &[]);
    let url = gateway.mcp_url();
    let alice = idp.token(ALICE, &api_scope(&["mcp:tools"])).await;
    let bob = idp.token(BOB, &api_scope(&["mcp:tools"])).await;
    let mut as_alice = Session::open(&url, Some(&alice)).await;
    let mut as_bob = Session::open(&url, Some(&bob)).await;

    let (alice_sees, bob_sees) = (as_alice.tools().await, as_bob.tools().await);
    let (alice_sees, bob_sees) = (names(&alice_sees), names(&bob_sees));
    for tool in ["fixture_crash", "fixture_env"] {
        assert!(
            alice_sees.contains(&tool),
            "alice lists {tool}: {alice_sees:?}"
        );
        assert!(
            !bob_sees.contains(&tool),
            "bob does not list {tool}: {bob_sees:?}"
        );
    }
    assert!(alice_sees.contains(&"fixture_echo") && bob_sees.contains(&"fixture_echo"));

    // A mark only bob's child holds: had the refused crash reached it, a
    // new child would list the original text.
    as_bob
        .call(
            "fixture_mutate",
            json!({ "tool": "fixture_sleep", "description": "bob's child" }),
        )
        .await
        .text();
    let refused = as_bob.call("fixture_crash", json!({})).await;
    assert_eq!(refused.status, 200);
    assert_eq!(
        refused.error_code(),
        Some(FORBIDDEN),
        "{:?}",
        refused.messages
    );
    let listed = as_bob.tools().await;
    assert_eq!(
        description(&listed, "fixture_sleep"),
        Some("bob's child"),
        "the refused call never reached bob's child"
    );
    assert_eq!(as_bob.echo("bob goes on").await, "bob goes on");

    // Alice may, and her child learns who she is, never her token.
    let seen = as_alice.call("fixture_env", json!({})).await;
    let seen = &seen.result()["structuredContent"];
    assert_eq!(seen["env"]["MCPGATE_USER_UPN"], ALICE);
    assert!(!seen.to_string().contains(alice.expose()));

    // The refusal is one record, a denial of bob's.
    let (text, records) = gateway.audit_records();
    let crashes: Vec<&Value> = records
        .iter()
        .filter(|r| r["tool"] == "fixture_crash")
        .collect();
    assert_eq!(crashes.len(), 1, "one record of the refused call: {text}");
    assert_eq!(crashes[0]["decision"], "deny");
    assert_eq!(crashes[0]["user_upn"], BOB);
    // Seen from the fixture: alice's call came, bob's refused one did not.
    let [came, env] = received("fixture_env");
    assert!(gateway.logged(&[&came, &env]), "{}", gateway.log());
    let [came, crash] = received("fixture_crash");
    assert!(!gateway.logged(&[&came, &crash]), "{}", gateway.log());
}

/// The `scope` parameter of a `WWW-Authenticate` challenge.
fn challenge_scope(challenge: &str) -> Option<&str> {
    let start = challenge.find("scope=\"")? + "scope=\"".len();
    Some(&challenge[start..start + challenge[start..].find('"')?])
}

#[tokio::test]
async fn a_scope_rule_asks_for_step_up_and_the_stepped_up_token_passes() {
    let (gateway, idp) = policy_gateway("step-up", &[]);
    let alice = idp.token(ALICE, &api_scope(&["mcp:tools"])).await;
    let mut session = Session::open(&gateway.mcp_url(), Some(&alice)).await;

    let refused = session.call("fixture_whoami", json!({})).await;
    assert_eq!(refused.status, 403, "{:?}", refused.messages);
    let challenge = refused
        .header("www-authenticate")
        .expect("a WWW-Authenticate challenge");
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );
    let wanted = challenge_scope(challenge).expect("a scope parameter");
    assert!(
        wanted.split_whitespace().any(|s| s.ends_with("mcp:admin")),
        "the challenge names the scope the rule needs: {challenge}"
    );

    // The client signs in again with that scope and retries.
    let stepped = idp
        .token(ALICE, &api_scope(&["mcp:tools", "mcp:admin"]))
        .await;
    session.set_token(&stepped);
    let reply = session.call("fixture_whoami", json!({})).await;
    assert_eq!(reply.result()["structuredContent"]["transport"], "stdio");
}

#[tokio::test]
async fn the_audit_log_has_one_record_per_decision_and_no_secret() {
    let secret = ("MY_TOKEN", "my-token-value-77c1d9");
    let (mut gateway, idp) = policy_gateway("audit", &[secret]);
    let url = gateway.mcp_url();
    let alice = idp.token(ALICE, &api_scope(&["mcp:tools"])).await;
    let stepped = idp
        .token(ALICE, &api_scope(&["mcp:tools", "mcp:admin"]))
        .await;
    let bob = idp.token(BOB, &api_scope(&["mcp:tools"])).await;
    let mut as_alice = Session::open(&url, Some(&alice)).await;
    let mut as_bob = Session::open(&url, Some(&bob)).await;

    assert_eq!(as_alice.echo("one").await, "one");
    let denied = as_bob.call("fixture_crash", json!({})).await;
    assert_eq!(denied.error_code(), Some(FORBIDDEN));
    let step_up = as_alice.call("fixture_whoami", json!({})).await;
    assert_eq!(step_up.status, 403);
    as_alice.set_token(&stepped);
    as_alice.call("fixture_whoami", json!({})).await.result();

    let (text, records) = gateway.audit_records();
    let mut calls: Vec<(String, String, String)> = records
        .iter()
        .filter(|r| r["event"] == "tool_call")
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (field("tool"), field("decision"), field("user_upn"))
        })
        .collect();
    calls.sort();
    let mut expected: Vec<(String, String, String)> = [
        ("fixture_crash", "deny", BOB),
        ("fixture_echo", "allow", ALICE),
        ("fixture_whoami", "allow", ALICE),
        ("fixture_whoami", "deny", ALICE),
    ]
    .iter()
    .map(|(t, d, u)| ((*t).to_owned(), (*d).to_owned(), (*u).to_owned()))
    .collect();
    expected.sort();
    assert_eq!(calls, expected, "one record per decision: {text}");
    assert!(!text.contains("eyJ"), "a token in the audit log: {text}");
    for token in [&alice, &stepped, &bob] {
        assert!(!text.contains(token.expose()));
    }
    assert!(!text.contains(secret.1), "a secret in the audit log");
}

#[tokio::test]
async fn an_http_upstream_answers_and_never_sees_the_callers_token() {
    let upstream = HttpFixture::start();
    let (gateway, idp) = with_idp("http", "", &["--upstream-url", &upstream.url], &[]);
    let alice = idp.token(ALICE, &api_scope(&["mcp:tools"])).await;
    let mut session = Session::open(&gateway.mcp_url(), Some(&alice)).await;

    assert_eq!(session.echo("over http").await, "over http");
    let reply = session.call("fixture_whoami", json!({})).await;
    let seen = &reply.result()["structuredContent"];
    assert_eq!(seen["transport"], "http", "{seen}");
    assert_eq!(
        seen["authorization"], false,
        "the upstream received an Authorization header"
    );
    assert!(!seen.to_string().contains(alice.expose()));
}

#[tokio::test]
async fn an_http_upstream_can_be_told_who_calls_in_signed_headers() {
    let upstream = HttpFixture::start();
    let config = format!(
        "[[upstreams]]\nurl = \"{}\"\nidentity = \"headers\"\n",
        upstream.url
    );
    let secret = "a-shared-secret-of-at-least-32-bytes!";
    let (gateway, idp) = with_idp(
        "http-identity",
        &config,
        &[],
        &[("MCPGATE_UPSTREAM_IDENTITY_SECRET", secret)],
    );
    let alice = idp.token(ALICE, &api_scope(&["mcp:tools"])).await;
    let mut session = Session::open(&gateway.mcp_url(), Some(&alice)).await;
    let reply = session.call("fixture_whoami", json!({})).await;
    let seen = &reply.result()["structuredContent"];
    let headers = &seen["headers"];
    assert_eq!(headers["x-mcpgate-user-upn"], ALICE, "{seen}");
    assert!(
        headers["x-mcpgate-user-oid"]
            .as_str()
            .is_some_and(|o| !o.is_empty()),
        "{seen}"
    );
    assert!(
        headers["x-mcpgate-signature"]
            .as_str()
            .is_some_and(|s| s.starts_with("v1=") && s.len() > 40),
        "{seen}"
    );
    let signed_at: u64 = headers["x-mcpgate-timestamp"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("a timestamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(now.abs_diff(signed_at) < 300, "{signed_at} vs {now}");
    // Still never the token, and never the secret.
    assert_eq!(seen["authorization"], false);
    assert!(!seen.to_string().contains(alice.expose()));
    assert!(!seen.to_string().contains(secret));
}

/// The next `event: NAME` of an event stream, with its data.
async fn next_event(stream: &mut reqwest::Response, buffer: &mut String) -> (String, String) {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let mut name = "message".to_owned();
            let mut data = String::new();
            for line in event.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            return (name, data);
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("an event in time")
            .expect("the stream")
            .expect("not the end");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn a_client_on_the_2024_11_05_transport_reaches_the_upstream_through_sse() {
    let gateway = Gateway::open("legacy", "", &[]);
    let base = gateway.mcp_url().trim_end_matches("/mcp").to_owned();
    let http = reqwest::Client::new();
    let mut stream = http
        .get(format!("{base}/sse"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("GET /sse");
    assert_eq!(stream.status(), 200);
    let mut buffer = String::new();
    let (name, endpoint) = next_event(&mut stream, &mut buffer).await;
    assert_eq!(name, "endpoint");
    assert!(endpoint.starts_with("/messages?session_id="), "{endpoint}");
    let post = |body: Value| http.post(format!("{base}{endpoint}")).json(&body).send();
    let accepted = post(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2024-11-05", "capabilities": {},
        "clientInfo": {"name": "legacy-test", "version": "1"}}}),
    )
    .await
    .expect("POST");
    assert_eq!(accepted.status(), 202);
    let (_, init) = next_event(&mut stream, &mut buffer).await;
    let init: Value = serde_json::from_str(&init).expect("json");
    assert_eq!(init["result"]["protocolVersion"], "2024-11-05", "{init}");
    post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await
        .expect("POST");
    post(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "fixture_echo", "arguments": {"text": "old transport"}}}))
    .await
    .expect("POST");
    let (_, answer) = next_event(&mut stream, &mut buffer).await;
    let answer: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(answer["id"], 2, "{answer}");
    assert_eq!(answer["result"]["content"][0]["text"], "old transport");

    // Another session's id is not this one's.
    let foreign = http
        .post(format!("{base}/messages?session_id=0123456789abcdef"))
        .json(&json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(foreign.status(), 404);
}

#[tokio::test]
async fn the_sse_transport_is_protected_like_mcp() {
    let (gateway, _idp) = with_idp("legacy-auth", &stdio_upstream(""), &[], &[]);
    let base = gateway.mcp_url().trim_end_matches("/mcp").to_owned();
    let refused = reqwest::Client::new()
        .get(format!("{base}/sse"))
        .send()
        .await
        .expect("GET /sse");
    assert_eq!(refused.status(), 401);
    assert!(
        refused
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.contains("resource_metadata=")),
        "a challenge like /mcp's"
    );
}

#[tokio::test]
async fn an_http_upstream_can_get_a_token_of_its_own_for_the_caller() {
    let upstream = HttpFixture::start();
    // Broker mode (the default): the broker holds alice's grant at the dev
    // IdP and obtains, On-Behalf-Of her, a token for the upstream's scope.
    let config = format!(
        "[[upstreams]]\nurl = \"{}\"\nidentity = \"obo\"\nobo_scopes = [\"https://graph.microsoft.com/User.Read\"]\n",
        upstream.url
    );
    let gateway = Gateway::start(
        "http-obo",
        &config,
        &[],
        &[("MCPGATE_IDP_AUTO_APPROVE", ALICE)],
        None,
    );
    let ca = gateway.ready["idp"]["ca_file"]
        .as_str()
        .expect("the IdP's CA")
        .to_owned();
    let cache = tempfile::tempdir().expect("cache dir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcpgate"))
        .args([
            "call",
            &gateway.mcp_url(),
            "fixture_whoami",
            "--non-interactive",
        ])
        .args(["--ca-file", &ca])
        .arg("--cache-dir")
        .arg(cache.path())
        .env_remove("MCPGATE_CONFIG")
        .env_remove("MCPGATE_CACHE_DIR")
        .output()
        .expect("run mcpgate call");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} {stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_str(&stdout).expect("JSON result");
    let seen = &result["structuredContent"];
    assert_eq!(seen["transport"], "http", "{seen}");
    assert_eq!(
        seen["authorization"], true,
        "the upstream got a token of its own: {seen}"
    );
}

#[tokio::test]
async fn upstream_sessions_are_capped_and_a_closed_one_frees_its_slot() {
    let gateway = Gateway::open("cap", "max_sessions = 1\n", &[]);
    let url = gateway.mcp_url();
    let first = Session::open(&url, None).await;
    let http = reqwest::Client::new();
    let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "second", "version": "1"}}});
    let refused: Value = http
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("JSON-RPC");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("maximum of 1 upstream sessions")),
        "{refused}"
    );
    // Ending the first session frees its child's slot.
    let ended = http
        .delete(&url)
        .header("mcp-session-id", first.id())
        .send()
        .await
        .expect("DELETE");
    assert_eq!(ended.status(), 204);
    let mut second = Session::open(&url, None).await;
    assert_eq!(second.echo("room again").await, "room again");
}

#[tokio::test]
async fn several_upstreams_are_shown_each_under_its_name() {
    let remote = HttpFixture::start();
    let config = format!(
        "{}\n[[upstreams]]\nname = \"remote\"\nurl = {}\n\n[audit]\nfile = \"$DIR/audit.jsonl\"\nstore = false\n\n[policy]\n[[policy.rules]]\ntools = [\"remote__fixture_crash\"]\ndeny = true\n",
        stdio_upstream("").replace("name = \"fixture\"", "name = \"local\""),
        quoted(&remote.url)
    );
    let mut gateway = Gateway::start("several", &config, &["--no-auth"], &[], None);
    let url = gateway.mcp_url();
    let mut session = Session::open(&url, None).await;

    let tools = session.tools().await;
    let listed = names(&tools);
    for tool in [
        "local__fixture_echo",
        "remote__fixture_echo",
        "local__test_simple_text",
        "local__fixture_crash",
    ] {
        assert!(listed.contains(&tool), "{tool} in {listed:?}");
    }
    assert!(
        listed
            .iter()
            .all(|n| n.starts_with("local__") || n.starts_with("remote__")),
        "every name carries its server's prefix: {listed:?}"
    );
    assert!(
        !listed.contains(&"remote__fixture_crash"),
        "policy names tools as clients see them: {listed:?}"
    );

    // Each call reaches its own upstream, under the upstream's own name.
    let local = session.call("local__fixture_whoami", json!({})).await;
    assert_eq!(local.result()["structuredContent"]["transport"], "stdio");
    let remote_whoami = session.call("remote__fixture_whoami", json!({})).await;
    assert_eq!(
        remote_whoami.result()["structuredContent"]["transport"],
        "http"
    );
    let refused = session.call("remote__fixture_crash", json!({})).await;
    assert_eq!(
        refused.error_code(),
        Some(FORBIDDEN),
        "{:?}",
        refused.answer()
    );
    let unknown = session.call("elsewhere__fixture_echo", json!({})).await;
    assert_eq!(unknown.error_code(), Some(-32602), "{:?}", unknown.answer());

    // Resources: listed, read and linked under `<name>+`.
    let resources = session.request("resources/list", json!({})).await;
    let uris: Vec<&str> = resources.result()["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["uri"].as_str())
        .collect();
    assert!(uris.contains(&"local+test://static-text"), "{uris:?}");
    assert!(uris.contains(&"remote+test://static-text"), "{uris:?}");
    let read = session
        .request(
            "resources/read",
            json!({"uri": "remote+test://static-text"}),
        )
        .await;
    assert_eq!(
        read.result()["contents"][0]["uri"],
        "remote+test://static-text"
    );
    let embedded = session
        .call("local__test_embedded_resource", json!({}))
        .await;
    assert_eq!(
        embedded.result()["content"][0]["resource"]["uri"],
        "local+test://embedded-resource"
    );
    let templates = session.request("resources/templates/list", json!({})).await;
    assert!(
        templates.result()["resourceTemplates"]
            .as_array()
            .expect("templates")
            .iter()
            .any(|t| t["uriTemplate"] == "remote+test://template/{id}/data"),
        "{:?}",
        templates.answer()
    );

    // Prompts and completions go the same way.
    let prompt = session
        .request("prompts/get", json!({"name": "remote__test_simple_prompt"}))
        .await;
    assert!(
        prompt.result()["messages"].is_array(),
        "{:?}",
        prompt.answer()
    );
    let completion = session
        .request(
            "completion/complete",
            json!({"ref": {"type": "ref/prompt", "name": "local__test_prompt_with_arguments"},
                   "argument": {"name": "arg1", "value": ""}}),
        )
        .await;
    assert!(
        completion.result()["completion"]["values"].is_array(),
        "{:?}",
        completion.answer()
    );
    let ping = session.request("ping", json!({})).await;
    assert_eq!(ping.result(), &json!({}));

    // The audit names the upstream and the tool as the client saw it.
    let (_, records) = gateway.audit_records();
    let denied = records
        .iter()
        .find(|r| r["decision"] == "deny")
        .expect("the refused call's record");
    assert_eq!(denied["upstream"], "remote", "{denied}");
    assert_eq!(denied["tool"], "remote__fixture_crash", "{denied}");
}

#[tokio::test]
async fn in_direct_mode_the_callers_own_token_is_exchanged_on_behalf_of_them() {
    let upstream = HttpFixture::start();
    // Direct mode: alice's token was issued by the IdP to mcpgate's API;
    // mcpgate, as that API's confidential client, exchanges it for one to
    // the upstream's API.
    let config = format!(
        "[[upstreams]]\nurl = {}\nidentity = \"obo\"\nobo_scopes = [\"https://graph.microsoft.com/User.Read\"]\n",
        quoted(&upstream.url)
    );
    let (gateway, idp) = with_idp("direct-obo", &config, &[], &[]);
    let alice = idp.token(ALICE, &api_scope(&["mcp:tools"])).await;
    let mut session = Session::open(&gateway.mcp_url(), Some(&alice)).await;
    for _ in 0..2 {
        let reply = session.call("fixture_whoami", json!({})).await;
        let seen = &reply.result()["structuredContent"];
        assert_eq!(seen["authorization"], true, "{seen}");
        let audience = seen["audience"].as_str().unwrap_or_default();
        assert!(
            audience.contains("graph") || audience == "00000003-0000-0000-c000-000000000000",
            "the upstream's token is issued to its own API: {seen}"
        );
        assert!(!seen.to_string().contains(alice.expose()));
    }
    drop(gateway);
}

#[tokio::test]
async fn a_dropped_stream_is_resumed_after_its_last_event_and_the_call_goes_on() {
    let gateway = Gateway::open("resume", "pinning = \"off\"\n", &[]);
    let url = gateway.mcp_url();
    let session = Session::open(&url, None).await;
    let http = reqwest::Client::new();
    // The fixture's tool sends progress at once, then twice 50 ms apart,
    // then answers: the answer is an event stream.
    let mut call = http
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", session.id())
        .header("mcp-protocol-version", mcp::PROTOCOL)
        .json(
            &json!({"jsonrpc": "2.0", "id": "resumed", "method": "tools/call", "params": {
            "name": "test_tool_with_progress", "arguments": {},
            "_meta": {"progressToken": "p"}}}),
        )
        .send()
        .await
        .expect("POST");
    let chunk = tokio::time::timeout(Duration::from_secs(10), call.chunk())
        .await
        .expect("an event in time")
        .expect("the stream")
        .expect("an event");
    let first = String::from_utf8_lossy(&chunk).into_owned();
    let last_id = first
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .next_back()
        .unwrap_or_else(|| panic!("events carry ids: {first:?}"))
        .to_owned();
    assert!(first.contains("notifications/progress"), "{first}");
    // The connection drops; the call goes on without it.
    drop(call);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let resumed = http
        .get(&url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", session.id())
        .header("mcp-protocol-version", mcp::PROTOCOL)
        .header("last-event-id", &last_id)
        .send()
        .await
        .expect("GET");
    assert_eq!(resumed.status(), 200);
    let rest = tokio::time::timeout(Duration::from_secs(10), resumed.text())
        .await
        .expect("the rest in time")
        .expect("the rest");
    assert!(!rest.contains(&format!("id: {last_id}\n")), "{rest}");
    // Every progress event once: those seen, then the rest.
    assert_eq!(
        first.matches("notifications/progress").count()
            + rest.matches("notifications/progress").count(),
        3,
        "{first}{rest}"
    );
    let answer: Value = rest
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .next_back()
        .and_then(|d| serde_json::from_str(d).ok())
        .expect("the answer last");
    assert_eq!(answer["id"], "resumed");
    assert_eq!(
        answer["result"]["content"][0]["text"], "Tool with progress executed successfully",
        "the call was not cancelled by the dropped connection: {answer}"
    );

    let unknown = http
        .get(&url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", session.id())
        .header("mcp-protocol-version", mcp::PROTOCOL)
        .header("last-event-id", "999/1")
        .send()
        .await
        .expect("GET");
    assert_eq!(unknown.status(), 404);
}

/// Conditional Access at the dev IdP: alice must complete a second factor
/// for Microsoft Graph, the API the gateway's upstream takes tokens for.
fn mfa_for_graph_for_alice(directory: &mut IdpConfig) {
    directory.conditional_access.push(RuleConfig {
        name: "MFA for the upstream API for alice".to_owned(),
        id: None,
        users: vec![ALICE.to_owned()],
        resources: vec!["graph".to_owned()],
        require: Requirement::Mfa,
    });
}

#[tokio::test]
async fn a_claims_challenge_from_obo_is_relayed_and_mcpgates_client_meets_it() {
    use base64::Engine as _;
    let upstream = HttpFixture::start();
    // Direct mode: alice's token is for mcpgate's API; the upstream's token
    // (Graph's audience) is had On-Behalf-Of her, and a rule asks MFA for it.
    let config = format!(
        "[[upstreams]]\nurl = {}\nidentity = \"obo\"\nobo_scopes = [\"https://graph.microsoft.com/User.Read\"]\n",
        quoted(&upstream.url)
    );
    let (gateway, idp) = with_idp_directory(
        "claims",
        &config,
        &[],
        &[("MCPGATE_IDP_AUTO_APPROVE", ALICE)],
        mfa_for_graph_for_alice,
    );
    let url = gateway.mcp_url();

    // A token from a sign-in without MFA: the exchange is refused, and the
    // refusal comes back as the challenge, never as a 500 or an RPC error.
    let alice = idp.token(ALICE, &api_scope(&["mcp:tools"])).await;
    let http = reqwest::Client::new();
    let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "claims", "version": "1"}}});
    for _ in 0..2 {
        let refused = http
            .post(&url)
            .bearer_auth(alice.expose())
            .header("accept", "application/json, text/event-stream")
            .json(&initialize)
            .send()
            .await
            .expect("initialize");
        assert_eq!(refused.status(), 401, "{:?}", refused.text().await);
        assert!(refused.headers().get("mcp-session-id").is_none());
        let challenge = refused
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .expect("a challenge")
            .to_owned();
        assert!(
            challenge.contains("error=\"insufficient_claims\""),
            "{challenge}"
        );
        assert!(challenge.contains("resource_metadata=\""), "{challenge}");
        let encoded = challenge
            .split("claims=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("claims");
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .expect("standard base64"),
        )
        .expect("claims JSON");
        assert_eq!(
            claims["access_token"]["capolids"]["essential"], true,
            "{claims}"
        );
        assert!(!challenge.contains(alice.expose()));
    }

    // mcpgate's own client: the 401, a sign-in sending the claims (which
    // the IdP meets with the second factor, auto-approved here), the call
    // once more; the upstream sees a token from an MFA sign-in.
    let ca = gateway.ready["idp"]["ca_file"]
        .as_str()
        .expect("the IdP's CA")
        .to_owned();
    let cache = tempfile::tempdir().expect("cache dir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcpgate"))
        .args([
            "call",
            &url,
            "fixture_whoami",
            "--client-id",
            mcpgate_devidp::directory::DEFAULT_DESKTOP_CLIENT_ID,
            "--non-interactive",
        ])
        .args(["--ca-file", &ca])
        .arg("--cache-dir")
        .arg(cache.path())
        .env_remove("MCPGATE_CONFIG")
        .env_remove("MCPGATE_CACHE_DIR")
        .env_remove("MCPGATE_CLIENT_ID")
        .output()
        .expect("run mcpgate call");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr} {stdout}\n{}", gateway.log());
    assert!(stderr.contains("signing in again with claims"), "{stderr}");
    let result: Value = serde_json::from_str(&stdout).expect("JSON result");
    let seen = &result["structuredContent"];
    assert_eq!(seen["authorization"], true, "{seen}");
    let amr: Vec<&str> = seen["amr"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        amr.contains(&"mfa"),
        "the upstream's token is from an MFA sign-in: {seen}"
    );
    assert!(
        gateway.logged(&["insufficient_claims", "capolids"]),
        "the relay is logged with its claims:\n{}",
        gateway.log()
    );
}

//! The `mcpgate` binary as users and scripts run it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mcpgate_testkit::{API_APP_ID, TestIssuer, unix_now, with};
use serde_json::{Value, json};

mod common;
#[path = "common/mcp.rs"]
#[allow(
    dead_code,
    reason = "shared with the gateway tests, which use all of it"
)]
mod mcp;

const BIN: &str = env!("CARGO_BIN_EXE_mcpgate");

struct Server {
    child: Child,
    ready: Value,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("mcpgate-cli-{}-{name}", std::process::id()))
}

fn auth_args(issuer: &TestIssuer) -> Vec<String> {
    vec![
        "--issuer".into(),
        issuer.issuer(),
        "--audience".into(),
        format!("api://{API_APP_ID}"),
        "--audience".into(),
        API_APP_ID.into(),
        "--required-scope".into(),
        format!("api://{API_APP_ID}/mcp:tools"),
    ]
}

// The child is reaped by `Server`'s Drop, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn serve(args: &[String], name: &str) -> Server {
    let ready = temp_path(&format!("{name}.json"));
    let _ = std::fs::remove_file(&ready);
    let child = Command::new(BIN)
        .arg("serve")
        .args(["--bind", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mcpgate");
    let (child, ready) = common::wait_ready(child, &ready, Duration::from_secs(30));
    Server { child, ready }
}

async fn whoami(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "whoami")
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "whoami", "arguments": {}, "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {}
            }}
        }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("request")
}

#[tokio::test]
async fn serve_writes_ready_file_and_protects_mcp() {
    let issuer = TestIssuer::start().await;
    let server = serve(&auth_args(&issuer), "protect");
    let mcp_url = server.ready["mcp_url"]
        .as_str()
        .expect("mcp_url")
        .to_owned();
    assert!(mcp_url.starts_with("http://127.0.0.1:") && mcp_url.ends_with("/mcp"));
    assert_eq!(server.ready["issuers"], json!([issuer.issuer()]));
    assert_eq!(
        server.ready["prm_url"],
        mcp_url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
    );
    assert_eq!(server.ready["auth"], true);

    let resp = whoami(&mcp_url, None).await;
    assert_eq!(resp.status(), 401);

    let token = issuer.sign("key-a", &issuer.claims(unix_now()));
    let resp = whoami(&mcp_url, Some(&token)).await;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.expect("body");
    assert!(body.contains("alice@test.example"), "{body}");
}

#[tokio::test]
async fn no_auth_is_loud_and_loopback_only() {
    let out = Command::new(BIN)
        .args(["serve", "--no-auth", "--bind", "0.0.0.0:0"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--no-auth is refused unless"), "{err}");

    let server = serve(&["--no-auth".into()], "open");
    assert_eq!(server.ready["auth"], false);
    let url = server.ready["mcp_url"].as_str().expect("url").to_owned();
    assert_eq!(whoami(&url, None).await.status(), 200);
}

// The child is reaped by `Server`'s Drop, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn serve_on_defaults(name: &str, envs: &[(&str, &str)]) -> (Server, PathBuf) {
    let data_dir = temp_path(&format!("{name}-data"));
    let _ = std::fs::remove_dir_all(&data_dir);
    let ready = temp_path(&format!("{name}.json"));
    let _ = std::fs::remove_file(&ready);
    let child = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .arg("--data-dir")
        .arg(&data_dir)
        .env_remove("MCPGATE_CONFIG")
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mcpgate");
    let (child, ready) = common::wait_ready(child, &ready, Duration::from_secs(60));
    (Server { child, ready }, data_dir)
}

#[tokio::test]
async fn serve_on_defaults_signs_a_user_in_by_device_code() {
    let (server, data_dir) = serve_on_defaults(
        "defaults",
        &[("MCPGATE_IDP_AUTO_APPROVE", "alice@mcpgate.test")],
    );
    let idp = &server.ready["idp"];
    let authority = idp["authority"].as_str().expect("authority");
    assert!(authority.starts_with("https://127.0.0.1:"), "{authority}");
    // Broker mode on defaults: the metadata names mcpgate itself, whose
    // tokens are trusted beside the IdP's.
    let mcp_url = server.ready["mcp_url"].as_str().expect("mcp_url");
    let broker = mcp_url.trim_end_matches("/mcp");
    assert_eq!(server.ready["issuers"], json!([idp["issuer"], broker]));
    assert_eq!(server.ready["authorization_servers"], json!([broker]));
    assert_eq!(server.ready["scopes"], json!(["mcp:tools"]));
    // The device code goes to the IdP itself, for the API's own scope.
    let scope = idp["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .find_map(|c| c["scopes"].as_array()?.first()?.as_str())
        .expect("the API's scope")
        .to_owned();
    assert!(scope.ends_with("/mcp:tools"), "{scope}");
    assert!(
        !server.ready.to_string().contains("secret\""),
        "no secrets in the ready file"
    );
    let desktop = idp["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .find(|c| c["public"] == true)
        .expect("a public client");
    let client_id = desktop["client_id"].as_str().expect("client id");

    let ca = std::fs::read(idp["ca_file"].as_str().expect("ca file")).expect("CA");
    let http = reqwest::Client::builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&ca).expect("PEM"))
        .build()
        .expect("client");
    let flow: Value = http
        .post(format!("{authority}/oauth2/v2.0/devicecode"))
        .form(&[("client_id", client_id), ("scope", scope.as_str())])
        .send()
        .await
        .expect("devicecode")
        .json()
        .await
        .expect("json");
    let token: Value = http
        .post(format!("{authority}/oauth2/v2.0/token"))
        .form(&[
            ("client_id", client_id),
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            (
                "device_code",
                flow["device_code"].as_str().expect("device code"),
            ),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let access_token = token["access_token"].as_str().expect("access token");

    assert_eq!(whoami(mcp_url, None).await.status(), 401);
    let resp = whoami(mcp_url, Some(access_token)).await;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.expect("body");
    assert!(body.contains("alice@mcpgate.test"), "{body}");

    // With no configuration, explain and check judge as serve does: the
    // quick start's token explains itself.
    let idp_bind = authority
        .trim_start_matches("https://")
        .split('/')
        .next()
        .expect("host:port")
        .to_owned();
    // serve's address, for its broker's issuer (what `bind` says, as
    // serve reads it).
    let bind = server.ready["bind"].as_str().expect("bind").to_owned();
    let run = |args: Vec<String>| {
        let data_dir = data_dir.clone();
        let bind = bind.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .args(&args)
                .arg("--data-dir")
                .arg(&data_dir)
                .env_remove("MCPGATE_CONFIG")
                .env("MCPGATE_BIND", bind)
                .output()
        })
    };
    let explain = vec![
        "explain".to_owned(),
        "--idp-bind".to_owned(),
        idp_bind.clone(),
        access_token.to_owned(),
    ];
    let out = run(explain).await.expect("join").expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("verdict: ACCEPTED"), "{text}");
    assert!(text.contains("alice@mcpgate.test"), "{text}");
    let check = vec!["check".to_owned(), "--idp-bind".to_owned(), idp_bind];
    let out = run(check).await.expect("join").expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("development IdP"), "{text}");

    drop(server);
    let _ = std::fs::remove_dir_all(data_dir);
}

#[test]
fn idp_rotate_keys_keeps_the_old_key_published() {
    let data_dir = temp_path("rotate-data");
    let _ = std::fs::remove_dir_all(&data_dir);
    let rotate = || {
        Command::new(BIN)
            .args(["idp", "rotate-keys", "--grace-secs", "60", "--data-dir"])
            .arg(&data_dir)
            .output()
            .expect("run")
    };
    let first = rotate();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = rotate();
    assert!(second.status.success());
    let keys: Value = serde_json::from_slice(
        &std::fs::read(data_dir.join("idp/signing-keys.json")).expect("key file"),
    )
    .expect("json");
    let keys = keys["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2);
    assert!(keys[0]["retire_at"].is_u64() && keys[1]["retire_at"].is_null());
    let _ = std::fs::remove_dir_all(data_dir);
}

#[tokio::test]
async fn explain_accepts_and_rejects_with_the_reason() {
    let issuer = TestIssuer::start().await;
    let args = auth_args(&issuer);
    let good = issuer.sign("key-a", &issuer.claims(unix_now()));
    let out = tokio::task::spawn_blocking({
        let args = args.clone();
        move || {
            Command::new(BIN)
                .arg("explain")
                .args(&args)
                .arg(&good)
                .output()
        }
    })
    .await
    .expect("join")
    .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("verdict: ACCEPTED"), "{text}");

    let graph = issuer.sign(
        "key-a",
        &with(
            issuer.claims(unix_now()),
            &[("aud", json!("00000003-0000-0000-c000-000000000000"))],
        ),
    );
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(BIN)
            .arg("explain")
            .args(&args)
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(graph.as_bytes())?;
        }
        child.wait_with_output()
    })
    .await
    .expect("join")
    .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("this is a Microsoft Graph token"), "{text}");
    assert!(
        text.contains(&format!("Ask for scope api://{API_APP_ID}/mcp:tools")),
        "{text}"
    );
}

#[tokio::test]
async fn check_probes_discovery_and_keys() {
    let issuer = TestIssuer::start().await;
    let args = auth_args(&issuer);
    let out = tokio::task::spawn_blocking({
        let args = args.clone();
        move || Command::new(BIN).arg("check").args(&args).output()
    })
    .await
    .expect("join")
    .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("1 signing key(s)"), "{text}");

    issuer.go_down();
    let out =
        tokio::task::spawn_blocking(move || Command::new(BIN).arg("check").args(&args).output())
            .await
            .expect("join")
            .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL") && text.contains("503"), "{text}");
}

#[test]
fn config_file_and_environment_are_read() {
    let path = temp_path("config.toml");
    std::fs::write(
        &path,
        "[auth.entra]\ntenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\napp_id = \"3f8c2b1e-6a7d-4e2f-9b0c-5d1e7a9c4f21\"\n\
         # Never the real Entra from a test: keys from a closed local port.\n\
         [auth]\njwks_uri = \"http://127.0.0.1:9/keys\"\n",
    )
    .expect("write");
    // A typo in the file is an error that names the key.
    let bad = temp_path("bad.toml");
    std::fs::write(&bad, "[auth]\naudince = [\"x\"]\n").expect("write");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("audince"), "{text}");

    // An environment variable overrides the file: here an untrusted
    // algorithm makes the policy invalid, proving the variable was read.
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .env("MCPGATE_AUTH__ALGORITHMS", "[\"HS256\"]")
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("HS256 can never be used"), "{text}");
}

/// `mcpgate ARGS…` with `input` on stdin, off the runtime's threads.
async fn run_with_stdin(args: Vec<String>, input: Option<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(BIN)
            .args(&args)
            .env_remove("MCPGATE_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
            stdin.write_all(input.as_bytes())?;
        }
        child.wait_with_output()
    })
    .await
    .expect("join")
    .expect("run")
}

#[tokio::test]
async fn explain_json_gives_the_verdict_and_the_reason_code_but_never_the_token() {
    let issuer = TestIssuer::start().await;
    let args = |token: &str| {
        let mut a = vec!["explain".to_owned(), "--json".to_owned()];
        a.extend(auth_args(&issuer));
        a.push(token.to_owned());
        a
    };
    let signature = |token: &str| token.rsplit('.').next().expect("signature").to_owned();

    let good = issuer.sign("key-a", &issuer.claims(unix_now()));
    let out = run_with_stdin(args(&good), None).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    let doc: Value = serde_json::from_str(&text).expect("one JSON document");
    assert_eq!(doc["verdict"], "accepted", "{doc}");
    assert_eq!(doc["caller"]["preferred_username"], "alice@test.example");
    assert_eq!(doc["caller"]["kind"], "delegated");
    assert_eq!(doc["judged_as_dev_idp"], false);
    assert!(doc["times"]["exp"]["seconds_from_now"].as_i64() > Some(0));
    assert!(doc.get("reason").is_none());
    assert!(!text.contains(&good) && !text.contains(&signature(&good)));

    // Refused: a Graph token, read from stdin as `-`.
    let graph = issuer.sign(
        "key-a",
        &with(
            issuer.claims(unix_now()),
            &[("aud", json!("00000003-0000-0000-c000-000000000000"))],
        ),
    );
    let out = run_with_stdin(args("-"), Some(format!("Bearer {graph}\n"))).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let doc: Value = serde_json::from_str(&text).expect("one JSON document");
    assert_eq!(doc["verdict"], "rejected", "{doc}");
    assert_eq!(doc["reason"]["code"], "graph_token");
    assert!(
        doc["reason"]["fix"]
            .as_str()
            .expect("fix")
            .contains(&format!("Ask for scope api://{API_APP_ID}/mcp:tools")),
        "{doc}"
    );
    assert_eq!(doc["claims"]["aud"], "00000003-0000-0000-c000-000000000000");
    assert!(doc.get("caller").is_none());
    assert!(!text.contains(&graph), "the token is never printed");
    assert!(!text.contains(&signature(&graph)), "nor its signature");

    // Not judged (no audience configured): exit 2, still one document.
    let out = run_with_stdin(
        vec![
            "explain".to_owned(),
            "--json".to_owned(),
            "--issuer".to_owned(),
            issuer.issuer(),
            graph.clone(),
        ],
        None,
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(2), "{text}");
    let doc: Value = serde_json::from_str(&text).expect("one JSON document");
    assert_eq!(doc["verdict"], "cannot_validate", "{doc}");
    assert!(
        doc["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{doc}"
    );
    assert!(!text.contains(&signature(&graph)));
}

#[tokio::test]
async fn check_json_is_one_document_with_the_same_findings_and_exit_code() {
    let issuer = TestIssuer::start().await;
    let mut args = vec!["check".to_owned(), "--json".to_owned()];
    args.extend(auth_args(&issuer));
    let out = run_with_stdin(args.clone(), None).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    let doc: Value = serde_json::from_str(&text).expect("one JSON document");
    assert_eq!(doc["ok"], true, "{doc}");
    let findings = doc["findings"].as_array().expect("findings");
    assert_eq!(findings[0]["subject"], "config");
    let probe = findings
        .iter()
        .find(|f| f["subject"] == issuer.issuer().as_str())
        .expect("the issuer's probe");
    assert_eq!(probe["level"], "ok", "{doc}");
    assert_eq!(probe["signing_keys"], 1, "{doc}");

    issuer.go_down();
    let out = run_with_stdin(args, None).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let doc: Value = serde_json::from_str(&text).expect("one JSON document");
    assert_eq!(doc["ok"], false, "{doc}");
    let failed: Vec<&Value> = doc["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["level"] == "fail")
        .collect();
    assert_eq!(failed.len(), 1, "{doc}");
    assert!(
        failed[0]["message"]
            .as_str()
            .expect("message")
            .contains("503")
    );
    assert!(failed[0]["fix"].is_string(), "{doc}");

    // A configuration that does not load is a finding too.
    let bad = temp_path("bad-json.toml");
    std::fs::write(&bad, "[auth]\naudince = [\"x\"]\n").expect("write");
    let out = run_with_stdin(
        vec![
            "check".to_owned(),
            "--json".to_owned(),
            "--config".to_owned(),
            bad.display().to_string(),
        ],
        None,
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let doc: Value = serde_json::from_str(&text).expect("one JSON document");
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["findings"][0]["level"], "fail");
    assert!(
        doc["findings"][0]["message"]
            .as_str()
            .expect("message")
            .contains("audince")
    );
    let _ = std::fs::remove_file(bad);
}

#[test]
fn bash_completion_registers_a_function_for_mcpgate() {
    let out = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = temp_path("completion.bash");
    std::fs::write(&script, &out.stdout).expect("write");
    let bash = Command::new("bash")
        .arg("--norc")
        .arg("-c")
        .arg("source \"$1\" && complete -p mcpgate && declare -F _mcpgate")
        .arg("bash")
        .arg(&script)
        .output()
        .expect("run bash");
    let said = String::from_utf8_lossy(&bash.stdout).into_owned();
    assert!(
        bash.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&bash.stderr)
    );
    assert!(
        said.lines().any(|l| l.starts_with("complete ")
            && l.contains(" -F _mcpgate ")
            && l.ends_with(" mcpgate")),
        "{said}"
    );
    assert!(said.lines().any(|l| l == "_mcpgate"), "{said}");
    let _ = std::fs::remove_file(script);

    // The other shells get a script too, and an unknown one is refused.
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .expect("run");
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
    let out = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn man_prints_a_roff_page() {
    let out = Command::new(BIN).arg("man").output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = String::from_utf8(out.stdout).expect("utf-8");
    // The first request past clap_mangen's quote-string preamble (`.ie`,
    // `.el`) is the title header.
    let first = page
        .lines()
        .find(|l| !l.starts_with(".ie ") && !l.starts_with(".el "))
        .expect("a line");
    assert!(first.starts_with(".TH mcpgate 1"), "{page}");
    assert!(page.contains(".SH SYNOPSIS") && page.contains("mcpgate\\-serve(1)"));

    let out = Command::new(BIN)
        .args(["man", "serve"])
        .output()
        .expect("run");
    let page = String::from_utf8(out.stdout).expect("utf-8");
    assert!(page.contains(".TH mcpgate-serve 1"), "{page}");
}

#[tokio::test]
async fn explain_names_each_entra_issuer_form_and_aadsts_code() {
    let issuer = TestIssuer::start().await;
    let tid = "7c3e9f2a-0d1b-4e5a-9c8b-2f6a1d4e8b30";
    for (iss, form, fix) in [
        (
            format!("https://sts.windows.net/{tid}/"),
            "Entra ID v1.0 issuer",
            "accessTokenAcceptedVersion",
        ),
        (
            format!("https://login.microsoftonline.com/{tid}/v2.0"),
            "Entra ID v2.0 issuer",
            "trust the issuer",
        ),
        (
            format!("https://{tid}.ciamlogin.com/{tid}/v2.0"),
            "External ID (CIAM) issuer",
            "ciamlogin.com",
        ),
        (
            "https://contoso.b2clogin.com/tfp/contoso.onmicrosoft.com/b2c_1_signin/v2.0/"
                .to_owned(),
            "Azure AD B2C issuer",
            "trust the issuer",
        ),
    ] {
        let token = issuer.sign(
            "key-a",
            &with(issuer.claims(unix_now()), &[("iss", json!(iss))]),
        );
        let mut args = vec!["explain".to_owned(), "--json".to_owned()];
        args.extend(auth_args(&issuer));
        args.push(token.clone());
        let out = run_with_stdin(args, None).await;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(1), "{text}");
        let doc: Value = serde_json::from_str(&text).expect("one JSON document");
        assert_eq!(doc["reason"]["code"], "untrusted_issuer", "{doc}");
        assert!(
            doc["issuer_form"]
                .as_str()
                .is_some_and(|f| f.contains(form)),
            "{iss}: {doc}"
        );
        assert!(
            doc["reason"]["fix"]
                .as_str()
                .is_some_and(|f| f.contains(fix)),
            "{iss}: {doc}"
        );
        assert!(!text.contains(&token));
    }

    // An error text instead of a token: each code, one sentence and a fix.
    for code in [50076, 53003, 7000114, 500011, 9010010] {
        let error = format!(
            "invalid_grant: AADSTS{code}: something went wrong. Trace ID: 1 Correlation ID: 2"
        );
        let out = run_with_stdin(vec!["explain".into(), error], None).await;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert!(text.starts_with(&format!("AADSTS{code}: ")), "{text}");
        assert!(text.contains("\n  fix: "), "{text}");
        let out = run_with_stdin(
            vec!["explain".into(), "--json".into(), format!("AADSTS{code}")],
            None,
        )
        .await;
        let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
        assert_eq!(doc["aadsts"][0]["code"], format!("AADSTS{code}"), "{doc}");
    }
}

#[tokio::test]
async fn an_external_id_tenant_of_the_dev_idp_is_trusted_by_its_ciam_issuer_alone() {
    use mcpgate_devidp::directory::{DEFAULT_API_APP_ID, DEFAULT_TENANT_ID};
    // The built-in directory, its tenant presented as External ID (CIAM).
    let mut directory = mcpgate_devidp::IdpConfig::builtin();
    directory.tenants[0].external_id = true;
    directory.tenants[0].name = "Contoso customers (External ID)".into();
    let directory_file = temp_path("ciam-directory.toml");
    std::fs::write(
        &directory_file,
        toml::to_string(&directory).expect("directory TOML"),
    )
    .expect("write directory");
    let serve_config = temp_path("ciam-serve.toml");
    std::fs::write(
        &serve_config,
        format!(
            "[idp]\ndirectory = {:?}\n",
            directory_file.display().to_string()
        ),
    )
    .expect("write config");
    let data_dir = temp_path("ciam-data");
    let _ = std::fs::remove_dir_all(&data_dir);
    let server = serve(
        &[
            "--config".into(),
            serve_config.display().to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--metrics-bind".into(),
            "off".into(),
        ],
        "ciam",
    );
    let idp = &server.ready["idp"];
    let base = idp["base_url"].as_str().expect("base_url");
    let token = mcp::DevIdp::from_ready(&server.ready)
        .token(
            "alice@mcpgate.test",
            &format!("api://{DEFAULT_API_APP_ID}/mcp:tools"),
        )
        .await;
    let ciam_issuer = format!("{base}/{DEFAULT_TENANT_ID}/v2.0");

    // mcpgate configured for an External ID tenant, the authority on
    // loopback: the CIAM path on the IdP's host, and no v1.0 issuer.
    let explain_config = temp_path("ciam-explain.toml");
    std::fs::write(
        &explain_config,
        format!(
            "ca_file = {:?}\n[auth.entra]\ntenant_id = \"{DEFAULT_TENANT_ID}\"\napp_id = \"{DEFAULT_API_APP_ID}\"\nauthority = \"{base}\"\nexternal_id = true\n",
            idp["ca_file"].as_str().expect("ca_file")
        ),
    )
    .expect("write config");
    let out = run_with_stdin(
        vec![
            "explain".into(),
            "--json".into(),
            "--config".into(),
            explain_config.display().to_string(),
            token.expose().to_owned(),
        ],
        None,
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    let doc: Value = serde_json::from_str(&text).expect("one JSON document");
    assert_eq!(doc["verdict"], "accepted", "{doc}");
    assert_eq!(doc["claims"]["iss"], ciam_issuer.as_str());
    assert_eq!(doc["claims"]["ver"], "2.0");
    assert_eq!(doc["trusted_issuers"], json!([ciam_issuer]));
    assert!(!text.contains(token.expose()));
    drop(server);
    let _ = std::fs::remove_dir_all(&data_dir);
}

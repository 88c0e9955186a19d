//! The desktop client against `mcpgate serve` and its development IdP in
//! direct mode (the metadata names the IdP, as it names Entra for clients
//! with pre-registered ids): sign-in without a browser, device code, the
//! cache and its silent refresh, two processes refreshing at once, and what
//! is printed. Broker mode has its own file (`broker.rs`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use mcpgate_devidp::IdpConfig;
use mcpgate_devidp::directory::DEFAULT_DESKTOP_CLIENT_ID;
use serde_json::Value;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_mcpgate");

struct Server {
    child: Child,
    ready: Value,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    fn mcp_url(&self) -> String {
        self.ready["mcp_url"].as_str().expect("mcp_url").to_owned()
    }

    fn ca_file(&self) -> String {
        self.ready["idp"]["ca_file"]
            .as_str()
            .expect("ca")
            .to_owned()
    }

    fn cache(&self) -> PathBuf {
        self.dir.join("client-cache")
    }

    /// Runs a client command against this server.
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run mcpgate")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .arg("--ca-file")
            .arg(self.ca_file())
            .arg("--cache-dir")
            .arg(self.cache())
            .env_remove("MCPGATE_CLIENT_ID")
            .env_remove("MCPGATE_CLIENT_ISSUER")
            .env_remove("MCPGATE_CLIENT_SECRET");
        cmd
    }
}

/// `mcpgate serve` on defaults, auto-approving alice; `lifetime` sets the
/// access token lifetime of the dev IdP.
fn serve(name: &str, lifetime: Option<u64>) -> Server {
    let config = lifetime.map(|secs| IdpConfig {
        access_token_lifetime_secs: Some(secs),
        ..IdpConfig::builtin()
    });
    serve_with(name, config, true)
}

/// `mcpgate serve` with an IdP directory, auto-approving alice or not.
// The child is reaped by `Server`'s Drop, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn serve_with(name: &str, config: Option<IdpConfig>, auto_approve: bool) -> Server {
    let dir = std::env::temp_dir().join(format!("mcpgate-client-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let ready = dir.join("ready.json");
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env_remove("MCPGATE_IDP_AUTO_APPROVE")
        .env_remove("MCPGATE_CONFIG")
        .env("MCPGATE_BROKER__MODE", "direct")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if auto_approve {
        cmd.env("MCPGATE_IDP_AUTO_APPROVE", "alice@mcpgate.test");
    }
    if let Some(config) = config {
        let path = dir.join("idp.toml");
        std::fs::write(&path, toml::to_string(&config).expect("toml")).expect("write");
        cmd.arg("--idp-directory").arg(path);
    }
    let child = cmd.spawn().expect("spawn");
    let (child, ready) = common::wait_ready(child, &ready, Duration::from_secs(60));
    Server { child, ready, dir }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn token_files(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache.join("mcpgate").join("tokens"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn call_signs_in_without_a_browser_and_caches_privately() {
    let server = serve("call", None);
    let url = server.mcp_url();
    let out = server.run(&[
        "call",
        &url,
        "whoami",
        "--client-id",
        DEFAULT_DESKTOP_CLIENT_ID,
        "--non-interactive",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let result: Value = serde_json::from_str(&stdout(&out)).expect("JSON result");
    assert_eq!(
        result["structuredContent"]["preferred_username"],
        "alice@mcpgate.test"
    );

    let files = token_files(&server.cache());
    assert_eq!(files.len(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files[0])
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the token cache is private");
    }
    let cached: Value =
        serde_json::from_slice(&std::fs::read(&files[0]).expect("read")).expect("json");
    let access_token = cached["tokens"]["access_token"]
        .as_str()
        .expect("cached token")
        .to_owned();
    assert!(!stdout(&out).contains(&access_token) && !stderr(&out).contains(&access_token));

    // The cache serves the next command: no client id, no sign-in.
    let out = server.run(&["tools", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("whoami\t"));
    assert!(
        !stdout(&out).contains(&access_token),
        "tools never prints a token"
    );

    // The same as one JSON document each, still without the token.
    let out = server.run(&["tools", &url, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("one JSON document");
    let tools = doc["tools"].as_array().expect("tools");
    assert!(tools.iter().any(|t| t["name"] == "whoami"), "{doc}");
    assert!(!stdout(&out).contains(&access_token));
    let out = server.run(&["call", &url, "whoami", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("one JSON document");
    assert_eq!(doc["tool"], "whoami");
    assert_eq!(doc["is_error"], false);
    assert_eq!(
        doc["result"]["structuredContent"]["preferred_username"],
        "alice@mcpgate.test"
    );
    assert!(!stdout(&out).contains(&access_token));

    // `token` is the one command that prints it.
    let out = server.run(&["token", &url]);
    assert_eq!(stdout(&out).trim(), access_token);

    let out = server.run(&["logout", &url]);
    assert!(out.status.success());
    assert!(token_files(&server.cache()).is_empty());
}

#[test]
fn device_code_sign_in_works_against_the_dev_idp() {
    let server = serve("device", None);
    let url = server.mcp_url();
    let out = server.run(&[
        "login",
        &url,
        "--client-id",
        DEFAULT_DESKTOP_CLIENT_ID,
        "--device-code",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("devicelogin"),
        "the code's page is shown: {}",
        stderr(&out)
    );
    // stderr is a pipe here: the prompts, and no spinner.
    assert!(
        !stderr(&out).contains("waiting for the sign-in") && !stderr(&out).contains('\r'),
        "{}",
        stderr(&out)
    );
    assert_eq!(token_files(&server.cache()).len(), 1);
}

#[test]
fn expiring_tokens_are_refreshed_silently_and_never_twice() {
    // Tokens that live 30 s are always within the refresh margin.
    let server = serve("refresh", Some(30));
    let url = server.mcp_url();
    let first = server.run(&[
        "token",
        &url,
        "--client-id",
        DEFAULT_DESKTOP_CLIENT_ID,
        "--non-interactive",
    ]);
    assert!(first.status.success(), "{}", stderr(&first));
    let second = server.run(&["token", &url]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_ne!(stdout(&first), stdout(&second), "refreshed");
    assert!(!stderr(&second).contains("refused"), "{}", stderr(&second));

    // Two processes refreshing at once: the lock makes the second use the
    // first one's result instead of replaying its refresh token, which the
    // IdP would punish by revoking the family.
    let spawn = || {
        server
            .command(&["token", &url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    );
    for o in [&a, &b] {
        assert!(o.status.success(), "{}", stderr(o));
        assert!(
            !stderr(o).contains("refused"),
            "a refresh token was spent twice: {}",
            stderr(o)
        );
    }
    let third = server.run(&["token", &url]);
    assert!(third.status.success());
    assert!(
        !stderr(&third).contains("refused"),
        "the family is still valid: {}",
        stderr(&third)
    );
}

#[test]
fn plain_http_to_a_remote_server_is_refused() {
    let out = Command::new(BIN)
        .args(["tools", "http://mcp.example.com/mcp"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("plain http"), "{}", stderr(&out));
}

#[tokio::test]
async fn device_code_approved_by_a_person_on_the_page() {
    let config = IdpConfig {
        device_code_interval_secs: Some(1),
        ..IdpConfig::builtin()
    };
    let server = serve_with("device-page", Some(config), false);
    let url = server.mcp_url();
    let mut login = server
        .command(&[
            "login",
            &url,
            "--client-id",
            DEFAULT_DESKTOP_CLIENT_ID,
            "--device-code",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn login");

    // The prompt names the page and the code.
    let stderr_pipe = login.stderr.take().expect("stderr");
    let (tx, rx) = tokio::sync::oneshot::channel();
    // Reads the prompt, then keeps draining what follows.
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut tx = Some(tx);
        let mut rest_of_output = String::new();
        for line in std::io::BufReader::new(stderr_pipe).lines() {
            let line = line.expect("utf-8");
            if let Some(code) = line.split("enter the code ").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(
                    code.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            } else {
                rest_of_output.push_str(&line);
                rest_of_output.push('\n');
            }
        }
        rest_of_output
    });
    let code = rx.await.expect("the prompt names a code");

    // A person opens the page, enters the code and approves as bob.
    let ca = std::fs::read(server.ca_file()).expect("CA");
    let http = reqwest::Client::builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&ca).expect("PEM"))
        .build()
        .expect("client");
    let page_url = server.ready["idp"]["device_login_url"]
        .as_str()
        .expect("page")
        .to_owned();
    let page = http.get(&page_url).send().await.expect("page");
    let cookie = common::csrf_cookie(&page);
    let html = page.text().await.expect("html");
    // Every hidden field of the form (the CSRF value, and the flow's id
    // where the page has one), then what a person fills in.
    let mut form = common::hidden_fields(&html);
    assert!(
        form.iter().any(|(k, _)| k == "csrf"),
        "a CSRF field: {html}"
    );
    form.extend([
        ("user_code".to_owned(), code.clone()),
        ("username".to_owned(), "bob@mcpgate.test".to_owned()),
        ("action".to_owned(), "approve".to_owned()),
    ]);
    let answer = http
        .post(&page_url)
        .header("cookie", cookie)
        .form(&form)
        .send()
        .await
        .expect("approve");
    assert_eq!(answer.status(), 200);

    let status = tokio::task::spawn_blocking(move || login.wait().expect("wait"))
        .await
        .expect("join");
    let output = reader.join().expect("reader");
    assert!(
        status.success(),
        "login ends once the code is approved: {output}"
    );
    let out = server.run(&["call", &url, "whoami"]);
    let result: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(
        result["structuredContent"]["preferred_username"],
        "bob@mcpgate.test"
    );
}

#[test]
fn logout_forgets_what_login_kept_however_the_url_is_typed() {
    let server = serve("logout", None);
    let url = server.mcp_url();
    // The named cache directory is the user's: its mode stays as it was.
    std::fs::create_dir_all(server.cache()).expect("mkdir");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(server.cache(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    let out = server.run(&[
        "login",
        &url,
        "--client-id",
        DEFAULT_DESKTOP_CLIENT_ID,
        "--non-interactive",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(token_files(&server.cache()).len(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(
            mode(&server.cache()),
            0o755,
            "--cache-dir's mode is left alone"
        );
        assert_eq!(mode(&server.cache().join("mcpgate")), 0o700);
    }

    // The same server, typed differently: the scheme and host in capitals.
    let shouted = url.replacen("http://", "HTTP://", 1);
    assert_ne!(shouted, url);
    let out = server.run(&["logout", &shouted]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        token_files(&server.cache()).is_empty(),
        "logout forgot nothing: {}",
        stderr(&out)
    );
}

#[test]
fn without_a_browser_login_uses_the_device_code_instead_of_waiting() {
    let server = serve("no-browser", None);
    let url = server.mcp_url();
    // No display, and no xdg-open on PATH.
    let empty = server.dir.join("empty-path");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let out = server
        .command(&["login", &url, "--client-id", DEFAULT_DESKTOP_CLIENT_ID])
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env("PATH", &empty)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--device-code") && stderr(&out).contains("devicelogin"),
        "the fallback is said, and the code's page shown: {}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("Sign in at:"), "{}", stderr(&out));
    assert_eq!(token_files(&server.cache()).len(), 1);
}

#[test]
fn a_refused_client_shows_the_servers_answer_but_not_its_secret() {
    let server = serve("refused", None);
    let url = server.mcp_url();
    let confidential = server.ready["idp"]["clients"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["public"] == false))
        .and_then(|c| c["client_id"].as_str())
        .expect("a confidential client")
        .to_owned();
    let secret = "not-the-secret-of-this-client";
    let out = server
        .command(&[
            "call",
            &url,
            "whoami",
            "--client-id",
            &confidential,
            "--client-credentials",
        ])
        .env("MCPGATE_CLIENT_SECRET", secret)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("invalid_client"), "{err}");
    // The raw body, with what only it carries (Entra's correlation id).
    assert!(
        err.contains("the authorization server answered:") && err.contains("correlation_id"),
        "{err}"
    );
    assert!(!err.contains(secret), "{err}");
    assert!(token_files(&server.cache()).is_empty());
}

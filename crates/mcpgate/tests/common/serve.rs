//! Running the binaries for the gateway tests: the fixture (found beside
//! the test executable, built once if missing), `mcpgate serve` with a
//! config file in a directory of its own, and the fixture over HTTP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mcpgate_devidp::IdpConfig;
use serde_json::Value;

use crate::common;

const BIN: &str = env!("CARGO_BIN_EXE_mcpgate");

/// The fixture binary beside this test's (`target/<profile>/`), built once
/// if `cargo test -p mcpgate` did not build it.
pub fn fixture() -> &'static Path {
    static FIXTURE: OnceLock<PathBuf> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test executable");
        // target/<profile>/deps/gateway-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let path = profile_dir.join(format!("mcpgate-fixture{}", std::env::consts::EXE_SUFFIX));
        if !path.exists() {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = Command::new(cargo);
            build
                .args(["build", "-p", "mcpgate-fixture"])
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build -p mcpgate-fixture");
            assert!(status.success(), "cargo build -p mcpgate-fixture failed");
        }
        assert!(path.exists(), "no fixture at {}", path.display());
        path
    })
}

/// A TOML string literal.
pub fn quoted(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// `[[upstreams]] env` making the fixture log each request it receives
/// on stderr, which serve logs: what reached the upstream, seen from it.
pub const LOG_REQUESTS: &str = "env = { MCPGATE_FIXTURE_LOG = \"rmcp::service=debug\" }\n";

/// The words of the fixture's log line for a call of `tool`.
pub fn received(tool: &str) -> [String; 2] {
    ["received request".to_owned(), format!("name: \"{tool}\"")]
}

/// `[[upstreams]]` running the stdio fixture, with `extra` keys.
pub fn stdio_upstream(extra: &str) -> String {
    let command = format!("'{}' stdio --test-tools", fixture().display());
    format!(
        "[[upstreams]]\nname = \"fixture\"\ncommand = {}\n{extra}",
        quoted(&command)
    )
}

/// A running `mcpgate serve`, killed (and its directory removed, unless the
/// test failed) when dropped.
pub struct Gateway {
    child: Child,
    pub ready: Value,
    dir: PathBuf,
}

impl Gateway {
    /// Starts `serve` with `config` as its file (`$DIR` standing for the
    /// gateway's directory), `args` and `envs`, and the embedded IdP's
    /// directory `idp` if given; its stderr goes to `serve.log`.
    // The child is reaped by Drop, which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    pub fn start(
        name: &str,
        config: &str,
        args: &[&str],
        envs: &[(&str, &str)],
        idp: Option<&IdpConfig>,
    ) -> Self {
        let dir =
            std::env::temp_dir().join(format!("mcpgate-gateway-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let config = config.replace("$DIR", &dir.display().to_string());
        std::fs::write(dir.join("mcpgate.toml"), config).expect("write the config");
        let mut command = Command::new(BIN);
        command.args(["serve", "--bind", "127.0.0.1:0"]);
        if let Some(idp) = idp {
            let path = dir.join("idp.toml");
            std::fs::write(&path, toml::to_string(idp).expect("IdP TOML")).expect("write");
            command.arg("--idp-directory").arg(path);
        }
        let ready = dir.join("ready.json");
        let log = std::fs::File::create(dir.join("serve.log")).expect("log file");
        let child = command
            .arg("--ready-file")
            .arg(&ready)
            .arg("--config")
            .arg(dir.join("mcpgate.toml"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(args)
            .env_remove("MCPGATE_CONFIG")
            .env_remove("MCPGATE_DATA_DIR")
            .env_remove("MCPGATE_UPSTREAM_URL")
            .env_remove("MCPGATE_IDP_AUTO_APPROVE")
            .env("MCPGATE_LOG", "info")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mcpgate serve");
        let (child, ready) = common::wait_ready(child, &ready, Duration::from_secs(60));
        Self { child, ready, dir }
    }

    /// A gateway with no authentication in front of the stdio fixture.
    pub fn open(name: &str, upstream_extra: &str, envs: &[(&str, &str)]) -> Self {
        let config = format!(
            "{}\n[audit]\nfile = \"$DIR/audit.jsonl\"\nstore = false\n",
            stdio_upstream(upstream_extra)
        );
        Self::start(name, &config, &["--no-auth"], envs, None)
    }

    pub fn mcp_url(&self) -> String {
        self.ready["mcp_url"].as_str().expect("mcp_url").to_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// Waits until serve's log has a line with every one of `needles`.
    pub async fn wait_for_log(&self, needles: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.logged(needles) {
            assert!(
                Instant::now() < deadline,
                "serve never logged {needles:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether serve's log has a line with every one of `needles`.
    pub fn logged(&self, needles: &[&str]) -> bool {
        self.log()
            .lines()
            .any(|line| needles.iter().all(|n| line.contains(n)))
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.join("audit.jsonl")
    }

    /// Stops the server with SIGTERM, so that the auditor drains its
    /// queue, and waits for it to exit.
    pub fn stop(&mut self) {
        self.terminate();
        assert!(
            self.exited_within(Duration::from_secs(20)).is_some(),
            "serve did not stop on SIGTERM"
        );
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "SIGTERM to {pid}");
    }

    /// How it exited, if it did within `limit`.
    pub fn exited_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The audit file's records, once stopped.
    pub fn audit_records(&mut self) -> (String, Vec<Value>) {
        self.stop();
        let text = std::fs::read_to_string(self.audit_path()).unwrap_or_else(|e| {
            panic!(
                "no audit file at {} ({e}); serve's log:\n{}",
                self.audit_path().display(),
                self.log()
            )
        });
        let records = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("an audit line is JSON"))
            .collect();
        (text, records)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("kept for inspection: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `mcpgate-fixture http` on a free loopback port, killed when dropped.
pub struct HttpFixture {
    child: Child,
    pub url: String,
    dir: PathBuf,
}

impl HttpFixture {
    // The child is reaped by Drop, which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    pub fn start() -> Self {
        // Tests of one binary run at once: each fixture has its own directory.
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("mcpgate-gateway-httpfx-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let ready = dir.join("ready.json");
        let child = Command::new(fixture())
            .args([
                "http",
                "--bind",
                "127.0.0.1:0",
                "--test-tools",
                "--ready-file",
            ])
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mcpgate-fixture http");
        let (child, ready) = common::wait_ready(child, &ready, Duration::from_secs(30));
        let url = ready["mcp_url"].as_str().expect("mcp_url").to_owned();
        Self { child, url, dir }
    }
}

impl Drop for HttpFixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! The servers under test, as child processes started the way scripts
//! start `mcpgate serve`: bind port 0, wait for the ready file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// Which server a measurement is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `mcpgate-echo`: the ceiling.
    Echo,
    /// `mcpgate serve`, validating tokens.
    Auth,
    /// `mcpgate serve --no-auth`.
    NoAuth,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Echo, Kind::Auth, Kind::NoAuth];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Echo => "echo",
            Kind::Auth => "auth",
            Kind::NoAuth => "no-auth",
        }
    }
}

/// A running server; killed on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// `host:port`, for the Host header.
    pub host: String,
    log_path: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log_path);
    }
}

impl Server {
    /// Starts `bin` with `args`, then `--bind 127.0.0.1:0 --ready-file F`,
    /// and waits for the ready file's `mcp_url`.
    pub fn start(bin: &Path, args: &[String], label: &str) -> anyhow::Result<Self> {
        let ready =
            std::env::temp_dir().join(format!("mcpgate-load-{}-{label}.json", std::process::id()));
        let _ = std::fs::remove_file(&ready);
        // The server's stderr goes to a file, quoted if it fails to start.
        let log_path = ready.with_extension("log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut child = Command::new(bin)
            .args(args)
            .args(["--bind", "127.0.0.1:0", "--ready-file"])
            .arg(&ready)
            .env("MCPGATE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
            {
                let _ = std::fs::remove_file(&ready);
                let url = v["mcp_url"].as_str().unwrap_or_default();
                let host = url
                    .strip_prefix("http://")
                    .and_then(|rest| rest.split_once('/'))
                    .map(|(host, _)| host.to_owned())
                    .with_context(|| format!("{label}: unexpected mcp_url {url:?}"))?;
                let addr = host
                    .parse()
                    .with_context(|| format!("{label}: mcp_url {url:?} is not ip:port"))?;
                return Ok(Self {
                    child,
                    addr,
                    host,
                    log_path,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("{label} server exited before it was ready ({status}):\n{log}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{label} server never became ready");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds (user + system) used so far; `None` without procfs.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // Fields after the command name, which may contain spaces, in parentheses.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        // The kernel counts in clock ticks; USER_HZ is 100 on Linux.
        Some((utime + stime) / 100.0)
    }

    /// Resident set size in KB (`VmRSS` in `/proc/<pid>/status`).
    pub fn rss_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

/// Where the binaries are.
pub struct Binaries {
    pub mcpgate: PathBuf,
    pub echo: PathBuf,
}

/// The arguments each kind of server is started with.
pub fn args_for(kind: Kind, issuer: &str) -> Vec<String> {
    let api = mcpgate_testkit::API_APP_ID;
    match kind {
        Kind::Echo => Vec::new(),
        Kind::Auth => vec![
            "serve".into(),
            "--issuer".into(),
            issuer.into(),
            "--audience".into(),
            api.into(),
            "--required-scope".into(),
            format!("api://{api}/mcp:tools"),
        ],
        Kind::NoAuth => vec!["serve".into(), "--no-auth".into()],
    }
}

/// Starts one server of `kind`.
pub fn start(bins: &Binaries, kind: Kind, issuer: &str) -> anyhow::Result<Server> {
    let bin = match kind {
        Kind::Echo => &bins.echo,
        Kind::Auth | Kind::NoAuth => &bins.mcpgate,
    };
    Server::start(bin, &args_for(kind, issuer), kind.name())
}

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
    // Its own data directory (store, audit trail), removed after it ends.
    _data: tempfile::TempDir,
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
        // A fresh data directory each: by default serve keeps its SQLite
        // store and audit trail in the user's, shared with every other
        // serve and growing from run to run, and several processes on one
        // SQLite file re-read pages on every transaction (a third of a
        // gateway's CPU, profiled, with 200 MB left there by earlier runs).
        let data = tempfile::Builder::new()
            .prefix("mcpgate-load-data-")
            .tempdir()
            .context("creating a data directory")?;
        let mut child = Command::new(bin)
            .args(args)
            .args(["--bind", "127.0.0.1:0", "--ready-file"])
            .arg(&ready)
            .env("MCPGATE_LOG", "warn")
            .env("XDG_DATA_HOME", data.path())
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
                    _data: data,
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
        cpu_seconds(self.pid())
    }

    /// Resident set size in KB (`VmRSS` in `/proc/<pid>/status`).
    pub fn rss_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

/// The fields of `/proc/<pid>/stat` after the command name, which may
/// contain spaces and so sits in parentheses.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// CPU seconds (user + system) process `pid` has used; `None` without
/// procfs or once it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let fields = stat_fields(pid)?;
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // The kernel counts in clock ticks; USER_HZ is 100 on Linux.
    Some((utime + stime) / 100.0)
}

/// The live child processes of `pid`, found by their parent in
/// `/proc/*/stat` (`/proc/<pid>/task/*/children` needs a kernel option).
pub fn children_of(pid: u32) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let parent = stat_fields(child).and_then(|f| f.get(1)?.parse::<u32>().ok());
        if parent == Some(pid) {
            out.push(child);
        }
    }
    Some(out)
}

/// Where the binaries are.
pub struct Binaries {
    pub mcpgate: PathBuf,
    pub echo: PathBuf,
    /// `mcpgate-fixture`, the gateway's upstream.
    pub fixture: PathBuf,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_child_and_reads_cpu() {
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep runs");
        let me = std::process::id();
        let children = children_of(me).expect("procfs");
        let _ = child.kill();
        let _ = child.wait();
        assert!(children.contains(&child.id()), "{children:?}");
        assert!(cpu_seconds(me).is_some_and(|s| s >= 0.0));
        assert!(cpu_seconds(u32::MAX).is_none(), "no such process");
    }
}

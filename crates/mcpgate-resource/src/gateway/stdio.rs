//! An upstream MCP server run as a child process, speaking JSON-RPC over
//! its stdin and stdout, one message per line.
//!
//! The command is split as a shell would split it and never run through a
//! shell. The child starts with an empty environment plus a safe minimum of
//! the gateway's (so that no secret of the gateway's reaches it), what the
//! configuration adds, and, per session, who the user is. Its stderr is
//! logged. When it dies, every call in flight is answered with an error and
//! the next call starts a new child, with a backoff if it keeps dying.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;

use super::UpstreamError;
use super::routes::Routes;

/// Variables of the gateway's environment a child may see: what a program
/// needs to find itself and its locale, nothing that holds a credential.
pub const SAFE_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "TMPDIR",
    "TEMP",
    "TMP",
    "SYSTEMROOT",
    "WINDIR",
    "COMSPEC",
    "PATHEXT",
];

/// Longest line a child may write (one JSON-RPC message).
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// How to start the child.
#[derive(Debug, Clone)]
pub struct StdioSpec {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Variables set for the child, besides [`SAFE_ENV`].
    pub env: Vec<(String, String)>,
    /// Its working directory; the gateway's when `None`.
    pub cwd: Option<PathBuf>,
    /// The upstream's name, for logs.
    pub name: String,
}

/// Where `program` would be found when started: itself when it names a
/// path (relative to `cwd`, the child's directory), else the first
/// executable file of that name on `PATH`.
pub(crate) fn find_program(program: &str, cwd: Option<&std::path::Path>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |path: &std::path::Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.is_empty() {
        return None;
    }
    if program.contains('/') {
        let path = match cwd {
            Some(dir) => dir.join(program),
            None => PathBuf::from(program),
        };
        return executable(&path).then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| executable(candidate))
}

impl StdioSpec {
    /// Splits `command` as a POSIX shell would (quotes, escapes), without
    /// running one.
    pub fn parse_command(command: &str) -> Result<Vec<String>, UpstreamError> {
        match shlex::split(command) {
            Some(argv) if !argv.is_empty() => Ok(argv),
            _ => Err(UpstreamError::Config(format!(
                "--upstream-cmd {command:?} is not a command line (empty, or an unclosed quote)"
            ))),
        }
    }
}

// A running child: where to write, and whether it still reads.
#[derive(Debug)]
struct Running {
    stdin: Arc<tokio::sync::Mutex<ChildStdin>>,
    alive: Arc<AtomicBool>,
    started: Instant,
    // Dropping it kills the child.
    _kill: oneshot::Sender<()>,
}

// A child that dies sooner than this after its start counts as failing.
const QUICK_DEATH: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    not_before: Option<Instant>,
}

/// One child (restarted as needed) and the routes of its messages.
#[derive(Debug)]
pub struct StdioUpstream {
    spec: Arc<StdioSpec>,
    // This session's additions (the user's identity).
    extra_env: Vec<(String, String)>,
    routes: Arc<Routes>,
    running: std::sync::Mutex<Option<Arc<Running>>>,
    starting: tokio::sync::Mutex<Backoff>,
}

impl StdioUpstream {
    /// An upstream that starts its child on first use.
    pub fn new(
        spec: Arc<StdioSpec>,
        extra_env: Vec<(String, String)>,
        routes: Arc<Routes>,
    ) -> Self {
        Self {
            spec,
            extra_env,
            routes,
            running: std::sync::Mutex::new(None),
            starting: tokio::sync::Mutex::new(Backoff::default()),
        }
    }

    fn current(&self) -> Option<Arc<Running>> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running
            .as_ref()
            .filter(|r| r.alive.load(Ordering::Acquire))
            .cloned()
    }

    /// Whether a child is running now.
    pub fn is_running(&self) -> bool {
        self.current().is_some()
    }

    /// Makes sure a child runs; `true` when this call started a new one
    /// (so the caller must run the handshake). A child that keeps dying
    /// soon after its start is restarted no sooner than 100 ms, 200 ms, …
    /// (at most 30 s) after its previous start.
    pub async fn ensure(&self) -> Result<bool, UpstreamError> {
        if self.current().is_some() {
            return Ok(false);
        }
        let mut backoff = self.starting.lock().await;
        if self.current().is_some() {
            return Ok(false);
        }
        if let Some(at) = backoff.not_before
            && let Some(wait) = at.checked_duration_since(Instant::now())
        {
            return Err(UpstreamError::Unavailable(format!(
                "the upstream server keeps exiting; the next restart is in {} ms",
                wait.as_millis()
            )));
        }
        let previous = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(previous) = previous {
            if previous.started.elapsed() < QUICK_DEATH {
                backoff.failures += 1;
            } else {
                backoff.failures = 0;
            }
        }
        let started = Instant::now();
        backoff.not_before = (backoff.failures > 0).then(|| {
            started
                + Duration::from_millis(100)
                    .saturating_mul(1 << (backoff.failures - 1).min(9))
                    .min(Duration::from_secs(30))
        });
        match self.spawn() {
            Ok(running) => {
                *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(running));
                Ok(true)
            }
            Err(e) => {
                backoff.failures += 1;
                Err(e)
            }
        }
    }

    fn spawn(&self) -> Result<Running, UpstreamError> {
        let spec = &self.spec;
        let (program, args) = spec
            .argv
            .split_first()
            .ok_or_else(|| UpstreamError::Config("the upstream command is empty".into()))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for name in SAFE_ENV {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command.envs(spec.env.iter().map(|(k, v)| (k, v)));
        command.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        if let Some(cwd) = &spec.cwd {
            command.current_dir(cwd);
        }
        let mut child = command.spawn().map_err(|e| {
            UpstreamError::Unavailable(format!(
                "could not start the upstream server {program:?}: {e}"
            ))
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(UpstreamError::Unavailable(
                "the child's pipes are missing".into(),
            ));
        };
        let alive = Arc::new(AtomicBool::new(true));
        let (kill, killed) = oneshot::channel();
        let stdin = Arc::new(tokio::sync::Mutex::new(stdin));
        tokio::spawn(read_stdout(
            stdout,
            stdin.clone(),
            self.routes.clone(),
            alive.clone(),
            spec.name.clone(),
        ));
        tokio::spawn(log_stderr(stderr, spec.name.clone()));
        tokio::spawn(reap(child, killed, spec.name.clone()));
        tracing::info!(target: "mcpgate::upstream", upstream = %spec.name, program, "upstream server started");
        Ok(Running {
            stdin,
            alive,
            started: Instant::now(),
            _kill: kill,
        })
    }

    /// Writes one message to the running child.
    pub async fn send(&self, message: &[u8]) -> Result<(), UpstreamError> {
        let running = self.current().ok_or_else(|| {
            UpstreamError::Unavailable("the upstream server is not running".into())
        })?;
        // One write per message: a pipe write is a system call, and a
        // wake-up of the child.
        let mut line = Vec::with_capacity(message.len() + 1);
        line.extend_from_slice(message);
        line.push(b'\n');
        let mut stdin = running.stdin.lock().await;
        let written = async {
            stdin.write_all(&line).await?;
            stdin.flush().await
        }
        .await;
        if let Err(e) = written {
            running.alive.store(false, Ordering::Release);
            return Err(UpstreamError::Unavailable(format!(
                "the upstream server stopped reading: {e}"
            )));
        }
        Ok(())
    }

    /// Stops the child, if one runs.
    pub fn stop(&self) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

async fn read_stdout(
    stdout: impl AsyncRead + Unpin,
    stdin: Arc<tokio::sync::Mutex<ChildStdin>>,
    routes: Arc<Routes>,
    alive: Arc<AtomicBool>,
    name: String,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        match read_line(&mut reader, &mut line).await {
            Ok(true) => {
                let message = line.trim_ascii();
                if message.is_empty() {
                    continue;
                }
                if let Some(reply) = routes.inbound(message, None) {
                    // A request of the child's that no client can take:
                    // refused at once, so that the child does not wait.
                    let mut stdin = stdin.lock().await;
                    let _ = stdin.write_all(&reply).await;
                    let _ = stdin.write_all(b"\n").await;
                    let _ = stdin.flush().await;
                }
            }
            Ok(false) => break,
            Err(LineError::TooLong) => {
                tracing::warn!(target: "mcpgate::upstream", upstream = %name, max = MAX_LINE, "the upstream server wrote a message over the size limit; dropped");
            }
            Err(LineError::Io(e)) => {
                tracing::warn!(target: "mcpgate::upstream", upstream = %name, error = %e, "could not read from the upstream server");
                break;
            }
        }
    }
    alive.store(false, Ordering::Release);
    routes.fail_all(
        -32603,
        "the upstream server exited before answering; it is restarted on the next call",
    );
}

enum LineError {
    TooLong,
    Io(std::io::Error),
}

// Reads up to a newline, keeping at most MAX_LINE bytes: `false` at EOF.
async fn read_line(
    reader: &mut BufReader<impl AsyncRead + Unpin>,
    line: &mut Vec<u8>,
) -> Result<bool, LineError> {
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf().await.map_err(LineError::Io)?;
        if buf.is_empty() {
            return if line.is_empty() && !too_long {
                Ok(false)
            } else {
                Ok(true)
            };
        }
        let (chunk, found) = match memchr(buf) {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > MAX_LINE {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = found.unwrap_or(buf.len());
        reader.consume(used);
        if found.is_some() {
            return if too_long {
                Err(LineError::TooLong)
            } else {
                Ok(true)
            };
        }
    }
}

fn memchr(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|b| *b == b'\n')
}

async fn log_stderr(stderr: impl AsyncRead + Unpin, name: String) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line: String = line.chars().take(2048).collect();
        tracing::info!(target: "mcpgate::upstream", upstream = %name, "stderr: {line}");
    }
}

async fn reap(mut child: Child, killed: oneshot::Receiver<()>, name: String) {
    tokio::select! {
        status = child.wait() => match status {
            Ok(status) => tracing::warn!(target: "mcpgate::upstream", upstream = %name, %status, "upstream server exited"),
            Err(e) => tracing::warn!(target: "mcpgate::upstream", upstream = %name, error = %e, "upstream server lost"),
        },
        _ = killed => {
            let _ = child.kill().await;
            tracing::debug!(target: "mcpgate::upstream", upstream = %name, "upstream server stopped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_as_a_shell_would_without_one() {
        assert_eq!(
            StdioSpec::parse_command(r#"node "my server.js" --flag 'a b' c\ d"#).expect("argv"),
            ["node", "my server.js", "--flag", "a b", "c d"]
        );
        // Shell syntax is just text: nothing is expanded or run.
        assert_eq!(
            StdioSpec::parse_command("echo $HOME; rm -rf /").expect("argv"),
            ["echo", "$HOME;", "rm", "-rf", "/"]
        );
        assert!(StdioSpec::parse_command("").is_err());
        assert!(StdioSpec::parse_command("node 'unclosed").is_err());
    }

    #[tokio::test]
    async fn long_lines_are_dropped_and_reading_goes_on() {
        let mut input = vec![b'x'; MAX_LINE + 10];
        input.extend_from_slice(b"\n{\"a\":1}\n");
        let mut reader = BufReader::new(&input[..]);
        let mut line = Vec::new();
        assert!(matches!(
            read_line(&mut reader, &mut line).await,
            Err(LineError::TooLong)
        ));
        line.clear();
        assert!(matches!(read_line(&mut reader, &mut line).await, Ok(true)));
        assert_eq!(line, b"{\"a\":1}");
        line.clear();
        assert!(matches!(read_line(&mut reader, &mut line).await, Ok(false)));
    }
}

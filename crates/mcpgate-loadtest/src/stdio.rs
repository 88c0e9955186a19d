//! The direct stdio baseline: `mcpgate-fixture stdio` driven over its own
//! stdin and stdout, as the gateway drives it, with the same concurrency as
//! the HTTP runs (N requests in flight, told apart by JSON-RPC id). It is
//! the counterpart of [`crate::driver`]: one task, requests written as
//! they are due, answers read in place (only the id is looked at).

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::driver::Outcome;
use crate::scenario::SESSION_VERSION;

/// A stdio MCP server in a child process, initialized; killed on drop.
pub struct StdioServer {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    line: Vec<u8>,
    next_id: u64,
}

impl StdioServer {
    /// Starts `bin args…` and does the MCP handshake.
    pub async fn start(bin: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdin = child.stdin.take().context("no stdin pipe")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut server = Self {
            child,
            stdin: BufWriter::new(stdin),
            stdout: BufReader::with_capacity(64 * 1024, stdout),
            line: Vec::with_capacity(4096),
            next_id: 1,
        };
        let init = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": SESSION_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "load", "version": "1"}
            }
        });
        server.send(&init).await?;
        let answer = tokio::time::timeout(Duration::from_secs(30), server.read_line())
            .await
            .context("the stdio server did not answer initialize within 30 s")??;
        let answer: Value = serde_json::from_slice(answer).context("initialize answer")?;
        if answer.get("result").is_none() {
            bail!("initialize refused: {answer}");
        }
        server
            .send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        Ok(server)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn send(&mut self, message: &Value) -> anyhow::Result<()> {
        let mut bytes = message.to_string().into_bytes();
        bytes.push(b'\n');
        self.stdin.write_all(&bytes).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// The next line from the server, without its newline.
    async fn read_line(&mut self) -> anyhow::Result<&[u8]> {
        self.line.clear();
        let n = self.stdout.read_until(b'\n', &mut self.line).await?;
        if n == 0 {
            bail!("the stdio server closed its stdout");
        }
        Ok(self.line.trim_ascii_end())
    }

    /// Keeps `in_flight` requests (`request(id)`, one line each) in flight
    /// for `duration`: each answer is followed by the next request until
    /// the deadline, then the requests still out are awaited, as the HTTP
    /// driver waits for its connections' last answers.
    pub async fn drive(
        &mut self,
        in_flight: usize,
        duration: Duration,
        request: impl Fn(u64) -> Vec<u8>,
    ) -> anyhow::Result<Outcome> {
        let mut out = Outcome::empty();
        let mut sent_at: HashMap<u64, Instant> = HashMap::with_capacity(in_flight);
        let started = Instant::now();
        let deadline = started + duration;
        for _ in 0..in_flight {
            self.queue(&request, &mut sent_at).await?;
        }
        self.stdin.flush().await?;
        while !sent_at.is_empty() {
            let line = self.read_line().await?;
            // Notifications and the server's own requests have no id we sent.
            let Some(sent) = answer_id(line).and_then(|id| sent_at.remove(&id)) else {
                continue;
            };
            let now = Instant::now();
            if is_result(line) {
                out.ok += 1;
                let us = u64::try_from((now - sent).as_micros()).unwrap_or(u64::MAX);
                out.latency.saturating_record(us.max(1));
            } else {
                out.errors += 1;
                out.not_found += u64::from(contains(line, b"\"code\":-32601"));
                let text = String::from_utf8_lossy(&line[..line.len().min(300)]).into_owned();
                out.first_error.get_or_insert(text);
            }
            if now < deadline {
                self.queue(&request, &mut sent_at).await?;
            }
            // Write when about to wait for the server, so that answers read
            // in one batch cost one write.
            if self.stdout.buffer().is_empty() {
                self.stdin.flush().await?;
            }
        }
        out.elapsed = started.elapsed();
        Ok(out)
    }

    async fn queue(
        &mut self,
        request: &impl Fn(u64) -> Vec<u8>,
        sent_at: &mut HashMap<u64, Instant>,
    ) -> anyhow::Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        self.stdin.write_all(&request(id)).await?;
        sent_at.insert(id, Instant::now());
        Ok(())
    }
}

/// The top-level JSON-RPC id of an answer, if it is a number. serde (rmcp
/// included) writes `jsonrpc`, then `id`, then `result` or `error`, so the
/// first `"id":` is the answer's own.
fn answer_id(line: &[u8]) -> Option<u64> {
    let at = find(line, b"\"id\":")? + 5;
    let digits = line[at..]
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit());
    let mut id: u64 = 0;
    let mut any = false;
    for d in digits {
        id = id.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(id)
}

fn is_result(line: &[u8]) -> bool {
    contains(line, b"\"result\":")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_answer_id() {
        let line =
            br#"{"jsonrpc":"2.0","id":42,"result":{"content":[{"type":"text","text":"x"}]}}"#;
        assert_eq!(answer_id(line), Some(42));
        assert!(is_result(line));
        let line = br#"{"jsonrpc":"2.0","id": 7,"error":{"code":-32601,"message":"m"}}"#;
        assert_eq!(answer_id(line), Some(7));
        assert!(!is_result(line));
        assert_eq!(
            answer_id(br#"{"jsonrpc":"2.0","method":"notifications/message"}"#),
            None
        );
        assert_eq!(
            answer_id(br#"{"jsonrpc":"2.0","id":"s-1","result":{}}"#),
            None
        );
        assert_eq!(answer_id(br#"{"id":99999999999999999999999}"#), None);
    }

    /// The driver against a stand-in server (`cat` answers each request
    /// with itself): every id comes back, and the count adds up.
    #[tokio::test]
    async fn drives_a_line_server() {
        let Ok(mut child) = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
        else {
            panic!("cat is needed for this test");
        };
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let mut server = StdioServer {
            child,
            stdin: BufWriter::new(stdin),
            stdout: BufReader::new(stdout),
            line: Vec::new(),
            next_id: 1,
        };
        let o = server
            .drive(4, Duration::from_millis(50), |id| {
                format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{}}}}\n").into_bytes()
            })
            .await
            .expect("drives");
        assert_eq!(o.errors, 0);
        assert!(o.ok >= 4, "{} answers", o.ok);
        assert_eq!(o.ok + 1, server.next_id, "every request answered once");
        assert_eq!(o.latency.len(), o.ok);
    }
}

//! The binary as a gateway test meets it: started over stdio and over HTTP
//! (ephemeral port, ready file), then initialize, tools/list and
//! `fixture_echo` in plain JSON-RPC, plus the test tools whose contract is
//! easiest to break (whoami never echoing a token, crash's exit status,
//! mutate's notification).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_mcpgate-fixture");
const WAIT: Duration = Duration::from_secs(20);

/// Kills the child when a test ends, passing or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn initialize(id: u64) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": { "name": "mcpgate-fixture-test", "version": "0" },
        },
    })
}

fn call(id: u64, name: &str, arguments: Value) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": name, "arguments": arguments },
    })
}

const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

fn tool_names(list: &Value) -> Vec<String> {
    list["result"]["tools"]
        .as_array()
        .expect("tools array")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_owned())
        .collect()
}

// ------------------------------------------------------------------ stdio

struct Stdio_ {
    child: Running,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Stdio_ {
    fn start(envs: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .args(["--test-tools", "stdio"])
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mcpgate-fixture stdio");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut me = Self {
            child: Running(child),
            stdin,
            lines,
        };
        let init = me.request(&initialize(1));
        assert_eq!(init["result"]["serverInfo"]["name"], "mcpgate-fixture");
        me.send(INITIALIZED);
        me
    }

    fn send(&mut self, message: &str) {
        writeln!(self.stdin, "{message}").expect("write to the fixture");
        self.stdin.flush().expect("flush");
    }

    /// The next message on stdout, which must be JSON.
    fn next(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(WAIT)
            .expect("a line from the fixture");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {line}"))
    }

    /// Sends `request` and returns its answer, skipping notifications.
    fn request(&mut self, request: &Value) -> Value {
        self.send(&request.to_string());
        loop {
            let message = self.next();
            if message.get("id") == request.get("id") {
                return message;
            }
        }
    }
}

#[test]
fn stdio_initialize_list_and_echo() {
    let mut fx = Stdio_::start(&[]);
    let list = fx.request(&json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" }));
    let names = tool_names(&list);
    assert!(names.iter().any(|n| n == "test_simple_text"), "{names:?}");
    assert!(names.iter().any(|n| n == "fixture_echo"), "{names:?}");

    let echo = fx.request(&call(3, "fixture_echo", json!({ "text": "hello, gate" })));
    assert_eq!(
        echo["result"]["content"][0]["text"], "hello, gate",
        "{echo}"
    );
    assert_eq!(echo["result"]["isError"], false);
}

#[test]
fn stdio_whoami_shows_the_user_variables_only() {
    let mut fx = Stdio_::start(&[("MCPGATE_USER_OID", "1234"), ("OTHER_SECRET", "x")]);
    let who = fx.request(&call(2, "fixture_whoami", json!({})));
    let s = &who["result"]["structuredContent"];
    assert_eq!(s["transport"], "stdio");
    assert_eq!(s["env"], json!({ "MCPGATE_USER_OID": "1234" }), "{who}");
}

#[test]
fn stdio_mutate_notifies_and_changes_the_listing() {
    let mut fx = Stdio_::start(&[]);
    let args = json!({ "tool": "fixture_echo", "description": "now different" });
    fx.send(&call(2, "fixture_mutate", args).to_string());
    let (mut notified, mut answered) = (false, false);
    while !(notified && answered) {
        let message = fx.next();
        notified |= message["method"] == "notifications/tools/list_changed";
        answered |= message["id"] == 2;
    }
    let list = fx.request(&json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/list" }));
    let echo = list["result"]["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "fixture_echo"))
        .cloned();
    assert_eq!(
        echo.map(|t| t["description"].clone()),
        Some(json!("now different"))
    );
}

#[test]
fn stdio_crash_exits_with_status_3_and_no_answer() {
    let mut fx = Stdio_::start(&[]);
    fx.send(&call(2, "fixture_crash", json!({})).to_string());
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = fx.child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the fixture did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(3));
    // Whatever stdout still held, none of it answers the call.
    while let Ok(line) = fx.lines.recv_timeout(Duration::from_millis(200)) {
        let message: Value = serde_json::from_str(&line).expect("JSON");
        assert_ne!(message["id"], 2, "crash answered: {message}");
    }
}

// ------------------------------------------------------------------- HTTP

struct Http {
    _child: Running,
    url: String,
    client: reqwest::Client,
    session: String,
}

fn wait_for_ready_file(path: &Path, child: &mut Child) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            let ready: Value = serde_json::from_str(&text).expect("the ready file is JSON");
            return ready["mcp_url"].as_str().expect("mcp_url").to_owned();
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the fixture exited"
        );
        assert!(Instant::now() < deadline, "no ready file");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Http {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ready = dir.path().join("ready.json");
        let mut child = Command::new(BIN)
            .args([
                "--test-tools",
                "http",
                "--bind",
                "127.0.0.1:0",
                "--ready-file",
            ])
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mcpgate-fixture http");
        let url = wait_for_ready_file(&ready, &mut child);
        assert!(
            url.starts_with("http://127.0.0.1:") && url.ends_with("/mcp"),
            "{url}"
        );
        let mut me = Self {
            _child: Running(child),
            url,
            client: reqwest::Client::new(),
            session: String::new(),
        };
        let response = me.post(&initialize(1), &[]).await;
        me.session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .expect("a session id")
            .to_owned();
        let init = answer(response, 1).await;
        assert_eq!(init["result"]["serverInfo"]["name"], "mcpgate-fixture");
        let notified = me
            .post(&serde_json::from_str(INITIALIZED).expect("json"), &[])
            .await;
        assert_eq!(notified.status(), reqwest::StatusCode::ACCEPTED);
        me
    }

    async fn post(&self, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self
            .client
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .json(body);
        if !self.session.is_empty() {
            request = request
                .header("mcp-session-id", &self.session)
                .header("mcp-protocol-version", "2025-11-25");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("POST /mcp");
        assert!(response.status().is_success(), "{}", response.status());
        response
    }

    async fn request(&self, body: &Value, headers: &[(&str, &str)]) -> Value {
        let id = body["id"].as_u64().expect("id");
        answer(self.post(body, headers).await, id).await
    }
}

/// The JSON-RPC answer with `id` in a JSON or SSE response body.
async fn answer(response: reqwest::Response, id: u64) -> Value {
    let sse = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let body = tokio::time::timeout(WAIT, response.text())
        .await
        .expect("the answer in time")
        .expect("body");
    let messages: Vec<Value> = if sse {
        body.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str(d.trim()).ok())
            .collect()
    } else {
        vec![serde_json::from_str(&body).expect("JSON body")]
    };
    messages
        .into_iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("no answer to {id} in {body}"))
}

#[tokio::test]
async fn http_initialize_list_and_echo() {
    let fx = Http::start().await;
    let list = fx
        .request(
            &json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" }),
            &[],
        )
        .await;
    let names = tool_names(&list);
    assert!(
        names.iter().any(|n| n == "json_schema_2020_12_tool"),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n == "fixture_whoami"), "{names:?}");

    let echo = fx
        .request(
            &call(3, "fixture_echo", json!({ "text": "over http" })),
            &[],
        )
        .await;
    assert_eq!(echo["result"]["content"][0]["text"], "over http", "{echo}");
}

#[tokio::test]
async fn http_whoami_reports_identity_headers_and_never_the_token() {
    let fx = Http::start().await;
    let token = "Bearer eyJ.not-a-real.token";
    let headers = [
        ("x-mcpgate-user", "alice@mcpgate.test"),
        ("x-other", "ignored"),
        ("authorization", token),
    ];
    let who = fx
        .request(&call(2, "fixture_whoami", json!({})), &headers)
        .await;
    let s = &who["result"]["structuredContent"];
    assert_eq!(s["transport"], "http");
    assert_eq!(s["authorization"], true);
    assert_eq!(
        s["headers"],
        json!({ "x-mcpgate-user": "alice@mcpgate.test" }),
        "{who}"
    );
    assert!(
        !who.to_string().contains("not-a-real"),
        "the token came back: {who}"
    );

    let anonymous = fx.request(&call(3, "fixture_whoami", json!({})), &[]).await;
    assert_eq!(
        anonymous["result"]["structuredContent"]["authorization"],
        false
    );
}

#[tokio::test]
async fn http_refuses_a_foreign_host() {
    let fx = Http::start().await;
    let response = fx
        .client
        .post(&fx.url)
        .header("host", "evil.example.com")
        .header("accept", "application/json, text/event-stream")
        .json(&initialize(1))
        .send()
        .await
        .expect("POST /mcp");
    assert!(response.status().is_client_error(), "{}", response.status());
}

#[tokio::test]
async fn http_reconnection_closes_the_post_stream_and_answers_on_resume() {
    let fx = Http::start().await;
    let response = fx.post(&call(7, "test_reconnection", json!({})), &[]).await;
    let body = tokio::time::timeout(WAIT, response.text())
        .await
        .expect("the POST stream ends mid-call")
        .expect("body");
    assert!(
        !body.contains("Reconnection test completed"),
        "answered on POST: {body}"
    );
    let last_id = body
        .lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(str::trim)
        .next_back()
        .expect("an event id on the POST stream")
        .to_owned();

    let resumed = fx
        .client
        .get(&fx.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &fx.session)
        .header("mcp-protocol-version", "2025-11-25")
        .header("last-event-id", &last_id)
        .send()
        .await
        .expect("GET /mcp");
    assert!(resumed.status().is_success(), "{}", resumed.status());
    // The resumed stream stays open; read until the answer arrives.
    let mut stream = resumed;
    let mut seen = String::new();
    let deadline = Instant::now() + WAIT;
    while !seen.contains("Reconnection test completed") {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.chunk())
            .await
            .expect("the answer on the resumed stream")
            .expect("chunk")
            .expect("the stream ended without the answer");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains(r#""id":7"#), "{seen}");
}

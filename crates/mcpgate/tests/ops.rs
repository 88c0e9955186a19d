//! Operating `serve`: its Prometheus metrics after real traffic, read back
//! with a Prometheus text parser; readiness; JSON log lines with request
//! ids and no secret; OpenTelemetry spans received over OTLP by an
//! in-process receiver, with the trace context passed to the upstream; and
//! SIGTERM while calls are in flight.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
#[path = "common/mcp.rs"]
#[allow(
    dead_code,
    reason = "shared with the gateway tests, which use all of it"
)]
mod mcp;
#[path = "common/serve.rs"]
#[allow(
    dead_code,
    reason = "shared with the gateway tests, which use all of it"
)]
mod serve;

use mcp::{DevIdp, Session};
use mcpgate_devidp::directory::DEFAULT_API_APP_ID;
use serve::{Gateway, HttpFixture, LOG_REQUESTS, received, stdio_upstream};

const ALICE: &str = "alice@mcpgate.test";
const BOB: &str = "bob@mcpgate.test";

/// `fixture_crash` is for operators only: bob's call of it is a denial.
const POLICY: &str = r#"
[policy]
[[policy.rules]]
name = "operators"
tools = ["fixture_crash"]
roles = ["MCP.Tools.All"]
"#;

fn tools_scope() -> String {
    format!("api://{DEFAULT_API_APP_ID}/mcp:tools")
}

/// A gateway with the embedded IdP in direct mode (its tokens are the ones
/// `/mcp` takes).
fn gateway(name: &str, config: &str, args: &[&str], envs: &[(&str, &str)]) -> (Gateway, DevIdp) {
    let mut envs = envs.to_vec();
    envs.push(("MCPGATE_BROKER__MODE", "direct"));
    let gateway = Gateway::start(name, config, args, &envs, None);
    let idp = DevIdp::from_ready(&gateway.ready);
    (gateway, idp)
}

/// One sample: its labels and value.
struct Samples(Vec<prometheus_parse::Sample>);

impl Samples {
    async fn scrape(url: &str) -> Self {
        let response = reqwest::get(url).await.expect("scrape /metrics");
        assert_eq!(response.status(), 200);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        let text = response.text().await.expect("metrics text");
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
        Self(scrape.samples)
    }

    /// The sum of the counter or gauge `metric` over the samples whose
    /// labels include `labels`.
    fn value(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| s.metric == metric)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    }

    /// How many observations the histogram `metric` holds for `labels`.
    fn observations(&self, metric: &str, labels: &[(&str, &str)]) -> u64 {
        self.0
            .iter()
            .filter(|s| s.metric == metric)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                prometheus_parse::Value::Histogram(buckets) => buckets
                    .iter()
                    .map(|b| b.count as u64)
                    .max()
                    .unwrap_or_default(),
                _ => 0,
            })
            .sum()
    }
}

#[tokio::test]
async fn metrics_count_the_traffic_and_refusals_by_reason() {
    let config = format!(
        "{}\n[audit]\nfile = \"$DIR/audit.jsonl\"\nstore = false\n{POLICY}",
        stdio_upstream("pinning = \"off\"\n")
    );
    let (gateway, idp) = gateway("metrics", &config, &["--log-format", "json"], &[]);
    let url = gateway.mcp_url();
    let metrics_url = gateway.ready["metrics_url"]
        .as_str()
        .expect("the ready file names the metrics URL")
        .to_owned();
    assert!(
        metrics_url.starts_with("http://127.0.0.1:"),
        "{metrics_url}"
    );
    let before = Samples::scrape(&metrics_url).await;

    let alice = idp.token(ALICE, &tools_scope()).await;
    let bob = idp.token(BOB, &tools_scope()).await;
    let mut as_alice = Session::open(&url, Some(&alice)).await;
    let mut as_bob = Session::open(&url, Some(&bob)).await;
    assert_eq!(as_alice.echo("one").await, "one");
    assert_eq!(as_alice.echo("two").await, "two");
    let denied = as_bob.call("fixture_crash", json!({})).await;
    assert!(
        denied.error_code().is_some(),
        "bob may not crash the fixture"
    );
    let http = reqwest::Client::new();
    let post = |auth: Option<&'static str>| {
        let mut request = http
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send()
    };
    assert_eq!(post(None).await.expect("POST").status(), 401);
    assert_eq!(
        post(Some("Bearer not.a.jwt")).await.expect("POST").status(),
        401
    );
    assert_eq!(
        post(Some("Bearer not.a.jwt")).await.expect("POST").status(),
        401
    );

    let after = Samples::scrape(&metrics_url).await;
    let moved = |metric: &str, labels: &[(&str, &str)]| {
        after.value(metric, labels) - before.value(metric, labels)
    };
    let calls = "mcpgate_tool_calls_total";
    assert_eq!(
        moved(calls, &[("tool", "fixture_echo"), ("decision", "allow")]),
        2.0
    );
    assert_eq!(
        moved(calls, &[("tool", "fixture_crash"), ("decision", "deny")]),
        1.0
    );
    let refusals = "mcpgate_token_refusals_total";
    assert_eq!(moved(refusals, &[("reason", "malformed")]), 2.0);
    assert_eq!(moved(refusals, &[("reason", "missing_token")]), 1.0);
    assert_eq!(
        moved(
            "mcpgate_http_requests_total",
            &[("route", "/mcp"), ("status", "401")]
        ),
        3.0
    );
    assert!(
        moved(
            "mcpgate_http_requests_total",
            &[("route", "/mcp"), ("status", "200")]
        ) >= 5.0
    );
    assert_eq!(
        moved(
            "mcpgate_upstream_calls_total",
            &[("upstream", "fixture"), ("outcome", "ok")]
        ),
        2.0
    );
    assert_eq!(after.value("mcpgate_sessions_open", &[]), 2.0);
    assert!(after.value("mcpgate_jwks_fetches_total", &[("outcome", "ok")]) >= 1.0);
    let validations = "mcpgate_token_validation_duration_seconds";
    // Each token is verified once, then found in the cache.
    assert!(after.observations(validations, &[("cache", "miss")]) >= 4);
    assert!(after.observations(validations, &[("cache", "hit")]) >= 4);
    assert!(
        after.observations(
            "mcpgate_upstream_call_duration_seconds",
            &[("upstream", "fixture")]
        ) >= 2
    );
    assert!(
        after.observations(
            "mcpgate_store_operation_duration_seconds",
            &[("op", "put_session"), ("outcome", "ok")]
        ) >= 2
    );

    // Readiness, on both listeners; liveness on the metrics one.
    let public = url.trim_end_matches("/mcp");
    let ops = metrics_url.trim_end_matches("/metrics");
    for base in [public, ops] {
        let ready = reqwest::get(format!("{base}/readyz"))
            .await
            .expect("readyz");
        assert_eq!(ready.status(), 200);
        let ready: Value = ready.json().await.expect("readyz JSON");
        assert_eq!(ready["status"], "ready", "{ready}");
        let checks = ready["checks"].to_string();
        for needed in ["keys ", "store", "upstream fixture"] {
            assert!(checks.contains(needed), "{needed} is checked: {checks}");
        }
    }
    let alive = reqwest::get(format!("{ops}/healthz"))
        .await
        .expect("healthz");
    assert_eq!(alive.status(), 200);

    // Every log line is a JSON object; each decision carries its request's
    // id; no token appears anywhere.
    let log = gateway.log();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let decisions: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "mcpgate::decision")
        .collect();
    assert_eq!(decisions.len(), 3, "one line per decision: {log}");
    for line in &decisions {
        let id = line["span"]["id"].as_str().unwrap_or_default();
        assert_eq!(id.len(), 16, "a request id: {line}");
    }
    assert!(!log.contains("eyJ"), "a token in the log");
    for token in [&alice, &bob] {
        assert!(!log.contains(token.expose()));
    }
}

#[tokio::test]
async fn sigterm_lets_calls_in_flight_finish_and_refuses_new_ones() {
    const CALLS: usize = 6;
    let config = stdio_upstream(LOG_REQUESTS);
    let mut gateway = Gateway::start(
        "drain",
        &config,
        &["--no-auth", "--shutdown-timeout", "30"],
        &[],
        None,
    );
    let url = gateway.mcp_url();
    let session = Session::open(&url, None).await;
    // A standalone stream, which would never end on its own.
    let mut stream = reqwest::Client::new()
        .get(&url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", session.id())
        .header("mcp-protocol-version", mcp::PROTOCOL)
        .send()
        .await
        .expect("GET the standalone stream");
    assert_eq!(stream.status(), 200);
    // Under load: calls in flight on several sessions (a child each).
    let mut sessions = vec![session];
    for _ in 1..CALLS {
        sessions.push(Session::open(&url, None).await);
    }
    let in_flight: Vec<_> = sessions
        .into_iter()
        .map(|mut session| {
            tokio::spawn(async move {
                session
                    .call("fixture_sleep", json!({ "ms": 1500 }))
                    .await
                    .result()
                    .clone()
            })
        })
        .collect();
    // Once every call has reached the upstream, stop the server.
    let reached = received("fixture_sleep");
    let deadline = Instant::now() + Duration::from_secs(20);
    while gateway
        .log()
        .lines()
        .filter(|l| reached.iter().all(|r| l.contains(r.as_str())))
        .count()
        < CALLS
    {
        assert!(
            Instant::now() < deadline,
            "calls never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let signalled = Instant::now();
    gateway.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let refused = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a new connection while draining is refused: {refused:?}"
    );
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the standalone stream ends on shutdown");
    for call in in_flight {
        let answer = call.await.expect("the call's task");
        assert_eq!(answer["isError"], false, "{answer}");
        assert_eq!(answer["content"][0]["text"], "slept 1500 ms", "{answer}");
    }
    // Well before the 30 s deadline: nothing but the call held it.
    let status = gateway
        .exited_within(Duration::from_secs(15))
        .expect("serve exits once the call is done");
    assert!(status.success(), "{status}");
    assert!(signalled.elapsed() < Duration::from_secs(15));
    assert!(gateway.logged(&["shutting down"]), "{}", gateway.log());
}

#[tokio::test]
async fn past_the_deadline_serve_stops_anyway() {
    let config = stdio_upstream(LOG_REQUESTS);
    let mut gateway = Gateway::start(
        "deadline",
        &config,
        &["--no-auth", "--shutdown-timeout", "1"],
        &[],
        None,
    );
    let mut session = Session::open(&gateway.mcp_url(), None).await;
    // A call that would never end on its own.
    let _hung = tokio::spawn(async move { session.call("fixture_sleep", json!({})).await });
    let reached = received("fixture_sleep");
    gateway
        .wait_for_log(&[reached[0].as_str(), reached[1].as_str()])
        .await;
    gateway.terminate();
    assert!(
        gateway.exited_within(Duration::from_secs(15)).is_some(),
        "serve stops at its deadline with a call still in flight"
    );
    assert!(gateway.logged(&["still in flight"]), "{}", gateway.log());
}

/// What an OTLP/HTTP collector receives, as JSON.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Value>>>);

impl Received {
    /// Every span received so far, flattened.
    fn spans(&self) -> Vec<Value> {
        let batches = self.0.lock().expect("lock").clone();
        batches
            .iter()
            .flat_map(|b| b["resourceSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|r| r["scopeSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|s| s["spans"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

/// An OTLP/HTTP receiver on loopback (JSON encoding).
async fn otlp_receiver() -> (String, Received) {
    let received = Received::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                if let Ok(batch) = serde_json::from_slice::<Value>(&body) {
                    sink.0.lock().expect("lock").push(batch);
                }
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), received)
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_per_request_reaches_the_collector_and_the_trace_goes_upstream() {
    let (endpoint, received) = otlp_receiver().await;
    let upstream = HttpFixture::start();
    let (gateway, idp) = gateway(
        "otlp",
        "",
        &["--upstream-url", &upstream.url],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "mcpgate-test"),
        ],
    );
    let alice = idp.token(ALICE, &tools_scope()).await;
    let mut session = Session::open(&gateway.mcp_url(), Some(&alice)).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    session.set_header("traceparent", &format!("00-{trace_id}-00f067aa0ba902b7-01"));
    let reply = session.call("fixture_whoami", json!({})).await;
    let seen = reply.result()["structuredContent"]["headers"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent upstream: {}", reply.result()))
        .to_owned();
    assert!(
        seen.starts_with(&format!("00-{trace_id}-")),
        "the upstream's request joins the caller's trace: {seen}"
    );
    assert!(
        !seen.contains("00f067aa0ba902b7"),
        "with mcpgate's span as parent, not the caller's"
    );

    // The batch goes out within the schedule delay.
    let deadline = Instant::now() + Duration::from_secs(20);
    let span = loop {
        let spans = received.spans();
        let ours: Vec<&Value> = spans.iter().filter(|s| s["traceId"] == trace_id).collect();
        if !ours.is_empty() {
            assert_eq!(ours.len(), 1, "one span per request: {ours:?}");
            break ours[0].clone();
        }
        assert!(Instant::now() < deadline, "no span received: {spans:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(span["name"], "POST /mcp", "{span}");
    assert_eq!(span["parentSpanId"], "00f067aa0ba902b7", "{span}");
    let text = |key: &str| {
        attribute(&span, key)
            .and_then(|v| v["stringValue"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no {key}: {span}"))
    };
    assert_eq!(text("http.route"), "/mcp");
    assert_eq!(text("decision"), "allow");
    assert_eq!(text("mcp.tool"), "fixture_whoami");
    assert!(!text("enduser.id").is_empty(), "{span}");
    assert!(!text("enduser.tenant").is_empty(), "{span}");
    assert!(!text("client.app").is_empty(), "{span}");
    assert!(
        !span.to_string().contains(alice.expose()),
        "no token in a span"
    );
}

//! The request path without the network: a `tools/call` request goes
//! through the whole router (origin check, token taken and validated from
//! the cache, session, revision and header checks, dispatch, the reply
//! serialised) as `axum` would hand it over from a connection. Guards
//! against regressions in what mcpgate adds per call; the loopback
//! benchmark (`mcpgate-loadtest`) measures the same with the network.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use mcpgate_resource::{Access, ResourceSettings, Stats, router};
use mcpgate_testkit::{API_APP_ID, TestIssuer, unix_now};
use mcpgate_token::{ValidationPolicy, Validator};
use serde_json::{Value, json};
use tower::ServiceExt;

const META: &str = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}"#;

fn request(
    token: Option<&str>,
    session: Option<&str>,
    method: &str,
    body: String,
) -> Request<Body> {
    let mut b = Request::post("/mcp")
        .header("host", "127.0.0.1:8080")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    b = match session {
        Some(id) => b
            .header("mcp-session-id", id)
            .header("mcp-protocol-version", "2025-11-25"),
        None => b
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method),
    };
    if method == "tools/call" && session.is_none() {
        b = b.header("mcp-name", "whoami");
    }
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Body::from(body)).expect("request")
}

fn body(method: &str, stateless: bool) -> String {
    let params = match (method, stateless) {
        ("tools/call", true) => format!(r#"{{"name":"whoami","arguments":{{}},{META}}}"#),
        ("tools/call", false) => r#"{"name":"whoami","arguments":{}}"#.to_owned(),
        (_, true) => format!("{{{META}}}"),
        (_, false) => "{}".to_owned(),
    };
    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{params}}}"#)
}

// What a connection would do with the answer: read it, no more.
async fn drain(app: &Router, req: Request<Body>) -> usize {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    to_bytes(resp.into_body(), usize::MAX)
        .await
        .map_or(0, |b| b.len())
}

async fn send(app: &Router, req: Request<Body>) -> (u16, Option<String>, Value) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status().as_u16();
    let session = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    (
        status,
        session,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let issuer = rt.block_on(TestIssuer::start());
    let policy = ValidationPolicy {
        issuers: vec![issuer.issuer()],
        audiences: vec![format!("api://{API_APP_ID}"), API_APP_ID.to_owned()],
        required_scopes: vec![format!("api://{API_APP_ID}/mcp:tools")],
        ..Default::default()
    };
    let validator = Arc::new(Validator::builder(policy).build().expect("policy"));
    let token = issuer.sign("key-a", &issuer.claims(unix_now()));
    let settings = ResourceSettings::new(
        "http://127.0.0.1:8080".parse().expect("url"),
        vec![issuer.issuer()],
    );
    let authed = router(
        &settings,
        Access::Validate(validator),
        Arc::new(Stats::default()),
    );
    let open = router(&settings, Access::Open, Arc::new(Stats::default()));

    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}})
    .to_string();
    let mut sessions = Vec::new();
    for app in [&authed, &open] {
        let mut req = request(Some(&token), None, "initialize", init.clone());
        req.headers_mut().remove("mcp-method");
        req.headers_mut().remove("mcp-protocol-version");
        let (status, session, _) = rt.block_on(send(app, req));
        assert_eq!(status, 200, "initialize");
        sessions.push(session.expect("a session id"));
    }

    let mut group = c.benchmark_group("request_path");
    for (name, app, session) in [
        ("auth", &authed, &sessions[0]),
        ("no_auth", &open, &sessions[1]),
    ] {
        for method in ["ping", "tools/list", "tools/call"] {
            let session_body = body(method, false);
            // Every request must succeed, or the figures measure refusals.
            let (status, _, answer) = rt.block_on(send(
                app,
                request(Some(&token), Some(session), method, session_body.clone()),
            ));
            assert!(
                status == 200 && answer.get("result").is_some(),
                "{name} {method}: {answer}"
            );
            group.bench_function(format!("{name}/session/{method}"), |b| {
                b.iter(|| {
                    rt.block_on(drain(
                        app,
                        request(Some(&token), Some(session), method, session_body.clone()),
                    ))
                })
            });
            // `ping` is gone from the 2026-07-28 wire: `server/discover`,
            // which also does no work, stands in for it.
            let method = if method == "ping" {
                "server/discover"
            } else {
                method
            };
            let stateless_body = body(method, true);
            let (status, _, answer) = rt.block_on(send(
                app,
                request(Some(&token), None, method, stateless_body.clone()),
            ));
            assert!(
                status == 200 && answer.get("result").is_some(),
                "{name} {method}: {answer}"
            );
            group.bench_function(format!("{name}/stateless/{method}"), |b| {
                b.iter(|| {
                    rt.block_on(drain(
                        app,
                        request(Some(&token), None, method, stateless_body.clone()),
                    ))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! MCP sessions over Streamable HTTP: each protocol version end to end, a
//! session bound to the user who opened it, and DNS-rebinding defences.

use std::sync::Arc;
use std::time::Duration;

use mcpgate_resource::session::{ManualClock, SessionLimits};
use mcpgate_testkit::{unix_now, with};
use serde_json::{Value, json};

use crate::support::*;

async fn initialize(gate: &Gate, token: &str, version: &str) -> (String, Value) {
    let resp = gate
        .http
        .post(gate.mcp_url())
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}
        }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    let session = resp.headers()["mcp-session-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let msg = jsonrpc(&resp.text().await.expect("body"));
    let resp = gate
        .http
        .post(gate.mcp_url())
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", version)
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 202);
    (session, msg)
}

fn call(
    gate: &Gate,
    token: &str,
    session: &str,
    version: &str,
    method: &str,
) -> reqwest::RequestBuilder {
    let params = if method == "tools/call" {
        json!({"name": "whoami", "arguments": {}})
    } else {
        json!({})
    };
    gate.http
        .post(gate.mcp_url())
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", version)
        .json(&json!({"jsonrpc": "2.0", "id": 2, "method": method, "params": params}))
}

#[tokio::test]
async fn session_protocols_list_and_call_whoami() {
    let gate = Gate::start().await;
    let token = gate.token();
    for version in ["2025-06-18", "2025-11-25"] {
        let (session, init) = initialize(&gate, &token, version).await;
        assert_eq!(init["result"]["protocolVersion"], version);
        assert_eq!(init["result"]["serverInfo"]["name"], "mcpgate");

        let resp = call(&gate, &token, &session, version, "tools/list")
            .send()
            .await
            .expect("sent");
        let tools = jsonrpc(&resp.text().await.expect("body"));
        let names: Vec<&str> = tools["result"]["tools"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(names, ["whoami"], "{version}");

        let resp = call(&gate, &token, &session, version, "tools/call")
            .send()
            .await
            .expect("sent");
        let who = jsonrpc(&resp.text().await.expect("body"));
        assert_eq!(
            who["result"]["structuredContent"]["name"], "Alice Test",
            "{version}"
        );
        assert!(
            who["result"].get("resultType").is_none(),
            "a legacy session keeps the old shape: {who}"
        );
    }
    assert_eq!(gate.tool_calls(), 2);
}

#[tokio::test]
async fn another_user_cannot_use_a_session() {
    let gate = Gate::start().await;
    let alice = gate.token();
    let (session, _) = initialize(&gate, &alice, "2025-11-25").await;
    let bob_claims = with(
        gate.issuer.claims(unix_now()),
        &[
            ("oid", json!("00000000-0000-4000-8000-000000000b0b")),
            ("sub", json!("pairwise-bob")),
        ],
    );
    let bob = gate.issuer.sign("key-a", &bob_claims);
    let resp = call(&gate, &bob, &session, "2025-11-25", "tools/call")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 404);
    assert_eq!(gate.tool_calls(), 0);

    // Alice, with a fresh token, still can.
    let alice_again = gate.issuer.sign(
        "key-a",
        &with(gate.issuer.claims(unix_now()), &[("uti", json!("second"))]),
    );
    let resp = call(&gate, &alice_again, &session, "2025-11-25", "tools/call")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    assert_eq!(gate.tool_calls(), 1);

    // A made-up session id gets the same answer as a foreign one.
    let resp = call(&gate, &alice, "not-a-session", "2025-11-25", "tools/call")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 404);
    // So does one that is not text, rather than being taken as no session.
    let resp = gate
        .stateless("tools/call", Some("whoami"), whoami_body())
        .bearer_auth(&alice)
        .header(
            "mcp-session-id",
            reqwest::header::HeaderValue::from_bytes(b"caf\xe9").expect("header"),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 404);

    // Closing the session forgets it.
    let resp = gate
        .http
        .delete(gate.mcp_url())
        .bearer_auth(&alice)
        .header("mcp-session-id", &session)
        .send()
        .await
        .expect("sent");
    assert!(resp.status().is_success(), "{}", resp.status());
    let resp = call(&gate, &alice, &session, "2025-11-25", "tools/call")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn foreign_host_and_origin_are_refused() {
    let gate = Gate::start().await;
    let resp = gate
        .whoami_request()
        .bearer_auth(gate.token())
        .header("host", "attacker.example")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 403, "DNS rebinding: foreign Host");
    let resp = gate
        .whoami_request()
        .bearer_auth(gate.token())
        .header("origin", "http://attacker.example")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 403, "foreign Origin");
    assert_eq!(gate.tool_calls(), 0);
}

#[tokio::test]
async fn open_mode_serves_anonymously() {
    let gate = Gate::open().await;
    let resp = gate.whoami_request().send().await.expect("sent");
    assert_eq!(resp.status(), 200);
    let who = jsonrpc(&resp.text().await.expect("body"));
    assert_eq!(who["result"]["structuredContent"]["authenticated"], false);
}

fn limits(max_total: usize, max_per_principal: usize) -> SessionLimits {
    SessionLimits {
        max_total,
        max_per_principal,
        idle: Duration::from_secs(600),
    }
}

async fn status_of(gate: &Gate, token: &str, session: &str) -> u16 {
    call(gate, token, session, "2025-11-25", "tools/call")
        .send()
        .await
        .expect("sent")
        .status()
        .as_u16()
}

#[tokio::test]
async fn at_a_principals_cap_the_least_recently_used_session_is_closed() {
    let clock = Arc::new(ManualClock::default());
    let gate = Gate::with_sessions(limits(100, 2), clock.clone()).await;
    let (alice, bob) = (
        gate.token(),
        gate.token_for("00000000-0000-4000-8000-000000000b0b"),
    );
    let (first, _) = initialize(&gate, &alice, "2025-11-25").await;
    clock.advance(Duration::from_secs(1));
    let (second, _) = initialize(&gate, &alice, "2025-11-25").await;
    let (bobs, _) = initialize(&gate, &bob, "2025-11-25").await;
    clock.advance(Duration::from_secs(1));
    // Using the first makes the second the least recently used.
    assert_eq!(status_of(&gate, &alice, &first).await, 200);
    let (third, _) = initialize(&gate, &alice, "2025-11-25").await;

    assert_eq!(
        status_of(&gate, &alice, &second).await,
        404,
        "the LRU session went"
    );
    assert_eq!(status_of(&gate, &alice, &first).await, 200);
    assert_eq!(status_of(&gate, &alice, &third).await, 200);
    assert_eq!(
        status_of(&gate, &bob, &bobs).await,
        200,
        "another principal is untouched"
    );
    assert_eq!(gate.endpoint.sessions().len(), 3);
}

#[tokio::test]
async fn at_the_total_cap_a_new_session_is_refused_clearly_and_nothing_is_stored() {
    let clock = Arc::new(ManualClock::default());
    let gate = Gate::with_sessions(limits(2, 10), clock.clone()).await;
    let alice = gate.token();
    let carol = gate.token_for("00000000-0000-4000-8000-00000000ca01");
    initialize(&gate, &alice, "2025-06-18").await;
    initialize(&gate, &alice, "2025-06-18").await;

    let resp = gate
        .http
        .post(gate.mcp_url())
        .bearer_auth(&carol)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}
        }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    assert!(resp.headers().get("mcp-session-id").is_none());
    let body = jsonrpc(&resp.text().await.expect("body"));
    assert_eq!(body["id"], 1);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("too many open MCP sessions")),
        "{body}"
    );
    assert_eq!(
        gate.endpoint.sessions().len(),
        2,
        "the refusal stored nothing"
    );

    // Once the others have idled out, there is room again.
    clock.advance(Duration::from_secs(601));
    initialize(&gate, &carol, "2025-06-18").await;
    assert_eq!(gate.endpoint.sessions().len(), 1);
}

#[tokio::test]
async fn an_idle_session_expires_with_404_and_use_keeps_one_alive() {
    let clock = Arc::new(ManualClock::default());
    let gate = Gate::with_sessions(limits(100, 10), clock.clone()).await;
    let alice = gate.token();
    let (kept, _) = initialize(&gate, &alice, "2025-11-25").await;
    let (idle, _) = initialize(&gate, &alice, "2025-11-25").await;
    for _ in 0..3 {
        clock.advance(Duration::from_secs(300));
        assert_eq!(status_of(&gate, &alice, &kept).await, 200);
    }
    assert_eq!(
        status_of(&gate, &alice, &idle).await,
        404,
        "900 s idle of 600"
    );
    // The client starts anew, as a 404 tells it to.
    let (fresh, _) = initialize(&gate, &alice, "2025-11-25").await;
    assert_eq!(status_of(&gate, &alice, &fresh).await, 200);
}

#[tokio::test]
async fn delete_by_anyone_but_the_owner_is_404_and_ends_nothing() {
    let gate = Gate::start().await;
    let alice = gate.token();
    let bob = gate.token_for("00000000-0000-4000-8000-000000000b0b");
    let (session, _) = initialize(&gate, &alice, "2025-06-18").await;
    let delete = |token: &str| {
        gate.http
            .delete(gate.mcp_url())
            .bearer_auth(token)
            .header("mcp-session-id", &session)
            .send()
    };
    assert_eq!(delete(&bob).await.expect("sent").status(), 404);
    assert_eq!(status_of(&gate, &alice, &session).await, 200);
    assert_eq!(delete(&alice).await.expect("sent").status(), 204);
    assert_eq!(delete(&alice).await.expect("sent").status(), 404);
    assert!(gate.endpoint.sessions().is_empty());
}

#[tokio::test]
async fn get_offers_no_stream_and_hides_foreign_sessions() {
    let gate = Gate::start().await;
    let alice = gate.token();
    let (session, _) = initialize(&gate, &alice, "2025-06-18").await;
    let get = |id: &str| {
        gate.http
            .get(gate.mcp_url())
            .bearer_auth(&alice)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", id)
            .send()
    };
    assert_eq!(get(&session).await.expect("sent").status(), 405);
    assert_eq!(get("not-a-session").await.expect("sent").status(), 404);
}

#[tokio::test]
async fn parallel_calls_on_one_session_all_answer() {
    let gate = Gate::start().await;
    let alice = gate.token();
    let (session, _) = initialize(&gate, &alice, "2025-11-25").await;
    let calls = (0..32).map(|_| async {
        let resp = call(&gate, &alice, &session, "2025-11-25", "tools/call")
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"],
            "application/json",
            "a single JSON answer, not a stream"
        );
        jsonrpc(&resp.text().await.expect("body"))
    });
    for answer in futures::future::join_all(calls).await {
        assert_eq!(answer["result"]["structuredContent"]["name"], "Alice Test");
    }
    assert_eq!(gate.tool_calls(), 32);
}

#[tokio::test]
async fn a_loopback_server_takes_loopback_origins_with_cors_and_no_other() {
    let gate = Gate::start().await;
    let port = gate.base.rsplit(':').next().expect("a port").to_owned();
    for origin in [
        "http://localhost:3000".to_owned(),
        format!("http://127.0.0.1:{port}"),
        "http://[::1]:5173".to_owned(),
    ] {
        let resp = gate
            .whoami_request()
            .bearer_auth(gate.token())
            .header("origin", &origin)
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), 200, "{origin}");
        assert_eq!(
            resp.headers()["access-control-allow-origin"],
            origin.as_str(),
            "{origin}"
        );
        // A browser asks first, without credentials.
        let preflight = gate
            .http
            .request(reqwest::Method::OPTIONS, gate.mcp_url())
            .header("origin", &origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, mcp-protocol-version",
            )
            .send()
            .await
            .expect("sent");
        assert!(
            preflight.status().is_success(),
            "{origin}: {}",
            preflight.status()
        );
        assert_eq!(
            preflight.headers()["access-control-allow-origin"],
            origin.as_str()
        );
    }
    for origin in [
        "http://evil.example",
        "null",
        "http://127.0.0.1.evil.example",
    ] {
        let resp = gate
            .whoami_request()
            .bearer_auth(gate.token())
            .header("origin", origin)
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), 403, "{origin}");
        assert!(resp.headers().get("access-control-allow-origin").is_none());
    }
    assert_eq!(gate.tool_calls(), 3);
}

//! MCP sessions over Streamable HTTP: each protocol version end to end, a
//! session bound to the user who opened it, and DNS-rebinding defences.

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

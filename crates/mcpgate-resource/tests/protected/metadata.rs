//! Protected Resource Metadata (RFC 9728) as clients read it.

use serde_json::{Value, json};

use crate::support::*;

fn expected(gate: &Gate) -> Value {
    json!({
        "resource": format!("{}/mcp", gate.base),
        "authorization_servers": [gate.issuer.issuer()],
        "scopes_supported": [SCOPE],
        "bearer_methods_supported": ["header"],
        "resource_name": "mcpgate",
    })
}

#[tokio::test]
async fn served_at_root_and_path_suffixed_urls() {
    let gate = Gate::start().await;
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let resp = gate
            .http
            .get(format!("{}{path}", gate.base))
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let doc: Value = resp.json().await.expect("json");
        assert_eq!(doc, expected(&gate), "{path}");
    }
}

#[tokio::test]
async fn the_challenge_names_the_path_suffixed_document() {
    let gate = Gate::start().await;
    let resp = gate.whoami_request().send().await.expect("sent");
    let challenge = www_authenticate(&resp);
    let url = challenge
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("resource_metadata");
    let doc: Value = gate
        .http
        .get(url)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["resource"], gate.mcp_url());
}

#[tokio::test]
async fn browsers_may_read_it() {
    let gate = Gate::start().await;
    let url = format!("{}/.well-known/oauth-protected-resource/mcp", gate.base);
    let resp = gate
        .http
        .get(&url)
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let preflight = gate
        .http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .expect("sent");
    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn unknown_paths_are_404_and_health_is_200() {
    let gate = Gate::start().await;
    let resp = gate
        .http
        .get(format!("{}/nope", gate.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 404);
    let resp = gate
        .http
        .get(format!("{}/healthz", gate.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
}

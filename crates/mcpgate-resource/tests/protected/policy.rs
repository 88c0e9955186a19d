//! Per-tool policy on the built-in tools, with real tokens: step-up,
//! outright refusal, and one audit record per decision.

use std::sync::{Arc, Mutex};

use mcpgate_audit::{AuditRecord, AuditSink, Decision};
use mcpgate_resource::policy::{Policy, PolicyConfig, PolicyHandle};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Gate, call_body, jsonrpc, www_authenticate};

#[derive(Debug, Default)]
struct Recorded(Mutex<Vec<AuditRecord>>);

impl AuditSink for Recorded {
    fn record(&self, record: AuditRecord) {
        self.0.lock().expect("lock").push(record);
    }
}

impl Recorded {
    fn take(&self) -> Vec<AuditRecord> {
        std::mem::take(&mut *self.0.lock().expect("lock"))
    }
}

// The `[policy]` table in JSON: the same shape the config file holds, with
// no TOML parser in this crate's dev-dependencies.
fn policy(json: &str) -> Arc<PolicyHandle> {
    let config: PolicyConfig = serde_json::from_str(json).expect("policy config");
    Arc::new(PolicyHandle::new(
        Policy::compile(&config).expect("compiles"),
    ))
}

/// `tools/call whoami` with `token`, on the stateless wire.
async fn whoami(gate: &Gate, token: String) -> reqwest::Response {
    gate.stateless("tools/call", Some("whoami"), call_body("whoami"))
        .bearer_auth(token)
        .send()
        .await
        .expect("send")
}

async fn gate(rules: &str, audit: Arc<Recorded>) -> Gate {
    let policy = policy(rules);
    Gate::with_settings(move |s| {
        s.policy = policy;
        s.audit = Some(audit);
    })
    .await
}

#[tokio::test]
async fn more_scope_lifts_a_step_up_refusal() {
    let audit = Arc::new(Recorded::default());
    let gate = gate(
        r#"{"rules": [{"name": "mail", "tools": ["whoami"], "scopes": ["Mail.Send"]}]}"#,
        audit.clone(),
    )
    .await;

    let refused = whoami(&gate, gate.token()).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let challenge = www_authenticate(&refused);
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );
    assert!(challenge.contains("Mail.Send"), "{challenge}");
    assert!(
        challenge.contains("mcp:tools"),
        "keeps the scopes asked anyway: {challenge}"
    );
    assert_eq!(gate.tool_calls(), 0, "a refused call reaches no tool");

    let stepped_up = gate.token_with(&[("scp", json!("mcp:tools Mail.Send"))]);
    let allowed = whoami(&gate, stepped_up).await;
    assert_eq!(allowed.status(), StatusCode::OK);
    let body = jsonrpc(&allowed.text().await.expect("body"));
    assert!(body["result"]["structuredContent"].is_object(), "{body}");
    assert_eq!(gate.tool_calls(), 1);

    let records = audit.take();
    assert_eq!(records.len(), 2, "one record per decision: {records:?}");
    assert_eq!(records[0].decision, Decision::Deny);
    assert_eq!(records[0].tool.as_deref(), Some("whoami"));
    assert_eq!(records[0].user_upn.as_deref(), Some("alice@test.example"));
    assert_eq!(records[1].decision, Decision::Allow);
    assert!(records[1].upstream_outcome.is_some());
    let text = serde_json::to_string(&records).expect("json");
    assert!(!text.contains("eyJ"), "no token in the audit trail");
}

#[tokio::test]
async fn a_refusal_scope_would_not_lift_is_a_json_rpc_error() {
    let audit = Arc::new(Recorded::default());
    let gate = gate(
        r#"{"rules": [{"tools": ["whoami"], "roles": ["Admin"]}]}"#,
        audit.clone(),
    )
    .await;
    let refused = whoami(&gate, gate.token()).await;
    assert_eq!(refused.status(), StatusCode::OK);
    let body = jsonrpc(&refused.text().await.expect("body"));
    assert_eq!(body["error"]["code"], -32003, "{body}");
    assert_eq!(gate.tool_calls(), 0);

    let admin = gate.token_with(&[("roles", json!(["Admin"]))]);
    let allowed = whoami(&gate, admin).await;
    let body = jsonrpc(&allowed.text().await.expect("body"));
    assert!(body["result"].is_object(), "{body}");
    let decisions: Vec<Decision> = audit.take().iter().map(|r| r.decision).collect();
    assert_eq!(decisions, [Decision::Deny, Decision::Allow]);
}

#[tokio::test]
async fn a_user_over_their_rate_limit_gets_429_and_others_go_on() {
    use mcpgate_resource::ratelimit::{Quota, RateLimits};
    let audit = Arc::new(Recorded::default());
    let sink = audit.clone();
    let gate = Gate::with_settings(move |s| {
        s.audit = Some(sink);
        s.rate_limits = RateLimits {
            per_user: Some(Quota {
                per_minute: 1,
                burst: 2,
            }),
            per_client: None,
        };
    })
    .await;
    for _ in 0..2 {
        assert_eq!(whoami(&gate, gate.token()).await.status(), StatusCode::OK);
    }
    let limited = whoami(&gate, gate.token()).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    let body = jsonrpc(&limited.text().await.expect("body"));
    assert_eq!(body["error"]["code"], -32029, "{body}");
    assert_eq!(gate.tool_calls(), 2, "the refused call reached no tool");

    // Someone else is not held back by alice.
    let bob = gate.token_for("00000000-0000-4000-8000-000000000b0b");
    assert_eq!(whoami(&gate, bob).await.status(), StatusCode::OK);

    let decisions: Vec<Decision> = audit.take().iter().map(|r| r.decision).collect();
    assert_eq!(
        decisions,
        [
            Decision::Allow,
            Decision::Allow,
            Decision::Deny,
            Decision::Allow
        ]
    );
}

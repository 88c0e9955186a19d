//! The broker's audit trail: one record per decision (a sign-in, each
//! token issued, each token request refused), with who and which client,
//! and no code, token, verifier or secret anywhere in the file.

use mcpgate_audit::{Auditor, AuditorOptions};
use mcpgate_client::oauth::Pkce;
use serde_json::Value;

use crate::harness::{ALICE, Harness, Setup};

#[tokio::test]
async fn one_record_per_decision_and_no_secret_in_any() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("audit.jsonl");
    let options = AuditorOptions {
        file: Some(file.clone()),
        ..AuditorOptions::default()
    };
    let auditor = Auditor::start(options, None).await.expect("auditor");
    let h = Harness::start(Setup {
        audit: Some(auditor.clone()),
        ..Setup::default()
    })
    .await;

    let client_id = h.register_public().await;
    let pkce = Pkce::new();
    let code = h.code(&client_id, &pkce).await; // sign_in allow
    let (status, tokens) = h.redeem(&client_id, &code, pkce.verifier.secret()).await;
    assert_eq!(status, 200, "{tokens}"); // token_issued
    let refresh = tokens["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let (status, rotated) = h.refresh(&client_id, &refresh).await;
    assert_eq!(status, 200, "{rotated}"); // token_issued
    let (status, _) = h.redeem(&client_id, &code, pkce.verifier.secret()).await;
    assert_eq!(status, 400, "a replayed code"); // token_refused
    let (status, _) = h
        .token(&[("grant_type", "password"), ("client_id", &client_id)])
        .await;
    assert_eq!(status, 400, "an unsupported grant"); // token_refused
    auditor.shutdown().await;
    assert_eq!(auditor.dropped(), 0);

    let text = std::fs::read_to_string(&file).expect("audit file");
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let summary: Vec<(&str, &str, &str, &str)> = records
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("-");
            (s("event"), s("decision"), s("grant_type"), s("reason"))
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("sign_in", "allow", "-", "-"),
            ("token_issued", "allow", "authorization_code", "-"),
            ("token_issued", "allow", "refresh_token", "-"),
            (
                "token_refused",
                "deny",
                "authorization_code",
                "invalid_grant"
            ),
            ("token_refused", "deny", "-", "unsupported_grant_type"),
        ]
    );
    for r in &records[..4] {
        assert_eq!(r["client_app"], client_id.as_str(), "{r}");
        assert!(r["user_oid"].is_string(), "{r}");
    }
    for r in &records[..3] {
        assert_eq!(r["user_upn"], ALICE, "{r}");
        assert!(r["tenant"].is_string(), "{r}");
    }
    assert!(records[1]["latency_ms"].is_number());

    let secrets = [
        code.as_str(),
        pkce.verifier.secret(),
        &refresh,
        tokens["access_token"].as_str().expect("at"),
        rotated["access_token"].as_str().expect("at"),
        rotated["refresh_token"].as_str().expect("rt"),
    ];
    for secret in secrets {
        assert!(!text.contains(secret), "a secret in the audit file");
    }
    assert!(
        !text.contains("eyJ"),
        "nothing JWT-shaped in the audit file"
    );
}

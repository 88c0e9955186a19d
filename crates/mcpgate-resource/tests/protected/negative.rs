//! Every way a request can fail to get in: the exact status, the exact
//! challenge, and the tool never reached.

use mcpgate_testkit::{API_APP_ID, TENANT, unix_now, with};
use serde_json::{Value, json};

use crate::support::*;

/// What a refused request must look like.
#[derive(Clone, Copy)]
struct Expect {
    status: u16,
    error: Option<&'static str>,
    /// A phrase the error_description must contain.
    says: &'static str,
}

const fn refused(status: u16, error: &'static str, says: &'static str) -> Expect {
    Expect {
        status,
        error: Some(error),
        says,
    }
}

async fn assert_refused(
    gate: &Gate,
    request: reqwest::RequestBuilder,
    expect: Expect,
    token: Option<&str>,
) {
    let resp = request.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let challenge = www_authenticate(&resp);
    let body = resp.text().await.expect("body");
    assert_eq!(
        status, expect.status,
        "challenge: {challenge}; body: {body}"
    );
    let tail = format!(
        "resource_metadata=\"{}\", scope=\"{SCOPE}\"",
        gate.settings.prm_url()
    );
    match expect.error {
        None => assert_eq!(challenge, format!("Bearer {tail}")),
        Some(error) => {
            let prefix = format!("Bearer error=\"{error}\", error_description=\"");
            assert!(challenge.starts_with(&prefix), "{challenge}");
            assert!(challenge.ends_with(&format!("\", {tail}")), "{challenge}");
            assert!(
                challenge.contains(expect.says),
                "{challenge} should say {:?}",
                expect.says
            );
            let json: Value = serde_json::from_str(&body).expect("JSON error body");
            assert_eq!(json["error"], error);
        }
    }
    if let Some(token) = token {
        assert!(!challenge.contains(token), "the challenge echoes the token");
        assert!(!body.contains(token), "the body echoes the token");
    }
    assert_eq!(gate.tool_calls(), 0, "the tool was reached");
}

async fn token_case(gate: &Gate, token: &str, expect: Expect) {
    assert_refused(
        gate,
        gate.whoami_request().bearer_auth(token),
        expect,
        Some(token),
    )
    .await;
}

fn claims(gate: &Gate) -> Value {
    gate.issuer.claims(unix_now())
}

#[tokio::test]
async fn no_token() {
    let gate = Gate::start().await;
    let expect = Expect {
        status: 401,
        error: None,
        says: "",
    };
    assert_refused(&gate, gate.whoami_request(), expect, None).await;
}

#[tokio::test]
async fn malformed_jwts() {
    let gate = Gate::start().await;
    for token in [
        "abc",
        "a.b",
        "a.b.c.d",
        "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.sig",
        "e30.e30.e30",
    ] {
        token_case(
            &gate,
            token,
            refused(401, "invalid_token", "not a well-formed JWT"),
        )
        .await;
    }
}

#[tokio::test]
async fn alg_none() {
    let gate = Gate::start().await;
    let token = gate.issuer.unsigned("key-a", &claims(&gate));
    // `Bearer x.y.` ends with a dot; a b64token may, so this reaches the validator.
    token_case(
        &gate,
        &token,
        refused(401, "invalid_token", "signed with 'none'"),
    )
    .await;
}

#[tokio::test]
async fn hs256_signed_with_the_public_key() {
    let gate = Gate::start().await;
    let token = gate
        .issuer
        .forge_hs256_with_public_key("key-a", &claims(&gate));
    token_case(
        &gate,
        &token,
        refused(401, "invalid_token", "signed with 'HS256'"),
    )
    .await;
}

#[tokio::test]
async fn unknown_kid() {
    let gate = Gate::start().await;
    let token = gate.issuer.sign("key-c", &claims(&gate));
    token_case(
        &gate,
        &token,
        refused(401, "invalid_token", "no signing key 'key-c'"),
    )
    .await;
}

#[tokio::test]
async fn bad_signature() {
    let gate = Gate::start().await;
    let token = gate.token();
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    // Swap the payload for another one: the signature no longer covers it.
    let other = gate
        .issuer
        .sign("key-a", &with(claims(&gate), &[("name", json!("Mallory"))]));
    parts[1] = other.split('.').nth(1).unwrap_or_default().to_owned();
    let forged = parts.join(".");
    token_case(
        &gate,
        &forged,
        refused(401, "invalid_token", "signature is invalid"),
    )
    .await;
}

#[tokio::test]
async fn signed_by_another_key_under_a_published_kid() {
    let gate = Gate::start().await;
    let header = {
        let mut h = mcpgate_testkit::jsonwebtoken::Header::new(
            mcpgate_testkit::jsonwebtoken::Algorithm::RS256,
        );
        h.kid = Some("key-a".into());
        h
    };
    let token = gate
        .issuer
        .sign_with_header(&header, "key-b", &claims(&gate));
    token_case(
        &gate,
        &token,
        refused(401, "invalid_token", "signature is invalid"),
    )
    .await;
}

#[tokio::test]
async fn lifetime_violations() {
    let gate = Gate::start().await;
    let now = unix_now();
    let cases = [
        (with(claims(&gate), &[("exp", json!(now - 600))]), "expired"),
        (
            with(claims(&gate), &[("nbf", json!(now + 600))]),
            "not valid for another",
        ),
        (
            with(claims(&gate), &[("iat", json!(now + 600))]),
            "in the future",
        ),
        (with(claims(&gate), &[("exp", Value::Null)]), "no exp claim"),
    ];
    for (c, says) in cases {
        let token = gate.issuer.sign("key-a", &c);
        token_case(&gate, &token, refused(401, "invalid_token", says)).await;
    }
}

#[tokio::test]
async fn within_clock_skew_is_accepted() {
    let gate = Gate::start().await;
    let now = unix_now();
    let token = gate.issuer.sign(
        "key-a",
        &with(
            claims(&gate),
            &[("exp", json!(now - 30)), ("nbf", json!(now + 30))],
        ),
    );
    let resp = gate
        .whoami_request()
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn wrong_issuer() {
    let gate = Gate::start().await;
    let c = with(
        claims(&gate),
        &[("iss", json!("https://login.microsoftonline.com/evil/v2.0"))],
    );
    let token = gate.issuer.sign("key-a", &c);
    token_case(
        &gate,
        &token,
        refused(401, "invalid_token", "is not trusted here"),
    )
    .await;
}

#[tokio::test]
async fn wrong_audience() {
    let gate = Gate::start().await;
    for aud in [json!("api://someone-else"), json!(["x", "y"])] {
        let token = gate
            .issuer
            .sign("key-a", &with(claims(&gate), &[("aud", aud)]));
        token_case(&gate, &token, refused(401, "invalid_token", "audience")).await;
    }
}

#[tokio::test]
async fn graph_token() {
    let gate = Gate::start().await;
    for aud in [
        "00000003-0000-0000-c000-000000000000",
        "https://graph.microsoft.com",
    ] {
        let token = gate
            .issuer
            .sign("key-a", &with(claims(&gate), &[("aud", json!(aud))]));
        token_case(
            &gate,
            &token,
            refused(401, "invalid_token", "Microsoft Graph token"),
        )
        .await;
    }
}

#[tokio::test]
async fn tenant_not_allowed() {
    let gate = Gate::start_with(|p| p.allowed_tenants = vec![TENANT.into()]).await;
    let c = with(
        claims(&gate),
        &[("tid", json!("99999999-0000-4000-8000-000000000000"))],
    );
    let token = gate.issuer.sign("key-a", &c);
    token_case(
        &gate,
        &token,
        refused(401, "invalid_token", "is not allowed here"),
    )
    .await;
}

#[tokio::test]
async fn multi_tenant_issuer_whose_tid_differs() {
    let gate =
        Gate::start_with(|p| p.issuers = vec![p.issuers[0].replace(TENANT, "{tenantid}")]).await;
    let c = with(
        claims(&gate),
        &[("tid", json!("99999999-0000-4000-8000-000000000000"))],
    );
    let token = gate.issuer.sign("key-a", &c);
    token_case(
        &gate,
        &token,
        refused(401, "invalid_token", "does not match its tenant id"),
    )
    .await;
    // The home tenant is fine under the template.
    let ok = gate
        .whoami_request()
        .bearer_auth(gate.token())
        .send()
        .await
        .expect("sent");
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn app_only_token() {
    let gate = Gate::start().await;
    let c = with(
        claims(&gate),
        &[
            ("scp", Value::Null),
            ("idtyp", json!("app")),
            ("roles", json!(["MCP.Tools.All"])),
        ],
    );
    let token = gate.issuer.sign("key-a", &c);
    token_case(
        &gate,
        &token,
        refused(401, "invalid_token", "app-only tokens are not accepted"),
    )
    .await;
}

#[tokio::test]
async fn client_app_not_allowed() {
    let gate = Gate::start_with(|p| p.allowed_client_apps = vec!["some-other-app".into()]).await;
    let token = gate.token();
    token_case(
        &gate,
        &token,
        refused(401, "invalid_token", "client application"),
    )
    .await;
}

/// Sessions are bound to who the caller is; a token naming nobody would
/// make every such caller one and the same.
#[tokio::test]
async fn a_token_naming_nobody_is_refused() {
    let gate = Gate::start().await;
    for edits in [
        vec![("oid", Value::Null), ("sub", Value::Null)],
        vec![("oid", json!("")), ("sub", json!(""))],
    ] {
        let token = gate.issuer.sign("key-a", &with(claims(&gate), &edits));
        token_case(&gate, &token, refused(401, "invalid_token", "no sub claim")).await;
    }
}

#[tokio::test]
async fn missing_scope_is_403_naming_every_scope() {
    let gate = Gate::start().await;
    let token = gate.issuer.sign(
        "key-a",
        &with(claims(&gate), &[("scp", json!("User.Read"))]),
    );
    token_case(
        &gate,
        &token,
        refused(
            403,
            "insufficient_scope",
            "lacks scope api://99999999-8888-4777-8666-555555555555/mcp:tools",
        ),
    )
    .await;
}

#[tokio::test]
async fn missing_role_is_403() {
    let gate = Gate::start_with(|p| p.required_roles = vec!["MCP.Admin".into()]).await;
    let token = gate.token();
    token_case(
        &gate,
        &token,
        refused(403, "insufficient_scope", "role MCP.Admin"),
    )
    .await;
}

#[tokio::test]
async fn token_in_the_query_string() {
    let gate = Gate::start().await;
    let token = gate.token();
    let url = format!("{}?access_token={token}", gate.mcp_url());
    let request = gate
        .http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .json(&whoami_body());
    assert_refused(
        &gate,
        request,
        refused(400, "invalid_request", "never in the URL"),
        Some(&token),
    )
    .await;
    // Even with a valid header beside it.
    let request = gate
        .http
        .post(format!("{}?access_token=x", gate.mcp_url()))
        .bearer_auth(&token)
        .json(&whoami_body());
    assert_refused(
        &gate,
        request,
        refused(400, "invalid_request", "never in the URL"),
        Some(&token),
    )
    .await;
}

#[tokio::test]
async fn the_scheme_name_is_case_insensitive() {
    let gate = Gate::start().await;
    let token = gate.token();
    for (n, scheme) in ["bearer", "BEARER", "Bearer"].into_iter().enumerate() {
        let resp = gate
            .whoami_request()
            .header("authorization", format!("{scheme} {token}"))
            .send()
            .await
            .expect("request sent");
        assert_eq!(resp.status(), 200, "{scheme}");
        assert_eq!(gate.tool_calls(), n as u64 + 1, "{scheme}");
    }
}

/// RFC 6750 §3.1: another scheme carries no bearer credentials; the bare
/// challenge makes an MCP client start its sign-in.
#[tokio::test]
async fn other_schemes_get_the_bare_challenge() {
    let gate = Gate::start().await;
    let token = gate.token();
    let no_error = Expect {
        status: 401,
        error: None,
        says: "",
    };
    for value in [
        "Basic dXNlcjpwYXNz".to_owned(),
        "Digest username=\"alice\", realm=\"mcp\"".to_owned(),
        format!("DPoP {token}"),
    ] {
        let request = gate.whoami_request().header("authorization", value);
        assert_refused(&gate, request, no_error, Some(&token)).await;
    }
}

#[tokio::test]
async fn two_authorization_headers() {
    let gate = Gate::start().await;
    let token = gate.token();
    let request = gate
        .whoami_request()
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"));
    assert_refused(
        &gate,
        request,
        refused(400, "invalid_request", "more than one"),
        Some(&token),
    )
    .await;
}

#[tokio::test]
async fn empty_and_non_token_characters() {
    let gate = Gate::start().await;
    for value in ["Bearer ", "Bearer a,b", "Bearer a\tb", "bearer a b"] {
        let request = gate.whoami_request().header("authorization", value);
        assert_refused(
            &gate,
            request,
            refused(400, "invalid_request", "empty or has characters"),
            None,
        )
        .await;
    }
}

#[tokio::test]
async fn oversized_token() {
    let gate = Gate::start().await;
    let padding = "x".repeat(20_000);
    let token = gate
        .issuer
        .sign("key-a", &with(claims(&gate), &[("pad", json!(padding))]));
    let expect = refused(401, "invalid_token", "over the 16384-byte limit");
    assert_refused(
        &gate,
        gate.whoami_request().bearer_auth(&token),
        expect,
        Some(&token),
    )
    .await;
}

#[tokio::test]
async fn unknown_critical_header() {
    let gate = Gate::start().await;
    let mut header =
        mcpgate_testkit::jsonwebtoken::Header::new(mcpgate_testkit::jsonwebtoken::Algorithm::RS256);
    header.kid = Some("key-a".into());
    header.crit = Some(vec!["exp-ext".into()]);
    let token = gate
        .issuer
        .sign_with_header(&header, "key-a", &claims(&gate));
    token_case(
        &gate,
        &token,
        refused(401, "invalid_token", "critical extensions"),
    )
    .await;
}

#[tokio::test]
async fn wrong_token_type_from_another_issuer_with_our_key_id() {
    // The same kid published by the right issuer does not help a token that
    // names another issuer.
    let gate = Gate::start().await;
    let c = with(
        claims(&gate),
        &[("iss", json!(gate.issuer.issuer_for("other-tenant")))],
    );
    let token = gate.issuer.sign("key-a", &c);
    token_case(
        &gate,
        &token,
        refused(401, "invalid_token", "is not trusted here"),
    )
    .await;
}

#[tokio::test]
async fn issuer_down_unknown_kid_is_401_not_500() {
    let gate = Gate::start().await;
    gate.issuer.go_down();
    let token = gate.issuer.sign("key-a", &claims(&gate));
    token_case(
        &gate,
        &token,
        refused(401, "invalid_token", "signing keys are unavailable"),
    )
    .await;
}

#[tokio::test]
async fn oversized_body_is_refused_with_413() {
    let gate = Gate::start().await;
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami", "arguments": {"pad": "x".repeat(100_000)}}});
    let resp = gate
        .http
        .post(gate.mcp_url())
        .bearer_auth(gate.token())
        .header("accept", "application/json, text/event-stream")
        .json(&big)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 413);
    assert_eq!(gate.tool_calls(), 0);
}

#[tokio::test]
async fn oversized_headers_are_refused_not_crashed() {
    let gate = Gate::start().await;
    let resp = gate
        .whoami_request()
        .bearer_auth(gate.token())
        .header("x-padding", "p".repeat(1_000_000))
        .send()
        .await;
    match resp {
        Ok(r) => assert_eq!(r.status(), 431),
        Err(e) => assert!(e.is_request() || e.is_connect() || e.is_body(), "{e}"),
    }
    assert_eq!(gate.tool_calls(), 0);
    // And the server is still there.
    let ok = gate
        .whoami_request()
        .bearer_auth(gate.token())
        .send()
        .await
        .expect("sent");
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn malformed_json_rpc_is_400() {
    let gate = Gate::start().await;
    let resp = gate
        .http
        .post(gate.mcp_url())
        .bearer_auth(gate.token())
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("sent");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    assert_eq!(status, 400, "{text}");
    assert_eq!(gate.tool_calls(), 0);
}

#[tokio::test]
async fn valid_token_reaches_whoami() {
    let gate = Gate::start().await;
    let resp = gate
        .whoami_request()
        .bearer_auth(gate.token())
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    let msg = jsonrpc(&resp.text().await.expect("body"));
    let who = &msg["result"]["structuredContent"];
    assert_eq!(who["authenticated"], true);
    assert_eq!(who["preferred_username"], "alice@test.example");
    assert_eq!(who["tid"], TENANT);
    assert_eq!(who["scopes"], json!(["mcp:tools"]));
    assert_eq!(who["token_kind"], "delegated");
    assert_eq!(who["client_app_id"], mcpgate_testkit::CLIENT_APP_ID);
    // The 2026-07-28 wire names the result's type; the text block carries
    // the same JSON for clients that read only text.
    assert_eq!(msg["result"]["resultType"], "complete");
    assert_eq!(msg["result"]["isError"], false);
    let text = msg["result"]["content"][0]["text"].as_str().expect("text");
    assert_eq!(&serde_json::from_str::<Value>(text).expect("json"), who);
    assert_eq!(gate.tool_calls(), 1);
    let _ = API_APP_ID;
}

#[tokio::test]
async fn app_only_token_with_role_when_allowed() {
    let gate = Gate::start_with(|p| {
        p.allow_app_only = true;
        p.app_only_roles = vec!["MCP.Tools.All".into()];
    })
    .await;
    let app = |roles: Value| {
        with(
            claims(&gate),
            &[
                ("scp", Value::Null),
                ("idtyp", json!("app")),
                ("roles", roles),
            ],
        )
    };
    let token = gate.issuer.sign("key-a", &app(json!(["MCP.Tools.All"])));
    let resp = gate
        .whoami_request()
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    let who = jsonrpc(&resp.text().await.expect("body"));
    assert_eq!(who["result"]["structuredContent"]["token_kind"], "app_only");

    let token = gate.issuer.sign("key-a", &app(json!(["Other"])));
    let resp = gate
        .whoami_request()
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 403);
}

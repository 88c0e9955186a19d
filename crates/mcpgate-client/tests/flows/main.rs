//! The client against real authorization and MCP servers on loopback:
//! where its credentials may go, which endpoints it trusts, which grant it
//! chooses, registration (DCR, CIMD), step-up, the 2025-03-26 discovery,
//! and the server's error body kept.

mod harness;

use harness::{
    AsOptions, CLAIMS, ClaimsRule, Discovery, MFA_MARK, McpOptions, auth_server, client,
    mcp_server, options,
};
use mcpgate_client::account::{Account, AccountOptions};
use mcpgate_client::discovery::DiscoveryError;
use mcpgate_client::error::FlowError;
use mcpgate_client::secret::ClientSecret;
use mcpgate_client::{ClientError, Credentials, SignIn};

const SECRET: &str = "configured-secret-value";

fn prm(issuer: &str) -> McpOptions {
    McpOptions {
        discovery: Discovery::Prm {
            issuer: issuer.to_owned(),
        },
        challenge_scope: Some("read"),
        scopes_supported: vec!["read"],
        call_needs: None,
        call_needs_claims: None,
    }
}

fn confidential(issuer: Option<&str>) -> Credentials {
    Credentials {
        client_id: Some("app".into()),
        secret: Some(ClientSecret::new(SECRET)),
        issuer: issuer.map(str::to_owned),
        ..Default::default()
    }
}

/// Whether any request an authorization server saw carries the secret.
fn saw_secret(server: &harness::AuthServer) -> bool {
    server.seen().iter().any(|s| {
        s.params.values().any(|v| v.contains(SECRET))
            || s.authorization.as_deref().is_some_and(|a| {
                a.strip_prefix("Basic ")
                    .and_then(|b| {
                        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b).ok()
                    })
                    .is_some_and(|d| String::from_utf8_lossy(&d).contains(SECRET))
            })
    })
}

#[tokio::test]
async fn a_named_issuer_keeps_the_secret_from_another_authorization_server() {
    let good = auth_server(AsOptions::default()).await;
    let evil = auth_server(AsOptions::default()).await;
    let evil_server = mcp_server(prm(&evil.issuer), AsOptions::default()).await;
    let (store, _dir) = harness::store();

    let c = client(
        &evil_server.url,
        options(
            &store,
            SignIn::NonInteractive,
            confidential(Some(&good.issuer)),
        ),
    );
    let err = c.client.list_tools().await.expect_err("refused");
    assert!(
        matches!(err, ClientError::WrongAuthorizationServer { .. }),
        "{err}"
    );
    assert!(!saw_secret(&evil), "the secret went to the other server");
    assert!(evil.seen_at("token").is_empty() && evil.seen_at("authorize").is_empty());
    assert_eq!(
        std::fs::read_dir(store.dir())
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "a refused sign-in keeps nothing"
    );

    // At its own authorization server the secret works.
    let good_server = mcp_server(prm(&good.issuer), AsOptions::default()).await;
    let c = client(
        &good_server.url,
        options(
            &store,
            SignIn::NonInteractive,
            confidential(Some(&good.issuer)),
        ),
    );
    c.client.list_tools().await.expect("signed in");
    assert!(saw_secret(&good));
}

#[tokio::test]
async fn a_secret_stays_with_the_first_authorization_server_it_was_used_at() {
    let good = auth_server(AsOptions::default()).await;
    let evil = auth_server(AsOptions::default()).await;
    let good_server = mcp_server(prm(&good.issuer), AsOptions::default()).await;
    let evil_server = mcp_server(prm(&evil.issuer), AsOptions::default()).await;
    let (store, _dir) = harness::store();

    let c = client(
        &good_server.url,
        options(&store, SignIn::NonInteractive, confidential(None)),
    );
    c.client.list_tools().await.expect("signed in");
    assert!(saw_secret(&good));
    assert_eq!(
        store.credential_issuer("app").as_deref(),
        Some(good.issuer.as_str())
    );
    let said = c.said.lock().expect("lock").join("\n");
    assert!(
        said.contains("now bound to"),
        "the binding is announced: {said}"
    );

    let c = client(
        &evil_server.url,
        options(&store, SignIn::NonInteractive, confidential(None)),
    );
    let err = c.client.call_tool("whoami", serde_json::json!({})).await;
    let err = err.expect_err("refused");
    assert!(
        matches!(err, ClientError::CredentialsBoundElsewhere { .. }),
        "{err}"
    );
    assert!(!err.to_string().contains(SECRET));
    assert!(evil.seen_at("token").is_empty(), "nothing sent");
    assert!(!saw_secret(&evil));
}

#[tokio::test]
async fn insecure_endpoints_are_refused_before_anything_is_sent() {
    // Resource metadata naming a plain-http authorization server elsewhere.
    let server = mcp_server(prm("http://as.example"), AsOptions::default()).await;
    let (store, _dir) = harness::store();
    let c = client(
        &server.url,
        options(&store, SignIn::NonInteractive, Credentials::default()),
    );
    let err = c.client.list_tools().await.expect_err("refused");
    assert!(
        matches!(err, ClientError::Discovery(DiscoveryError::Insecure { .. })),
        "{err}"
    );

    // Metadata publishing a plain-http token endpoint.
    let bad = auth_server(AsOptions {
        token_endpoint_override: Some("http://as.example/token".into()),
        ..AsOptions::default()
    })
    .await;
    let server = mcp_server(prm(&bad.issuer), AsOptions::default()).await;
    let c = client(
        &server.url,
        options(&store, SignIn::NonInteractive, confidential(None)),
    );
    let err = c.client.list_tools().await.expect_err("refused");
    assert!(
        matches!(
            err,
            ClientError::Discovery(DiscoveryError::Insecure {
                what: "token endpoint",
                ..
            })
        ),
        "{err}"
    );
    assert!(bad.seen_at("authorize").is_empty() && bad.seen_at("register").is_empty());
}

#[tokio::test]
async fn client_credentials_is_chosen_where_it_is_the_only_grant() {
    let a = auth_server(AsOptions {
        grant_types: Some(vec!["client_credentials"]),
        dcr: false,
        ..AsOptions::default()
    })
    .await;
    let server = mcp_server(prm(&a.issuer), AsOptions::default()).await;
    let (store, _dir) = harness::store();
    // Asked for a browser sign-in: the server offers none.
    let c = client(
        &server.url,
        options(&store, SignIn::Browser, confidential(None)),
    );
    c.client.list_tools().await.expect("client credentials");
    let token = a.seen_at("token");
    assert_eq!(token.len(), 1);
    assert_eq!(
        token[0].params.get("grant_type").map(String::as_str),
        Some("client_credentials")
    );
    assert!(
        token[0]
            .authorization
            .as_deref()
            .is_some_and(|h| h.starts_with("Basic ")),
        "client_secret_basic"
    );
    assert!(a.seen_at("authorize").is_empty());
}

#[tokio::test]
async fn no_browser_falls_back_to_the_device_code() {
    let a = auth_server(AsOptions {
        device: true,
        ..AsOptions::default()
    })
    .await;
    let server = mcp_server(prm(&a.issuer), AsOptions::default()).await;
    let (store, _dir) = harness::store();
    let public = Credentials {
        client_id: Some("desktop".into()),
        ..Default::default()
    };
    let c = client(&server.url, options(&store, SignIn::Browser, public));
    c.client.list_tools().await.expect("device code");
    assert_eq!(a.seen_at("device").len(), 1);
    assert!(a.seen_at("authorize").is_empty());
    let said = c.said.lock().expect("lock").join("\n");
    assert!(said.contains("device code"), "{said}");
    assert!(said.contains("ABCD-EFGH"), "{said}");
}

#[tokio::test]
async fn no_browser_and_no_device_code_stops_at_once_naming_what_works() {
    let a = auth_server(AsOptions::default()).await;
    let server = mcp_server(prm(&a.issuer), AsOptions::default()).await;
    let (store, _dir) = harness::store();
    let public = Credentials {
        client_id: Some("desktop".into()),
        ..Default::default()
    };
    let c = client(&server.url, options(&store, SignIn::Browser, public));
    let err = c.client.list_tools().await.expect_err("stops");
    assert!(matches!(err, ClientError::NoBrowser { .. }), "{err}");
    assert!(err.to_string().contains("--non-interactive"), "{err}");
    assert!(a.seen_at("authorize").is_empty());
}

#[tokio::test]
async fn dynamic_registration_once_then_reused() {
    let a = auth_server(AsOptions::default()).await;
    let server = mcp_server(prm(&a.issuer), AsOptions::default()).await;
    let (store, _dir) = harness::store();
    let c = client(
        &server.url,
        options(&store, SignIn::NonInteractive, Credentials::default()),
    );
    c.client.list_tools().await.expect("signed in");
    let reg = a.seen_at("register");
    assert_eq!(reg.len(), 1);
    assert_eq!(
        reg[0]
            .params
            .get("token_endpoint_auth_method")
            .map(String::as_str),
        Some("\"none\"")
    );
    let auth = a.seen_at("authorize");
    assert_eq!(
        auth[0].params.get("client_id").map(String::as_str),
        Some("dcr-client")
    );
    assert_eq!(
        auth[0]
            .params
            .get("code_challenge_method")
            .map(String::as_str),
        Some("S256")
    );
    assert_eq!(
        auth[0].params.get("resource").map(String::as_str),
        Some(server.url.as_str()),
        "RFC 8707 names the server"
    );

    // Tokens forgotten, registration kept: a new sign-in does not register.
    store.remove_tokens(server.url.as_str());
    let c = client(
        &server.url,
        options(&store, SignIn::NonInteractive, Credentials::default()),
    );
    c.client.list_tools().await.expect("signed in again");
    assert_eq!(a.seen_at("register").len(), 1);
    assert_eq!(a.seen_at("authorize").len(), 2);
}

#[tokio::test]
async fn a_client_id_metadata_document_where_supported() {
    let a = auth_server(AsOptions {
        cimd: true,
        ..AsOptions::default()
    })
    .await;
    let server = mcp_server(prm(&a.issuer), AsOptions::default()).await;
    let (store, _dir) = harness::store();
    let cimd = "https://client.example/metadata.json";
    let c = client(
        &server.url,
        options(
            &store,
            SignIn::NonInteractive,
            Credentials {
                metadata_url: Some(cimd.into()),
                ..Default::default()
            },
        ),
    );
    c.client.list_tools().await.expect("signed in");
    assert!(a.seen_at("register").is_empty());
    assert_eq!(
        a.seen_at("authorize")[0]
            .params
            .get("client_id")
            .map(String::as_str),
        Some(cimd)
    );
    assert_eq!(
        a.seen_at("token")[0]
            .params
            .get("client_id")
            .map(String::as_str),
        Some(cimd)
    );
}

#[tokio::test]
async fn a_step_up_asks_for_the_union_of_scopes() {
    let a = auth_server(AsOptions::default()).await;
    let server = mcp_server(
        McpOptions {
            call_needs: Some("write"),
            call_needs_claims: None,
            ..prm(&a.issuer)
        },
        AsOptions::default(),
    )
    .await;
    let (store, _dir) = harness::store();
    let c = client(
        &server.url,
        options(&store, SignIn::NonInteractive, Credentials::default()),
    );
    c.client.list_tools().await.expect("read");
    let result = c
        .client
        .call_tool("whoami", serde_json::json!({}))
        .await
        .expect("after step-up");
    assert_eq!(result["content"][0]["text"], "read write");
    let scopes: Vec<String> = a
        .seen_at("authorize")
        .iter()
        .map(|s| s.params.get("scope").cloned().unwrap_or_default())
        .collect();
    assert_eq!(scopes, ["read", "read write"]);
}

#[tokio::test]
async fn legacy_discovery_uses_the_servers_origin() {
    // 2025-03-26 with a metadata document at the origin.
    let server = mcp_server(
        McpOptions {
            discovery: Discovery::Legacy { metadata: true },
            challenge_scope: None,
            scopes_supported: vec![],
            call_needs: None,
            call_needs_claims: None,
        },
        AsOptions::default(),
    )
    .await;
    let (store, _dir) = harness::store();
    let c = client(
        &server.url,
        options(&store, SignIn::NonInteractive, Credentials::default()),
    );
    c.client.list_tools().await.expect("signed in");
    let origin = server.origin_as.as_ref().expect("origin AS");
    assert_eq!(origin.seen_at("metadata").len(), 1);
    assert_eq!(origin.seen_at("register").len(), 1);
    assert_eq!(origin.seen_at("token").len(), 1);
    assert!(
        !origin.seen_at("authorize")[0]
            .params
            .contains_key("resource"),
        "no resource metadata, no resource indicator"
    );

    // No metadata at all: the default endpoints.
    let server = mcp_server(
        McpOptions {
            discovery: Discovery::Legacy { metadata: false },
            challenge_scope: None,
            scopes_supported: vec![],
            call_needs: None,
            call_needs_claims: None,
        },
        AsOptions::default(),
    )
    .await;
    let (store, _dir) = harness::store();
    let c = client(
        &server.url,
        options(&store, SignIn::NonInteractive, Credentials::default()),
    );
    c.client.list_tools().await.expect("signed in");
    let origin = server.origin_as.as_ref().expect("origin AS");
    assert!(origin.seen_at("metadata").is_empty());
    assert_eq!(origin.seen_at("register").len(), 1);
    assert_eq!(origin.seen_at("authorize").len(), 1);
    assert_eq!(origin.seen_at("token").len(), 1);
}

#[tokio::test]
async fn an_oauth_refusal_keeps_the_servers_body() {
    let a = auth_server(AsOptions {
        refuse_with: Some(serde_json::json!({
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided.",
            "trace_id": "trace-123",
            "correlation_id": "corr-456",
        })),
        ..AsOptions::default()
    })
    .await;
    let server = mcp_server(prm(&a.issuer), AsOptions::default()).await;
    let (store, _dir) = harness::store();
    let c = client(
        &server.url,
        options(&store, SignIn::NonInteractive, confidential(None)),
    );
    let err = c.client.list_tools().await.expect_err("refused");
    let ClientError::Flow(FlowError::Refused(oauth)) = &err else {
        panic!("not an OAuth refusal: {err:?}");
    };
    assert_eq!(oauth.error, "invalid_client");
    assert_eq!(oauth.status, Some(400));
    assert!(oauth.body.contains("trace-123") && oauth.body.contains("corr-456"));
    assert!(err.to_string().contains("AADSTS7000215"), "{err}");
    assert!(!format!("{err:?}").contains(SECRET));
    assert_eq!(
        store.credential_issuer("app"),
        None,
        "a refused sign-in binds nothing"
    );
}

/// A server with a claims rule on `tools/call`, and a client of it.
async fn claims_server(
    rule: ClaimsRule,
) -> (harness::AuthServer, harness::TestClient, tempfile::TempDir) {
    let a = auth_server(AsOptions::default()).await;
    let server = mcp_server(
        McpOptions {
            call_needs_claims: Some(rule),
            ..prm(&a.issuer)
        },
        AsOptions::default(),
    )
    .await;
    let (store, dir) = harness::store();
    let c = client(
        &server.url,
        options(&store, SignIn::NonInteractive, Credentials::default()),
    );
    (a, c, dir)
}

fn claims_asked(a: &harness::AuthServer) -> Vec<Option<String>> {
    a.seen_at("authorize")
        .iter()
        .map(|s| s.params.get("claims").cloned())
        .collect()
}

#[tokio::test]
async fn a_claims_challenge_signs_in_again_with_the_claims_and_retries_once() {
    let (a, c, _dir) = claims_server(ClaimsRule::UntilSatisfied).await;
    c.client.list_tools().await.expect("signed in");
    let result = c
        .client
        .call_tool("whoami", serde_json::json!({}))
        .await
        .expect("after the claims sign-in");
    let held = result["content"][0]["text"].as_str().unwrap_or_default();
    assert!(held.contains(MFA_MARK), "{result}");
    assert!(held.contains("read"), "the scopes held are kept: {held}");
    assert_eq!(claims_asked(&a), [None, Some(CLAIMS.to_owned())]);
    let said = c.said.lock().expect("lock").join("\n");
    assert!(said.contains("signing in again with claims"), "{said}");
    // The token is kept: the next call needs no sign-in.
    c.client
        .call_tool("whoami", serde_json::json!({}))
        .await
        .expect("again");
    assert_eq!(a.seen_at("authorize").len(), 2);
}

#[tokio::test]
async fn a_second_claims_challenge_is_an_error_naming_it() {
    let (a, c, _dir) = claims_server(ClaimsRule::Always).await;
    let err = c
        .client
        .call_tool("whoami", serde_json::json!({}))
        .await
        .expect_err("never satisfied");
    assert!(
        matches!(err, ClientError::ClaimsStillInsufficient { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("insufficient_claims") && text.contains("capolids"),
        "{text}"
    );
    assert!(text.contains("MFA required"), "{text}");
    // One sign-in for the token, one with the claims: no more.
    assert_eq!(claims_asked(&a), [None, Some(CLAIMS.to_owned())]);
}

#[tokio::test]
async fn an_unreadable_claims_value_is_an_error_and_no_sign_in() {
    let (a, c, _dir) = claims_server(ClaimsRule::Malformed).await;
    c.client.list_tools().await.expect("signed in");
    let err = c
        .client
        .call_tool("whoami", serde_json::json!({}))
        .await
        .expect_err("unusable claims");
    assert!(matches!(err, ClientError::BadClaims { .. }), "{err}");
    assert_eq!(claims_asked(&a), [None]);
}

#[tokio::test]
async fn a_refresh_refused_for_claims_signs_in_with_them() {
    // Entra's answer to a refresh once a Conditional Access policy applies.
    let refusal = serde_json::json!({
        "error": "invalid_grant",
        "error_description": "AADSTS50076: you must use multi-factor authentication",
        "error_codes": [50076],
        "suberror": "basic_action",
        "claims": CLAIMS,
    });
    let a = auth_server(AsOptions {
        refuse_refresh_with: Some(refusal),
        // Due for refresh as soon as it is issued.
        expires_in: 30,
        ..AsOptions::default()
    })
    .await;
    let server = mcp_server(prm(&a.issuer), AsOptions::default()).await;
    let (store, _dir) = harness::store();
    let c = client(
        &server.url,
        options(&store, SignIn::NonInteractive, Credentials::default()),
    );
    c.client.list_tools().await.expect("signed in again");
    assert_eq!(claims_asked(&a), [None, Some(CLAIMS.to_owned())]);
    let said = c.said.lock().expect("lock").join("\n");
    assert!(said.contains("AADSTS50076"), "{said}");
    // The new sign-in's refresh token satisfies the policy.
    c.client.list_tools().await.expect("refreshed");
    assert_eq!(a.seen_at("authorize").len(), 2);
}

/// An account (what `mcpgate stdio` signs its user in with) at `a`.
fn account(a: &harness::AuthServer, store: &mcpgate_client::store::Store) -> Account {
    let http = reqwest::Client::new();
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http");
    Account::new(
        http,
        no_redirect,
        AccountOptions {
            authority: a.issuer.clone(),
            client_id: "desktop".to_owned(),
            scopes: vec!["read".to_owned()],
            api: "https://graph.example/v1.0".to_owned(),
            sign_in: SignIn::NonInteractive,
            store: store.clone(),
            notify: std::sync::Arc::new(|_: &str| {}),
            browser: std::sync::Arc::new(harness::NoDisplay),
        },
    )
}

#[tokio::test]
async fn an_account_meets_an_apis_claims_challenge_and_a_refresh_refused_with_claims() {
    let refusal = serde_json::json!({
        "error": "invalid_grant",
        "error_description": "AADSTS50076: you must use multi-factor authentication",
        "claims": CLAIMS,
    });
    let a = auth_server(AsOptions {
        refuse_refresh_with: Some(refusal),
        expires_in: 30,
        ..AsOptions::default()
    })
    .await;
    let (store, _dir) = harness::store();
    let account = account(&a, &store);
    let first = account.token().await.expect("signed in");
    assert!(!first.contains(MFA_MARK));
    // Due for refresh at once; the refresh is refused with claims, and the
    // sign-in that follows sends them.
    let second = account.token().await.expect("signed in with claims");
    assert!(second.contains(MFA_MARK), "{second}");
    assert_eq!(claims_asked(&a), [None, Some(CLAIMS.to_owned())]);

    // An API's challenge (Graph's insufficient_claims) asks again.
    let asked = mcpgate_client::claims::Claims::from_json(
        r#"{"access_token":{"acrs":{"essential":true,"value":"c1"}}}"#,
    )
    .expect("claims");
    let third = account
        .sign_in_with_claims(&asked)
        .await
        .expect("signed in");
    assert!(third.contains(MFA_MARK), "{third}");
    assert_eq!(
        claims_asked(&a).last().cloned().flatten().as_deref(),
        Some(asked.as_json())
    );
}

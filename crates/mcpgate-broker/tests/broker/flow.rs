//! The whole flow over real loopback HTTP, on each store: registration,
//! authorization through the dev IdP (auto-approved), code, token,
//! validation by mcpgate-token's validator, refresh, On-Behalf-Of to the
//! dev IdP's Graph `/me`, revocation and logout.

use mcpgate_client::oauth::Pkce;
use mcpgate_token::{ValidationPolicy, Validator};
use serde_json::json;

use crate::harness::{ALICE, Harness, RESOURCE, Setup, claims, location};

pub fn validator(h: &Harness, audience: &str) -> Validator {
    Validator::builder(ValidationPolicy {
        issuers: vec![h.issuer.clone()],
        audiences: vec![audience.to_owned()],
        required_scopes: vec!["mcp:tools".to_owned()],
        ..ValidationPolicy::default()
    })
    .build()
    .expect("validator")
}

/// The flow every store must carry; returns nothing, asserts everything.
async fn full_flow(h: &Harness) {
    let meta: serde_json::Value = h
        .http
        .get(h.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("JSON");
    assert_eq!(meta["issuer"], h.issuer);
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    let oidc: serde_json::Value = h
        .http
        .get(h.url("/.well-known/openid-configuration"))
        .send()
        .await
        .expect("openid configuration")
        .json()
        .await
        .expect("JSON");
    assert_eq!(oidc, meta);
    let jwks: serde_json::Value = h
        .http
        .get(h.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("JSON");
    assert_eq!(jwks["keys"][0]["kty"], "RSA");

    let client_id = h.register_public().await;
    let stored = h
        .store
        .get_client(&mcpgate_store::ClientId::new(&client_id))
        .await
        .expect("store");
    assert!(
        stored.is_some_and(|c| c.secret_hash.is_none()),
        "a public client, stored"
    );
    let pkce = Pkce::new();
    let code = h.code(&client_id, &pkce).await;
    let (status, tokens) = h.redeem(&client_id, &code, pkce.verifier.secret()).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "mcp:tools offline_access");
    let at = tokens["access_token"].as_str().expect("access token");
    let refresh = tokens["refresh_token"].as_str().expect("refresh token");

    let c = claims(at);
    assert_eq!(c["iss"], h.issuer);
    assert_eq!(c["aud"], RESOURCE);
    assert_eq!(c["azp"], client_id.as_str());
    assert_eq!(c["scp"], "mcp:tools");
    assert_eq!(c["preferred_username"], ALICE);
    assert_eq!(c["sub"], c["oid"]);
    assert!(c["tid"].is_string() && c["jti"].is_string() && c["sid"].is_string());

    // The MCP server's validator accepts it as it would any issuer's.
    let p = validator(h, RESOURCE)
        .validate(at)
        .await
        .expect("the broker's token validates");
    assert_eq!(p.preferred_username.as_deref(), Some(ALICE));
    assert_eq!(p.client_app_id.as_deref(), Some(client_id.as_str()));

    // Refresh rotates, and may narrow.
    let (status, rotated) = h.refresh(&client_id, refresh).await;
    assert_eq!(status, 200, "{rotated}");
    let refresh2 = rotated["refresh_token"].as_str().expect("rotated");
    assert_ne!(refresh2, refresh);
    assert_eq!(
        claims(rotated["access_token"].as_str().expect("at"))["sid"],
        c["sid"]
    );

    // Revocation ends the family: the newest token no longer refreshes.
    let resp = h
        .http
        .post(h.url("/revoke"))
        .form(&[("token", refresh2), ("client_id", &client_id)])
        .send()
        .await
        .expect("revoke");
    assert_eq!(resp.status(), 200);
    let (status, err) = h.refresh(&client_id, refresh2).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // Unknown tokens are answered 200 too.
    let resp = h
        .http
        .post(h.url("/revoke"))
        .form(&[("token", "nonsense"), ("client_id", &client_id)])
        .send()
        .await
        .expect("revoke");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn full_flow_on_memory_with_obo_and_logout() {
    let h = Harness::start(Setup::default()).await;
    full_flow(&h).await;

    // A fresh sign-in; the MCP server's tool acts for alice downstream.
    let client_id = h.register_public().await;
    let pkce = Pkce::new();
    let code = h.code(&client_id, &pkce).await;
    let (_, tokens) = h.redeem(&client_id, &code, pkce.verifier.secret()).await;
    let at = tokens["access_token"].as_str().expect("access token");
    let principal = validator(&h, RESOURCE).validate(at).await.expect("valid");
    let graph = h
        .broker
        .upstream_token_for(
            &principal,
            &["https://graph.microsoft.com/User.Read".to_owned()],
        )
        .await
        .expect("On-Behalf-Of");
    let me: serde_json::Value = h
        .http
        .get(format!("{}/v1.0/me", h.idp.info().base_url))
        .bearer_auth(graph.access_token.secret())
        .send()
        .await
        .expect("/me")
        .json()
        .await
        .expect("JSON");
    assert_eq!(me["userPrincipalName"], ALICE, "{me}");

    // Logout with the token as hint: the grant ends, then the IdP's session.
    let resp = h
        .http
        .post(h.url("/logout"))
        .form(&[("id_token_hint", at)])
        .send()
        .await
        .expect("logout");
    assert_eq!(resp.status(), 302);
    assert!(location(&resp).starts_with(&h.idp.info().base_url));
    let (status, err) = h
        .refresh(&client_id, tokens["refresh_token"].as_str().expect("rt"))
        .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let gone = h
        .broker
        .upstream_token_for(
            &principal,
            &["https://graph.microsoft.com/User.Read".to_owned()],
        )
        .await;
    assert!(
        matches!(gone, Err(mcpgate_broker::DownstreamError::NoGrant)),
        "{gone:?}"
    );
}

#[tokio::test]
async fn full_flow_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:{}", dir.path().join("broker.db").display());
    let h = Harness::start(Setup {
        store_url: url,
        ..Setup::default()
    })
    .await;
    full_flow(&h).await;
}

#[tokio::test]
async fn full_flow_on_redis() {
    let url = std::env::var("MCPGATE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let prefix = format!("mcpgate-broker-test-{}", uuid_like());
    let h = Harness::start(Setup {
        store_url: url.clone(),
        store_options: mcpgate_store::Options {
            key_prefix: prefix.clone(),
            ..mcpgate_store::Options::default()
        },
        ..Setup::default()
    })
    .await;
    full_flow(&h).await;
    // Leave nothing behind in the shared Redis.
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert!(!keys.is_empty(), "the flow stored its state in Redis");
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .expect("DEL");
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:x}-{}", std::process::id())
}

#[tokio::test]
async fn an_expired_upstream_token_is_refreshed_and_sealed_again_before_obo() {
    let h = Harness::start(Setup::default()).await;
    let client_id = h.register_public().await;
    let pkce = Pkce::new();
    let code = h.code(&client_id, &pkce).await;
    let (_, tokens) = h.redeem(&client_id, &code, pkce.verifier.secret()).await;
    let at = tokens["access_token"].as_str().expect("access token");
    let principal = validator(&h, RESOURCE).validate(at).await.expect("valid");
    let c = claims(at);
    let key = mcpgate_broker::grant::grant_key(
        c["tid"].as_str(),
        c["oid"].as_str().expect("oid"),
        &client_id,
    );
    let before = h
        .store
        .get_upstream(&key)
        .await
        .expect("store")
        .expect("kept");

    // Two hours on, by the broker's clock: the upstream token has expired.
    h.clock_ahead
        .store(7200, std::sync::atomic::Ordering::SeqCst);
    let graph = h
        .broker
        .upstream_token_for(
            &principal,
            &["https://graph.microsoft.com/User.Read".to_owned()],
        )
        .await
        .expect("refreshed upstream, then On-Behalf-Of");
    assert!(!graph.access_token.secret().is_empty());
    let after = h
        .store
        .get_upstream(&key)
        .await
        .expect("store")
        .expect("kept");
    assert_ne!(
        after.sealed, before.sealed,
        "the refreshed tokens are sealed back"
    );
    assert_eq!(after.expires_at, before.expires_at);
}

#[tokio::test]
async fn an_issuer_with_a_path_serves_metadata_where_rfc_8414_and_openid_look() {
    let h = Harness::start(Setup {
        issuer_path: "/gate",
        ..Setup::default()
    })
    .await;
    let root = h.issuer.trim_end_matches("/gate").to_owned();
    for path in [
        "/.well-known/oauth-authorization-server/gate",
        "/.well-known/openid-configuration/gate",
        "/gate/.well-known/openid-configuration",
    ] {
        let doc: serde_json::Value = h
            .http
            .get(format!("{root}{path}"))
            .send()
            .await
            .expect("metadata")
            .json()
            .await
            .expect("JSON");
        assert_eq!(doc["issuer"], h.issuer, "{path}");
        assert_eq!(doc["token_endpoint"], format!("{}/token", h.issuer));
    }
    let jwks = h
        .http
        .get(format!("{root}/gate/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks");
    assert_eq!(jwks.status(), 200);
    let client_id = h.register_public().await;
    assert!(!client_id.is_empty(), "/gate/register serves");
}

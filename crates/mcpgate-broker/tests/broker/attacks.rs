//! Attacks on the broker, each over real HTTP: what must be refused, and
//! that a refusal spends, stores and revokes nothing it should not.

use std::net::SocketAddr;

use axum::routing::get;
use mcpgate_broker::grant::grant_key;
use mcpgate_client::oauth::Pkce;
use mcpgate_store::{KeyBytes, TokenCipher};
use serde_json::{Value, json};

use crate::flow::validator;
use crate::harness::{Harness, RESOURCE, Setup, claims, location, param};

#[tokio::test]
async fn a_replayed_code_is_refused_and_revokes_what_it_bought() {
    let h = Harness::start(Setup::default()).await;
    let client_id = h.register_public().await;
    let pkce = Pkce::new();
    let code = h.code(&client_id, &pkce).await;
    let (status, tokens) = h.redeem(&client_id, &code, pkce.verifier.secret()).await;
    assert_eq!(status, 200);
    let (status, err) = h.redeem(&client_id, &code, pkce.verifier.secret()).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, _) = h
        .refresh(&client_id, tokens["refresh_token"].as_str().expect("rt"))
        .await;
    assert_eq!(status, 400, "the family the code bought is revoked");
}

#[tokio::test]
async fn refused_redemptions_spend_nothing() {
    let h = Harness::start(Setup::default()).await;
    let client_id = h.register_public().await;
    let other = h.register_public().await;
    let pkce = Pkce::new();
    let code = h.code(&client_id, &pkce).await;
    let wrong = Pkce::new();
    let (status, err) = h.redeem(&client_id, &code, wrong.verifier.secret()).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, _) = h.redeem(&other, &code, pkce.verifier.secret()).await;
    assert_eq!(status, 400, "another client");
    let (status, _) = h
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            ("code_verifier", pkce.verifier.secret()),
            ("redirect_uri", "http://127.0.0.1:53682/callback/x"),
        ])
        .await;
    assert_eq!(status, 400, "another redirect_uri");
    let (status, err) = h
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            ("code_verifier", pkce.verifier.secret()),
            ("redirect_uri", "http://127.0.0.1:53682/callback"),
            ("resource", "http://127.0.0.1:9/other"),
        ])
        .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_target"))
    );
    let (status, _) = h
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("client_id", &client_id),
            ("code", &code),
        ])
        .await;
    assert_eq!(status, 400, "a repeated parameter");
    // The right verifier still works: nothing was spent.
    let (status, tokens) = h.redeem(&client_id, &code, pkce.verifier.secret()).await;
    assert_eq!(status, 200, "{tokens}");
}

#[tokio::test]
async fn a_reused_refresh_token_revokes_its_family_and_widening_is_refused() {
    let h = Harness::start(Setup::default()).await;
    let client_id = h.register_public().await;
    let pkce = Pkce::new();
    let code = h.code(&client_id, &pkce).await;
    let (_, tokens) = h.redeem(&client_id, &code, pkce.verifier.secret()).await;
    let rt1 = tokens["refresh_token"].as_str().expect("rt").to_owned();

    // Refused requests spend nothing: a wider scope, another client.
    let (status, err) = h
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", &rt1),
            ("scope", "mcp:tools mcp:admin"),
        ])
        .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    let other = h.register_public().await;
    let (status, _) = h.refresh(&other, &rt1).await;
    assert_eq!(status, 400);

    // Narrowing is allowed for the access token.
    let (status, narrowed) = h
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", &rt1),
            ("scope", "mcp:tools"),
        ])
        .await;
    assert_eq!(status, 200, "{narrowed}");
    assert_eq!(narrowed["scope"], "mcp:tools");
    let rt2 = narrowed["refresh_token"].as_str().expect("rt2").to_owned();

    // rt1 again: reuse; the whole family goes, rt2 included.
    let (status, err) = h.refresh(&client_id, &rt1).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, _) = h.refresh(&client_id, &rt2).await;
    assert_eq!(status, 400, "the family is revoked");
}

#[tokio::test]
async fn unregistered_or_prefix_matching_redirect_uris_never_redirect() {
    let h = Harness::start(Setup::default()).await;
    let client_id = h.register_public().await;
    let pkce = Pkce::new();
    for bad in [
        "http://127.0.0.1:53682/callback/evil",
        "http://127.0.0.1:53682/callbackx",
        "http://127.0.0.1:53682/callback?x=1",
        "https://evil.example/callback",
        "http://localhost:53682/callback",
    ] {
        let mut q = Harness::request(&client_id, &pkce, "s");
        q.retain(|(k, _)| *k != "redirect_uri");
        q.push(("redirect_uri", bad));
        let resp = h.authorize(&q).await;
        assert_eq!(resp.status(), 400, "{bad}");
        assert!(resp.headers().get("location").is_none(), "{bad}");
        assert!(
            resp.text().await.expect("page").contains("error-title"),
            "an error page"
        );
    }
    // An unknown client: a page too.
    let resp = h
        .authorize(&Harness::request("no-such-client", &pkce, "s"))
        .await;
    assert!(resp.headers().get("location").is_none());
    assert_eq!(resp.status(), 401);

    // Once the redirect URI is trusted, errors go back to it, with iss.
    let mut q = Harness::request(&client_id, &pkce, "s-9");
    q.retain(|(k, _)| *k != "code_challenge_method");
    q.push(("code_challenge_method", "plain"));
    let to = location(&h.authorize(&q).await);
    assert_eq!(param(&to, "error").as_deref(), Some("invalid_request"));
    assert_eq!(param(&to, "state").as_deref(), Some("s-9"));
    assert_eq!(param(&to, "iss").as_deref(), Some(h.issuer.as_str()));
    let mut q = Harness::request(&client_id, &pkce, "s-9");
    q.retain(|(k, _)| *k != "resource");
    q.push(("resource", "https://elsewhere.example/mcp"));
    let to = location(&h.authorize(&q).await);
    assert_eq!(param(&to, "error").as_deref(), Some("invalid_target"));
    let mut q = Harness::request(&client_id, &pkce, "s-9");
    q.retain(|(k, _)| *k != "scope");
    q.push(("scope", "mcp:tools openid"));
    let to = location(&h.authorize(&q).await);
    assert_eq!(param(&to, "error").as_deref(), Some("invalid_scope"));
}

#[tokio::test]
async fn a_forged_or_replayed_callback_state_spends_nothing_and_shows_a_page() {
    let h = Harness::start(Setup::default()).await;
    let client_id = h.register_public().await;
    let pkce = Pkce::new();
    let resp = h
        .authorize(&Harness::request(&client_id, &pkce, "s-1"))
        .await;
    let resp = h.http.get(location(&resp)).send().await.expect("IdP");
    let callback = location(&resp);

    let forged = h
        .http
        .get(h.url("/auth/callback"))
        .query(&[("state", "forged"), ("code", "x")])
        .send()
        .await
        .expect("forged");
    assert_eq!(forged.status(), 400);
    assert!(forged.headers().get("location").is_none());

    let real = h.http.get(&callback).send().await.expect("callback");
    assert_eq!(real.status(), 302, "the real state still works");
    let replay = h.http.get(&callback).send().await.expect("replay");
    assert_eq!(replay.status(), 400);
    assert!(replay.headers().get("location").is_none());
}

#[tokio::test]
async fn an_upstream_error_is_shown_and_reported_as_access_denied() {
    let h = Harness::start(Setup::default()).await;
    let client_id = h.register_public().await;
    let pkce = Pkce::new();
    let resp = h
        .authorize(&Harness::request(&client_id, &pkce, "s-1"))
        .await;
    let state = param(&location(&resp), "state").expect("upstream state");
    let resp = h
        .http
        .get(h.url("/auth/callback"))
        .query(&[("state", state.as_str()), ("error", "access_denied")])
        .send()
        .await
        .expect("callback");
    assert_eq!(resp.status(), 403);
    let html = resp.text().await.expect("page");
    let start = html.find("id=\"back\" href=\"").expect("a link back") + 16;
    let back = html[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .replace("&amp;", "&");
    assert!(
        back.starts_with("http://127.0.0.1:53682/callback?"),
        "{back}"
    );
    assert_eq!(param(&back, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&back, "state").as_deref(), Some("s-1"));

    // RFC 9207: a response naming another issuer is refused.
    let resp = h
        .authorize(&Harness::request(&client_id, &pkce, "s-2"))
        .await;
    let state = param(&location(&resp), "state").expect("upstream state");
    let resp = h
        .http
        .get(h.url("/auth/callback"))
        .query(&[
            ("state", state.as_str()),
            ("code", "x"),
            ("iss", "https://evil.example"),
        ])
        .send()
        .await
        .expect("callback");
    assert_eq!(resp.status(), 400);
    assert!(
        resp.text()
            .await
            .expect("page")
            .contains("another identity provider")
    );
}

#[tokio::test]
async fn a_token_for_this_resource_is_refused_for_another() {
    let h = Harness::start(Setup::default()).await;
    let client_id = h.register_public().await;
    let pkce = Pkce::new();
    let code = h.code(&client_id, &pkce).await;
    let (_, tokens) = h.redeem(&client_id, &code, pkce.verifier.secret()).await;
    let at = tokens["access_token"].as_str().expect("at");
    assert!(validator(&h, RESOURCE).validate(at).await.is_ok());
    let refused = validator(&h, "http://127.0.0.1:9/other").validate(at).await;
    assert!(
        matches!(
            refused,
            Err(mcpgate_token::ValidationError::WrongAudience { .. })
        ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn the_upstream_tokens_never_reach_the_client() {
    let h = Harness::start(Setup::default()).await;
    let mut seen: Vec<String> = Vec::new();
    let reg = h
        .register(json!({"redirect_uris": ["http://127.0.0.1/callback"], "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"]}))
        .await;
    seen.push(reg.to_string());
    let client_id = reg["client_id"].as_str().expect("id").to_owned();
    let pkce = Pkce::new();
    let resp = h
        .sign_in(&Harness::request(&client_id, &pkce, "s"), None)
        .await;
    let to = location(&resp);
    seen.push(to.clone());
    seen.push(resp.text().await.expect("body"));
    let code = param(&to, "code").expect("code");
    let (_, tokens) = h.redeem(&client_id, &code, pkce.verifier.secret()).await;
    seen.push(tokens.to_string());
    let (_, refreshed) = h
        .refresh(&client_id, tokens["refresh_token"].as_str().expect("rt"))
        .await;
    seen.push(refreshed.to_string());

    // The broker holds alice's upstream tokens, sealed; open them here.
    let c = claims(tokens["access_token"].as_str().expect("at"));
    let key = grant_key(
        c["tid"].as_str(),
        c["oid"].as_str().expect("oid"),
        &client_id,
    );
    let stored = h
        .store
        .get_upstream(&key)
        .await
        .expect("store")
        .expect("kept");
    let cipher = TokenCipher::new(&KeyBytes::new(h.seal_key)).expect("cipher");
    let plain = cipher
        .open(key.as_str().as_bytes(), &stored.sealed)
        .expect("opens");
    let grant: Value = serde_json::from_slice(plain.expose()).expect("JSON");
    let upstream_at = grant["access_token"].as_str().expect("upstream at");
    let upstream_rt = grant["refresh_token"].as_str().expect("upstream rt");
    assert_eq!(claims(upstream_at)["iss"], h.idp.info().issuer.as_str());
    for text in &seen {
        assert!(!text.contains(upstream_at) && !text.contains(upstream_rt));
    }
    // And the store holds them only sealed.
    let raw = serde_json::to_string(&stored).expect("JSON");
    assert!(!raw.contains(upstream_at) && !raw.contains(&upstream_at[..40]));
}

#[tokio::test]
async fn registrations_are_rate_limited_per_source() {
    let h = Harness::start(Setup {
        register_rate_limit: 2,
        ..Setup::default()
    })
    .await;
    h.register_public().await;
    h.register_public().await;
    let resp = h
        .http
        .post(h.url("/register"))
        .json(&json!({"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .expect("register");
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["error"], "temporarily_unavailable");
}

/// A metadata document server on loopback: `/good.json` names its own URL,
/// `/other.json` names `/good.json`.
async fn document_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let doc = move |path: &'static str| {
        axum::Json(json!({
            "client_id": format!("http://{addr}{path}"),
            "client_name": "Document Client",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        }))
    };
    let app = axum::Router::new()
        .route("/good.json", get(move || async move { doc("/good.json") }))
        .route("/other.json", get(move || async move { doc("/good.json") }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[tokio::test]
async fn metadata_document_clients_sign_in_and_a_mismatched_one_is_refused() {
    let h = Harness::start(Setup::default()).await;
    let docs = document_server().await;
    let good = format!("http://{docs}/good.json");
    let pkce = Pkce::new();
    let code = h.code(&good, &pkce).await;
    let (status, tokens) = h.redeem(&good, &code, pkce.verifier.secret()).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(
        claims(tokens["access_token"].as_str().expect("at"))["azp"],
        good.as_str()
    );

    let other = format!("http://{docs}/other.json");
    let resp = h.authorize(&Harness::request(&other, &pkce, "s")).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("location").is_none(), "never redirected");
    assert!(
        resp.text()
            .await
            .expect("page")
            .contains("client_id does not equal its URL")
    );
}

#[tokio::test]
async fn a_confidential_client_authenticates_as_it_registered() {
    let h = Harness::start(Setup::default()).await;
    // No token_endpoint_auth_method: RFC 7591's default, client_secret_basic.
    let reg = h
        .register(json!({"redirect_uris": ["http://127.0.0.1/callback"], "grant_types": ["authorization_code", "refresh_token"]}))
        .await;
    let id = reg["client_id"].as_str().expect("id").to_owned();
    let secret = reg["client_secret"].as_str().expect("secret").to_owned();
    let pkce = Pkce::new();
    let code = h.code(&id, &pkce).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("code_verifier", pkce.verifier.secret()),
        ("redirect_uri", "http://127.0.0.1:53682/callback"),
    ];
    let send = |user: String, pass: Option<String>, extra: Vec<(&'static str, String)>| {
        let mut form: Vec<(&str, String)> =
            form.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        form.extend(extra);
        let req = h.http.post(h.url("/token")).form(&form);
        let req = if user.is_empty() {
            req
        } else {
            req.basic_auth(user, pass)
        };
        async move { req.send().await.expect("token") }
    };
    // A public-style request, a wrong secret, the secret in the body: refused.
    let r = send(String::new(), None, vec![("client_id", id.clone())]).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("www-authenticate").is_some());
    let r = send(id.clone(), Some("wrong".into()), vec![]).await;
    assert_eq!(r.status(), 401);
    let r = send(
        String::new(),
        None,
        vec![("client_id", id.clone()), ("client_secret", secret.clone())],
    )
    .await;
    assert_eq!(r.status(), 401, "registered for Basic, not the body");
    // Basic with the secret: the code, unspent by the refusals, redeems.
    let r = send(id.clone(), Some(secret.clone()), vec![]).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_oversized_registration_is_refused_and_nothing_is_stored() {
    let h = Harness::start(Setup::default()).await;
    let body = json!({
        "redirect_uris": ["http://127.0.0.1/callback"],
        "client_name": "x".repeat(20 * 1024),
    });
    let resp = h
        .http
        .post(h.url("/register"))
        .json(&body)
        .send()
        .await
        .expect("register");
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["error"], "invalid_client_metadata");
    let resp = h
        .http
        .post(h.url("/register"))
        .json(&json!({"redirect_uris": ["http://evil.example/cb"]}))
        .send()
        .await
        .expect("register");
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["error"], "invalid_redirect_uri");
}

//! The device authorization grant: pending, slow down, approved on the
//! page, denied, expired, and auto-approved.

use std::time::Duration;

use crate::support::*;

const GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

async fn begin(idp: &Idp) -> serde_json::Value {
    let scope = format!("{} offline_access openid", api_scope());
    let (status, body) = idp
        .post_json(
            "/oauth2/v2.0/devicecode",
            &[("client_id", DESKTOP), ("scope", &scope)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["interval"], 5);
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["verification_uri"], idp.info.device_login_url);
    body
}

async fn poll(idp: &Idp, device_code: &str) -> (u16, serde_json::Value) {
    idp.token(&[
        ("client_id", DESKTOP),
        ("grant_type", GRANT),
        ("device_code", device_code),
    ])
    .await
}

/// Submits the device page as `user`, with its CSRF cookie.
async fn answer(idp: &Idp, user_code: &str, user: &str, action: &str) -> String {
    let page = idp
        .http
        .get(&idp.info.device_login_url)
        .send()
        .await
        .expect("page");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let cookie = csrf_cookie(&page).expect("csrf cookie");
    let html = page.text().await.expect("html");
    let csrf = hidden(&html, "csrf");
    let flow = hidden(&html, "flow");
    idp.http
        .post(&idp.info.device_login_url)
        .header("cookie", cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("flow", flow.as_str()),
            ("user_code", user_code),
            ("username", user),
            ("action", action),
        ])
        .send()
        .await
        .expect("submit")
        .text()
        .await
        .expect("html")
}

#[tokio::test]
async fn pending_then_slow_down_then_approved_on_the_page() {
    let idp = Idp::start("device").await;
    let flow = begin(&idp).await;
    let device_code = flow["device_code"].as_str().expect("device code");
    let (status, body) = poll(&idp, device_code).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    assert_eq!(aadsts(&body), 70016);
    let (_, body) = poll(&idp, device_code).await;
    assert_eq!(body["error"], "slow_down", "polled within the interval");

    let html = answer(
        &idp,
        flow["user_code"].as_str().expect("user code"),
        "bob@mcpgate.test",
        "approve",
    )
    .await;
    assert!(html.contains("signed in"), "{html}");
    idp.clock.advance(Duration::from_secs(5));
    let (status, body) = poll(&idp, device_code).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().expect("at"))["preferred_username"],
        "bob@mcpgate.test"
    );
    assert!(body["refresh_token"].is_string() && body["id_token"].is_string());
    idp.clock.advance(Duration::from_secs(5));
    let (status, _) = poll(&idp, device_code).await;
    assert_eq!(status, 400, "a device code is redeemed once");
}

#[tokio::test]
async fn denied_code_is_access_denied() {
    let idp = Idp::start("device-deny").await;
    let flow = begin(&idp).await;
    answer(
        &idp,
        flow["user_code"].as_str().expect("user code"),
        "alice@mcpgate.test",
        "deny",
    )
    .await;
    let (status, body) = poll(&idp, flow["device_code"].as_str().expect("dc")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("access_denied"))
    );
}

#[tokio::test]
async fn page_without_its_csrf_cookie_is_refused() {
    let idp = Idp::start("device-csrf").await;
    let flow = begin(&idp).await;
    let resp = idp
        .http
        .post(&idp.info.device_login_url)
        .form(&[
            ("csrf", "forged"),
            ("user_code", flow["user_code"].as_str().expect("uc")),
            ("username", "alice@mcpgate.test"),
            ("action", "approve"),
        ])
        .send()
        .await
        .expect("submit");
    assert_eq!(resp.status(), 403);
    let (_, body) = poll(&idp, flow["device_code"].as_str().expect("dc")).await;
    assert_eq!(
        body["error"], "authorization_pending",
        "nothing was approved"
    );
}

#[tokio::test]
async fn expired_device_code_is_expired_token() {
    let idp = Idp::start("device-expired").await;
    let flow = begin(&idp).await;
    idp.clock.advance(Duration::from_secs(901));
    let (status, body) = poll(&idp, flow["device_code"].as_str().expect("dc")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("expired_token"))
    );
    assert_eq!(aadsts(&body), 70020);
}

#[tokio::test]
async fn auto_approve_answers_the_first_poll() {
    let idp = Idp::auto("device-auto").await;
    let flow = begin(&idp).await;
    let (status, body) = poll(&idp, flow["device_code"].as_str().expect("dc")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().expect("at"))["preferred_username"],
        "alice@mcpgate.test"
    );
}

#[tokio::test]
async fn auto_approve_is_refused_off_loopback() {
    let mut options = mcpgate_devidp::IdpOptions::new(temp_dir("off-loopback"));
    options.bind = "0.0.0.0:0".parse().expect("addr");
    options.auto_approve = Some("alice@mcpgate.test".into());
    let err = mcpgate_devidp::start(mcpgate_devidp::IdpConfig::builtin(), options)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("loopback"), "{err}");
}

#[tokio::test]
async fn unconsented_client_shows_the_permissions_before_approval() {
    let mut config = mcpgate_devidp::IdpConfig::builtin();
    // The desktop client without its pre-authorization.
    config.apps[0].pre_authorized.clear();
    let idp = Idp::start_with("device-consent", config, None).await;
    let flow = begin(&idp).await;
    let user_code = flow["user_code"].as_str().expect("uc");
    let html = answer(&idp, user_code, "bob@mcpgate.test", "approve").await;
    assert!(
        html.contains("Permissions requested") && html.contains("mcp:tools"),
        "{html}"
    );
    idp.clock.advance(Duration::from_secs(5));
    let (_, body) = poll(&idp, flow["device_code"].as_str().expect("dc")).await;
    assert_eq!(
        body["error"], "authorization_pending",
        "not approved before consent"
    );

    // Accept on the consent step (its own CSRF cookie and value).
    let page = idp
        .http
        .get(&idp.info.device_login_url)
        .send()
        .await
        .expect("page");
    let cookie = csrf_cookie(&page).expect("cookie");
    let html = page.text().await.expect("html");
    let csrf = hidden(&html, "csrf");
    let page_flow = hidden(&html, "flow");
    let html = idp
        .http
        .post(&idp.info.device_login_url)
        .header("cookie", cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("flow", page_flow.as_str()),
            ("user_code", user_code),
            ("username", "bob@mcpgate.test"),
            ("action", "approve"),
            ("consent", "yes"),
        ])
        .send()
        .await
        .expect("submit")
        .text()
        .await
        .expect("html");
    assert!(html.contains("signed in"), "{html}");
    idp.clock.advance(Duration::from_secs(10));
    let (status, body) = poll(&idp, flow["device_code"].as_str().expect("dc")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn msal_node_grant_type_device_code_is_accepted() {
    // MSAL (Node and .NET) sends `grant_type=device_code`, which Entra
    // accepts beside the RFC 8628 URN.
    let idp = Idp::auto("device-msal").await;
    let flow = begin(&idp).await;
    let (status, body) = idp
        .token(&[
            ("client_id", DESKTOP),
            ("grant_type", "device_code"),
            ("device_code", flow["device_code"].as_str().expect("dc")),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
}

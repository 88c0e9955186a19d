//! The consent page as served when nothing approves for the user: what it
//! shows and forbids, approval with the CSRF value, denial, a forged CSRF
//! value (which spends nothing), and another client's consent cookie.

use mcpgate_client::oauth::Pkce;

use crate::harness::{Harness, Setup, hidden, location, param, set_cookie};

struct Shown {
    pending: String,
    csrf: String,
    csrf_cookie: String,
}

async fn consent_page(h: &Harness, client_id: &str, pkce: &Pkce, cookie: Option<&str>) -> Shown {
    let resp = h
        .sign_in(&Harness::request(client_id, pkce, "s-c"), cookie)
        .await;
    assert_eq!(resp.status(), 200, "the consent page");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(header("content-security-policy").contains("frame-ancestors 'none'"));
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("cache-control"), "no-store");
    let csrf_cookie = set_cookie(&resp, "mcpgate-csrf-").expect("the CSRF cookie");
    assert!(resp.headers().get_all("set-cookie").iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.contains("SameSite=Strict") && v.contains("HttpOnly"))
    }),);
    let html = resp.text().await.expect("html");
    assert!(html.contains("Test Client"), "names the client");
    assert!(html.contains("id=\"redirect-host\">An app on this computer (127.0.0.1)"));
    assert!(
        html.contains("<code>mcp:tools</code>") && html.contains("<code>offline_access</code>")
    );
    assert!(html.contains("alice@mcpgate.test"), "names the user");
    Shown {
        pending: hidden(&html, "pending"),
        csrf: hidden(&html, "csrf"),
        csrf_cookie,
    }
}

async fn post(h: &Harness, form: &[(&str, &str)], cookie: Option<&str>) -> reqwest::Response {
    let mut req = h.http.post(h.url("/authorize/consent")).form(form);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.send().await.expect("consent form")
}

#[tokio::test]
async fn approve_with_csrf_issues_the_code_and_remembers_consent() {
    let h = Harness::start(Setup {
        auto_approve: false,
        ..Setup::default()
    })
    .await;
    let client_id = h.register_public().await;
    let pkce = Pkce::new();
    let shown = consent_page(&h, &client_id, &pkce, None).await;

    // A forged CSRF value, or none in the cookie, is refused and spends nothing.
    let forged = post(
        &h,
        &[
            ("pending", &shown.pending),
            ("csrf", "forged"),
            ("decision", "approve"),
        ],
        Some(&shown.csrf_cookie),
    )
    .await;
    assert_eq!(forged.status(), 403);
    let no_cookie = post(
        &h,
        &[
            ("pending", &shown.pending),
            ("csrf", &shown.csrf),
            ("decision", "approve"),
        ],
        None,
    )
    .await;
    assert_eq!(
        no_cookie.status(),
        403,
        "a cross-site post carries no cookie"
    );

    let resp = post(
        &h,
        &[
            ("pending", &shown.pending),
            ("csrf", &shown.csrf),
            ("decision", "approve"),
        ],
        Some(&shown.csrf_cookie),
    )
    .await;
    assert_eq!(resp.status(), 303);
    let consent_cookie = set_cookie(&resp, "__Host-mcpgate-consent-").expect("the consent cookie");
    let to = location(&resp);
    assert_eq!(param(&to, "state").as_deref(), Some("s-c"));
    assert_eq!(param(&to, "iss").as_deref(), Some(h.issuer.as_str()));
    let code = param(&to, "code").expect("code");
    let (status, _) = h.redeem(&client_id, &code, pkce.verifier.secret()).await;
    assert_eq!(status, 200);

    // The form is single use.
    let again = post(
        &h,
        &[
            ("pending", &shown.pending),
            ("csrf", &shown.csrf),
            ("decision", "approve"),
        ],
        Some(&shown.csrf_cookie),
    )
    .await;
    assert_eq!(again.status(), 400);

    // The next sign-in of this user with this client needs no page.
    let pkce = Pkce::new();
    let resp = h
        .sign_in(&Harness::request(&client_id, &pkce, "s-2"), None)
        .await;
    assert_eq!(resp.status(), 302, "consent remembered");
    assert!(param(&location(&resp), "code").is_some());

    // Another client: its own page, whatever cookie of the first it sends,
    // under the first's name or its own.
    let other = h.register_public().await;
    let pkce = Pkce::new();
    consent_page(&h, &other, &pkce, Some(&consent_cookie)).await;
    let value = consent_cookie
        .split_once('=')
        .map(|(_, v)| v)
        .unwrap_or_default();
    let renamed = format!(
        "{}={value}",
        mcpgate_broker::consent_cookie::cookie_name(&mcpgate_broker::registration::ClientId::new(
            &other
        ))
    );
    consent_page(&h, &other, &pkce, Some(&renamed)).await;
}

#[tokio::test]
async fn deny_sends_access_denied_and_issues_nothing() {
    let h = Harness::start(Setup {
        auto_approve: false,
        ..Setup::default()
    })
    .await;
    let client_id = h.register_public().await;
    let pkce = Pkce::new();
    let shown = consent_page(&h, &client_id, &pkce, None).await;
    let resp = post(
        &h,
        &[
            ("pending", &shown.pending),
            ("csrf", &shown.csrf),
            ("decision", "deny"),
        ],
        Some(&shown.csrf_cookie),
    )
    .await;
    assert_eq!(resp.status(), 303);
    assert!(set_cookie(&resp, "__Host-mcpgate-consent-").is_none());
    let to = location(&resp);
    assert!(to.starts_with("http://127.0.0.1:53682/callback?"), "{to}");
    assert_eq!(param(&to, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&to, "state").as_deref(), Some("s-c"));
    assert_eq!(param(&to, "iss").as_deref(), Some(h.issuer.as_str()));
    assert!(param(&to, "code").is_none());
    // Nothing was remembered: the next sign-in asks again.
    consent_page(&h, &client_id, &Pkce::new(), None).await;
}

#[tokio::test]
async fn a_pre_authorized_client_skips_the_page() {
    // A metadata-document client: its id is known before it signs in.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let id = format!("http://{addr}/client.json");
    let doc = serde_json::json!({
        "client_id": id,
        "client_name": "Trusted Client",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "grant_types": ["authorization_code"],
        "token_endpoint_auth_method": "none",
    });
    let app = axum::Router::new().route(
        "/client.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc) }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let h = Harness::start(Setup {
        auto_approve: false,
        pre_authorized: vec![id.clone()],
        ..Setup::default()
    })
    .await;
    let pkce = Pkce::new();
    let code = h.code(&id, &pkce).await;
    let (status, tokens) = h.redeem(&id, &code, pkce.verifier.secret()).await;
    assert_eq!(status, 200, "{tokens}");
    assert!(
        tokens.get("refresh_token").is_none(),
        "no refresh_token grant registered"
    );
}

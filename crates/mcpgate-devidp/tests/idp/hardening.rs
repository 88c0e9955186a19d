//! What the review of issue 8 found: the IdP off loopback, memory that
//! unauthenticated callers could grow, and sign-in pages in two tabs.

use std::time::Duration;

use sha2::Digest;

use mcpgate_devidp::directory::UserConfig;
use mcpgate_devidp::{Exposure, IdpConfig, IdpError, IdpOptions, Limits};

use crate::support::*;

const REDIRECT: &str = "http://127.0.0.1:6100/callback";

/// The built-in directory with passwords of its own (the published one is
/// refused off loopback).
fn private_passwords() -> IdpConfig {
    let mut config = IdpConfig::builtin();
    for u in &mut config.users {
        u.password = Some(format!("{}-s3cret", u.username).into());
    }
    config
}

fn on_all_interfaces(o: &mut IdpOptions) {
    o.bind = "0.0.0.0:0".parse().expect("addr");
}

fn sign_in_params() -> Vec<(String, String)> {
    vec![
        ("client_id".into(), DESKTOP.into()),
        ("response_type".into(), "code".into()),
        ("redirect_uri".into(), REDIRECT.into()),
        ("scope".into(), api_scope()),
        ("state".into(), "s".into()),
        ("code_challenge".into(), challenge(VERIFIER)),
        ("code_challenge_method".into(), "S256".into()),
    ]
}

async fn open_sign_in(idp: &Idp, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut params = sign_in_params();
    for (k, v) in extra {
        params.retain(|(name, _)| name != k);
        params.push(((*k).into(), (*v).into()));
    }
    let p: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    idp.authorize(&p, None).await
}

async fn post_form(idp: &Idp, cookie: &str, form: &[(&str, &str)]) -> reqwest::Response {
    idp.http
        .post(idp.url("/oauth2/v2.0/authorize"))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .expect("post")
}

#[tokio::test]
async fn off_loopback_no_user_is_listed_and_every_sign_in_needs_a_password() {
    let idp = Idp::start_opts("exposed", private_passwords(), on_all_interfaces).await;
    assert_eq!(idp.info.exposure, Exposure::Network);
    assert!(idp.info.users.is_empty(), "the ready file lists no user");

    // The sign-in page offers no picker, and a forged pick is refused.
    let resp = open_sign_in(&idp, &[]).await;
    assert_eq!(resp.status(), 200);
    let cookie = csrf_cookie(&resp).expect("csrf cookie");
    let html = resp.text().await.expect("html");
    assert!(
        !html.contains("data-user") && !html.contains("Bob Baker"),
        "{html}"
    );
    let pending = hidden(&html, "pending");
    let csrf = hidden(&html, "csrf");
    let base = [("pending", pending.as_str()), ("csrf", csrf.as_str())];
    let mut pick = base.to_vec();
    pick.extend([("action", "pick"), ("username", "alice@mcpgate.test")]);
    let resp = post_form(&idp, &cookie, &pick).await;
    assert_eq!(resp.status(), 200, "no code without a password");
    assert!(resp.text().await.expect("html").contains("AADSTS50126"));
    // The refused attempt left the page usable: the password signs in.
    let mut password = base.to_vec();
    password.extend([
        ("action", "password"),
        ("username", "alice@mcpgate.test"),
        ("password", "alice@mcpgate.test-s3cret"),
    ]);
    let resp = post_form(&idp, &cookie, &password).await;
    assert_eq!(resp.status(), 302);
    assert!(query_of(&location(&resp)).contains_key("code"));

    // The device page: no user list, and approval needs the password.
    let (_, flow) = idp
        .post_json(
            "/oauth2/v2.0/devicecode",
            &[("client_id", DESKTOP), ("scope", &api_scope())],
        )
        .await;
    let user_code = flow["user_code"].as_str().expect("user code");
    let approve = |password: Option<&'static str>| {
        let idp = &idp;
        async move {
            let page = idp
                .http
                .get(&idp.info.device_login_url)
                .send()
                .await
                .expect("page");
            let cookie = csrf_cookie(&page).expect("cookie");
            let html = page.text().await.expect("html");
            assert!(
                !html.contains("<select") && !html.contains("Alice Adams"),
                "{html}"
            );
            let csrf = hidden(&html, "csrf");
            let flow_id = hidden(&html, "flow");
            let mut form = vec![
                ("csrf", csrf.as_str()),
                ("flow", flow_id.as_str()),
                ("user_code", user_code),
                ("username", "bob@mcpgate.test"),
                ("action", "approve"),
            ];
            if let Some(p) = password {
                form.push(("password", p));
            }
            idp.http
                .post(&idp.info.device_login_url)
                .header("cookie", cookie)
                .form(&form)
                .send()
                .await
                .expect("submit")
                .text()
                .await
                .expect("html")
        }
    };
    let html = approve(None).await;
    assert!(
        html.contains("AADSTS50126") && !html.contains("signed in"),
        "{html}"
    );
    let html = approve(Some("bob@mcpgate.test-s3cret")).await;
    assert!(html.contains("signed in"), "{html}");
}

#[tokio::test]
async fn off_loopback_auto_approve_and_the_published_password_are_refused() {
    let start = |config: IdpConfig, auto: Option<&str>, public: Option<&str>| {
        let mut options = IdpOptions::new(temp_dir("exposed-refused"));
        match public {
            // Bound to loopback behind a proxy, published elsewhere.
            Some(url) => options.public_url = Some(url.parse().expect("url")),
            None => on_all_interfaces(&mut options),
        }
        options.auto_approve = auto.map(str::to_owned);
        mcpgate_devidp::start(config, options)
    };
    let err = start(private_passwords(), Some("alice@mcpgate.test"), None)
        .await
        .expect_err("auto-approve off loopback");
    assert!(matches!(err, IdpError::Refused(_)), "{err}");
    let err = start(IdpConfig::builtin(), None, None)
        .await
        .expect_err("published password off loopback");
    assert!(err.to_string().contains("published"), "{err}");
    let err = start(
        private_passwords(),
        Some("alice@mcpgate.test"),
        Some("https://idp.example.com"),
    )
    .await
    .expect_err("a public URL elsewhere is off loopback too");
    assert!(matches!(err, IdpError::Refused(_)), "{err}");
    // Loopback stays as it was.
    let idp = Idp::start("loopback-listed").await;
    assert_eq!(idp.info.exposure, Exposure::Loopback);
    assert_eq!(idp.info.users.len(), 2);
}

#[tokio::test]
async fn oversized_parameters_are_refused_and_hold_nothing() {
    let idp = Idp::start("oversized").await;
    let huge = "s".repeat(30 * 1024);
    let long_url = "s".repeat(10 * 1024);
    let long = "s".repeat(3 * 1024);
    for _ in 0..50 {
        for state in [&huge, &long_url, &long] {
            let resp = open_sign_in(&idp, &[("state", state)]).await;
            assert!(resp.headers().get("location").is_none(), "not redirected");
            // The HTTP layer refuses a head this large (431) before the
            // IdP sees it; below that, the IdP refuses in Entra's words.
            if resp.status() == 431 {
                continue;
            }
            assert_eq!(resp.status(), 400);
            let page = resp.text().await.expect("page");
            assert!(
                page.contains("AADSTS90015"),
                "{}",
                &page[..page.len().min(300)]
            );
            assert!(!page.contains("ssssssssss"), "the value is not echoed");
        }
    }
    assert_eq!(idp._running.state_sizes().pending, 0);
    // Forms are bounded too.
    let (status, body) = idp
        .post_json(
            "/oauth2/v2.0/devicecode",
            &[("client_id", DESKTOP), ("scope", &huge)],
        )
        .await;
    assert_eq!((status, aadsts(&body)), (400, 90015), "{body}");
    assert_eq!(idp._running.state_sizes().devices, 0);
}

#[tokio::test]
async fn unauthenticated_flows_are_capped_and_swept_on_expiry() {
    let limits = Limits {
        max_pending: 5,
        max_devices: 3,
        ..Limits::default()
    };
    let idp = Idp::start_opts("capped", IdpConfig::builtin(), |o| o.limits = limits).await;
    for _ in 0..5 {
        assert_eq!(open_sign_in(&idp, &[]).await.status(), 200);
    }
    let resp = open_sign_in(&idp, &[]).await;
    assert_eq!(resp.status(), 429, "past the cap");
    assert!(resp.headers().contains_key("retry-after"));
    assert!(resp.text().await.expect("page").contains("AADSTS90055"));
    assert_eq!(idp._running.state_sizes().pending, 5);

    for _ in 0..3 {
        let (status, _) = idp
            .post_json(
                "/oauth2/v2.0/devicecode",
                &[("client_id", DESKTOP), ("scope", &api_scope())],
            )
            .await;
        assert_eq!(status, 200);
    }
    let (status, body) = idp
        .post_json(
            "/oauth2/v2.0/devicecode",
            &[("client_id", DESKTOP), ("scope", &api_scope())],
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert_eq!(idp._running.state_sizes().devices, 3);

    // Expired flows are swept (by the timer; here at once), and the cap
    // frees up.
    idp.clock.advance(Duration::from_secs(1801));
    idp._running.sweep();
    let sizes = idp._running.state_sizes();
    assert_eq!((sizes.pending, sizes.devices), (0, 0), "{sizes:?}");
    assert_eq!(open_sign_in(&idp, &[]).await.status(), 200);
}

#[tokio::test]
async fn codes_are_capped_until_the_store_lets_them_go() {
    // Auto-approve hands out codes to anyone on loopback: the codes this
    // process puts in the store are capped like any unauthenticated state.
    let limits = Limits {
        max_codes: 2,
        ..Limits::default()
    };
    let idp = Idp::start_opts("codes-capped", IdpConfig::builtin(), |o| {
        o.limits = limits;
        o.auto_approve = Some("alice@mcpgate.test".to_owned());
    })
    .await;
    let codes = [
        idp.code(&api_scope(), REDIRECT).await,
        idp.code(&api_scope(), REDIRECT).await,
    ];
    let resp = open_sign_in(&idp, &[]).await;
    let q = query_of(&location(&resp));
    assert_eq!(q["error"], "temporarily_unavailable", "{q:?}");
    assert!(!q.contains_key("code"));
    assert_eq!(idp._running.state_sizes().codes, 2);
    // Redeeming a code does not free its place (the store keeps it, to
    // catch a replay); its retention ending does.
    let (status, _) = idp.redeem(&codes[0], REDIRECT, VERIFIER).await;
    assert_eq!(status, 200);
    idp.clock.advance(Duration::from_secs(1201));
    idp._running.sweep();
    assert_eq!(idp._running.state_sizes().codes, 0);
    idp.code(&api_scope(), REDIRECT).await;
}

#[tokio::test]
async fn two_sign_ins_in_one_browser_keep_their_own_csrf_values() {
    let idp = Idp::start("two-tabs").await;
    // One browser: a cookie jar where a later cookie of the same name wins.
    let mut jar: Vec<(String, String)> = Vec::new();
    let mut pages = Vec::new();
    for _ in 0..2 {
        let resp = open_sign_in(&idp, &[]).await;
        for v in resp.headers().get_all("set-cookie") {
            let pair = v.to_str().expect("ascii").split(';').next().expect("pair");
            let (name, value) = pair.split_once('=').expect("name=value");
            jar.retain(|(n, _)| n != name);
            jar.push((name.to_owned(), value.to_owned()));
        }
        pages.push(resp.text().await.expect("html"));
    }
    let cookie: Vec<String> = jar.iter().map(|(n, v)| format!("{n}={v}")).collect();
    let cookie = cookie.join("; ");
    // The first tab, submitted after the second was opened, still works.
    for html in &pages {
        let resp = post_form(
            &idp,
            &cookie,
            &[
                ("pending", &hidden(html, "pending")),
                ("csrf", &hidden(html, "csrf")),
                ("action", "pick"),
                ("username", "alice@mcpgate.test"),
            ],
        )
        .await;
        assert_eq!(resp.status(), 302);
    }
}

#[test]
fn config_debug_prints_no_secret() {
    let mut config = IdpConfig::builtin();
    config.users.push(UserConfig {
        password: Some("hunter2-password".to_owned().into()),
        ..UserConfig::new("carol@mcpgate.test", "Carol")
    });
    let printed = format!("{config:?}");
    assert!(!printed.contains("hunter2-password"), "{printed}");
    assert!(
        !printed.contains(mcpgate_devidp::directory::DEFAULT_PASSWORD),
        "{printed}"
    );
    let dir = mcpgate_devidp::Directory::from_config(&config).expect("dir");
    let printed = format!("{dir:?}");
    let hash: String = sha2::Sha256::digest(b"hunter2-password")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        !printed.contains(&hash),
        "the password's hash is not printed either"
    );
}

#[tokio::test]
async fn running_idp_debug_prints_no_secret() {
    let idp = Idp::start("debug-running").await;
    let page = open_sign_in(&idp, &[]).await.text().await.expect("html");
    let csrf = hidden(&page, "csrf");
    let (_, flow) = idp
        .post_json(
            "/oauth2/v2.0/devicecode",
            &[("client_id", DESKTOP), ("scope", &api_scope())],
        )
        .await;
    let user_code = flow["user_code"].as_str().expect("user code").to_owned();
    let secret = idp.secret(DAEMON);
    let printed = format!("{:?}", idp._running);
    for s in [&csrf, &user_code, &secret] {
        assert!(!printed.contains(s.as_str()), "{printed}");
    }
    let secret_hash: String = sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!printed.contains(&secret_hash), "{printed}");
}

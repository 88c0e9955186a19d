//! The sign-in and consent pages, driven as a browser would drive them
//! (the headless-Chromium run is in `.ci/interop/browser`).

use crate::support::*;

const REDIRECT: &str = "http://127.0.0.1:6000/callback";

fn params_for(client: &str) -> Vec<(String, String)> {
    vec![
        ("client_id".into(), client.into()),
        ("response_type".into(), "code".into()),
        ("redirect_uri".into(), REDIRECT.into()),
        ("scope".into(), api_scope()),
        ("state".into(), "s".into()),
        ("code_challenge".into(), challenge(VERIFIER)),
        ("code_challenge_method".into(), "S256".into()),
    ]
}

struct Page {
    html: String,
    csrf_cookie: String,
}

async fn open(idp: &Idp, params: &[(String, String)], cookie: Option<&str>) -> reqwest::Response {
    let p: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    idp.authorize(&p, cookie).await
}

async fn page(resp: reqwest::Response) -> Page {
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    assert!(
        resp.headers()["content-security-policy"]
            .to_str()
            .expect("csp")
            .contains("frame-ancestors 'none'")
    );
    let csrf_cookie = csrf_cookie(&resp).expect("csrf cookie");
    Page {
        html: resp.text().await.expect("html"),
        csrf_cookie,
    }
}

async fn submit(
    idp: &Idp,
    page: &Page,
    fields: &[(&str, &str)],
    extra_cookie: Option<&str>,
) -> reqwest::Response {
    let pending = hidden(&page.html, "pending");
    let csrf = hidden(&page.html, "csrf");
    let mut form = vec![("pending", pending.as_str()), ("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    let cookie = match extra_cookie {
        Some(c) => format!("{}; {c}", page.csrf_cookie),
        None => page.csrf_cookie.clone(),
    };
    idp.http
        .post(idp.url("/oauth2/v2.0/authorize"))
        .header("cookie", cookie)
        .form(&form)
        .send()
        .await
        .expect("submit")
}

#[tokio::test]
async fn sign_in_by_picking_a_user_then_the_session_skips_the_page() {
    let idp = Idp::start("pick").await;
    let first = page(open(&idp, &params_for(DESKTOP), None).await).await;
    assert!(first.html.contains("alice@mcpgate.test") && first.html.contains("Bob Baker"));
    let resp = submit(
        &idp,
        &first,
        &[("action", "pick"), ("username", "alice@mcpgate.test")],
        None,
    )
    .await;
    assert_eq!(resp.status(), 302, "pre-authorized client: no consent page");
    let session = set_cookie(&resp, "mcpgate_idp_session").expect("session cookie");
    let code = query_of(&location(&resp))["code"].clone();
    let (status, _) = idp.redeem_with(DESKTOP, &code, REDIRECT).await;
    assert_eq!(status, 200);

    // A second sign-in in the same browser goes straight back.
    let resp = open(&idp, &params_for(DESKTOP), Some(&session)).await;
    assert_eq!(resp.status(), 302);
    // Unless the client asks to sign in again.
    let mut again = params_for(DESKTOP);
    again.push(("prompt".into(), "login".into()));
    assert_eq!(open(&idp, &again, Some(&session)).await.status(), 200);
}

#[tokio::test]
async fn password_sign_in_checks_the_password() {
    let idp = Idp::start("password").await;
    let mut params = params_for(DESKTOP);
    params.push(("login_hint".into(), "bob@mcpgate.test".into()));
    let first = page(open(&idp, &params, None).await).await;
    assert!(
        first.html.contains("value=\"bob@mcpgate.test\""),
        "login_hint prefills the username"
    );
    let resp = submit(
        &idp,
        &first,
        &[
            ("action", "password"),
            ("username", "bob@mcpgate.test"),
            ("password", "wrong"),
        ],
        None,
    )
    .await;
    let retry = page(resp).await;
    assert!(retry.html.contains("AADSTS50126"));
    let resp = submit(
        &idp,
        &retry,
        &[
            ("action", "password"),
            ("username", "bob@mcpgate.test"),
            ("password", "mcpgate-dev"),
        ],
        None,
    )
    .await;
    assert_eq!(resp.status(), 302);
}

#[tokio::test]
async fn forged_or_replayed_forms_are_refused() {
    let idp = Idp::start("csrf").await;
    let first = page(open(&idp, &params_for(DESKTOP), None).await).await;
    // The form without the browser's cookie (a cross-site post).
    let resp = idp
        .http
        .post(idp.url("/oauth2/v2.0/authorize"))
        .form(&[
            ("pending", hidden(&first.html, "pending").as_str()),
            ("csrf", hidden(&first.html, "csrf").as_str()),
            ("action", "pick"),
            ("username", "alice@mcpgate.test"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 403);
    // The real submission still works once; its replay does not.
    let ok = submit(
        &idp,
        &first,
        &[("action", "pick"), ("username", "alice@mcpgate.test")],
        None,
    )
    .await;
    assert_eq!(ok.status(), 302);
    let replay = submit(
        &idp,
        &first,
        &[("action", "pick"), ("username", "alice@mcpgate.test")],
        None,
    )
    .await;
    assert_eq!(replay.status(), 400);
}

#[tokio::test]
async fn consent_is_asked_once_per_user_and_app() {
    let idp = Idp::start_with("consent", with_unconsented_client(), None).await;
    let first = page(open(&idp, &params_for(OTHER), None).await).await;
    let resp = submit(
        &idp,
        &first,
        &[("action", "pick"), ("username", "bob@mcpgate.test")],
        None,
    )
    .await;
    let session = set_cookie(&resp, "mcpgate_idp_session").expect("session");
    let consent = page(resp).await;
    assert!(consent.html.contains("Third-party tool") && consent.html.contains("mcp:tools"));
    let resp = submit(&idp, &consent, &[("action", "consent")], Some(&session)).await;
    assert_eq!(resp.status(), 302);
    let code = query_of(&location(&resp))["code"].clone();
    let (status, body) = idp.redeem_with(OTHER, &code, REDIRECT).await;
    assert_eq!(status, 200, "{body}");

    // Consent is remembered: the next sign-in goes straight through.
    let resp = open(&idp, &params_for(OTHER), Some(&session)).await;
    assert_eq!(resp.status(), 302);
    assert!(query_of(&location(&resp)).contains_key("code"));

    // prompt=none for a user who has not consented: consent_required.
    let idp2 = Idp::start_with("consent-none", with_unconsented_client(), None).await;
    let first = page(open(&idp2, &params_for(OTHER), None).await).await;
    let resp = submit(
        &idp2,
        &first,
        &[("action", "pick"), ("username", "alice@mcpgate.test")],
        None,
    )
    .await;
    let session = set_cookie(&resp, "mcpgate_idp_session").expect("session");
    let mut silent = params_for(OTHER);
    silent.push(("prompt".into(), "none".into()));
    let resp = open(&idp2, &silent, Some(&session)).await;
    let q = query_of(&location(&resp));
    assert_eq!(q["error"], "consent_required");
    assert!(q["error_description"].starts_with("AADSTS65001:"));
}

#[tokio::test]
async fn declining_consent_returns_access_denied() {
    let idp = Idp::start_with("decline", with_unconsented_client(), None).await;
    let first = page(open(&idp, &params_for(OTHER), None).await).await;
    let resp = submit(
        &idp,
        &first,
        &[("action", "pick"), ("username", "bob@mcpgate.test")],
        None,
    )
    .await;
    let consent = page(resp).await;
    let resp = submit(&idp, &consent, &[("action", "decline")], None).await;
    let q = query_of(&location(&resp));
    assert_eq!(q["error"], "access_denied");
    assert!(q["error_description"].starts_with("AADSTS65004:"));
    assert_eq!(q["state"], "s");
}

#[tokio::test]
async fn silent_request_without_a_session_is_interaction_required() {
    let idp = Idp::start("silent").await;
    let mut params = params_for(DESKTOP);
    params.push(("prompt".into(), "none".into()));
    let resp = open(&idp, &params, None).await;
    let q = query_of(&location(&resp));
    assert_eq!(q["error"], "interaction_required");
    assert!(q["error_description"].starts_with("AADSTS50058:"));
}

#[tokio::test]
async fn form_post_mode_posts_the_code_back() {
    let idp = Idp::auto("form-post").await;
    let mut params = params_for(DESKTOP);
    params.push(("response_mode".into(), "form_post".into()));
    let resp = open(&idp, &params, None).await;
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.expect("html");
    assert!(html.contains(&format!("action=\"{REDIRECT}\"")));
    assert!(!hidden(&html, "code").is_empty());
}

impl Idp {
    async fn redeem_with(
        &self,
        client: &str,
        code: &str,
        redirect: &str,
    ) -> (u16, serde_json::Value) {
        self.token(&[
            ("client_id", client),
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("code_verifier", VERIFIER),
        ])
        .await
    }
}

#[tokio::test]
async fn sign_out_ends_the_session_and_returns_only_to_registered_uris() {
    let idp = Idp::start("logout").await;
    let first = page(open(&idp, &params_for(DESKTOP), None).await).await;
    let resp = submit(
        &idp,
        &first,
        &[("action", "pick"), ("username", "alice@mcpgate.test")],
        None,
    )
    .await;
    let session = set_cookie(&resp, "mcpgate_idp_session").expect("session");
    let logout = |target: &'static str| {
        let idp = &idp;
        let session = session.clone();
        async move {
            idp.http
                .get(idp.url("/oauth2/v2.0/logout"))
                .query(&[("post_logout_redirect_uri", target), ("state", "bye")])
                .header("cookie", session)
                .send()
                .await
                .expect("logout")
        }
    };
    let resp = logout("https://evil.example/").await;
    assert_eq!(
        resp.status(),
        200,
        "an unregistered target gets a page, not a redirect"
    );
    let resp = logout("http://127.0.0.1:6000/callback").await;
    assert_eq!(resp.status(), 302);
    assert!(location(&resp).ends_with("state=bye"));
    assert_eq!(
        open(&idp, &params_for(DESKTOP), Some(&session))
            .await
            .status(),
        200,
        "signed out: the page again"
    );
}

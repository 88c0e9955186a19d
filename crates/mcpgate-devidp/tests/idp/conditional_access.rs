//! Conditional Access: a rule "MFA for the MCP API for alice", the
//! second-factor step on the sign-in and device pages, `amr`/`acrs` in the
//! tokens, and the claims challenges of the token endpoint (AADSTS50076),
//! which change nothing.

use mcpgate_devidp::IdpConfig;
use mcpgate_devidp::conditional_access::{Requirement, RuleConfig};
use serde_json::{Value, json};

use crate::support::*;

const REDIRECT: &str = "http://127.0.0.1:6100/callback";
const POLICY: &str = "c0a1b2c3-d4e5-4f60-8a7b-9c0d1e2f3a4b";
const OBO: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const GRAPH: &str = "00000003-0000-0000-c000-000000000000";

/// The built-in directory with one rule: MFA for `resource` for alice.
fn mfa_for(resource: &str) -> IdpConfig {
    let mut config = IdpConfig::builtin();
    config.conditional_access.push(RuleConfig {
        name: "Require MFA".into(),
        id: Some(POLICY.into()),
        users: vec!["alice@mcpgate.test".into()],
        resources: vec![resource.into()],
        require: Requirement::Mfa,
    });
    config
}

fn challenge_claims() -> String {
    format!(r#"{{"access_token":{{"capolids":{{"essential":true,"values":["{POLICY}"]}}}}}}"#)
}

fn amr(jwt: &Value) -> Value {
    claims(jwt.as_str().expect("a token"))["amr"].clone()
}

/// Checks a 50076 challenge body.
fn assert_challenge(status: u16, body: &Value, error: &str, resource: &str) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([50076]));
    assert_eq!(body["suberror"], "basic_action");
    assert_eq!(body["claims"], challenge_claims(), "a JSON string");
    let text = body["error_description"].as_str().expect("description");
    assert!(
        text.starts_with(&format!("AADSTS50076: Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '{resource}'.")),
        "{text}"
    );
}

fn authorize_params(scope: &str, claims: Option<&str>) -> Vec<(String, String)> {
    let mut p = vec![
        ("client_id".into(), DESKTOP.into()),
        ("response_type".into(), "code".into()),
        ("redirect_uri".into(), REDIRECT.into()),
        ("scope".into(), scope.into()),
        ("state".into(), "s".into()),
        ("code_challenge".into(), challenge(VERIFIER)),
        ("code_challenge_method".into(), "S256".into()),
    ];
    if let Some(c) = claims {
        p.push(("claims".into(), c.into()));
    }
    p
}

async fn open(idp: &Idp, params: &[(String, String)], cookie: Option<&str>) -> reqwest::Response {
    let p: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    idp.authorize(&p, cookie).await
}

/// Posts a sign-in page's form with `fields`; the page's hidden values
/// and CSRF cookie go with it.
async fn submit(idp: &Idp, html: &str, cookie: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let pending = hidden(html, "pending");
    let csrf = hidden(html, "csrf");
    let mut form = vec![("pending", pending.as_str()), ("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    idp.http
        .post(idp.url("/oauth2/v2.0/authorize"))
        .header("cookie", cookie)
        .form(&form)
        .send()
        .await
        .expect("submit")
}

async fn redeem(idp: &Idp, code: &str) -> (u16, Value) {
    idp.token(&[
        ("client_id", DESKTOP),
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ])
    .await
}

/// Signs alice in on the pages (one click), answering the second-factor
/// step with `codes` in turn; returns the last response and the session.
async fn sign_in(
    idp: &Idp,
    params: &[(String, String)],
    codes: &[&str],
) -> (reqwest::Response, Option<String>) {
    let first = open(idp, params, None).await;
    assert_eq!(first.status(), 200);
    let cookie = csrf_cookie(&first).expect("csrf cookie");
    let html = first.text().await.expect("html");
    let mut resp = submit(
        idp,
        &html,
        &cookie,
        &[("action", "pick"), ("username", "alice@mcpgate.test")],
    )
    .await;
    for code in codes {
        assert_eq!(resp.status(), 200, "the second-factor step");
        assert!(
            set_cookie(&resp, "mcpgate_idp_session").is_none(),
            "no session before the second factor"
        );
        let html = resp.text().await.expect("html");
        assert!(html.contains("Enter the code from your authenticator app"));
        assert!(html.contains("000000"), "the development hint, on loopback");
        resp = submit(
            idp,
            &html,
            &cookie,
            &[("action", "second_factor"), ("otp", code)],
        )
        .await;
    }
    let session = set_cookie(&resp, "mcpgate_idp_session");
    (resp, session)
}

#[tokio::test]
async fn a_covered_sign_in_asks_the_second_factor_and_the_tokens_say_mfa() {
    let idp = Idp::start_with("ca-pages", mfa_for(API), None).await;
    let scope = format!("{} openid offline_access", api_scope());
    let params = authorize_params(&scope, None);
    // A wrong code: the same step with the error, nothing issued.
    let first = open(&idp, &params, None).await;
    let cookie = csrf_cookie(&first).expect("csrf");
    let html = first.text().await.expect("html");
    let step = submit(
        &idp,
        &html,
        &cookie,
        &[("action", "pick"), ("username", "alice@mcpgate.test")],
    )
    .await;
    let step_html = step.text().await.expect("html");
    let wrong = submit(
        &idp,
        &step_html,
        &cookie,
        &[("action", "second_factor"), ("otp", "123456")],
    )
    .await;
    assert_eq!(wrong.status(), 200, "a wrong code is not a redirect");
    assert!(wrong.headers().get("location").is_none());
    let wrong_html = wrong.text().await.expect("html");
    assert!(wrong_html.contains("AADSTS500121"), "{wrong_html}");
    let right = submit(
        &idp,
        &wrong_html,
        &cookie,
        &[("action", "second_factor"), ("otp", "000000")],
    )
    .await;
    assert_eq!(right.status(), 302);
    let session = set_cookie(&right, "mcpgate_idp_session").expect("session");
    let code = query_of(&location(&right))["code"].clone();
    let (status, body) = redeem(&idp, &code).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(amr(&body["access_token"]), json!(["pwd", "mfa"]));
    assert_eq!(amr(&body["id_token"]), json!(["pwd", "mfa"]));
    assert!(claims(body["access_token"].as_str().expect("at"))["acrs"].is_null());

    // The refresh token remembers the second factor: silent refresh works.
    let rt = body["refresh_token"].as_str().expect("rt");
    let (status, refreshed) = idp
        .token(&[
            ("client_id", DESKTOP),
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
        ])
        .await;
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(amr(&refreshed["access_token"]), json!(["pwd", "mfa"]));

    // The session did the second factor: single sign-on needs no page.
    let again = open(&idp, &params, Some(&session)).await;
    assert_eq!(again.status(), 302);
}

#[tokio::test]
async fn uncovered_sign_ins_are_unchanged_and_say_pwd() {
    let idp = Idp::start_with("ca-bob", mfa_for(API), None).await;
    let params = authorize_params(&format!("{} openid", api_scope()), None);
    let first = open(&idp, &params, None).await;
    let cookie = csrf_cookie(&first).expect("csrf");
    let html = first.text().await.expect("html");
    let resp = submit(
        &idp,
        &html,
        &cookie,
        &[("action", "pick"), ("username", "bob@mcpgate.test")],
    )
    .await;
    assert_eq!(resp.status(), 302, "bob is not covered: no second factor");
    let code = query_of(&location(&resp))["code"].clone();
    let (status, body) = redeem(&idp, &code).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(amr(&body["access_token"]), json!(["pwd"]));
    assert_eq!(amr(&body["id_token"]), json!(["pwd"]));
}

/// MSAL's silent path: a refresh token from a sign-in without MFA, asked
/// for a covered resource, is refused with the challenge, and neither
/// rotated nor revoked.
#[tokio::test]
async fn a_refresh_for_a_covered_resource_is_challenged_and_changes_nothing() {
    let idp = Idp::start_with("ca-refresh", mfa_for(API), Some("alice@mcpgate.test")).await;
    // Graph is not covered: auto-approve signs in without the second factor.
    let code = idp.code("User.Read offline_access", REDIRECT).await;
    let (status, body) = redeem(&idp, &code).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(amr(&body["access_token"]), json!(["pwd"]));
    let rt = body["refresh_token"].as_str().expect("rt").to_owned();

    let scope = api_scope();
    for _ in 0..2 {
        let (status, body) = idp
            .token(&[
                ("client_id", DESKTOP),
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt),
                ("scope", &scope),
            ])
            .await;
        assert_challenge(status, &body, "invalid_grant", API);
    }
    // The same refresh token still works for Graph, and only now rotates.
    let (status, body) = idp
        .token(&[
            ("client_id", DESKTOP),
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("scope", "User.Read"),
        ])
        .await;
    assert_eq!(
        status, 200,
        "refused refreshes neither rotated nor revoked it: {body}"
    );
    assert_ne!(body["refresh_token"].as_str(), Some(rt.as_str()));
}

/// The step-up: `claims` at the authorize endpoint. Auto-approve completes
/// the second factor (a development shortcut), and `acrs` asked for is in
/// the token.
#[tokio::test]
async fn claims_at_authorize_step_up_and_acrs_reach_the_token() {
    let idp = Idp::start_with("ca-claims", mfa_for(API), Some("alice@mcpgate.test")).await;
    let params = authorize_params(&api_scope(), Some(&challenge_claims()));
    let resp = open(&idp, &params, None).await;
    assert_eq!(resp.status(), 302);
    let code = query_of(&location(&resp))["code"].clone();
    let (status, body) = redeem(&idp, &code).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(amr(&body["access_token"]), json!(["pwd", "mfa"]));

    // An authentication context on an uncovered resource: asked, stepped
    // up, and carried.
    let acrs = r#"{"access_token":{"acrs":{"essential":true,"value":"c1"}}}"#;
    let params = authorize_params("User.Read", Some(acrs));
    let resp = open(&idp, &params, None).await;
    let code = query_of(&location(&resp))["code"].clone();
    let (status, body) = redeem(&idp, &code).await;
    assert_eq!(status, 200, "{body}");
    let at = claims(body["access_token"].as_str().expect("at"));
    assert_eq!(at["amr"], json!(["pwd", "mfa"]));
    assert_eq!(at["acrs"], json!(["c1"]));
    assert_eq!(at["ver"], "1.0", "v1 tokens carry amr/acrs too");

    // A malformed `claims` goes back to the client as Entra's error.
    let params = authorize_params(&api_scope(), Some("{not json"));
    let resp = open(&idp, &params, None).await;
    assert_eq!(resp.status(), 302);
    let q = query_of(&location(&resp));
    assert_eq!(q["error"], "invalid_request");
    assert!(q["error_description"].starts_with("AADSTS50117:"), "{q:?}");
    assert!(!q.contains_key("code"));
}

#[tokio::test]
async fn claims_on_the_pages_ask_the_second_factor_without_a_rule() {
    let idp = Idp::start("ca-claims-pages").await;
    let acrs = r#"{"access_token":{"acrs":{"essential":true,"values":["c2"]}}}"#;
    let params = authorize_params("User.Read", Some(acrs));
    let (resp, _) = sign_in(&idp, &params, &["000000"]).await;
    assert_eq!(resp.status(), 302);
    let code = query_of(&location(&resp))["code"].clone();
    let (_, body) = redeem(&idp, &code).await;
    let at = claims(body["access_token"].as_str().expect("at"));
    assert_eq!(
        (at["amr"].clone(), at["acrs"].clone()),
        (json!(["pwd", "mfa"]), json!(["c2"]))
    );
}

#[tokio::test]
async fn too_many_wrong_codes_end_the_sign_in() {
    let idp = Idp::start_with("ca-locked", mfa_for(API), None).await;
    let params = authorize_params(&api_scope(), None);
    let (resp, session) = sign_in(&idp, &params, &["1", "2", "3", "4", "5"]).await;
    assert_eq!(resp.status(), 400);
    assert!(session.is_none());
    let html = resp.text().await.expect("html");
    assert!(
        html.contains("AADSTS500121") && html.contains("too many"),
        "{html}"
    );
}

#[tokio::test]
async fn a_session_without_the_second_factor_is_asked_for_it_and_silent_requests_are_refused() {
    let idp = Idp::start_with("ca-sso", mfa_for(API), None).await;
    // Signed in for Graph (uncovered): a session without the second factor.
    let graph = authorize_params("User.Read", None);
    let (resp, session) = sign_in(&idp, &graph, &[]).await;
    assert_eq!(resp.status(), 302);
    let session = session.expect("session");

    // prompt=none for the covered API: interaction_required, 50076.
    let mut silent = authorize_params(&api_scope(), None);
    silent.push(("prompt".into(), "none".into()));
    let resp = open(&idp, &silent, Some(&session)).await;
    let q = query_of(&location(&resp));
    assert_eq!(q["error"], "interaction_required");
    assert!(q["error_description"].starts_with("AADSTS50076:"), "{q:?}");
    assert!(!q.contains_key("code"));

    // Interactively: the second-factor step straight away, no password.
    let resp = open(&idp, &authorize_params(&api_scope(), None), Some(&session)).await;
    assert_eq!(resp.status(), 200);
    let cookie = csrf_cookie(&resp).expect("csrf");
    let html = resp.text().await.expect("html");
    assert!(html.contains("Enter the code from your authenticator app"));
    let resp = submit(
        &idp,
        &html,
        &cookie,
        &[("action", "second_factor"), ("otp", "000000")],
    )
    .await;
    assert_eq!(resp.status(), 302);
}

/// On-Behalf-Of with an assertion whose `amr` lacks `mfa`, for a covered
/// downstream resource: `interaction_required` with the claims; with an
/// MFA'd assertion, the downstream token keeps its `amr`.
#[tokio::test]
async fn obo_without_mfa_for_a_covered_resource_is_interaction_required() {
    let idp = Idp::start_with("ca-obo", mfa_for("graph"), Some("alice@mcpgate.test")).await;
    let secret = idp.secret(API);
    let obo = |assertion: String| {
        let secret = secret.clone();
        let idp = &idp;
        async move {
            idp.token(&[
                ("client_id", API),
                ("client_secret", &secret),
                ("grant_type", OBO),
                ("requested_token_use", "on_behalf_of"),
                ("assertion", &assertion),
                ("scope", "User.Read"),
            ])
            .await
        }
    };
    // The API is not covered: alice's token for it says pwd only.
    let code = idp.code(&api_scope(), REDIRECT).await;
    let (_, body) = redeem(&idp, &code).await;
    assert_eq!(amr(&body["access_token"]), json!(["pwd"]));
    let (status, refused) = obo(body["access_token"].as_str().expect("at").to_owned()).await;
    assert_challenge(status, &refused, "interaction_required", GRAPH);

    // Stepped up with the claims the refusal carried.
    let claims_value = refused["claims"].as_str().expect("claims");
    let params = authorize_params(&api_scope(), Some(claims_value));
    let resp = open(&idp, &params, None).await;
    let code = query_of(&location(&resp))["code"].clone();
    let (_, body) = redeem(&idp, &code).await;
    assert_eq!(amr(&body["access_token"]), json!(["pwd", "mfa"]));
    let (status, graph) = obo(body["access_token"].as_str().expect("at").to_owned()).await;
    assert_eq!(status, 200, "{graph}");
    assert_eq!(amr(&graph["access_token"]), json!(["pwd", "mfa"]));
}

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The device page asks the second factor when a rule covers the code's
/// resource; a device code approved without it is refused at redemption.
#[tokio::test]
async fn the_device_page_asks_the_second_factor() {
    let idp = Idp::start_with("ca-device", mfa_for(API), None).await;
    let scope = format!("{} offline_access", api_scope());
    let (_, start) = idp
        .post_json(
            "/oauth2/v2.0/devicecode",
            &[("client_id", DESKTOP), ("scope", &scope)],
        )
        .await;
    let user_code = start["user_code"].as_str().expect("user code").to_owned();
    let device_code = start["device_code"]
        .as_str()
        .expect("device code")
        .to_owned();

    let post = |fields: Vec<(&'static str, String)>| {
        let idp = &idp;
        async move {
            let page = idp
                .http
                .get(&idp.info.device_login_url)
                .send()
                .await
                .expect("page");
            let cookie = csrf_cookie(&page).expect("csrf cookie");
            let html = page.text().await.expect("html");
            let mut form = vec![
                ("csrf", hidden(&html, "csrf")),
                ("flow", hidden(&html, "flow")),
            ];
            form.extend(fields);
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
    let base = |otp: Option<&str>| {
        let mut f = vec![
            ("user_code", user_code.clone()),
            ("username", "alice@mcpgate.test".to_owned()),
            ("action", "approve".to_owned()),
        ];
        if let Some(o) = otp {
            f.push(("otp", o.to_owned()));
        }
        f
    };
    let html = post(base(None)).await;
    assert!(
        html.contains("Enter the code from your authenticator app"),
        "{html}"
    );
    let html = post(base(Some("999999"))).await;
    assert!(html.contains("AADSTS500121"), "{html}");
    let (status, body) = idp
        .token(&[
            ("client_id", DESKTOP),
            ("grant_type", DEVICE_GRANT),
            ("device_code", &device_code),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    let html = post(base(Some("000000"))).await;
    assert!(html.contains("signed in"), "{html}");
    idp.clock.advance(std::time::Duration::from_secs(10));
    let (status, body) = idp
        .token(&[
            ("client_id", DESKTOP),
            ("grant_type", DEVICE_GRANT),
            ("device_code", &device_code),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(amr(&body["access_token"]), json!(["pwd", "mfa"]));
}

#[tokio::test]
async fn auto_approved_device_codes_complete_the_second_factor() {
    let idp = Idp::start_with("ca-device-auto", mfa_for(API), Some("alice@mcpgate.test")).await;
    let scope = api_scope();
    let (_, start) = idp
        .post_json(
            "/oauth2/v2.0/devicecode",
            &[("client_id", DESKTOP), ("scope", &scope)],
        )
        .await;
    let device_code = start["device_code"].as_str().expect("device code");
    let (status, body) = idp
        .token(&[
            ("client_id", DESKTOP),
            ("grant_type", DEVICE_GRANT),
            ("device_code", device_code),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(amr(&body["access_token"]), json!(["pwd", "mfa"]));
}

/// A code redeemed with `claims` its sign-in did not satisfy is refused
/// with the challenge and not spent.
#[tokio::test]
async fn a_refused_code_is_not_spent() {
    let idp = Idp::auto("ca-code").await;
    let code = idp.code("User.Read", REDIRECT).await;
    let acrs = r#"{"access_token":{"acrs":{"essential":true,"value":"c3"}}}"#;
    let (status, body) = idp
        .token(&[
            ("client_id", DESKTOP),
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("claims", acrs),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(body["error_codes"], json!([50076]));
    assert_eq!(body["claims"], acrs);
    let (status, body) = redeem(&idp, &code).await;
    assert_eq!(status, 200, "the code was not spent: {body}");
}

#[tokio::test]
async fn a_blocking_policy_is_aadsts53003_at_sign_in_and_at_the_token_endpoint() {
    let mut config = mfa_for(API);
    config.conditional_access[0].require = Requirement::Block;
    let idp = Idp::start_with("ca-block", config, Some("alice@mcpgate.test")).await;

    // The sign-in for the API ends with access_denied, and no code.
    let resp = open(&idp, &authorize_params(&api_scope(), None), None).await;
    assert_eq!(resp.status(), 302);
    let q = query_of(&location(&resp));
    assert_eq!(q.get("error").map(String::as_str), Some("access_denied"));
    assert!(!q.contains_key("code"));
    assert!(
        q.get("error_description").is_some_and(|d| d
            .starts_with("AADSTS53003: Access has been blocked by Conditional Access policies.")),
        "{q:?}"
    );

    // A Graph sign-in is not covered; its refresh token asked for the API
    // is refused with 53003 and no claims (nothing a user does meets it),
    // and is not spent.
    let code = idp.code("User.Read offline_access", REDIRECT).await;
    let (status, body) = redeem(&idp, &code).await;
    assert_eq!(status, 200, "{body}");
    let rt = body["refresh_token"].as_str().expect("rt").to_owned();
    let (status, body) = idp
        .token(&[
            ("client_id", DESKTOP),
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("scope", &api_scope()),
        ])
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(aadsts(&body), 53003);
    assert!(body.get("claims").is_none(), "{body}");
    let (status, body) = idp
        .token(&[
            ("client_id", DESKTOP),
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("scope", "User.Read"),
        ])
        .await;
    assert_eq!(status, 200, "the refused refresh spent nothing: {body}");
}

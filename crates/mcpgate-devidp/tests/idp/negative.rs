//! Bad requests: each gets Entra's error and issues nothing.

use std::time::Duration;

use mcpgate_devidp::IdpConfig;
use mcpgate_devidp::directory::UserConfig;

use crate::support::*;

const REDIRECT: &str = "http://127.0.0.1:7777/callback";

/// The cases about codes and refresh tokens, each on the default in-memory
/// store and on SQLite (the store `mcpgate idp` and `serve` use).
macro_rules! on_both_stores {
    ($($case:ident),* $(,)?) => {
        mod in_memory {
            use crate::support::Idp;
            $(#[tokio::test]
            async fn $case() {
                super::$case(Idp::auto(stringify!($case)).await).await;
            })*
        }
        mod on_sqlite {
            use crate::support::Idp;
            $(#[tokio::test]
            async fn $case() {
                super::$case(Idp::auto_sqlite(stringify!($case)).await).await;
            })*
        }
    };
}

on_both_stores!(
    wrong_pkce_verifier_is_refused_and_the_code_stays_usable,
    reused_code_is_refused_and_revokes_what_it_bought,
    expired_code_is_refused,
    code_redeemed_with_another_redirect_uri_is_refused,
    refused_refresh_leaves_the_token_and_its_family_usable,
    refresh_token_reuse_revokes_the_family,
    public_client_presenting_a_secret_is_refused,
);

fn assert_entra_error(
    status: u16,
    body: &serde_json::Value,
    want_status: u16,
    error: &str,
    code: u64,
) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(aadsts(body), code, "{body}");
    let description = body["error_description"].as_str().expect("description");
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    assert!(description.contains("Trace ID:") && description.contains("Correlation ID:"));
    for key in ["trace_id", "correlation_id", "timestamp"] {
        assert!(body[key].is_string(), "{key} missing: {body}");
    }
    assert!(body["access_token"].is_null() && body["refresh_token"].is_null());
}

async fn wrong_pkce_verifier_is_refused_and_the_code_stays_usable(idp: Idp) {
    let code = idp.code(&api_scope(), REDIRECT).await;
    let wrong = "x".repeat(43);
    let (status, body) = idp.redeem(&code, REDIRECT, &wrong).await;
    assert_entra_error(status, &body, 400, "invalid_grant", 501481);
    // Entra keeps a code whose redemption was refused: the refusal changed
    // nothing, and the holder of the right verifier still redeems it.
    let (status, body) = idp.redeem(&code, REDIRECT, VERIFIER).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = idp.redeem(&code, REDIRECT, VERIFIER).await;
    assert_entra_error(status, &body, 400, "invalid_grant", 54005);
}

async fn reused_code_is_refused_and_revokes_what_it_bought(idp: Idp) {
    let code = idp
        .code(&format!("{} offline_access", api_scope()), REDIRECT)
        .await;
    let (status, first) = idp.redeem(&code, REDIRECT, VERIFIER).await;
    assert_eq!(status, 200);
    let (status, body) = idp.redeem(&code, REDIRECT, VERIFIER).await;
    assert_entra_error(status, &body, 400, "invalid_grant", 54005);
    let rt = first["refresh_token"].as_str().expect("rt");
    let (status, body) = idp
        .token(&[
            ("client_id", DESKTOP),
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
        ])
        .await;
    assert_eq!(status, 400, "the replay revoked the refresh token: {body}");
}

async fn expired_code_is_refused(idp: Idp) {
    let code = idp.code(&api_scope(), REDIRECT).await;
    idp.clock.advance(Duration::from_secs(601));
    let (status, body) = idp.redeem(&code, REDIRECT, VERIFIER).await;
    assert_entra_error(status, &body, 400, "invalid_grant", 70008);
}

async fn code_redeemed_with_another_redirect_uri_is_refused(idp: Idp) {
    let code = idp.code(&api_scope(), REDIRECT).await;
    let (status, body) = idp
        .redeem(&code, "http://127.0.0.1:7777/other", VERIFIER)
        .await;
    assert_entra_error(status, &body, 400, "invalid_grant", 500112);
    let (status, body) = idp.redeem(&code, REDIRECT, VERIFIER).await;
    assert_eq!(status, 200, "the refusal did not spend the code: {body}");
}

async fn refused_refresh_leaves_the_token_and_its_family_usable(idp: Idp) {
    let code = idp
        .code(&format!("{} offline_access", api_scope()), REDIRECT)
        .await;
    let (_, first) = idp.redeem(&code, REDIRECT, VERIFIER).await;
    let rt = first["refresh_token"].as_str().expect("rt").to_owned();
    let refresh = |scope: Option<String>| {
        let idp = &idp;
        let rt = rt.clone();
        async move {
            let mut form = vec![
                ("client_id", DESKTOP.to_owned()),
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", rt),
            ];
            if let Some(s) = scope {
                form.push(("scope", s));
            }
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            idp.token(&form).await
        }
    };
    let api = format!("api://{API}");
    for (scope, error, code) in [
        (format!("{api}/nope"), "invalid_scope", 650053),
        (
            format!("{api}/.default {api}/mcp:tools"),
            "invalid_scope",
            70011,
        ),
        (format!("{api}/mcp:tools User.Read"), "invalid_scope", 28000),
        // A Graph permission nobody consented to for this client.
        ("Mail.Read".to_owned(), "invalid_grant", 65001),
    ] {
        let (status, body) = refresh(Some(scope.clone())).await;
        assert_entra_error(status, &body, 400, error, code);
    }
    // Every refusal left the token as it was: it still rotates once.
    let (status, body) = refresh(None).await;
    assert_eq!(status, 200, "{body}");
    let rt2 = body["refresh_token"].as_str().expect("rt2").to_owned();
    // And the family is alive: the rotated token works.
    let (status, body) = idp
        .token(&[
            ("client_id", DESKTOP),
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt2),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn unregistered_redirect_uri_shows_an_error_and_never_redirects() {
    let idp = Idp::auto("bad-redirect").await;
    for bad in [
        "https://evil.example/callback",
        "http://127.0.0.1:7777/elsewhere",
    ] {
        let params = idp.desktop_params(&api_scope(), bad);
        let params: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let resp = idp.authorize(&params, None).await;
        assert_eq!(resp.status(), 400);
        assert!(resp.headers().get("location").is_none());
        let page = resp.text().await.expect("page");
        assert!(page.contains("AADSTS50011"), "{page}");
    }
}

#[tokio::test]
async fn unknown_client_shows_an_error() {
    let idp = Idp::auto("unknown-client").await;
    let resp = idp
        .authorize(
            &[
                ("client_id", "00000000-0000-0000-0000-000000000001"),
                ("redirect_uri", REDIRECT),
            ],
            None,
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.expect("page").contains("AADSTS700016"));
}

async fn refresh_token_reuse_revokes_the_family(idp: Idp) {
    let code = idp
        .code(&format!("{} offline_access", api_scope()), REDIRECT)
        .await;
    let (_, first) = idp.redeem(&code, REDIRECT, VERIFIER).await;
    let rt1 = first["refresh_token"].as_str().expect("rt1").to_owned();
    let refresh = |rt: String| {
        let idp = &idp;
        async move {
            idp.token(&[
                ("client_id", DESKTOP),
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt),
            ])
            .await
        }
    };
    let (status, second) = refresh(rt1.clone()).await;
    assert_eq!(status, 200);
    let rt2 = second["refresh_token"].as_str().expect("rt2").to_owned();
    let (status, body) = refresh(rt1).await;
    assert_entra_error(status, &body, 400, "invalid_grant", 50173);
    let (status, body) = refresh(rt2).await;
    assert_eq!(
        status, 400,
        "the newest token of the family is revoked too: {body}"
    );
}

#[tokio::test]
async fn wrong_secret_and_missing_secret_are_invalid_client() {
    let idp = Idp::start("secret").await;
    let scope = format!("api://{API}/.default");
    let (status, body) = idp
        .token(&[
            ("client_id", DAEMON),
            ("client_secret", "not-the-secret"),
            ("grant_type", "client_credentials"),
            ("scope", &scope),
        ])
        .await;
    assert_entra_error(status, &body, 401, "invalid_client", 7000215);
    assert!(
        !body.to_string().contains("not-the-secret"),
        "the secret is never echoed"
    );
    let (status, body) = idp
        .token(&[
            ("client_id", DAEMON),
            ("grant_type", "client_credentials"),
            ("scope", &scope),
        ])
        .await;
    assert_entra_error(status, &body, 401, "invalid_client", 7000218);
}

async fn public_client_presenting_a_secret_is_refused(idp: Idp) {
    let code = idp.code(&api_scope(), REDIRECT).await;
    let (status, body) = idp
        .token(&[
            ("client_id", DESKTOP),
            ("client_secret", "whatever"),
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .await;
    assert_entra_error(status, &body, 401, "invalid_client", 700025);
    let (status, _) = idp.redeem(&code, REDIRECT, VERIFIER).await;
    assert_eq!(status, 200, "the refused request did not spend the code");
}

#[tokio::test]
async fn scope_not_exposed_is_refused() {
    let idp = Idp::auto("scope").await;
    let scope = format!("api://{API}/mail:send");
    let (status, body) = idp
        .post_json(
            "/oauth2/v2.0/devicecode",
            &[("client_id", DESKTOP), ("scope", &scope)],
        )
        .await;
    assert_entra_error(status, &body, 400, "invalid_scope", 650053);
}

#[tokio::test]
async fn disabled_user_cannot_sign_in() {
    let mut config = IdpConfig::builtin();
    config.users.push(UserConfig {
        password: Some("pw".into()),
        disabled: true,
        ..UserConfig::new("carol@mcpgate.test", "Carol Disabled")
    });
    let idp = Idp::start_with("disabled", config, Some("carol@mcpgate.test")).await;
    let params = idp.desktop_params(&api_scope(), REDIRECT);
    let params: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let resp = idp.authorize(&params, None).await;
    assert_eq!(resp.status(), 302);
    let q = query_of(&location(&resp));
    assert!(!q.contains_key("code"));
    assert!(q["error_description"].starts_with("AADSTS50057:"), "{q:?}");
}

#[tokio::test]
async fn pkce_is_required_for_public_clients_and_plain_is_refused() {
    let idp = Idp::auto("pkce-required").await;
    let mut params = idp.desktop_params(&api_scope(), REDIRECT);
    params.retain(|(k, _)| !k.starts_with("code_challenge"));
    let without: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let resp = idp.authorize(&without, None).await;
    let q = query_of(&location(&resp));
    assert_eq!(q["error"], "invalid_request");
    assert!(q["error_description"].starts_with("AADSTS9002325:"));
    assert_eq!(q["state"], "st-1");

    let mut plain = without.clone();
    plain.push(("code_challenge", VERIFIER));
    plain.push(("code_challenge_method", "plain"));
    let resp = idp.authorize(&plain, None).await;
    let q = query_of(&location(&resp));
    assert!(!q.contains_key("code"));
    assert!(
        q["error_description"].starts_with("AADSTS9002325:"),
        "{q:?}"
    );
}

#[tokio::test]
async fn bad_grant_types_and_bodies_get_entra_errors() {
    let idp = Idp::start("bodies").await;
    let (status, body) = idp
        .token(&[("client_id", DESKTOP), ("grant_type", "password")])
        .await;
    assert_entra_error(status, &body, 400, "unsupported_grant_type", 70003);
    let (status, body) = idp.token(&[("client_id", DESKTOP)]).await;
    assert_entra_error(status, &body, 400, "invalid_request", 900144);
    let (status, body) = idp
        .token(&[
            ("grant_type", "client_credentials"),
            ("grant_type", "client_credentials"),
        ])
        .await;
    assert_entra_error(status, &body, 400, "invalid_request", 9000411);
    let resp = idp
        .http
        .post(idp.url("/oauth2/v2.0/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![b'a'; 100 * 1024])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 413);
    let body: serde_json::Value = resp.json().await.expect("JSON even for an oversized body");
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn obo_refuses_assertions_for_another_audience() {
    let idp = Idp::auto("obo-aud").await;
    let secret = idp.secret(API);
    // A Graph token (audience Graph) presented by the API app.
    let code = idp.code("User.Read", REDIRECT).await;
    let (_, user) = idp.redeem(&code, REDIRECT, VERIFIER).await;
    let (status, body) = idp
        .token(&[
            ("client_id", API),
            ("client_secret", &secret),
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("requested_token_use", "on_behalf_of"),
            ("assertion", user["access_token"].as_str().expect("at")),
            ("scope", "User.Read"),
        ])
        .await;
    assert_entra_error(status, &body, 400, "invalid_grant", 50013);
    let (status, body) = idp
        .token(&[
            ("client_id", API),
            ("client_secret", &secret),
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("requested_token_use", "on_behalf_of"),
            ("assertion", "eyJhbGciOiJub25lIn0.e30."),
            ("scope", "User.Read"),
        ])
        .await;
    assert_entra_error(status, &body, 400, "invalid_grant", 50013);
}

/// An application's own token cannot be exchanged: Entra refuses with
/// AADSTS7000114, naming the middle tier that asked.
#[tokio::test]
async fn obo_refuses_app_only_assertions_as_entra_does() {
    let idp = Idp::start("obo-app").await;
    let daemon_secret = idp.secret(DAEMON);
    let scope = format!("api://{API}/.default");
    let (status, body) = idp
        .token(&[
            ("client_id", DAEMON),
            ("client_secret", &daemon_secret),
            ("grant_type", "client_credentials"),
            ("scope", &scope),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    let app_token = body["access_token"].as_str().expect("at").to_owned();
    let api_secret = idp.secret(API);
    let (status, body) = idp
        .token(&[
            ("client_id", API),
            ("client_secret", &api_secret),
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("requested_token_use", "on_behalf_of"),
            ("assertion", &app_token),
            ("scope", "User.Read"),
        ])
        .await;
    assert_entra_error(status, &body, 400, "unauthorized_client", 7000114);
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(
        description.contains(&format!(
            "Application '{API}' is not allowed to make application on-behalf-of calls"
        )),
        "{description}"
    );
}

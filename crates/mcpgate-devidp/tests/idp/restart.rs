//! Grants in a durable store: an IdP started again on the same data
//! directory and SQLite file honours the refresh tokens, consents and
//! redeemed codes of the one before, so that a restart signs nobody out.

use mcpgate_token::clock::ManualClock;

use crate::support::*;

const REDIRECT: &str = "http://127.0.0.1:6000/callback";

fn authorize_params(scope: &str) -> Vec<(String, String)> {
    vec![
        ("client_id".into(), OTHER.into()),
        ("response_type".into(), "code".into()),
        ("redirect_uri".into(), REDIRECT.into()),
        ("scope".into(), scope.into()),
        ("state".into(), "st".into()),
        ("nonce".into(), "nonce-across-restarts".into()),
        ("code_challenge".into(), challenge(VERIFIER)),
        ("code_challenge_method".into(), "S256".into()),
    ]
}

async fn authorize(idp: &Idp, scope: &str) -> reqwest::Response {
    let params = authorize_params(scope);
    let params: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    idp.authorize(&params, None).await
}

async fn redeem(idp: &Idp, code: &str) -> (u16, serde_json::Value) {
    idp.token(&[
        ("client_id", OTHER),
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ])
    .await
}

async fn refresh(idp: &Idp, token: &str) -> (u16, serde_json::Value) {
    idp.token(&[
        ("client_id", OTHER),
        ("grant_type", "refresh_token"),
        ("refresh_token", token),
    ])
    .await
}

/// Starts the IdP on `dir` with its grants in `dir/grants.db`.
async fn start(dir: &std::path::Path, clock: &ManualClock, auto: Option<&str>) -> Idp {
    let store = sqlite_store(&dir.join("grants.db"), clock).await;
    Idp::start_in(
        &dir.join("idp"),
        clock.clone(),
        with_unconsented_client(),
        |o| {
            o.auto_approve = auto.map(str::to_owned);
            o.store = Some(store);
        },
    )
    .await
}

#[tokio::test]
async fn a_restarted_idp_honours_refresh_tokens_consents_and_redeemed_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::starting_now();
    let scope = format!("{} openid offline_access", api_scope());

    // Alice signs in to a client that needs consent; auto-approve consents.
    let first = start(dir.path(), &clock, Some("alice@mcpgate.test")).await;
    let resp = authorize(&first, &scope).await;
    assert_eq!(resp.status(), 302);
    let code = query_of(&location(&resp))["code"].clone();
    let (status, tokens) = redeem(&first, &code).await;
    assert_eq!(status, 200, "{tokens}");
    let id_token = claims(tokens["id_token"].as_str().expect("id token"));
    assert_eq!(id_token["nonce"], "nonce-across-restarts");
    let rt1 = tokens["refresh_token"].as_str().expect("rt").to_owned();
    first.shutdown().await;

    // A new process on the same data directory and store file, without
    // auto-approve.
    let second = start(dir.path(), &clock, None).await;
    let (status, body) = refresh(&second, &rt1).await;
    assert_eq!(
        status, 200,
        "the refresh token outlived the restart: {body}"
    );
    let access = claims(body["access_token"].as_str().expect("at"));
    assert_eq!(access["scp"], "mcp:tools");
    assert_eq!(access["aud"], API);
    let rt2 = body["refresh_token"].as_str().expect("rt2").to_owned();
    // Its rotation outlived it too: the first token is spent.
    let (status, body) = refresh(&second, &rt1).await;
    assert_eq!((status, aadsts(&body)), (400, 50173), "{body}");

    // The consent outlived it: signing in again shows the sign-in page
    // (browser sessions are not kept) but no consent page.
    let second_rt = {
        let resp = authorize(&second, &scope).await;
        assert_eq!(resp.status(), 200);
        let cookie = csrf_cookie(&resp).expect("csrf cookie");
        let html = resp.text().await.expect("html");
        let resp = second
            .http
            .post(second.url("/oauth2/v2.0/authorize"))
            .header("cookie", cookie)
            .form(&[
                ("pending", hidden(&html, "pending").as_str()),
                ("csrf", hidden(&html, "csrf").as_str()),
                ("action", "pick"),
                ("username", "alice@mcpgate.test"),
            ])
            .send()
            .await
            .expect("sign in");
        assert_eq!(resp.status(), 302, "no consent page the second time");
        let code = query_of(&location(&resp))["code"].clone();
        let (status, body) = redeem(&second, &code).await;
        assert_eq!(status, 200, "{body}");
        body["refresh_token"].as_str().expect("rt").to_owned()
    };

    // The code redeemed before the restart is still known as redeemed:
    // its replay is refused and revokes what it bought.
    let (status, body) = redeem(&second, &code).await;
    assert_eq!((status, aadsts(&body)), (400, 54005), "{body}");
    let (status, body) = refresh(&second, &rt2).await;
    assert_eq!((status, aadsts(&body)), (400, 50173), "{body}");
    // The other sign-in's family is untouched.
    let (status, body) = refresh(&second, &second_rt).await;
    assert_eq!(status, 200, "{body}");
    second.shutdown().await;
}

#[tokio::test]
async fn with_the_default_memory_store_a_restart_forgets_grants() {
    // The default (no store given) keeps grants in the process: the same
    // steps as above lose the refresh token. What the docs promise.
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::starting_now();
    let auto = |o: &mut mcpgate_devidp::IdpOptions| {
        o.auto_approve = Some("alice@mcpgate.test".to_owned());
    };
    let first = Idp::start_in(dir.path(), clock.clone(), with_unconsented_client(), auto).await;
    let resp = authorize(&first, &format!("{} offline_access", api_scope())).await;
    let code = query_of(&location(&resp))["code"].clone();
    let (status, tokens) = redeem(&first, &code).await;
    assert_eq!(status, 200, "{tokens}");
    let rt = tokens["refresh_token"].as_str().expect("rt").to_owned();
    first.shutdown().await;

    let second = Idp::start_in(dir.path(), clock, with_unconsented_client(), auto).await;
    let (status, body) = refresh(&second, &rt).await;
    assert_eq!((status, aadsts(&body)), (400, 9002313), "{body}");
    second.shutdown().await;
}

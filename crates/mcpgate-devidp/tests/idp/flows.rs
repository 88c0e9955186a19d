//! The grants that should work, and the tokens they give.

use std::sync::Arc;

use mcpgate_token::clock::Clock;
use mcpgate_token::{ValidationPolicy, Validator};

use crate::support::*;

fn validator(idp: &Idp) -> Validator {
    let policy = ValidationPolicy {
        issuers: vec![idp.info.issuer.clone()],
        audiences: vec![format!("api://{API}"), API.to_owned()],
        required_scopes: vec![api_scope()],
        ..Default::default()
    };
    Validator::builder(policy)
        .http_client(idp.http.clone())
        .clock(Arc::new(idp.clock.clone()))
        .build()
        .expect("policy")
}

#[tokio::test]
async fn auth_code_with_pkce_gives_tokens_that_mcpgate_accepts() {
    let idp = Idp::auto("code").await;
    let redirect = "http://127.0.0.1:53682/callback";
    let code = idp
        .code(
            &format!("{} openid profile offline_access", api_scope()),
            redirect,
        )
        .await;
    let (status, body) = idp.redeem(&code, redirect, VERIFIER).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], api_scope());
    assert!(body["refresh_token"].is_string() && body["id_token"].is_string());

    let at = claims(body["access_token"].as_str().expect("access token"));
    assert_eq!(at["aud"], API);
    assert_eq!(at["iss"], idp.info.issuer);
    assert_eq!(at["ver"], "2.0");
    assert_eq!(at["scp"], "mcp:tools");
    assert_eq!(at["azp"], DESKTOP);
    assert_eq!(at["azpacr"], "0");
    assert_eq!(at["preferred_username"], "alice@mcpgate.test");
    assert_eq!(at["roles"], serde_json::json!(["MCP.Tools.All"]));
    assert!(at["uti"].is_string() && at["oid"].is_string() && at["idtyp"].is_null());

    let id = claims(body["id_token"].as_str().expect("id token"));
    assert_eq!(id["aud"], DESKTOP);
    assert_eq!(id["nonce"], "n-1");
    assert_ne!(id["sub"], at["sub"], "sub is pairwise per application");
    assert_eq!(id["oid"], at["oid"]);

    let principal = validator(&idp)
        .validate(body["access_token"].as_str().expect("at"))
        .await
        .expect("mcpgate's validator accepts the dev IdP's token");
    assert_eq!(
        principal.preferred_username.as_deref(),
        Some("alice@mcpgate.test")
    );
}

#[tokio::test]
async fn refresh_rotates_and_can_switch_resource() {
    let idp = Idp::auto("refresh").await;
    let redirect = "http://localhost:4000";
    let code = idp
        .code(&format!("{} offline_access", api_scope()), redirect)
        .await;
    let (_, first) = idp.redeem(&code, redirect, VERIFIER).await;
    let rt1 = first["refresh_token"].as_str().expect("rt").to_owned();
    let (status, second) = idp
        .token(&[
            ("client_id", DESKTOP),
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt1),
            ("scope", "User.Read"),
        ])
        .await;
    assert_eq!(status, 200, "{second}");
    let rt2 = second["refresh_token"].as_str().expect("rotated");
    assert_ne!(rt1, rt2);
    let graph = claims(second["access_token"].as_str().expect("at"));
    assert_eq!(graph["aud"], "00000003-0000-0000-c000-000000000000");
    assert_eq!(graph["ver"], "1.0", "Graph takes v1 tokens");
    assert_eq!(graph["scp"], "User.Read");

    let (status, third) = idp
        .token(&[
            ("client_id", DESKTOP),
            ("grant_type", "refresh_token"),
            ("refresh_token", rt2),
        ])
        .await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(
        claims(third["access_token"].as_str().expect("at"))["aud"],
        API,
        "the grant's own scope by default"
    );
}

#[tokio::test]
async fn client_credentials_give_app_only_tokens_with_roles() {
    let idp = Idp::start("cc").await;
    let secret = idp.secret(DAEMON);
    let scope = format!("api://{API}/.default");
    let (status, body) = idp
        .token(&[
            ("client_id", DAEMON),
            ("client_secret", &secret),
            ("grant_type", "client_credentials"),
            ("scope", &scope),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["refresh_token"].is_null());
    let at = claims(body["access_token"].as_str().expect("at"));
    assert_eq!(at["idtyp"], "app");
    assert_eq!(at["roles"], serde_json::json!(["MCP.Tools.All"]));
    assert_eq!(at["azpacr"], "1");
    assert!(at["scp"].is_null());
    assert_eq!(at["sub"], at["oid"]);

    // HTTP Basic works as well as the form.
    let resp = idp
        .http
        .post(idp.url("/oauth2/v2.0/token"))
        .basic_auth(DAEMON, Some(&secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", scope.as_str()),
        ])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn on_behalf_of_exchanges_a_user_token_for_graph_and_me_answers() {
    let idp = Idp::auto("obo").await;
    let redirect = "http://127.0.0.1:1234/callback";
    let code = idp.code(&api_scope(), redirect).await;
    let (_, user) = idp.redeem(&code, redirect, VERIFIER).await;
    let assertion = user["access_token"].as_str().expect("at");
    let secret = idp.secret(API);
    let (status, body) = idp
        .token(&[
            ("client_id", API),
            ("client_secret", &secret),
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("requested_token_use", "on_behalf_of"),
            ("assertion", assertion),
            (
                "scope",
                "https://graph.microsoft.com/User.Read offline_access",
            ),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    let graph_token = body["access_token"].as_str().expect("at");
    assert_ne!(
        graph_token, assertion,
        "a new token, never the one presented"
    );
    let graph = claims(graph_token);
    assert_eq!(graph["appid"], API, "issued to the middle tier");
    assert_eq!(graph["upn"], "alice@mcpgate.test");

    let me: serde_json::Value = idp
        .http
        .get(format!("{}/v1.0/me", idp.info.base_url))
        .bearer_auth(graph_token)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(me["userPrincipalName"], "alice@mcpgate.test");
    assert_eq!(me["displayName"], "Alice Adams");

    // The API's own token is not a Graph token.
    let resp = idp
        .http
        .get(format!("{}/v1.0/me", idp.info.base_url))
        .bearer_auth(assertion)
        .send()
        .await
        .expect("me");
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn v1_apps_get_v1_tokens() {
    let mut config = mcpgate_devidp::IdpConfig::builtin();
    config.apps[0].access_token_version = Some(1);
    let idp = Idp::start_with("v1", config, Some("bob@mcpgate.test")).await;
    let redirect = "http://127.0.0.1:9/callback";
    let code = idp.code(&api_scope(), redirect).await;
    let (_, body) = idp.redeem(&code, redirect, VERIFIER).await;
    let at = claims(body["access_token"].as_str().expect("at"));
    assert_eq!(at["ver"], "1.0");
    assert_eq!(at["iss"], idp.info.issuer_v1);
    assert_eq!(at["aud"], format!("api://{API}"));
    assert_eq!(at["appid"], DESKTOP);
    assert_eq!(at["upn"], "bob@mcpgate.test");
    assert!(at["roles"].is_null(), "bob holds no role");
}

#[tokio::test]
async fn rotated_keys_sign_new_tokens_and_old_ones_stay_published() {
    let idp = Idp::start("rotate").await;
    let keys_url = idp.url("/discovery/v2.0/keys");
    let before: serde_json::Value = idp
        .http
        .get(&keys_url)
        .send()
        .await
        .expect("keys")
        .json()
        .await
        .expect("json");
    assert_eq!(before["keys"].as_array().map(Vec::len), Some(1));
    let old_kid = before["keys"][0]["kid"].as_str().expect("kid").to_owned();
    let new_kid =
        mcpgate_devidp::rotate_keys(&idp.data_dir, 3600, idp.clock.unix_now()).expect("rotate");
    let after: serde_json::Value = idp
        .http
        .get(&keys_url)
        .send()
        .await
        .expect("keys")
        .json()
        .await
        .expect("json");
    let kids: Vec<&str> = after["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(kids, [old_kid.as_str(), new_kid.as_str()]);

    let scope = format!("api://{API}/.default");
    let secret = idp.secret(DAEMON);
    let (_, body) = idp
        .token(&[
            ("client_id", DAEMON),
            ("client_secret", &secret),
            ("grant_type", "client_credentials"),
            ("scope", &scope),
        ])
        .await;
    let token = body["access_token"].as_str().expect("at");
    let header: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').next().expect("header"),
        )
        .expect("b64"),
    )
    .expect("json");
    assert_eq!(header["kid"], new_kid);
    assert_eq!(header["x5t"], new_kid);
}

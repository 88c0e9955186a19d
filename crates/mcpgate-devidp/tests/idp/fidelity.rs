//! The Entra behaviours MCP clients trip over, with Entra's codes:
//! - AADSTS28000: scopes of two resources in one request
//!   (<https://learn.microsoft.com/entra/identity-platform/reference-error-codes>);
//! - AADSTS70011: `/.default` mixed with other scopes of its resource
//!   (<https://learn.microsoft.com/entra/identity-platform/scopes-oidc#the-default-scope>);
//! - AADSTS9010010: an RFC 8707 `resource` that does not match the scopes
//!   (the error MCP clients sending `resource=<server URL>` hit);
//! - no RFC 8414 metadata and no dynamic client registration;
//! - OpenID discovery without `code_challenge_methods_supported`.

use crate::support::*;

async fn authorize_error(idp: &Idp, scope: &str, resource: Option<&str>) -> (String, String) {
    let mut params = idp.desktop_params(scope, "http://127.0.0.1:5000/callback");
    if let Some(r) = resource {
        params.push(("resource".into(), r.into()));
    }
    let params: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let resp = idp.authorize(&params, None).await;
    assert_eq!(resp.status(), 302);
    let q = query_of(&location(&resp));
    assert!(!q.contains_key("code"), "{q:?}");
    (q["error"].clone(), q["error_description"].clone())
}

#[tokio::test]
async fn two_resources_in_one_request_is_aadsts28000() {
    let idp = Idp::auto("f28000").await;
    let scope = format!("{} User.Read", api_scope());
    let (error, description) = authorize_error(&idp, &scope, None).await;
    assert_eq!(error, "invalid_scope");
    assert!(description.starts_with("AADSTS28000:"), "{description}");
    let (status, body) = idp
        .post_json(
            "/oauth2/v2.0/devicecode",
            &[("client_id", DESKTOP), ("scope", &scope)],
        )
        .await;
    assert_eq!((status, aadsts(&body)), (400, 28000));
}

#[tokio::test]
async fn default_mixed_with_its_resource_scopes_is_aadsts70011() {
    let idp = Idp::auto("f70011").await;
    let scope = format!("api://{API}/.default {}", api_scope());
    let (error, description) = authorize_error(&idp, &scope, None).await;
    assert_eq!(error, "invalid_scope");
    assert!(description.starts_with("AADSTS70011:"), "{description}");
    // /.default with the OpenID scopes is fine.
    let code = idp
        .code(
            &format!("api://{API}/.default openid offline_access"),
            "http://127.0.0.1:5000/callback",
        )
        .await;
    assert!(!code.is_empty());
}

#[tokio::test]
async fn resource_parameter_not_matching_the_scopes_is_aadsts9010010() {
    let idp = Idp::auto("f9010010").await;
    let (error, description) =
        authorize_error(&idp, &api_scope(), Some("http://127.0.0.1:8080/mcp")).await;
    assert_eq!(error, "invalid_request");
    assert!(description.starts_with("AADSTS9010010:"), "{description}");
    // At the token endpoint too.
    let code = idp
        .code(
            &format!("{} offline_access", api_scope()),
            "http://127.0.0.1:5000/callback",
        )
        .await;
    let (_, body) = idp
        .redeem(&code, "http://127.0.0.1:5000/callback", VERIFIER)
        .await;
    let (status, body) = idp
        .token(&[
            ("client_id", DESKTOP),
            ("grant_type", "refresh_token"),
            ("refresh_token", body["refresh_token"].as_str().expect("rt")),
            ("scope", &api_scope()),
            ("resource", "http://127.0.0.1:8080/mcp"),
        ])
        .await;
    assert_eq!((status, aadsts(&body)), (400, 9010010));
    // A resource that names the scopes' own API is accepted.
    let resource = format!("api://{API}");
    let params = idp.desktop_params(&api_scope(), "http://127.0.0.1:5000/callback");
    let mut params: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    params.push(("resource", &resource));
    let resp = idp.authorize(&params, None).await;
    assert!(query_of(&location(&resp)).contains_key("code"));
}

#[tokio::test]
async fn only_openid_discovery_exists() {
    let idp = Idp::start("discovery").await;
    let doc: serde_json::Value = idp
        .http
        .get(idp.url("/v2.0/.well-known/openid-configuration"))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["issuer"], idp.info.issuer);
    assert_eq!(doc["token_endpoint"], idp.url("/oauth2/v2.0/token"));
    assert_eq!(
        doc["device_authorization_endpoint"],
        idp.url("/oauth2/v2.0/devicecode")
    );
    assert!(
        doc.get("code_challenge_methods_supported").is_none(),
        "Entra does not advertise S256"
    );
    assert!(
        doc.get("registration_endpoint").is_none(),
        "Entra has no DCR"
    );

    let common: serde_json::Value = idp
        .http
        .get(format!(
            "{}/organizations/v2.0/.well-known/openid-configuration",
            idp.info.base_url
        ))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("json");
    assert_eq!(
        common["issuer"],
        format!("{}/{{tenantid}}/v2.0", idp.info.base_url)
    );

    for path in [
        "/.well-known/oauth-authorization-server".to_owned(),
        format!(
            "/.well-known/oauth-authorization-server/{}/v2.0",
            idp.info.tenant_id
        ),
        format!(
            "/{}/v2.0/.well-known/oauth-authorization-server",
            idp.info.tenant_id
        ),
        format!("/{}/oauth2/v2.0/register", idp.info.tenant_id),
        "/register".to_owned(),
    ] {
        let resp = idp
            .http
            .get(format!("{}{path}", idp.info.base_url))
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 404, "{path}");
    }
    let resp = idp
        .http
        .get(format!(
            "{}/11111111-2222-4333-8444-555555555555/v2.0/.well-known/openid-configuration",
            idp.info.base_url
        ))
        .send()
        .await
        .expect("get");
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(aadsts(&body), 90002, "unknown tenant");
}

#[tokio::test]
async fn keys_have_entra_shape() {
    let idp = Idp::start("jwks").await;
    let keys: serde_json::Value = idp
        .http
        .get(&idp.info.jwks_uri)
        .send()
        .await
        .expect("keys")
        .json()
        .await
        .expect("json");
    let k = &keys["keys"][0];
    assert_eq!(k["kty"], "RSA");
    assert_eq!(k["use"], "sig");
    assert_eq!(k["kid"], k["x5t"]);
    assert_eq!(k["e"], "AQAB");
    assert_eq!(k["issuer"], idp.info.issuer);
}

#[tokio::test]
async fn graph_tokens_carry_a_nonce_header() {
    let idp = Idp::auto("graph-nonce").await;
    let code = idp
        .code("User.Read openid", "http://127.0.0.1:5000/callback")
        .await;
    let (_, body) = idp
        .redeem(&code, "http://127.0.0.1:5000/callback", VERIFIER)
        .await;
    let token = body["access_token"].as_str().expect("at");
    let header: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').next().expect("h"),
        )
        .expect("b64"),
    )
    .expect("json");
    assert!(header["nonce"].is_string());
    assert_eq!(body["scope"], "User.Read openid");
}

//! Certificate credentials: an app with a registered key gets tokens with a
//! signed client assertion (`private_key_jwt`) and no secret, as in Entra.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcpgate_devidp::IdpConfig;
use mcpgate_devidp::directory::AppConfig;
use mcpgate_token::clock::Clock;
use serde_json::{Value, json};

use crate::support::*;

const WORKLOAD: &str = "5b0e6a4c-2d7f-4c1e-9a3b-8f6d2e1c0a97";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn key() -> (EncodingKey, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let private = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("private key");
    (private, key.public_key_pem())
}

async fn idp_with_certificate(name: &str, public_pem: &str) -> Idp {
    let dir = temp_dir(&format!("{name}-cert"));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("workload.pem");
    std::fs::write(&path, public_pem).expect("certificate");
    let mut config = IdpConfig::builtin();
    config.apps.push(AppConfig {
        certificates: vec![path],
        app_roles: [(API.to_owned(), vec!["MCP.Tools.All".to_owned()])].into(),
        ..AppConfig::new(WORKLOAD, "workload with a certificate")
    });
    Idp::start_with(name, config, None).await
}

fn assertion(idp: &Idp, key: &EncodingKey, edit: impl FnOnce(&mut Value)) -> String {
    let now = idp.clock.unix_now();
    let mut claims = json!({
        "iss": WORKLOAD,
        "sub": WORKLOAD,
        "aud": idp.url("/oauth2/v2.0/token"),
        "exp": now + 600,
        "nbf": now,
        "jti": format!("{now}"),
    });
    edit(&mut claims);
    jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, key).expect("signed")
}

async fn client_credentials(idp: &Idp, extra: &[(&str, &str)]) -> (u16, Value) {
    let scope = format!("api://{API}/.default");
    let mut form = vec![
        ("client_id", WORKLOAD),
        ("grant_type", "client_credentials"),
        ("scope", scope.as_str()),
    ];
    form.extend_from_slice(extra);
    idp.token(&form).await
}

#[tokio::test]
async fn a_signed_assertion_stands_in_for_the_secret() {
    let (private, public) = key();
    let idp = idp_with_certificate("cert-ok", &public).await;
    let jwt = assertion(&idp, &private, |_| {});
    let (status, body) = client_credentials(
        &idp,
        &[
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &jwt),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let at = claims(body["access_token"].as_str().expect("access token"));
    assert_eq!(at["azpacr"], "2", "certificate authentication");
    assert_eq!(at["roles"], json!(["MCP.Tools.All"]));
}

#[tokio::test]
async fn every_flawed_assertion_is_refused_in_entras_words() {
    let (private, public) = key();
    let idp = idp_with_certificate("cert-bad", &public).await;
    let (stranger, _) = key();
    let cases: Vec<(String, u64)> = vec![
        (assertion(&idp, &stranger, |_| {}), 700027),
        (
            assertion(&idp, &private, |c| {
                c["aud"] = json!("https://elsewhere.example/token")
            }),
            700027,
        ),
        (
            assertion(&idp, &private, |c| c["sub"] = json!(DAEMON)),
            700021,
        ),
        (
            assertion(&idp, &private, |c| {
                c["exp"] = json!(idp.clock.unix_now() - 3_600);
            }),
            700024,
        ),
        ("not-a-jwt".to_owned(), 50027),
    ];
    for (jwt, code) in cases {
        let (status, body) = client_credentials(
            &idp,
            &[
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &jwt),
            ],
        )
        .await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "invalid_client", "{body}");
        assert_eq!(aadsts(&body), code, "{body}");
    }
    let good = assertion(&idp, &private, |_| {});
    let (status, body) = client_credentials(
        &idp,
        &[
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
            ),
            ("client_assertion", &good),
        ],
    )
    .await;
    assert_eq!((status, aadsts(&body)), (401, 50027), "{body}");
    // An app without a registered certificate cannot use one.
    let scope = format!("api://{API}/.default");
    let (status, body) = idp
        .token(&[
            ("client_id", DAEMON),
            ("grant_type", "client_credentials"),
            ("scope", &scope),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &good),
        ])
        .await;
    assert_eq!((status, aadsts(&body)), (401, 700027), "{body}");
}

//! The broker as a confidential client of the real development IdP: sign a
//! user in, redeem the code with each kind of credential, refresh, and
//! exchange the user's token On-Behalf-Of for Graph, then call `/me`.

use mcpgate_broker::upstream::{
    Upstream, UpstreamAuthorization, UpstreamConfig, UpstreamCredential,
};
use mcpgate_client::assertion::ClientKey;
use mcpgate_client::claims::Claims;
use mcpgate_client::oauth::Pkce;
use mcpgate_client::secret::ClientSecret;
use mcpgate_devidp::directory::DEFAULT_API_APP_ID as SERVER_APP;
use mcpgate_devidp::directory::{URL_API_APP_ID, URL_API_IDENTIFIER};
use mcpgate_devidp::{IdpConfig, IdpInfo, IdpOptions, RunningIdp};

const REDIRECT: &str = "http://127.0.0.1:41999/auth/callback";

struct Idp {
    running: RunningIdp,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Idp {
    async fn start(config: IdpConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut options = IdpOptions::new(dir.path());
        options.bind = "127.0.0.1:0".parse().expect("addr");
        options.auto_approve = Some("alice@mcpgate.test".to_owned());
        let running = mcpgate_devidp::start(config, options)
            .await
            .expect("IdP starts");
        let ca = std::fs::read(running.info().ca_file.as_ref().expect("CA")).expect("CA file");
        let http = reqwest::Client::builder()
            .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&ca).expect("PEM"))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Self {
            running,
            http,
            _dir: dir,
        }
    }

    fn info(&self) -> &IdpInfo {
        self.running.info()
    }

    fn server_secret(&self) -> ClientSecret {
        let client = self
            .info()
            .clients
            .iter()
            .find(|c| c.client_id == SERVER_APP)
            .expect("the MCP server app");
        let path = client.secret_file.as_ref().expect("a generated secret");
        ClientSecret::new(std::fs::read_to_string(path).expect("secret").trim())
    }

    async fn upstream(&self, credential: UpstreamCredential) -> Upstream {
        Upstream::discover(
            UpstreamConfig {
                issuer: self.info().issuer.clone(),
                client_id: SERVER_APP.to_owned(),
                credential,
                scopes: vec![format!("api://{SERVER_APP}/mcp:tools")],
                resource: None,
            },
            self.http.clone(),
        )
        .await
        .expect("discovery")
    }

    /// Follows the sign-in as the auto-approving IdP answers it: one
    /// redirect to the callback, with the code and our state.
    async fn sign_in(&self, upstream: &Upstream, pkce: &Pkce) -> String {
        self.sign_in_with(upstream, pkce, None, None).await
    }

    async fn sign_in_with(
        &self,
        upstream: &Upstream,
        pkce: &Pkce,
        claims: Option<&Claims>,
        resource: Option<&str>,
    ) -> String {
        let url = upstream.authorization_url(&UpstreamAuthorization {
            redirect_uri: REDIRECT,
            state: "state-1",
            code_challenge: &pkce.challenge,
            nonce: "nonce-1",
            login_hint: None,
            claims,
        });
        assert_eq!(
            url.query_pairs()
                .find(|(k, _)| k == "claims")
                .map(|(_, v)| v.into_owned()),
            claims.map(|c| c.as_json().to_owned())
        );
        assert_eq!(
            url.query_pairs()
                .find(|(k, _)| k == "resource")
                .map(|(_, v)| v.into_owned())
                .as_deref(),
            resource,
            "Entra refuses RFC 8707 resource next to scopes unless it is their API's identifier URI: {url}"
        );
        let resp = self.http.get(url).send().await.expect("authorize");
        assert!(resp.status().is_redirection(), "{}", resp.status());
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("location");
        let callback = url::Url::parse(location).expect("callback URL");
        assert!(location.starts_with(REDIRECT), "{location}");
        let param = |name: &str| {
            callback
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        assert_eq!(param("state").as_deref(), Some("state-1"));
        param("code").expect("a code")
    }

    fn token_endpoint(&self) -> String {
        format!("{}/oauth2/v2.0/token", self.info().authority)
    }
}

fn claims(jwt: &str) -> serde_json::Value {
    use base64::Engine;
    let part = jwt.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

#[tokio::test]
async fn signs_in_redeems_refreshes_and_calls_graph_on_behalf_of_the_user() {
    let idp = Idp::start(IdpConfig::builtin()).await;
    let upstream = idp
        .upstream(UpstreamCredential::Secret(idp.server_secret()))
        .await;
    assert_eq!(upstream.issuer(), idp.info().issuer);
    let pkce = Pkce::new();
    let code = idp.sign_in(&upstream, &pkce).await;
    let tokens = upstream
        .redeem(&code, REDIRECT, pkce.verifier.secret())
        .await
        .expect("code redeemed");
    let at = claims(tokens.access_token.secret());
    assert_eq!(at["aud"], SERVER_APP, "a token for the broker's own API");
    assert_eq!(at["preferred_username"], "alice@mcpgate.test");
    assert_eq!(at["azpacr"], "1", "a confidential client with a secret");
    let refresh = tokens
        .refresh_token
        .expect("offline_access gives a refresh token");

    let graph = upstream
        .on_behalf_of(
            tokens.access_token.secret(),
            &["https://graph.microsoft.com/User.Read".to_owned()],
        )
        .await
        .expect("On-Behalf-Of");
    let me: serde_json::Value = idp
        .http
        .get(format!("{}/v1.0/me", idp.info().base_url))
        .bearer_auth(graph.access_token.secret())
        .send()
        .await
        .expect("/me")
        .json()
        .await
        .expect("JSON");
    assert_eq!(me["userPrincipalName"], "alice@mcpgate.test", "{me}");

    let refreshed = upstream.refresh(refresh.secret()).await.expect("refreshed");
    let rotated = refreshed.refresh_token.expect("a rotated refresh token");
    assert_ne!(rotated.secret(), refresh.secret(), "rotated");

    // A code is single-use upstream too, and its replay revokes what it
    // bought: the broker's upstream grant ends with it.
    assert!(
        upstream
            .redeem(&code, REDIRECT, pkce.verifier.secret())
            .await
            .is_err()
    );
    assert!(upstream.refresh(rotated.secret()).await.is_err());
}

#[tokio::test]
async fn a_certificate_or_a_federated_assertion_stands_in_for_the_secret() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let dir = tempfile::tempdir().expect("temp dir");
    let public = dir.path().join("server.pem");
    std::fs::write(&public, key.public_key_pem()).expect("public key");
    let mut config = IdpConfig::builtin();
    for app in &mut config.apps {
        if app.client_id == SERVER_APP {
            app.certificates = vec![public.clone()];
        }
    }
    let idp = Idp::start(config).await;
    let client_key =
        ClientKey::from_pem(key.serialize_pem().as_bytes(), None, None).expect("client key");

    let upstream = idp
        .upstream(UpstreamCredential::Certificate(client_key.clone()))
        .await;
    let pkce = Pkce::new();
    let code = idp.sign_in(&upstream, &pkce).await;
    let tokens = upstream
        .redeem(&code, REDIRECT, pkce.verifier.secret())
        .await
        .expect("redeemed with a certificate");
    assert_eq!(claims(tokens.access_token.secret())["azpacr"], "2");

    // Workload identity: the platform writes the assertion to a file and
    // rotates it; the broker reads it for every request.
    let token_file = dir.path().join("federated-token");
    let upstream = idp
        .upstream(UpstreamCredential::FederatedTokenFile(token_file.clone()))
        .await;
    let pkce = Pkce::new();
    let code = idp.sign_in(&upstream, &pkce).await;
    // No file yet: nothing is sent, so the code stays unspent.
    let missing = upstream
        .redeem(&code, REDIRECT, pkce.verifier.secret())
        .await;
    assert!(missing.is_err(), "no file yet");
    std::fs::write(
        &token_file,
        client_key
            .assertion(SERVER_APP, &idp.token_endpoint())
            .expect("assertion"),
    )
    .expect("token file");
    upstream
        .redeem(&code, REDIRECT, pkce.verifier.secret())
        .await
        .expect("redeemed with the federated assertion");
}

#[tokio::test]
async fn an_obo_refused_for_mfa_carries_claims_and_a_sign_in_with_them_meets_it() {
    use mcpgate_devidp::conditional_access::{Requirement, RuleConfig};
    let mut config = IdpConfig::builtin();
    config.conditional_access.push(RuleConfig {
        name: "MFA for Graph for alice".to_owned(),
        id: None,
        users: vec!["alice@mcpgate.test".to_owned()],
        resources: vec!["graph".to_owned()],
        require: Requirement::Mfa,
    });
    let idp = Idp::start(config).await;
    let upstream = idp
        .upstream(UpstreamCredential::Secret(idp.server_secret()))
        .await;
    let graph = ["https://graph.microsoft.com/User.Read".to_owned()];

    let pkce = Pkce::new();
    let code = idp.sign_in(&upstream, &pkce).await;
    let tokens = upstream
        .redeem(&code, REDIRECT, pkce.verifier.secret())
        .await
        .expect("a sign-in for the broker's API needs no MFA");
    let refused = upstream
        .on_behalf_of(tokens.access_token.secret(), &graph)
        .await
        .expect_err("Graph needs MFA");
    let asked = refused.claims_challenge().expect("a claims challenge");
    assert!(asked.as_json().contains("capolids"), "{asked}");

    let pkce = Pkce::new();
    let code = idp.sign_in_with(&upstream, &pkce, Some(&asked), None).await;
    let tokens = upstream
        .redeem(&code, REDIRECT, pkce.verifier.secret())
        .await
        .expect("redeemed");
    let exchanged = upstream
        .on_behalf_of(tokens.access_token.secret(), &graph)
        .await
        .expect("the MFA sign-in meets the policy");
    let amr = claims(exchanged.access_token.secret())["amr"].clone();
    assert!(
        amr.as_array().is_some_and(|a| a.iter().any(|m| m == "mfa")),
        "{amr}"
    );
}

#[tokio::test]
async fn an_api_named_by_the_server_url_gets_it_as_resource_upstream() {
    // The built-in API registered as Microsoft's guide for MCP servers
    // does (Application ID URI = the server's URL), as the broker's own
    // confidential client.
    let mut config = IdpConfig::builtin();
    let app = config
        .apps
        .iter_mut()
        .find(|a| a.client_id == URL_API_APP_ID)
        .expect("the URL-named API");
    app.redirect_uris = vec!["http://127.0.0.1/auth/callback".to_owned()];
    app.granted = [(URL_API_APP_ID.to_owned(), vec!["mcp:tools".to_owned()])].into();
    let idp = Idp::start(config).await;
    let secret = {
        let client = idp
            .info()
            .clients
            .iter()
            .find(|c| c.client_id == URL_API_APP_ID)
            .expect("listed");
        let path = client.secret_file.as_ref().expect("a generated secret");
        ClientSecret::new(std::fs::read_to_string(path).expect("secret").trim())
    };
    let upstream = Upstream::discover(
        UpstreamConfig {
            issuer: idp.info().issuer.clone(),
            client_id: URL_API_APP_ID.to_owned(),
            credential: UpstreamCredential::Secret(secret),
            scopes: vec![format!("{URL_API_IDENTIFIER}/mcp:tools")],
            resource: Some(URL_API_IDENTIFIER.to_owned()),
        },
        idp.http.clone(),
    )
    .await
    .expect("discovery");
    let pkce = Pkce::new();
    let code = idp
        .sign_in_with(&upstream, &pkce, None, Some(URL_API_IDENTIFIER))
        .await;
    let tokens = upstream
        .redeem(&code, REDIRECT, pkce.verifier.secret())
        .await
        .expect("the code redeemed with resource");
    let at = claims(tokens.access_token.secret());
    assert_eq!(at["aud"], URL_API_APP_ID, "v2.0: the API's app id");
    assert_eq!(at["scp"], "mcp:tools");
    let refresh = tokens.refresh_token.expect("a refresh token");
    upstream
        .refresh(refresh.secret())
        .await
        .expect("refreshed with resource");
}

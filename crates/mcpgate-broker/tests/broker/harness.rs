//! The broker served on 127.0.0.1:0 in front of the real development IdP
//! (alice auto-approved there), and a test MCP client that drives it over
//! HTTP with no redirects followed.

use std::net::SocketAddr;
use std::sync::Arc;

use mcpgate_broker::cimd::{CimdFetcher, CimdOptions};
use mcpgate_broker::consent_cookie::ConsentKey;
use mcpgate_broker::metadata::Issuer;
use mcpgate_broker::upstream::{Upstream, UpstreamConfig, UpstreamCredential};
use mcpgate_broker::{Broker, BrokerConfig};
use mcpgate_client::oauth::Pkce;
use mcpgate_client::secret::ClientSecret;
use mcpgate_devidp::directory::DEFAULT_API_APP_ID as SERVER_APP;
use mcpgate_devidp::{IdpConfig, IdpOptions, RunningIdp};
use mcpgate_keys::KeyRing;
use mcpgate_store::{KeyBytes, Store, TokenCipher};
use serde_json::{Value, json};

pub const RESOURCE: &str = "http://127.0.0.1:9/mcp";
pub const CLIENT_REDIRECT: &str = "http://127.0.0.1/callback";
pub const ALICE: &str = "alice@mcpgate.test";

pub struct Harness {
    pub broker: Arc<Broker>,
    pub issuer: String,
    pub store: Arc<dyn Store>,
    /// Trusts the IdP's CA; follows no redirects.
    pub http: reqwest::Client,
    pub idp: RunningIdp,
    /// Seconds the broker's clock runs ahead of the system's.
    pub clock_ahead: Arc<std::sync::atomic::AtomicU64>,
    /// The sealing key the broker was given, for tests that look inside.
    pub seal_key: [u8; 32],
    _dirs: Vec<tempfile::TempDir>,
}

pub struct Setup {
    pub store_url: String,
    pub store_options: mcpgate_store::Options,
    /// The broker's own auto-approve (the IdP always auto-approves alice).
    pub auto_approve: bool,
    pub pre_authorized: Vec<String>,
    pub register_rate_limit: u64,
    /// A path under which the broker's issuer lives ("" or `/gate`).
    pub issuer_path: &'static str,
    /// Where the broker records its audit events.
    pub audit: Option<Arc<dyn mcpgate_audit::AuditSink>>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            store_url: "memory:".to_owned(),
            store_options: mcpgate_store::Options::default(),
            auto_approve: true,
            pre_authorized: Vec::new(),
            register_rate_limit: 20,
            issuer_path: "",
            audit: None,
        }
    }
}

impl Harness {
    pub async fn start(setup: Setup) -> Self {
        let idp_dir = tempfile::tempdir().expect("temp dir");
        let mut options = IdpOptions::new(idp_dir.path());
        options.bind = "127.0.0.1:0".parse().expect("addr");
        options.auto_approve = Some(ALICE.to_owned());
        let idp = mcpgate_devidp::start(IdpConfig::builtin(), options)
            .await
            .expect("IdP starts");
        let ca = std::fs::read(idp.info().ca_file.as_ref().expect("CA")).expect("CA file");
        let http = reqwest::Client::builder()
            .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&ca).expect("PEM"))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let secret_file = idp
            .info()
            .clients
            .iter()
            .find(|c| c.client_id == SERVER_APP)
            .and_then(|c| c.secret_file.clone())
            .expect("the MCP server app's secret");
        let secret = std::fs::read_to_string(secret_file).expect("secret");
        let upstream = Upstream::discover(
            UpstreamConfig {
                issuer: idp.info().issuer.clone(),
                client_id: SERVER_APP.to_owned(),
                credential: UpstreamCredential::Secret(ClientSecret::new(secret.trim())),
                scopes: vec![format!("api://{SERVER_APP}/mcp:tools")],
                resource: None,
            },
            http.clone(),
        )
        .await
        .expect("upstream discovery");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let issuer = format!("http://{addr}{}", setup.issuer_path);
        let mut config = BrokerConfig::new(Issuer::new(&issuer).expect("issuer"), RESOURCE);
        config.dev_auto_approve = setup.auto_approve.then(|| ALICE.to_owned());
        config.pre_authorized_clients = setup.pre_authorized;
        config.register_rate_limit = setup.register_rate_limit;
        config.cimd = CimdOptions::development();
        config.audit = setup.audit;
        let clock_ahead = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let ahead = clock_ahead.clone();
        config.clock = mcpgate_store::Clock::from_fn(move || {
            std::time::SystemTime::now()
                + std::time::Duration::from_secs(ahead.load(std::sync::atomic::Ordering::SeqCst))
        });
        let store = mcpgate_store::open(&setup.store_url, setup.store_options)
            .await
            .expect("store");
        let keys_dir = tempfile::tempdir().expect("temp dir");
        let keys = KeyRing::open(keys_dir.path()).expect("keys");
        let (consent_key, _) = ConsentKey::generate().expect("consent key");
        let seal_key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0x5a);
        let cipher = TokenCipher::new(&KeyBytes::new(seal_key)).expect("cipher");
        let cimd = CimdFetcher::new(config.cimd.clone(), reqwest::Client::builder).expect("cimd");
        let broker = Broker::new(
            config,
            store.clone(),
            upstream,
            keys,
            consent_key,
            cipher,
            cimd,
        )
        .expect("broker");
        let app = mcpgate_broker::router(broker.clone());
        tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });
        Self {
            broker,
            issuer,
            store,
            http,
            idp,
            clock_ahead,
            seal_key,
            _dirs: vec![idp_dir, keys_dir],
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// Registers a public client with `redirect_uris`.
    pub async fn register(&self, body: Value) -> Value {
        let resp = self
            .http
            .post(self.url("/register"))
            .json(&body)
            .send()
            .await
            .expect("register");
        assert_eq!(resp.status(), 201, "registration");
        resp.json().await.expect("JSON")
    }

    pub async fn register_public(&self) -> String {
        let v = self
            .register(json!({
                "redirect_uris": [CLIENT_REDIRECT],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "client_name": "Test Client",
            }))
            .await;
        v["client_id"].as_str().expect("client_id").to_owned()
    }

    /// `/authorize` for `client_id`; returns the response.
    pub async fn authorize(&self, query: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .get(self.url("/authorize"))
            .query(query)
            .send()
            .await
            .expect("authorize")
    }

    /// The standard authorization request.
    pub fn request<'a>(
        client_id: &'a str,
        pkce: &'a Pkce,
        state: &'a str,
    ) -> Vec<(&'static str, &'a str)> {
        vec![
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", "http://127.0.0.1:53682/callback"),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
            ("scope", "mcp:tools offline_access"),
            ("state", state),
            ("resource", RESOURCE),
        ]
    }

    /// From `/authorize` through the IdP to the broker's callback; returns
    /// the callback's response (a redirect to the client, or the consent
    /// page).
    pub async fn sign_in(&self, query: &[(&str, &str)], cookie: Option<&str>) -> reqwest::Response {
        let resp = self.authorize(query).await;
        assert_eq!(resp.status(), 302, "authorize redirects upstream");
        let upstream = location(&resp);
        assert!(
            upstream.starts_with(&self.idp.info().authority),
            "to the IdP: {upstream}"
        );
        let resp = self.http.get(&upstream).send().await.expect("IdP");
        assert_eq!(resp.status(), 302, "the IdP auto-approves");
        let callback = location(&resp);
        assert!(
            callback.starts_with(&self.url("/auth/callback")),
            "{callback}"
        );
        let mut req = self.http.get(&callback);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send().await.expect("callback")
    }

    /// The whole sign-in with auto-approve: the code for the client.
    pub async fn code(&self, client_id: &str, pkce: &Pkce) -> String {
        let resp = self
            .sign_in(&Self::request(client_id, pkce, "s-1"), None)
            .await;
        assert_eq!(resp.status(), 302, "straight back to the client");
        let to = location(&resp);
        assert!(to.starts_with("http://127.0.0.1:53682/callback?"), "{to}");
        assert_eq!(param(&to, "state").as_deref(), Some("s-1"));
        assert_eq!(param(&to, "iss").as_deref(), Some(self.issuer.as_str()));
        param(&to, "code").expect("code")
    }

    pub async fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url("/token"))
            .form(form)
            .send()
            .await
            .expect("token");
        let status = resp.status().as_u16();
        assert_eq!(
            resp.headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
            Some("no-store")
        );
        (status, resp.json().await.expect("JSON"))
    }

    pub async fn redeem(&self, client_id: &str, code: &str, verifier: &str) -> (u16, Value) {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", "http://127.0.0.1:53682/callback"),
        ])
        .await
    }

    pub async fn refresh(&self, client_id: &str, refresh: &str) -> (u16, Value) {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("refresh_token", refresh),
        ])
        .await
    }
}

/// A hidden form field's value in the consent page.
pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("field") + marker.len();
    let end = html[start..].find('"').expect("end of value");
    html[start..start + end].to_owned()
}

/// The `name=value` of the response's cookie whose name starts with `prefix`.
pub fn set_cookie(resp: &reqwest::Response, prefix: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(prefix))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
}

pub fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("a Location header")
        .to_owned()
}

pub fn param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

pub fn claims(jwt: &str) -> Value {
    use base64::Engine;
    let part = jwt.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

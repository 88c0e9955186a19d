//! A real IdP on loopback (TLS with its generated CA, a manual clock) and
//! an HTTP client that trusts it and does not follow redirects.

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcpgate_devidp::directory::{
    DEFAULT_API_APP_ID, DEFAULT_DAEMON_CLIENT_ID, DEFAULT_DESKTOP_CLIENT_ID, IdpConfig,
};
use mcpgate_devidp::store::{self, Store};
use mcpgate_devidp::{IdpInfo, IdpOptions, RunningIdp};
use mcpgate_token::clock::ManualClock;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const API: &str = DEFAULT_API_APP_ID;
pub const DESKTOP: &str = DEFAULT_DESKTOP_CLIENT_ID;
pub const DAEMON: &str = DEFAULT_DAEMON_CLIENT_ID;
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXkdBjftJeZ4CVP";

pub fn api_scope() -> String {
    format!("api://{API}/mcp:tools")
}

pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The payload of a JWT, unverified (the tests check shapes; signatures
/// are checked by the validator tests).
pub fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

pub struct Idp {
    // Held so that the IdP lives as long as the test.
    pub _running: RunningIdp,
    pub info: IdpInfo,
    pub clock: ManualClock,
    pub http: reqwest::Client,
    pub data_dir: PathBuf,
    // Removes the data directory when the test ends, unless the test
    // keeps it for a restart.
    _cleanup: Option<RemoveOnDrop>,
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "mcpgate-devidp-test-{name}-{}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

impl Idp {
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, IdpConfig::builtin(), None).await
    }

    pub async fn auto(name: &str) -> Self {
        Self::start_with(name, IdpConfig::builtin(), Some("alice@mcpgate.test")).await
    }

    pub async fn start_with(name: &str, config: IdpConfig, auto: Option<&str>) -> Self {
        Self::start_opts(name, config, |o| o.auto_approve = auto.map(str::to_owned)).await
    }

    /// Starts with options the test adjusts (bind, limits…).
    pub async fn start_opts(
        name: &str,
        config: IdpConfig,
        adjust: impl FnOnce(&mut IdpOptions),
    ) -> Self {
        let data_dir = temp_dir(name);
        let mut idp = Self::start_in(&data_dir, ManualClock::starting_now(), config, adjust).await;
        idp._cleanup = Some(RemoveOnDrop(data_dir));
        idp
    }

    /// Auto-approving, with its grants in SQLite in its data directory.
    pub async fn auto_sqlite(name: &str) -> Self {
        let data_dir = temp_dir(name);
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let clock = ManualClock::starting_now();
        let store = sqlite_store(&data_dir.join("grants.db"), &clock).await;
        let mut idp = Self::start_in(&data_dir, clock, IdpConfig::builtin(), |o| {
            o.auto_approve = Some("alice@mcpgate.test".to_owned());
            o.store = Some(store);
        })
        .await;
        idp._cleanup = Some(RemoveOnDrop(data_dir));
        idp
    }

    /// Starts on a data directory the caller owns (and removes), with the
    /// caller's clock: for restarts.
    pub async fn start_in(
        data_dir: &std::path::Path,
        clock: ManualClock,
        config: IdpConfig,
        adjust: impl FnOnce(&mut IdpOptions),
    ) -> Self {
        let data_dir = data_dir.to_owned();
        let mut options = IdpOptions::new(&data_dir);
        options.clock = Arc::new(clock.clone());
        adjust(&mut options);
        let running = mcpgate_devidp::start(config, options)
            .await
            .expect("IdP starts");
        let info = running.info().clone();
        let ca = std::fs::read(info.ca_file.as_ref().expect("generated CA")).expect("CA file");
        let http = reqwest::Client::builder()
            .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&ca).expect("PEM"))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Self {
            _running: running,
            info,
            clock,
            http,
            data_dir,
            _cleanup: None,
        }
    }

    /// Stops the IdP as `mcpgate` does on a signal.
    pub async fn shutdown(self) {
        self._running.shutdown().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.info.authority)
    }

    pub fn secret(&self, client_id: &str) -> String {
        let c = self
            .info
            .clients
            .iter()
            .find(|c| c.client_id == client_id)
            .expect("client");
        std::fs::read_to_string(c.secret_file.as_ref().expect("secret file"))
            .expect("secret")
            .trim()
            .to_owned()
    }

    /// POSTs a form to the token endpoint: status and JSON.
    pub async fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        self.post_json("/oauth2/v2.0/token", form).await
    }

    pub async fn post_json(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("JSON body"))
    }

    /// An authorize request; returns the response.
    pub async fn authorize(
        &self,
        params: &[(&str, &str)],
        cookie: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .get(self.url("/oauth2/v2.0/authorize"))
            .query(params);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send().await.expect("authorize")
    }

    /// The standard desktop authorize parameters with PKCE.
    pub fn desktop_params(&self, scope: &str, redirect: &str) -> Vec<(String, String)> {
        vec![
            ("client_id".into(), DESKTOP.into()),
            ("response_type".into(), "code".into()),
            ("redirect_uri".into(), redirect.into()),
            ("scope".into(), scope.into()),
            ("state".into(), "st-1".into()),
            ("nonce".into(), "n-1".into()),
            ("code_challenge".into(), challenge(VERIFIER)),
            ("code_challenge_method".into(), "S256".into()),
        ]
    }

    /// Runs an auto-approved authorize and returns the code.
    pub async fn code(&self, scope: &str, redirect: &str) -> String {
        let params = self.desktop_params(scope, redirect);
        let params: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let resp = self.authorize(&params, None).await;
        assert_eq!(resp.status(), 302, "{:?}", resp.text().await);
        let location = location(&resp);
        let q = query_of(&location);
        assert_eq!(q.get("state").map(String::as_str), Some("st-1"));
        q.get("code").cloned().expect("code in redirect")
    }

    /// Redeems a code for the desktop client.
    pub async fn redeem(&self, code: &str, redirect: &str, verifier: &str) -> (u16, Value) {
        self.token(&[
            ("client_id", DESKTOP),
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("code_verifier", verifier),
        ])
        .await
    }
}

/// A SQLite store at `path` that reads the test's clock.
pub async fn sqlite_store(path: &std::path::Path, clock: &ManualClock) -> Arc<dyn Store> {
    let options = store::Options {
        clock: mcpgate_devidp::store_clock(Arc::new(clock.clone())),
        ..store::Options::default()
    };
    store::open(&format!("sqlite:{}", path.display()), options)
        .await
        .expect("SQLite store")
}

pub fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("location")
        .expect("a Location header")
        .to_str()
        .expect("ASCII")
        .to_owned()
}

pub fn query_of(url: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(url)
        .expect("URL")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `error_codes[0]` of an Entra error body.
pub fn aadsts(body: &Value) -> u64 {
    body["error_codes"][0].as_u64().unwrap_or(0)
}

/// The hidden input `name` in an HTML page.
pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("hidden input") + marker.len();
    let end = html[start..].find('"').expect("closing quote") + start;
    html[start..end].to_owned()
}

/// `name=value` of a Set-Cookie header.
pub fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
}

/// `name=value` of the flow's CSRF cookie (one per flow, named for it).
pub fn csrf_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|v| {
            v.starts_with("mcpgate_idp_csrf_")
                && v.split_once('=').is_some_and(|(_, x)| !x.is_empty())
        })
        .map(str::to_owned)
}

/// A public client that is not pre-authorized: it needs consent.
pub const OTHER: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

/// The built-in directory plus [`OTHER`], which has no consent yet.
pub fn with_unconsented_client() -> mcpgate_devidp::IdpConfig {
    let mut config = mcpgate_devidp::IdpConfig::builtin();
    config.apps.push(mcpgate_devidp::directory::AppConfig {
        public_client: true,
        redirect_uris: vec!["http://127.0.0.1/callback".into()],
        ..mcpgate_devidp::directory::AppConfig::new(OTHER, "Third-party tool")
    });
    config
}

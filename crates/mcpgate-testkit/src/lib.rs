//! Test support for mcpgate: an in-process OpenID issuer on loopback that
//! serves discovery and a JWKS and signs real RS256 tokens, with knobs for
//! key rotation and outages. Test-only: its keys are public.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub use jsonwebtoken;

/// The tenant id the test issuer signs for.
pub const TENANT: &str = "11111111-2222-4333-8444-555555555555";
/// The API the default claims are for.
pub const API_APP_ID: &str = "99999999-8888-4777-8666-555555555555";
/// The client application in the default claims.
pub const CLIENT_APP_ID: &str = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";

const KEYS: [(&str, &str, &str); 3] = [
    (
        "key-a",
        include_str!("../keys/key-a.pem"),
        include_str!("../keys/key-a.pub.pem"),
    ),
    (
        "key-b",
        include_str!("../keys/key-b.pem"),
        include_str!("../keys/key-b.pub.pem"),
    ),
    (
        "key-c",
        include_str!("../keys/key-c.pem"),
        include_str!("../keys/key-c.pub.pem"),
    ),
];

struct Shared {
    published: Mutex<Vec<&'static str>>,
    cache_control: Mutex<String>,
    down: AtomicBool,
    // While true, JWKS requests hang (a black-holed issuer, not a refusing one).
    stalled: tokio::sync::watch::Sender<bool>,
    jwks_fetches: AtomicUsize,
    base: String,
}

/// A running test issuer. Dropping it stops it.
pub struct TestIssuer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestIssuer {
    /// Starts on 127.0.0.1 on a free port, publishing `key-a`.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            published: Mutex::new(vec!["key-a"]),
            cache_control: Mutex::new("public, max-age=3600".into()),
            down: AtomicBool::new(false),
            stalled: tokio::sync::watch::Sender::new(false),
            jwks_fetches: AtomicUsize::new(0),
            base: format!("http://{addr}"),
        });
        let app = Router::new()
            .route(
                "/{tenant}/v2.0/.well-known/openid-configuration",
                get(discovery),
            )
            .route("/discovery/v2.0/keys", get(jwks))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            shared,
            addr,
            server,
        }
    }

    /// The issuer of its tokens: `http://127.0.0.1:PORT/{TENANT}/v2.0`.
    pub fn issuer(&self) -> String {
        self.issuer_for(TENANT)
    }

    /// The issuer string for another tenant.
    pub fn issuer_for(&self, tenant: &str) -> String {
        format!("{}/{tenant}/v2.0", self.shared.base)
    }

    /// The multi-tenant issuer template.
    pub fn issuer_template(&self) -> String {
        self.issuer_for("{tenantid}")
    }

    /// The JWKS URL.
    pub fn jwks_uri(&self) -> String {
        format!("{}/discovery/v2.0/keys", self.shared.base)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Publishes a key (`key-a`, `key-b` or `key-c`) in the JWKS.
    pub fn publish(&self, kid: &'static str) {
        let mut keys = lock(&self.shared.published);
        if !keys.contains(&kid) {
            keys.push(kid);
        }
    }

    /// Removes a key from the JWKS.
    pub fn unpublish(&self, kid: &str) {
        lock(&self.shared.published).retain(|k| *k != kid);
    }

    /// The `Cache-Control` header of the JWKS response.
    pub fn set_cache_control(&self, value: &str) {
        *lock(&self.shared.cache_control) = value.to_owned();
    }

    /// An outage: every request fails with 503 until `recover`.
    pub fn go_down(&self) {
        self.shared.down.store(true, Ordering::SeqCst);
    }

    /// A hung issuer: JWKS requests get no answer until `recover`.
    pub fn stall(&self) {
        self.shared.stalled.send_replace(true);
    }

    /// Ends an outage or a stall.
    pub fn recover(&self) {
        self.shared.down.store(false, Ordering::SeqCst);
        self.shared.stalled.send_replace(false);
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Claims of a valid delegated token for [`API_APP_ID`] with scope
    /// `mcp:tools`, issued at `now` (Unix seconds) for an hour.
    pub fn claims(&self, now: u64) -> Value {
        json!({
            "iss": self.issuer(),
            "aud": API_APP_ID,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "ver": "2.0",
            "tid": TENANT,
            "oid": "00000000-0000-4000-8000-00000000a11c",
            "sub": "pairwise-alice",
            "name": "Alice Test",
            "preferred_username": "alice@test.example",
            "azp": CLIENT_APP_ID,
            "azpacr": "0",
            "scp": "mcp:tools",
        })
    }

    /// Signs `claims` with key `kid` (RS256, `kid` in the header).
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &encoding_key(kid)).expect("sign")
    }

    /// Signs with an explicit header, for forged-header cases.
    pub fn sign_with_header(&self, header: &Header, kid: &str, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &encoding_key(kid)).expect("sign")
    }

    /// The classic key-confusion forgery: HS256 with the issuer's public
    /// key as the HMAC secret.
    pub fn forge_hs256_with_public_key(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.to_owned());
        let secret = public_pem(kid);
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign")
    }

    /// An unsigned token (`alg: none`).
    pub fn unsigned(&self, kid: &str, claims: &Value) -> String {
        let header = json!({"alg": "none", "typ": "JWT", "kid": kid});
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }
}

/// Seconds since the epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn encoding_key(kid: &str) -> EncodingKey {
    let pem = KEYS
        .iter()
        .find(|(k, _, _)| *k == kid)
        .map(|(_, private, _)| *private)
        .unwrap_or(KEYS[0].1);
    EncodingKey::from_rsa_pem(pem.as_bytes()).expect("test key parses")
}

fn public_pem(kid: &str) -> &'static str {
    KEYS.iter()
        .find(|(k, _, _)| *k == kid)
        .map(|(_, _, public)| *public)
        .unwrap_or(KEYS[0].2)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "down for the test").into_response()
}

async fn discovery(State(s): State<Arc<Shared>>, Path(tenant): Path<String>) -> Response {
    if s.down.load(Ordering::SeqCst) {
        return unavailable();
    }
    let issuer_tenant = if tenant == "organizations" || tenant == "common" {
        "{tenantid}".to_owned()
    } else {
        tenant
    };
    axum::Json(json!({
        "issuer": format!("{}/{issuer_tenant}/v2.0", s.base),
        "jwks_uri": format!("{}/discovery/v2.0/keys", s.base),
        "authorization_endpoint": format!("{}/{issuer_tenant}/oauth2/v2.0/authorize", s.base),
        "token_endpoint": format!("{}/{issuer_tenant}/oauth2/v2.0/token", s.base),
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
    .into_response()
}

async fn jwks(State(s): State<Arc<Shared>>) -> Response {
    let mut stalled = s.stalled.subscribe();
    let _ = stalled.wait_for(|stalled| !*stalled).await;
    if s.down.load(Ordering::SeqCst) {
        return unavailable();
    }
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let published = lock(&s.published).clone();
    let keys: Vec<Value> = published
        .iter()
        .map(|kid| {
            let mut jwk =
                Jwk::from_encoding_key(&encoding_key(kid), Algorithm::RS256).expect("jwk");
            jwk.common.key_id = Some((*kid).to_owned());
            let mut v = serde_json::to_value(jwk).expect("jwk json");
            if let Some(o) = v.as_object_mut() {
                o.insert("use".into(), "sig".into());
            }
            v
        })
        .collect();
    let cache_control = lock(&s.cache_control).clone();
    let mut resp = axum::Json(json!({ "keys": keys })).into_response();
    if let Ok(v) = HeaderValue::from_str(&cache_control) {
        resp.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    resp
}

/// Claims as a map, for tests that edit one claim.
pub fn with(mut claims: Value, edits: &[(&str, Value)]) -> Value {
    if let Some(o) = claims.as_object_mut() {
        for (k, v) in edits {
            if v.is_null() {
                o.remove(*k);
            } else {
                o.insert((*k).to_owned(), v.clone());
            }
        }
    }
    claims
}

//! The issuer's signing keys: discovery, fetching and caching.
//!
//! Hand-written because no maintained crate combines what a resource server
//! needs here: a lifetime from `Cache-Control` clamped to sane bounds, a
//! single-flight, rate-limited refresh when an unknown `kid` appears, and
//! serving the keys it has while the IdP is unreachable.
//!
//! A request never waits on the network for a key the cache holds: once a
//! key set is past its lifetime it keeps serving while one background task
//! revalidates it (stale-while-revalidate). Only a `kid` the cache has
//! never seen, or an empty cache, waits for a fetch.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use thiserror::Error;

use crate::clock::SharedClock;

/// How keys are fetched and kept. Every field states its default.
#[derive(Debug, Clone)]
pub struct JwksOptions {
    /// Shortest lifetime of a fetched key set, whatever `Cache-Control`
    /// says. Default: 5 minutes.
    pub min_ttl: Duration,
    /// Longest lifetime. Default: 24 hours.
    pub max_ttl: Duration,
    /// Lifetime when the response has no `max-age`. Default: 1 hour.
    pub default_ttl: Duration,
    /// Least time between two fetches, so that tokens with made-up `kid`s
    /// cannot make us hammer the IdP. Default: 30 s.
    pub min_refresh_interval: Duration,
    /// Largest key-set or discovery document accepted. Default: 256 KiB.
    pub max_body_bytes: usize,
}

impl Default for JwksOptions {
    fn default() -> Self {
        Self {
            min_ttl: Duration::from_secs(300),
            max_ttl: Duration::from_secs(86_400),
            default_ttl: Duration::from_secs(3_600),
            min_refresh_interval: Duration::from_secs(30),
            max_body_bytes: 256 * 1024,
        }
    }
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
pub enum KeysFrom {
    /// The `jwks_uri` of the OpenID configuration at this URL, whose `issuer`
    /// must equal `expected_issuer`.
    Discovery {
        /// The `.well-known/openid-configuration` URL.
        url: String,
        /// The issuer the document must name.
        expected_issuer: String,
    },
    /// A JWKS URL given outright.
    Jwks(String),
}

/// Fetching keys failed. Messages name the URL and the cause, never a token.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// Transport failure or timeout.
    #[error("could not reach {url}: {cause}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What failed.
        cause: String,
    },
    /// A non-success status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The body is not what it should be; the start of the raw body is kept
    /// because that is what a person debugging an IdP needs.
    #[error("{url} returned an unusable document: {cause}; body starts: {body_start:?}")]
    BadDocument {
        /// The URL.
        url: String,
        /// What is wrong.
        cause: String,
        /// Up to 200 characters of the body.
        body_start: String,
    },
    /// The discovery document names another issuer.
    #[error("the discovery document at {url} names issuer {found:?}, expected {expected:?}")]
    IssuerMismatch {
        /// The URL.
        url: String,
        /// What it says.
        found: String,
        /// What was configured.
        expected: String,
    },
    /// A refresh was skipped because the last attempt was too recent.
    #[error("the keys were fetched less than the minimum refresh interval ago")]
    RateLimited,
}

/// One usable verification key.
#[derive(Clone)]
pub struct VerifyingKey {
    /// Its `kid`, empty when the JWK has none.
    pub kid: String,
    /// The algorithm the JWK pins, if it does.
    pub alg: Option<Algorithm>,
    pub(crate) key: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct KeySet {
    keys: HashMap<String, Arc<VerifyingKey>>,
    expires_at: SystemTime,
}

#[derive(Debug, Default)]
struct RefreshState {
    jwks_uri: Option<String>,
    last_attempt: Option<SystemTime>,
}

/// The cached key set of one issuer.
#[derive(Debug)]
pub struct JwksCache {
    source: KeysFrom,
    http: reqwest::Client,
    clock: SharedClock,
    options: JwksOptions,
    allowed: Vec<Algorithm>,
    current: RwLock<Option<Arc<KeySet>>>,
    // Held across the fetch: this is what makes refreshes single-flight.
    refresh: tokio::sync::Mutex<RefreshState>,
    generation: AtomicU64,
    // When (Unix ms) a stale set may next start a background refresh: one
    // atomic load keeps requests during an outage from spawning tasks.
    next_background_ms: AtomicU64,
    background: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl JwksCache {
    /// A cache that fetches on first use. Keys whose JWK pins an algorithm
    /// outside `allowed`, and symmetric keys, are never loaded.
    pub fn new(
        source: KeysFrom,
        http: reqwest::Client,
        clock: SharedClock,
        options: JwksOptions,
        allowed: Vec<Algorithm>,
    ) -> Self {
        Self {
            source,
            http,
            clock,
            options,
            allowed,
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
            generation: AtomicU64::new(0),
            next_background_ms: AtomicU64::new(0),
            background: Mutex::new(None),
        }
    }

    /// Where the keys come from.
    pub fn source(&self) -> &KeysFrom {
        &self.source
    }

    /// The issuer these keys are for, else their URL: for metrics and
    /// readiness.
    pub fn label(&self) -> &str {
        match &self.source {
            KeysFrom::Discovery {
                expected_issuer, ..
            } => expected_issuer,
            KeysFrom::Jwks(url) => url,
        }
    }

    /// The number of keys held, fetching them first if none are (at most
    /// once per refresh interval); for readiness checks.
    pub async fn ensure_loaded(&self) -> Result<usize, FetchError> {
        if let Some(set) = self.snapshot()
            && !set.keys.is_empty()
        {
            return Ok(set.keys.len());
        }
        self.refresh_at_most_every_interval().await?;
        Ok(self.snapshot().map_or(0, |s| s.keys.len()))
    }

    /// The key for `kid`. A held key is returned at once, even from a set
    /// past its lifetime (which then revalidates in the background); an
    /// unknown `kid` or an empty cache waits for one refresh, unless one ran
    /// too recently.
    pub async fn key(
        self: &Arc<Self>,
        kid: Option<&str>,
    ) -> Result<Arc<VerifyingKey>, KeyLookupError> {
        if let Some(set) = self.snapshot()
            && let Some(key) = lookup(&set, kid)
        {
            self.revalidate_if_stale(&set);
            return Ok(key);
        }
        // A failed refresh keeps the keys we have.
        let refreshed = self.refresh_at_most_every_interval().await;
        match (self.snapshot(), refreshed) {
            (Some(set), _) => lookup(&set, kid).ok_or(KeyLookupError::UnknownKey),
            (None, Err(e)) => Err(KeyLookupError::Unavailable(e)),
            (None, Ok(())) => Err(KeyLookupError::UnknownKey),
        }
    }

    /// Whether `kid` is still in the key set held; a cached verification of
    /// a token signed by a key since removed must not outlive the key. A
    /// stale set still answers (and revalidates in the background): during
    /// an issuer outage, verified tokens stay verified.
    pub fn still_published(self: &Arc<Self>, kid: &str) -> bool {
        self.snapshot().is_some_and(|set| {
            self.revalidate_if_stale(&set);
            set.keys.contains_key(kid)
        })
    }

    /// Waits for the background refresh in flight, if any; for tests and
    /// tools that want to see its outcome.
    pub async fn settled(&self) {
        let pending = lock(&self.background).take();
        if let Some(task) = pending {
            let _ = task.await;
        }
    }

    /// Starts one background refresh when `set` is past its lifetime, no
    /// refresh is in flight, and the last began at least the minimum
    /// refresh interval ago.
    fn revalidate_if_stale(self: &Arc<Self>, set: &KeySet) {
        let now = self.clock.now();
        if set.expires_at > now {
            return;
        }
        let now_ms = unix_ms(now);
        if now_ms < self.next_background_ms.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut pending = lock(&self.background);
        if pending.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let interval_ms =
            u64::try_from(self.options.min_refresh_interval.as_millis()).unwrap_or(u64::MAX);
        self.next_background_ms
            .store(now_ms.saturating_add(interval_ms), Ordering::Release);
        let this = Arc::clone(self);
        *pending = Some(runtime.spawn(async move {
            let _ = this.refresh_at_most_every_interval().await;
        }));
    }

    /// Fetches now, whatever the rate limit says; for `mcpgate check`.
    pub async fn refresh_now(&self) -> Result<usize, FetchError> {
        let mut state = self.refresh.lock().await;
        self.fetch_into(&mut state).await?;
        Ok(self.snapshot().map_or(0, |s| s.keys.len()))
    }

    /// The kids currently held.
    pub fn kids(&self) -> Vec<String> {
        self.snapshot()
            .map(|s| s.keys.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn snapshot(&self) -> Option<Arc<KeySet>> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    async fn refresh_at_most_every_interval(&self) -> Result<(), FetchError> {
        let seen = self.generation.load(Ordering::Acquire);
        let mut state = self.refresh.lock().await;
        // Someone else's fetch finished while we waited: use its keys.
        if self.generation.load(Ordering::Acquire) != seen {
            return Ok(());
        }
        let now = self.clock.now();
        if let Some(last) = state.last_attempt
            && now
                .duration_since(last)
                .is_ok_and(|since| since < self.options.min_refresh_interval)
        {
            return Err(FetchError::RateLimited);
        }
        self.fetch_into(&mut state).await
    }

    async fn fetch_into(&self, state: &mut RefreshState) -> Result<(), FetchError> {
        state.last_attempt = Some(self.clock.now());
        let result = self.fetch(state).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!(
            "mcpgate_jwks_fetches_total",
            "issuer" => self.label().to_owned(),
            "outcome" => outcome
        )
        .increment(1);
        match &result {
            Ok(set) => {
                tracing::debug!(keys = set.keys.len(), "fetched signing keys");
                let mut guard = match self.current.write() {
                    Ok(g) => g,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *guard = Some(set.clone());
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not refresh signing keys; keeping the ones held")
            }
        }
        result.map(|_| ())
    }

    async fn fetch(&self, state: &mut RefreshState) -> Result<Arc<KeySet>, FetchError> {
        let jwks_uri = match (&self.source, &state.jwks_uri) {
            (KeysFrom::Jwks(url), _) => url.clone(),
            (KeysFrom::Discovery { .. }, Some(known)) => known.clone(),
            (
                KeysFrom::Discovery {
                    url,
                    expected_issuer,
                },
                None,
            ) => {
                let found = self.discover(url, expected_issuer).await?;
                state.jwks_uri = Some(found.clone());
                found
            }
        };
        let (body, max_age) = self.get(&jwks_uri).await?;
        let keys =
            parse_jwks(&body, &self.allowed).map_err(|cause| bad_doc(&jwks_uri, cause, &body))?;
        let ttl = max_age.unwrap_or(self.options.default_ttl).clamp(
            self.options.min_ttl,
            self.options.max_ttl.max(self.options.min_ttl),
        );
        Ok(Arc::new(KeySet {
            keys,
            expires_at: self.clock.now() + ttl,
        }))
    }

    async fn discover(&self, url: &str, expected_issuer: &str) -> Result<String, FetchError> {
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let (body, _) = self.get(url).await?;
        let doc: Discovery =
            serde_json::from_slice(&body).map_err(|e| bad_doc(url, e.to_string(), &body))?;
        if doc.issuer != expected_issuer {
            return Err(FetchError::IssuerMismatch {
                url: url.to_owned(),
                found: doc.issuer,
                expected: expected_issuer.to_owned(),
            });
        }
        Ok(doc.jwks_uri)
    }

    async fn get(&self, url: &str) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
        let unreachable = |e: reqwest::Error| FetchError::Unreachable {
            url: url.to_owned(),
            cause: error_chain(&e),
        };
        let mut resp = self.http.get(url).send().await.map_err(unreachable)?;
        if !resp.status().is_success() {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: resp.status().as_u16(),
            });
        }
        let max_age = resp
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > self.options.max_body_bytes {
                return Err(bad_doc(
                    url,
                    format!("larger than {} bytes", self.options.max_body_bytes),
                    &body,
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }
}

/// Looking up a key failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyLookupError {
    /// The issuer publishes no such key.
    #[error("no such signing key")]
    UnknownKey,
    /// No keys could be fetched and none are held.
    #[error(transparent)]
    Unavailable(FetchError),
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lookup(set: &KeySet, kid: Option<&str>) -> Option<Arc<VerifyingKey>> {
    match kid {
        Some(kid) => set.keys.get(kid).cloned(),
        // No kid: only unambiguous with exactly one key.
        None if set.keys.len() == 1 => set.keys.values().next().cloned(),
        None => None,
    }
}

fn parse_jwks(
    body: &[u8],
    allowed: &[Algorithm],
) -> Result<HashMap<String, Arc<VerifyingKey>>, String> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut keys = HashMap::new();
    for value in raw.keys {
        // One odd key (an encryption key, an unknown kty) must not cost us
        // the others.
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            continue;
        }
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != PublicKeyUse::Signature)
        {
            continue;
        }
        let alg = match jwk.common.key_algorithm {
            Some(ka) => match ka.to_string().parse::<Algorithm>().ok() {
                Some(a) if allowed.contains(&a) => Some(a),
                _ => continue,
            },
            None => None,
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        keys.insert(kid.clone(), Arc::new(VerifyingKey { kid, alg, key }));
    }
    Ok(keys)
}

/// `max-age` from a Cache-Control header; `no-store`/`no-cache` mean zero
/// (the lower bound then applies).
fn max_age(header: &str) -> Option<Duration> {
    let mut age = None;
    for directive in header.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            age = v
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    age
}

fn bad_doc(url: &str, cause: impl Into<String>, body: &[u8]) -> FetchError {
    let text = String::from_utf8_lossy(body);
    FetchError::BadDocument {
        url: url.to_owned(),
        cause: cause.into(),
        body_start: text.chars().take(200).collect(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age() {
        assert_eq!(
            max_age("public, max-age=3600"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }

    #[test]
    fn symmetric_and_encryption_keys_are_skipped() {
        let body = br#"{"keys":[
            {"kty":"oct","kid":"h","k":"c2VjcmV0"},
            {"kty":"RSA","kid":"enc","use":"enc","n":"sXch","e":"AQAB"},
            {"kty":"RSA","kid":"ps","alg":"PS256","n":"sXch","e":"AQAB"},
            {"kty":"weird","kid":"w"}
        ]}"#;
        let keys = parse_jwks(body, &[Algorithm::RS256]).expect("parses");
        assert!(keys.is_empty(), "got {:?}", keys.keys().collect::<Vec<_>>());
    }

    #[test]
    fn not_a_key_set_is_an_error() {
        assert!(parse_jwks(b"<html>", &[Algorithm::RS256]).is_err());
    }
}

//! The validator: one token in, a [`Principal`] or the exact reason out.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::claims::{Claims, Principal, TokenKind};
use crate::clock::{SharedClock, SystemClock};
use crate::error::{PolicyError, ValidationError};
use crate::issuer::IssuerMatch;
use crate::jwks::{JwksCache, JwksOptions, KeyLookupError, KeysFrom};
use crate::policy::{CompiledPolicy, Requirement, ValidationPolicy};

/// Audiences of Microsoft Graph: a token for Graph is never for us.
const GRAPH_AUDIENCES: [&str; 3] = [
    "00000003-0000-0000-c000-000000000000",
    "https://graph.microsoft.com",
    "https://graph.microsoft.com/",
];

/// The validation latency histogram's name.
const VALIDATION_SECONDS: &str = "mcpgate_token_validation_duration_seconds";

/// How many verified tokens are remembered.
const VERIFIED_CACHE_CAPACITY: u64 = 50_000;

/// Validates access tokens against a policy and the issuers' keys.
///
/// Cheap to share: wrap it in an `Arc`. A token seen before and still valid
/// costs a SHA-256 of its signature, a cache lookup and a comparison of
/// its signed part, not a signature check.
#[derive(Debug)]
pub struct Validator {
    policy: CompiledPolicy,
    keys: Vec<Arc<JwksCache>>,
    clock: SharedClock,
    verified: moka::sync::Cache<[u8; 32], Arc<Verified>>,
    // `mcpgate_token_validation_duration_seconds{cache=hit|miss}`, looked
    // up once: on the hot path a registry lookup would cost more than the
    // cache hit it times.
    hit_seconds: metrics::Histogram,
    miss_seconds: metrics::Histogram,
}

#[derive(Debug)]
struct Verified {
    // The token's `header.payload`. The cache is keyed by a digest of the
    // signature alone (a third of the bytes to hash on every request); a
    // hit counts only if the signed part is this one, byte for byte. Not a
    // credential without its signature, which is not kept.
    signed: Box<str>,
    principal: Arc<Principal>,
    issuer_index: usize,
    kid: String,
    exp: u64,
}

/// Builds a [`Validator`].
#[derive(Debug)]
pub struct ValidatorBuilder {
    policy: ValidationPolicy,
    http: Option<reqwest::Client>,
    clock: SharedClock,
    jwks: JwksOptions,
    keys: Vec<Option<KeysFrom>>,
    shared: Vec<(usize, usize)>,
}

impl Validator {
    /// Starts a builder for `policy`.
    pub fn builder(policy: ValidationPolicy) -> ValidatorBuilder {
        let keys = vec![None; policy.issuers.len()];
        ValidatorBuilder {
            policy,
            http: None,
            clock: Arc::new(SystemClock),
            jwks: JwksOptions::default(),
            keys,
            shared: Vec::new(),
        }
    }

    /// The compiled policy.
    pub fn policy(&self) -> &CompiledPolicy {
        &self.policy
    }

    /// The key cache of each trusted issuer, in the policy's order.
    pub fn key_caches(&self) -> &[Arc<JwksCache>] {
        &self.keys
    }

    /// Authenticates and authorizes against the policy's own requirement.
    pub async fn validate(&self, token: &str) -> Result<Arc<Principal>, ValidationError> {
        let principal = self.authenticate(token).await?;
        self.policy
            .authorize(&principal, self.policy.requirement())?;
        Ok(principal)
    }

    /// Checks that `principal` meets `need` (a tool's requirement, say).
    pub fn authorize(
        &self,
        principal: &Principal,
        need: &Requirement,
    ) -> Result<(), ValidationError> {
        self.policy.authorize(principal, need)
    }

    /// Verifies the token and the claims that say whose and for whom it is:
    /// signature, issuer, tenant, audience, lifetime, kind and client app.
    /// Scopes and roles are [`Validator::authorize`]'s.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Principal>, ValidationError> {
        if token.len() > self.policy.max_token_bytes {
            return Err(ValidationError::TooLarge {
                len: token.len(),
                max: self.policy.max_token_bytes,
            });
        }
        let started = std::time::Instant::now();
        let (signed, signature) = token.rsplit_once('.').unwrap_or(("", token));
        let digest: [u8; 32] = Sha256::digest(signature.as_bytes()).into();
        if let Some(hit) = self.verified.get(&digest)
            && *hit.signed == *signed
        {
            let now = self.clock.unix_now();
            if now <= hit.exp.saturating_add(self.policy.clock_skew_secs)
                && self.keys[hit.issuer_index].still_published(&hit.kid)
            {
                self.hit_seconds.record(started.elapsed());
                return Ok(hit.principal.clone());
            }
            self.verified.invalidate(&digest);
        }
        let verified = self.verify(token).await;
        self.miss_seconds.record(started.elapsed());
        let verified = verified?;
        let principal = verified.principal.clone();
        self.verified.insert(digest, Arc::new(verified));
        Ok(principal)
    }

    /// Decodes a token and runs every check, for `mcpgate explain`.
    pub async fn explain(&self, token: &str) -> Explanation {
        let (header, claims) = match split(token) {
            Ok(parts) => (
                decode_json(parts.0).unwrap_or(serde_json::Value::Null),
                decode_json(parts.1).unwrap_or(serde_json::Value::Null),
            ),
            Err(_) => (serde_json::Value::Null, serde_json::Value::Null),
        };
        let verdict = match self.verify(token).await {
            Ok(v) => self
                .policy
                .authorize(&v.principal, self.policy.requirement())
                .map(|()| v.principal),
            Err(e) => Err(e),
        };
        Explanation {
            header,
            claims,
            verdict,
        }
    }

    async fn verify(&self, token: &str) -> Result<Verified, ValidationError> {
        if token.len() > self.policy.max_token_bytes {
            return Err(ValidationError::TooLarge {
                len: token.len(),
                max: self.policy.max_token_bytes,
            });
        }
        let (header_b64, claims_b64, _) = split(token)?;
        let header: RawHeader = decode_json(header_b64)?;
        let unverified: Claims = decode_json(claims_b64)?;

        // Graph tokens are signed in a way only Graph can check (the `nonce`
        // header); say what they are instead of "bad signature".
        if let Some(aud) = unverified
            .aud
            .iter()
            .find(|a| GRAPH_AUDIENCES.contains(&a.as_str()))
        {
            return Err(ValidationError::GraphToken { aud: aud.clone() });
        }
        if header.crit.is_some() {
            return Err(ValidationError::Malformed(
                "the header has critical extensions (crit) this server does not understand",
            ));
        }
        let alg = self.allowed_algorithm(&header.alg)?;

        let iss = unverified
            .iss
            .as_deref()
            .ok_or(ValidationError::MissingClaim("iss"))?;
        let issuer_index = self.trusted_issuer(iss, unverified.tid.as_deref())?;
        let cache = &self.keys[issuer_index];
        let key = cache
            .key(header.kid.as_deref())
            .await
            .map_err(|e| match e {
                KeyLookupError::UnknownKey => ValidationError::UnknownKey {
                    kid: header.kid.clone().unwrap_or_default(),
                },
                KeyLookupError::Unavailable(f) => ValidationError::KeysUnavailable(f.to_string()),
            })?;
        if key.alg.is_some_and(|pinned| pinned != alg) {
            return Err(ValidationError::BadSignature);
        }

        let mut validation = Validation::new(alg);
        // Lifetime and audience are checked below against the injected clock
        // with our own messages; jsonwebtoken checks only the signature.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature
                | jsonwebtoken::errors::ErrorKind::InvalidAlgorithm
                | jsonwebtoken::errors::ErrorKind::InvalidKeyFormat
                | jsonwebtoken::errors::ErrorKind::InvalidRsaKey(_)
                | jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey => ValidationError::BadSignature,
                _ => ValidationError::Malformed("the token could not be decoded"),
            })?
            .claims;

        check_subject(&claims)?;
        self.check_tenant(&claims)?;
        self.check_audience(&claims)?;
        let exp = self.check_lifetime(&claims)?;
        self.check_kind(&claims)?;
        self.check_client_app(&claims)?;
        Ok(Verified {
            signed: token
                .rsplit_once('.')
                .map_or("", |(signed, _)| signed)
                .into(),
            principal: Arc::new(Principal::from_claims(&claims, iss, exp)),
            issuer_index,
            kid: key.kid.clone(),
            exp,
        })
    }

    fn allowed_algorithm(&self, alg: &str) -> Result<Algorithm, ValidationError> {
        let allowed = || {
            self.policy
                .algorithms
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        alg.parse::<Algorithm>()
            .ok()
            .filter(|a| self.policy.algorithms.contains(a))
            .ok_or_else(|| ValidationError::AlgorithmNotAllowed {
                alg: alg.to_owned(),
                allowed: allowed(),
            })
    }

    fn trusted_issuer(&self, iss: &str, tid: Option<&str>) -> Result<usize, ValidationError> {
        let mut tenant_mismatch = false;
        for (i, pattern) in self.policy.issuers.iter().enumerate() {
            match pattern.matches(iss, tid) {
                IssuerMatch::Matches => return Ok(i),
                IssuerMatch::TenantMismatch => tenant_mismatch = true,
                IssuerMatch::No => {}
            }
        }
        if tenant_mismatch {
            Err(ValidationError::IssuerTenantMismatch {
                iss: iss.to_owned(),
                tid: tid.unwrap_or_default().to_owned(),
            })
        } else {
            Err(ValidationError::UntrustedIssuer {
                iss: iss.to_owned(),
            })
        }
    }

    fn check_tenant(&self, claims: &Claims) -> Result<(), ValidationError> {
        if self.policy.allowed_tenants.is_empty() {
            return Ok(());
        }
        let tid = claims.tid.as_deref().unwrap_or_default();
        if self.policy.allowed_tenants.contains(tid) {
            Ok(())
        } else {
            Err(ValidationError::TenantNotAllowed {
                tid: tid.to_owned(),
            })
        }
    }

    fn check_audience(&self, claims: &Claims) -> Result<(), ValidationError> {
        if claims.aud.iter().any(|a| self.policy.audiences.contains(a)) {
            return Ok(());
        }
        if claims.aud.is_empty() {
            return Err(ValidationError::MissingClaim("aud"));
        }
        Err(ValidationError::WrongAudience {
            found: claims.aud.clone(),
            expected: self.policy.audiences().collect::<Vec<_>>().join(", "),
        })
    }

    fn check_lifetime(&self, claims: &Claims) -> Result<u64, ValidationError> {
        let now = self.clock.unix_now() as i64;
        let skew = self.policy.clock_skew_secs as i64;
        let exp = claims.exp.ok_or(ValidationError::MissingClaim("exp"))?;
        if now > exp.saturating_add(skew) {
            return Err(ValidationError::Expired {
                ago_secs: (now - exp) as u64,
            });
        }
        if let Some(nbf) = claims.nbf
            && nbf > now.saturating_add(skew)
        {
            return Err(ValidationError::NotYetValid {
                in_secs: (nbf - now) as u64,
            });
        }
        if let Some(iat) = claims.iat
            && iat > now.saturating_add(skew)
        {
            return Err(ValidationError::IssuedInFuture {
                in_secs: (iat - now) as u64,
            });
        }
        Ok(exp.max(0) as u64)
    }

    fn check_kind(&self, claims: &Claims) -> Result<(), ValidationError> {
        match claims.kind() {
            TokenKind::Delegated => Ok(()),
            TokenKind::AppOnly if self.policy.allow_app_only => Ok(()),
            TokenKind::AppOnly => Err(ValidationError::AppOnlyNotAllowed),
        }
    }

    fn check_client_app(&self, claims: &Claims) -> Result<(), ValidationError> {
        if self.policy.allowed_client_apps.is_empty() {
            return Ok(());
        }
        let app = claims.client_app().unwrap_or_default();
        if self.policy.allowed_client_apps.contains(app) {
            Ok(())
        } else {
            Err(ValidationError::ClientAppNotAllowed(app.to_owned()))
        }
    }
}

/// Sessions and audit records are keyed by who the caller is: a token that
/// names nobody (no `oid`, no `sub`) would make all such callers one.
fn check_subject(claims: &Claims) -> Result<(), ValidationError> {
    let named = |c: &Option<String>| c.as_deref().is_some_and(|v| !v.is_empty());
    if named(&claims.oid) || named(&claims.sub) {
        Ok(())
    } else {
        Err(ValidationError::MissingClaim("sub"))
    }
}

impl ValidatorBuilder {
    /// The HTTP client for discovery and JWKS; it decides timeouts and
    /// trusted roots. Default: a client with a 10 s timeout.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// The clock. Default: the system clock.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Key-cache settings.
    pub fn jwks_options(mut self, options: JwksOptions) -> Self {
        self.jwks = options;
        self
    }

    /// Where the keys of the issuer at `index` (in the policy's order) come
    /// from. Default: OpenID discovery from the issuer.
    pub fn keys_for(mut self, index: usize, from: KeysFrom) -> Self {
        if let Some(slot) = self.keys.get_mut(index) {
            *slot = Some(from);
        }
        self
    }

    /// The issuer at `index` uses the same keys (and cache) as the one at
    /// `source`, an earlier index: Entra signs v1.0 and v2.0 tokens with
    /// one key set, published only under the v2.0 discovery document.
    pub fn keys_shared_with(mut self, index: usize, source: usize) -> Self {
        if source < index {
            self.shared.push((index, source));
        }
        self
    }

    /// Checks the policy and builds the validator. Nothing is fetched yet.
    pub fn build(self) -> Result<Validator, PolicyError> {
        let policy = self.policy.compile()?;
        let http = match self.http {
            Some(h) => h,
            None => reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|_| PolicyError::NoIssuer)?,
        };
        let mut keys: Vec<Arc<JwksCache>> = Vec::with_capacity(policy.issuers.len());
        for (index, (pattern, from)) in policy.issuers.iter().zip(self.keys).enumerate() {
            let shared = self
                .shared
                .iter()
                .find(|(i, _)| *i == index)
                .and_then(|(_, source)| keys.get(*source).cloned());
            let cache = shared.unwrap_or_else(|| {
                let from = from.unwrap_or_else(|| KeysFrom::Discovery {
                    url: pattern.discovery_url(),
                    expected_issuer: pattern.as_str().to_owned(),
                });
                Arc::new(JwksCache::new(
                    from,
                    http.clone(),
                    self.clock.clone(),
                    self.jwks.clone(),
                    policy.algorithms.clone(),
                ))
            });
            keys.push(cache);
        }
        Ok(Validator {
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_CACHE_CAPACITY)
                .time_to_live(Duration::from_secs(24 * 3600))
                .build(),
            policy,
            keys,
            clock: self.clock,
            hit_seconds: metrics::histogram!(VALIDATION_SECONDS, "cache" => "hit"),
            miss_seconds: metrics::histogram!(VALIDATION_SECONDS, "cache" => "miss"),
        })
    }
}

/// What `explain` found.
#[derive(Debug)]
pub struct Explanation {
    /// The decoded header, or null.
    pub header: serde_json::Value,
    /// The decoded claims, or null.
    pub claims: serde_json::Value,
    /// Accepted, or why not.
    pub verdict: Result<Arc<Principal>, ValidationError>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

fn split(token: &str) -> Result<(&str, &str, &str), ValidationError> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(c), Some(s), None) if !h.is_empty() && !c.is_empty() => Ok((h, c, s)),
        _ => Err(ValidationError::Malformed(
            "expected three dot-separated parts",
        )),
    }
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, ValidationError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| ValidationError::Malformed("a part is not base64url"))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| ValidationError::Malformed("a part is not the expected JSON"))
}

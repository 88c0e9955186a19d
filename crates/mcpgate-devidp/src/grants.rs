//! The IdP's durable grants as the [store](mcpgate_store::Store) holds
//! them: authorization codes, refresh tokens (in families) and consents,
//! mapped onto [`CodeRecord`], [`RefreshRecord`] and [`ConsentRecord`].
//!
//! The mapping, field by field:
//!
//! - Codes and refresh tokens are keyed by a SHA-256 of the value under
//!   this IdP's own prefix ([`grant_hash`]): the store never holds a usable
//!   token, and a store shared with the broker cannot confuse the broker's
//!   codes with the IdP's, whatever client ids the two have.
//! - `scopes` and `resource` hold a [`ScopeRequest`]: `resource` is the
//!   resource app id when a resource was named, and each of its scopes is
//!   written `<resource>/<scope>` (`<resource>/.default` for `.default`),
//!   the OpenID scopes bare. It reads back without the directory.
//! - `subject` is the user's object id; the tenant a grant is issued in is
//!   always the user's own (sign-in refuses a user from another tenant).
//! - `code_challenge` is empty when the authorize request had none (a
//!   confidential client, which Entra lets skip PKCE); a real challenge
//!   is 43 characters.
//! - The store's [`CodeRecord`] has no place for the OpenID `nonce`, so it
//!   travels in the code itself ([`new_code`]): the record is keyed by the
//!   hash of the whole code, so a code whose nonce was changed is unknown.
//! - Consents are keyed by the user's object id and the client id under
//!   this IdP's prefix; their scopes are written `<resource>/<scope>`.
//! - How the sign-in authenticated ([`AuthContext`]: the second factor,
//!   authentication contexts) has no field in the store's records either,
//!   so it travels in `scopes` as markers no scope can be: `#amr:mfa` and
//!   `#acrs:<id>` ([`context_to_grant`], [`context_from_grant`]). A record
//!   without them is a password-only sign-in, which is what every grant
//!   stored before Conditional Access was.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcpgate_store::{ClientId, StoreError, Subject, Timestamp, TokenHash};
use sha2::{Digest, Sha256};

use crate::conditional_access::AuthContext;
use crate::directory::GRAPH_APP_ID;
use crate::error::AadError;
use crate::scope::{OIDC_SCOPES, ScopeRequest};
use crate::util::random_token;

pub use mcpgate_store::{CodeRecord, ConsentRecord, FamilyId, RefreshRecord};

/// What the IdP's hashes are prefixed with, apart from other users of a
/// shared store.
const HASH_DOMAIN: &[u8] = b"mcpgate-devidp\0";

/// The key of a code or refresh token in the store.
pub fn grant_hash(value: &str) -> TokenHash {
    let mut h = Sha256::new();
    h.update(HASH_DOMAIN);
    h.update(value.as_bytes());
    TokenHash::from_bytes(h.finalize().into())
}

/// A fresh authorization code carrying `nonce` (not a secret: the client
/// sent it in the authorize URL), for the ID token of its redemption.
pub fn new_code(nonce: Option<&str>) -> String {
    let random = random_token();
    match nonce {
        Some(n) => format!("{random}.{}", URL_SAFE_NO_PAD.encode(n)),
        None => random,
    }
}

/// A code or record the IdP could not have written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a grant this identity provider wrote")]
pub struct NotOurs;

/// The nonce a code carries. Read only from a code found in the store,
/// which the IdP wrote.
pub fn nonce_of(code: &str) -> Result<Option<String>, NotOurs> {
    let Some((_, encoded)) = code.split_once('.') else {
        return Ok(None);
    };
    let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| NotOurs)?;
    String::from_utf8(bytes).map(Some).map_err(|_| NotOurs)
}

/// The store's key for consents to `client_id`.
pub fn consent_client(client_id: &str) -> ClientId {
    ClientId::new(format!("devidp:{client_id}"))
}

/// A Unix time in seconds as the store writes it.
pub fn timestamp(unix_secs: u64) -> Timestamp {
    Timestamp::from_millis(unix_secs.saturating_mul(1000))
}

/// A store timestamp in Unix seconds.
pub fn unix_secs(t: Timestamp) -> u64 {
    t.as_millis() / 1000
}

/// The subject of a user's grants.
pub fn subject(user_oid: &str) -> Subject {
    Subject::new(user_oid)
}

/// A scope request as a grant's `(resource, scopes)`.
pub fn scope_to_grant(req: &ScopeRequest) -> (Option<String>, Vec<String>) {
    let mut scopes: Vec<String> = req.oidc.iter().cloned().collect();
    if req.explicit_resource {
        let r = &req.resource;
        if req.default {
            scopes.push(format!("{r}/.default"));
        }
        scopes.extend(req.scopes.iter().map(|s| format!("{r}/{s}")));
    }
    (req.explicit_resource.then(|| req.resource.clone()), scopes)
}

/// A grant's `(resource, scopes)` read back; `None` if they are not what
/// [`scope_to_grant`] writes.
pub fn scope_from_grant(resource: Option<&str>, scopes: &[String]) -> Option<ScopeRequest> {
    let mut req = ScopeRequest {
        resource: resource.unwrap_or(GRAPH_APP_ID).to_owned(),
        explicit_resource: resource.is_some(),
        scopes: BTreeSet::new(),
        default: false,
        oidc: BTreeSet::new(),
    };
    let prefix = resource.map(|r| format!("{r}/"));
    for s in scopes {
        if OIDC_SCOPES.contains(&s.as_str()) {
            req.oidc.insert(s.clone());
            continue;
        }
        match prefix.as_deref().and_then(|p| s.strip_prefix(p)) {
            Some(".default") => req.default = true,
            Some(short) if !short.is_empty() => {
                req.scopes.insert(short.to_owned());
            }
            _ => return None,
        }
    }
    Some(req)
}

/// The marker of a sign-in that did the second factor.
const MFA_MARKER: &str = "#amr:mfa";
/// The prefix of an authentication-context marker.
const ACRS_MARKER: &str = "#acrs:";

/// A grant's `scopes` with the sign-in's `context` appended as markers.
pub fn context_to_grant(mut scopes: Vec<String>, context: &AuthContext) -> Vec<String> {
    if context.mfa {
        scopes.push(MFA_MARKER.to_owned());
        scopes.extend(context.acrs.iter().map(|a| format!("{ACRS_MARKER}{a}")));
    }
    scopes
}

/// A grant's sign-in context, and its scopes without the markers.
pub fn context_from_grant(scopes: &[String]) -> (AuthContext, Vec<String>) {
    let mut context = AuthContext::password();
    let mut rest = Vec::with_capacity(scopes.len());
    for s in scopes {
        if s == MFA_MARKER {
            context.mfa = true;
        } else if let Some(a) = s.strip_prefix(ACRS_MARKER) {
            context.acrs.insert(a.to_owned());
        } else {
            rest.push(s.clone());
        }
    }
    if !context.mfa {
        // Authentication contexts are satisfied by the second factor only.
        context.acrs.clear();
    }
    (context, rest)
}

/// A user's consents to one client: scopes by resource, written
/// `<resource>/<scope>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Consents(BTreeSet<String>);

impl Consents {
    /// The consents a stored record holds.
    pub fn from_record(record: &ConsentRecord) -> Self {
        Self(record.scopes.iter().cloned().collect())
    }

    /// The scopes of `resource` consented to.
    pub fn of_resource<'a>(&'a self, resource: &str) -> impl Iterator<Item = &'a str> + 'a {
        let prefix = format!("{resource}/");
        self.0
            .iter()
            .filter_map(move |s| s.strip_prefix(prefix.as_str()))
    }

    /// These consents and `scopes` of `resource`; `None` if nothing is new.
    pub fn adding(&self, resource: &str, scopes: &BTreeSet<String>) -> Option<Self> {
        let mut out = self.clone();
        let before = out.0.len();
        out.0
            .extend(scopes.iter().map(|s| format!("{resource}/{s}")));
        (out.0.len() > before).then_some(out)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The record to store, given at `now` (Unix seconds).
    pub fn to_record(&self, now: u64, ttl: u64) -> ConsentRecord {
        ConsentRecord {
            scopes: self.0.iter().cloned().collect(),
            granted_at: timestamp(now),
            expires_at: timestamp(now.saturating_add(ttl)),
        }
    }
}

/// A store failure, as the client sees it: Entra's transient error. The
/// store's errors carry no value or key, so it is logged whole.
pub fn store_failed(e: StoreError) -> AadError {
    tracing::error!(error = %e, source = ?std::error::Error::source(&e), "the grant store failed");
    AadError::transient()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{DEFAULT_API_APP_ID, DEFAULT_TENANT_ID, Directory, IdpConfig};
    use crate::scope;

    #[test]
    fn scope_requests_round_trip_through_a_grant() {
        let dir = Directory::from_config(&IdpConfig::builtin()).expect("builtin");
        let api = format!("api://{DEFAULT_API_APP_ID}");
        for raw in [
            format!("{api}/mcp:tools openid profile offline_access"),
            format!("{api}/.default offline_access"),
            "User.Read Mail.Read openid".to_owned(),
            "openid profile email offline_access".to_owned(),
        ] {
            let req = scope::parse(Some(&raw), None, &dir, DEFAULT_TENANT_ID).expect(&raw);
            let (resource, scopes) = scope_to_grant(&req);
            assert_eq!(
                scope_from_grant(resource.as_deref(), &scopes),
                Some(req),
                "{raw}"
            );
        }
    }

    #[test]
    fn a_grant_that_is_not_the_idps_does_not_read() {
        // The broker's shape: an MCP resource URL and bare scope names.
        let scopes = vec!["mcp:tools".to_owned()];
        assert_eq!(
            scope_from_grant(Some("https://mcp.example/mcp"), &scopes),
            None
        );
        assert_eq!(scope_from_grant(None, &scopes), None);
        assert_eq!(scope_from_grant(Some("r"), &["r/".to_owned()]), None);
    }

    #[test]
    fn codes_carry_their_nonce_and_hashes_are_the_idps_own() {
        let code = new_code(Some("n-1 ü"));
        assert_eq!(nonce_of(&code), Ok(Some("n-1 ü".to_owned())));
        let plain = new_code(None);
        assert_eq!(nonce_of(&plain), Ok(None));
        assert_eq!(nonce_of("abc.!!"), Err(NotOurs));
        assert_ne!(grant_hash(&plain), TokenHash::of(plain.as_bytes()));
        assert_eq!(grant_hash(&plain), grant_hash(&plain));
    }

    #[test]
    fn the_sign_in_context_round_trips_beside_the_scopes() {
        let scopes = vec!["openid".to_owned(), "api/mcp:tools".to_owned()];
        let mfa = AuthContext {
            mfa: true,
            acrs: ["c1".to_owned()].into(),
        };
        for context in [AuthContext::password(), mfa] {
            let stored = context_to_grant(scopes.clone(), &context);
            assert_eq!(context_from_grant(&stored), (context, scopes.clone()));
        }
        let forged = vec!["#acrs:c1".to_owned()];
        assert_eq!(
            context_from_grant(&forged).0,
            AuthContext::password(),
            "no acrs without the second factor"
        );
    }

    #[test]
    fn consents_add_by_resource() {
        let none = Consents::default();
        let tools: BTreeSet<String> = ["mcp:tools".to_owned()].into();
        let some = none.adding("app", &tools).expect("new");
        assert_eq!(some.of_resource("app").collect::<Vec<_>>(), ["mcp:tools"]);
        assert_eq!(some.of_resource("other").count(), 0);
        assert_eq!(some.adding("app", &tools), None, "nothing new");
        let back = Consents::from_record(&some.to_record(10, 5));
        assert_eq!(back, some);
    }
}

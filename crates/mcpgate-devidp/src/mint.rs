//! Minting tokens shaped like Entra's: access tokens (v1 and v2, delegated
//! and app-only), ID tokens and `client_info`.
//!
//! Claim sets follow
//! <https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference>
//! and
//! <https://learn.microsoft.com/entra/identity-platform/id-token-claims-reference>.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::conditional_access::AuthContext;
use crate::directory::{App, Directory, GRAPH_APP_ID, User};
use crate::keys::KeyRing;
use crate::util::{b64url, random_bytes};

/// How the client proved who it is: Entra's `azpacr`/`appidacr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A public client: "0".
    Public,
    /// A client secret: "1".
    Secret,
    /// A certificate (a signed client assertion): "2".
    Certificate,
}

impl ClientAuth {
    fn acr(self) -> &'static str {
        match self {
            Self::Public => "0",
            Self::Secret => "1",
            Self::Certificate => "2",
        }
    }
}

/// The issuer URLs of one tenant on this IdP.
#[derive(Debug, Clone)]
pub struct Issuers {
    /// `https://host/{tid}/v2.0`.
    pub v2: String,
    /// `https://sts.windows.net/{tid}/`-shaped: `https://host/{tid}/` here,
    /// since the dev IdP has one origin. The path shape is Entra's v1.
    pub v1: String,
}

impl Issuers {
    /// The issuers for `tenant` on `base` (no trailing slash).
    pub fn new(base: &str, tenant: &str) -> Self {
        Self {
            v2: format!("{base}/{tenant}/v2.0"),
            v1: format!("{base}/{tenant}/"),
        }
    }
}

/// A unique token identifier (`uti`): 16 random bytes, base64url.
fn uti() -> String {
    b64url(random_bytes::<16>())
}

/// Entra's `sub` is pairwise: stable for one user and one application, and
/// different across applications.
pub fn pairwise_sub(user: &User, app_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"mcpgate-devidp-sub\0");
    h.update(user.tenant.as_bytes());
    h.update([0]);
    h.update(user.oid.as_bytes());
    h.update([0]);
    h.update(app_id.to_ascii_lowercase().as_bytes());
    b64url(&h.finalize()[..32])
}

/// What an access token is for.
#[derive(Debug, Clone)]
pub struct AccessGrant<'a> {
    /// The resource's app id (or Graph's).
    pub resource: &'a str,
    /// Delegated scopes granted; empty for app-only.
    pub scopes: &'a BTreeSet<String>,
    /// Roles: the user's (delegated) or the client's (app-only).
    pub roles: BTreeSet<String>,
    /// The client the token is issued to.
    pub client: &'a App,
    /// How that client authenticated.
    pub client_auth: ClientAuth,
    /// The signed-in user and how the sign-in authenticated them; `None`
    /// for app-only.
    pub user: Option<(&'a User, &'a AuthContext)>,
    /// The tenant.
    pub tenant: &'a str,
}

/// The signer, with what claims need.
#[derive(Debug)]
pub struct Minter<'a> {
    /// Keys.
    pub keys: &'a KeyRing,
    /// The directory.
    pub dir: &'a Directory,
    /// The IdP's base URL.
    pub base: &'a str,
    /// Access token lifetime.
    pub lifetime: u64,
    /// Now, in Unix seconds.
    pub now: u64,
}

impl Minter<'_> {
    /// The access token version of a resource: its app registration's
    /// `accessTokenAcceptedVersion`; Graph takes v1 tokens.
    fn version(&self, resource: &str) -> u8 {
        if resource == GRAPH_APP_ID {
            1
        } else {
            self.dir.app(resource).map_or(2, |a| a.access_token_version)
        }
    }

    /// Mints an access token; returns it and its lifetime in seconds.
    pub fn access_token(&self, grant: &AccessGrant<'_>) -> (String, u64) {
        let issuers = Issuers::new(self.base, grant.tenant);
        let version = self.version(grant.resource);
        let mut c = Map::new();
        let aud = if version == 1 {
            // A v1 token's audience is the identifier the resource was
            // asked by; the App ID URI is what clients use.
            self.dir
                .app(grant.resource)
                .and_then(|a| a.identifier_uris.first().cloned())
                .unwrap_or_else(|| grant.resource.to_owned())
        } else {
            grant.resource.to_owned()
        };
        c.insert("aud".into(), json!(aud));
        c.insert(
            "iss".into(),
            json!(if version == 1 {
                &issuers.v1
            } else {
                &issuers.v2
            }),
        );
        c.insert("iat".into(), json!(self.now));
        c.insert("nbf".into(), json!(self.now));
        c.insert("exp".into(), json!(self.now + self.lifetime));
        if version == 1 {
            c.insert("appid".into(), json!(grant.client.client_id));
            c.insert("appidacr".into(), json!(grant.client_auth.acr()));
        } else {
            c.insert("azp".into(), json!(grant.client.client_id));
            c.insert("azpacr".into(), json!(grant.client_auth.acr()));
        }
        match grant.user {
            Some((user, context)) => {
                // v1 and v2 access tokens both carry `amr` in Entra.
                c.insert("amr".into(), json!(context.amr()));
                if !context.acrs.is_empty() {
                    c.insert("acrs".into(), json!(context.acrs));
                }
                c.insert("name".into(), json!(user.display_name));
                c.insert("oid".into(), json!(user.oid));
                if version == 1 {
                    c.insert("upn".into(), json!(user.username));
                    c.insert("unique_name".into(), json!(user.username));
                } else {
                    c.insert("preferred_username".into(), json!(user.username));
                }
                let scp: Vec<&str> = grant.scopes.iter().map(String::as_str).collect();
                c.insert("scp".into(), json!(scp.join(" ")));
                c.insert("sub".into(), json!(pairwise_sub(user, grant.resource)));
            }
            None => {
                c.insert("idtyp".into(), json!("app"));
                c.insert("oid".into(), json!(grant.client.sp_oid));
                c.insert("sub".into(), json!(grant.client.sp_oid));
            }
        }
        if !grant.roles.is_empty() {
            c.insert("roles".into(), json!(grant.roles));
        }
        c.insert("tid".into(), json!(grant.tenant));
        c.insert("uti".into(), json!(uti()));
        c.insert(
            "ver".into(),
            json!(if version == 1 { "1.0" } else { "2.0" }),
        );
        // Graph's tokens carry a `nonce` header that makes them unverifiable
        // by anyone but Graph: a reminder that they are not for this API.
        let nonce = (grant.resource == GRAPH_APP_ID).then(|| b64url(random_bytes::<16>()));
        let token = self.keys.sign(&Value::Object(c), nonce.as_deref());
        (token, self.lifetime)
    }

    /// Mints an ID token for `client` (v2 shape).
    pub fn id_token(
        &self,
        user: &User,
        context: &AuthContext,
        client: &App,
        tenant: &str,
        nonce: Option<&str>,
        oidc: &BTreeSet<String>,
    ) -> String {
        let issuers = Issuers::new(self.base, tenant);
        let mut c = json!({
            "aud": client.client_id,
            "iss": issuers.v2,
            "iat": self.now,
            "nbf": self.now,
            "exp": self.now + 3600,
            "amr": context.amr(),
            "oid": user.oid,
            "sub": pairwise_sub(user, &client.client_id),
            "tid": tenant,
            "uti": uti(),
            "ver": "2.0",
        });
        if oidc.contains("profile") {
            c["name"] = json!(user.display_name);
            c["preferred_username"] = json!(user.username);
        }
        if oidc.contains("email") {
            c["email"] = json!(user.username);
        }
        if let Some(n) = nonce {
            c["nonce"] = json!(n);
        }
        self.keys.sign(&c, None)
    }
}

/// Entra's `client_info`: base64url JSON of the user's `uid` and `utid`,
/// which MSAL uses to key its account cache.
pub fn client_info(user: &User) -> String {
    b64url(json!({ "uid": user.oid, "utid": user.tenant }).to_string())
}

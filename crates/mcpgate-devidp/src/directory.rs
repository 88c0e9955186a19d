//! The directory: tenants, app registrations and users, read from TOML or
//! built in, and checked once so that request handlers can trust it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::client_assertion::CertificateCredential;
use crate::conditional_access::{Rule, RuleConfig};
use crate::error::IdpError;
use crate::util::{ct_eq, sha256_hex, stable_guid};

/// Microsoft Graph's application id.
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
/// Microsoft Graph's identifier URI.
pub const GRAPH_URI: &str = "https://graph.microsoft.com";
/// The delegated Graph permissions the dev IdP knows.
pub const GRAPH_SCOPES: &[&str] = &[
    "User.Read",
    "User.ReadBasic.All",
    "Mail.Read",
    "Mail.Send",
    "Calendars.Read",
    "Files.Read",
];

/// The built-in tenant.
pub const DEFAULT_TENANT_ID: &str = "7c3e9f2a-0d1b-4e5a-9c8b-2f6a1d4e8b30";
/// The built-in MCP API app registration.
pub const DEFAULT_API_APP_ID: &str = "3f8c2b1e-6a7d-4e2f-9b0c-5d1e7a9c4f21";
/// The built-in MCP API registered as Microsoft's guide for MCP servers
/// registers one: its Application ID URI is the server's https URL
/// ([`URL_API_IDENTIFIER`]), so that clients may send it as RFC 8707
/// `resource`.
pub const URL_API_APP_ID: &str = "8e6b4d2a-3c5f-4a7e-b1d9-6f0a2c4e8b57";
/// The Application ID URI of [`URL_API_APP_ID`].
pub const URL_API_IDENTIFIER: &str = "https://mcp.mcpgate.test/mcp";
/// The built-in public desktop client.
pub const DEFAULT_DESKTOP_CLIENT_ID: &str = "b5a2e8d4-1c3f-4a6b-8e9d-0f7c2a4b6d13";
/// The built-in confidential daemon client.
pub const DEFAULT_DAEMON_CLIENT_ID: &str = "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6";
/// The built-in API's delegated scope.
pub const DEFAULT_SCOPE: &str = "mcp:tools";
/// The built-in API's app role.
pub const DEFAULT_ROLE: &str = "MCP.Tools.All";
/// The built-in users' password (a development directory has no secrets
/// worth keeping; the sign-in page also offers one-click dev users).
pub const DEFAULT_PASSWORD: &str = "mcpgate-dev";

/// A user's password in a development directory. `Debug` prints
/// `[redacted]`, so that a configuration can be logged.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    /// The password itself, to hash or compare.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Password {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Password {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The SHA-256 (hex) of a password or client secret. A hash of a weak
/// secret is as good as the secret to whoever can guess, so `Debug` prints
/// `[redacted]` too.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct SecretHash(String);

impl SecretHash {
    /// The SHA-256 of `secret`.
    pub fn of(secret: &str) -> Self {
        Self(sha256_hex(secret.as_bytes()))
    }

    /// A hash as written in a configuration (lower-cased).
    pub fn from_hex(hex: &str) -> Self {
        Self(hex.to_ascii_lowercase())
    }

    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `presented` hashes to this, in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        ct_eq(
            sha256_hex(presented.as_bytes()).as_bytes(),
            self.0.as_bytes(),
        )
    }
}

impl From<String> for SecretHash {
    fn from(hex: String) -> Self {
        Self::from_hex(&hex)
    }
}

impl From<&str> for SecretHash {
    fn from(hex: &str) -> Self {
        Self::from_hex(hex)
    }
}

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The whole configuration, as written in TOML.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdpConfig {
    /// Username signed in, and consenting, without a page (loopback only).
    pub auto_approve: Option<String>,
    /// Access token lifetime. Default 3600 (Entra: 60–90 minutes).
    pub access_token_lifetime_secs: Option<u64>,
    /// Seconds between device-code polls. Default 5, as Entra.
    pub device_code_interval_secs: Option<u64>,
    /// Grace period an old signing key stays published after rotation.
    pub key_grace_secs: Option<u64>,
    /// Tenants; the first is the default.
    pub tenants: Vec<TenantConfig>,
    /// App registrations.
    pub apps: Vec<AppConfig>,
    /// Users.
    pub users: Vec<UserConfig>,
    /// Conditional Access rules (`[[conditional_access]]`): which users
    /// must complete a second factor for which resources. None by default.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditional_access: Vec<RuleConfig>,
}

/// `[[tenants]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The tenant GUID.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// A Microsoft Entra External ID (CIAM) tenant: v2.0 tokens only, as
    /// External ID issues them. Its issuer keeps the path form of
    /// `https://<tenant-id>.ciamlogin.com/<tenant-id>/v2.0`; the host stays
    /// the IdP's own (loopback).
    #[serde(default)]
    pub external_id: bool,
}

/// `[[apps]]`: one app registration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Application (client) id, a GUID.
    pub client_id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Home tenant. Default: the first tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// A public client (no secret; PKCE required).
    #[serde(default)]
    pub public_client: bool,
    /// Redirect URIs, matched exactly (loopback: any port).
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// SHA-256 (hex) of the client secret.
    #[serde(default)]
    pub secret_sha256: Option<SecretHash>,
    /// Environment variable holding the client secret (hashed on load).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Certificate credentials: PEM certificates or public keys (RSA or
    /// P-256) whose private keys sign the app's client assertions
    /// (`private_key_jwt`), read at start.
    #[serde(default)]
    pub certificates: Vec<std::path::PathBuf>,
    /// Application ID URIs; default `api://<client_id>` when it exposes
    /// scopes or roles.
    #[serde(default)]
    pub identifier_uris: Vec<String>,
    /// Delegated scopes this app exposes as an API.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// App roles this app defines.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Client ids pre-authorized for every exposed scope (no consent).
    #[serde(default)]
    pub pre_authorized: Vec<String>,
    /// `accessTokenAcceptedVersion`: 1 or 2 (default 2).
    #[serde(default)]
    pub access_token_version: Option<u8>,
    /// Delegated permissions an administrator consented for this client,
    /// per resource (app id, or `graph`).
    #[serde(default)]
    pub granted: BTreeMap<String, Vec<String>>,
    /// Application permissions (app roles) assigned to this client, per
    /// resource app id.
    #[serde(default)]
    pub app_roles: BTreeMap<String, Vec<String>>,
}

/// `[[users]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Sign-in name (UPN).
    pub username: String,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
    /// Password, for development directories.
    #[serde(default)]
    pub password: Option<Password>,
    /// SHA-256 (hex) of the password.
    #[serde(default)]
    pub password_sha256: Option<SecretHash>,
    /// Object id; default derived from tenant and username.
    #[serde(default)]
    pub oid: Option<String>,
    /// Home tenant. Default: the first tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// App roles assigned to this user, per resource app id.
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<String>>,
    /// Blocked from signing in.
    #[serde(default)]
    pub disabled: bool,
    /// Offered on the sign-in page for one-click sign-in. Default true;
    /// an unlisted user must type a password.
    #[serde(default)]
    pub listed: Option<bool>,
}

impl IdpConfig {
    /// Parses a TOML file's text.
    pub fn from_toml_str(text: &str) -> Result<Self, IdpError> {
        toml::from_str(text).map_err(|e| IdpError::Config(e.to_string()))
    }

    /// The built-in directory: one tenant, an MCP API exposing `mcp:tools`,
    /// a public desktop client pre-authorized for it, a daemon with the
    /// API's app role, and two users.
    pub fn builtin() -> Self {
        let graph_user_read = BTreeMap::from([("graph".to_owned(), vec!["User.Read".to_owned()])]);
        let api_role =
            BTreeMap::from([(DEFAULT_API_APP_ID.to_owned(), vec![DEFAULT_ROLE.to_owned()])]);
        Self {
            tenants: vec![TenantConfig {
                id: DEFAULT_TENANT_ID.to_owned(),
                name: "mcpgate development tenant".to_owned(),
                external_id: false,
            }],
            apps: vec![
                AppConfig {
                    identifier_uris: vec![format!("api://{DEFAULT_API_APP_ID}")],
                    scopes: vec![DEFAULT_SCOPE.to_owned()],
                    roles: vec![DEFAULT_ROLE.to_owned()],
                    pre_authorized: vec![DEFAULT_DESKTOP_CLIENT_ID.to_owned()],
                    access_token_version: Some(2),
                    // Admin consent for its own API and Graph: the broker
                    // signs users in as this app, and asks each user's
                    // consent per MCP client itself.
                    granted: BTreeMap::from([
                        ("graph".to_owned(), vec!["User.Read".to_owned()]),
                        (
                            DEFAULT_API_APP_ID.to_owned(),
                            vec![DEFAULT_SCOPE.to_owned()],
                        ),
                    ]),
                    // The broker signs users in here as this confidential
                    // client, at the server's callback on any loopback port.
                    redirect_uris: vec![
                        "http://127.0.0.1/auth/callback".to_owned(),
                        "http://localhost/auth/callback".to_owned(),
                    ],
                    ..AppConfig::new(DEFAULT_API_APP_ID, "mcpgate MCP server")
                },
                AppConfig {
                    identifier_uris: vec![URL_API_IDENTIFIER.to_owned()],
                    scopes: vec![DEFAULT_SCOPE.to_owned()],
                    pre_authorized: vec![DEFAULT_DESKTOP_CLIENT_ID.to_owned()],
                    access_token_version: Some(2),
                    ..AppConfig::new(URL_API_APP_ID, "mcpgate MCP server (URL identifier)")
                },
                AppConfig {
                    public_client: true,
                    redirect_uris: vec![
                        "http://localhost".to_owned(),
                        "http://127.0.0.1".to_owned(),
                        "http://localhost/callback".to_owned(),
                        "http://127.0.0.1/callback".to_owned(),
                    ],
                    granted: graph_user_read,
                    ..AppConfig::new(DEFAULT_DESKTOP_CLIENT_ID, "mcpgate desktop")
                },
                AppConfig {
                    app_roles: api_role.clone(),
                    ..AppConfig::new(DEFAULT_DAEMON_CLIENT_ID, "mcpgate daemon")
                },
            ],
            users: vec![
                UserConfig {
                    password: Some(DEFAULT_PASSWORD.into()),
                    roles: api_role,
                    ..UserConfig::new("alice@mcpgate.test", "Alice Adams")
                },
                UserConfig {
                    password: Some(DEFAULT_PASSWORD.into()),
                    ..UserConfig::new("bob@mcpgate.test", "Bob Baker")
                },
            ],
            ..Self::default()
        }
    }
}

impl AppConfig {
    /// A confidential app registration with nothing configured but its id
    /// and name; set the rest with struct update syntax.
    pub fn new(client_id: &str, name: &str) -> Self {
        Self {
            client_id: client_id.to_owned(),
            name: name.to_owned(),
            tenant: None,
            public_client: false,
            redirect_uris: Vec::new(),
            secret_sha256: None,
            secret_env: None,
            certificates: Vec::new(),
            identifier_uris: Vec::new(),
            scopes: Vec::new(),
            roles: Vec::new(),
            pre_authorized: Vec::new(),
            access_token_version: None,
            granted: BTreeMap::new(),
            app_roles: BTreeMap::new(),
        }
    }
}

impl UserConfig {
    /// An enabled, listed user with no password and no roles.
    pub fn new(username: &str, display_name: &str) -> Self {
        Self {
            username: username.to_owned(),
            display_name: display_name.to_owned(),
            password: None,
            password_sha256: None,
            oid: None,
            tenant: None,
            roles: BTreeMap::new(),
            disabled: false,
            listed: None,
        }
    }
}

/// A tenant.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// GUID.
    pub id: String,
    /// Display name.
    pub name: String,
    /// An External ID (CIAM) tenant.
    pub external_id: bool,
}

/// How a client's secret is known.
#[derive(Clone)]
pub enum Secret {
    /// SHA-256 of the secret.
    Sha256(SecretHash),
    /// A confidential client whose secret is generated and stored in the
    /// data directory at start (built-in clients).
    Generated,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sha256(_) => "Secret::Sha256(..)",
            Self::Generated => "Secret::Generated",
        })
    }
}

/// An app registration, checked.
#[derive(Debug, Clone)]
pub struct App {
    /// Client id.
    pub client_id: String,
    /// Display name.
    pub name: String,
    /// Home tenant.
    pub tenant: String,
    /// Public client.
    pub public_client: bool,
    /// Redirect URIs.
    pub redirect_uris: Vec<String>,
    /// How its secret is checked; `None` for public clients.
    pub secret: Option<Secret>,
    /// Keys its client assertions may be signed with.
    pub certificates: Vec<CertificateCredential>,
    /// Application ID URIs.
    pub identifier_uris: Vec<String>,
    /// Exposed delegated scopes.
    pub scopes: Vec<String>,
    /// Defined app roles.
    pub roles: Vec<String>,
    /// Pre-authorized clients.
    pub pre_authorized: BTreeSet<String>,
    /// Access token version, 1 or 2.
    pub access_token_version: u8,
    /// Admin-consented delegated permissions: resource app id → scopes.
    pub granted: BTreeMap<String, BTreeSet<String>>,
    /// Assigned application permissions: resource app id → roles.
    pub app_roles: BTreeMap<String, BTreeSet<String>>,
    /// Service principal object id (the `oid` of app-only tokens).
    pub sp_oid: String,
}

impl App {
    /// Its exposed scopes in full (`api://<app>/mcp:tools`), as clients ask
    /// for them: the first identifier URI (else the client id) as prefix.
    pub fn full_scopes(&self) -> Vec<String> {
        let prefix = self.identifier_uris.first().unwrap_or(&self.client_id);
        self.scopes
            .iter()
            .map(|s| format!("{prefix}/{s}"))
            .collect()
    }

    /// Whether this app exposes an API (scopes or roles).
    pub fn is_api(&self) -> bool {
        !self.scopes.is_empty() || !self.roles.is_empty()
    }

    /// Whether `value` names this app as a resource: its client id or one
    /// of its identifier URIs.
    pub fn is_named_by(&self, value: &str) -> bool {
        let value = value.trim_end_matches('/');
        value.eq_ignore_ascii_case(&self.client_id)
            || self
                .identifier_uris
                .iter()
                .any(|u| u.trim_end_matches('/') == value)
    }

    /// Whether `redirect_uri` is registered: exact match, except that a
    /// loopback `http` redirect matches on any port. Entra documents this:
    /// <https://learn.microsoft.com/entra/identity-platform/reply-url#localhost-exceptions>.
    pub fn redirect_allowed(&self, redirect_uri: &str) -> bool {
        let Ok(asked) = url::Url::parse(redirect_uri) else {
            return false;
        };
        if asked.fragment().is_some() {
            return false;
        }
        self.redirect_uris.iter().any(|registered| {
            if registered == redirect_uri {
                return true;
            }
            let Ok(reg) = url::Url::parse(registered) else {
                return false;
            };
            let loopback = matches!(reg.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
            loopback
                && reg.scheme() == "http"
                && asked.scheme() == "http"
                && reg.host_str() == asked.host_str()
                && reg.path() == asked.path()
                && reg.query() == asked.query()
        })
    }

    /// Checks a presented secret against the stored hash.
    pub fn secret_matches(&self, presented: &str, generated: Option<&SecretHash>) -> bool {
        match (&self.secret, generated) {
            (Some(Secret::Sha256(expected)), _) | (Some(Secret::Generated), Some(expected)) => {
                expected.matches(presented)
            }
            _ => false,
        }
    }
}

/// A user, checked.
#[derive(Debug, Clone)]
pub struct User {
    /// Sign-in name.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// SHA-256 (hex) of the password, if one is set.
    pub password_sha256: Option<SecretHash>,
    /// Object id.
    pub oid: String,
    /// Home tenant.
    pub tenant: String,
    /// App roles per resource app id.
    pub roles: BTreeMap<String, BTreeSet<String>>,
    /// Blocked from signing in.
    pub disabled: bool,
    /// Offered for one-click sign-in.
    pub listed: bool,
}

impl User {
    /// Checks a password.
    pub fn password_matches(&self, password: &str) -> bool {
        self.password_sha256
            .as_ref()
            .is_some_and(|expected| expected.matches(password))
    }

    /// Given name and surname, split from the display name for Graph.
    pub fn names(&self) -> (String, String) {
        let mut parts = self.display_name.splitn(2, ' ');
        let given = parts.next().unwrap_or_default().to_owned();
        let surname = parts.next().unwrap_or_default().to_owned();
        (given, surname)
    }
}

/// The checked directory.
#[derive(Debug, Clone)]
pub struct Directory {
    /// Tenants; the first is the default.
    pub tenants: Vec<Tenant>,
    /// App registrations.
    pub apps: Vec<App>,
    /// Users.
    pub users: Vec<User>,
    /// Conditional Access rules.
    pub conditional_access: Vec<Rule>,
}

fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// Checks an Application ID URI as Entra does on registration: `api://`,
/// `https://`, `urn:` or `ms-appx://`, no query or fragment. Plain `http`
/// is a development shortcut for a server on loopback (Entra refuses it),
/// and is said loudly. Stored without a trailing slash, the form Entra
/// compares by.
fn identifier_uri(uri: &str, client_id: &str) -> Result<String, IdpError> {
    let bad = |why: &str| {
        Err(IdpError::Config(format!(
            "identifier URI {uri:?} of {client_id} {why}"
        )))
    };
    let Ok(parsed) = url::Url::parse(uri) else {
        return bad("is not an absolute URI");
    };
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return bad("must have no query or fragment");
    }
    match parsed.scheme() {
        "api" | "https" | "urn" | "ms-appx" => {}
        "http" if parsed.host().is_some_and(|h| is_loopback_host(&h)) => {
            tracing::warn!(
                "DEVELOPMENT ONLY: identifier URI {uri} of {client_id} is plain http on loopback; Entra registers only api://, https://, urn: and ms-appx:// identifiers"
            );
        }
        _ => return bad("must be api://, https://, urn: or ms-appx:// (http only on loopback)"),
    }
    Ok(uri.trim_end_matches('/').to_owned())
}

fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

fn resource_key(key: &str) -> String {
    if key.eq_ignore_ascii_case("graph") || key == GRAPH_URI {
        GRAPH_APP_ID.to_owned()
    } else {
        key.to_owned()
    }
}

impl Directory {
    /// Checks a configuration and builds the directory.
    pub fn from_config(config: &IdpConfig) -> Result<Self, IdpError> {
        let bad = |m: String| Err(IdpError::Config(m));
        let Some(first) = config.tenants.first() else {
            return bad("at least one [[tenants]] entry is needed".to_owned());
        };
        let mut tenants = Vec::new();
        for t in &config.tenants {
            if !is_guid(&t.id) {
                return bad(format!("tenant id {:?} is not a GUID", t.id));
            }
            tenants.push(Tenant {
                id: t.id.to_ascii_lowercase(),
                name: t.name.clone(),
                external_id: t.external_id,
            });
        }
        let tenant_of = |t: &Option<String>| -> Result<String, IdpError> {
            let id = t
                .clone()
                .unwrap_or_else(|| first.id.clone())
                .to_ascii_lowercase();
            if tenants.iter().any(|x| x.id == id) {
                Ok(id)
            } else {
                Err(IdpError::Config(format!("unknown tenant {id}")))
            }
        };

        let mut apps = Vec::new();
        for a in &config.apps {
            if !is_guid(&a.client_id) {
                return bad(format!("client_id {:?} is not a GUID", a.client_id));
            }
            let client_id = a.client_id.to_ascii_lowercase();
            if client_id == GRAPH_APP_ID {
                return bad("the Microsoft Graph app id is reserved".to_owned());
            }
            let secret = match (&a.secret_sha256, &a.secret_env, a.public_client) {
                (Some(_), _, true) | (_, Some(_), true) => {
                    return bad(format!("public client {client_id} cannot have a secret"));
                }
                (Some(h), _, false) => {
                    let h = h.as_str();
                    if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                        return bad(format!("secret_sha256 of {client_id} is not 64 hex digits"));
                    }
                    Some(Secret::Sha256(SecretHash::from_hex(h)))
                }
                (None, Some(var), false) => match std::env::var(var) {
                    Ok(s) if !s.is_empty() => Some(Secret::Sha256(SecretHash::of(&s))),
                    _ => {
                        return bad(format!(
                            "secret_env of {client_id} names {var}, which is not set"
                        ));
                    }
                },
                (None, None, false) => Some(Secret::Generated),
                (None, None, true) => None,
            };
            for uri in &a.redirect_uris {
                match url::Url::parse(uri) {
                    Ok(u) if u.scheme() == "https" => {}
                    Ok(u)
                        if u.scheme() == "http"
                            && matches!(
                                u.host_str(),
                                Some("localhost" | "127.0.0.1" | "[::1]")
                            ) => {}
                    Ok(u) if a.public_client && !matches!(u.scheme(), "http" | "https") => {}
                    _ => {
                        return bad(format!(
                            "redirect URI {uri:?} of {client_id} must be https, or http on loopback"
                        ));
                    }
                }
            }
            let exposes = !a.scopes.is_empty() || !a.roles.is_empty();
            let identifier_uris = if a.identifier_uris.is_empty() && exposes {
                vec![format!("api://{client_id}")]
            } else {
                a.identifier_uris
                    .iter()
                    .map(|u| identifier_uri(u, &client_id))
                    .collect::<Result<_, _>>()?
            };
            if a.public_client && !a.certificates.is_empty() {
                return bad(format!(
                    "{client_id} is a public client: it cannot hold certificate credentials"
                ));
            }
            let certificates = a
                .certificates
                .iter()
                .map(|path| CertificateCredential::load(path))
                .collect::<Result<Vec<_>, _>>()?;
            let version = a.access_token_version.unwrap_or(2);
            let home = tenant_of(&a.tenant)?;
            if version == 1 && tenants.iter().any(|t| t.id == home && t.external_id) {
                return bad(format!(
                    "access_token_version of {client_id} is 1, but its tenant is an External ID one, which issues v2.0 tokens only"
                ));
            }
            if !matches!(version, 1 | 2) {
                return bad(format!(
                    "access_token_version of {client_id} must be 1 or 2"
                ));
            }
            apps.push(App {
                tenant: tenant_of(&a.tenant)?,
                sp_oid: stable_guid(&["sp", &client_id]),
                client_id,
                name: if a.name.is_empty() {
                    a.client_id.clone()
                } else {
                    a.name.clone()
                },
                public_client: a.public_client,
                redirect_uris: a.redirect_uris.clone(),
                secret,
                certificates,
                identifier_uris,
                scopes: a.scopes.clone(),
                roles: a.roles.clone(),
                pre_authorized: a
                    .pre_authorized
                    .iter()
                    .map(|c| c.to_ascii_lowercase())
                    .collect(),
                access_token_version: version,
                granted: a
                    .granted
                    .iter()
                    .map(|(k, v)| (resource_key(k), v.iter().cloned().collect()))
                    .collect(),
                app_roles: a
                    .app_roles
                    .iter()
                    .map(|(k, v)| (resource_key(k), v.iter().cloned().collect()))
                    .collect(),
            });
        }
        let mut seen = BTreeSet::new();
        for app in &apps {
            if !seen.insert(app.client_id.clone()) {
                return bad(format!("client_id {} is registered twice", app.client_id));
            }
        }

        let mut users = Vec::new();
        for u in &config.users {
            let tenant = tenant_of(&u.tenant)?;
            let username = u.username.to_ascii_lowercase();
            if !username.contains('@') {
                return bad(format!("username {username:?} must look like user@domain"));
            }
            let password_sha256 = match (&u.password, &u.password_sha256) {
                (_, Some(h)) => Some(SecretHash::from_hex(h.as_str())),
                (Some(p), None) => Some(SecretHash::of(p.expose())),
                (None, None) => None,
            };
            users.push(User {
                oid: u
                    .oid
                    .clone()
                    .unwrap_or_else(|| stable_guid(&["user", &tenant, &username])),
                display_name: if u.display_name.is_empty() {
                    username.clone()
                } else {
                    u.display_name.clone()
                },
                username,
                password_sha256,
                tenant,
                roles: u
                    .roles
                    .iter()
                    .map(|(k, v)| (resource_key(k), v.iter().cloned().collect()))
                    .collect(),
                disabled: u.disabled,
                listed: u.listed.unwrap_or(true),
            });
        }
        let mut dir = Self {
            tenants,
            apps,
            users,
            conditional_access: Vec::new(),
        };
        dir.conditional_access = config
            .conditional_access
            .iter()
            .map(|r| dir.rule(r))
            .collect::<Result<_, _>>()?;
        let mut ids = BTreeSet::new();
        for r in &dir.conditional_access {
            if !ids.insert(r.id.clone()) {
                return bad(format!(
                    "conditional_access: policy id {} is used twice (give each rule its own name or id)",
                    r.id
                ));
            }
        }
        Ok(dir)
    }

    /// Checks one `[[conditional_access]]` rule against the directory:
    /// every user and resource it names must exist.
    fn rule(&self, r: &RuleConfig) -> Result<Rule, IdpError> {
        let bad = |m: String| IdpError::Config(format!("conditional_access {:?}: {m}", r.name));
        if r.name.trim().is_empty() {
            return Err(IdpError::Config(
                "conditional_access: every rule needs a name".to_owned(),
            ));
        }
        let id = match &r.id {
            Some(id) if is_guid(id) => id.to_ascii_lowercase(),
            Some(id) => return Err(bad(format!("id {id:?} is not a GUID"))),
            None => stable_guid(&["conditional_access", &r.name]),
        };
        let users = r
            .users
            .iter()
            .map(|name| {
                self.user(name)
                    .map(|u| u.oid.clone())
                    .ok_or_else(|| bad(format!("names user {name:?}, who is not in [[users]]")))
            })
            .collect::<Result<_, _>>()?;
        let resources = r
            .resources
            .iter()
            .map(|name| {
                let key = resource_key(name);
                if key == GRAPH_APP_ID {
                    return Ok(key);
                }
                self.api_named(name)
                    .map(|a| a.client_id.clone())
                    .ok_or_else(|| {
                        bad(format!(
                            "names resource {name:?}, which is neither \"graph\" nor an app id or identifier URI in [[apps]]"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Rule {
            id,
            name: r.name.clone(),
            users,
            resources,
            require: r.require,
        })
    }

    /// The default tenant.
    pub fn default_tenant(&self) -> &Tenant {
        &self.tenants[0]
    }

    /// A tenant by id.
    pub fn tenant(&self, id: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.id.eq_ignore_ascii_case(id))
    }

    /// An app by client id.
    pub fn app(&self, client_id: &str) -> Option<&App> {
        self.apps
            .iter()
            .find(|a| a.client_id.eq_ignore_ascii_case(client_id))
    }

    /// The API app a resource identifier names.
    pub fn api_named(&self, value: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.is_named_by(value))
    }

    /// A user by username, case-insensitively.
    pub fn user(&self, username: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|u| u.username.eq_ignore_ascii_case(username))
    }

    /// A user by object id.
    pub fn user_by_oid(&self, oid: &str) -> Option<&User> {
        self.users.iter().find(|u| u.oid.eq_ignore_ascii_case(oid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin() -> Directory {
        Directory::from_config(&IdpConfig::builtin()).expect("builtin is valid")
    }

    #[test]
    fn builtin_directory_is_consistent() {
        let d = builtin();
        let api = d.app(DEFAULT_API_APP_ID).expect("api");
        assert!(api.is_named_by(&format!("api://{DEFAULT_API_APP_ID}")));
        assert!(api.is_named_by(DEFAULT_API_APP_ID));
        assert!(api.pre_authorized.contains(DEFAULT_DESKTOP_CLIENT_ID));
        let alice = d.user("Alice@mcpgate.test").expect("alice");
        assert!(alice.password_matches(DEFAULT_PASSWORD));
        assert!(!alice.password_matches("wrong"));
        assert_eq!(
            alice.oid,
            builtin().user("alice@mcpgate.test").expect("a").oid
        );
    }

    #[test]
    fn loopback_redirects_match_any_port_but_nothing_else() {
        let d = builtin();
        let desktop = d.app(DEFAULT_DESKTOP_CLIENT_ID).expect("desktop");
        assert!(desktop.redirect_allowed("http://localhost:53123"));
        assert!(desktop.redirect_allowed("http://127.0.0.1:4000/callback"));
        assert!(!desktop.redirect_allowed("http://127.0.0.1:4000/other"));
        assert!(!desktop.redirect_allowed("https://127.0.0.1:4000/callback"));
        assert!(!desktop.redirect_allowed("http://evil.example/callback"));
        assert!(!desktop.redirect_allowed("http://localhost.evil.example:80/"));
        assert!(!desktop.redirect_allowed("http://127.0.0.1:4000/callback#x"));
    }

    #[test]
    fn bad_configurations_are_refused() {
        for (text, why) in [
            ("", "at least one"),
            ("[[tenants]]\nid = \"nope\"", "not a GUID"),
            (
                "[[tenants]]\nid = \"7c3e9f2a-0d1b-4e5a-9c8b-2f6a1d4e8b30\"\n[[apps]]\nclient_id = \"3f8c2b1e-6a7d-4e2f-9b0c-5d1e7a9c4f21\"\npublic_client = true\nsecret_sha256 = \"00\"",
                "cannot have a secret",
            ),
            (
                "[[tenants]]\nid = \"7c3e9f2a-0d1b-4e5a-9c8b-2f6a1d4e8b30\"\n[[apps]]\nclient_id = \"3f8c2b1e-6a7d-4e2f-9b0c-5d1e7a9c4f21\"\nredirect_uris = [\"http://evil.example/cb\"]",
                "must be https",
            ),
            ("unknown_key = 1", "unknown field"),
        ] {
            let err = IdpConfig::from_toml_str(text)
                .and_then(|c| Directory::from_config(&c))
                .expect_err(text);
            assert!(err.to_string().contains(why), "{text}: {err}");
        }
    }

    /// The built-in directory's TOML with `rules` appended.
    fn with_rules(rules: &str) -> Result<Directory, IdpError> {
        let builtin = toml::to_string(&IdpConfig::builtin()).expect("builtin as TOML");
        IdpConfig::from_toml_str(&format!("{builtin}\n{rules}"))
            .and_then(|c| Directory::from_config(&c))
    }

    #[test]
    fn conditional_access_rules_are_checked_against_the_directory() {
        let d = with_rules(&format!(
            "[[conditional_access]]\nname = \"Require MFA for the MCP API\"\nusers = [\"Alice@mcpgate.test\"]\nresources = [\"api://{DEFAULT_API_APP_ID}\", \"graph\"]\nrequire = \"mfa\"\n\
[[conditional_access]]\nname = \"Everyone, everywhere\"\nid = \"C0A1B2C3-D4E5-4F60-8A7B-9C0D1E2F3A4B\"\nrequire = \"mfa\""
        ))
        .expect("valid rules");
        let [named, all] = &d.conditional_access[..] else {
            panic!("two rules");
        };
        let alice = d.user("alice@mcpgate.test").expect("alice");
        let bob = d.user("bob@mcpgate.test").expect("bob");
        assert!(named.covers(alice, DEFAULT_API_APP_ID));
        assert!(
            named.covers(alice, GRAPH_APP_ID),
            "graph names Graph's app id"
        );
        assert!(!named.covers(bob, DEFAULT_API_APP_ID));
        assert!(is_guid(&named.id), "an id derived from the name");
        assert_eq!(
            named.id,
            with_rules(
                "[[conditional_access]]\nname = \"Require MFA for the MCP API\"\nrequire = \"mfa\""
            )
            .expect("rule")
            .conditional_access[0]
                .id,
            "stable"
        );
        assert_eq!(all.id, "c0a1b2c3-d4e5-4f60-8a7b-9c0d1e2f3a4b");
        assert!(all.covers(bob, "anything"), "empty lists mean all");
        assert!(builtin().conditional_access.is_empty(), "none built in");

        for (rules, why) in [
            (
                "[[conditional_access]]\nname = \"x\"\nusers = [\"nobody@mcpgate.test\"]\nrequire = \"mfa\"",
                "names user \"nobody@mcpgate.test\", who is not in [[users]]",
            ),
            (
                "[[conditional_access]]\nname = \"x\"\nresources = [\"api://nothing\"]\nrequire = \"mfa\"",
                "names resource \"api://nothing\"",
            ),
            (
                "[[conditional_access]]\nname = \"x\"\nid = \"nope\"\nrequire = \"mfa\"",
                "is not a GUID",
            ),
            (
                "[[conditional_access]]\nname = \"x\"\nrequire = \"compliant_device\"",
                "unknown variant",
            ),
            (
                "[[conditional_access]]\nname = \"x\"\nrequire = \"mfa\"\n[[conditional_access]]\nname = \"x\"\nrequire = \"mfa\"",
                "used twice",
            ),
            (
                "[[conditional_access]]\nname = \" \"\nrequire = \"mfa\"",
                "needs a name",
            ),
            (
                "[[conditional_access]]\nname = \"x\"\nrequire = \"mfa\"\ngrant = \"block\"",
                "unknown field",
            ),
        ] {
            let err = with_rules(rules).expect_err(rules);
            assert!(err.to_string().contains(why), "{rules}: {err}");
        }
    }

    #[test]
    fn passwords_and_hashes_print_redacted() {
        let text = "[[tenants]]\nid = \"7c3e9f2a-0d1b-4e5a-9c8b-2f6a1d4e8b30\"\n\
[[apps]]\nclient_id = \"3f8c2b1e-6a7d-4e2f-9b0c-5d1e7a9c4f21\"\n\
secret_sha256 = \"abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789\"\n\
[[users]]\nusername = \"u@x.test\"\npassword = \"pw-in-plain\"\n\
[[users]]\nusername = \"v@x.test\"\npassword_sha256 = \"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"";
        let config = IdpConfig::from_toml_str(text).expect("config");
        let dir = Directory::from_config(&config).expect("dir");
        for printed in [format!("{config:?}"), format!("{dir:?}")] {
            for secret in ["pw-in-plain", "abcdef0123456789", "0123456789abcdef"] {
                assert!(!printed.contains(secret), "{secret} in {printed}");
            }
        }
        assert!(
            dir.user("u@x.test")
                .expect("u")
                .password_matches("pw-in-plain")
        );
    }

    #[test]
    fn identifier_uris_are_checked_as_entra_registers_them() {
        let with_uri = |uri: &str| {
            let mut config = IdpConfig::builtin();
            config.apps[0].identifier_uris = vec![uri.to_owned()];
            Directory::from_config(&config)
        };
        for good in [
            "api://x",
            "https://mcp.contoso.com/mcp",
            "urn:contoso:mcp",
            "http://127.0.0.1:8080/mcp",
        ] {
            assert!(with_uri(good).is_ok(), "{good}");
        }
        let stored = with_uri("https://mcp.contoso.com/mcp/").expect("trailing slash");
        assert_eq!(
            stored.apps[0].identifier_uris,
            ["https://mcp.contoso.com/mcp"]
        );
        for bad in [
            "mcp.contoso.com",
            "http://mcp.contoso.com/mcp",
            "https://mcp.contoso.com/mcp?x=1",
            "ftp://mcp.contoso.com",
        ] {
            assert!(with_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_external_id_tenant_takes_v2_tokens_only() {
        let mut config = IdpConfig::builtin();
        config.tenants[0].external_id = true;
        let dir = Directory::from_config(&config).expect("v2 apps are fine");
        assert!(dir.default_tenant().external_id);
        config.apps[0].access_token_version = Some(1);
        let err = Directory::from_config(&config).expect_err("v1 refused");
        assert!(err.to_string().contains("External ID"), "{err}");
    }
}

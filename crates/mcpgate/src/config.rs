//! Configuration: raw serde structs (one TOML file, `MCPGATE_…` environment
//! variables, then command-line flags) compiled into runtime settings that
//! are already valid.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use mcpgate_token::ValidationPolicy;
use mcpgate_token::issuer::{ENTRA_PUBLIC_AUTHORITY, entra_issuers};
use mcpgate_token::jwks::JwksOptions;
use serde::Deserialize;
use thiserror::Error;

/// The sections an `MCPGATE_…` variable may set; anything else under the
/// prefix (`MCPGATE_LOG`, `MCPGATE_CONFIG`) is not configuration.
const ENV_SECTIONS: [&str; 18] = [
    "bind",
    "metrics_bind",
    "shutdown_timeout_secs",
    "public_url",
    "ca_file",
    "data_dir",
    "store",
    "store_prefix",
    "auth",
    "jwks",
    "http",
    "sessions",
    "rate_limits",
    "policy",
    "audit",
    "idp",
    "broker",
    "stdio",
];

/// The whole configuration file. Every key can also be set by environment
/// variable: `MCPGATE_BIND`, `MCPGATE_AUTH__AUDIENCES='["api://…"]'`,
/// `MCPGATE_AUTH__ENTRA__TENANT_ID=…` (sections joined by `__`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// Listen address. Default `127.0.0.1:8080`.
    pub bind: Option<SocketAddr>,
    /// The URL clients reach this server at, when it differs from the bind
    /// address (behind a reverse proxy). Default `http://<bind>`.
    pub public_url: Option<url::Url>,
    /// Extra CA certificates (PEM) every outbound HTTP client trusts.
    pub ca_file: Option<PathBuf>,
    /// Where Prometheus scrapes `/metrics` (and `/healthz`, `/readyz`):
    /// a listener of its own, never the public one. Default
    /// `127.0.0.1:9090`; `off` for none.
    pub metrics_bind: Option<String>,
    /// How long a SIGTERM waits for calls in flight. Default 30.
    pub shutdown_timeout_secs: Option<u64>,
    /// Token validation.
    pub auth: RawAuth,
    /// Key caching.
    pub jwks: RawJwks,
    /// HTTP behaviour of the MCP endpoint.
    pub http: RawHttp,
    /// Bounds on MCP sessions.
    pub sessions: RawSessions,
    /// The audit trail: its JSON-lines file, the store, arguments recorded.
    pub audit: crate::audit::RawAudit,
    /// Tool calls per minute, per user and per client application.
    pub rate_limits: RawRateLimits,
    /// Per-tool policy (`[policy]`); reloaded on SIGHUP and when the file
    /// changes. Default: none, every caller may use every name.
    pub policy: Option<mcpgate_resource::policy::PolicyConfig>,
    /// Where state lives (the embedded IdP's keys and certificates).
    /// Default `$XDG_DATA_HOME/mcpgate`, else `~/.local/share/mcpgate`.
    pub data_dir: Option<PathBuf>,
    /// The embedded development identity provider.
    pub idp: RawIdp,
    /// Where durable state lives: `sqlite:PATH` (default: `mcpgate.db` in
    /// the data directory) or `redis://HOST:PORT/DB` for several replicas.
    pub store: Option<String>,
    /// Redis only: the prefix of every key, one per deployment sharing a
    /// database. Default `mcpgate`.
    pub store_prefix: Option<String>,
    /// The authorization server mcpgate runs for MCP clients.
    pub broker: RawBroker,
    /// Gateway mode: the MCP server(s) behind `/mcp` (`[[upstreams]]`).
    pub upstreams: Vec<RawUpstream>,
    /// `mcpgate stdio`: where its user signs in, and what for.
    pub stdio: RawStdio,
}

/// `[stdio]`: `mcpgate stdio`'s settings; its flags and their environment
/// variables win.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawStdio {
    /// The tenant, as MSAL takes it.
    pub authority: Option<String>,
    /// The public client's id.
    pub client_id: Option<String>,
    /// The scopes asked for. Default `["User.Read"]`.
    pub scopes: Vec<String>,
    /// Microsoft Graph's base URL.
    pub graph_url: Option<url::Url>,
    /// Where tokens are kept.
    pub cache_dir: Option<PathBuf>,
    /// How long a tool call waits for a pending sign-in.
    pub sign_in_timeout_secs: Option<u64>,
}

/// `[rate_limits]`: how fast one user, and one client application, may call
/// tools. Each is `{ per_minute = N, burst = M }`; absent means no limit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRateLimits {
    /// Per user (issuer, tenant and object id).
    pub user: Option<RawQuota>,
    /// Per client application (`azp` / `appid`).
    pub client: Option<RawQuota>,
}

/// Calls per minute, and how many may come at once.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuota {
    /// Sustained calls per minute.
    pub per_minute: u32,
    /// Calls allowed back to back. Default: a tenth of `per_minute`, at
    /// least 1.
    pub burst: Option<u32>,
}

impl RawRateLimits {
    /// The limits, defaults filled in.
    pub fn limits(&self) -> mcpgate_resource::ratelimit::RateLimits {
        let quota = |q: &RawQuota| mcpgate_resource::ratelimit::Quota {
            per_minute: q.per_minute.max(1),
            burst: q.burst.unwrap_or(q.per_minute / 10).max(1),
        };
        mcpgate_resource::ratelimit::RateLimits {
            per_user: self.user.as_ref().map(quota),
            per_client: self.client.as_ref().map(quota),
        }
    }
}

/// `[[upstreams]]`: an existing MCP server mcpgate stands in front of.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawUpstream {
    /// Its name, in logs and audit records. Default "upstream". With
    /// several upstreams each needs one (lowercase letters, digits, `-`):
    /// clients see its tools as `<name>__<tool>`.
    pub name: Option<String>,
    /// A stdio server: its command line, split as a shell would split it
    /// and never run through one.
    pub command: Option<String>,
    /// A Streamable HTTP server: its MCP URL.
    pub url: Option<url::Url>,
    /// Variables set for a stdio child (it inherits only PATH, HOME, the
    /// locale and the temporary directory of the gateway's).
    pub env: std::collections::BTreeMap<String, String>,
    /// A stdio child's working directory. Default: the gateway's.
    pub cwd: Option<PathBuf>,
    /// `session` (default): one upstream session, and for stdio one
    /// child, per client session; `shared`: one for all (only for servers
    /// that keep nothing per client).
    pub isolation: Option<String>,
    /// How long a forwarded request may take. Default 120.
    pub timeout_secs: Option<u64>,
    /// How long starting and initializing an upstream session may take.
    /// Default 30.
    pub start_timeout_secs: Option<u64>,
    /// Upstream sessions open at once (for stdio: child processes); past
    /// it a new client session is refused. Default 256.
    pub max_sessions: Option<usize>,
    /// What an HTTP upstream learns of the caller: `none` (default),
    /// `headers` (`X-MCPGate-User-*`, signed with HMAC-SHA256 under the
    /// shared secret) or `obo` (a token for the upstream's own audience,
    /// obtained On-Behalf-Of the caller: from the broker's grant, or in
    /// direct mode from the caller's own token). Never the caller's
    /// token. A stdio child always gets the user's identifiers in its
    /// environment.
    pub identity: Option<String>,
    /// `identity = "obo"`: the scopes of the upstream's tokens
    /// (`api://<its app id>/.default`).
    pub obo_scopes: Vec<String>,
    /// The shared secret for `identity = "headers"` (at least 32 bytes),
    /// read from this file; or set `MCPGATE_UPSTREAM_IDENTITY_SECRET`.
    pub identity_secret_file: Option<PathBuf>,
    /// What a tool whose definition changed since first seen becomes:
    /// `enforce` (default: hidden until accepted with `mcpgate pins`),
    /// `warn` (reported, still shown) or `off`.
    pub pinning: Option<mcpgate_resource::pins::PinMode>,
}

/// `[broker]`: mcpgate as the authorization server MCP clients sign in at,
/// federated to the upstream identity provider as a confidential client.
/// On by default whenever mcpgate knows an upstream client for itself: the
/// embedded development IdP's, or `client_id` here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawBroker {
    /// `broker` (default where an upstream client is known) or `direct`
    /// (the metadata names the upstream itself; clients hold
    /// pre-registered ids).
    pub mode: Option<BrokerMode>,
    /// The upstream issuer. Default: the embedded IdP's, or the
    /// `[auth.entra]` tenant's v2.0 issuer.
    pub issuer: Option<String>,
    /// mcpgate's client id at the upstream.
    pub client_id: Option<String>,
    /// A file holding the client secret (never the secret itself: it
    /// would show in `ps` and in the config). Also
    /// `MCPGATE_BROKER_CLIENT_SECRET`.
    pub client_secret_file: Option<PathBuf>,
    /// A PEM private key whose certificate is registered upstream
    /// (`private_key_jwt`): no secret at all.
    pub certificate_key_file: Option<PathBuf>,
    /// A federated token file (Azure workload or managed identity);
    /// default `AZURE_FEDERATED_TOKEN_FILE` when set.
    pub federated_token_file: Option<PathBuf>,
    /// The scopes asked of the upstream for the user. Default: the
    /// protected API's scope (`api://<app>/mcp:tools`).
    pub scopes: Vec<String>,
    /// Client ids that skip the consent page (as Entra's pre-authorized
    /// applications do).
    pub pre_authorized: Vec<String>,
    /// Graph's `/me`, for `get_user_details`. Default: Microsoft Graph, or
    /// the embedded IdP's `/v1.0/me`.
    pub graph_url: Option<url::Url>,
    /// Lifetime of the access tokens mcpgate issues. Default 600 (10 min).
    pub access_token_lifetime_secs: Option<u64>,
}

/// Whether mcpgate brokers sign-ins or points clients at the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerMode {
    /// mcpgate is the authorization server MCP clients see.
    Broker,
    /// The metadata names the upstream; mcpgate only validates its tokens.
    Direct,
}

/// `[idp]`: the development identity provider (`mcpgate idp`, and
/// `mcpgate serve` when no issuer is configured).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawIdp {
    /// Listen address. Default `127.0.0.1:8443` (a free port when the
    /// server itself binds port 0).
    pub bind: Option<SocketAddr>,
    /// Directory file: tenants, apps and users (TOML). Default: built in.
    pub directory: Option<PathBuf>,
    /// Sign this user in without a page (loopback only). Also
    /// `MCPGATE_IDP_AUTO_APPROVE`.
    pub auto_approve: Option<String>,
    /// Serve plain http (loopback only). MSAL refuses http authorities.
    pub plain_http: bool,
    /// TLS certificate chain (PEM) instead of a generated one.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
}

/// `[auth]`: which tokens are accepted.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAuth {
    /// Shorthand for a Microsoft Entra ID app registration.
    pub entra: Option<RawEntra>,
    /// Trusted issuers (exact, or with `{tenantid}`).
    pub issuers: Vec<String>,
    /// A JWKS URL, instead of OpenID discovery, for every issuer.
    pub jwks_uri: Option<url::Url>,
    /// Accepted audiences.
    pub audiences: Vec<String>,
    /// Scopes every delegated token must carry.
    pub required_scopes: Vec<String>,
    /// Roles every token must carry.
    pub required_roles: Vec<String>,
    /// Broader scopes implying narrower ones.
    pub scope_implies: BTreeMap<String, Vec<String>>,
    /// Accept app-only tokens. Default false.
    pub allow_app_only: bool,
    /// Roles app-only tokens must carry.
    pub app_only_roles: Vec<String>,
    /// Allowed tenants (`tid`).
    pub allowed_tenants: Vec<String>,
    /// Allowed client applications (`azp`/`appid`).
    pub allowed_client_apps: Vec<String>,
    /// Signature algorithms. Default `["RS256"]`.
    pub algorithms: Option<Vec<String>>,
    /// Clock skew in seconds. Default 60.
    pub clock_skew_secs: Option<u64>,
    /// Largest token in bytes. Default 16384.
    pub max_token_bytes: Option<usize>,
    /// Authorization servers named in the metadata. Default: the issuers
    /// (Entra: the v2.0 issuer).
    pub authorization_servers: Vec<String>,
}

/// `[auth.entra]`: one Entra app registration exposing an API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntra {
    /// Directory (tenant) id, or `organizations` for a multi-tenant app.
    pub tenant_id: String,
    /// Application (client) id of the API registration.
    pub app_id: String,
    /// The exposed scope. Default `mcp:tools`.
    #[serde(default = "default_scope")]
    pub scope: String,
    /// The API's Application ID URI. Default `api://<app_id>`. Microsoft's
    /// guide for MCP servers sets it to the server's https MCP URL; then
    /// clients may name the server as RFC 8707 `resource` and Entra accepts
    /// it.
    #[serde(default)]
    pub identifier_uri: Option<String>,
    /// Authority host. Default `https://login.microsoftonline.com`; an
    /// External ID (CIAM) tenant's `https://<name>.ciamlogin.com`.
    #[serde(default = "default_authority")]
    pub authority: String,
    /// An External ID (CIAM) tenant: tokens carry
    /// `https://<tenant-id>.ciamlogin.com/<tenant-id>/v2.0`. Default: when
    /// the authority is on `ciamlogin.com`; set it for a custom domain.
    #[serde(default)]
    pub external_id: Option<bool>,
}

impl RawEntra {
    /// The Application ID URI: configured, else `api://<app_id>`.
    pub fn identifier_uri(&self) -> String {
        match &self.identifier_uri {
            Some(uri) => uri.trim_end_matches('/').to_owned(),
            None => format!("api://{}", self.app_id),
        }
    }

    /// The issuer of an External ID tenant: `https://<tid>.ciamlogin.com/<tid>/v2.0`,
    /// or, for the development IdP presenting such a tenant on loopback,
    /// the same path on its own host.
    pub fn ciam_issuer(&self) -> String {
        let loopback =
            url::Url::parse(&self.authority).is_ok_and(|u| mcpgate_resource::is_loopback_host(&u));
        if loopback {
            format!(
                "{}/{}/v2.0",
                self.authority.trim_end_matches('/'),
                self.tenant_id
            )
        } else {
            mcpgate_token::issuer::ciam_issuer(&self.tenant_id)
        }
    }

    /// The exposed scope in full, as clients ask for it.
    pub fn api_scope(&self) -> String {
        format!("{}/{}", self.identifier_uri(), self.scope)
    }

    /// Whether the tenant is an External ID (CIAM) one.
    pub fn is_external_id(&self) -> bool {
        self.external_id
            .unwrap_or_else(|| mcpgate_token::issuer::is_ciam_authority(&self.authority))
    }
}

fn default_scope() -> String {
    "mcp:tools".to_owned()
}

fn default_authority() -> String {
    ENTRA_PUBLIC_AUTHORITY.to_owned()
}

/// `[jwks]`: key caching bounds.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawJwks {
    /// Shortest key-set lifetime. Default 300.
    pub min_ttl_secs: Option<u64>,
    /// Longest key-set lifetime. Default 86400.
    pub max_ttl_secs: Option<u64>,
    /// Least time between refreshes. Default 30.
    pub min_refresh_interval_secs: Option<u64>,
    /// Timeout of one fetch. Default 10.
    pub timeout_secs: Option<u64>,
}

/// `[http]`: the MCP endpoint's HTTP behaviour.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawHttp {
    /// Extra accepted `Host` values (public deployments).
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed to call `/mcp`.
    pub allowed_origins: Vec<String>,
    /// Largest request body. Default 1 MiB.
    pub max_body_bytes: Option<usize>,
    /// `resource_name` in the metadata. Default "mcpgate".
    pub resource_name: Option<String>,
}

/// `[sessions]`: how many MCP sessions (the revisions before 2026-07-28)
/// may be open, and for how long.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSessions {
    /// Sessions open at once, all users together; past it a new one is
    /// refused (503). Default 10000.
    pub max_total: Option<usize>,
    /// Sessions one user may hold; past it their least recently used one
    /// is closed. Default 64.
    pub max_per_principal: Option<usize>,
    /// A session unused this long is gone (404, and the client starts a new
    /// one). Default 3600.
    pub idle_secs: Option<u64>,
}

impl RawSessions {
    /// The limits, defaults filled in.
    pub fn limits(&self) -> mcpgate_resource::session::SessionLimits {
        let default = mcpgate_resource::session::SessionLimits::default();
        mcpgate_resource::session::SessionLimits {
            max_total: self.max_total.unwrap_or(default.max_total).max(1),
            max_per_principal: self
                .max_per_principal
                .unwrap_or(default.max_per_principal)
                .max(1),
            idle: self
                .idle_secs
                .map_or(default.idle, std::time::Duration::from_secs),
        }
    }
}

/// The configuration could not be loaded or makes no sense.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file or an environment variable does not parse.
    #[error("{0}")]
    Load(Box<figment::Error>),
    /// Nothing says which tokens to accept.
    #[error(
        "no token issuer is configured. Give --issuer URL and --audience ID (or [auth.entra] tenant_id and app_id in --config FILE); see the README's configuration section"
    )]
    NoIssuer,
    /// Issuers but no audience.
    #[error(
        "no audience is configured: give --audience with this server's API identifier (api://<app-id>)"
    )]
    NoAudience,
    /// An External ID tenant named by anything but its id.
    #[error(
        "[auth.entra] external_id: an External ID (CIAM) tenant is single-tenant; give its Directory (tenant) ID as tenant_id"
    )]
    ExternalIdTenant,
    /// An Application ID URI that is no URI.
    #[error(
        "[auth.entra] identifier_uri {0:?} is not an absolute URI: give the API's Application ID URI (api://<app-id>, or the server's https MCP URL)"
    )]
    IdentifierUri(String),
    /// The policy does not compile.
    #[error("invalid auth configuration: {0}")]
    Policy(#[from] mcpgate_token::PolicyError),
}

impl RawConfig {
    /// Reads `file` (if any), then `MCPGATE_…` variables on top.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let env = Env::prefixed("MCPGATE_").split("__").filter(|key| {
            let first = key.as_str().split('.').next().unwrap_or_default();
            ENV_SECTIONS.iter().any(|s| s.eq_ignore_ascii_case(first))
        });
        figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))
    }

    /// Whether any token issuer is configured.
    pub fn has_issuer(&self) -> bool {
        self.auth.entra.is_some() || !self.auth.issuers.is_empty()
    }

    /// The validation policy, with the Entra shorthand expanded.
    pub fn policy(&self) -> Result<ValidationPolicy, ConfigError> {
        let a = &self.auth;
        let mut policy = ValidationPolicy {
            issuers: a.issuers.clone(),
            audiences: a.audiences.clone(),
            required_scopes: a.required_scopes.clone(),
            required_roles: a.required_roles.clone(),
            scope_implies: a.scope_implies.clone(),
            allow_app_only: a.allow_app_only,
            app_only_roles: a.app_only_roles.clone(),
            allowed_tenants: a.allowed_tenants.clone(),
            allowed_client_apps: a.allowed_client_apps.clone(),
            ..Default::default()
        };
        if let Some(e) = &a.entra {
            let tenant = if is_multi_tenant(&e.tenant_id) {
                mcpgate_token::issuer::TENANT_TEMPLATE
            } else {
                e.tenant_id.as_str()
            };
            if e.is_external_id() {
                if is_multi_tenant(&e.tenant_id) {
                    return Err(ConfigError::ExternalIdTenant);
                }
                policy.issuers.push(e.ciam_issuer());
            } else {
                policy.issuers.extend(entra_issuers(&e.authority, tenant));
            }
            if e.identifier_uri.is_some() && url::Url::parse(&e.identifier_uri()).is_err() {
                return Err(ConfigError::IdentifierUri(e.identifier_uri()));
            }
            // v1.0 tokens carry the identifier URI the client asked by,
            // v2.0 tokens the bare app id.
            policy.audiences.push(e.identifier_uri());
            policy.audiences.push(e.app_id.clone());
            policy.required_scopes.push(e.api_scope());
        }
        if let Some(algs) = &a.algorithms {
            policy.algorithms = algs.clone();
        }
        if let Some(s) = a.clock_skew_secs {
            policy.clock_skew = Duration::from_secs(s);
        }
        if let Some(m) = a.max_token_bytes {
            policy.max_token_bytes = m;
        }
        if policy.issuers.is_empty() {
            return Err(ConfigError::NoIssuer);
        }
        if policy.audiences.is_empty() {
            return Err(ConfigError::NoAudience);
        }
        policy.compile()?;
        Ok(policy)
    }

    /// The authorization servers the metadata names.
    pub fn authorization_servers(&self, policy: &ValidationPolicy) -> Vec<String> {
        if !self.auth.authorization_servers.is_empty() {
            return self.auth.authorization_servers.clone();
        }
        // Clients discover Entra through its v2.0 issuer; a multi-tenant
        // app points them at `organizations`.
        if let Some(issuer) = self.entra_v2_issuer() {
            return vec![issuer];
        }
        policy
            .issuers
            .iter()
            .map(|i| i.replace(mcpgate_token::issuer::TENANT_TEMPLATE, "organizations"))
            .collect()
    }

    /// The `[auth.entra]` tenant's v2.0 issuer (`organizations` for a
    /// multi-tenant app), if the shorthand is used.
    pub fn entra_v2_issuer(&self) -> Option<String> {
        let e = self.auth.entra.as_ref()?;
        if e.is_external_id() {
            return Some(e.ciam_issuer());
        }
        let tenant = if is_multi_tenant(&e.tenant_id) {
            "organizations"
        } else {
            &e.tenant_id
        };
        Some(format!(
            "{}/{tenant}/v2.0",
            e.authority.trim_end_matches('/')
        ))
    }

    /// Where the `[auth.entra]` shorthand put its v1.0 issuer (right after
    /// its v2.0 one), if it is used.
    pub fn entra_v1_issuer_index(&self, policy: &ValidationPolicy) -> Option<usize> {
        self.auth.entra.as_ref()?;
        policy
            .issuers
            .iter()
            .rposition(|i| i.starts_with("https://sts.windows.net/"))
            .filter(|i| *i > 0)
    }

    /// Key-cache settings.
    pub fn jwks_options(&self) -> JwksOptions {
        let d = JwksOptions::default();
        let j = &self.jwks;
        let secs = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_secs);
        JwksOptions {
            min_ttl: secs(j.min_ttl_secs, d.min_ttl),
            max_ttl: secs(j.max_ttl_secs, d.max_ttl),
            min_refresh_interval: secs(j.min_refresh_interval_secs, d.min_refresh_interval),
            ..d
        }
    }

    /// Timeout of one discovery or JWKS fetch.
    pub fn fetch_timeout(&self) -> Duration {
        Duration::from_secs(self.jwks.timeout_secs.unwrap_or(10))
    }
}

fn is_multi_tenant(tenant: &str) -> bool {
    matches!(tenant, "organizations" | "common" | "{tenantid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str) -> Result<RawConfig, ConfigError> {
        Figment::new()
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))
    }

    #[test]
    fn entra_shorthand_expands_to_both_issuers_and_audiences() {
        let raw = from_toml(
            r#"
            [auth.entra]
            tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47"
            app_id = "3f8c2b1e-6a7d-4e2f-9b0c-5d1e7a9c4f21"
            "#,
        )
        .expect("parses");
        let p = raw.policy().expect("valid");
        assert_eq!(
            p.issuers,
            [
                "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0",
                "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/"
            ]
        );
        assert_eq!(
            p.audiences,
            [
                "api://3f8c2b1e-6a7d-4e2f-9b0c-5d1e7a9c4f21",
                "3f8c2b1e-6a7d-4e2f-9b0c-5d1e7a9c4f21"
            ]
        );
        assert_eq!(
            p.required_scopes,
            ["api://3f8c2b1e-6a7d-4e2f-9b0c-5d1e7a9c4f21/mcp:tools"]
        );
        assert_eq!(
            raw.authorization_servers(&p),
            ["https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"]
        );
    }

    #[test]
    fn an_external_id_tenant_trusts_its_ciam_issuer_alone() {
        let tid = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        let ciam = format!("https://{tid}.ciamlogin.com/{tid}/v2.0");
        let raw = from_toml(&format!(
            "[auth.entra]\ntenant_id = \"{tid}\"\napp_id = \"a\"\nauthority = \"https://contoso.ciamlogin.com\"\n"
        ))
        .expect("parses");
        let p = raw.policy().expect("valid");
        assert_eq!(p.issuers, std::slice::from_ref(&ciam));
        assert_eq!(raw.authorization_servers(&p), std::slice::from_ref(&ciam));
        assert_eq!(raw.entra_v1_issuer_index(&p), None);

        // A custom domain says so itself.
        let raw = from_toml(&format!(
            "[auth.entra]\ntenant_id = \"{tid}\"\napp_id = \"a\"\nauthority = \"https://login.contoso.com\"\nexternal_id = true\n"
        ))
        .expect("parses");
        assert_eq!(raw.policy().expect("valid").issuers, [ciam]);

        let raw = from_toml(
            "[auth.entra]\ntenant_id = \"organizations\"\napp_id = \"a\"\nauthority = \"https://contoso.ciamlogin.com\"\n",
        )
        .expect("parses");
        assert!(matches!(raw.policy(), Err(ConfigError::ExternalIdTenant)));
    }

    #[test]
    fn an_https_identifier_uri_is_the_audience_and_names_the_scope() {
        let raw = from_toml(
            "[auth.entra]\ntenant_id = \"t\"\napp_id = \"a\"\nidentifier_uri = \"https://mcp.contoso.com/mcp/\"\n",
        )
        .expect("parses");
        let p = raw.policy().expect("valid");
        assert_eq!(p.audiences, ["https://mcp.contoso.com/mcp", "a"]);
        assert_eq!(p.required_scopes, ["https://mcp.contoso.com/mcp/mcp:tools"]);
        let bad = from_toml(
            "[auth.entra]\ntenant_id = \"t\"\napp_id = \"a\"\nidentifier_uri = \"mcp.contoso.com\"\n",
        )
        .expect("parses");
        assert!(matches!(bad.policy(), Err(ConfigError::IdentifierUri(_))));
    }

    #[test]
    fn an_external_id_tenant_presented_on_loopback_keeps_the_ciam_path() {
        let tid = "7c3e9f2a-0d1b-4e5a-9c8b-2f6a1d4e8b30";
        let raw = from_toml(&format!(
            "[auth.entra]\ntenant_id = \"{tid}\"\napp_id = \"a\"\nauthority = \"https://127.0.0.1:8443/\"\nexternal_id = true\n"
        ))
        .expect("parses");
        let p = raw.policy().expect("valid");
        assert_eq!(p.issuers, [format!("https://127.0.0.1:8443/{tid}/v2.0")]);
        assert_eq!(
            raw.entra_v2_issuer().as_deref(),
            Some(format!("https://127.0.0.1:8443/{tid}/v2.0").as_str())
        );
    }

    #[test]
    fn multi_tenant_entra_uses_the_template() {
        let raw = from_toml("[auth.entra]\ntenant_id = \"organizations\"\napp_id = \"a\"\n")
            .expect("parses");
        let p = raw.policy().expect("valid");
        assert_eq!(
            p.issuers[0],
            "https://login.microsoftonline.com/{tenantid}/v2.0"
        );
        assert_eq!(
            raw.authorization_servers(&p),
            ["https://login.microsoftonline.com/organizations/v2.0"]
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(from_toml("bnid = \"127.0.0.1:1\"").is_err());
        assert!(from_toml("[auth]\naudience = \"x\"").is_err());
    }

    #[test]
    fn nothing_configured_says_what_to_do() {
        let err = RawConfig::default().policy().expect_err("no issuer");
        assert!(err.to_string().contains("--issuer"), "{err}");
    }

    /// Every configuration example in the README loads as written: the
    /// server's config compiles into a validator, an IdP directory into a
    /// directory.
    #[test]
    fn every_readme_example_loads() {
        let readme = include_str!("../../../README.md");
        let blocks: Vec<&str> = readme
            .split("```toml\n")
            .skip(1)
            .filter_map(|rest| rest.split("\n```").next())
            .collect();
        assert!(blocks.len() >= 3, "found {} TOML examples", blocks.len());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        for block in blocks {
            if block.contains("[[apps]]") || block.contains("[[tenants]]") {
                mcpgate_devidp::IdpConfig::from_toml_str(block)
                    .unwrap_or_else(|e| panic!("IdP directory example: {e}\n{block}"));
                continue;
            }
            let mut raw = from_toml(block).unwrap_or_else(|e| panic!("{e}\n{block}"));
            // The example's CA file is the reader's, not this machine's.
            raw.ca_file = None;
            if raw.has_issuer() {
                // reqwest's client needs a runtime to be built in.
                let _guard = runtime.enter();
                crate::validator::build(&raw, None).unwrap_or_else(|e| panic!("{e:#}\n{block}"));
            }
        }
    }

    #[test]
    fn an_empty_jwks_uri_is_a_load_error() {
        assert!(from_toml("[auth]\njwks_uri = \"\"").is_err());
    }

    #[test]
    fn hmac_is_refused_from_config() {
        let raw = from_toml(
            "[auth]\nissuers = [\"https://i.example/\"]\naudiences = [\"a\"]\nalgorithms = [\"HS256\"]",
        )
        .expect("parses");
        assert!(matches!(raw.policy(), Err(ConfigError::Policy(_))));
    }
}

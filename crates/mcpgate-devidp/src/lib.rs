//! `mcpgate-devidp`: a development identity provider that speaks
//! Microsoft Entra ID's v2 endpoints and token shapes, so that MSAL, MCP
//! clients and mcpgate itself run against it unchanged — with no tenant
//! and no internet.
//!
//! | module | what it owns |
//! | --- | --- |
//! | [`directory`] | tenants, app registrations and users (TOML or built in) |
//! | [`keys`] | RS256 signing keys: persisted, rotated, published |
//! | [`tls`] | the development CA, the server certificate, the TLS listener |
//! | [`scope`] | Entra's scope grammar and its errors (AADSTS28000, 70011, 9010010) |
//! | [`mint`] | access, ID and refresh tokens shaped like Entra's |
//! | [`authorize`] | the authorization endpoint, sign-in and consent pages |
//! | [`token`] | the token endpoint and its grants |
//! | [`device`] | the device authorization grant and its page |
//! | [`metadata`] | OpenID discovery, the key set, Graph's `/me`, sign-out |
//! | [`error`] | Entra's error JSON |

pub mod authorize;
pub mod device;
pub mod directory;
pub mod error;
pub mod idp;
pub mod keys;
pub mod metadata;
pub mod mint;
pub mod pages;
pub mod params;
pub mod scope;
pub mod state;
pub mod tls;
pub mod token;
mod util;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use mcpgate_token::clock::{Clock, SystemClock};
use serde::Serialize;
use tokio::sync::watch;

pub use crate::directory::{Directory, IdpConfig};
pub use crate::error::IdpError;
pub use crate::keys::rotate_keys;
pub use crate::tls::TlsMode;

use crate::directory::Secret;
use crate::idp::Idp;
use crate::keys::KeyRing;
use crate::util::{random_token, sha256_hex, write_private};

/// Largest request body the IdP reads.
const MAX_BODY: usize = 64 * 1024;

/// How to run the IdP.
#[derive(Debug, Clone)]
pub struct IdpOptions {
    /// Listen address; port 0 picks a free one.
    pub bind: SocketAddr,
    /// Where keys, certificates and generated secrets live.
    pub data_dir: PathBuf,
    /// TLS.
    pub tls: TlsMode,
    /// Overrides the configuration's `auto_approve`.
    pub auto_approve: Option<String>,
    /// The base URL clients use, when it is not `scheme://bind`.
    pub public_url: Option<url::Url>,
    /// The clock (tests move it).
    pub clock: Arc<dyn Clock>,
}

impl IdpOptions {
    /// Loopback on a free port, TLS with a generated certificate.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            tls: TlsMode::Generate,
            auto_approve: None,
            public_url: None,
            clock: Arc::new(SystemClock),
        }
    }
}

/// A registered client, as the ready file lists it (never a secret).
#[derive(Debug, Clone, Serialize)]
pub struct ClientInfo {
    /// Application (client) id.
    pub client_id: String,
    /// Display name.
    pub name: String,
    /// Public client (no secret).
    pub public: bool,
    /// Redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Exposed scopes, full names (`api://…/mcp:tools`).
    pub scopes: Vec<String>,
    /// Defined app roles.
    pub roles: Vec<String>,
    /// File holding a generated client secret (mode 0600), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
}

/// A user, as the ready file lists it.
#[derive(Debug, Clone, Serialize)]
pub struct UserInfo {
    /// Sign-in name.
    pub username: String,
    /// Display name.
    pub display_name: String,
}

/// What a running IdP tells its callers (the ready file's content).
#[derive(Debug, Clone, Serialize)]
pub struct IdpInfo {
    /// `https://127.0.0.1:port`.
    pub base_url: String,
    /// The default tenant's authority, as MSAL takes it.
    pub authority: String,
    /// The default tenant's v2 issuer.
    pub issuer: String,
    /// The default tenant's v1 issuer shape.
    pub issuer_v1: String,
    /// The key set.
    pub jwks_uri: String,
    /// The CA clients must trust, when the certificate was generated.
    pub ca_file: Option<PathBuf>,
    /// The default tenant.
    pub tenant_id: String,
    /// The auto-approved user, if any.
    pub auto_approve: Option<String>,
    /// Where a person enters a device code.
    pub device_login_url: String,
    /// Registered clients.
    pub clients: Vec<ClientInfo>,
    /// Users.
    pub users: Vec<UserInfo>,
    /// The listening address.
    pub bind: SocketAddr,
}

/// A running IdP.
#[derive(Debug)]
pub struct RunningIdp {
    info: IdpInfo,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningIdp {
    /// Where it listens and what it serves.
    pub fn info(&self) -> &IdpInfo {
        &self.info
    }

    /// Stops accepting and closes open connections.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Generated secrets: their SHA-256 and their files, by client id.
struct GeneratedSecrets {
    hashes: BTreeMap<String, String>,
    files: BTreeMap<String, PathBuf>,
}

/// Reads or creates the secrets of confidential clients that have none
/// configured: `<data_dir>/client-secrets/<client_id>`, mode 0600.
fn generated_secrets(dir: &Directory, data_dir: &Path) -> Result<GeneratedSecrets, IdpError> {
    let mut hashes = BTreeMap::new();
    let mut files = BTreeMap::new();
    for app in &dir.apps {
        if !matches!(app.secret, Some(Secret::Generated)) {
            continue;
        }
        let path = data_dir.join("client-secrets").join(&app.client_id);
        let secret = match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_owned(),
            Ok(_) => return Err(IdpError::Config(format!("{} is empty", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let s = random_token();
                write_private(&path, s.as_bytes())?;
                s
            }
            Err(e) => return Err(IdpError::io(&path, e)),
        };
        hashes.insert(app.client_id.clone(), sha256_hex(secret.as_bytes()));
        files.insert(app.client_id.clone(), path);
    }
    Ok(GeneratedSecrets { hashes, files })
}

/// The IdP's routes.
fn router(idp: Arc<Idp>) -> Router {
    Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(metadata::openid_v2),
        )
        .route(
            "/{tenant}/.well-known/openid-configuration",
            get(metadata::openid_v1),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(metadata::keys))
        .route("/{tenant}/discovery/keys", get(metadata::keys))
        .route("/discovery/v2.0/keys", get(metadata::keys))
        .route("/discovery/keys", get(metadata::keys))
        .route(
            "/{tenant}/oauth2/v2.0/authorize",
            get(authorize::get).post(authorize::post),
        )
        .route("/{tenant}/oauth2/v2.0/token", post(token::post))
        .route("/{tenant}/oauth2/v2.0/devicecode", post(device::start))
        .route(
            "/{tenant}/oauth2/v2.0/logout",
            get(metadata::logout).post(metadata::logout),
        )
        .route(
            "/devicelogin",
            get(device::login_page).post(device::login_submit),
        )
        .route("/v1.0/me", get(metadata::me))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(metadata::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(idp)
}

/// Starts the IdP: opens the data directory (keys, certificates, secrets),
/// binds, and serves until [`RunningIdp::shutdown`].
pub async fn start(config: IdpConfig, options: IdpOptions) -> Result<RunningIdp, IdpError> {
    let dir = Directory::from_config(&config)?;
    let loopback = options.bind.ip().is_loopback();
    let auto_approve = options
        .auto_approve
        .clone()
        .or_else(|| config.auto_approve.clone())
        .filter(|s| !s.is_empty());
    if let Some(user) = &auto_approve {
        if !loopback {
            return Err(IdpError::Refused(format!(
                "auto-approve ({user}) signs anyone in without a page; it is refused unless the IdP listens on loopback (it was {})",
                options.bind
            )));
        }
        if dir.user(user).is_none() {
            return Err(IdpError::Config(format!(
                "auto_approve names {user}, who is not in the directory"
            )));
        }
    }
    if matches!(options.tls, TlsMode::PlainHttp) && !loopback {
        return Err(IdpError::Refused(format!(
            "plain http is refused unless the IdP listens on loopback (it was {})",
            options.bind
        )));
    }
    std::fs::create_dir_all(&options.data_dir).map_err(|e| IdpError::io(&options.data_dir, e))?;
    let keys = KeyRing::open(&options.data_dir)?;
    let GeneratedSecrets {
        hashes: secret_hashes,
        files: secret_files,
    } = generated_secrets(&dir, &options.data_dir)?;

    let listener = tokio::net::TcpListener::bind(options.bind)
        .await
        .map_err(|source| IdpError::Bind {
            addr: options.bind,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| IdpError::Bind {
        addr: options.bind,
        source,
    })?;
    let public_host = options
        .public_url
        .as_ref()
        .and_then(|u| u.host_str().map(str::to_owned));
    let tls = tls::prepare(
        &options.tls,
        &options.data_dir,
        &tls::cert_hosts(addr.ip(), public_host.as_deref()),
    )?;
    let base = match &options.public_url {
        Some(u) => u.as_str().trim_end_matches('/').to_owned(),
        None => {
            let scheme = if tls.is_some() { "https" } else { "http" };
            let host = if addr.ip().is_unspecified() {
                "localhost".to_owned()
            } else {
                match addr {
                    SocketAddr::V4(a) => a.ip().to_string(),
                    SocketAddr::V6(a) => format!("[{}]", a.ip()),
                }
            };
            format!("{scheme}://{host}:{}", addr.port())
        }
    };

    let tenant = dir.default_tenant().id.clone();
    let info = IdpInfo {
        authority: format!("{base}/{tenant}"),
        issuer: format!("{base}/{tenant}/v2.0"),
        issuer_v1: format!("{base}/{tenant}/"),
        jwks_uri: format!("{base}/{tenant}/discovery/v2.0/keys"),
        ca_file: tls.as_ref().and_then(|t| t.ca_file.clone()),
        tenant_id: tenant,
        auto_approve: auto_approve.clone(),
        device_login_url: format!("{base}/devicelogin"),
        clients: dir
            .apps
            .iter()
            .map(|a| ClientInfo {
                client_id: a.client_id.clone(),
                name: a.name.clone(),
                public: a.public_client,
                redirect_uris: a.redirect_uris.clone(),
                scopes: a
                    .scopes
                    .iter()
                    .map(|s| {
                        let prefix = a.identifier_uris.first().unwrap_or(&a.client_id);
                        format!("{prefix}/{s}")
                    })
                    .collect(),
                roles: a.roles.clone(),
                secret_file: secret_files.get(&a.client_id).cloned(),
            })
            .collect(),
        users: dir
            .users
            .iter()
            .map(|u| UserInfo {
                username: u.username.clone(),
                display_name: u.display_name.clone(),
            })
            .collect(),
        base_url: base.clone(),
        bind: addr,
    };

    let idp = Arc::new(Idp::new(
        dir,
        keys,
        base,
        options.clock.clone(),
        auto_approve,
        config.access_token_lifetime_secs.unwrap_or(3600),
        config.device_code_interval_secs.unwrap_or(5),
        secret_hashes,
        tls.is_some(),
    ));
    let app = router(idp);
    let (tx, rx) = watch::channel(false);
    let task = match tls {
        Some(tls) => tokio::spawn(tls::serve_tls(listener, tls.config, app, rx)),
        None => {
            let mut rx = rx;
            tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = rx.changed().await;
                    })
                    .await;
            })
        }
    };
    if let Some(user) = &info.auto_approve {
        tracing::warn!(
            "development IdP auto-approves every sign-in as {user} (MCPGATE_IDP_AUTO_APPROVE); loopback only"
        );
    }
    tracing::info!(issuer = %info.issuer, "development identity provider listening");
    Ok(RunningIdp {
        info,
        shutdown: tx,
        task,
    })
}

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
//! | [`authorize_error`] | its refusals, mapped to Entra's errors in one place |
//! | [`token`] | the token endpoint and its grants |
//! | [`token_error`] | its refusals, mapped to Entra's errors in one place |
//! | [`client_assertion`] | certificate credentials: `private_key_jwt` client assertions |
//! | [`conditional_access`] | MFA rules, `amr`/`acrs`, the `claims` parameter and Entra's claims challenge |
//! | [`device`] | the device authorization grant and its page |
//! | [`metadata`] | OpenID discovery, the key set, Graph's `/me`, sign-out |
//! | [`error`] | Entra's error JSON |
//! | [`grants`] | codes, refresh-token families and consents as the store holds them |
//! | [`state`] | what it remembers in memory between requests, and the caps on it |
//!
//! # What survives a restart
//!
//! Authorization codes, refresh tokens (with their families, rotation and
//! revocation) and consents live in a [`store::Store`]
//! ([`IdpOptions::store`]): `mcpgate serve` passes its own (SQLite in the
//! data directory, or Redis), and `mcpgate idp` alone uses SQLite at
//! `<data_dir>/idp/grants.db`. A restart then signs nobody out: refresh
//! tokens keep working and consent is not asked again. The signing keys,
//! TLS certificates and generated client secrets are files in the data
//! directory. With no store given the grants are kept in the process
//! (`memory:`) and a restart forgets them.
//!
//! What browsers make the IdP hold for minutes stays in memory, bounded,
//! and is lost on restart: sign-in pages not yet answered, device codes
//! not yet redeemed, CSRF values and browser sessions (single sign-on).
//! A person in the middle of a sign-in starts it again; one signed in
//! before signs in again (one click on loopback) without a consent page.
//!
//! Every grant checks everything (client, redirect URI, PKCE verifier,
//! scopes, user, consent) against what it read from the store, and only
//! then changes it in one atomic operation that one caller wins: a code is
//! spent by `redeem_code`, a refresh token rotated by `rotate_refresh`. A
//! refused request spends nothing; a replayed code revokes the family it
//! started; a reused refresh token revokes its family.
//!
//! # Security
//!
//! It is a development IdP: users may sign in with one click, and
//! `auto_approve` signs everyone in without a page. Both hold only on
//! loopback. When it listens elsewhere ([`Exposure::Network`], which only an
//! explicit bind address gives), no user is listed, every sign-in takes a
//! password, users with the published development password are refused,
//! and auto-approve is refused at start. Whatever unauthenticated callers
//! can make it hold is capped ([`Limits`]) and swept on a timer; that
//! includes the codes it puts in the store. The store holds hashes of
//! codes and refresh tokens, never the values, under the IdP's own hash
//! prefix, so that a store shared with the broker keeps the two apart.

pub mod authorize;
pub mod authorize_error;
pub mod client_assertion;
pub mod conditional_access;
pub mod device;
pub mod directory;
pub mod error;
pub mod grants;
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
pub mod token_error;
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
pub use crate::state::{Limits, StateSizes};
pub use crate::tls::TlsMode;
/// The grant store the IdP keeps codes, refresh tokens and consents in.
pub use mcpgate_store as store;

use crate::directory::{DEFAULT_PASSWORD, Secret, SecretHash};
use crate::idp::Idp;
use crate::keys::KeyRing;
use crate::util::{random_token, write_private};

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
    /// Caps on pending sign-ins, device codes, sessions and codes.
    pub limits: Limits,
    /// Where authorization codes, refresh-token families and consents
    /// live, so that a restart signs nobody out: `mcpgate serve`'s store,
    /// or SQLite in the data directory. `None` (the default) keeps them in
    /// an in-process `memory:` store, read by [`IdpOptions::clock`], and
    /// a restart forgets them.
    pub store: Option<Arc<dyn mcpgate_store::Store>>,
}

/// Who can reach the IdP, derived from where it listens and the URL it is
/// published at. It decides whether one-click sign-in and auto-approve
/// are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Exposure {
    /// Bound to a loopback address and published on a loopback name: only
    /// this machine reaches it. One-click users and auto-approve allowed.
    Loopback,
    /// Reachable from elsewhere: no user listed, every sign-in takes a
    /// password, auto-approve refused.
    Network,
}

/// Whether `host` (a URL's host) names this machine.
fn loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
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
            limits: Limits::default(),
            store: None,
        }
    }

    /// Who can reach an IdP started with these options: loopback only when
    /// it binds a loopback address and any public URL names loopback.
    pub fn exposure(&self) -> Exposure {
        let public_ok = self
            .public_url
            .as_ref()
            .is_none_or(|u| u.host().is_some_and(|h| loopback_host(&h)));
        if self.bind.ip().is_loopback() && public_ok {
            Exposure::Loopback
        } else {
            Exposure::Network
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
    /// Users offered for one-click sign-in (none unless on loopback).
    pub users: Vec<UserInfo>,
    /// The listening address.
    pub bind: SocketAddr,
    /// Who can reach it.
    pub exposure: Exposure,
}

/// A running IdP: its listener and the task that sweeps expired state.
#[derive(Debug)]
pub struct RunningIdp {
    info: IdpInfo,
    idp: Arc<Idp>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    sweeper: tokio::task::JoinHandle<()>,
}

impl RunningIdp {
    /// Where it listens and what it serves.
    pub fn info(&self) -> &IdpInfo {
        &self.info
    }

    /// How many entries its state holds now.
    pub fn state_sizes(&self) -> StateSizes {
        self.idp.state().sizes()
    }

    /// Drops expired entries now, as the sweeper does on its timer (tests
    /// move a manual clock and sweep without waiting).
    pub fn sweep(&self) {
        let now = self.idp.now();
        self.idp.state().sweep(now);
    }

    /// Stops accepting, closes open connections and stops the sweeper.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        let _ = self.sweeper.await;
    }
}

/// How often the sweeper asks the store to reclaim expired grants (which
/// read as absent already): hourly is plenty.
const PURGE_EVERY_SECS: u64 = 3600;

/// Sweeps expired state every `limits.sweep_interval_secs` until shutdown,
/// and purges the store's expired grants hourly: requests never pay for it.
async fn sweep_until(idp: Arc<Idp>, mut shutdown: watch::Receiver<bool>) {
    let period_secs = idp.limits.sweep_interval_secs.max(1);
    let mut timer = tokio::time::interval(std::time::Duration::from_secs(period_secs));
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let purge_every = (PURGE_EVERY_SECS / period_secs).max(1);
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = timer.tick() => {
                let now = idp.now();
                idp.state().sweep(now);
                ticks += 1;
                if ticks.is_multiple_of(purge_every)
                    && let Err(e) = idp.store.purge_expired().await
                {
                    tracing::warn!(error = %e, "purging expired grants failed");
                }
            }
            _ = shutdown.changed() => break,
        }
    }
}

/// The store's clock reading the IdP's, so that a test's manual clock
/// expires grants too.
pub fn store_clock(clock: Arc<dyn Clock>) -> mcpgate_store::Clock {
    mcpgate_store::Clock::from_fn(move || clock.now())
}

/// Answers a URL longer than the IdP reads before any handler parses it.
async fn limit_url(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let uri = request.uri();
    if uri.query().map_or(0, str::len) > params::MAX_QUERY || uri.path().len() > params::MAX_QUERY {
        let e = error::AadError::too_long("URL", params::MAX_QUERY);
        let path = uri.path();
        return if path.ends_with("/authorize")
            || path == "/devicelogin"
            || path.ends_with("/logout")
        {
            pages::error(&e)
        } else {
            e.into_response()
        };
    }
    next.run(request).await
}

/// Generated secrets: their SHA-256 and their files, by client id.
struct GeneratedSecrets {
    hashes: BTreeMap<String, SecretHash>,
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
        hashes.insert(app.client_id.clone(), SecretHash::of(&secret));
        files.insert(app.client_id.clone(), path);
    }
    Ok(GeneratedSecrets { hashes, files })
}

/// ", published at URL" when a public URL is set, for messages.
fn public_note(options: &IdpOptions) -> String {
    options
        .public_url
        .as_ref()
        .map(|u| format!(", published at {u}"))
        .unwrap_or_default()
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
        .layer(axum::middleware::from_fn(limit_url))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(idp)
}

/// The URL an IdP listening on `addr` names itself by when it has no
/// public URL; its issuers and endpoints hang below it. Also what tools
/// that do not start the IdP (`mcpgate explain`) expect its tokens to name.
pub fn base_url(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
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

/// Starts the IdP: opens the data directory (keys, certificates, secrets),
/// binds, and serves until [`RunningIdp::shutdown`].
pub async fn start(config: IdpConfig, options: IdpOptions) -> Result<RunningIdp, IdpError> {
    let dir = Directory::from_config(&config)?;
    let exposure = options.exposure();
    let auto_approve = options
        .auto_approve
        .clone()
        .or_else(|| config.auto_approve.clone())
        .filter(|s| !s.is_empty());
    if let Some(user) = &auto_approve {
        if exposure != Exposure::Loopback {
            return Err(IdpError::Refused(format!(
                "auto-approve ({user}) signs anyone in without a page; it is refused unless the IdP listens on loopback (it was {}{})",
                options.bind,
                public_note(&options)
            )));
        }
        if dir.user(user).is_none() {
            return Err(IdpError::Config(format!(
                "auto_approve names {user}, who is not in the directory"
            )));
        }
    }
    if matches!(options.tls, TlsMode::PlainHttp) && exposure != Exposure::Loopback {
        return Err(IdpError::Refused(format!(
            "plain http is refused unless the IdP listens on loopback (it was {}{})",
            options.bind,
            public_note(&options)
        )));
    }
    if exposure == Exposure::Network {
        // The built-in password is published: off loopback it would sign
        // anyone in as well as a one-click picker would.
        let published: Vec<&str> = dir
            .users
            .iter()
            .filter(|u| u.password_matches(DEFAULT_PASSWORD))
            .map(|u| u.username.as_str())
            .collect();
        if !published.is_empty() {
            return Err(IdpError::Refused(format!(
                "the development IdP is reachable beyond loopback ({}{}), and {} still {} the published development password; give it a directory with passwords of your own, or listen on loopback",
                options.bind,
                public_note(&options),
                published.join(", "),
                if published.len() == 1 { "has" } else { "have" },
            )));
        }
        tracing::warn!(
            bind = %options.bind,
            "development IdP reachable beyond loopback: no user is listed, every sign-in needs a password, auto-approve is refused"
        );
    }
    std::fs::create_dir_all(&options.data_dir).map_err(|e| IdpError::io(&options.data_dir, e))?;
    let store = options.store.clone().unwrap_or_else(|| {
        mcpgate_store::memory::open_memory(mcpgate_store::Options {
            clock: store_clock(options.clock.clone()),
            ..mcpgate_store::Options::default()
        })
    });
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
        None => base_url(addr, tls.is_some()),
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
                scopes: a.full_scopes(),
                roles: a.roles.clone(),
                secret_file: secret_files.get(&a.client_id).cloned(),
            })
            .collect(),
        users: dir
            .users
            .iter()
            .filter(|_| exposure == Exposure::Loopback)
            .map(|u| UserInfo {
                username: u.username.clone(),
                display_name: u.display_name.clone(),
            })
            .collect(),
        base_url: base.clone(),
        bind: addr,
        exposure,
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
        exposure,
        options.limits,
        store,
    ));
    let app = router(idp.clone());
    let (tx, rx) = watch::channel(false);
    let sweeper = tokio::spawn(sweep_until(idp.clone(), rx.clone()));
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
        idp,
        shutdown: tx,
        task,
        sweeper,
    })
}

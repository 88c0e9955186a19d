//! The broker's state and its router: which handler serves which path,
//! and the response shapes every handler shares (OAuth error JSON with
//! `no-store`, error pages, redirects back to a client).
//!
//! Serve the router with
//! `into_make_service_with_connect_info::<SocketAddr>()`: rate limits key
//! on the peer address. Behind a reverse proxy every request comes from
//! the proxy, so the caller must put the client's address in the
//! request's `ConnectInfo<SocketAddr>` extension (from a header the proxy
//! sets and nobody else can); without any, all callers share one bucket.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, PRAGMA};
use http::{HeaderMap, HeaderValue, StatusCode};
use mcpgate_keys::KeyRing;
use mcpgate_store::{Store, StoreError, Timestamp, TokenCipher};

use crate::cimd::{CimdError, CimdFetcher, is_document_client_id};
use crate::config::BrokerConfig;
use crate::consent_cookie::ConsentKey;
use crate::consent_page::ClientOrigin;
use crate::metadata::{AuthorizationServerMetadata, paths};
use crate::registration::{ClientId, ClientMetadata};
use crate::upstream::Upstream;
use crate::wire::{ErrorCode, OAuthError};

/// The broker could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No protected resource was configured.
    #[error("the broker needs at least one MCP resource URL to issue tokens for")]
    NoResource,
    /// A configured resource is not an absolute URL without a fragment.
    #[error("the MCP resource {0:?} is not an absolute URL without a fragment")]
    BadResource(String),
    /// Development auto-approve with an issuer off loopback.
    #[error(
        "dev auto-approve ({user}) gives consent without a page; it is refused unless the broker's issuer is on loopback (it is {issuer})"
    )]
    AutoApproveOffLoopback {
        /// The user named.
        user: String,
        /// The issuer.
        issuer: String,
    },
}

/// The authorization server MCP hosts sign in at.
pub struct Broker {
    pub(crate) config: BrokerConfig,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) upstream: Upstream,
    pub(crate) keys: KeyRing,
    pub(crate) consent_key: ConsentKey,
    pub(crate) cipher: TokenCipher,
    pub(crate) cimd: CimdFetcher,
    metadata_json: String,
    pub(crate) callback_uri: String,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("issuer", &self.config.issuer)
            .field("resources", &self.config.resources)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker. `cipher` seals the upstream tokens the broker keeps (its
    /// key from a file or configuration, never a constant); `consent_key`
    /// signs consent cookies and CSRF values (persist it too).
    pub fn new(
        config: BrokerConfig,
        store: Arc<dyn Store>,
        upstream: Upstream,
        keys: KeyRing,
        consent_key: ConsentKey,
        cipher: TokenCipher,
        cimd: CimdFetcher,
    ) -> Result<Arc<Self>, BrokerError> {
        if config.resources.is_empty() {
            return Err(BrokerError::NoResource);
        }
        for r in &config.resources {
            let ok = url::Url::parse(r).is_ok_and(|u| u.fragment().is_none() && u.has_host());
            if !ok {
                return Err(BrokerError::BadResource(r.clone()));
            }
        }
        if let Some(user) = &config.dev_auto_approve {
            if !config.issuer.is_loopback() {
                return Err(BrokerError::AutoApproveOffLoopback {
                    user: user.clone(),
                    issuer: config.issuer.to_string(),
                });
            }
            tracing::warn!(
                user = %user,
                "broker: DEVELOPMENT auto-approve is on: consent is given without a page when {user} signs in"
            );
        }
        let metadata_json =
            AuthorizationServerMetadata::new(&config.issuer, config.scopes.clone()).to_json();
        let callback_uri = config.issuer.endpoint(paths::CALLBACK);
        Ok(Arc::new(Self {
            config,
            store,
            upstream,
            keys,
            consent_key,
            cipher,
            cimd,
            metadata_json,
            callback_uri,
        }))
    }

    /// The configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The redirect URI the broker uses upstream (`…/auth/callback`).
    pub fn callback_uri(&self) -> &str {
        &self.callback_uri
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.config.clock.now()
    }

    pub(crate) fn now_secs(&self) -> u64 {
        self.now().as_millis() / 1000
    }

    /// The client named `client_id`: registered (DCR) in the store, or a
    /// Client ID Metadata Document (fetched, or from the fetcher's cache).
    pub(crate) async fn load_client(
        &self,
        client_id: &str,
    ) -> Result<LoadedClient, ClientLookupError> {
        if is_document_client_id(client_id) {
            let doc = self.cimd.fetch(client_id).await?;
            return Ok(LoadedClient {
                id: doc.client_id.clone(),
                metadata: doc.metadata.clone(),
                secret_hash: None,
                document_host: url::Url::parse(client_id)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned)),
            });
        }
        let id = mcpgate_store::ClientId::new(client_id);
        let record = self
            .store
            .get_client(&id)
            .await?
            .ok_or(ClientLookupError::Unknown)?;
        let body = serde_json::to_vec(&record.metadata).map_err(|_| ClientLookupError::Stored)?;
        let metadata =
            ClientMetadata::from_registration(&body).map_err(|_| ClientLookupError::Stored)?;
        Ok(LoadedClient {
            id: ClientId::new(client_id),
            metadata,
            secret_hash: record.secret_hash,
            document_host: None,
        })
    }

    /// Counts one request of `what` from `peer`; whether it is within `limit`.
    pub(crate) async fn within_rate(
        &self,
        what: &str,
        peer: Option<SocketAddr>,
        limit: u64,
    ) -> Result<bool, StoreError> {
        let who = peer.map_or_else(|| "unknown".to_owned(), |p| p.ip().to_string());
        match self
            .store
            .bump_counter(&format!("{what}:{who}"), self.config.rate_window)
            .await
        {
            Ok(n) => Ok(n <= limit),
            // The store holds as many counters as it may: treat as over.
            Err(StoreError::Full(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A client as the handlers use it.
#[derive(Debug, Clone)]
pub(crate) struct LoadedClient {
    pub id: ClientId,
    pub metadata: ClientMetadata,
    pub secret_hash: Option<mcpgate_store::TokenHash>,
    /// For a metadata document: the host that serves it.
    pub document_host: Option<String>,
}

impl LoadedClient {
    pub fn origin(&self) -> ClientOrigin<'_> {
        match &self.document_host {
            Some(host) => ClientOrigin::Document { host },
            None => ClientOrigin::Registered,
        }
    }
}

/// Why a client could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ClientLookupError {
    /// No such registration (or it expired).
    #[error("the client is not registered")]
    Unknown,
    /// The stored registration no longer passes today's rules.
    #[error("the client's stored registration no longer passes the registration rules")]
    Stored,
    /// The metadata document could not be fetched or was refused.
    #[error(transparent)]
    Cimd(#[from] CimdError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ClientLookupError {
    /// The OAuth error.
    pub fn to_oauth(&self) -> OAuthError {
        match self {
            ClientLookupError::Unknown | ClientLookupError::Stored => {
                OAuthError::new(ErrorCode::InvalidClient, self.to_string())
            }
            ClientLookupError::Cimd(e) => e.to_oauth(),
            ClientLookupError::Store(e) => store_error(e),
        }
    }
}

/// A store failure as the client sees it: no detail of the store.
pub(crate) fn store_error(e: &StoreError) -> OAuthError {
    match e {
        StoreError::Full(_) => OAuthError::new(
            ErrorCode::TemporarilyUnavailable,
            "the server is busy; try again later",
        ),
        _ => {
            tracing::error!(error = %e, "broker: store failure");
            OAuthError::new(ErrorCode::ServerError, "the server's store failed")
        }
    }
}

/// The broker's routes, under the issuer's path.
pub fn router(broker: Arc<Broker>) -> Router {
    let base = broker.config.issuer.base_path();
    let at = |p: &str| format!("{base}{p}");
    let mut router = Router::new();
    for path in broker.config.issuer.metadata_paths() {
        router = router.route(&path, get(metadata));
    }
    router
        .route(&at(paths::JWKS), get(jwks))
        .route(&at(paths::REGISTER), post(crate::register::register))
        .route(&at(paths::AUTHORIZE), get(crate::authorize::authorize))
        .route(&at(paths::CALLBACK), get(crate::callback::callback))
        .route(&at(paths::CONSENT), post(crate::consent::consent))
        .route(&at(paths::TOKEN), post(crate::token::token))
        .route(&at(paths::REVOKE), post(crate::revoke::revoke))
        .route(
            &at(paths::LOGOUT),
            get(crate::logout::logout).post(crate::logout::logout_post),
        )
        .with_state(broker)
}

/// The peer address, if the server supplied one.
pub(crate) type Peer = Option<axum::Extension<ConnectInfo<SocketAddr>>>;

pub(crate) fn peer_addr(peer: &Peer) -> Option<SocketAddr> {
    peer.as_ref().map(|axum::Extension(ConnectInfo(a))| *a)
}

async fn metadata(State(broker): State<Arc<Broker>>) -> Response {
    json_response(StatusCode::OK, broker.metadata_json.clone(), false)
}

async fn jwks(State(broker): State<Arc<Broker>>) -> Response {
    let body = broker
        .keys
        .jwks(broker.config.issuer.as_str(), broker.now_secs())
        .to_string();
    let mut r = json_response(StatusCode::OK, body, false);
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    r
}

/// A JSON response; `no_store` for anything holding a credential or an
/// answer about one.
pub(crate) fn json_response(status: StatusCode, body: String, no_store: bool) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if no_store {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    }
    r
}

/// An OAuth error as JSON, `no-store`.
pub(crate) fn oauth_error(e: &OAuthError) -> Response {
    let mut r = json_response(e.status(), e.to_json(), true);
    if e.error == ErrorCode::InvalidClient {
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"mcpgate\""),
        );
    }
    r
}

/// A redirect. `303` after a form post, `302` otherwise.
pub(crate) fn redirect(status: StatusCode, location: &str) -> Response {
    let mut r = status.into_response();
    match HeaderValue::from_str(location) {
        Ok(v) => {
            r.headers_mut().insert(LOCATION, v);
        }
        Err(_) => {
            return page_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in failed",
                "The redirect address is not valid.",
                None,
            );
        }
    }
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The client's redirect URI with `params` added, and `iss` (RFC 9207).
pub(crate) fn client_redirect_url(
    broker: &Broker,
    redirect_uri: &str,
    params: &[(&str, &str)],
    state: Option<&str>,
) -> String {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return redirect_uri.to_owned();
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
        if let Some(s) = state {
            q.append_pair("state", s);
        }
        q.append_pair("iss", broker.config.issuer.as_str());
    }
    url.to_string()
}

/// An OAuth error sent back to the client's (already matched) redirect URI.
pub(crate) fn redirect_error(
    broker: &Broker,
    redirect_uri: &str,
    state: Option<&str>,
    e: &OAuthError,
    status: StatusCode,
) -> Response {
    let url = client_redirect_url(
        broker,
        redirect_uri,
        &[
            ("error", e.code()),
            ("error_description", &e.error_description),
        ],
        state,
    );
    redirect(status, &url)
}

/// An error page (never a redirect: used while the redirect URI is not
/// trusted, or when there is none to use).
pub(crate) fn page_error(
    status: StatusCode,
    title: &str,
    message: &str,
    back: Option<&str>,
) -> Response {
    crate::consent_page::error_page(status, title, message, back).into_response()
}

/// Reads a cookie's value from the request.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

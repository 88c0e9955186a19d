//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document,
//! MCP 2025-11-25): a client whose `client_id` is an https URL is described
//! by the JSON document at that URL. The broker fetches it, and that fetch
//! is a request an unauthenticated caller chooses, so it is fenced in:
//!
//! - https only; `http` only in [`CimdOptions::development`], and then only
//!   to loopback;
//! - DNS is resolved here, every address is checked ([`address`]), and the
//!   connection goes to the addresses checked: reqwest is given this
//!   resolver, so a second, rebinding lookup cannot swap them. Literal IP
//!   hosts are checked before any connection. No proxy is used (a proxy
//!   would resolve the name itself);
//! - no redirects: a redirect would let one URL vouch for another's
//!   document;
//! - at most [`CimdOptions::max_body`] bytes (5 KB, as the draft suggests)
//!   and [`CimdOptions::timeout`] for the whole fetch; at most
//!   [`CimdOptions::max_concurrent`] fetches at once;
//! - cached per `Cache-Control`, clamped to [`CimdOptions::min_ttl`] and
//!   [`CimdOptions::max_ttl`], in a cache of bounded size;
//! - the document's `client_id` must equal the URL, byte for byte, and its
//!   metadata passes the registration rules, with no shared secret.
//!
//! Failed fetches are not cached; callers rate-limit `/authorize`.

pub mod address;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Semaphore;
use url::{Host, Url};

use crate::registration::{ClientId, ClientMetadata, RawClientMetadata, RegistrationError, Source};
use crate::wire::{ErrorCode, OAuthError};
use address::{AddressClass, classify};

/// The longest client id URL accepted.
pub const MAX_CLIENT_ID_URL_LEN: usize = 1024;

/// How documents are fetched and cached. The defaults are for production.
#[derive(Debug, Clone)]
pub struct CimdOptions {
    /// Allow `http` and loopback targets. Default `false`; set only through
    /// [`CimdOptions::development`].
    allow_loopback: bool,
    /// The largest document read. Default 5 KiB.
    pub max_body: usize,
    /// The limit on a whole fetch: DNS, connect, TLS, headers and body.
    /// Default 5 s.
    pub timeout: Duration,
    /// The shortest time a document is cached, whatever it says. Default
    /// 60 s, so that no document makes every request a fetch.
    pub min_ttl: Duration,
    /// The longest time a document is cached. Default 24 h.
    pub max_ttl: Duration,
    /// The cache time when the response says nothing. Default 5 min.
    pub default_ttl: Duration,
    /// How many documents the cache holds. Default 1,000.
    pub cache_capacity: u64,
    /// How many fetches may run at once; others wait within their timeout.
    /// Default 16.
    pub max_concurrent: usize,
}

impl Default for CimdOptions {
    fn default() -> Self {
        Self {
            allow_loopback: false,
            max_body: 5 * 1024,
            timeout: Duration::from_secs(5),
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 3600),
            default_ttl: Duration::from_secs(300),
            cache_capacity: 1000,
            max_concurrent: 16,
        }
    }
}

impl CimdOptions {
    /// Development mode: documents may also be served over `http` from
    /// loopback, and https documents may live on loopback. Logged loudly
    /// when the fetcher is built. Private, link-local and other
    /// non-public addresses stay refused.
    pub fn development() -> Self {
        Self {
            allow_loopback: true,
            ..Self::default()
        }
    }

    /// Whether development mode is on.
    pub fn allows_loopback(&self) -> bool {
        self.allow_loopback
    }
}

/// Why a client id URL was not fetched, or its document not accepted.
#[derive(Debug, thiserror::Error)]
pub enum CimdError {
    /// The client id is not a URL this server will fetch.
    #[error("the client id is not a valid metadata document URL: {0}")]
    InvalidUrl(&'static str),
    /// The host resolved to (or is) an address that is not public.
    #[error("the client id URL points at a {} address ({addr})", class.describe())]
    AddressRefused {
        /// The address.
        addr: IpAddr,
        /// What kind of address it is.
        class: AddressClass,
    },
    /// DNS failed or found nothing.
    #[error("the client id URL's host could not be resolved")]
    Dns(#[source] io::Error),
    /// The connection or the exchange failed.
    #[error("the client metadata document could not be fetched")]
    Transport(#[source] reqwest::Error),
    /// The fetch took longer than [`CimdOptions::timeout`].
    #[error("fetching the client metadata document timed out")]
    Timeout,
    /// The server answered with a redirect, which is not followed.
    #[error("the client id URL redirects (HTTP {0}); redirects are not followed")]
    Redirected(u16),
    /// The server answered with another status than 200.
    #[error("the client id URL answered HTTP {0}")]
    Status(u16),
    /// The document is larger than [`CimdOptions::max_body`].
    #[error("the client metadata document is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The document is not a JSON object of the expected shape.
    #[error("the client metadata document is not valid JSON: {0}")]
    Malformed(#[source] serde_json::Error),
    /// The document's `client_id` is not its URL.
    #[error("the client metadata document's client_id does not equal its URL")]
    ClientIdMismatch,
    /// The document's metadata broke a registration rule.
    #[error("the client metadata document is invalid: {0}")]
    Metadata(#[source] RegistrationError),
    /// The HTTP client could not be built.
    #[error("the metadata HTTP client could not be built")]
    Client(#[source] reqwest::Error),
}

impl CimdError {
    /// The OAuth error. At `/authorize` it is shown, never redirected: the
    /// redirect URI is not trusted until the document is.
    pub fn to_oauth(&self) -> OAuthError {
        let code = match self {
            CimdError::InvalidUrl(_)
            | CimdError::AddressRefused { .. }
            | CimdError::Dns(_)
            | CimdError::Transport(_)
            | CimdError::Timeout
            | CimdError::Redirected(_)
            | CimdError::Status(_)
            | CimdError::TooLarge { .. }
            | CimdError::Malformed(_)
            | CimdError::ClientIdMismatch
            | CimdError::Metadata(_) => ErrorCode::InvalidClient,
            CimdError::Client(_) => ErrorCode::ServerError,
        };
        OAuthError::new(code, self.to_string())
    }
}

/// A fetched, validated document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientDocument {
    /// The client id: the document's URL.
    pub client_id: ClientId,
    /// Its metadata, valid by the registration rules.
    pub metadata: ClientMetadata,
}

/// Whether a client id is URL-shaped, so it names a metadata document
/// rather than a registration.
pub fn is_document_client_id(client_id: &str) -> bool {
    client_id.starts_with("https://") || client_id.starts_with("http://")
}

/// Looks names up. The system resolver by default; tests give a table.
pub trait Lookup: Send + Sync + 'static {
    /// The addresses of `host`; ports are ignored.
    fn lookup(&self, host: &str) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;
}

/// The system resolver, through tokio.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
        let host = host.to_owned();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

const HTTP_LOOPBACK_ONLY: &str = "http is allowed only to loopback, in development mode";

/// Which addresses a connection may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Public addresses (and loopback in development).
    Public { allow_loopback: bool },
    /// Loopback only: the development `http` client.
    LoopbackOnly,
}

impl Reach {
    fn check(self, ip: IpAddr) -> Result<(), CimdError> {
        let class = classify(ip);
        let ok = match (self, class) {
            (Reach::Public { .. }, None) => true,
            (Reach::Public { allow_loopback }, Some(AddressClass::Loopback)) => allow_loopback,
            (Reach::LoopbackOnly, Some(AddressClass::Loopback)) => true,
            _ => false,
        };
        match (ok, class) {
            (true, _) => Ok(()),
            (false, Some(class)) => Err(CimdError::AddressRefused { addr: ip, class }),
            // A public address, refused by the development http client.
            (false, None) => Err(CimdError::InvalidUrl(HTTP_LOOPBACK_ONLY)),
        }
    }
}

/// The resolver given to reqwest: looks up, refuses the whole name if any
/// address is not allowed, and returns exactly the addresses checked.
struct CheckedResolver {
    lookup: Arc<dyn Lookup>,
    reach: Reach,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let lookup = self.lookup.clone();
        let reach = self.reach;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let ips = lookup.lookup(&host).await.map_err(CimdError::Dns)?;
            if ips.is_empty() {
                return Err(CimdError::Dns(io::Error::new(
                    io::ErrorKind::NotFound,
                    "no addresses",
                ))
                .into());
            }
            for ip in &ips {
                reach.check(*ip)?;
            }
            let addrs: Vec<SocketAddr> = ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[derive(Clone)]
struct Cached {
    document: Arc<ClientDocument>,
    ttl: Duration,
}

struct TtlExpiry;

impl moka::Expiry<String, Cached> for TtlExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Cached,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Fetches, checks and caches Client ID Metadata Documents.
pub struct CimdFetcher {
    options: CimdOptions,
    https: reqwest::Client,
    /// Only in development mode.
    http: Option<reqwest::Client>,
    cache: moka::sync::Cache<String, Cached>,
    permits: Semaphore,
}

impl std::fmt::Debug for CimdFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CimdFetcher")
            .field("options", &self.options)
            .field("cached", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl CimdFetcher {
    /// A fetcher using the system resolver. `builder` carries what the
    /// deployment trusts (its CA roots, user agent); the settings this
    /// module depends on (resolver, redirects, proxy, timeout, https-only)
    /// are set over it.
    pub fn new(
        options: CimdOptions,
        builder: impl Fn() -> reqwest::ClientBuilder,
    ) -> Result<Self, CimdError> {
        Self::with_lookup(options, builder, Arc::new(SystemLookup))
    }

    /// A fetcher with its own name lookup (tests map names to loopback).
    pub fn with_lookup(
        options: CimdOptions,
        builder: impl Fn() -> reqwest::ClientBuilder,
        lookup: Arc<dyn Lookup>,
    ) -> Result<Self, CimdError> {
        let build = |reach: Reach, https_only: bool| {
            builder()
                .dns_resolver(CheckedResolver {
                    lookup: lookup.clone(),
                    reach,
                })
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .https_only(https_only)
                .referer(false)
                .timeout(options.timeout)
                .build()
                .map_err(CimdError::Client)
        };
        let https = build(
            Reach::Public {
                allow_loopback: options.allow_loopback,
            },
            true,
        )?;
        let http = if options.allow_loopback {
            tracing::warn!(
                "client metadata documents: DEVELOPMENT MODE, fetching from loopback and over http is allowed"
            );
            Some(build(Reach::LoopbackOnly, false)?)
        } else {
            None
        };
        let cache = moka::sync::Cache::builder()
            .max_capacity(options.cache_capacity)
            .expire_after(TtlExpiry)
            .build();
        Ok(Self {
            permits: Semaphore::new(options.max_concurrent.max(1)),
            options,
            https,
            http,
            cache,
        })
    }

    /// The document for `client_id`, from the cache or fetched.
    pub async fn fetch(&self, client_id: &str) -> Result<Arc<ClientDocument>, CimdError> {
        if let Some(hit) = self.cache.get(client_id) {
            return Ok(hit.document);
        }
        let url = self.check_url(client_id)?;
        let (document, ttl) =
            tokio::time::timeout(self.options.timeout, self.fetch_uncached(client_id, url))
                .await
                .map_err(|_| CimdError::Timeout)??;
        let document = Arc::new(document);
        self.cache.insert(
            client_id.to_owned(),
            Cached {
                document: document.clone(),
                ttl,
            },
        );
        Ok(document)
    }

    /// Forgets a cached document (say, after the client reports a change).
    pub fn invalidate(&self, client_id: &str) {
        self.cache.invalidate(client_id);
    }

    /// The URL rules of the draft's §3, plus: the URL is in the form a
    /// parser writes it (so that one client has one id), and literal IP
    /// hosts are checked before anything is sent.
    fn check_url(&self, client_id: &str) -> Result<Url, CimdError> {
        if client_id.len() > MAX_CLIENT_ID_URL_LEN {
            return Err(CimdError::InvalidUrl("too long"));
        }
        let url =
            Url::parse(client_id).map_err(|_| CimdError::InvalidUrl("not an absolute URL"))?;
        if url.as_str() != client_id {
            return Err(CimdError::InvalidUrl(
                "not in canonical form (lower-case scheme and host, no default port, encoded path)",
            ));
        }
        match url.scheme() {
            "https" => {}
            "http" if self.options.allow_loopback => {}
            _ => return Err(CimdError::InvalidUrl("the scheme must be https")),
        }
        if url.fragment().is_some() {
            return Err(CimdError::InvalidUrl("it has a fragment"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(CimdError::InvalidUrl("it has userinfo"));
        }
        // A bare origin would make a whole site one client.
        if url.path() == "/" {
            return Err(CimdError::InvalidUrl("it has no path"));
        }
        if url.path().split('/').any(|s| s == "." || s == "..") {
            return Err(CimdError::InvalidUrl("it has . or .. path segments"));
        }
        let reach = self.reach(&url);
        match url.host() {
            Some(Host::Ipv4(ip)) => reach.check(IpAddr::V4(ip))?,
            Some(Host::Ipv6(ip)) => reach.check(IpAddr::V6(ip))?,
            Some(Host::Domain(_)) => {}
            None => return Err(CimdError::InvalidUrl("it has no host")),
        }
        Ok(url)
    }

    fn reach(&self, url: &Url) -> Reach {
        if url.scheme() == "http" {
            Reach::LoopbackOnly
        } else {
            Reach::Public {
                allow_loopback: self.options.allow_loopback,
            }
        }
    }

    async fn fetch_uncached(
        &self,
        client_id: &str,
        url: Url,
    ) -> Result<(ClientDocument, Duration), CimdError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| CimdError::Timeout)?;
        let client = match (url.scheme(), &self.http) {
            ("http", Some(http)) => http,
            _ => &self.https,
        };
        let mut response = client
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(refusal_or_transport)?;
        let status = response.status();
        if status.is_redirection() {
            return Err(CimdError::Redirected(status.as_u16()));
        }
        if status != http::StatusCode::OK {
            return Err(CimdError::Status(status.as_u16()));
        }
        let limit = self.options.max_body;
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(CimdError::TooLarge { limit });
        }
        let ttl = cache_ttl(response.headers(), &self.options);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(CimdError::Transport)? {
            if body.len() + chunk.len() > limit {
                return Err(CimdError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((parse_document(client_id, &body)?, ttl))
    }
}

#[derive(Deserialize)]
struct Document {
    client_id: Option<String>,
    #[serde(flatten)]
    metadata: RawClientMetadata,
}

/// Checks a fetched body: the draft's `client_id` rule, then registration's.
fn parse_document(client_id: &str, body: &[u8]) -> Result<ClientDocument, CimdError> {
    let doc: Document = serde_json::from_slice(body).map_err(CimdError::Malformed)?;
    if doc.client_id.as_deref() != Some(client_id) {
        return Err(CimdError::ClientIdMismatch);
    }
    let metadata =
        ClientMetadata::validate(doc.metadata, Source::Document).map_err(CimdError::Metadata)?;
    Ok(ClientDocument {
        client_id: ClientId::new(client_id),
        metadata,
    })
}

/// A refusal made by our resolver travels inside reqwest's error; find it
/// so that the caller gets the typed reason.
fn refusal_or_transport(e: reqwest::Error) -> CimdError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(s) = source {
        match s.downcast_ref::<CimdError>() {
            Some(CimdError::AddressRefused { addr, class }) => {
                return CimdError::AddressRefused {
                    addr: *addr,
                    class: *class,
                };
            }
            Some(CimdError::InvalidUrl(why)) => return CimdError::InvalidUrl(why),
            _ => {}
        }
        source = s.source();
    }
    if e.is_timeout() {
        CimdError::Timeout
    } else {
        CimdError::Transport(e)
    }
}

/// How long to cache a response: `max-age` clamped to the options' bounds;
/// `no-store`/`no-cache` get the minimum, since the minimum exists so that
/// no document can make every request a fetch.
pub(crate) fn cache_ttl(headers: &http::HeaderMap, options: &CimdOptions) -> Duration {
    let mut ttl = None;
    for value in headers.get_all(http::header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let directive = directive.trim().to_ascii_lowercase();
            if directive == "no-store" || directive == "no-cache" {
                return options.min_ttl;
            }
            if let Some(secs) = directive.strip_prefix("max-age=") {
                ttl = secs
                    .trim_matches('"')
                    .parse::<u64>()
                    .ok()
                    .map(Duration::from_secs);
            }
        }
    }
    ttl.unwrap_or(options.default_ttl)
        .clamp(options.min_ttl, options.max_ttl.max(options.min_ttl))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ttl(values: &[&str]) -> Duration {
        let mut h = http::HeaderMap::new();
        for v in values {
            h.append(
                http::header::CACHE_CONTROL,
                HeaderValue::from_str(v).expect("header"),
            );
        }
        cache_ttl(&h, &CimdOptions::default())
    }

    #[test]
    fn cache_control_is_clamped() {
        assert_eq!(ttl(&[]), Duration::from_secs(300));
        assert_eq!(ttl(&["max-age=600"]), Duration::from_secs(600));
        assert_eq!(ttl(&["public, Max-Age=7200"]), Duration::from_secs(7200));
        assert_eq!(ttl(&["max-age=1"]), Duration::from_secs(60));
        assert_eq!(ttl(&["max-age=999999999"]), Duration::from_secs(86400));
        assert_eq!(ttl(&["no-store"]), Duration::from_secs(60));
        assert_eq!(ttl(&["max-age=600", "no-cache"]), Duration::from_secs(60));
        assert_eq!(ttl(&["max-age=soon"]), Duration::from_secs(300));
    }

    #[test]
    fn document_client_id_must_equal_the_url() {
        let url = "https://app.example/client.json";
        let doc = |id: &str| {
            serde_json::json!({"client_id": id, "redirect_uris": ["https://app.example/cb"]})
                .to_string()
        };
        assert!(parse_document(url, doc(url).as_bytes()).is_ok());
        for other in [
            "https://app.example/client.json/",
            "https://APP.example/client.json",
            "https://app.example/client.json?x",
            "https://evil.example/client.json",
        ] {
            assert!(
                matches!(
                    parse_document(url, doc(other).as_bytes()),
                    Err(CimdError::ClientIdMismatch)
                ),
                "{other}"
            );
        }
        let no_id = serde_json::json!({"redirect_uris": ["https://app.example/cb"]}).to_string();
        assert!(matches!(
            parse_document(url, no_id.as_bytes()),
            Err(CimdError::ClientIdMismatch)
        ));
        let bad_redirect =
            serde_json::json!({"client_id": url, "redirect_uris": ["http://evil.example/cb"]})
                .to_string();
        assert!(matches!(
            parse_document(url, bad_redirect.as_bytes()),
            Err(CimdError::Metadata(RegistrationError::RedirectUri { .. }))
        ));
        assert!(matches!(
            parse_document(url, b"[1]"),
            Err(CimdError::Malformed(_))
        ));
    }

    #[test]
    fn every_error_maps_to_invalid_client_except_our_own_failure() {
        assert_eq!(
            CimdError::ClientIdMismatch.to_oauth().error,
            ErrorCode::InvalidClient
        );
        assert_eq!(
            CimdError::Timeout.to_oauth().error,
            ErrorCode::InvalidClient
        );
    }
}

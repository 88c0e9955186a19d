//! The protected MCP endpoint.
//!
//! [`router`] builds an axum router that serves MCP over Streamable HTTP
//! at `/mcp`, lets a request through only with a valid bearer token,
//! answers everyone else with the challenge the MCP authorization spec
//! prescribes, and serves Protected Resource Metadata (RFC 9728) so that
//! clients can find the authorization server.
//!
//! | module | what it owns |
//! | --- | --- |
//! | [`bearer`] | taking the token from the request, and refusing every other shape |
//! | [`challenge`] | 400/401/403 with `WWW-Authenticate` |
//! | [`endpoint`] | `/mcp`: the Streamable HTTP transport, served in the request's own task |
//! | [`gateway`] | gateway mode: the endpoint in front of an upstream MCP server |
//! | [`legacy`] | the 2024-11-05 HTTP+SSE transport (`/sse`, `/messages`), in gateway mode |
//! | [`guard`] | per-tool policy applied to calls and lists, pinned tools, audit records |
//! | [`origin`] | the DNS-rebinding defence: allowed `Host` and `Origin` |
//! | [`auth`] | taking and validating the token of a request |
//! | [`wire`] | JSON-RPC messages in and replies out |
//! | [`ratelimit`] | calls per minute, per user and per client application |
//! | [`protocol`] | revisions, and the headers and `_meta` each requires |
//! | [`session`] | sessions: bound to their opener, bounded, expiring |
//! | [`service`] | what answers behind the endpoint ([`service::McpService`]) |
//! | [`prm`] | the Protected Resource Metadata document |
//! | [`tools`] | the built-in tools (`whoami`, `get_user_details`) |
//! | [`policy`] | per-tool policy: who may see and use which tool, resource and prompt |
//! | [`pins`] | tool pinning: upstream tool definitions as first seen, changes held until accepted |
//! | [`downstream`] | acting for the caller against a downstream API, with the server's own token for them |
//!
//! # Security
//!
//! - Tokens are taken only from the `Authorization` header; a token in the
//!   URL is refused.
//! - [`Access::Open`] turns authentication off. It exists for benchmarks and
//!   conformance runs; the binary refuses it unless bound to loopback.

pub mod auth;
pub mod bearer;
pub mod challenge;
pub mod closing;
pub mod downstream;
pub mod endpoint;
pub mod gateway;
pub mod guard;
pub mod legacy;
pub mod origin;
pub mod pins;
pub mod policy;
pub mod prm;
pub mod protocol;
pub mod ratelimit;
pub mod service;
pub mod session;
pub mod tools;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use http::{HeaderName, Method, StatusCode, header};
use mcpgate_token::Validator;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use url::Url;

use crate::auth::AuthState;
use crate::challenge::ChallengeContext;
use crate::closing::Closing;
use crate::downstream::UserDetailsSource;
use crate::endpoint::Endpoint;
use crate::gateway::{Gateway, GatewaySettings};
use crate::guard::Guard;
use crate::origin::OriginPolicy;
use crate::policy::PolicyHandle;
use crate::prm::ProtectedResourceMetadata;
use crate::ratelimit::RateLimits;
use crate::session::{Clock, SessionLimits, Sessions, SharedSessions, SystemClock};
use crate::tools::GateTools;
use mcpgate_audit::AuditSink;

/// The path of the MCP endpoint.
pub const MCP_PATH: &str = "/mcp";
/// The root Protected Resource Metadata path.
pub const PRM_PATH: &str = "/.well-known/oauth-protected-resource";

/// How the endpoint presents itself. Every field states its default.
#[derive(Debug, Clone)]
pub struct ResourceSettings {
    /// The public base URL (scheme, host, port) clients reach this server
    /// at; `resource` in the metadata is this plus `/mcp`. Required.
    pub public_url: Url,
    /// `resource_name` in the metadata. Default: "mcpgate".
    pub resource_name: String,
    /// Issuers of the authorization servers clients should use. Required.
    pub authorization_servers: Vec<String>,
    /// Scopes to advertise and to name in challenges. Default: none.
    pub scopes: Vec<String>,
    /// `Host` values accepted on `/mcp` (DNS-rebinding defence). Default:
    /// loopback names plus the public URL's host.
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed to call `/mcp`, besides loopback ones when
    /// [`Self::loopback_origins`]; a request without an `Origin` is always
    /// let through. Default: none.
    pub allowed_origins: Vec<String>,
    /// Accept every loopback origin (pages and extensions on this machine):
    /// for a server on loopback only. Default: whether the public URL's
    /// host is loopback.
    pub loopback_origins: bool,
    /// Largest request body. Default: 1 MiB.
    pub max_body_bytes: usize,
    /// How many MCP sessions may be open, and for how long. Default:
    /// [`SessionLimits::default`].
    pub sessions: SessionLimits,
    /// The clock sessions expire by. Default: the system's.
    pub clock: Arc<dyn Clock>,
    /// Where `get_user_details` gets the caller's profile; without one the
    /// tool is not listed. Default: none.
    pub user_details: Option<Arc<dyn UserDetailsSource>>,
    /// Sessions shared by every replica, so that one opened at another
    /// continues here. Default: none (sessions live in this process).
    pub shared_sessions: Option<Arc<dyn SharedSessions>>,
    /// Gateway mode: the MCP server(s) `/mcp` stands in front of, instead
    /// of the built-in tools; several are shown each under its name
    /// ([`gateway::mux`]). Default: none.
    pub upstreams: Vec<GatewaySettings>,
    /// Who may call which tool, read which resource, get which prompt;
    /// swapped in place on reload. Default: everything allowed.
    pub policy: Arc<PolicyHandle>,
    /// Where every decision is recorded. Default: nowhere.
    pub audit: Option<Arc<dyn AuditSink>>,
    /// Tool calls per minute per user and per client application.
    /// Default: no limit.
    pub rate_limits: RateLimits,
    /// Set when the server shuts down: standalone streams end.
    pub closing: Closing,
}

impl ResourceSettings {
    /// Settings with defaults for a server reachable at `public_url`.
    pub fn new(public_url: Url, authorization_servers: Vec<String>) -> Self {
        let mut allowed_hosts: Vec<String> = ["localhost", "127.0.0.1", "::1", "[::1]"]
            .map(String::from)
            .to_vec();
        if let Some(host) = public_url.host_str()
            && !allowed_hosts.iter().any(|h| h == host)
        {
            allowed_hosts.push(host.to_owned());
        }
        let loopback_origins = is_loopback_host(&public_url);
        Self {
            public_url,
            loopback_origins,
            resource_name: "mcpgate".to_owned(),
            authorization_servers,
            scopes: Vec::new(),
            allowed_hosts,
            allowed_origins: Vec::new(),
            max_body_bytes: 1024 * 1024,
            sessions: SessionLimits::default(),
            clock: Arc::new(SystemClock::default()),
            user_details: None,
            shared_sessions: None,
            upstreams: Vec::new(),
            policy: Arc::default(),
            audit: None,
            rate_limits: RateLimits::default(),
            closing: Closing::default(),
        }
    }

    /// The canonical URI of the MCP endpoint.
    pub fn mcp_url(&self) -> String {
        format!("{}{MCP_PATH}", self.base())
    }

    /// The path-suffixed Protected Resource Metadata URL that challenges name.
    pub fn prm_url(&self) -> String {
        format!("{}{PRM_PATH}{MCP_PATH}", self.base())
    }

    fn base(&self) -> &str {
        self.public_url.as_str().trim_end_matches('/')
    }
}

/// Whether `/mcp` checks tokens.
#[derive(Debug, Clone)]
pub enum Access {
    /// Every request needs a token this validator accepts.
    Validate(Arc<Validator>),
    /// No authentication at all: benchmarks and conformance runs only.
    Open,
}

/// Counters an operator (and the tests) can read.
#[derive(Debug, Default)]
pub struct Stats {
    /// Tool calls that reached a tool handler.
    pub tool_calls: AtomicU64,
}

/// Builds the router: `/mcp`, the metadata documents, and `/healthz`.
pub fn router(settings: &ResourceSettings, access: Access, stats: Arc<Stats>) -> Router {
    router_with_endpoint(settings, access, stats).0
}

/// [`router`], and the endpoint behind `/mcp` (its sessions, for tests and
/// operators).
pub fn router_with_endpoint(
    settings: &ResourceSettings,
    access: Access,
    stats: Arc<Stats>,
) -> (Router, Arc<Endpoint>) {
    let origins = OriginPolicy::new(
        &settings.allowed_hosts,
        &settings.allowed_origins,
        settings.loopback_origins,
    );
    let challenge = ChallengeContext {
        resource_metadata: settings.prm_url(),
        scope: settings.scopes.join(" "),
    };
    let auth = match access {
        Access::Validate(validator) => Some(AuthState {
            validator,
            challenge: challenge.clone(),
        }),
        Access::Open => None,
    };
    let guard = Guard::new(
        settings.policy.clone(),
        settings.audit.clone(),
        auth.is_some().then_some(challenge),
    )
    .with_rate_limits(settings.rate_limits);
    let mut endpoint = Endpoint::new(
        Arc::new(GateTools::new(stats, settings.user_details.clone())),
        auth,
        origins.clone(),
        Sessions::new(
            settings.sessions,
            settings.clock.clone(),
            settings.shared_sessions.clone(),
        ),
        settings.max_body_bytes,
    );
    if !settings.upstreams.is_empty() {
        endpoint = endpoint.with_gateway(Arc::new(Gateway::new(settings.upstreams.clone())));
    }
    let endpoint = Arc::new(
        endpoint
            .with_guard(Arc::new(guard))
            .with_closing(settings.closing.clone()),
    );
    let mut mcp = Router::new().route(MCP_PATH, any(endpoint::handle).with_state(endpoint.clone()));
    if !settings.upstreams.is_empty() {
        // Clients still on the 2024-11-05 transport reach the same upstream.
        mcp = mcp
            .route(
                legacy::SSE_PATH,
                any(legacy::sse).with_state(endpoint.clone()),
            )
            .route(
                legacy::MESSAGES_PATH,
                any(legacy::messages).with_state(endpoint.clone()),
            );
    }
    if settings.loopback_origins || !settings.allowed_origins.is_empty() {
        mcp = mcp.layer(mcp_cors(origins));
    }

    let doc = Arc::new(ProtectedResourceMetadata {
        resource: settings.mcp_url(),
        authorization_servers: settings.authorization_servers.clone(),
        scopes_supported: settings.scopes.clone(),
        bearer_methods_supported: vec!["header".to_owned()],
        resource_name: settings.resource_name.clone(),
    });
    // Public documents: any origin may read them (browser-based clients).
    let metadata = Router::new()
        .route(PRM_PATH, get(prm::serve))
        .route(&format!("{PRM_PATH}{MCP_PATH}"), get(prm::serve))
        .with_state(doc)
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([Method::GET, Method::OPTIONS]),
        );

    let router = mcp
        .merge(metadata)
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found").into_response() })
        .layer(RequestBodyLimitLayer::new(settings.max_body_bytes));
    (router, endpoint)
}

/// `true` for `localhost` and loopback addresses.
pub fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

// CORS answers for exactly the origins the endpoint itself lets through.
fn mcp_cors(origins: OriginPolicy) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origin.to_str().is_ok_and(|o| origins.allows_origin(o))
        }))
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("mcp-session-id"),
            HeaderName::from_static("mcp-protocol-version"),
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            header::WWW_AUTHENTICATE,
            HeaderName::from_static("mcp-session-id"),
        ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_origins_follow_the_public_url() {
        let settings = |url: &str| ResourceSettings::new(url.parse().expect("url"), Vec::new());
        assert!(settings("http://127.0.0.1:8080").loopback_origins);
        assert!(settings("http://localhost:8080").loopback_origins);
        assert!(settings("http://[::1]:8080").loopback_origins);
        assert!(!settings("https://mcp.example.com").loopback_origins);
        assert!(!settings("https://127.0.0.1.nip.io").loopback_origins);
    }
}

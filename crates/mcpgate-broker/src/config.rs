//! The broker's settings: plain data, every field stating its default.
//! [`BrokerConfig::new`] fills the defaults from the two things that have
//! none: the issuer (the broker's public base URL) and the MCP resource.

use std::sync::Arc;
use std::time::Duration;

use mcpgate_audit::AuditSink;
use mcpgate_store::Clock;

use crate::cimd::CimdOptions;
use crate::metadata::Issuer;

/// The MCP scope: use the tools of the protected server.
pub const MCP_SCOPE: &str = "mcp:tools";
/// The scope that asks for a refresh token.
pub const OFFLINE_ACCESS: &str = "offline_access";

/// How the broker runs.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// The broker's issuer: its public base URL (https, or http on
    /// loopback). Required. `/auth/callback` under it must be a redirect
    /// URI of the broker's app upstream.
    pub issuer: Issuer,
    /// The protected MCP resource URLs tokens may be for (RFC 8707); the
    /// first is the default `aud`. Required, at least one.
    pub resources: Vec<String>,
    /// The scopes offered. Default: `mcp:tools`, `offline_access`.
    pub scopes: Vec<String>,
    /// Access-token lifetime. Default 10 minutes: short, because a JWT
    /// cannot be recalled; the refresh token carries the session.
    pub access_token_lifetime: Duration,
    /// Refresh-token lifetime, renewed on every rotation (sliding, as
    /// Entra's). Default 14 days.
    pub refresh_token_lifetime: Duration,
    /// Authorization-code lifetime. Default 60 s: the code goes straight
    /// from the redirect to the client's token request, so a minute covers
    /// any real client, and OAuth 2.1 §4.1.2 asks for ten at most (Entra's
    /// are good for about ten; a shorter window gives a leaked code less
    /// time).
    pub code_lifetime: Duration,
    /// How long a pending sign-in (at the upstream, then at the consent
    /// page) is kept. Default 10 minutes, enough for a person to sign in
    /// with MFA.
    pub pending_lifetime: Duration,
    /// How long a consent is remembered (store and cookie). Default 90 days.
    pub consent_lifetime: Duration,
    /// Clients that skip the consent page (as Entra's "authorized client
    /// applications"). Default none.
    pub pre_authorized_clients: Vec<String>,
    /// DEVELOPMENT ONLY: approve consent without a page when this user
    /// (their `preferred_username`) signs in. Refused unless the issuer is
    /// on loopback, and announced at start. Default `None`.
    pub dev_auto_approve: Option<String>,
    /// Registrations per source address per [`rate_window`](Self::rate_window).
    /// Default 20.
    pub register_rate_limit: u64,
    /// Authorization requests (each holds a pending sign-in) per source
    /// address per window. Default 60.
    pub authorize_rate_limit: u64,
    /// The rate-limit window. Default 60 s.
    pub rate_window: Duration,
    /// How long a dynamically registered client is kept. Default 90 days.
    pub client_lifetime: Duration,
    /// How Client ID Metadata Documents are fetched (the fetcher is built
    /// by the caller with these). Default: production rules.
    pub cimd: CimdOptions,
    /// The clock. Default: the system clock.
    pub clock: Clock,
    /// Where sign-ins, tokens issued and token requests refused are
    /// recorded, one record each. Default `None`: not recorded.
    pub audit: Option<Arc<dyn AuditSink>>,
}

impl BrokerConfig {
    /// The defaults for a broker at `issuer` guarding `resource`.
    pub fn new(issuer: Issuer, resource: impl Into<String>) -> Self {
        Self {
            issuer,
            resources: vec![resource.into()],
            scopes: vec![MCP_SCOPE.to_owned(), OFFLINE_ACCESS.to_owned()],
            access_token_lifetime: Duration::from_secs(600),
            refresh_token_lifetime: Duration::from_secs(14 * 24 * 3600),
            code_lifetime: Duration::from_secs(60),
            pending_lifetime: Duration::from_secs(600),
            consent_lifetime: Duration::from_secs(90 * 24 * 3600),
            pre_authorized_clients: Vec::new(),
            dev_auto_approve: None,
            register_rate_limit: 20,
            authorize_rate_limit: 60,
            rate_window: Duration::from_secs(60),
            client_lifetime: Duration::from_secs(90 * 24 * 3600),
            cimd: CimdOptions::default(),
            clock: Clock::system(),
            audit: None,
        }
    }
}

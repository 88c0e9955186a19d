//! What the IdP remembers in memory between requests: device codes in
//! progress, browser sessions and sign-ins in progress, and how many codes
//! it has issued. Opaque tokens are keyed by their SHA-256, so the state
//! never holds a usable token.
//!
//! All of it is short-lived, bounded and made by browsers: a restart loses
//! it, and a person in the middle of a sign-in starts it again. Grants
//! that must outlive the process (authorization codes, refresh-token
//! families, consents) live in the [store](mcpgate_store::Store) instead,
//! as [`crate::grants`] maps them.

use std::collections::{HashMap, VecDeque};

use crate::conditional_access::{AuthContext, ClaimsRequest};
use crate::scope::ScopeRequest;

/// Authorization codes live ten minutes, as Entra's do.
pub const CODE_TTL: u64 = 600;
/// How long the store keeps a code: twice its life, so that a replay just
/// after expiry is still recognised as one.
pub const CODE_RETENTION: u64 = 2 * CODE_TTL;
/// Refresh tokens expire after 90 days without use.
pub const REFRESH_TTL: u64 = 90 * 24 * 3600;
/// Consents are asked again after a year (Entra keeps them until revoked;
/// the store keeps nothing for ever).
pub const CONSENT_TTL: u64 = 365 * 24 * 3600;
/// Device codes live fifteen minutes, as Entra's do.
pub const DEVICE_TTL: u64 = 900;
/// Browser sign-in sessions.
pub const SESSION_TTL: u64 = 12 * 3600;
/// A sign-in page left open.
pub const PENDING_TTL: u64 = 1800;

/// A validated authorize request, waiting for sign-in or consent.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    /// Tenant segment of the URL (GUID, `common` or `organizations`).
    pub tenant_segment: String,
    /// Client.
    pub client_id: String,
    /// Redirect URI, as given.
    pub redirect_uri: String,
    /// Scopes.
    pub scope: ScopeRequest,
    /// `state`, echoed back.
    pub state: Option<String>,
    /// `nonce`, put in the ID token.
    pub nonce: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: Option<String>,
    /// `query`, `fragment` or `form_post`.
    pub response_mode: String,
    /// `login_hint`.
    pub login_hint: Option<String>,
    /// `prompt=login` or `select_account`.
    pub force_login: bool,
    /// What the `claims` parameter asks (Conditional Access step-up).
    pub claims: ClaimsRequest,
}

/// What a sign-in page waits for next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Who signs in: a one-click choice or a password.
    SignIn,
    /// The second factor of this user, who gave the first.
    SecondFactor {
        /// The user's object id.
        user_oid: String,
    },
    /// This user's consent.
    Consent {
        /// The user's object id.
        user_oid: String,
        /// How the sign-in authenticated them.
        context: AuthContext,
    },
}

impl Next {
    /// The user, once known.
    pub fn user_oid(&self) -> Option<&str> {
        match self {
            Self::SignIn => None,
            Self::SecondFactor { user_oid } | Self::Consent { user_oid, .. } => Some(user_oid),
        }
    }
}

/// A sign-in page shown and not yet answered.
#[derive(Clone)]
pub struct Pending {
    /// The request.
    pub request: AuthorizeRequest,
    /// The CSRF value the form and the cookie must both carry.
    pub csrf: String,
    /// What the page asks for next.
    pub next: Next,
    /// Wrong second-factor codes entered on this page so far.
    pub failed_codes: u8,
    /// Created at.
    pub created: u64,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("request", &self.request)
            .field("csrf", &"[redacted]")
            .field("next", &self.next)
            .field("failed_codes", &self.failed_codes)
            .field("created", &self.created)
            .finish()
    }
}

/// Where a device code stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceStatus {
    /// Waiting for the user.
    Pending,
    /// Approved by this user.
    Approved(String),
    /// The user said no.
    Denied,
    /// Tokens issued.
    Redeemed,
}

/// A device authorization.
#[derive(Clone)]
pub struct DeviceRecord {
    /// Client.
    pub client_id: String,
    /// Tenant segment.
    pub tenant_segment: String,
    /// Scopes.
    pub scope: ScopeRequest,
    /// The code the user types.
    pub user_code: String,
    /// Expiry.
    pub expires: u64,
    /// Least seconds between polls.
    pub interval: u64,
    /// The last poll.
    pub last_poll: Option<u64>,
    /// Status.
    pub status: DeviceStatus,
    /// How the approving user authenticated on the device page.
    pub context: AuthContext,
}

impl std::fmt::Debug for DeviceRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The user code approves the grant on the device page.
        f.debug_struct("DeviceRecord")
            .field("client_id", &self.client_id)
            .field("tenant_segment", &self.tenant_segment)
            .field("scope", &self.scope)
            .field("user_code", &"[redacted]")
            .field("expires", &self.expires)
            .field("status", &self.status)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

/// A browser session (cookie).
#[derive(Debug, Clone)]
pub struct Session {
    /// User.
    pub user_oid: String,
    /// Whether the sign-in that made it did the second factor (single
    /// sign-on then satisfies MFA rules without asking again).
    pub mfa: bool,
    /// Expiry.
    pub expires: u64,
}

/// How much an unauthenticated caller can make the IdP hold. A request
/// past a cap is refused (`AADSTS90055`, 429) instead of growing memory;
/// expired entries are swept on a timer, so a cap frees up as flows end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sign-in pages shown and not answered. Default 2,000.
    pub max_pending: usize,
    /// Device codes issued and not expired. Default 1,000.
    pub max_devices: usize,
    /// Browser sessions. Default 2,000.
    pub max_sessions: usize,
    /// Authorization codes this process issued and the store still keeps
    /// (until [`CODE_RETENTION`] has passed, to catch replays). Default
    /// 10,000.
    pub max_codes: usize,
    /// Seconds between sweeps of expired entries. Default 30.
    pub sweep_interval_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pending: 2_000,
            max_devices: 1_000,
            max_sessions: 2_000,
            max_codes: 10_000,
            sweep_interval_secs: 30,
        }
    }
}

/// How many entries each map holds (for tests and diagnostics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateSizes {
    /// Sign-ins in progress.
    pub pending: usize,
    /// Device codes.
    pub devices: usize,
    /// Browser sessions.
    pub sessions: usize,
    /// Authorization codes this process issued that the store keeps.
    pub codes: usize,
}

/// Everything in memory, behind one lock that is never held across an
/// await: a change that depends on a check happens under one guard, so
/// that two concurrent requests cannot both spend one device code or one
/// sign-in page. `Debug` prints sizes only: the maps hold user codes and
/// CSRF values.
#[derive(Default)]
pub struct State {
    /// When each code this process issued leaves the store (Unix seconds),
    /// for the cap on codes; the codes themselves are in the store.
    pub codes: VecDeque<u64>,
    /// Device codes by hash.
    pub devices: HashMap<String, DeviceRecord>,
    /// User code → device code hash.
    pub user_codes: HashMap<String, String>,
    /// Sessions by cookie hash.
    pub sessions: HashMap<String, Session>,
    /// Sign-ins in progress by id.
    pub pending: HashMap<String, Pending>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("sizes", &self.sizes())
            .finish_non_exhaustive()
    }
}

impl State {
    /// Drops what has expired. Run by the IdP's sweeper task on a timer,
    /// never on a request's path: lookups check expiry themselves.
    pub fn sweep(&mut self, now: u64) {
        self.codes.retain(|&gone| gone > now);
        self.devices.retain(|_, d| d.expires + DEVICE_TTL > now);
        let devices = &self.devices;
        self.user_codes.retain(|_, h| devices.contains_key(h));
        self.sessions.retain(|_, s| s.expires > now);
        self.pending.retain(|_, p| p.created + PENDING_TTL > now);
    }

    /// How many entries each map holds.
    pub fn sizes(&self) -> StateSizes {
        StateSizes {
            pending: self.pending.len(),
            devices: self.devices.len(),
            sessions: self.sessions.len(),
            codes: self.codes.len(),
        }
    }

    /// Counts a code about to be issued at `now`, unless this process has
    /// `max` codes in the store already; returns when it leaves the store,
    /// for [`State::release_code`] if it is not issued after all.
    pub fn reserve_code(&mut self, now: u64, max: usize) -> Option<u64> {
        if self.codes.len() >= max {
            return None;
        }
        let gone = now + CODE_RETENTION;
        self.codes.push_back(gone);
        Some(gone)
    }

    /// Takes back a reservation whose code was not stored.
    pub fn release_code(&mut self, gone: u64) {
        if let Some(i) = self.codes.iter().rposition(|&g| g == gone) {
            self.codes.remove(i);
        }
    }
}

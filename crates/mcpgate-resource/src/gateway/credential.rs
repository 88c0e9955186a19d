//! A token for an HTTP upstream's own audience, obtained for the caller
//! (On-Behalf-Of): the upstream learns who calls from a token issued to it,
//! never from the caller's token, which stays with the gateway.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mcpgate_token::Principal;

use crate::challenge::ClaimsChallenge;

/// An access token for the upstream. Its `Debug` shows nothing.
#[derive(Clone)]
pub struct UpstreamToken {
    secret: String,
    /// When it stops being valid, if the issuer said.
    pub expires_at: Option<SystemTime>,
}

impl fmt::Debug for UpstreamToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamToken")
            .field("secret", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl UpstreamToken {
    /// A token valid until `expires_at`.
    pub fn new(secret: String, expires_at: Option<SystemTime>) -> Self {
        Self { secret, expires_at }
    }

    /// The token itself, for the `Authorization` header only.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether it is still good for `margin` from `now` (a token without
    /// an expiry is used once, then asked for again).
    pub fn fresh_at(&self, now: SystemTime, margin: Duration) -> bool {
        self.expires_at.is_some_and(|at| at > now + margin)
    }
}

/// The caller's own access token, kept by an upstream session only to be
/// exchanged On-Behalf-Of (direct mode, where it was issued to mcpgate's
/// API). It is never sent to an upstream. Its `Debug` shows nothing.
#[derive(Clone)]
pub struct CallerToken(Arc<str>);

impl CallerToken {
    /// The token the caller presented.
    pub fn new(token: &str) -> Self {
        Self(token.into())
    }

    /// The token itself, for the exchange's `assertion` only.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CallerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallerToken([redacted])")
    }
}

/// Why no token could be had for the caller.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialError {
    /// Nothing to act on: the caller must sign in again (or first).
    #[error("no grant to act for this user at the upstream; sign in again")]
    NoGrant,
    /// The identity provider wants more of the caller's sign-in (a second
    /// factor) before it gives a token for them: relayed to the client as
    /// a claims challenge. Nothing was issued, and nothing is kept.
    #[error("the identity provider asks the caller to sign in again satisfying claims {}", .0.json())]
    ClaimsChallenge(ClaimsChallenge),
    /// The identity provider refused or could not be reached.
    #[error("no token for the upstream: {0}")]
    Unavailable(String),
}

/// A boxed future, so that sources can be held as trait objects.
pub type CredentialFuture<'a> =
    Pin<Box<dyn Future<Output = Result<UpstreamToken, CredentialError>> + Send + 'a>>;

/// Where the gateway gets a token for the upstream, for a caller.
pub trait TokenSource: Send + Sync + fmt::Debug {
    /// A token for the upstream's audience, acting for `caller`, who
    /// presented `presented` (kept only where [`Self::exchanges_caller_token`]).
    fn token_for<'a>(
        &'a self,
        caller: &'a Principal,
        presented: Option<&'a CallerToken>,
    ) -> CredentialFuture<'a>;

    /// Whether the caller's own token is what is exchanged: upstream
    /// sessions then keep the newest one their client presented.
    fn exchanges_caller_token(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_never_prints_and_expires_with_a_margin() {
        let now = SystemTime::now();
        let token = UpstreamToken::new("eyJsecret".into(), Some(now + Duration::from_secs(120)));
        assert!(!format!("{token:?}").contains("eyJ"));
        assert!(token.fresh_at(now, Duration::from_secs(60)));
        assert!(!token.fresh_at(now, Duration::from_secs(180)));
        assert!(!UpstreamToken::new("x".into(), None).fresh_at(now, Duration::ZERO));
        assert!(!format!("{:?}", CallerToken::new("eyJcaller")).contains("eyJ"));
    }
}

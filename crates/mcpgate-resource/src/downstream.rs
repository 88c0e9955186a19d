//! Acting for the caller against a downstream API (Microsoft Graph's `/me`,
//! or the development IdP's). The server obtains its own token for the
//! user — On-Behalf-Of, or the upstream grant it keeps — and never
//! forwards the caller's token: that one is for this server alone.
//!
//! The resource crate knows only the contract; the binary supplies the
//! implementation (the broker's upstream grant, Graph's URL).

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use mcpgate_token::Principal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What `get_user_details` answers: the user's Graph profile.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UserDetails {
    /// Display name.
    pub display_name: Option<String>,
    /// Mail address.
    pub mail: Option<String>,
    /// User principal name (the sign-in name).
    pub user_principal_name: Option<String>,
    /// Job title.
    pub job_title: Option<String>,
    /// Object id.
    pub id: Option<String>,
}

/// Why the user's details could not be had. The message is shown to the
/// MCP client: it names what to do, never a token.
#[derive(Debug, thiserror::Error)]
pub enum DownstreamError {
    /// The caller's sign-in gives the server no grant to act with (a token
    /// not issued through this server's sign-in, or one whose grant ended).
    #[error("this server holds no sign-in to act for you with: sign in again through this server")]
    NoGrant,
    /// The identity provider wants more of the user's sign-in (a second
    /// factor) before it gives the server a token for them: answered with
    /// a claims challenge, so that the client signs in again.
    #[error("the identity provider asks you to sign in again satisfying claims {}", .0.json())]
    ClaimsChallenge(crate::challenge::ClaimsChallenge),
    /// The identity provider refused to give the server a token for the
    /// user (consent missing, conditional access, a revoked grant).
    #[error("the identity provider refused a token for the downstream API: {0}")]
    Refused(String),
    /// The downstream API or the identity provider could not be reached or
    /// answered something unusable.
    #[error("the downstream API is unavailable: {0}")]
    Unavailable(String),
}

/// A boxed future, so that the source can be held as a trait object.
pub type DownstreamFuture<'a> =
    Pin<Box<dyn Future<Output = Result<UserDetails, DownstreamError>> + Send + 'a>>;

/// Where `get_user_details` gets its answer.
pub trait UserDetailsSource: Send + Sync + fmt::Debug {
    /// The profile of the user `caller` stands for, fetched with a token the
    /// server obtained for them.
    fn user_details<'a>(&'a self, caller: &'a Principal) -> DownstreamFuture<'a>;
}

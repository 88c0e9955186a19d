//! Why a token was refused. Messages name the failed check and the values a
//! person needs to fix it, and never contain the token itself.

use thiserror::Error;

/// A token was not accepted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ValidationError {
    /// The token is longer than the configured limit.
    #[error("the token is {len} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a compact JWS (three base64url parts with JSON header and claims).
    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is not on the allow-list.
    #[error(
        "the token is signed with {alg:?}, which this server does not accept (allowed: {allowed})"
    )]
    AlgorithmNotAllowed {
        /// The token's algorithm.
        alg: String,
        /// The allow-list, comma separated.
        allowed: String,
    },
    /// A Microsoft Graph token was presented to this server.
    #[error(
        "this is a Microsoft Graph token (aud {aud}); it is meant for Graph, not for this server: request a token for this server's scope instead"
    )]
    GraphToken {
        /// The Graph audience found.
        aud: String,
    },
    /// The issuer is not one this server trusts.
    #[error("the token's issuer {iss:?} is not trusted here")]
    UntrustedIssuer {
        /// The token's `iss`.
        iss: String,
    },
    /// A multi-tenant issuer whose tenant does not match `tid`.
    #[error("the token's issuer {iss:?} does not match its tenant id {tid:?}")]
    IssuerTenantMismatch {
        /// The token's `iss`.
        iss: String,
        /// The token's `tid`.
        tid: String,
    },
    /// The tenant is not on the allow-list.
    #[error("tenant {tid:?} is not allowed here")]
    TenantNotAllowed {
        /// The token's `tid` (empty when absent).
        tid: String,
    },
    /// No signing key with the token's `kid` is published by the issuer.
    #[error("no signing key {kid:?} is published by the issuer")]
    UnknownKey {
        /// The token's `kid` (empty when absent).
        kid: String,
    },
    /// The issuer's keys could not be fetched and none are cached.
    #[error("the issuer's signing keys are unavailable: {0}")]
    KeysUnavailable(String),
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// Not for this resource.
    #[error("the token's audience {found:?} is not this server (expected one of {expected})")]
    WrongAudience {
        /// The token's audiences.
        found: Vec<String>,
        /// The accepted audiences, comma separated.
        expected: String,
    },
    /// A required claim (a time claim, or `sub`/`oid`) is missing.
    #[error("the token has no {0} claim")]
    MissingClaim(&'static str),
    /// `exp` is in the past.
    #[error("the token expired {ago_secs} s ago")]
    Expired {
        /// How long ago, beyond the allowed clock skew.
        ago_secs: u64,
    },
    /// `nbf` is in the future.
    #[error("the token is not valid for another {in_secs} s (nbf)")]
    NotYetValid {
        /// How long until it is.
        in_secs: u64,
    },
    /// `iat` is in the future.
    #[error("the token claims to be issued {in_secs} s in the future (iat)")]
    IssuedInFuture {
        /// How far ahead.
        in_secs: u64,
    },
    /// An app-only token where only delegated ones are allowed.
    #[error("app-only tokens are not accepted here; sign in as a user")]
    AppOnlyNotAllowed,
    /// The client application is not on the allow-list.
    #[error("client application {0:?} is not allowed here")]
    ClientAppNotAllowed(String),
    /// The token lacks a required scope or role: a 403, not a 401.
    #[error("the token lacks {missing}")]
    InsufficientScope {
        /// What is missing, in words ("scope mcp:tools", "role X").
        missing: String,
    },
}

impl ValidationError {
    /// Whether the token is valid but not enough (403 `insufficient_scope`),
    /// as opposed to not valid at all (401 `invalid_token`).
    pub fn is_insufficient_scope(&self) -> bool {
        matches!(self, ValidationError::InsufficientScope { .. })
    }

    /// Whether the failure is this server's, not the token's: the keys could
    /// not be had. Still a 401 to the caller, but worth an operator's warning.
    pub fn is_server_side(&self) -> bool {
        matches!(self, ValidationError::KeysUnavailable(_))
    }

    /// A short, stable name for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            ValidationError::TooLarge { .. } => "too_large",
            ValidationError::Malformed(_) => "malformed",
            ValidationError::AlgorithmNotAllowed { .. } => "algorithm_not_allowed",
            ValidationError::GraphToken { .. } => "graph_token",
            ValidationError::UntrustedIssuer { .. } => "untrusted_issuer",
            ValidationError::IssuerTenantMismatch { .. } => "issuer_tenant_mismatch",
            ValidationError::TenantNotAllowed { .. } => "tenant_not_allowed",
            ValidationError::UnknownKey { .. } => "unknown_key",
            ValidationError::KeysUnavailable(_) => "keys_unavailable",
            ValidationError::BadSignature => "bad_signature",
            ValidationError::WrongAudience { .. } => "wrong_audience",
            ValidationError::MissingClaim(_) => "missing_claim",
            ValidationError::Expired { .. } => "expired",
            ValidationError::NotYetValid { .. } => "not_yet_valid",
            ValidationError::IssuedInFuture { .. } => "issued_in_future",
            ValidationError::AppOnlyNotAllowed => "app_only_not_allowed",
            ValidationError::ClientAppNotAllowed(_) => "client_app_not_allowed",
            ValidationError::InsufficientScope { .. } => "insufficient_scope",
        }
    }
}

/// A validation policy that cannot be used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// No issuer configured.
    #[error("no trusted issuer is configured")]
    NoIssuer,
    /// No audience configured.
    #[error("no audience is configured: set the identifier(s) of this server's API")]
    NoAudience,
    /// A symmetric or `none` algorithm was asked for.
    #[error("algorithm {0} can never be used with keys from a JWKS")]
    ForbiddenAlgorithm(String),
    /// An algorithm name that is not known.
    #[error("unknown algorithm {0:?}")]
    UnknownAlgorithm(String),
    /// The allow-list is empty.
    #[error("the algorithm allow-list is empty")]
    NoAlgorithm,
    /// App-only tokens allowed with nothing to authorize them.
    #[error("app-only tokens are allowed but no app role is required of them: set app_only_roles")]
    AppOnlyWithoutRoles,
    /// An issuer that is not an absolute https URL (http only on loopback).
    #[error("issuer {0:?} must be an https URL (http only on loopback)")]
    InsecureIssuer(String),
}

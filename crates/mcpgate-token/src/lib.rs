//! Access-token validation for mcpgate.
//!
//! This crate decides whether a bearer token may reach a protected MCP
//! server. It knows OpenID discovery, caches the issuers' signing keys, and
//! applies a [`ValidationPolicy`]: issuer (exact, or Entra's `{tenantid}`
//! template checked against `tid`), audience, lifetime, signature with an
//! allow-list of algorithms, tenant and client-app allow-lists, delegated
//! versus app-only tokens, scopes and roles. It needs no web framework and
//! no storage, so that anyone can embed it.
//!
//! | module | what it owns |
//! | --- | --- |
//! | [`policy`] | the policy as plain data, with secure defaults, and scope/role checks |
//! | [`issuer`] | trusted issuers, Entra's v1/v2 forms and multi-tenant template |
//! | [`jwks`] | discovery, the key cache, refresh on unknown `kid` |
//! | [`validator`] | the validator, its verified-token cache, and `explain` |
//! | [`claims`] | the claims read and the [`Principal`] yielded |
//! | [`clock`] | the injected clock |
//!
//! # Security
//!
//! - `none` and HMAC algorithms can never be enabled: a policy naming them
//!   does not compile, and symmetric keys in a JWKS are ignored.
//! - Tokens for Microsoft Graph are refused by name: they are never for us.
//! - Errors never contain the token; the verified-token cache is keyed by its
//!   SHA-256.

pub mod claims;
pub mod clock;
pub mod error;
pub mod issuer;
pub mod jwks;
pub mod policy;
pub mod validator;

pub use claims::{Claims, Principal, TokenKind};
pub use error::{PolicyError, ValidationError};
pub use policy::{Requirement, ValidationPolicy};
pub use validator::{Explanation, Validator};

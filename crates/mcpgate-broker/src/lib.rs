//! `mcpgate-broker`: mcpgate as the OAuth 2.1 authorization server that MCP
//! hosts expect, federated upstream to Entra ID (or the development IdP) as
//! a confidential client.
//!
//! MCP hosts look for RFC 8414 metadata, register themselves (RFC 7591) or
//! name a Client ID Metadata Document, and insist on PKCE. Entra offers
//! none of the registration paths, so mcpgate stands in front of it: the
//! host signs in at mcpgate, mcpgate signs the user in at Entra, and the
//! host only ever holds mcpgate's own tokens.
//!
//! This crate holds the parts that need no storage; the HTTP handlers
//! compose them with `mcpgate-store`.
//!
//! | module | what it owns |
//! | --- | --- |
//! | [`redirect`] | redirect URIs: registration rules, exact matching (loopback: any port) |
//! | [`registration`] | RFC 7591 registration: validated [`registration::ClientMetadata`], bounded sizes, the response |
//! | [`metadata`] | the RFC 8414 document (also at OpenID discovery), the issuer and endpoint paths |
//! | [`cimd`] | Client ID Metadata Documents: the SSRF-fenced fetch, the checks, the cache |
//! | [`pkce`] | PKCE S256: challenge and verifier syntax, constant-time verification |
//! | [`wire`] | the OAuth error JSON every refusal is mapped to |
//! | [`secret`] | client secrets, their stored hash, CSRF values (redacted `Debug`) |
//!
//! # Security
//!
//! - PKCE `plain` is refused, and so is a missing method (which means
//!   `plain`).
//! - Secrets print as `[redacted]`; a code verifier is not `Clone`.

pub mod cimd;
pub mod metadata;
pub mod pkce;
pub mod redirect;
pub mod registration;
pub mod secret;
pub mod wire;

pub use wire::{ErrorCode, OAuthError};

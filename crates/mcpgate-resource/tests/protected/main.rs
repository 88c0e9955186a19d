//! The protected MCP endpoint over real HTTP on loopback, in front of a real
//! issuer signing RS256 tokens.

mod downstream;
mod metadata;
mod negative;
mod policy;
mod sessions;
mod support;

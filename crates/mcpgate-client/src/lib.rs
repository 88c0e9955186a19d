//! `mcpgate-client`: the public client that reaches protected MCP servers
//! the way the MCP authorization specification orders it.
//!
//! | module | what it owns |
//! | --- | --- |
//! | [`challenge`] | reading `WWW-Authenticate: Bearer` challenges |
//! | [`claims`] | claims challenges (Conditional Access, MFA): decoded, bounded, sent on the next sign-in |
//! | [`assertion`] | `private_key_jwt` client assertions |
//! | [`discovery`] | Protected Resource Metadata, then authorization server metadata |
//! | [`scopes`] | which scopes to ask for, and Entra ID's rules |
//! | [`registration`] | the client's identity: pre-registered, CIMD, DCR; where its credentials may go |
//! | [`grants`] | client credentials, device code, authorization code (as states) |
//! | [`oauth`] | PKCE, the authorization request and response, the token endpoint |
//! | [`secret`] | tokens, secrets and verifiers that never print |
//! | [`error`] | OAuth errors with the server's raw body, apart from transport and parse failures |
//! | [`mcp`] | JSON-RPC over Streamable HTTP, seeing every 401 and 403 |
//! | [`store`] | registrations and tokens on disk (0600), the refresh lock |
//! | [`redirect`] | the loopback redirect, the browser, the non-interactive mode |
//! | [`session`] | the authorization held for a server: cached, refreshed under a lock |
//! | [`client`] | MCP requests that sign in as the server asks |
//!
//! Security: a configured client secret or key goes only to the
//! authorization server it belongs to (named, or the first one it was used
//! at); every discovered endpoint is https, or http on loopback; the
//! loopback listener takes only the callback carrying its own `state`.

pub mod account;
pub mod assertion;
pub mod challenge;
pub mod claims;
pub mod client;
pub mod discovery;
pub mod error;
pub mod grants;
pub mod mcp;
pub mod oauth;
pub mod redirect;
pub mod registration;
pub mod scopes;
pub mod secret;
pub mod session;
pub mod store;

pub use client::{Client, ClientOptions};
pub use error::ClientError;
pub use grants::SignIn;
pub use registration::Credentials;

/// The newest MCP protocol version this client speaks.
pub const PROTOCOL_VERSION: &str = "2025-11-25";

//! `mcpgate-client`: the public client that reaches protected MCP servers
//! the way the MCP authorization specification orders it.
//!
//! | module | what it owns |
//! | --- | --- |
//! | [`challenge`] | reading `WWW-Authenticate: Bearer` challenges |
//! | [`assertion`] | `private_key_jwt` client assertions |
//! | [`discovery`] | Protected Resource Metadata, then authorization server metadata |
//! | [`oauth`] | PKCE, the authorization request and response, the token endpoint |
//! | [`mcp`] | JSON-RPC over Streamable HTTP, seeing every 401 and 403 |
//! | [`store`] | registrations and tokens on disk (0600), the refresh lock |
//! | [`redirect`] | the loopback redirect, the browser, the non-interactive mode |
//! | [`client`] | MCP requests that sign in as the server asks |

pub mod assertion;
pub mod challenge;
pub mod client;
pub mod discovery;
pub mod mcp;
pub mod oauth;
pub mod redirect;
pub mod store;

pub use client::{Client, ClientError, ClientOptions, SignIn};

/// The newest MCP protocol version this client speaks.
pub const PROTOCOL_VERSION: &str = "2025-11-25";

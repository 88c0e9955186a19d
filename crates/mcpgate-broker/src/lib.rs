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
//! [`router`] serves the authorization server over HTTP from a [`Broker`]
//! built from a [`BrokerConfig`], a store (`mcpgate-store`), the upstream
//! client, the signing keys (`mcpgate-keys`), the consent key, the sealing
//! cipher and the CIMD fetcher. The flow: `/authorize` checks the client
//! and sends the user to the upstream; `/auth/callback` redeems the
//! upstream code, learns who the user is, asks consent (or finds it
//! given) and issues the client's code; `/token` redeems it for the
//! broker's own JWT. [`Broker::upstream_token_for`] lets the MCP server's
//! tools act for the user downstream (On-Behalf-Of).
//!
//! | module | what it owns |
//! | --- | --- |
//! | [`metadata`] | the RFC 8414 document (also at OpenID discovery), the issuer and endpoint paths |
//! | [`registration`] | RFC 7591 registration: validated [`registration::ClientMetadata`], bounded sizes, the response |
//! | [`redirect`] | redirect URIs: registration rules, exact matching (loopback: any port) |
//! | [`cimd`] | Client ID Metadata Documents: the SSRF-fenced fetch, the checks, the cache |
//! | [`pkce`] | PKCE S256: challenge and verifier syntax, constant-time verification |
//! | [`consent_page`] | the consent page: client, redirect host, scopes, CSRF field, security headers |
//! | [`consent_cookie`] | the signed `__Host-` consent cookie bound to client, user and scopes |
//! | [`secret`] | client secrets, codes, refresh tokens and their stored digests, CSRF values (redacted `Debug`) |
//! | [`upstream`] | the confidential client upstream: sign-in, code redemption, refresh, On-Behalf-Of |
//! | [`wire`] | the OAuth error JSON every refusal is mapped to |
//! | [`config`] | [`BrokerConfig`]: lifetimes, scopes, resources, limits, with defaults |
//! | [`server`] | [`Broker`] and [`router`]: the state, the routes, shared responses |
//! | [`register`] | `POST /register` with its rate limit |
//! | [`authorize`] | `GET /authorize`: client, redirect URI, PKCE, scopes, resource; to the upstream |
//! | [`callback`] | `GET /auth/callback`: the upstream code redeemed, consent found or asked, the code issued |
//! | [`consent`] | `POST /authorize/consent`: the user's decision, CSRF-checked |
//! | [`client_auth`] | client authentication at `/token` and `/revoke` |
//! | [`token`] | `POST /token`: authorization code and refresh token grants |
//! | [`mint`] | the broker's access tokens (JWT claims) |
//! | [`revoke`] | `POST /revoke` (RFC 7009) |
//! | [`logout`] | `GET /logout`: the grant and the upstream session ended |
//! | [`grant`] | what is sealed in the store: upstream grants, pending secrets, grant keys |
//! | [`downstream`] | [`Broker::upstream_token_for`]: On-Behalf-Of for the MCP server's tools |
//! | [`params`] | bounded, duplicate-free request parameters |
//!
//! Each module's error enum has one exhaustive `to_oauth()` mapping to
//! [`OAuthError`].
//!
//! # Security
//!
//! - **Redirect URIs match byte for byte**, never by prefix or after
//!   normalization; only loopback URIs match on any port (RFC 8252 §7.3).
//! - **Fetching a Client ID Metadata Document is an SSRF surface**: an
//!   unauthenticated caller picks the URL. [`cimd::CimdFetcher`] resolves
//!   names itself, refuses every non-public address, connects only to the
//!   addresses it checked, uses no proxy, follows no redirect, and caps
//!   size, time, concurrency and cache. [`cimd::CimdOptions::development`]
//!   allows loopback and `http`; it logs a warning and must never be used
//!   off a developer's machine.
//! - **Registration is unauthenticated**: every size is bounded here, but
//!   the caller must rate-limit `/register` and cap what the store holds.
//! - **Client names are self-asserted.** The consent page shows the
//!   redirect host prominently, since that, not the name, says where the
//!   code goes. Names are sanitised (no bidi overrides or invisible
//!   characters) and HTML-escaped.
//! - PKCE `plain` is refused, and so is a missing method (which means
//!   `plain`).
//! - Secrets print as `[redacted]`; a code verifier is not `Clone`; client
//!   secrets are stored as hashes and compared in constant time.
//! - **The user signs in upstream before consent**: consent is per (user,
//!   client) and only the upstream says who the user is. The upstream
//!   sends its code to the broker's own callback, never to the client, so
//!   nothing reaches a client's redirect URI before consent (or a
//!   pre-authorization, or a stored consent or valid consent cookie for
//!   that user, client and scopes).
//! - **A refused request spends nothing**: codes, refresh tokens, states
//!   and consent forms are checked on what the store reads back (or, for
//!   the consent form's CSRF value, by HMAC) before they are spent; only a
//!   replayed code or a reused refresh token revokes, by design.
//! - **Upstream tokens stay on the server**, sealed (AES-256-GCM) to their
//!   record; the client only ever holds the broker's own tokens, and
//!   [`Broker::upstream_token_for`] never sends a client's token anywhere.
//! - **Rate limits key on the peer address** (`ConnectInfo<SocketAddr>`):
//!   behind a proxy, the caller must supply the client's address.
//! - [`BrokerConfig::dev_auto_approve`] gives consent without a page; it is
//!   refused unless the issuer is on loopback, and logged at start.

mod audit;
pub mod authorize;
pub mod callback;
pub mod cimd;
pub mod client_auth;
pub mod config;
pub mod consent;
pub mod consent_cookie;
pub mod consent_page;
pub mod downstream;
pub mod grant;
pub mod logout;
pub mod metadata;
pub mod mint;
pub mod params;
pub mod pkce;
pub mod redirect;
pub mod register;
pub mod registration;
pub mod revoke;
pub mod secret;
pub mod server;
pub mod token;
pub mod upstream;
pub mod wire;

pub use config::BrokerConfig;
pub use downstream::{DownstreamError, DownstreamToken};
pub use server::{Broker, BrokerError, router};
pub use wire::{ErrorCode, OAuthError};

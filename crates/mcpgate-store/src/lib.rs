//! Durable state for the mcpgate broker, behind one narrow async trait.
//!
//! The broker (mcpgate's authorization server for MCP clients) keeps
//! registered clients, pending sign-ins, one-time codes, refresh-token
//! families, consents, the upstream (Entra) tokens it holds for each grant,
//! who owns each MCP session, the audit trail (see `mcpgate-audit`) and
//! the gateway's tool pins ([`PinRecord`]). All of it goes through [`Store`], whose
//! docs state each method's contract; [`open`] picks a backend from a URL:
//!
//! | URL | backend | for |
//! | --- | --- | --- |
//! | `memory:` | [`memory`] | tests, throwaway development runs |
//! | `sqlite:PATH` | [`sqlite`] | the embedded default: one file, survives kill -9 |
//! | `redis://HOST:PORT/DB` | [`redis`](mod@redis) | several replicas sharing one state; TTLs native |
//!
//! # Contents
//!
//! - [`Store`]: the trait; [`StoreError`] its one error type.
//! - [`records`]: what it holds, as typed records keyed by newtypes.
//! - [`seal`]: [`TokenCipher`], AES-256-GCM sealing of upstream tokens.
//! - [`Options`], [`Limits`], [`Clock`]: bounds and time, injected.
//!
//! # Security
//!
//! - Secrets are never stored raw: codes, refresh tokens and `state` values
//!   are keyed by their SHA-256 ([`TokenHash`]); upstream tokens are sealed
//!   by the caller with a [`TokenCipher`] bound to their record's key, with a
//!   key from a file or configuration, never a constant.
//! - Single use is enforced by the store, atomically, on every backend:
//!   a code redeems once, a `state` is taken once, a refresh token rotates
//!   once, and its reuse revokes its family.
//! - A refused operation changes nothing: codes and refresh tokens are read
//!   first, validated by the caller, and spent only then.
//! - What an unauthenticated caller can create is bounded in count and size
//!   by the backends themselves ([`Limits`], [`StoreError::Full`]).
//! - Errors carry no stored values, keys or URLs.
//! - The audit trail is bounded by age and count ([`Limits::audit_max_age`],
//!   [`Limits::max_audit_records`]), oldest dropped first; records are
//!   appended, never changed. [`StoreAudit`] hands the auditor's batches
//!   to any store.
//!
//! # Operating it
//!
//! - SQLite: WAL with `synchronous=NORMAL` (why, in [`sqlite`]); call
//!   [`Store::purge_expired`] now and then (hourly is plenty) to reclaim the
//!   space of expired rows, which read as absent already. Capped kinds sweep
//!   their own expired rows when they reach the cap.
//! - Redis: one primary, not Redis Cluster (the scripts name family keys
//!   they read from a token). Give each deployment its own
//!   [`Options::key_prefix`]. Keys expire by Redis's clock; the store's
//!   [`Clock`] only turns `expires_at` into TTLs. Nothing survives a Redis
//!   restart unless Redis persists (AOF, `appendfsync everysec` or stricter).
//! - Refresh: `get_refresh` → validate (client, scopes, resource) →
//!   `rotate_refresh`; on [`Rotation::Reuse`] the family is already revoked.
//!
//! # Example: a code redeemed once, a refused redemption spending nothing
//!
//! ```
//! use mcpgate_store::{FamilyId, Options, Redemption, Store, StoreError, TokenHash};
//!
//! /// The token endpoint's use of the store; `None` is `invalid_grant`.
//! async fn redeem(
//!     store: &dyn Store,
//!     code: &str,
//!     pkce_ok: impl Fn(&str) -> bool,
//! ) -> Result<Option<FamilyId>, StoreError> {
//!     let hash = TokenHash::of(code.as_bytes());
//!     let Some(state) = store.get_code(&hash).await? else {
//!         return Ok(None);
//!     };
//!     if let Some(bought) = state.redeemed_by {
//!         store.revoke_family(&bought).await?; // a replay revokes what it bought
//!         return Ok(None);
//!     }
//!     if !pkce_ok(&state.record.code_challenge) {
//!         return Ok(None); // refused: the code is still good for the real client
//!     }
//!     let family = FamilyId::random();
//!     match store.redeem_code(&hash, &family).await? {
//!         Redemption::Redeemed => Ok(Some(family)), // now issue tokens in `family`
//!         Redemption::AlreadyRedeemed { family: bought } => {
//!             store.revoke_family(&bought).await?; // lost a race to a replay
//!             Ok(None)
//!         }
//!         Redemption::Unknown => Ok(None),
//!     }
//! }
//! # let runtime = tokio::runtime::Runtime::new().expect("runtime");
//! # runtime.block_on(async {
//! # let store = mcpgate_store::open("memory:", Options::default()).await.expect("open");
//! # assert_eq!(redeem(store.as_ref(), "nope", |_| true).await.expect("redeem"), None);
//! # });
//! ```

mod audit;
mod codec;
mod engine;
pub mod error;
pub mod memory;
pub mod metered;
pub mod options;
pub mod records;
pub mod redis;
pub mod seal;
pub mod sqlite;
mod store;

use std::sync::Arc;

pub use audit::StoreAudit;
pub use error::{Kind, OpenError, StoreError};
pub use metered::Metered;
pub use options::{Clock, Limits, Options};
pub use records::{
    ClientId, ClientRecord, ClientSource, CodeRecord, CodeState, ConsentRecord, FamilyId,
    IdentityKey, PendingAuthorization, PendingPin, PinRecord, Redemption, RefreshRecord,
    RefreshState, Rotation, SessionId, Subject, Timestamp, TokenHash, UpstreamKey, UpstreamTokens,
};
pub use seal::{KeyBytes, SealError, Sealed, SecretBytes, TokenCipher};
pub use store::Store;

/// Opens the store a URL names: `memory:`, `sqlite:PATH` or
/// `redis://HOST:PORT/DB`.
pub async fn open(url: &str, options: Options) -> Result<Arc<dyn Store>, OpenError> {
    if url == "memory:" {
        return Ok(memory::open_memory(options));
    }
    if let Some(path) = url.strip_prefix("sqlite:") {
        // `sqlite:PATH`, and `sqlite://PATH` as other tools write it.
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(OpenError::MissingPath);
        }
        return sqlite::open_sqlite(std::path::Path::new(path), options).await;
    }
    if url.starts_with("redis://") {
        return Ok(Arc::new(self::redis::open_redis(url, options).await?));
    }
    Err(OpenError::UnknownScheme)
}

//! The [`Store`] trait: every operation the broker needs, each atomic.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use mcpgate_audit::{AuditQuery, AuditRecord};

use crate::error::StoreError;
use crate::records::{
    ClientId, ClientRecord, CodeRecord, CodeState, ConsentRecord, FamilyId, IdentityKey,
    PendingAuthorization, PinRecord, Redemption, RefreshRecord, RefreshState, Rotation, SessionId,
    Subject, TokenHash, UpstreamKey, UpstreamTokens,
};

/// The broker's durable state.
///
/// Every method is atomic: on one process or on several replicas sharing
/// one backend, no interleaving of calls observes or leaves a half-done
/// operation. A method that returns an error or a refusal (an outcome other
/// than success) changes nothing, except where its contract says so
/// ([`rotate_refresh`](Store::rotate_refresh) on reuse).
///
/// Expired records read as absent. Records created by unauthenticated
/// callers (clients, pending authorizations, sessions, counters) are capped
/// in count by [`Limits`](crate::Limits) ([`StoreError::Full`]); every
/// record is capped in size ([`StoreError::TooLarge`]).
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Stores a client, replacing one with the same id (a re-fetched CIMD
    /// document, a re-seeded static client). `Full` if the id is new and the
    /// store holds `max_clients` live clients.
    async fn put_client(&self, client: &ClientRecord) -> Result<(), StoreError>;

    /// The client with this id, unless unknown or expired.
    async fn get_client(&self, id: &ClientId) -> Result<Option<ClientRecord>, StoreError>;

    /// Forgets a client; whether it was there.
    async fn delete_client(&self, id: &ClientId) -> Result<bool, StoreError>;

    /// Counts one event under `key` in a fixed window: the first bump starts
    /// a window of `window`, and the count returned is this bump's number in
    /// it. For rate limits such as registrations per source address; `key`
    /// names the limit and the source (`"register:203.0.113.9"`). `Full` if
    /// the key is new and `max_counters` are alive (treat as over the limit).
    async fn bump_counter(&self, key: &str, window: Duration) -> Result<u64, StoreError>;

    /// Stores a pending authorization under the hash of the `state` sent
    /// upstream, for `ttl`. `Full` past `max_pending`.
    async fn put_pending(
        &self,
        key: &TokenHash,
        pending: &PendingAuthorization,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Removes and returns the pending authorization: of any number of
    /// concurrent calls with one key, at most one gets it.
    async fn take_pending(
        &self,
        key: &TokenHash,
    ) -> Result<Option<PendingAuthorization>, StoreError>;

    /// Stores a new authorization code under its hash, for `ttl`. The hash
    /// is of a fresh random code: an existing entry is replaced.
    async fn put_code(
        &self,
        hash: &TokenHash,
        code: &CodeRecord,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Reads a code without spending it, so that the caller can check PKCE
    /// and the redirect URI first: a refused redemption spends nothing.
    async fn get_code(&self, hash: &TokenHash) -> Result<Option<CodeState>, StoreError>;

    /// Spends a code for `family`: of any number of concurrent calls, exactly
    /// one gets [`Redemption::Redeemed`]; the others, and every later call
    /// until the code expires, get [`Redemption::AlreadyRedeemed`] naming
    /// the family the winner started, for the caller to revoke.
    async fn redeem_code(
        &self,
        hash: &TokenHash,
        family: &FamilyId,
    ) -> Result<Redemption, StoreError>;

    /// Stores the first refresh token of a family (after a redemption),
    /// kept until its `expires_at`. If the family was revoked in the
    /// meantime, the token is stored but never rotates.
    async fn put_refresh(&self, hash: &TokenHash, record: &RefreshRecord)
    -> Result<(), StoreError>;

    /// Reads a refresh token, with whether it was used and whether its
    /// family is revoked.
    async fn get_refresh(&self, hash: &TokenHash) -> Result<Option<RefreshState>, StoreError>;

    /// Rotates a refresh token, once the caller has validated the request:
    /// marks `old` used and stores `new` under `new_hash` in the old token's
    /// family ([`Rotation::Rotated`]). If `old` was used already, revokes
    /// its family ([`Rotation::Reuse`]): of concurrent rotations of one
    /// token exactly one succeeds. `Revoked` and `Unknown` change nothing.
    async fn rotate_refresh(
        &self,
        old: &TokenHash,
        new_hash: &TokenHash,
        new: &RefreshRecord,
    ) -> Result<Rotation, StoreError>;

    /// RFC 7009 for a refresh token: revokes its whole family and returns
    /// it; `None` if the token is unknown (which RFC 7009 answers with 200).
    async fn revoke_refresh(&self, hash: &TokenHash) -> Result<Option<FamilyId>, StoreError>;

    /// Revokes a family: none of its tokens rotates again. A family not yet
    /// known (a code replayed before its redeemer stored the first token)
    /// is remembered as revoked for `revocation_memory`.
    async fn revoke_family(&self, family: &FamilyId) -> Result<(), StoreError>;

    /// Stores the user's consent to a client, replacing an earlier one;
    /// kept until its `expires_at`.
    async fn put_consent(
        &self,
        subject: &Subject,
        client: &ClientId,
        consent: &ConsentRecord,
    ) -> Result<(), StoreError>;

    /// The user's live consent to a client.
    async fn get_consent(
        &self,
        subject: &Subject,
        client: &ClientId,
    ) -> Result<Option<ConsentRecord>, StoreError>;

    /// Withdraws a consent; whether there was one.
    async fn delete_consent(
        &self,
        subject: &Subject,
        client: &ClientId,
    ) -> Result<bool, StoreError>;

    /// Stores sealed upstream tokens, replacing earlier ones; kept until
    /// their `expires_at`. The store never sees them in the clear.
    async fn put_upstream(
        &self,
        key: &UpstreamKey,
        tokens: &UpstreamTokens,
    ) -> Result<(), StoreError>;

    /// The sealed upstream tokens under `key`.
    async fn get_upstream(&self, key: &UpstreamKey) -> Result<Option<UpstreamTokens>, StoreError>;

    /// Forgets upstream tokens; whether there were any.
    async fn delete_upstream(&self, key: &UpstreamKey) -> Result<bool, StoreError>;

    /// Records who owns an MCP session, alive for `idle` unless touched.
    /// `Full` past `max_sessions` (for a new id).
    async fn put_session(
        &self,
        id: &SessionId,
        owner: &IdentityKey,
        idle: Duration,
    ) -> Result<(), StoreError>;

    /// The session's owner, extending its life to `idle` from now; `None`
    /// if unknown or idle too long.
    async fn touch_session(
        &self,
        id: &SessionId,
        idle: Duration,
    ) -> Result<Option<IdentityKey>, StoreError>;

    /// Ends a session, and forgets its state; whether it was alive.
    async fn delete_session(&self, id: &SessionId) -> Result<bool, StoreError>;

    /// Keeps what another replica needs to resume the session (the MCP
    /// server's serialized `initialize` parameters), for `idle`. Counted
    /// with the sessions: `Full` past `max_sessions`.
    async fn put_session_state(
        &self,
        id: &SessionId,
        state: &str,
        idle: Duration,
    ) -> Result<(), StoreError>;

    /// What [`put_session_state`](Store::put_session_state) kept, unless it
    /// expired or the session ended.
    async fn get_session_state(&self, id: &SessionId) -> Result<Option<String>, StoreError>;

    /// Appends audit records, all or none (`TooLarge` if one is over
    /// `max_record_bytes`). Records older than `audit_max_age` are not
    /// kept; past `max_audit_records` the oldest records are dropped.
    /// Records are never changed once written.
    async fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError>;

    /// The records `query` selects, newest first, at most its
    /// [`effective_limit`](AuditQuery::effective_limit).
    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;

    /// The pin of `tool` on `upstream`.
    async fn get_pin(&self, upstream: &str, tool: &str) -> Result<Option<PinRecord>, StoreError>;

    /// Stores a pin, replacing the one with the same upstream and tool.
    /// `Full` if it is new and the store holds `max_pins`.
    async fn put_pin(&self, pin: &PinRecord) -> Result<(), StoreError>;

    /// Every pin, or `upstream`'s, ordered by upstream then tool.
    async fn list_pins(&self, upstream: Option<&str>) -> Result<Vec<PinRecord>, StoreError>;

    /// Deletes expired records and returns how many. Expired records already
    /// read as absent; this only reclaims space. Backends with native TTLs
    /// (Redis) have nothing to do.
    async fn purge_expired(&self) -> Result<u64, StoreError>;

    /// Whether the backend answers: one read that finds nothing. For
    /// readiness checks.
    async fn ping(&self) -> Result<(), StoreError> {
        self.get_client(&ClientId::new("mcpgate-readiness-probe"))
            .await
            .map(drop)
    }
}

//! The Redis backend: one state shared by several replicas.
//!
//! Every key starts with the deployment's prefix (`PREFIX:KIND:KEY`), so
//! deployments (and tests) sharing a database stay apart. Expiry is
//! Redis's own (`SET … PX`, `PEXPIRE`): this process's clock only turns a
//! record's `expires_at` into a TTL. Every operation that reads and then
//! writes is one Lua script, which Redis runs atomically, so two replicas
//! never both redeem one code, take one `state` or rotate one refresh token.
//!
//! Layout:
//!
//! | key | type | fields |
//! | --- | --- | --- |
//! | `client:ID`, `pending:HASH`, `session:ID`, `counter:KEY` | string | the record (a count for counters) |
//! | `idx:client`, … | sorted set | members of a capped kind, scored by expiry (ms), so caps count live records only |
//! | `code:HASH` | hash | `rec`, `by` (the family that redeemed it) |
//! | `refresh:HASH` | hash | `rec`, `family`, `used` |
//! | `family:ID` | hash | `revoked`; lives as long as the family's longest-lived token |
//! | `consent:…`, `upstream:KEY` | string | the record |
//! | `audit` | sorted set | audit records scored by time (ms); each member a 32-hex random id, then the record's JSON |
//! | `pin` | hash | tool pins: field `LEN:UPSTREAM` + tool, value the record |
//!
//! Scripts name family keys they compute from a token's `family` field,
//! which standalone Redis allows and Redis Cluster does not: this backend
//! is for a single Redis (or a replicated primary), not a cluster.

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{AsyncCommands as _, RedisError};
use async_trait::async_trait;

use mcpgate_audit::{AuditQuery, AuditRecord};

use crate::audit;
use crate::codec::{check_key, consent_key, decode, encode, pin_key, pin_prefix};
use crate::error::{Kind, OpenError, StoreError};
use crate::options::{Clock, Limits, Options};
use crate::records::{
    ClientId, ClientRecord, CodeRecord, CodeState, ConsentRecord, FamilyId, IdentityKey,
    PendingAuthorization, PinRecord, Redemption, RefreshRecord, RefreshState, Rotation, SessionId,
    SessionRecord, SessionStateRecord, Subject, Timestamp, TokenHash, UpstreamKey, UpstreamTokens,
    random_id, session_state_key,
};
use crate::store::Store;

/// How long connecting, and then any one command, may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a store on the Redis at `url` (`redis://HOST:PORT/DB`), with keys
/// under `options.key_prefix`. Connects before returning.
pub async fn open_redis(url: &str, options: Options) -> Result<RedisStore, OpenError> {
    let client = ::redis::Client::open(url).map_err(|e| OpenError::BadRedisUrl(Box::new(e)))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        .set_number_of_retries(3);
    let conn = ConnectionManager::new_with_config(client, config)
        .await
        .map_err(redis_error)?;
    Ok(RedisStore {
        conn,
        prefix: options.key_prefix,
        limits: options.limits,
        clock: options.clock,
    })
}

/// The Redis-backed [`Store`].
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    limits: Limits,
    clock: Clock,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL is not kept: it may hold a password.
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn redis_error(error: RedisError) -> StoreError {
    if error.is_io_error()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_connection_dropped()
    {
        StoreError::Unavailable(Box::new(error))
    } else {
        StoreError::Backend(Box::new(error))
    }
}

/// Milliseconds of a duration, at least one (`PX 0` is an error).
fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

mod scripts;

use scripts::{
    APPEND_AUDIT, BUMP, CAPPED_PUT, DELETE_INDEXED, GET_REFRESH, PUT_CODE, PUT_PIN, PUT_REFRESH,
    REDEEM, REVOKE_FAMILY, REVOKE_REFRESH, ROTATE, TAKE, TOUCH,
};

/// Audit records read per round trip while a query filters.
const AUDIT_PAGE: usize = 256;
/// The random id before each audit member's JSON.
const MEMBER_ID_LEN: usize = 32;

impl RedisStore {
    fn key(&self, kind: Kind, key: &str) -> String {
        format!("{}:{}:{}", self.prefix, kind.as_str(), key)
    }

    fn index(&self, kind: Kind) -> String {
        format!("{}:idx:{}", self.prefix, kind.as_str())
    }

    /// A key of its own for a kind kept in one structure (audit, pins).
    fn whole(&self, kind: Kind) -> String {
        format!("{}:{}", self.prefix, kind.as_str())
    }

    fn family_prefix(&self) -> String {
        self.key(Kind::Family, "")
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    fn limit(&self) -> usize {
        self.limits.max_record_bytes
    }

    /// Stores a record of a capped kind; `Full` at the cap.
    async fn put_capped(
        &self,
        kind: Kind,
        member: &str,
        value: &[u8],
        expires_at: Option<Timestamp>,
        cap: u64,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let (ttl, score) = match expires_at {
            None => (0, "+inf".to_owned()),
            Some(at) => match at.remaining_from(now) {
                Some(left) => (ms(left), at.as_millis().to_string()),
                // Already expired: storing it is forgetting it.
                None => return self.delete_indexed(kind, member).await.map(drop),
            },
        };
        let stored: i64 = CAPPED_PUT
            .key(self.key(kind, member))
            .key(self.index(kind))
            .arg(value)
            .arg(ttl)
            .arg(now.as_millis())
            .arg(cap)
            .arg(member)
            .arg(score)
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        if stored == 1 {
            Ok(())
        } else {
            Err(StoreError::Full(kind))
        }
    }

    async fn delete_indexed(&self, kind: Kind, member: &str) -> Result<bool, StoreError> {
        let deleted: i64 = DELETE_INDEXED
            .key(self.key(kind, member))
            .key(self.index(kind))
            .arg(member)
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(deleted > 0)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        kind: Kind,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let value: Option<Vec<u8>> = self
            .conn()
            .get(self.key(kind, key))
            .await
            .map_err(redis_error)?;
        value.map(|v| decode(kind, &v)).transpose()
    }

    /// SET with the TTL left until `expires_at`; an expired record deletes.
    async fn put_until(
        &self,
        kind: Kind,
        key: &str,
        value: &[u8],
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        let key = self.key(kind, key);
        let mut conn = self.conn();
        match expires_at.remaining_from(self.clock.now()) {
            Some(left) => conn.pset_ex::<_, _, ()>(key, value, ms(left)).await,
            None => conn.del::<_, ()>(key).await,
        }
        .map_err(redis_error)
    }

    async fn delete(&self, kind: Kind, key: &str) -> Result<bool, StoreError> {
        let deleted: i64 = self
            .conn()
            .del(self.key(kind, key))
            .await
            .map_err(redis_error)?;
        Ok(deleted > 0)
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn put_client(&self, client: &ClientRecord) -> Result<(), StoreError> {
        check_key(Kind::Client, client.id.as_str(), &self.limits)?;
        let value = encode(Kind::Client, client, self.limit())?;
        self.put_capped(
            Kind::Client,
            client.id.as_str(),
            &value,
            client.expires_at,
            self.limits.max_clients,
        )
        .await
    }

    async fn get_client(&self, id: &ClientId) -> Result<Option<ClientRecord>, StoreError> {
        self.get_json(Kind::Client, id.as_str()).await
    }

    async fn delete_client(&self, id: &ClientId) -> Result<bool, StoreError> {
        self.delete_indexed(Kind::Client, id.as_str()).await
    }

    async fn bump_counter(&self, key: &str, window: Duration) -> Result<u64, StoreError> {
        check_key(Kind::Counter, key, &self.limits)?;
        let now = self.clock.now();
        let count: i64 = BUMP
            .key(self.key(Kind::Counter, key))
            .key(self.index(Kind::Counter))
            .arg(ms(window))
            .arg(now.as_millis())
            .arg(self.limits.max_counters)
            .arg(key)
            .arg(now.plus(window).as_millis())
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        u64::try_from(count).map_err(|_| StoreError::Full(Kind::Counter))
    }

    async fn put_pending(
        &self,
        key: &TokenHash,
        pending: &PendingAuthorization,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let value = encode(Kind::Pending, pending, self.limit())?;
        let expires = self.clock.now().plus(ttl);
        self.put_capped(
            Kind::Pending,
            &key.to_hex(),
            &value,
            Some(expires),
            self.limits.max_pending,
        )
        .await
    }

    async fn take_pending(
        &self,
        key: &TokenHash,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        let member = key.to_hex();
        let value: Option<Vec<u8>> = TAKE
            .key(self.key(Kind::Pending, &member))
            .key(self.index(Kind::Pending))
            .arg(&member)
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        value.map(|v| decode(Kind::Pending, &v)).transpose()
    }

    async fn put_code(
        &self,
        hash: &TokenHash,
        code: &CodeRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let value = encode(Kind::Code, code, self.limit())?;
        let _: i64 = PUT_CODE
            .key(self.key(Kind::Code, &hash.to_hex()))
            .arg(value)
            .arg(ms(ttl))
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn get_code(&self, hash: &TokenHash) -> Result<Option<CodeState>, StoreError> {
        let (rec, by): (Option<Vec<u8>>, Option<String>) = ::redis::cmd("HMGET")
            .arg(self.key(Kind::Code, &hash.to_hex()))
            .arg("rec")
            .arg("by")
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        let Some(rec) = rec else {
            return Ok(None);
        };
        Ok(Some(CodeState {
            record: decode(Kind::Code, &rec)?,
            redeemed_by: by.map(FamilyId::new),
        }))
    }

    async fn redeem_code(
        &self,
        hash: &TokenHash,
        family: &FamilyId,
    ) -> Result<Redemption, StoreError> {
        let (outcome, first): (i64, String) = REDEEM
            .key(self.key(Kind::Code, &hash.to_hex()))
            .arg(family.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(match outcome {
            1 => Redemption::Redeemed,
            2 => Redemption::AlreadyRedeemed {
                family: FamilyId::new(first),
            },
            _ => Redemption::Unknown,
        })
    }

    async fn put_refresh(
        &self,
        hash: &TokenHash,
        record: &RefreshRecord,
    ) -> Result<(), StoreError> {
        let value = encode(Kind::Refresh, record, self.limit())?;
        let Some(left) = record.expires_at.remaining_from(self.clock.now()) else {
            return Ok(()); // already expired: nothing to keep
        };
        let _: i64 = PUT_REFRESH
            .key(self.key(Kind::Refresh, &hash.to_hex()))
            .key(self.key(Kind::Family, record.family.as_str()))
            .arg(value)
            .arg(record.family.as_str())
            .arg(ms(left))
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn get_refresh(&self, hash: &TokenHash) -> Result<Option<RefreshState>, StoreError> {
        let found: Option<(Vec<u8>, String, String, String)> = GET_REFRESH
            .key(self.key(Kind::Refresh, &hash.to_hex()))
            .arg(self.family_prefix())
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        let Some((rec, family, used, revoked)) = found else {
            return Ok(None);
        };
        let mut record: RefreshRecord = decode(Kind::Refresh, &rec)?;
        // The hash's field is the truth: a rotated-in record joined it.
        record.family = FamilyId::new(family);
        Ok(Some(RefreshState {
            record,
            used: used == "1",
            family_revoked: revoked == "1",
        }))
    }

    async fn rotate_refresh(
        &self,
        old: &TokenHash,
        new_hash: &TokenHash,
        new: &RefreshRecord,
    ) -> Result<Rotation, StoreError> {
        let value = encode(Kind::Refresh, new, self.limit())?;
        // A new token already expired still spends the old one, as the
        // other backends do; it just cannot be used.
        let left = new
            .expires_at
            .remaining_from(self.clock.now())
            .unwrap_or(Duration::from_millis(1));
        let (outcome, family): (i64, String) = ROTATE
            .key(self.key(Kind::Refresh, &old.to_hex()))
            .key(self.key(Kind::Refresh, &new_hash.to_hex()))
            .arg(value)
            .arg(ms(left))
            .arg(self.family_prefix())
            .arg(ms(self.limits.revocation_memory))
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        let family = FamilyId::new(family);
        Ok(match outcome {
            1 => Rotation::Rotated,
            2 => Rotation::Reuse { family },
            3 => Rotation::Revoked { family },
            _ => Rotation::Unknown,
        })
    }

    async fn revoke_refresh(&self, hash: &TokenHash) -> Result<Option<FamilyId>, StoreError> {
        let family: Option<String> = REVOKE_REFRESH
            .key(self.key(Kind::Refresh, &hash.to_hex()))
            .arg(self.family_prefix())
            .arg(ms(self.limits.revocation_memory))
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(family.map(FamilyId::new))
    }

    async fn revoke_family(&self, family: &FamilyId) -> Result<(), StoreError> {
        let _: i64 = REVOKE_FAMILY
            .key(self.key(Kind::Family, family.as_str()))
            .arg(ms(self.limits.revocation_memory))
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn put_consent(
        &self,
        subject: &Subject,
        client: &ClientId,
        consent: &ConsentRecord,
    ) -> Result<(), StoreError> {
        let value = encode(Kind::Consent, consent, self.limit())?;
        let key = consent_key(subject, client);
        check_key(Kind::Consent, &key, &self.limits)?;
        self.put_until(Kind::Consent, &key, &value, consent.expires_at)
            .await
    }

    async fn get_consent(
        &self,
        subject: &Subject,
        client: &ClientId,
    ) -> Result<Option<ConsentRecord>, StoreError> {
        self.get_json(Kind::Consent, &consent_key(subject, client))
            .await
    }

    async fn delete_consent(
        &self,
        subject: &Subject,
        client: &ClientId,
    ) -> Result<bool, StoreError> {
        self.delete(Kind::Consent, &consent_key(subject, client))
            .await
    }

    async fn put_upstream(
        &self,
        key: &UpstreamKey,
        tokens: &UpstreamTokens,
    ) -> Result<(), StoreError> {
        check_key(Kind::Upstream, key.as_str(), &self.limits)?;
        let value = encode(Kind::Upstream, tokens, self.limit())?;
        self.put_until(Kind::Upstream, key.as_str(), &value, tokens.expires_at)
            .await
    }

    async fn get_upstream(&self, key: &UpstreamKey) -> Result<Option<UpstreamTokens>, StoreError> {
        self.get_json(Kind::Upstream, key.as_str()).await
    }

    async fn delete_upstream(&self, key: &UpstreamKey) -> Result<bool, StoreError> {
        self.delete(Kind::Upstream, key.as_str()).await
    }

    async fn put_session(
        &self,
        id: &SessionId,
        owner: &IdentityKey,
        idle: Duration,
    ) -> Result<(), StoreError> {
        let record = SessionRecord {
            owner: owner.clone(),
        };
        check_key(Kind::Session, id.as_str(), &self.limits)?;
        let value = encode(Kind::Session, &record, self.limit())?;
        let expires = self.clock.now().plus(idle);
        self.put_capped(
            Kind::Session,
            id.as_str(),
            &value,
            Some(expires),
            self.limits.max_sessions,
        )
        .await
    }

    async fn touch_session(
        &self,
        id: &SessionId,
        idle: Duration,
    ) -> Result<Option<IdentityKey>, StoreError> {
        let value: Option<Vec<u8>> = TOUCH
            .key(self.key(Kind::Session, id.as_str()))
            .key(self.index(Kind::Session))
            .arg(ms(idle))
            .arg(id.as_str())
            .arg(self.clock.now().plus(idle).as_millis())
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        value
            .map(|v| decode::<SessionRecord>(Kind::Session, &v).map(|r| r.owner))
            .transpose()
    }

    async fn delete_session(&self, id: &SessionId) -> Result<bool, StoreError> {
        self.delete_indexed(Kind::Session, &session_state_key(id))
            .await?;
        self.delete_indexed(Kind::Session, id.as_str()).await
    }

    async fn put_session_state(
        &self,
        id: &SessionId,
        state: &str,
        idle: Duration,
    ) -> Result<(), StoreError> {
        let key = session_state_key(id);
        check_key(Kind::Session, &key, &self.limits)?;
        let record = SessionStateRecord {
            state: state.to_owned(),
        };
        let value = encode(Kind::Session, &record, self.limit())?;
        let expires = self.clock.now().plus(idle);
        self.put_capped(
            Kind::Session,
            &key,
            &value,
            Some(expires),
            self.limits.max_sessions,
        )
        .await
    }

    async fn get_session_state(&self, id: &SessionId) -> Result<Option<String>, StoreError> {
        Ok(self
            .get_json::<SessionStateRecord>(Kind::Session, &session_state_key(id))
            .await?
            .map(|r| r.state))
    }

    async fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let cutoff = audit::cutoff_ms(self.clock.now().as_millis(), &self.limits);
        let mut script = APPEND_AUDIT.key(self.whole(Kind::Audit));
        script.arg(cutoff).arg(self.limits.max_audit_records);
        for record in records {
            let mut member = random_id().into_bytes();
            member.extend(encode(Kind::Audit, record, self.limit())?);
            script.arg(record.at.unix_millis()).arg(member);
        }
        let _: i64 = script
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let max = query
            .until
            .map_or_else(|| "+inf".to_owned(), |u| format!("({}", u.unix_millis()));
        let min = query
            .since
            .map_or_else(|| "-inf".to_owned(), |s| s.unix_millis().to_string());
        let limit = query.effective_limit();
        let mut found = Vec::new();
        // Pages walk down by score, not by offset (an offset costs its
        // length on every page): the next page starts at the last score
        // seen, skipping the members with that score already read.
        let (mut max, mut skip, mut at_max) = (max, 0usize, None::<u64>);
        loop {
            let page: Vec<(Vec<u8>, u64)> = ::redis::cmd("ZREVRANGEBYSCORE")
                .arg(self.whole(Kind::Audit))
                .arg(&max)
                .arg(&min)
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(skip)
                .arg(AUDIT_PAGE)
                .query_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            for (member, _) in &page {
                let json = member.get(MEMBER_ID_LEN..).unwrap_or_default();
                let record: AuditRecord = decode(Kind::Audit, json)?;
                if query.matches(&record) {
                    found.push(record);
                    if found.len() == limit {
                        return Ok(found);
                    }
                }
            }
            let Some(&(_, last)) = page.last().filter(|_| page.len() == AUDIT_PAGE) else {
                return Ok(found);
            };
            let tied = page.iter().filter(|(_, score)| *score == last).count();
            skip = if at_max == Some(last) {
                skip + tied
            } else {
                tied
            };
            at_max = Some(last);
            max = last.to_string();
        }
    }

    async fn get_pin(&self, upstream: &str, tool: &str) -> Result<Option<PinRecord>, StoreError> {
        let value: Option<Vec<u8>> = self
            .conn()
            .hget(self.whole(Kind::Pin), pin_key(upstream, tool))
            .await
            .map_err(redis_error)?;
        value.map(|v| decode(Kind::Pin, &v)).transpose()
    }

    async fn put_pin(&self, pin: &PinRecord) -> Result<(), StoreError> {
        let field = pin_key(&pin.upstream, &pin.tool);
        check_key(Kind::Pin, &field, &self.limits)?;
        let value = encode(Kind::Pin, pin, self.limit())?;
        let stored: i64 = PUT_PIN
            .key(self.whole(Kind::Pin))
            .arg(field)
            .arg(value)
            .arg(self.limits.max_pins)
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        if stored == 1 {
            Ok(())
        } else {
            Err(StoreError::Full(Kind::Pin))
        }
    }

    async fn list_pins(&self, upstream: Option<&str>) -> Result<Vec<PinRecord>, StoreError> {
        // At most `max_pins` fields: one read, filtered here.
        let all: Vec<(String, Vec<u8>)> = self
            .conn()
            .hgetall(self.whole(Kind::Pin))
            .await
            .map_err(redis_error)?;
        let prefix = upstream.map(pin_prefix).unwrap_or_default();
        let mut pins = all
            .iter()
            .filter(|(field, _)| field.starts_with(&prefix))
            .map(|(_, value)| decode::<PinRecord>(Kind::Pin, value))
            .collect::<Result<Vec<_>, _>>()?;
        audit::sort_pins(&mut pins);
        Ok(pins)
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        // Redis expires keys itself; the indexes prune on each capped write.
        Ok(0)
    }
}

#[cfg(test)]
#[path = "redis_tests.rs"]
mod tests;

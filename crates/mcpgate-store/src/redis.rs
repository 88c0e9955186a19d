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
//!
//! Scripts name family keys they compute from a token's `family` field,
//! which standalone Redis allows and Redis Cluster does not: this backend
//! is for a single Redis (or a replicated primary), not a cluster.

use std::sync::LazyLock;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{AsyncCommands as _, RedisError, Script};
use async_trait::async_trait;

use crate::engine::{consent_key, decode, encode};
use crate::error::{Kind, OpenError, StoreError};
use crate::options::{Clock, Limits, Options};
use crate::records::{
    ClientId, ClientRecord, CodeRecord, CodeState, ConsentRecord, FamilyId, IdentityKey,
    PendingAuthorization, Redemption, RefreshRecord, RefreshState, Rotation, SessionId,
    SessionRecord, Subject, Timestamp, TokenHash, UpstreamKey, UpstreamTokens,
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

/// Keeps a family at least `ttl` ms, revoking it if asked. A family hash
/// without a TTL was just created here.
const FAMILY_LUA: &str = r"
local function keep_family(fkey, ttl, revoke)
  if revoke then
    redis.call('HSET', fkey, 'revoked', '1')
  else
    redis.call('HSETNX', fkey, 'revoked', '0')
  end
  local left = redis.call('PTTL', fkey)
  if left < ttl then redis.call('PEXPIRE', fkey, ttl) end
end
";

fn script(body: &str) -> Script {
    Script::new(&format!("{FAMILY_LUA}\n{body}"))
}

/// KEYS: record, index. ARGV: value, ttl ms (0: none), now ms, cap,
/// member, index score. 1 if stored, 0 if full.
static CAPPED_PUT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
if not redis.call('ZSCORE', KEYS[2], ARGV[5]) and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  return 0
end
if ARGV[2] == '0' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[5])
return 1
",
    )
});

/// KEYS: counter, index. ARGV: window ms, now ms, cap, member, score.
/// The count, or -1 if a new counter would pass the cap.
static BUMP: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('INCR', KEYS[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return -1 end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
return 1
",
    )
});

/// KEYS: record, index. ARGV: member. The record, now deleted.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local value = redis.call('GET', KEYS[1])
if value then redis.call('DEL', KEYS[1]) end
redis.call('ZREM', KEYS[2], ARGV[1])
return value
",
    )
});

/// KEYS: record, index. ARGV: member. 1 if a record was deleted.
static DELETE_INDEXED: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
",
    )
});

/// KEYS: session, index. ARGV: idle ms, member, score. The record.
static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local value = redis.call('GET', KEYS[1])
if not value then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return false
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return value
",
    )
});

/// KEYS: code. ARGV: record, ttl ms.
static PUT_CODE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'rec', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
",
    )
});

/// KEYS: code. ARGV: family. {0} unknown, {1} redeemed, {2, family} replay.
static REDEEM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, ''} end
if redis.call('HSETNX', KEYS[1], 'by', ARGV[1]) == 1 then return {1, ''} end
return {2, redis.call('HGET', KEYS[1], 'by')}
",
    )
});

/// KEYS: token, family. ARGV: record, family id, ttl ms.
static PUT_REFRESH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'rec', ARGV[1], 'family', ARGV[2], 'used', '0')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
keep_family(KEYS[2], tonumber(ARGV[3]), false)
return 1
",
    )
});

/// KEYS: token. ARGV: family key prefix. {rec, family, used, revoked}.
static GET_REFRESH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local t = redis.call('HMGET', KEYS[1], 'rec', 'family', 'used')
if not t[1] then return false end
local revoked = redis.call('HGET', ARGV[1] .. t[2], 'revoked')
return {t[1], t[2], t[3], revoked or '0'}
",
    )
});

/// KEYS: old, new. ARGV: new record, new ttl ms, family key prefix,
/// revocation memory ms. {0} unknown, {1} rotated, {2} reuse (family now
/// revoked), {3} family already revoked; with the family.
static ROTATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local fam = redis.call('HGET', KEYS[1], 'family')
if not fam then return {0, ''} end
local fkey = ARGV[3] .. fam
if redis.call('HGET', fkey, 'revoked') == '1' then return {3, fam} end
if redis.call('HGET', KEYS[1], 'used') == '1' then
  keep_family(fkey, tonumber(ARGV[4]), true)
  return {2, fam}
end
redis.call('HSET', KEYS[1], 'used', '1')
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'rec', ARGV[1], 'family', fam, 'used', '0')
redis.call('PEXPIRE', KEYS[2], ARGV[2])
keep_family(fkey, tonumber(ARGV[2]), false)
return {1, fam}
",
    )
});

/// KEYS: token. ARGV: family key prefix, revocation memory ms. The family.
static REVOKE_REFRESH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local fam = redis.call('HGET', KEYS[1], 'family')
if not fam then return false end
keep_family(ARGV[1] .. fam, tonumber(ARGV[2]), true)
return fam
",
    )
});

/// KEYS: family. ARGV: revocation memory ms.
static REVOKE_FAMILY: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
keep_family(KEYS[1], tonumber(ARGV[1]), true)
return 1
",
    )
});

impl RedisStore {
    fn key(&self, kind: Kind, key: &str) -> String {
        format!("{}:{}:{}", self.prefix, kind.as_str(), key)
    }

    fn index(&self, kind: Kind) -> String {
        format!("{}:idx:{}", self.prefix, kind.as_str())
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
        self.delete_indexed(Kind::Session, id.as_str()).await
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        // Redis expires keys itself; the indexes prune on each capped write.
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    //! What the contract suite cannot see: the TTLs Redis holds.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::records::ClientSource;

    fn url() -> String {
        std::env::var("MCPGATE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
    }

    async fn store() -> RedisStore {
        let options = Options {
            key_prefix: format!("mcpgate-unit-{}", FamilyId::random()),
            ..Options::default()
        };
        open_redis(&url(), options).await.unwrap()
    }

    async fn pttl(store: &RedisStore, key: &str) -> i64 {
        store.conn().pttl(key).await.unwrap()
    }

    async fn cleanup(store: &RedisStore) {
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("{}:*", store.prefix))
            .query_async(&mut store.conn())
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: i64 = store.conn().del(keys).await.unwrap();
        }
    }

    fn assert_ttl(left: i64, at_most: Duration, what: &str) {
        let at_most = i64::try_from(at_most.as_millis()).unwrap();
        assert!(
            left > 0 && left <= at_most,
            "{what}: PTTL {left} not in (0, {at_most}]"
        );
    }

    #[tokio::test]
    async fn every_expiring_record_carries_a_native_ttl() {
        let s = store().await;
        let now = s.clock.now();
        let minute = Duration::from_secs(60);
        let hash = TokenHash::of(b"x");

        let pending = PendingAuthorization {
            client_id: ClientId::new("c"),
            redirect_uri: "http://127.0.0.1/cb".into(),
            client_state: None,
            code_challenge: "c".into(),
            scopes: vec![],
            resource: None,
            sealed: None,
        };
        s.put_pending(&hash, &pending, minute).await.unwrap();
        assert_ttl(
            pttl(&s, &s.key(Kind::Pending, &hash.to_hex())).await,
            minute,
            "pending",
        );

        let code = CodeRecord {
            client_id: ClientId::new("c"),
            redirect_uri: "http://127.0.0.1/cb".into(),
            code_challenge: "c".into(),
            scopes: vec![],
            resource: None,
            subject: Subject::new("u"),
            upstream: None,
            issued_at: now,
        };
        s.put_code(&hash, &code, minute).await.unwrap();
        let code_key = s.key(Kind::Code, &hash.to_hex());
        assert_ttl(pttl(&s, &code_key).await, minute, "code");
        // Redeeming keeps the code's TTL.
        assert_eq!(
            s.redeem_code(&hash, &FamilyId::new("f")).await.unwrap(),
            Redemption::Redeemed
        );
        assert_ttl(pttl(&s, &code_key).await, minute, "redeemed code");

        let hour = Duration::from_secs(3600);
        let record = RefreshRecord {
            family: FamilyId::new("f"),
            client_id: ClientId::new("c"),
            subject: Subject::new("u"),
            scopes: vec![],
            resource: None,
            upstream: None,
            issued_at: now,
            expires_at: now.plus(hour),
        };
        s.put_refresh(&hash, &record).await.unwrap();
        let token_ttl = pttl(&s, &s.key(Kind::Refresh, &hash.to_hex())).await;
        assert_ttl(token_ttl, hour, "refresh token");
        let family_ttl = pttl(&s, &s.key(Kind::Family, "f")).await;
        assert!(family_ttl >= token_ttl, "the family outlives its tokens");
        // A rotated-in token with a longer life extends the family.
        let mut longer = record.clone();
        longer.expires_at = now.plus(hour * 2);
        let new = TokenHash::of(b"y");
        assert_eq!(
            s.rotate_refresh(&hash, &new, &longer).await.unwrap(),
            Rotation::Rotated
        );
        assert!(
            pttl(&s, &s.key(Kind::Family, "f")).await > i64::try_from(hour.as_millis()).unwrap()
        );

        let session = SessionId::new("s");
        s.put_session(&session, &IdentityKey::new("u"), Duration::from_secs(5))
            .await
            .unwrap();
        let session_key = s.key(Kind::Session, "s");
        assert_ttl(
            pttl(&s, &session_key).await,
            Duration::from_secs(5),
            "session",
        );
        s.touch_session(&session, hour).await.unwrap();
        assert!(
            pttl(&s, &session_key).await > 5_000,
            "a touch extends the idle TTL"
        );

        s.bump_counter("k", minute).await.unwrap();
        s.bump_counter("k", hour).await.unwrap();
        assert_ttl(
            pttl(&s, &s.key(Kind::Counter, "k")).await,
            minute,
            "counter keeps its window",
        );

        let client = ClientRecord {
            id: ClientId::new("static"),
            source: ClientSource::Static,
            metadata: serde_json::json!({}),
            secret_hash: None,
            created_at: now,
            expires_at: None,
        };
        s.put_client(&client).await.unwrap();
        assert_eq!(
            pttl(&s, &s.key(Kind::Client, "static")).await,
            -1,
            "no expiry"
        );
        cleanup(&s).await;
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_unavailable() {
        let options = Options::default();
        // Port 1 on loopback: nothing listens there.
        let err = open_redis("redis://127.0.0.1:1/0", options)
            .await
            .unwrap_err();
        assert!(
            matches!(err, OpenError::Store(StoreError::Unavailable(_))),
            "{err:?}"
        );
    }
}

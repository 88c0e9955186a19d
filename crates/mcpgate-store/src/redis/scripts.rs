//! The Lua scripts behind every Redis operation that reads and then
//! writes; Redis runs each atomically. Keys and arguments are listed above
//! each. They share `keep_family`, prepended to each.

use std::sync::LazyLock;

use ::redis::Script;

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
pub(super) static CAPPED_PUT: LazyLock<Script> = LazyLock::new(|| {
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
pub(super) static BUMP: LazyLock<Script> = LazyLock::new(|| {
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
pub(super) static TAKE: LazyLock<Script> = LazyLock::new(|| {
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
pub(super) static DELETE_INDEXED: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
",
    )
});

/// KEYS: session, index. ARGV: idle ms, member, score. The record.
pub(super) static TOUCH: LazyLock<Script> = LazyLock::new(|| {
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
pub(super) static PUT_CODE: LazyLock<Script> = LazyLock::new(|| {
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
pub(super) static REDEEM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, ''} end
if redis.call('HSETNX', KEYS[1], 'by', ARGV[1]) == 1 then return {1, ''} end
return {2, redis.call('HGET', KEYS[1], 'by')}
",
    )
});

/// KEYS: token, family. ARGV: record, family id, ttl ms.
pub(super) static PUT_REFRESH: LazyLock<Script> = LazyLock::new(|| {
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
pub(super) static GET_REFRESH: LazyLock<Script> = LazyLock::new(|| {
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
pub(super) static ROTATE: LazyLock<Script> = LazyLock::new(|| {
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
pub(super) static REVOKE_REFRESH: LazyLock<Script> = LazyLock::new(|| {
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
pub(super) static REVOKE_FAMILY: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
keep_family(KEYS[1], tonumber(ARGV[1]), true)
return 1
",
    )
});

/// KEYS: the audit sorted set. ARGV: cutoff ms (older records go), cap,
/// then (score, member) pairs. The number of records kept.
pub(super) static APPEND_AUDIT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
for i = 3, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
local cap = tonumber(ARGV[2])
if n > cap then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - cap - 1)
  n = cap
end
return n
",
    )
});

/// KEYS: the pins hash. ARGV: field, record, cap. 1 if stored, 0 if full.
pub(super) static PUT_PIN: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
",
    )
});

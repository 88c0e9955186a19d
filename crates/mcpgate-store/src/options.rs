//! What every backend is opened with: its limits and its clock.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::records::Timestamp;

/// The clock every expiry is read from, injected so that TTL tests need no
/// sleeps. Redis expires keys by its own clock; this one only turns a
/// record's `expires_at` into a TTL there.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Self(Arc::new(SystemTime::now))
    }

    /// A clock reading `now`.
    pub fn from_fn(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_system((self.0)())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

/// Bounds on what the store holds, enforced by every backend so that an
/// unauthenticated caller cannot fill it whatever the layers above forget.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Registered clients, all sources together. Default 10,000.
    pub max_clients: u64,
    /// Pending authorizations alive at once. Default 10,000.
    pub max_pending: u64,
    /// MCP sessions alive at once. Default 10,000.
    pub max_sessions: u64,
    /// Rate-limit counters alive at once (memory and SQLite; Redis expires
    /// them natively). Default 100,000.
    pub max_counters: u64,
    /// The largest encoded record of any kind, in bytes. Default 64 KiB.
    pub max_record_bytes: usize,
    /// The longest key a caller chooses (client id, session id, counter
    /// key, upstream key, consent subject and client), in bytes.
    /// Default 2 KiB, room for a CIMD client id's URL.
    pub max_key_bytes: usize,
    /// How long a revoked family is remembered when it had no longer-lived
    /// token (revoked before its first refresh token was stored).
    /// Default one day.
    pub revocation_memory: Duration,
    /// Audit records kept; past it the oldest are dropped as new ones come.
    /// Default 1,000,000 (some 0.5 GB at a typical 500 bytes a record).
    pub max_audit_records: u64,
    /// How long an audit record is kept; older ones are dropped as new ones
    /// come (and a record already older is not stored). Default 90 days.
    pub audit_max_age: Duration,
    /// Tool pins kept, all upstreams together: an upstream that lists more
    /// tools gets [`StoreError::Full`](crate::StoreError::Full) for the
    /// rest. Default 10,000.
    pub max_pins: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_clients: 10_000,
            max_pending: 10_000,
            max_sessions: 10_000,
            max_counters: 100_000,
            max_record_bytes: 64 * 1024,
            max_key_bytes: 2048,
            revocation_memory: Duration::from_secs(24 * 60 * 60),
            max_audit_records: 1_000_000,
            audit_max_age: Duration::from_secs(90 * 24 * 60 * 60),
            max_pins: 10_000,
        }
    }
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct Options {
    /// Bounds on what it holds.
    pub limits: Limits,
    /// Where it reads the time.
    pub clock: Clock,
    /// Redis only: the prefix of every key, one per deployment sharing a
    /// database. Default `mcpgate`.
    pub key_prefix: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            clock: Clock::system(),
            key_prefix: "mcpgate".to_owned(),
        }
    }
}

//! Rate limits on tool calls, per user and per client application.
//!
//! Each key (a user, a client app) gets a GCRA bucket: `per_minute` calls
//! spread evenly, with `burst` allowed at once. Hand-written (twenty lines)
//! rather than `governor`, whose keyed limiter grows without bound unless
//! swept; here the buckets live in a bounded `moka` cache that forgets idle
//! keys, so the set of users cannot grow memory without limit.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;

/// Calls allowed per minute, and how many may come at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Sustained calls per minute. At least 1.
    pub per_minute: u32,
    /// Calls allowed back to back before the pace applies. At least 1.
    pub burst: u32,
}

impl Quota {
    fn interval(self) -> Duration {
        Duration::from_secs(60) / self.per_minute.max(1)
    }
}

/// The limits a deployment sets; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// Per user (their identity key).
    pub per_user: Option<Quota>,
    /// Per client application (`azp`/`appid`).
    pub per_client: Option<Quota>,
}

/// Which limit refused a call, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// "user" or "client application".
    pub whose: &'static str,
    /// The quota.
    pub quota: Quota,
    /// How long until a call would pass.
    pub retry_after: Duration,
}

/// Keys most recently seen; idle ones are forgotten.
const MAX_KEYS: u64 = 100_000;

/// The buckets of every user and client seen lately.
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    // Theoretical arrival time of the next call, per key.
    buckets: Cache<String, Arc<Mutex<Instant>>>,
    epoch: Instant,
}

impl RateLimiter {
    /// A limiter enforcing `limits`.
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            buckets: Cache::builder()
                .max_capacity(MAX_KEYS)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            epoch: Instant::now(),
        }
    }

    /// Whether any limit is set.
    pub fn is_active(&self) -> bool {
        self.limits.per_user.is_some() || self.limits.per_client.is_some()
    }

    /// Counts one call by `user` from `client`; `Err` (counting nothing) if
    /// either is over its quota.
    pub fn check(&self, user: &str, client: Option<&str>, now: Instant) -> Result<(), Limited> {
        let user_key = self
            .limits
            .per_user
            .map(|q| (format!("u:{user}"), q, "user"));
        let client_key = self
            .limits
            .per_client
            .zip(client)
            .map(|(q, c)| (format!("c:{c}"), q, "client application"));
        let keys: Vec<_> = user_key.into_iter().chain(client_key).collect();
        // Look first, then spend: a call refused by one limit uses none.
        let mut spends = Vec::with_capacity(keys.len());
        for (key, quota, whose) in &keys {
            let bucket = self
                .buckets
                .get_with(key.clone(), || Arc::new(Mutex::new(self.epoch)));
            let tat = *bucket.lock().unwrap_or_else(|e| e.into_inner());
            let tolerance = quota.interval() * quota.burst.saturating_sub(1);
            let tat = tat.max(now);
            if let Some(wait) = tat.checked_duration_since(now + tolerance)
                && !wait.is_zero()
            {
                return Err(Limited {
                    whose,
                    quota: *quota,
                    retry_after: wait,
                });
            }
            spends.push((bucket, tat + quota.interval()));
        }
        for (bucket, next) in spends {
            *bucket.lock().unwrap_or_else(|e| e.into_inner()) = next;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(per_minute: u32, burst: u32) -> Option<Quota> {
        Some(Quota { per_minute, burst })
    }

    #[test]
    fn a_burst_passes_then_the_pace_applies() {
        let limiter = RateLimiter::new(RateLimits {
            per_user: quota(60, 3),
            per_client: None,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check("alice", None, t0).is_ok());
        }
        let refused = limiter
            .check("alice", None, t0)
            .expect_err("over the burst");
        assert_eq!(refused.whose, "user");
        assert!(refused.retry_after <= Duration::from_secs(1));
        // Another user has a bucket of their own.
        assert!(limiter.check("bob", None, t0).is_ok());
        // A second later, one more call is allowed.
        assert!(
            limiter
                .check("alice", None, t0 + Duration::from_secs(1))
                .is_ok()
        );
        assert!(
            limiter
                .check("alice", None, t0 + Duration::from_secs(1))
                .is_err()
        );
    }

    #[test]
    fn a_refusal_by_one_limit_spends_nothing_of_the_other() {
        let limiter = RateLimiter::new(RateLimits {
            per_user: quota(60, 1),
            per_client: quota(60, 2),
        });
        let t0 = Instant::now();
        assert!(limiter.check("alice", Some("app"), t0).is_ok());
        // Alice is over her own limit: the app's bucket is not touched.
        assert_eq!(
            limiter.check("alice", Some("app"), t0).map_err(|l| l.whose),
            Err("user")
        );
        assert!(limiter.check("bob", Some("app"), t0).is_ok());
        assert_eq!(
            limiter.check("carol", Some("app"), t0).map_err(|l| l.whose),
            Err("client application")
        );
    }
}

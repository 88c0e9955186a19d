//! The clock every time-based decision reads, injected so that expiry and
//! cache lifetimes are tested without sleeping.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;

    /// Seconds since the Unix epoch, as JWT claims count them.
    fn unix_now(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug, Clone)]
pub struct ManualClock {
    unix_secs: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock that reads the system time now and then stands still.
    pub fn starting_now() -> Self {
        Self::at_unix(SystemClock.unix_now())
    }

    /// A clock standing at `secs` seconds after the Unix epoch.
    pub fn at_unix(secs: u64) -> Self {
        Self {
            unix_secs: Arc::new(AtomicU64::new(secs)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.unix_secs.fetch_add(by.as_secs(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.unix_secs.load(Ordering::SeqCst))
    }
}

/// The clock type the validator holds.
pub type SharedClock = Arc<dyn Clock>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::at_unix(1_000);
        assert_eq!(clock.unix_now(), 1_000);
        clock.advance(Duration::from_secs(30));
        assert_eq!(clock.unix_now(), 1_030);
        let copy = clock.clone();
        copy.advance(Duration::from_secs(1));
        assert_eq!(clock.unix_now(), 1_031, "clones share one time");
    }
}

//! MCP sessions (`Mcp-Session-Id`, the revisions before 2026-07-28): who
//! opened each, which revision it speaks, and how long it lives.
//!
//! A session is a small table entry, not a task: calls on it run side by
//! side in their own requests. Sessions are bounded, since anyone with a
//! valid token can open them: a cap per principal (at the cap, that
//! principal's least recently used session goes) and a total cap (at the
//! cap, a new session is refused), and each expires after an idle time.
//! A session id that leaks is useless to anyone else: it is bound to the
//! principal who opened it, and unknown and foreign ids look alike (MCP
//! security best practices, "session hijacking").
//!
//! With several replicas, a [`SharedSessions`] store holds each session's
//! owner and revision, so that a session opened at one continues at
//! another. Each replica answers the sessions it knows from memory; the
//! store is read only for a session first seen here.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rmcp::model::ProtocolVersion;

/// A boxed future, so that the store can be held as a trait object.
pub type SessionFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sessions every replica sees (a shared store). Failures are the
/// implementation's to log; a session it cannot vouch for is not found.
pub trait SharedSessions: Send + Sync + fmt::Debug {
    /// Who opened session `id`, renewing its idle time.
    fn owner<'a>(&'a self, id: &'a str) -> SessionFuture<'a, Option<String>>;
    /// Records who opened session `id`.
    fn record_owner<'a>(&'a self, id: &'a str, owner: &'a str) -> SessionFuture<'a, ()>;
    /// Ends session `id` everywhere.
    fn forget<'a>(&'a self, id: &'a str) -> SessionFuture<'a, ()>;
    /// What was kept to resume session `id` (JSON).
    fn load_state<'a>(&'a self, id: &'a str) -> SessionFuture<'a, Result<Option<String>, String>>;
    /// Keeps what is needed to resume session `id` (JSON).
    fn store_state<'a>(
        &'a self,
        id: &'a str,
        state: String,
    ) -> SessionFuture<'a, Result<(), String>>;
}

/// How many sessions may be open and for how long. Every field states its
/// default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Sessions open at once, all principals together. Default: 10,000.
    pub max_total: usize,
    /// Sessions one principal may hold. Default: 64.
    pub max_per_principal: usize,
    /// A session unused this long is gone. Default: 1 hour.
    pub idle: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_total: 10_000,
            max_per_principal: 64,
            idle: Duration::from_secs(3600),
        }
    }
}

/// A monotonic clock, injectable so that tests move time instead of
/// sleeping.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Time since some fixed point.
    fn now(&self) -> Duration;
}

/// The process's monotonic clock.
#[derive(Debug)]
pub struct SystemClock(Instant);

impl Default for SystemClock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// A clock that moves only when told to: for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(
            u64::try_from(by.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

/// Why no session was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The total cap is reached and no session has expired.
    #[error("this server has too many open MCP sessions; try again later")]
    Full,
    /// The system's random number generator failed.
    #[error("no random session id could be made")]
    NoRandom,
}

/// An open session, as a request sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Its id.
    pub id: Arc<str>,
    /// The revision its `initialize` negotiated.
    pub version: ProtocolVersion,
}

#[derive(Debug)]
struct Entry {
    owner: Arc<str>,
    version: ProtocolVersion,
    last_used: Duration,
}

#[derive(Debug, Default)]
struct Table {
    sessions: HashMap<Arc<str>, Entry>,
    // Each principal's session ids, to apply its cap without a scan.
    by_owner: HashMap<Arc<str>, Vec<Arc<str>>>,
    last_sweep: Duration,
}

impl Table {
    fn remove(&mut self, id: &str) -> Option<Entry> {
        let entry = self.sessions.remove(id)?;
        if let Some(ids) = self.by_owner.get_mut(&entry.owner) {
            ids.retain(|i| &**i != id);
            if ids.is_empty() {
                self.by_owner.remove(&entry.owner);
            }
        }
        Some(entry)
    }

    fn sweep(&mut self, now: Duration, idle: Duration) -> Vec<Arc<str>> {
        self.last_sweep = now;
        let expired: Vec<Arc<str>> = self
            .sessions
            .iter()
            .filter(|(_, e)| now.saturating_sub(e.last_used) >= idle)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.remove(id);
        }
        expired
    }

    fn insert(&mut self, id: Arc<str>, owner: Arc<str>, version: ProtocolVersion, now: Duration) {
        self.by_owner
            .entry(owner.clone())
            .or_default()
            .push(id.clone());
        self.sessions.insert(
            id,
            Entry {
                owner,
                version,
                last_used: now,
            },
        );
    }
}

/// Told of every session that ends here: closed, evicted or expired.
pub type OnEnd = Arc<dyn Fn(&str) + Send + Sync>;

/// The open sessions of this process.
pub struct Sessions {
    table: Mutex<Table>,
    limits: SessionLimits,
    clock: Arc<dyn Clock>,
    shared: Option<Arc<dyn SharedSessions>>,
    ended: std::sync::OnceLock<OnEnd>,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("limits", &self.limits)
            .field("open", &self.len())
            .finish_non_exhaustive()
    }
}

/// What a replica keeps in the shared store to resume a session.
#[derive(serde::Serialize, serde::Deserialize)]
struct SharedState {
    #[serde(rename = "protocolVersion")]
    protocol_version: String,
}

impl Sessions {
    /// An empty table.
    pub fn new(
        limits: SessionLimits,
        clock: Arc<dyn Clock>,
        shared: Option<Arc<dyn SharedSessions>>,
    ) -> Self {
        Self {
            table: Mutex::new(Table::default()),
            limits,
            clock,
            shared,
            ended: std::sync::OnceLock::new(),
        }
    }

    /// Calls `ended` with the id of every session that ends from now on
    /// (once; later calls are ignored).
    pub fn on_end(&self, ended: OnEnd) {
        let _ = self.ended.set(ended);
    }

    fn tell_ended<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        if let Some(ended) = self.ended.get() {
            for id in ids {
                ended(id);
            }
        }
    }

    /// Its limits.
    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// Sessions open in this process (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Whether no session is open here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves the table consistent: every
        // change is a single insert or remove.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends every session idle past the limit now, rather than at the next
    /// `open`: their upstream sessions (child processes in gateway mode)
    /// must not outlive them for long. How many ended.
    pub fn sweep_expired(&self) -> usize {
        let now = self.clock.now();
        let expired = self.lock().sweep(now, self.limits.idle);
        self.tell_ended(expired.iter().map(|id| &**id));
        expired.len()
    }

    /// Opens a session for `owner`. At the principal's cap its least
    /// recently used session is closed; at the total cap the call fails.
    pub async fn open(&self, owner: &str, version: ProtocolVersion) -> Result<Session, OpenError> {
        let id: Arc<str> = new_id().ok_or(OpenError::NoRandom)?.into();
        let now = self.clock.now();
        let (evicted, expired) = {
            let mut table = self.lock();
            // Sweep now and then, and whenever full, so that expired
            // sessions never hold memory or slots for long.
            let mut expired = Vec::new();
            if table.sessions.len() >= self.limits.max_total
                || now.saturating_sub(table.last_sweep) >= self.limits.idle / 4
            {
                expired = table.sweep(now, self.limits.idle);
            }
            let owner_ids = table.by_owner.get(owner).map(Vec::len).unwrap_or(0);
            let mut evicted = None;
            if owner_ids >= self.limits.max_per_principal.max(1) {
                let oldest = table.by_owner.get(owner).and_then(|ids| {
                    ids.iter()
                        .min_by_key(|id| table.sessions.get(*id).map(|e| e.last_used))
                        .cloned()
                });
                if let Some(oldest) = oldest {
                    table.remove(&oldest);
                    evicted = Some(oldest);
                }
            }
            if table.sessions.len() >= self.limits.max_total {
                return Err(OpenError::Full);
            }
            let owner: Arc<str> = match table.by_owner.get_key_value(owner) {
                Some((key, _)) => key.clone(),
                None => owner.into(),
            };
            table.insert(id.clone(), owner, version.clone(), now);
            (evicted, expired)
        };
        self.tell_ended(evicted.iter().chain(&expired).map(|id| &**id));
        if let Some(old) = &evicted {
            tracing::info!(
                target: "mcpgate::sessions",
                cap = self.limits.max_per_principal,
                "a principal reached its session cap: its least recently used session was closed"
            );
            if let Some(shared) = &self.shared {
                shared.forget(old).await;
            }
        }
        if let Some(shared) = &self.shared {
            for old in &expired {
                shared.forget(old).await;
            }
            shared.record_owner(&id, owner).await;
            let state = SharedState {
                protocol_version: version.as_str().to_owned(),
            };
            if let Ok(json) = serde_json::to_string(&state)
                && let Err(e) = shared.store_state(&id, json).await
            {
                tracing::warn!(target: "mcpgate::sessions", error = %e, "could not keep a session's state in the store");
            }
        }
        Ok(Session { id, version })
    }

    /// The session `id` if `owner` opened it and it has not expired,
    /// renewing its idle time. Foreign, unknown and expired ids all answer
    /// `None`.
    pub async fn find(&self, id: &str, owner: &str) -> Option<Session> {
        if let Some(found) = self.find_here(id, owner) {
            return found;
        }
        self.resume(id, owner).await
    }

    // `Some(answer)` when this process knows the session; `None` to ask
    // the store.
    fn find_here(&self, id: &str, owner: &str) -> Option<Option<Session>> {
        let now = self.clock.now();
        let mut table = self.lock();
        let (key, entry) = table.sessions.get_key_value(id)?;
        if now.saturating_sub(entry.last_used) >= self.limits.idle {
            table.remove(id);
            drop(table);
            self.tell_ended([id]);
            return Some(None);
        }
        if *entry.owner != *owner {
            return Some(None);
        }
        let found = Session {
            id: key.clone(),
            version: entry.version.clone(),
        };
        if let Some(entry) = table.sessions.get_mut(id) {
            entry.last_used = now;
        }
        Some(Some(found))
    }

    async fn resume(&self, id: &str, owner: &str) -> Option<Session> {
        let shared = self.shared.as_ref()?;
        if shared.owner(id).await.as_deref() != Some(owner) {
            return None;
        }
        let state: SharedState = match shared.load_state(id).await {
            Ok(Some(json)) => serde_json::from_str(&json).ok()?,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(target: "mcpgate::sessions", error = %e, "could not read a session's state from the store");
                return None;
            }
        };
        let version = crate::protocol::known(&state.protocol_version)?;
        let now = self.clock.now();
        let id: Arc<str> = id.into();
        let mut table = self.lock();
        if table.sessions.len() >= self.limits.max_total {
            let expired = table.sweep(now, self.limits.idle);
            if !expired.is_empty() {
                drop(table);
                self.tell_ended(expired.iter().map(|id| &**id));
                table = self.lock();
            }
            if table.sessions.len() >= self.limits.max_total {
                return None;
            }
        }
        if !table.sessions.contains_key(&id) {
            table.insert(id.clone(), owner.into(), version.clone(), now);
        }
        Some(Session { id, version })
    }

    /// Closes session `id` if `owner` opened it (`DELETE`); false when
    /// there was no such session.
    pub async fn close(&self, id: &str, owner: &str) -> bool {
        let known = match self.find_here(id, owner) {
            Some(found) => found.is_some(),
            None => self.resume(id, owner).await.is_some(),
        };
        if !known {
            return false;
        }
        self.lock().remove(id);
        self.tell_ended([id]);
        if let Some(shared) = &self.shared {
            shared.forget(id).await;
        }
        true
    }
}

/// 128 random bits, hex: unguessable, and safe in a header.
fn new_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max_total: usize, max_per_principal: usize) -> (Sessions, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        let limits = SessionLimits {
            max_total,
            max_per_principal,
            idle: Duration::from_secs(60),
        };
        (Sessions::new(limits, clock.clone(), None), clock)
    }

    const V: ProtocolVersion = ProtocolVersion::V_2025_06_18;

    #[tokio::test]
    async fn a_session_is_its_owners_alone() {
        let (s, _) = table(10, 10);
        let a = s.open("alice", V).await.expect("opened");
        assert_eq!(s.find(&a.id, "alice").await, Some(a.clone()));
        assert_eq!(s.find(&a.id, "bob").await, None);
        assert_eq!(s.find("made-up", "alice").await, None);
        assert!(!s.close(&a.id, "bob").await, "bob closed alice's session");
        assert!(s.close(&a.id, "alice").await);
        assert_eq!(s.find(&a.id, "alice").await, None);
        assert!(s.is_empty());
    }

    #[tokio::test]
    async fn idle_sessions_expire_and_use_renews_them() {
        let (s, clock) = table(10, 10);
        let a = s.open("alice", V).await.expect("opened");
        let b = s.open("alice", V).await.expect("opened");
        clock.advance(Duration::from_secs(40));
        assert!(s.find(&a.id, "alice").await.is_some());
        clock.advance(Duration::from_secs(40));
        assert!(s.find(&a.id, "alice").await.is_some(), "use renewed it");
        assert_eq!(s.find(&b.id, "alice").await, None, "idle 80 s of 60");
        clock.advance(Duration::from_secs(60));
        assert_eq!(s.find(&a.id, "alice").await, None);
        assert!(s.is_empty(), "expired sessions hold no memory");
    }

    #[tokio::test]
    async fn at_a_principals_cap_its_least_recently_used_session_goes() {
        let (s, clock) = table(100, 3);
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(s.open("alice", V).await.expect("opened").id);
            clock.advance(Duration::from_secs(1));
        }
        // The first is used again: the second is now the least recent.
        assert!(s.find(&ids[0], "alice").await.is_some());
        let bob = s.open("bob", V).await.expect("others are not affected");
        let fourth = s.open("alice", V).await.expect("opened at the cap");
        assert_eq!(s.find(&ids[1], "alice").await, None, "the LRU one went");
        for id in [&ids[0], &ids[2], &fourth.id] {
            assert!(s.find(id, "alice").await.is_some());
        }
        assert!(s.find(&bob.id, "bob").await.is_some());
        assert_eq!(s.len(), 4);
    }

    #[tokio::test]
    async fn at_the_total_cap_new_sessions_are_refused_until_one_expires() {
        let (s, clock) = table(3, 10);
        for who in ["a", "b", "c"] {
            s.open(who, V).await.expect("opened");
        }
        assert_eq!(s.open("d", V).await, Err(OpenError::Full));
        assert_eq!(s.len(), 3, "a refusal stores nothing");
        clock.advance(Duration::from_secs(61));
        s.open("d", V).await.expect("expired sessions made room");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn ids_are_random_and_header_safe() {
        let (a, b) = (new_id().expect("id"), new_id().expect("id"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}

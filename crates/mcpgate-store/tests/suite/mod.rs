//! The contract every backend keeps, as functions over a [`Harness`];
//! `contract_tests!` turns each into one `#[tokio::test]` per backend.

#![allow(clippy::unwrap_used, dead_code)]

mod audit;
mod bounds;
mod codes_and_families;
mod expiry;
mod round_trips;
mod single_use;

pub use audit::*;
pub use bounds::*;
pub use codes_and_families::*;
pub use expiry::*;
pub use round_trips::*;
pub use single_use::*;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use mcpgate_store::{
    ClientId, ClientRecord, ClientSource, Clock, CodeRecord, FamilyId, Limits,
    PendingAuthorization, RefreshRecord, Store, Subject, Timestamp, TokenHash, UpstreamKey,
};

/// How many tasks race for one code, state or refresh token.
pub const RACERS: usize = 20;

/// A clock that moves only when told to, in milliseconds.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn new() -> Self {
        Self(Arc::new(AtomicU64::new(1_800_000_000_000)))
    }
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
    pub fn clock(&self) -> Clock {
        let at = self.0.clone();
        Clock::from_fn(move || UNIX_EPOCH + Duration::from_millis(at.load(Ordering::SeqCst)))
    }
}

/// The limits every backend is tested with: small, so caps are reached.
pub fn test_limits() -> Limits {
    Limits {
        max_clients: 4,
        max_pending: 4,
        max_sessions: 4,
        max_counters: 4,
        max_record_bytes: 4096,
        max_key_bytes: 256,
        revocation_memory: Duration::from_secs(3600),
        max_audit_records: 8,
        audit_max_age: Duration::from_secs(3600),
        max_pins: 4,
    }
}

/// A store under test, with the means to let time pass.
pub struct Harness {
    pub store: Arc<dyn Store>,
    /// `None` for a backend that expires by its own clock (Redis).
    pub clock: Option<ManualClock>,
    /// What must live as long as the store (a temporary directory, a
    /// guard that deletes Redis keys).
    pub keep: Box<dyn std::any::Any + Send>,
}

impl Harness {
    /// Lets `by` pass: the manual clock moves, or the test sleeps.
    pub async fn pass(&self, by: Duration) {
        match &self.clock {
            Some(clock) => clock.advance(by),
            None => tokio::time::sleep(by).await,
        }
    }

    pub fn now(&self) -> Timestamp {
        match &self.clock {
            Some(clock) => clock.clock().now(),
            None => Clock::system().now(),
        }
    }
}

pub fn client(id: &str, now: Timestamp) -> ClientRecord {
    ClientRecord {
        id: ClientId::new(id),
        source: ClientSource::Dcr,
        metadata: serde_json::json!({"redirect_uris": ["http://127.0.0.1/cb"], "client_name": id}),
        secret_hash: None,
        created_at: now,
        expires_at: None,
    }
}

pub fn pending(client: &str) -> PendingAuthorization {
    PendingAuthorization {
        client_id: ClientId::new(client),
        redirect_uri: "http://127.0.0.1:9999/cb".into(),
        client_state: Some("xyz".into()),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        scopes: vec!["mcp:tools".into()],
        resource: Some("https://mcp.example/mcp".into()),
        sealed: None,
    }
}

pub fn code(now: Timestamp) -> CodeRecord {
    CodeRecord {
        client_id: ClientId::new("client-1"),
        redirect_uri: "http://127.0.0.1:9999/cb".into(),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        scopes: vec!["mcp:tools".into()],
        resource: Some("https://mcp.example/mcp".into()),
        subject: Subject::new("user-1"),
        upstream: Some(UpstreamKey::new("grant-1")),
        issued_at: now,
    }
}

pub fn refresh(family: &FamilyId, now: Timestamp, lifetime: Duration) -> RefreshRecord {
    RefreshRecord {
        family: family.clone(),
        client_id: ClientId::new("client-1"),
        subject: Subject::new("user-1"),
        scopes: vec!["mcp:tools".into()],
        resource: Some("https://mcp.example/mcp".into()),
        upstream: Some(UpstreamKey::new("grant-1")),
        issued_at: now,
        expires_at: now.plus(lifetime),
    }
}

pub fn hash(label: &str) -> TokenHash {
    TokenHash::of(label.as_bytes())
}

/// A TTL short enough to wait out on Redis, long enough that a loaded
/// machine still reads a record back before it expires.
pub const SHORT_TTL: Duration = Duration::from_secs(2);

/// Past [`SHORT_TTL`] with a margin for Redis's lazy and active expiry.
pub const PAST_SHORT_TTL: Duration = Duration::from_millis(4500);

pub const HOUR: Duration = Duration::from_secs(3600);

/// One `#[tokio::test]` per contract case, for the harness `$make` builds.
macro_rules! contract_tests {
    ($make:path) => {
        contract_tests!(@cases $make;
            code_redeems_once_under_concurrency,
            pending_is_taken_once_under_concurrency,
            refresh_rotates_once_under_concurrency,
            reading_a_code_spends_nothing,
            refresh_rotation_and_reuse_revokes_the_family,
            refused_refresh_operations_change_nothing,
            revocation_by_token_and_by_family,
            unauthenticated_records_are_capped,
            expired_capped_records_free_their_room,
            everything_expires,
            touching_a_session_keeps_it_alive,
            sessions_consents_and_clients_round_trip,
            sealed_tokens_are_bound_to_their_record,
            audit_reads_back_newest_first_by_filter,
            audit_retention_drops_the_oldest,
            a_refused_audit_batch_writes_nothing,
            pins_round_trip_and_are_capped,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let harness = $make().await;
                crate::suite::$case(&harness).await;
            }
        )*
    };
}

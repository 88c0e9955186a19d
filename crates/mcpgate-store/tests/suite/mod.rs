//! The contract every backend keeps, as functions over a [`Harness`];
//! `contract_tests!` turns each into one `#[tokio::test]` per backend.

#![allow(clippy::unwrap_used, dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use mcpgate_store::{
    ClientId, ClientRecord, ClientSource, Clock, CodeRecord, ConsentRecord, FamilyId, IdentityKey,
    KeyBytes, Kind, Limits, PendingAuthorization, Redemption, RefreshRecord, Rotation, SealError,
    SessionId, Store, StoreError, Subject, Timestamp, TokenCipher, TokenHash, UpstreamKey,
    UpstreamTokens,
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

fn hash(label: &str) -> TokenHash {
    TokenHash::of(label.as_bytes())
}

const HOUR: Duration = Duration::from_secs(3600);

// ---- single use under concurrency -------------------------------------

pub async fn code_redeems_once_under_concurrency(h: &Harness) {
    let code_hash = hash("code-race");
    h.store
        .put_code(&code_hash, &code(h.now()), Duration::from_secs(60))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let store = h.store.clone();
        tasks.push(tokio::spawn(async move {
            let family = FamilyId::new(format!("family-{i}"));
            let outcome = store.redeem_code(&code_hash, &family).await.unwrap();
            (family, outcome)
        }));
    }
    let outcomes: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let winners: Vec<_> = outcomes
        .iter()
        .filter(|(_, o)| *o == Redemption::Redeemed)
        .map(|(f, _)| f.clone())
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one redemption wins: {outcomes:?}"
    );
    let winner = winners[0].clone();
    for (_, outcome) in &outcomes {
        if *outcome != Redemption::Redeemed {
            assert_eq!(
                *outcome,
                Redemption::AlreadyRedeemed {
                    family: winner.clone()
                },
                "a loser learns the winner's family"
            );
        }
    }
    let state = h.store.get_code(&code_hash).await.unwrap().unwrap();
    assert_eq!(state.redeemed_by, Some(winner.clone()));
    // A replay later still names the family it bought.
    assert_eq!(
        h.store
            .redeem_code(&code_hash, &FamilyId::new("late"))
            .await
            .unwrap(),
        Redemption::AlreadyRedeemed { family: winner }
    );
}

pub async fn pending_is_taken_once_under_concurrency(h: &Harness) {
    let key = hash("state-race");
    let record = pending("client-1");
    h.store
        .put_pending(&key, &record, Duration::from_secs(60))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..RACERS {
        let store = h.store.clone();
        tasks.push(tokio::spawn(async move {
            store.take_pending(&key).await.unwrap()
        }));
    }
    let taken: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .filter_map(Result::unwrap)
        .collect();
    assert_eq!(taken, vec![record], "exactly one task takes it, intact");
    assert_eq!(h.store.take_pending(&key).await.unwrap(), None);
}

pub async fn refresh_rotates_once_under_concurrency(h: &Harness) {
    let family = FamilyId::random();
    let old = hash("rt-race-0");
    h.store
        .put_refresh(&old, &refresh(&family, h.now(), HOUR))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let (store, record) = (h.store.clone(), refresh(&family, h.now(), HOUR));
        tasks.push(tokio::spawn(async move {
            let new = hash(&format!("rt-race-{}", i + 1));
            store.rotate_refresh(&old, &new, &record).await.unwrap()
        }));
    }
    let outcomes: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let rotated = outcomes.iter().filter(|o| **o == Rotation::Rotated).count();
    assert_eq!(rotated, 1, "exactly one rotation wins: {outcomes:?}");
    assert!(outcomes.iter().all(|o| matches!(
        o,
        Rotation::Rotated | Rotation::Reuse { .. } | Rotation::Revoked { .. }
    )));
    assert!(outcomes.contains(&Rotation::Reuse {
        family: family.clone()
    }));
    let state = h.store.get_refresh(&old).await.unwrap().unwrap();
    assert!(
        state.used && state.family_revoked,
        "reuse revoked the family"
    );
}

// ---- codes -----------------------------------------------------------

pub async fn reading_a_code_spends_nothing(h: &Harness) {
    let code_hash = hash("code-read");
    let record = code(h.now());
    h.store
        .put_code(&code_hash, &record, Duration::from_secs(60))
        .await
        .unwrap();
    for _ in 0..3 {
        let state = h.store.get_code(&code_hash).await.unwrap().unwrap();
        assert_eq!(state.record, record);
        assert_eq!(
            state.redeemed_by, None,
            "a read (a refused redemption) spends nothing"
        );
    }
    let family = FamilyId::random();
    assert_eq!(
        h.store.redeem_code(&code_hash, &family).await.unwrap(),
        Redemption::Redeemed
    );
    assert_eq!(
        h.store
            .redeem_code(&hash("no-such-code"), &family)
            .await
            .unwrap(),
        Redemption::Unknown
    );
    assert_eq!(h.store.get_code(&hash("no-such-code")).await.unwrap(), None);
}

// ---- refresh-token families -----------------------------------------

pub async fn refresh_rotation_and_reuse_revokes_the_family(h: &Harness) {
    let family = FamilyId::random();
    let (a, b, c, d) = (hash("rt-a"), hash("rt-b"), hash("rt-c"), hash("rt-d"));
    let record = refresh(&family, h.now(), HOUR);
    h.store.put_refresh(&a, &record).await.unwrap();
    let state = h.store.get_refresh(&a).await.unwrap().unwrap();
    assert_eq!(state.record, record);
    assert!(!state.used && !state.family_revoked);

    assert_eq!(
        h.store.rotate_refresh(&a, &b, &record).await.unwrap(),
        Rotation::Rotated
    );
    assert!(h.store.get_refresh(&a).await.unwrap().unwrap().used);
    let b_state = h.store.get_refresh(&b).await.unwrap().unwrap();
    assert!(!b_state.used);
    assert_eq!(b_state.record.family, family);

    // The new token joins the old one's family, whatever its record says.
    let stray = refresh(&FamilyId::new("another"), h.now(), HOUR);
    assert_eq!(
        h.store.rotate_refresh(&b, &c, &stray).await.unwrap(),
        Rotation::Rotated
    );
    assert_eq!(
        h.store
            .get_refresh(&c)
            .await
            .unwrap()
            .unwrap()
            .record
            .family,
        family
    );

    // A used token presented again: reuse, the family is revoked.
    assert_eq!(
        h.store.rotate_refresh(&a, &d, &record).await.unwrap(),
        Rotation::Reuse {
            family: family.clone()
        }
    );
    assert_eq!(
        h.store.get_refresh(&d).await.unwrap(),
        None,
        "nothing issued on reuse"
    );
    let c_state = h.store.get_refresh(&c).await.unwrap().unwrap();
    assert!(c_state.family_revoked && !c_state.used);
    // The newest token of the family no longer rotates, and nothing changes.
    assert_eq!(
        h.store.rotate_refresh(&c, &d, &record).await.unwrap(),
        Rotation::Revoked {
            family: family.clone()
        }
    );
    assert_eq!(h.store.get_refresh(&d).await.unwrap(), None);
    assert!(!h.store.get_refresh(&c).await.unwrap().unwrap().used);
}

pub async fn refused_refresh_operations_change_nothing(h: &Harness) {
    let family = FamilyId::random();
    let (known, new) = (hash("rt-known"), hash("rt-new"));
    let record = refresh(&family, h.now(), HOUR);
    assert_eq!(
        h.store
            .rotate_refresh(&hash("rt-unknown"), &new, &record)
            .await
            .unwrap(),
        Rotation::Unknown
    );
    assert_eq!(h.store.get_refresh(&new).await.unwrap(), None);
    assert_eq!(
        h.store.revoke_refresh(&hash("rt-unknown")).await.unwrap(),
        None
    );

    h.store.put_refresh(&known, &record).await.unwrap();
    // An oversized new record is refused before anything is spent.
    let mut huge = record.clone();
    huge.scopes = vec!["x".repeat(8192)];
    assert!(matches!(
        h.store.rotate_refresh(&known, &new, &huge).await,
        Err(StoreError::TooLarge {
            what: Kind::Refresh,
            ..
        })
    ));
    let state = h.store.get_refresh(&known).await.unwrap().unwrap();
    assert!(
        !state.used && !state.family_revoked,
        "the refused rotation spent nothing"
    );
    assert_eq!(h.store.get_refresh(&new).await.unwrap(), None);
}

pub async fn revocation_by_token_and_by_family(h: &Harness) {
    let family = FamilyId::random();
    let (a, b) = (hash("rv-a"), hash("rv-b"));
    h.store
        .put_refresh(&a, &refresh(&family, h.now(), HOUR))
        .await
        .unwrap();
    assert_eq!(
        h.store.revoke_refresh(&a).await.unwrap(),
        Some(family.clone())
    );
    assert!(
        h.store
            .get_refresh(&a)
            .await
            .unwrap()
            .unwrap()
            .family_revoked
    );
    assert_eq!(
        h.store
            .rotate_refresh(&a, &b, &refresh(&family, h.now(), HOUR))
            .await
            .unwrap(),
        Rotation::Revoked { family }
    );

    // A family revoked before its first token is stored (a code replayed
    // while its redeemer is still issuing) stays revoked.
    let early = FamilyId::random();
    h.store.revoke_family(&early).await.unwrap();
    let (c, d) = (hash("rv-c"), hash("rv-d"));
    h.store
        .put_refresh(&c, &refresh(&early, h.now(), HOUR))
        .await
        .unwrap();
    assert_eq!(
        h.store
            .rotate_refresh(&c, &d, &refresh(&early, h.now(), HOUR))
            .await
            .unwrap(),
        Rotation::Revoked { family: early }
    );
}

// ---- caps --------------------------------------------------------------

pub async fn unauthenticated_records_are_capped(h: &Harness) {
    let limits = test_limits();
    let now = h.now();
    for i in 0..limits.max_clients {
        h.store
            .put_client(&client(&format!("c{i}"), now))
            .await
            .unwrap();
    }
    assert!(matches!(
        h.store.put_client(&client("one-too-many", now)).await,
        Err(StoreError::Full(Kind::Client))
    ));
    assert_eq!(
        h.store
            .get_client(&ClientId::new("one-too-many"))
            .await
            .unwrap(),
        None
    );
    // Replacing one already there is no new record.
    h.store.put_client(&client("c0", now)).await.unwrap();
    assert!(h.store.delete_client(&ClientId::new("c1")).await.unwrap());
    h.store
        .put_client(&client("room-again", now))
        .await
        .unwrap();

    let ttl = Duration::from_secs(60);
    for i in 0..limits.max_pending {
        h.store
            .put_pending(&hash(&format!("p{i}")), &pending("c0"), ttl)
            .await
            .unwrap();
    }
    assert!(matches!(
        h.store
            .put_pending(&hash("p-extra"), &pending("c0"), ttl)
            .await,
        Err(StoreError::Full(Kind::Pending))
    ));
    assert_eq!(h.store.take_pending(&hash("p-extra")).await.unwrap(), None);
    assert!(h.store.take_pending(&hash("p0")).await.unwrap().is_some());
    h.store
        .put_pending(&hash("p-extra"), &pending("c0"), ttl)
        .await
        .unwrap();

    for i in 0..limits.max_sessions {
        h.store
            .put_session(
                &SessionId::new(format!("s{i}")),
                &IdentityKey::new("u"),
                ttl,
            )
            .await
            .unwrap();
    }
    assert!(matches!(
        h.store
            .put_session(&SessionId::new("s-extra"), &IdentityKey::new("u"), ttl)
            .await,
        Err(StoreError::Full(Kind::Session))
    ));

    for i in 0..limits.max_counters {
        assert_eq!(
            h.store.bump_counter(&format!("k{i}"), ttl).await.unwrap(),
            1
        );
    }
    assert!(matches!(
        h.store.bump_counter("k-extra", ttl).await,
        Err(StoreError::Full(Kind::Counter))
    ));
    assert_eq!(
        h.store.bump_counter("k0", ttl).await.unwrap(),
        2,
        "known keys still count"
    );

    // Size: a client's metadata past max_record_bytes.
    let mut big = client("big", now);
    big.metadata = serde_json::json!({"client_name": "x".repeat(5000)});
    assert!(matches!(
        h.store.put_client(&big).await,
        Err(StoreError::TooLarge {
            what: Kind::Client,
            ..
        })
    ));
    // Keys a caller chooses are bounded too.
    let long = "k".repeat(300);
    assert!(matches!(
        h.store.bump_counter(&long, ttl).await,
        Err(StoreError::TooLarge {
            what: Kind::Counter,
            ..
        })
    ));
    assert!(matches!(
        h.store
            .put_session(&SessionId::new(long.clone()), &IdentityKey::new("u"), ttl)
            .await,
        Err(StoreError::TooLarge {
            what: Kind::Session,
            ..
        })
    ));
    let mut big_pending = pending("c0");
    big_pending.scopes = vec!["s".repeat(5000)];
    assert!(matches!(
        h.store.put_pending(&hash("p-big"), &big_pending, ttl).await,
        Err(StoreError::TooLarge { .. })
    ));
}

pub async fn expired_capped_records_free_their_room(h: &Harness) {
    let limits = test_limits();
    let short = Duration::from_millis(1000);
    for i in 0..limits.max_pending {
        h.store
            .put_pending(&hash(&format!("pe{i}")), &pending("c0"), short)
            .await
            .unwrap();
    }
    assert!(matches!(
        h.store
            .put_pending(&hash("pe-extra"), &pending("c0"), short)
            .await,
        Err(StoreError::Full(Kind::Pending))
    ));
    h.pass(Duration::from_millis(2500)).await;
    h.store
        .put_pending(&hash("pe-extra"), &pending("c0"), short)
        .await
        .unwrap();
}

// ---- expiry ------------------------------------------------------------

pub async fn everything_expires(h: &Harness) {
    let ttl = Duration::from_millis(1000);
    let now = h.now();
    let mut expiring = client("expiring", now);
    expiring.expires_at = Some(now.plus(ttl));
    h.store.put_client(&expiring).await.unwrap();
    h.store
        .put_pending(&hash("ttl-p"), &pending("c"), ttl)
        .await
        .unwrap();
    h.store
        .put_code(&hash("ttl-c"), &code(now), ttl)
        .await
        .unwrap();
    let family = FamilyId::random();
    h.store
        .put_refresh(&hash("ttl-r"), &refresh(&family, now, ttl))
        .await
        .unwrap();
    let (subject, client_id) = (Subject::new("u"), ClientId::new("c"));
    let consent = ConsentRecord {
        scopes: vec!["mcp:tools".into()],
        granted_at: now,
        expires_at: now.plus(ttl),
    };
    h.store
        .put_consent(&subject, &client_id, &consent)
        .await
        .unwrap();
    let cipher = TokenCipher::new(&KeyBytes::new([9; 32])).unwrap();
    let upstream_key = UpstreamKey::new("ttl-u");
    let tokens = UpstreamTokens {
        sealed: cipher.seal(upstream_key.as_str().as_bytes(), b"t").unwrap(),
        expires_at: now.plus(ttl),
    };
    h.store.put_upstream(&upstream_key, &tokens).await.unwrap();
    let session = SessionId::new("ttl-s");
    h.store
        .put_session(&session, &IdentityKey::new("u"), ttl)
        .await
        .unwrap();
    assert_eq!(h.store.bump_counter("ttl-k", ttl).await.unwrap(), 1);
    assert_eq!(h.store.bump_counter("ttl-k", ttl).await.unwrap(), 2);

    // Everything is there now.
    assert!(h.store.get_client(&expiring.id).await.unwrap().is_some());
    assert!(h.store.get_code(&hash("ttl-c")).await.unwrap().is_some());
    assert!(h.store.get_refresh(&hash("ttl-r")).await.unwrap().is_some());
    assert_eq!(
        h.store.get_consent(&subject, &client_id).await.unwrap(),
        Some(consent)
    );
    assert_eq!(
        h.store.get_upstream(&upstream_key).await.unwrap(),
        Some(tokens)
    );

    // And gone after expiry plus a margin.
    h.pass(Duration::from_millis(2500)).await;
    assert_eq!(h.store.get_client(&expiring.id).await.unwrap(), None);
    assert_eq!(h.store.take_pending(&hash("ttl-p")).await.unwrap(), None);
    assert_eq!(h.store.get_code(&hash("ttl-c")).await.unwrap(), None);
    assert_eq!(
        h.store.redeem_code(&hash("ttl-c"), &family).await.unwrap(),
        Redemption::Unknown
    );
    assert_eq!(h.store.get_refresh(&hash("ttl-r")).await.unwrap(), None);
    assert_eq!(
        h.store
            .rotate_refresh(
                &hash("ttl-r"),
                &hash("ttl-r2"),
                &refresh(&family, h.now(), HOUR)
            )
            .await
            .unwrap(),
        Rotation::Unknown
    );
    assert_eq!(
        h.store.get_consent(&subject, &client_id).await.unwrap(),
        None
    );
    assert_eq!(h.store.get_upstream(&upstream_key).await.unwrap(), None);
    assert_eq!(h.store.touch_session(&session, ttl).await.unwrap(), None);
    assert_eq!(
        h.store.bump_counter("ttl-k", ttl).await.unwrap(),
        1,
        "a new window"
    );
    h.store.purge_expired().await.unwrap();
    assert_eq!(h.store.get_client(&expiring.id).await.unwrap(), None);
}

/// Touching a session extends its idle life. Exact times need the manual
/// clock; Redis's PTTL after a touch is checked in its unit tests.
pub async fn touching_a_session_keeps_it_alive(h: &Harness) {
    if h.clock.is_none() {
        return;
    }
    let (id, owner) = (SessionId::new("touch"), IdentityKey::new("user-1"));
    let idle = Duration::from_secs(60);
    h.store.put_session(&id, &owner, idle).await.unwrap();
    h.pass(Duration::from_secs(40)).await;
    assert_eq!(
        h.store.touch_session(&id, idle).await.unwrap(),
        Some(owner.clone())
    );
    h.pass(Duration::from_secs(40)).await;
    assert_eq!(
        h.store.touch_session(&id, idle).await.unwrap(),
        Some(owner.clone()),
        "80 s after creation, 40 s idle"
    );
    h.pass(Duration::from_secs(61)).await;
    assert_eq!(h.store.touch_session(&id, idle).await.unwrap(), None);
    assert!(h.store.purge_expired().await.unwrap() >= 1);
}

// ---- the rest ------------------------------------------------------------

pub async fn sessions_consents_and_clients_round_trip(h: &Harness) {
    let now = h.now();
    let record = client("https://app.example/client.json", now);
    let mut record = record;
    record.source = ClientSource::Cimd;
    record.secret_hash = Some(hash("client-secret"));
    h.store.put_client(&record).await.unwrap();
    assert_eq!(
        h.store.get_client(&record.id).await.unwrap(),
        Some(record.clone())
    );
    assert!(h.store.delete_client(&record.id).await.unwrap());
    assert!(!h.store.delete_client(&record.id).await.unwrap());

    let (id, owner) = (SessionId::new("sess-1"), IdentityKey::new("tenant/user-1"));
    h.store.put_session(&id, &owner, HOUR).await.unwrap();
    assert_eq!(h.store.touch_session(&id, HOUR).await.unwrap(), Some(owner));
    assert!(h.store.delete_session(&id).await.unwrap());
    assert_eq!(h.store.touch_session(&id, HOUR).await.unwrap(), None);

    // Consents keyed by (subject, client) without collisions.
    let consent = |scope: &str| ConsentRecord {
        scopes: vec![scope.into()],
        granted_at: now,
        expires_at: now.plus(HOUR),
    };
    let (s1, c1) = (Subject::new("a:b"), ClientId::new("c"));
    let (s2, c2) = (Subject::new("a"), ClientId::new("b:c"));
    h.store
        .put_consent(&s1, &c1, &consent("one"))
        .await
        .unwrap();
    h.store
        .put_consent(&s2, &c2, &consent("two"))
        .await
        .unwrap();
    assert_eq!(
        h.store.get_consent(&s1, &c1).await.unwrap(),
        Some(consent("one"))
    );
    assert_eq!(
        h.store.get_consent(&s2, &c2).await.unwrap(),
        Some(consent("two"))
    );
    assert!(h.store.delete_consent(&s1, &c1).await.unwrap());
    assert_eq!(h.store.get_consent(&s1, &c1).await.unwrap(), None);
    assert_eq!(
        h.store.get_consent(&s2, &c2).await.unwrap(),
        Some(consent("two"))
    );
}

pub async fn sealed_tokens_are_bound_to_their_record(h: &Harness) {
    let cipher = TokenCipher::new(&KeyBytes::random().unwrap()).unwrap();
    let (mine, theirs) = (
        UpstreamKey::new("grant-mine"),
        UpstreamKey::new("grant-theirs"),
    );
    let tokens = UpstreamTokens {
        sealed: cipher
            .seal(mine.as_str().as_bytes(), br#"{"refresh_token":"entra-rt"}"#)
            .unwrap(),
        expires_at: h.now().plus(HOUR),
    };
    h.store.put_upstream(&mine, &tokens).await.unwrap();
    let read = h.store.get_upstream(&mine).await.unwrap().unwrap();
    assert_eq!(
        cipher
            .open(mine.as_str().as_bytes(), &read.sealed)
            .unwrap()
            .expose(),
        br#"{"refresh_token":"entra-rt"}"#
    );
    // The same ciphertext moved to another record does not open there.
    h.store.put_upstream(&theirs, &read).await.unwrap();
    let moved = h.store.get_upstream(&theirs).await.unwrap().unwrap();
    assert!(matches!(
        cipher.open(theirs.as_str().as_bytes(), &moved.sealed),
        Err(SealError::Open)
    ));
    assert!(h.store.delete_upstream(&mine).await.unwrap());
    assert_eq!(h.store.get_upstream(&mine).await.unwrap(), None);
}

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

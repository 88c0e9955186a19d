//! What the contract suite cannot see: the TTLs Redis holds.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::records::ClientSource;

fn url() -> String {
    std::env::var("MCPGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
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
    // Read a moment after the token's, so up to that moment shorter when
    // both expire together.
    assert!(
        family_ttl + 1000 >= token_ttl,
        "the family outlives its tokens: {family_ttl} < {token_ttl}"
    );
    // A rotated-in token with a longer life extends the family.
    let mut longer = record.clone();
    longer.expires_at = now.plus(hour * 2);
    let new = TokenHash::of(b"y");
    assert_eq!(
        s.rotate_refresh(&hash, &new, &longer).await.unwrap(),
        Rotation::Rotated
    );
    assert!(pttl(&s, &s.key(Kind::Family, "f")).await > i64::try_from(hour.as_millis()).unwrap());

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

#[tokio::test]
async fn audit_queries_page_through_ties_without_loss_or_repeat() {
    use mcpgate_audit::{AuditEvent, AuditQuery, AuditRecord, Decision, UtcTime};

    let mut s = store().await;
    s.limits.max_audit_records = 10_000;
    // 600 records on 7 instants: every page boundary falls inside a tie.
    let now = UtcTime::from_unix_millis(s.clock.now().as_millis());
    let records: Vec<_> = (0..600u64)
        .map(|i| {
            let at = now.minus(Duration::from_millis(i % 7));
            let mut r = AuditRecord::at(at, AuditEvent::ToolCall, Decision::Allow);
            r.request_id = Some(i.to_string());
            r
        })
        .collect();
    s.append_audit(&records).await.unwrap();
    let query = AuditQuery {
        limit: 10_000,
        ..AuditQuery::default()
    };
    let back = s.query_audit(&query).await.unwrap();
    let ids: std::collections::BTreeSet<_> =
        back.iter().map(|r| r.request_id.clone().unwrap()).collect();
    assert_eq!((back.len(), ids.len()), (600, 600));
    assert!(back.windows(2).all(|w| w[0].at >= w[1].at), "newest first");
    cleanup(&s).await;
}

//! Caps on what an unauthenticated caller can create, in count and size.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mcpgate_store::{ClientId, IdentityKey, Kind, SessionId, StoreError};

use super::{Harness, PAST_SHORT_TTL, SHORT_TTL, client, hash, pending, test_limits};

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
    let short = SHORT_TTL;
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
    h.pass(PAST_SHORT_TTL).await;
    h.store
        .put_pending(&hash("pe-extra"), &pending("c0"), short)
        .await
        .unwrap();
}

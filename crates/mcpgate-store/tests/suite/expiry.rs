//! Every record expires; sessions live while touched.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mcpgate_store::{
    ClientId, ConsentRecord, FamilyId, IdentityKey, KeyBytes, Redemption, Rotation, SessionId,
    Subject, TokenCipher, UpstreamKey, UpstreamTokens,
};

use super::{HOUR, Harness, PAST_SHORT_TTL, SHORT_TTL, client, code, hash, pending, refresh};

pub async fn everything_expires(h: &Harness) {
    let ttl = SHORT_TTL;
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
    h.pass(PAST_SHORT_TTL).await;
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

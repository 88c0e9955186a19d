//! Codes read without spending; refresh-token rotation, reuse and revocation.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mcpgate_store::{FamilyId, Kind, Redemption, Rotation, StoreError};

use super::{HOUR, Harness, code, hash, refresh};

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

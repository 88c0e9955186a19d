//! Single use under concurrency: codes, `state` values, refresh tokens.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mcpgate_store::{FamilyId, Redemption, Rotation};

use super::{HOUR, Harness, RACERS, code, hash, pending, refresh};

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

//! Clients, sessions and consents round-trip; sealed tokens stay bound to their record.

#![allow(clippy::unwrap_used)]

use mcpgate_store::{
    ClientId, ClientSource, ConsentRecord, IdentityKey, KeyBytes, SealError, SessionId, Subject,
    TokenCipher, UpstreamKey, UpstreamTokens,
};

use super::{HOUR, Harness, client, hash};

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
    assert_eq!(h.store.get_session_state(&id).await.unwrap(), None);
    let state = r#"{"initialize_params":{"protocolVersion":"2025-11-25"}}"#;
    h.store.put_session_state(&id, state, HOUR).await.unwrap();
    assert_eq!(
        h.store.get_session_state(&id).await.unwrap().as_deref(),
        Some(state)
    );
    assert_eq!(h.store.touch_session(&id, HOUR).await.unwrap(), Some(owner));
    assert!(h.store.delete_session(&id).await.unwrap());
    assert_eq!(h.store.touch_session(&id, HOUR).await.unwrap(), None);
    assert_eq!(
        h.store.get_session_state(&id).await.unwrap(),
        None,
        "ending a session forgets its state"
    );

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

//! The store's logic written once, over a transactional key-value engine.
//!
//! Memory and SQLite both run each [`Store`] method as one closure over a
//! [`Txn`]: under a mutex for memory, inside `BEGIN IMMEDIATE` for SQLite.
//! The closures read and check everything before they write, so a refusal
//! writes nothing even where the engine cannot roll back (memory).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use mcpgate_audit::{AuditQuery, AuditRecord};

use crate::audit;
use crate::codec::{check_key, consent_key, decode, encode, pin_key};
use crate::error::{Kind, StoreError};
use crate::options::Limits;
use crate::records::{
    ClientId, ClientRecord, CodeRecord, CodeState, ConsentRecord, FamilyId, FamilyState,
    IdentityKey, PendingAuthorization, PinRecord, Redemption, RefreshRecord, RefreshState,
    Rotation, SessionId, SessionRecord, SessionStateRecord, StoredCode, StoredRefresh, Subject,
    Timestamp, TokenHash, UpstreamKey, UpstreamTokens, session_state_key,
};
use crate::store::Store;

/// A live entry: its encoded value and when it expires.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub value: Vec<u8>,
    pub expires_at: Option<Timestamp>,
}

impl Entry {
    pub fn live_at(&self, now: Timestamp) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// A scan's callback: given each key and value, whether to go on.
pub(crate) type Visit<'a> = dyn FnMut(&str, &[u8]) -> Result<bool, StoreError> + 'a;

/// One transaction's view of the engine. Reads see only live entries.
pub(crate) trait Txn {
    /// The time this transaction runs at.
    fn now(&self) -> Timestamp;
    fn get(&mut self, kind: Kind, key: &str) -> Result<Option<Entry>, StoreError>;
    fn put(
        &mut self,
        kind: Kind,
        key: &str,
        value: &[u8],
        expires_at: Option<Timestamp>,
    ) -> Result<(), StoreError>;
    /// Whether a live entry was deleted.
    fn delete(&mut self, kind: Kind, key: &str) -> Result<bool, StoreError>;
    /// Whether fewer than `cap` live entries of `kind` exist (sweeping
    /// expired ones if needed to tell).
    fn has_room(&mut self, kind: Kind, cap: u64) -> Result<bool, StoreError>;
    /// Deletes every expired entry; how many.
    fn purge(&mut self) -> Result<u64, StoreError>;
    /// Visits the live entries of `kind` with keys in `[from, to)` (to the
    /// end when `to` is `None`), in key order or, with `descending`, the
    /// reverse, while `visit` returns `true`.
    fn scan(
        &mut self,
        kind: Kind,
        from: &str,
        to: Option<&str>,
        descending: bool,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError>;
}

/// Runs closures as transactions.
pub(crate) trait Engine: Send + Sync + fmt::Debug + 'static {
    fn run<R, F>(&self, f: F) -> impl Future<Output = Result<R, StoreError>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Txn) -> Result<R, StoreError> + Send + 'static;
}

/// A [`Store`] over an [`Engine`].
#[derive(Debug)]
pub(crate) struct EngineStore<E> {
    engine: E,
    limits: Limits,
    // When (store clock, Unix ms) the audit trail's records past their age
    // are next looked for: once a minute, not on every append, whose batches
    // come many a second under load.
    audit_age_check: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// How often appends look for audit records past their age.
const AUDIT_AGE_CHECK_MS: u64 = 60_000;

impl<E: Engine> EngineStore<E> {
    pub fn new(engine: E, limits: Limits) -> Self {
        Self {
            engine,
            limits,
            audit_age_check: std::sync::Arc::default(),
        }
    }
}

pub(crate) fn get_decoded<T: DeserializeOwned>(
    tx: &mut dyn Txn,
    kind: Kind,
    key: &str,
) -> Result<Option<(T, Option<Timestamp>)>, StoreError> {
    match tx.get(kind, key)? {
        Some(entry) => Ok(Some((decode(kind, &entry.value)?, entry.expires_at))),
        None => Ok(None),
    }
}

pub(crate) fn put_capped(
    tx: &mut dyn Txn,
    kind: Kind,
    key: &str,
    value: &[u8],
    expires_at: Option<Timestamp>,
    cap: u64,
) -> Result<(), StoreError> {
    if tx.get(kind, key)?.is_none() && !tx.has_room(kind, cap)? {
        return Err(StoreError::Full(kind));
    }
    tx.put(kind, key, value, expires_at)
}

/// Keeps a family alive at least until `until`, revoked or not as it was.
fn extend_family(
    tx: &mut dyn Txn,
    family: &FamilyId,
    until: Timestamp,
    revoke: bool,
    limit: usize,
) -> Result<(), StoreError> {
    let (state, expires) = match get_decoded::<FamilyState>(tx, Kind::Family, family.as_str())? {
        Some((state, expires)) => (state, expires),
        None => (FamilyState { revoked: false }, None),
    };
    let state = FamilyState {
        revoked: state.revoked || revoke,
    };
    let expires = expires.map_or(until, |at| at.max(until));
    let value = encode(Kind::Family, &state, limit)?;
    tx.put(Kind::Family, family.as_str(), &value, Some(expires))
}

fn family_revoked(tx: &mut dyn Txn, family: &FamilyId) -> Result<bool, StoreError> {
    Ok(
        get_decoded::<FamilyState>(tx, Kind::Family, family.as_str())?
            .is_some_and(|(state, _)| state.revoked),
    )
}

fn revoke_family(tx: &mut dyn Txn, family: &FamilyId, limits: &Limits) -> Result<(), StoreError> {
    let until = tx.now().plus(limits.revocation_memory);
    extend_family(tx, family, until, true, limits.max_record_bytes)
}

fn store_refresh(
    tx: &mut dyn Txn,
    hash: &TokenHash,
    record: RefreshRecord,
    limit: usize,
) -> Result<(), StoreError> {
    let expires = record.expires_at;
    let family = record.family.clone();
    let value = encode(
        Kind::Refresh,
        &StoredRefresh {
            record,
            used: false,
        },
        limit,
    )?;
    extend_family(tx, &family, expires, false, limit)?;
    tx.put(Kind::Refresh, &hash.to_hex(), &value, Some(expires))
}

#[async_trait]
impl<E: Engine> Store for EngineStore<E> {
    async fn put_client(&self, client: &ClientRecord) -> Result<(), StoreError> {
        check_key(Kind::Client, client.id.as_str(), &self.limits)?;
        let value = encode(Kind::Client, client, self.limits.max_record_bytes)?;
        let (id, expires, cap) = (
            client.id.clone(),
            client.expires_at,
            self.limits.max_clients,
        );
        self.engine
            .run(move |tx| put_capped(tx, Kind::Client, id.as_str(), &value, expires, cap))
            .await
    }

    async fn get_client(&self, id: &ClientId) -> Result<Option<ClientRecord>, StoreError> {
        let id = id.clone();
        self.engine
            .run(move |tx| Ok(get_decoded(tx, Kind::Client, id.as_str())?.map(|(c, _)| c)))
            .await
    }

    async fn delete_client(&self, id: &ClientId) -> Result<bool, StoreError> {
        let id = id.clone();
        self.engine
            .run(move |tx| tx.delete(Kind::Client, id.as_str()))
            .await
    }

    async fn bump_counter(&self, key: &str, window: Duration) -> Result<u64, StoreError> {
        check_key(Kind::Counter, key, &self.limits)?;
        let key = key.to_owned();
        let (cap, limit) = (self.limits.max_counters, self.limits.max_record_bytes);
        self.engine
            .run(move |tx| {
                let (count, expires) = match get_decoded::<u64>(tx, Kind::Counter, &key)? {
                    Some((count, expires)) => (count.saturating_add(1), expires),
                    None => {
                        if !tx.has_room(Kind::Counter, cap)? {
                            return Err(StoreError::Full(Kind::Counter));
                        }
                        (1, Some(tx.now().plus(window)))
                    }
                };
                let value = encode(Kind::Counter, &count, limit)?;
                tx.put(Kind::Counter, &key, &value, expires)?;
                Ok(count)
            })
            .await
    }

    async fn put_pending(
        &self,
        key: &TokenHash,
        pending: &PendingAuthorization,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let value = encode(Kind::Pending, pending, self.limits.max_record_bytes)?;
        let (key, cap) = (key.to_hex(), self.limits.max_pending);
        self.engine
            .run(move |tx| {
                let expires = tx.now().plus(ttl);
                put_capped(tx, Kind::Pending, &key, &value, Some(expires), cap)
            })
            .await
    }

    async fn take_pending(
        &self,
        key: &TokenHash,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        let key = key.to_hex();
        self.engine
            .run(move |tx| {
                let Some((pending, _)) = get_decoded(tx, Kind::Pending, &key)? else {
                    return Ok(None);
                };
                tx.delete(Kind::Pending, &key)?;
                Ok(Some(pending))
            })
            .await
    }

    async fn put_code(
        &self,
        hash: &TokenHash,
        code: &CodeRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let stored = StoredCode {
            record: code.clone(),
            redeemed_by: None,
        };
        let value = encode(Kind::Code, &stored, self.limits.max_record_bytes)?;
        let key = hash.to_hex();
        self.engine
            .run(move |tx| {
                let expires = tx.now().plus(ttl);
                tx.put(Kind::Code, &key, &value, Some(expires))
            })
            .await
    }

    async fn get_code(&self, hash: &TokenHash) -> Result<Option<CodeState>, StoreError> {
        let key = hash.to_hex();
        self.engine
            .run(move |tx| {
                Ok(
                    get_decoded::<StoredCode>(tx, Kind::Code, &key)?.map(|(code, _)| CodeState {
                        record: code.record,
                        redeemed_by: code.redeemed_by,
                    }),
                )
            })
            .await
    }

    async fn redeem_code(
        &self,
        hash: &TokenHash,
        family: &FamilyId,
    ) -> Result<Redemption, StoreError> {
        let (key, family, limit) = (hash.to_hex(), family.clone(), self.limits.max_record_bytes);
        self.engine
            .run(move |tx| {
                let Some((mut code, expires)) = get_decoded::<StoredCode>(tx, Kind::Code, &key)?
                else {
                    return Ok(Redemption::Unknown);
                };
                if let Some(first) = code.redeemed_by {
                    return Ok(Redemption::AlreadyRedeemed { family: first });
                }
                code.redeemed_by = Some(family);
                let value = encode(Kind::Code, &code, limit)?;
                tx.put(Kind::Code, &key, &value, expires)?;
                Ok(Redemption::Redeemed)
            })
            .await
    }

    async fn put_refresh(
        &self,
        hash: &TokenHash,
        record: &RefreshRecord,
    ) -> Result<(), StoreError> {
        let (hash, record, limit) = (*hash, record.clone(), self.limits.max_record_bytes);
        self.engine
            .run(move |tx| store_refresh(tx, &hash, record, limit))
            .await
    }

    async fn get_refresh(&self, hash: &TokenHash) -> Result<Option<RefreshState>, StoreError> {
        let key = hash.to_hex();
        self.engine
            .run(move |tx| {
                let Some((stored, _)) = get_decoded::<StoredRefresh>(tx, Kind::Refresh, &key)?
                else {
                    return Ok(None);
                };
                let family_revoked = family_revoked(tx, &stored.record.family)?;
                Ok(Some(RefreshState {
                    record: stored.record,
                    used: stored.used,
                    family_revoked,
                }))
            })
            .await
    }

    async fn rotate_refresh(
        &self,
        old: &TokenHash,
        new_hash: &TokenHash,
        new: &RefreshRecord,
    ) -> Result<Rotation, StoreError> {
        let (old, new_hash, mut new) = (old.to_hex(), *new_hash, new.clone());
        let limits = self.limits.clone();
        self.engine
            .run(move |tx| {
                let Some((mut stored, expires)) =
                    get_decoded::<StoredRefresh>(tx, Kind::Refresh, &old)?
                else {
                    return Ok(Rotation::Unknown);
                };
                let family = stored.record.family.clone();
                if family_revoked(tx, &family)? {
                    return Ok(Rotation::Revoked { family });
                }
                if stored.used {
                    revoke_family(tx, &family, &limits)?;
                    return Ok(Rotation::Reuse { family });
                }
                stored.used = true;
                let used = encode(Kind::Refresh, &stored, limits.max_record_bytes)?;
                new.family = family;
                store_refresh(tx, &new_hash, new, limits.max_record_bytes)?;
                tx.put(Kind::Refresh, &old, &used, expires)?;
                Ok(Rotation::Rotated)
            })
            .await
    }

    async fn revoke_refresh(&self, hash: &TokenHash) -> Result<Option<FamilyId>, StoreError> {
        let (key, limits) = (hash.to_hex(), self.limits.clone());
        self.engine
            .run(move |tx| {
                let Some((stored, _)) = get_decoded::<StoredRefresh>(tx, Kind::Refresh, &key)?
                else {
                    return Ok(None);
                };
                revoke_family(tx, &stored.record.family, &limits)?;
                Ok(Some(stored.record.family))
            })
            .await
    }

    async fn revoke_family(&self, family: &FamilyId) -> Result<(), StoreError> {
        let (family, limits) = (family.clone(), self.limits.clone());
        self.engine
            .run(move |tx| revoke_family(tx, &family, &limits))
            .await
    }

    async fn put_consent(
        &self,
        subject: &Subject,
        client: &ClientId,
        consent: &ConsentRecord,
    ) -> Result<(), StoreError> {
        let value = encode(Kind::Consent, consent, self.limits.max_record_bytes)?;
        let (key, expires) = (consent_key(subject, client), consent.expires_at);
        check_key(Kind::Consent, &key, &self.limits)?;
        self.engine
            .run(move |tx| tx.put(Kind::Consent, &key, &value, Some(expires)))
            .await
    }

    async fn get_consent(
        &self,
        subject: &Subject,
        client: &ClientId,
    ) -> Result<Option<ConsentRecord>, StoreError> {
        let key = consent_key(subject, client);
        self.engine
            .run(move |tx| Ok(get_decoded(tx, Kind::Consent, &key)?.map(|(c, _)| c)))
            .await
    }

    async fn delete_consent(
        &self,
        subject: &Subject,
        client: &ClientId,
    ) -> Result<bool, StoreError> {
        let key = consent_key(subject, client);
        self.engine
            .run(move |tx| tx.delete(Kind::Consent, &key))
            .await
    }

    async fn put_upstream(
        &self,
        key: &UpstreamKey,
        tokens: &UpstreamTokens,
    ) -> Result<(), StoreError> {
        check_key(Kind::Upstream, key.as_str(), &self.limits)?;
        let value = encode(Kind::Upstream, tokens, self.limits.max_record_bytes)?;
        let (key, expires) = (key.clone(), tokens.expires_at);
        self.engine
            .run(move |tx| tx.put(Kind::Upstream, key.as_str(), &value, Some(expires)))
            .await
    }

    async fn get_upstream(&self, key: &UpstreamKey) -> Result<Option<UpstreamTokens>, StoreError> {
        let key = key.clone();
        self.engine
            .run(move |tx| Ok(get_decoded(tx, Kind::Upstream, key.as_str())?.map(|(t, _)| t)))
            .await
    }

    async fn delete_upstream(&self, key: &UpstreamKey) -> Result<bool, StoreError> {
        let key = key.clone();
        self.engine
            .run(move |tx| tx.delete(Kind::Upstream, key.as_str()))
            .await
    }

    async fn put_session(
        &self,
        id: &SessionId,
        owner: &IdentityKey,
        idle: Duration,
    ) -> Result<(), StoreError> {
        let record = SessionRecord {
            owner: owner.clone(),
        };
        check_key(Kind::Session, id.as_str(), &self.limits)?;
        let value = encode(Kind::Session, &record, self.limits.max_record_bytes)?;
        let (id, cap) = (id.clone(), self.limits.max_sessions);
        self.engine
            .run(move |tx| {
                let expires = tx.now().plus(idle);
                put_capped(tx, Kind::Session, id.as_str(), &value, Some(expires), cap)
            })
            .await
    }

    async fn touch_session(
        &self,
        id: &SessionId,
        idle: Duration,
    ) -> Result<Option<IdentityKey>, StoreError> {
        let id = id.clone();
        self.engine
            .run(move |tx| {
                let Some(entry) = tx.get(Kind::Session, id.as_str())? else {
                    return Ok(None);
                };
                let record: SessionRecord = decode(Kind::Session, &entry.value)?;
                let expires = tx.now().plus(idle);
                tx.put(Kind::Session, id.as_str(), &entry.value, Some(expires))?;
                Ok(Some(record.owner))
            })
            .await
    }

    async fn delete_session(&self, id: &SessionId) -> Result<bool, StoreError> {
        let (state, id) = (session_state_key(id), id.clone());
        self.engine
            .run(move |tx| {
                tx.delete(Kind::Session, &state)?;
                tx.delete(Kind::Session, id.as_str())
            })
            .await
    }

    async fn put_session_state(
        &self,
        id: &SessionId,
        state: &str,
        idle: Duration,
    ) -> Result<(), StoreError> {
        let key = session_state_key(id);
        check_key(Kind::Session, &key, &self.limits)?;
        let record = SessionStateRecord {
            state: state.to_owned(),
        };
        let value = encode(Kind::Session, &record, self.limits.max_record_bytes)?;
        let cap = self.limits.max_sessions;
        self.engine
            .run(move |tx| {
                let expires = tx.now().plus(idle);
                put_capped(tx, Kind::Session, &key, &value, Some(expires), cap)
            })
            .await
    }

    async fn get_session_state(&self, id: &SessionId) -> Result<Option<String>, StoreError> {
        let key = session_state_key(id);
        self.engine
            .run(move |tx| {
                Ok(get_decoded::<SessionStateRecord>(tx, Kind::Session, &key)?
                    .map(|(r, _)| r.state))
            })
            .await
    }

    async fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let encoded = audit::encode_records(records, &self.limits)?;
        let limits = self.limits.clone();
        let next_check = self.audit_age_check.clone();
        self.engine
            .run(move |tx| {
                use std::sync::atomic::Ordering;
                let now = tx.now().as_millis();
                let check_age = now >= next_check.load(Ordering::Relaxed);
                audit::append(tx, &encoded, &limits, check_age)?;
                if check_age {
                    next_check.store(now.saturating_add(AUDIT_AGE_CHECK_MS), Ordering::Relaxed);
                }
                Ok(())
            })
            .await
    }

    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let query = query.clone();
        self.engine.run(move |tx| audit::query(tx, &query)).await
    }

    async fn get_pin(&self, upstream: &str, tool: &str) -> Result<Option<PinRecord>, StoreError> {
        let key = pin_key(upstream, tool);
        self.engine
            .run(move |tx| Ok(get_decoded(tx, Kind::Pin, &key)?.map(|(p, _)| p)))
            .await
    }

    async fn put_pin(&self, pin: &PinRecord) -> Result<(), StoreError> {
        let key = pin_key(&pin.upstream, &pin.tool);
        check_key(Kind::Pin, &key, &self.limits)?;
        let value = encode(Kind::Pin, pin, self.limits.max_record_bytes)?;
        let cap = self.limits.max_pins;
        self.engine
            .run(move |tx| put_capped(tx, Kind::Pin, &key, &value, None, cap))
            .await
    }

    async fn list_pins(&self, upstream: Option<&str>) -> Result<Vec<PinRecord>, StoreError> {
        let upstream = upstream.map(str::to_owned);
        self.engine
            .run(move |tx| audit::list_pins(tx, upstream.as_deref()))
            .await
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.engine.run(|tx| tx.purge()).await
    }
}

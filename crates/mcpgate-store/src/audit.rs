//! The audit trail and tool pins over the transactional engine (memory and
//! SQLite), and [`StoreAudit`], the adapter that lets the
//! [`Auditor`](mcpgate_audit::Auditor) write batches to any [`Store`].
//!
//! Audit records are kept under `r/<unix ms, 20 digits>/<random>`, so that
//! key order is time order and a time range is a key range; a running count
//! sits beside them under `n`, so that the cap costs no count of the table
//! on each append. Retention is applied on append: records past
//! `audit_max_age` are deleted (a key range), then the oldest past
//! `max_audit_records`.

use std::sync::Arc;

use mcpgate_audit::{AppendFuture, AuditQuery, AuditRecord, AuditStore};

use crate::codec::{decode, encode, pin_prefix};
use crate::engine::Txn;
use crate::error::{Kind, StoreError};
use crate::options::Limits;
use crate::records::{PinRecord, random_id};
use crate::store::Store;

/// Where the audit count is kept, outside the records' key range.
const COUNT_KEY: &str = "n";
/// The first key past every record key (`'0'` follows `'/'`).
const RECORDS_END: &str = "r0";

fn record_key_prefix(ms: u64) -> String {
    format!("r/{ms:020}")
}

/// A record, encoded, with the key it will be stored under.
pub(crate) struct Encoded {
    at_ms: u64,
    key: String,
    value: Vec<u8>,
}

/// Encodes records outside the transaction; `TooLarge` refuses the batch.
pub(crate) fn encode_records(
    records: &[AuditRecord],
    limits: &Limits,
) -> Result<Vec<Encoded>, StoreError> {
    records
        .iter()
        .map(|r| {
            let at_ms = r.at.unix_millis();
            Ok(Encoded {
                at_ms,
                key: format!("{}/{}", record_key_prefix(at_ms), random_id()),
                value: encode(Kind::Audit, r, limits.max_record_bytes)?,
            })
        })
        .collect()
}

/// The oldest instant (Unix ms) a record may have to be kept, at `now`.
pub(crate) fn cutoff_ms(now_ms: u64, limits: &Limits) -> u64 {
    now_ms.saturating_sub(u64::try_from(limits.audit_max_age.as_millis()).unwrap_or(u64::MAX))
}

fn keys_in(
    tx: &mut dyn Txn,
    from: &str,
    to: &str,
    at_most: u64,
) -> Result<Vec<String>, StoreError> {
    let mut keys = Vec::new();
    tx.scan(Kind::Audit, from, Some(to), false, &mut |key, _| {
        keys.push(key.to_owned());
        Ok((keys.len() as u64) < at_most)
    })?;
    Ok(keys)
}

fn read_count(tx: &mut dyn Txn) -> Result<u64, StoreError> {
    if let Some(entry) = tx.get(Kind::Audit, COUNT_KEY)? {
        return decode(Kind::Audit, &entry.value);
    }
    // First append (or a count lost): count once.
    let mut n = 0u64;
    tx.scan(Kind::Audit, "r/", Some(RECORDS_END), false, &mut |_, _| {
        n += 1;
        Ok(true)
    })?;
    Ok(n)
}

/// Appends `records`, then applies retention: the cap on count always,
/// the age limit when `check_age` (the caller does that now and then: the
/// look costs a walk of the oldest keys, and nothing ages in a second).
pub(crate) fn append(
    tx: &mut dyn Txn,
    records: &[Encoded],
    limits: &Limits,
    check_age: bool,
) -> Result<(), StoreError> {
    let cutoff = cutoff_ms(tx.now().as_millis(), limits);
    let mut count = read_count(tx)?;
    if check_age {
        for key in keys_in(tx, "r/", &record_key_prefix(cutoff), u64::MAX)? {
            if tx.delete(Kind::Audit, &key)? {
                count = count.saturating_sub(1);
            }
        }
    }
    for record in records.iter().filter(|r| r.at_ms >= cutoff) {
        tx.put(Kind::Audit, &record.key, &record.value, None)?;
        count += 1;
    }
    if count > limits.max_audit_records {
        let excess = count - limits.max_audit_records;
        for key in keys_in(tx, "r/", RECORDS_END, excess)? {
            tx.delete(Kind::Audit, &key)?;
        }
        count = limits.max_audit_records;
    }
    let value = encode(Kind::Audit, &count, limits.max_record_bytes)?;
    tx.put(Kind::Audit, COUNT_KEY, &value, None)
}

/// The records `query` selects, newest first.
pub(crate) fn query(tx: &mut dyn Txn, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
    let from = query
        .since
        .map_or_else(|| "r/".to_owned(), |s| record_key_prefix(s.unix_millis()));
    let to = query.until.map_or_else(
        || RECORDS_END.to_owned(),
        |u| record_key_prefix(u.unix_millis()),
    );
    let limit = query.effective_limit();
    let mut found = Vec::new();
    tx.scan(Kind::Audit, &from, Some(&to), true, &mut |_, value| {
        let record: AuditRecord = decode(Kind::Audit, value)?;
        if query.matches(&record) {
            found.push(record);
        }
        Ok(found.len() < limit)
    })?;
    Ok(found)
}

/// Every pin, or `upstream`'s, ordered by upstream then tool.
pub(crate) fn list_pins(
    tx: &mut dyn Txn,
    upstream: Option<&str>,
) -> Result<Vec<PinRecord>, StoreError> {
    let prefix = upstream.map(pin_prefix).unwrap_or_default();
    let mut pins = Vec::new();
    tx.scan(Kind::Pin, &prefix, None, false, &mut |key, value| {
        if !key.starts_with(&prefix) {
            return Ok(false);
        }
        pins.push(decode::<PinRecord>(Kind::Pin, value)?);
        Ok(true)
    })?;
    sort_pins(&mut pins);
    Ok(pins)
}

pub(crate) fn sort_pins(pins: &mut [PinRecord]) {
    pins.sort_by(|a, b| (&a.upstream, &a.tool).cmp(&(&b.upstream, &b.tool)));
}

/// The [`AuditStore`] the [`Auditor`](mcpgate_audit::Auditor) writes
/// batches to: any [`Store`], through
/// [`append_audit`](Store::append_audit).
#[derive(Debug, Clone)]
pub struct StoreAudit(pub Arc<dyn Store>);

impl AuditStore for StoreAudit {
    fn append<'a>(&'a self, records: &'a [AuditRecord]) -> AppendFuture<'a> {
        Box::pin(async move { Ok(self.0.append_audit(records).await?) })
    }
}

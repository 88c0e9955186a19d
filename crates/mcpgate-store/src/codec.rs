//! How records become bytes and keys, the same on every backend: JSON
//! values within the size limit, caller-chosen keys within theirs.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Kind, StoreError};
use crate::options::Limits;
use crate::records::{ClientId, Subject};

/// A record as JSON bytes; `TooLarge` past `limit`.
pub(crate) fn encode<T: Serialize>(
    what: Kind,
    value: &T,
    limit: usize,
) -> Result<Vec<u8>, StoreError> {
    let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Backend(Box::new(e)))?;
    if bytes.len() > limit {
        return Err(StoreError::TooLarge {
            what,
            size: bytes.len(),
            limit,
        });
    }
    Ok(bytes)
}

/// A record from JSON bytes; `Corrupt` (with no value quoted) if they
/// do not decode.
pub(crate) fn decode<T: DeserializeOwned>(what: Kind, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt(what, &e))
}

/// Refuses a caller-chosen key longer than the limits allow.
pub(crate) fn check_key(what: Kind, key: &str, limits: &Limits) -> Result<(), StoreError> {
    if key.len() > limits.max_key_bytes {
        return Err(StoreError::TooLarge {
            what,
            size: key.len(),
            limit: limits.max_key_bytes,
        });
    }
    Ok(())
}

/// The key of a pin: length-prefixed so that no two pairs collide, and so
/// that one upstream's pins share a prefix ([`pin_prefix`]).
pub(crate) fn pin_key(upstream: &str, tool: &str) -> String {
    format!("{}{tool}", pin_prefix(upstream))
}

/// What every key of `upstream`'s pins starts with.
pub(crate) fn pin_prefix(upstream: &str) -> String {
    format!("{}:{upstream}", upstream.len())
}

/// The key of a consent: length-prefixed so that no two pairs collide.
pub(crate) fn consent_key(subject: &Subject, client: &ClientId) -> String {
    format!("{}:{}{}", subject.as_str().len(), subject, client)
}

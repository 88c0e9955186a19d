//! Tool pins kept in mcpgate's store, so that a changed upstream tool stays
//! hidden across restarts and replicas until an operator accepts it.

use std::sync::Arc;

use mcpgate_resource::pins::{PendingDefinition, PinBackend, PinFuture, PinRecord, PinStoreError};
use mcpgate_store::{PendingPin, Store, Timestamp};

/// [`PinBackend`] over the store.
#[derive(Debug)]
pub struct StorePins(pub Arc<dyn Store>);

fn failed(e: mcpgate_store::StoreError) -> PinStoreError {
    PinStoreError(Box::new(e))
}

fn to_store(r: &PinRecord) -> mcpgate_store::PinRecord {
    let first_seen = Timestamp::from_millis(r.first_seen.saturating_mul(1000));
    mcpgate_store::PinRecord {
        upstream: r.upstream.clone(),
        tool: r.tool.clone(),
        digest: r.digest.clone(),
        definition: r.definition.clone(),
        pending: r.pending.as_ref().map(|p| PendingPin {
            digest: p.digest.clone(),
            definition: p.definition.clone(),
        }),
        first_seen,
        changed_at: r.changed_at.map_or(first_seen, |s| {
            Timestamp::from_millis(s.saturating_mul(1000))
        }),
    }
}

fn from_store(r: mcpgate_store::PinRecord) -> PinRecord {
    let first_seen = r.first_seen.as_millis() / 1000;
    let changed_at = r.changed_at.as_millis() / 1000;
    PinRecord {
        changed_at: (r.changed_at != r.first_seen || r.pending.is_some()).then_some(changed_at),
        upstream: r.upstream,
        tool: r.tool,
        digest: r.digest,
        definition: r.definition,
        pending: r.pending.map(|p| PendingDefinition {
            digest: p.digest,
            definition: p.definition,
        }),
        first_seen,
    }
}

impl PinBackend for StorePins {
    fn get<'a>(&'a self, upstream: &'a str, tool: &'a str) -> PinFuture<'a, Option<PinRecord>> {
        Box::pin(async move {
            let found = self.0.get_pin(upstream, tool).await.map_err(failed)?;
            Ok(found.map(from_store))
        })
    }

    fn put<'a>(&'a self, record: &'a PinRecord) -> PinFuture<'a, ()> {
        Box::pin(async move { self.0.put_pin(&to_store(record)).await.map_err(failed) })
    }

    fn list<'a>(&'a self, upstream: Option<&'a str>) -> PinFuture<'a, Vec<PinRecord>> {
        Box::pin(async move {
            let all = self.0.list_pins(upstream).await.map_err(failed)?;
            Ok(all.into_iter().map(from_store).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_the_round_trip() {
        let record = PinRecord {
            upstream: "mail".into(),
            tool: "send".into(),
            digest: "ab".into(),
            definition: "{}".into(),
            pending: Some(PendingDefinition {
                digest: "cd".into(),
                definition: "{\"x\":1}".into(),
            }),
            first_seen: 1_700_000_000,
            changed_at: Some(1_700_000_100),
        };
        assert_eq!(from_store(to_store(&record)), record);
        let fresh = PinRecord {
            pending: None,
            changed_at: None,
            ..record
        };
        assert_eq!(from_store(to_store(&fresh)), fresh);
    }
}

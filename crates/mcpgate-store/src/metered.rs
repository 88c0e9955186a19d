//! [`Metered`]: a [`Store`] that times every operation of the store it
//! wraps, into `mcpgate_store_operation_duration_seconds` by backend,
//! operation and outcome.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mcpgate_audit::{AuditQuery, AuditRecord};

use crate::error::StoreError;
use crate::records::{
    ClientId, ClientRecord, CodeRecord, CodeState, ConsentRecord, FamilyId, IdentityKey,
    PendingAuthorization, PinRecord, Redemption, RefreshRecord, RefreshState, Rotation, SessionId,
    Subject, TokenHash, UpstreamKey, UpstreamTokens,
};
use crate::store::Store;

/// Times each operation of `inner`; otherwise the same store.
#[derive(Debug)]
pub struct Metered {
    inner: Arc<dyn Store>,
    backend: &'static str,
    // Each (operation, outcome)'s histogram, looked up in the recorder once.
    series: RwLock<HashMap<(&'static str, &'static str), metrics::Histogram>>,
}

impl Metered {
    /// Wraps `inner`, whose backend (`sqlite`, `redis`, `memory`) labels
    /// its series.
    pub fn wrap(inner: Arc<dyn Store>, backend: &'static str) -> Arc<dyn Store> {
        Arc::new(Self {
            inner,
            backend,
            series: RwLock::default(),
        })
    }

    async fn time<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.histogram(op, outcome).record(started.elapsed());
        result
    }

    fn histogram(&self, op: &'static str, outcome: &'static str) -> metrics::Histogram {
        let known = self
            .series
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(op, outcome))
            .cloned();
        known.unwrap_or_else(|| {
            let histogram = metrics::histogram!(
                "mcpgate_store_operation_duration_seconds",
                "backend" => self.backend,
                "op" => op,
                "outcome" => outcome
            );
            self.series
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert((op, outcome), histogram.clone());
            histogram
        })
    }
}

// Every method forwards, timed; written out by a macro so that a method
// added to the trait and not here fails to compile rather than go untimed.
macro_rules! forward {
    ($( fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty; )*) => {
        #[async_trait]
        impl Store for Metered {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                    self.time(stringify!($name), self.inner.$name($($arg),*)).await
                }
            )*
        }
    };
}

forward! {
    fn put_client(&self, client: &ClientRecord) -> ();
    fn get_client(&self, id: &ClientId) -> Option<ClientRecord>;
    fn delete_client(&self, id: &ClientId) -> bool;
    fn bump_counter(&self, key: &str, window: Duration) -> u64;
    fn put_pending(&self, key: &TokenHash, pending: &PendingAuthorization, ttl: Duration) -> ();
    fn take_pending(&self, key: &TokenHash) -> Option<PendingAuthorization>;
    fn put_code(&self, hash: &TokenHash, code: &CodeRecord, ttl: Duration) -> ();
    fn get_code(&self, hash: &TokenHash) -> Option<CodeState>;
    fn redeem_code(&self, hash: &TokenHash, family: &FamilyId) -> Redemption;
    fn put_refresh(&self, hash: &TokenHash, record: &RefreshRecord) -> ();
    fn get_refresh(&self, hash: &TokenHash) -> Option<RefreshState>;
    fn rotate_refresh(&self, old: &TokenHash, new_hash: &TokenHash, new: &RefreshRecord) -> Rotation;
    fn revoke_refresh(&self, hash: &TokenHash) -> Option<FamilyId>;
    fn revoke_family(&self, family: &FamilyId) -> ();
    fn put_consent(&self, subject: &Subject, client: &ClientId, consent: &ConsentRecord) -> ();
    fn get_consent(&self, subject: &Subject, client: &ClientId) -> Option<ConsentRecord>;
    fn delete_consent(&self, subject: &Subject, client: &ClientId) -> bool;
    fn put_upstream(&self, key: &UpstreamKey, tokens: &UpstreamTokens) -> ();
    fn get_upstream(&self, key: &UpstreamKey) -> Option<UpstreamTokens>;
    fn delete_upstream(&self, key: &UpstreamKey) -> bool;
    fn put_session(&self, id: &SessionId, owner: &IdentityKey, idle: Duration) -> ();
    fn touch_session(&self, id: &SessionId, idle: Duration) -> Option<IdentityKey>;
    fn delete_session(&self, id: &SessionId) -> bool;
    fn put_session_state(&self, id: &SessionId, state: &str, idle: Duration) -> ();
    fn get_session_state(&self, id: &SessionId) -> Option<String>;
    fn append_audit(&self, records: &[AuditRecord]) -> ();
    fn query_audit(&self, query: &AuditQuery) -> Vec<AuditRecord>;
    fn get_pin(&self, upstream: &str, tool: &str) -> Option<PinRecord>;
    fn put_pin(&self, pin: &PinRecord) -> ();
    fn list_pins(&self, upstream: Option<&str>) -> Vec<PinRecord>;
    fn purge_expired(&self) -> u64;
    fn ping(&self) -> ();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Options;

    #[tokio::test]
    async fn a_wrapped_store_is_the_same_store() {
        let inner = crate::memory::open_memory(Options::default());
        let store = Metered::wrap(inner.clone(), "memory");
        let id = ClientId::new("c1");
        assert!(store.get_client(&id).await.expect("read").is_none());
        assert_eq!(
            store
                .bump_counter("k", Duration::from_secs(60))
                .await
                .expect("bump"),
            1
        );
        // What goes through the wrapper is in the wrapped store.
        assert_eq!(
            inner
                .bump_counter("k", Duration::from_secs(60))
                .await
                .expect("bump"),
            2
        );
        store.ping().await.expect("ping");
    }
}

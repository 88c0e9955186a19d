//! The in-memory backend: for tests and single-process development. It
//! holds the same limits as the durable backends and forgets everything
//! when dropped.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use crate::engine::{Engine, EngineStore, Entry, Txn, Visit};
use crate::error::{Kind, StoreError};
use crate::options::{Clock, Options};
use crate::records::Timestamp;
use crate::store::Store;

/// Opens an empty in-memory store.
pub fn open_memory(options: Options) -> Arc<dyn Store> {
    let engine = MemoryEngine {
        tables: Mutex::new(HashMap::new()),
        clock: options.clock,
    };
    Arc::new(EngineStore::new(engine, options.limits))
}

/// Ordered per kind, so that audit records read back by time range.
type Tables = HashMap<Kind, BTreeMap<String, Entry>>;

#[derive(Debug)]
struct MemoryEngine {
    tables: Mutex<Tables>,
    clock: Clock,
}

struct MemoryTxn<'a> {
    tables: &'a mut Tables,
    now: Timestamp,
}

impl Txn for MemoryTxn<'_> {
    fn now(&self) -> Timestamp {
        self.now
    }

    fn get(&mut self, kind: Kind, key: &str) -> Result<Option<Entry>, StoreError> {
        let now = self.now;
        Ok(self
            .tables
            .get(&kind)
            .and_then(|table| table.get(key))
            .filter(|entry| entry.live_at(now))
            .cloned())
    }

    fn put(
        &mut self,
        kind: Kind,
        key: &str,
        value: &[u8],
        expires_at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let entry = Entry {
            value: value.to_vec(),
            expires_at,
        };
        self.tables
            .entry(kind)
            .or_default()
            .insert(key.to_owned(), entry);
        Ok(())
    }

    fn delete(&mut self, kind: Kind, key: &str) -> Result<bool, StoreError> {
        let now = self.now;
        Ok(self
            .tables
            .get_mut(&kind)
            .and_then(|table| table.remove(key))
            .is_some_and(|entry| entry.live_at(now)))
    }

    fn has_room(&mut self, kind: Kind, cap: u64) -> Result<bool, StoreError> {
        let now = self.now;
        let table = self.tables.entry(kind).or_default();
        let len = |t: &BTreeMap<String, Entry>| u64::try_from(t.len()).unwrap_or(u64::MAX);
        if len(table) < cap {
            return Ok(true);
        }
        // Sweep only when at the cap, so a put costs O(1) until then.
        table.retain(|_, entry| entry.live_at(now));
        Ok(len(table) < cap)
    }

    fn purge(&mut self) -> Result<u64, StoreError> {
        let now = self.now;
        let mut purged = 0;
        for table in self.tables.values_mut() {
            let before = table.len();
            table.retain(|_, entry| entry.live_at(now));
            purged += before - table.len();
        }
        Ok(u64::try_from(purged).unwrap_or(u64::MAX))
    }

    fn scan(
        &mut self,
        kind: Kind,
        from: &str,
        to: Option<&str>,
        descending: bool,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError> {
        let now = self.now;
        let Some(table) = self.tables.get(&kind) else {
            return Ok(());
        };
        let end = to.map_or(Bound::Unbounded, Bound::Excluded);
        let range = table.range::<str, _>((Bound::Included(from), end));
        let entries: Box<dyn Iterator<Item = (&String, &Entry)>> = if descending {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        for (key, entry) in entries {
            if entry.live_at(now) && !visit(key, &entry.value)? {
                break;
            }
        }
        Ok(())
    }
}

impl Engine for MemoryEngine {
    fn run<R, F>(&self, f: F) -> impl Future<Output = Result<R, StoreError>> + Send
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Txn) -> Result<R, StoreError> + Send + 'static,
    {
        // Runs at once, with no await under the lock: the future is ready.
        let result = match self.tables.lock() {
            Ok(mut tables) => {
                let mut txn = MemoryTxn {
                    tables: &mut tables,
                    now: self.clock.now(),
                };
                f(&mut txn)
            }
            Err(_) => Err(StoreError::Backend(
                "the memory store's lock is poisoned".into(),
            )),
        };
        std::future::ready(result)
    }
}

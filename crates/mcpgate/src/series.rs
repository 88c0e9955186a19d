//! Metric handles made once per label set. The `metrics` macros look a
//! series up in the recorder's registry on every call, with freshly built
//! labels; on the request path that costs more than what is counted, so
//! the handles are kept here and reused.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The handles of a few label sets (a route's methods and statuses, a
/// tool's kinds and decisions): few enough to search in order.
#[derive(Debug)]
pub struct Handles<K, H> {
    known: RwLock<Vec<(K, H)>>,
}

impl<K, H> Default for Handles<K, H> {
    fn default() -> Self {
        Self {
            known: RwLock::default(),
        }
    }
}

impl<K: PartialEq, H: Clone> Handles<K, H> {
    /// The handle for `key`, made by `make` the first time.
    pub fn get(&self, key: K, make: impl FnOnce() -> H) -> H {
        if let Some((_, handle)) = read(&self.known).iter().find(|(k, _)| *k == key) {
            return handle.clone();
        }
        let mut known = write(&self.known);
        if let Some((_, handle)) = known.iter().find(|(k, _)| *k == key) {
            return handle.clone();
        }
        let handle = make();
        known.push((key, handle.clone()));
        handle
    }
}

/// A read lock, poisoned or not: the data behind it is a cache.
pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

/// A write lock, poisoned or not: the data behind it is a cache.
pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_is_made_once_per_key() {
        let handles: Handles<(&str, u16), usize> = Handles::default();
        let mut made = 0;
        let mut make = |n| {
            made += 1;
            n
        };
        assert_eq!(handles.get(("GET", 200), || make(1)), 1);
        assert_eq!(handles.get(("GET", 200), || make(2)), 1);
        assert_eq!(handles.get(("GET", 404), || make(3)), 3);
        assert_eq!(made, 2);
    }
}

//! Signing keys: the shared key ring (`mcpgate-keys`), generated on first
//! start, persisted in the data directory, rotated on command with the old
//! key published for a grace period.

pub use mcpgate_keys::{KeyError, KeyRing, rotate_keys};

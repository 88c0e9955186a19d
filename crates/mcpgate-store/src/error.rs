//! The store's one error type, and the kinds of record it names.
//!
//! No message carries a stored value, a key or a URL: keys are hashes of
//! secrets or user ids, and a Redis URL may hold a password.

use std::error::Error as StdError;
use std::fmt;

/// The kinds of record the store holds; errors name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Registered clients.
    Client,
    /// Rate-limit counters.
    Counter,
    /// Pending authorizations.
    Pending,
    /// Authorization codes.
    Code,
    /// Refresh tokens.
    Refresh,
    /// Refresh-token families.
    Family,
    /// Consents.
    Consent,
    /// Sealed upstream tokens.
    Upstream,
    /// MCP session ownership.
    Session,
    /// Audit records.
    Audit,
    /// Tool pins (gateway mode).
    Pin,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 11] = [
        Kind::Client,
        Kind::Counter,
        Kind::Pending,
        Kind::Code,
        Kind::Refresh,
        Kind::Family,
        Kind::Consent,
        Kind::Upstream,
        Kind::Session,
        Kind::Audit,
        Kind::Pin,
    ];

    /// The short name the backends file records under (a SQLite column, a
    /// Redis key segment). Never change one: stored data is keyed by it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Client => "client",
            Kind::Counter => "counter",
            Kind::Pending => "pending",
            Kind::Code => "code",
            Kind::Refresh => "refresh",
            Kind::Family => "family",
            Kind::Consent => "consent",
            Kind::Upstream => "upstream",
            Kind::Session => "session",
            Kind::Audit => "audit",
            Kind::Pin => "pin",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A boxed backend error, kept as the source.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a store operation failed. A refusal that is part of a contract (a
/// replayed code, a reused refresh token) is not an error: the methods
/// return it as an outcome.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend cannot be reached (connection refused or lost, I/O).
    #[error("the store is unavailable")]
    Unavailable(#[source] BoxError),
    /// The backend refused or failed the operation.
    #[error("the store failed")]
    Backend(#[source] BoxError),
    /// The store holds as many records of this kind as its limits allow.
    #[error("the store holds as many {0} records as it may")]
    Full(Kind),
    /// A record is larger than the store keeps.
    #[error("a {what} record of {size} bytes is over the store's limit of {limit}")]
    TooLarge {
        /// The kind of record.
        what: Kind,
        /// Its encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A stored record did not decode. Only its position is kept: a decoder's
    /// message may quote the stored value.
    #[error("a stored {what} record does not decode (line {line}, column {column})")]
    Corrupt {
        /// The kind of record.
        what: Kind,
        /// Where decoding failed.
        line: usize,
        /// Where decoding failed.
        column: usize,
    },
}

impl StoreError {
    pub(crate) fn corrupt(what: Kind, error: &serde_json::Error) -> Self {
        StoreError::Corrupt {
            what,
            line: error.line(),
            column: error.column(),
        }
    }
}

/// Why [`open`](crate::open) could not open a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL's scheme is none of `memory:`, `sqlite:` and `redis://`.
    #[error("a store URL starts with memory:, sqlite:PATH or redis://HOST:PORT/DB")]
    UnknownScheme,
    /// `sqlite:` with no path.
    #[error("a sqlite: store URL needs a file path")]
    MissingPath,
    /// The Redis URL does not parse (the URL is not repeated: it may hold a password).
    #[error("the redis URL is malformed")]
    BadRedisUrl(#[source] BoxError),
    /// The database file was written by a newer mcpgate.
    #[error("the database's schema version {found} is newer than this mcpgate knows ({known})")]
    NewerSchema {
        /// The version in the file.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// Opening failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

//! Tool pinning: the gateway remembers each upstream tool's definition as
//! first seen, and a definition that changes later (the "rug pull" of the
//! MCP security notes: a tool approved as harmless that later describes
//! itself otherwise) is held back until an operator accepts it.
//!
//! A definition is the tool's `name`, `title`, `description`,
//! `inputSchema`, `outputSchema` and `annotations`, written as canonical
//! JSON (keys sorted at every level, no whitespace); its digest is the hex
//! SHA-256 of that text. [`ToolPins::review`] runs on every upstream
//! `tools/list`: first sight pins, a changed definition is recorded as
//! pending once, and [`PinMode`] says whether a pending tool is hidden
//! (the default), shown with a warning, or not looked at.
//!
//! Records live behind [`PinBackend`]; [`MemoryPins`] is the one for tests
//! and single-process use. What the backend said is memoised, so that an
//! unchanged `tools/list` costs no backend round trip.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The fields of a tool that make up its definition.
const DEFINITION_FIELDS: [&str; 6] = [
    "name",
    "title",
    "description",
    "inputSchema",
    "outputSchema",
    "annotations",
];

/// How long a memoised "pending" verdict is trusted before the backend is
/// asked again, so that an acceptance made at another replica shows here.
const PENDING_RECHECK: Duration = Duration::from_secs(10);

/// What to do with a tool whose definition changed since it was pinned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PinMode {
    /// No pinning: nothing is recorded or hidden.
    Off,
    /// Record and report the change, keep showing the tool.
    Warn,
    /// Record and report the change, hide the tool until an operator
    /// accepts it (the default).
    #[default]
    Enforce,
}

/// A changed definition awaiting an operator's acceptance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDefinition {
    /// Hex SHA-256 of [`Self::definition`].
    pub digest: String,
    /// The canonical JSON of the changed definition.
    pub definition: String,
}

/// What is remembered of one upstream tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRecord {
    /// The upstream it comes from, as the gateway names it.
    pub upstream: String,
    /// The tool's name at the upstream.
    pub tool: String,
    /// Hex SHA-256 of [`Self::definition`]: the definition in force.
    pub digest: String,
    /// The canonical JSON of the pinned definition.
    pub definition: String,
    /// The latest changed definition not yet accepted, if any.
    pub pending: Option<PendingDefinition>,
    /// When the tool was first seen, seconds since the epoch.
    pub first_seen: u64,
    /// When the pending change was recorded, or the last one accepted;
    /// `None` while the tool never changed.
    pub changed_at: Option<u64>,
}

/// The pin store failed. The message names no tool definition.
#[derive(Debug, thiserror::Error)]
#[error("the tool pin store failed: {0}")]
pub struct PinStoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// A boxed future, so that backends can be held as trait objects.
pub type PinFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PinStoreError>> + Send + 'a>>;

/// Where pin records live. Contract: `put` replaces the record of
/// `(upstream, tool)` whole (an upsert); `get` returns what the last `put`
/// stored; `list` returns records ordered by upstream, then tool.
pub trait PinBackend: Send + Sync + fmt::Debug {
    /// The record of one tool, if it was ever seen.
    fn get<'a>(&'a self, upstream: &'a str, tool: &'a str) -> PinFuture<'a, Option<PinRecord>>;
    /// Stores a record: at first sight, when a change is recorded, when one
    /// is accepted.
    fn put<'a>(&'a self, record: &'a PinRecord) -> PinFuture<'a, ()>;
    /// Every record, or one upstream's.
    fn list<'a>(&'a self, upstream: Option<&'a str>) -> PinFuture<'a, Vec<PinRecord>>;
}

/// Records in this process's memory.
#[derive(Debug, Default)]
pub struct MemoryPins {
    records: Mutex<BTreeMap<(String, String), PinRecord>>,
}

impl MemoryPins {
    fn records(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), PinRecord>> {
        // A panic elsewhere leaves the map whole: every write is one insert.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl PinBackend for MemoryPins {
    fn get<'a>(&'a self, upstream: &'a str, tool: &'a str) -> PinFuture<'a, Option<PinRecord>> {
        let found = self
            .records()
            .get(&(upstream.to_owned(), tool.to_owned()))
            .cloned();
        Box::pin(async move { Ok(found) })
    }

    fn put<'a>(&'a self, record: &'a PinRecord) -> PinFuture<'a, ()> {
        self.records().insert(
            (record.upstream.clone(), record.tool.clone()),
            record.clone(),
        );
        Box::pin(async { Ok(()) })
    }

    fn list<'a>(&'a self, upstream: Option<&'a str>) -> PinFuture<'a, Vec<PinRecord>> {
        let all = self
            .records()
            .values()
            .filter(|r| upstream.is_none_or(|u| r.upstream == u))
            .cloned()
            .collect();
        Box::pin(async move { Ok(all) })
    }
}

/// A tool whose definition changed, first noticed in this review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinChange {
    /// The tool's name.
    pub tool: String,
    /// The digest pinned.
    pub old_digest: String,
    /// The digest the upstream now shows.
    pub new_digest: String,
}

/// What a review of one `tools/list` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinReview {
    /// Names to leave out of the list shown to clients (and to refuse in
    /// `tools/call`): changed and not accepted, under [`PinMode::Enforce`].
    pub hidden: Vec<String>,
    /// Changes seen for the first time: each is reported once, in the review
    /// that recorded it.
    pub changed: Vec<PinChange>,
    /// Names whose state the backend could not tell; hidden too under
    /// [`PinMode::Enforce`] (pinning fails closed).
    pub unavailable: Vec<String>,
}

impl PinReview {
    /// Whether `tool` is to be left out.
    pub fn is_hidden(&self, tool: &str) -> bool {
        self.hidden.iter().any(|h| h == tool)
    }
}

// What this process last learnt from the backend about one tool.
#[derive(Debug, Clone)]
struct Known {
    pinned: String,
    pending: Option<(String, Instant)>,
}

/// Tool pinning over a backend.
#[derive(Debug)]
pub struct ToolPins {
    backend: Arc<dyn PinBackend>,
    mode: PinMode,
    // Upstream, then tool: looked up by `&str`, with no key to allocate.
    known: Mutex<HashMap<String, HashMap<String, Known>>>,
}

impl ToolPins {
    /// Pinning in `mode`, records in `backend`.
    pub fn new(backend: Arc<dyn PinBackend>, mode: PinMode) -> Self {
        Self {
            backend,
            mode,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The mode in force.
    pub fn mode(&self) -> PinMode {
        self.mode
    }

    /// The records, for an operator's listing.
    pub async fn list(&self, upstream: Option<&str>) -> Result<Vec<PinRecord>, PinStoreError> {
        self.backend.list(upstream).await
    }

    /// Reviews the tools of one upstream `tools/list` (the `tools` array's
    /// entries): pins those seen for the first time, records changed
    /// definitions as pending, and says which to hide. Entries without a
    /// string `name` are not reviewed.
    pub async fn review(&self, upstream: &str, tools: &[Value]) -> PinReview {
        let mut review = PinReview::default();
        if self.mode == PinMode::Off {
            return review;
        }
        for tool in tools {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                continue;
            };
            let (digest, definition) = digest_of(tool);
            let hide = match self.check(upstream, name, &digest) {
                Some(hide) => hide,
                None => match self
                    .consult(upstream, name, digest, definition, &mut review)
                    .await
                {
                    Ok(hide) => hide,
                    Err(e) => {
                        tracing::error!(upstream, tool = name, error = %e, "tool pinning cannot tell whether this tool changed");
                        review.unavailable.push(name.to_owned());
                        true
                    }
                },
            };
            if hide && self.mode == PinMode::Enforce {
                review.hidden.push(name.to_owned());
            }
        }
        review
    }

    /// Accepts the pending definition of `tool`: it becomes the pinned one.
    /// `false` when nothing was pending.
    pub async fn accept(&self, upstream: &str, tool: &str) -> Result<bool, PinStoreError> {
        self.accept_digest(upstream, tool, None).await
    }

    /// [`Self::accept`], but only when the pending definition is still the
    /// one with `expected` digest, so that an operator accepts what they
    /// looked at and not a later change. `false` when nothing (or another
    /// definition) is pending.
    pub async fn accept_digest(
        &self,
        upstream: &str,
        tool: &str,
        expected: Option<&str>,
    ) -> Result<bool, PinStoreError> {
        let Some(mut record) = self.backend.get(upstream, tool).await? else {
            return Ok(false);
        };
        let Some(pending) = record.pending.take() else {
            return Ok(false);
        };
        if expected.is_some_and(|d| d != pending.digest) {
            return Ok(false);
        }
        tracing::info!(upstream, tool, digest = %pending.digest, "tool definition accepted");
        record.digest = pending.digest;
        record.definition = pending.definition;
        record.changed_at = Some(unix_now());
        self.backend.put(&record).await?;
        self.remember(&record);
        Ok(true)
    }

    // The memoised verdict (hide or not), if the memo can tell.
    fn check(&self, upstream: &str, tool: &str, digest: &str) -> Option<bool> {
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let k = known.get(upstream)?.get(tool)?;
        if k.pinned == digest {
            return Some(false);
        }
        match &k.pending {
            Some((pending, at)) if pending == digest && at.elapsed() < PENDING_RECHECK => {
                Some(true)
            }
            _ => None,
        }
    }

    // Asks the backend and records what is new; whether to hide.
    async fn consult(
        &self,
        upstream: &str,
        tool: &str,
        digest: String,
        definition: String,
        review: &mut PinReview,
    ) -> Result<bool, PinStoreError> {
        let Some(mut record) = self.backend.get(upstream, tool).await? else {
            let record = PinRecord {
                upstream: upstream.to_owned(),
                tool: tool.to_owned(),
                digest,
                definition,
                pending: None,
                first_seen: unix_now(),
                changed_at: None,
            };
            self.backend.put(&record).await?;
            self.remember(&record);
            return Ok(false);
        };
        if record.digest == digest {
            self.remember(&record);
            return Ok(false);
        }
        let already = record.pending.as_ref().is_some_and(|p| p.digest == digest);
        if !already {
            tracing::warn!(
                upstream,
                tool,
                pinned = %record.digest,
                changed = %digest,
                mode = ?self.mode,
                "an upstream tool's definition changed since it was pinned; an operator must accept it"
            );
            review.changed.push(PinChange {
                tool: tool.to_owned(),
                old_digest: record.digest.clone(),
                new_digest: digest.clone(),
            });
            record.pending = Some(PendingDefinition { digest, definition });
            record.changed_at = Some(unix_now());
            self.backend.put(&record).await?;
        }
        self.remember(&record);
        Ok(true)
    }

    fn remember(&self, record: &PinRecord) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known.entry(record.upstream.clone()).or_default().insert(
            record.tool.clone(),
            Known {
                pinned: record.digest.clone(),
                pending: record
                    .pending
                    .as_ref()
                    .map(|p| (p.digest.clone(), Instant::now())),
            },
        );
    }
}

/// The digest (hex SHA-256) and canonical JSON of a tool's definition.
pub fn digest_of(tool: &Value) -> (String, String) {
    let mut definition = String::new();
    definition.push('{');
    let mut fields: Vec<(&str, &Value)> = DEFINITION_FIELDS
        .iter()
        .filter_map(|f| tool.get(*f).map(|v| (*f, v)))
        .collect();
    fields.sort_unstable_by_key(|(k, _)| *k);
    for (i, (key, value)) in fields.into_iter().enumerate() {
        if i > 0 {
            definition.push(',');
        }
        write_string(&mut definition, key);
        definition.push(':');
        write_canonical(&mut definition, value);
    }
    definition.push('}');
    let digest = Sha256::digest(definition.as_bytes()).iter().fold(
        String::with_capacity(64),
        |mut hex, b| {
            use fmt::Write;
            let _ = write!(hex, "{b:02x}");
            hex
        },
    );
    (digest, definition)
}

// Keys sorted at every level, whatever order the upstream sent and whether
// serde_json keeps insertion order (its `preserve_order` feature is
// workspace-wide once any crate turns it on), so equal definitions give
// equal digests.
fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by_key(|(k, _)| *k);
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_canonical(out, v);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, v);
            }
            out.push(']');
        }
        // Scalars print the same whatever the map type.
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push_str(&Value::from(s).to_string());
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
#[path = "pins_tests.rs"]
mod tests;

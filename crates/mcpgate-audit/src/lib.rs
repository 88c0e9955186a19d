//! The audit trail of mcpgate: one structured record per decision (a tool
//! call allowed or denied, a sign-in, a token issued or refused), written
//! as JSON lines and to the store.
//!
//! # Contents
//!
//! - [`AuditRecord`] with [`AuditEvent`], [`Decision`], [`UpstreamOutcome`]:
//!   what one record holds, as stable snake_case JSON; [`UtcTime`] its
//!   RFC 3339 timestamp.
//! - [`AuditSink`]: what the request path records into, without blocking.
//! - [`Auditor`]: the real sink, a bounded queue to one writer task that
//!   appends to a 0600 JSON-lines file and hands batches to an
//!   [`AuditStore`]; [`Auditor::shutdown`] drains it.
//! - [`AuditQuery`]: the filters `mcpgate audit` reads records back with.
//!
//! # Security
//!
//! - No record field can hold a token: see [`record`] for why, and for the
//!   auditor's second line (JWT-shaped text redacted, sizes bounded).
//! - Arguments are recorded only for tools named in
//!   [`AuditorOptions::arguments_for`]; they may hold personal data.
//! - A full queue drops records rather than slow a call; every drop is
//!   counted ([`Auditor::dropped`]) and logged at error level.
//!
//! # Example
//!
//! ```
//! use mcpgate_audit::{AuditEvent, AuditRecord, AuditSink, Auditor, AuditorOptions, Decision};
//!
//! # tokio::runtime::Runtime::new().expect("rt").block_on(async {
//! let dir = std::env::temp_dir().join(format!("audit-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).expect("dir");
//! let options = AuditorOptions {
//!     file: Some(dir.join("audit.jsonl")),
//!     ..AuditorOptions::default()
//! };
//! let auditor = Auditor::start(options, None).await.expect("start");
//! let mut record = AuditRecord::new(AuditEvent::ToolCall, Decision::Deny);
//! record.tool = Some("delete_file".into());
//! record.reason = Some("the tool needs the role Files.Admin".into());
//! auditor.record(record); // returns at once
//! auditor.shutdown().await; // everything queued is written
//! # std::fs::remove_dir_all(&dir).expect("clean");
//! # });
//! ```

pub mod record;
pub mod scrub;
pub mod sink;
pub mod time;

pub use record::{AuditEvent, AuditQuery, AuditRecord, Decision, UnknownDecision, UpstreamOutcome};
pub use scrub::{ArgumentPolicy, redact_jwts};
pub use sink::{
    AppendFuture, AuditError, AuditSink, AuditStore, Auditor, AuditorOptions, BoxError,
};
pub use time::{TimeError, UtcTime};

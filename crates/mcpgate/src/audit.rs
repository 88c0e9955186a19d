//! The audit trail's wiring: the `[audit]` table and the [`Auditor`] that
//! `serve` runs, writing JSON lines to a file and (by default) the store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use mcpgate_audit::{
    ArgumentPolicy, AuditEvent, AuditRecord, AuditSink, AuditStore, Auditor, AuditorOptions,
    Decision, UpstreamOutcome,
};
use mcpgate_store::{Store, StoreAudit};
use serde::Deserialize;

use crate::config::RawConfig;
use crate::series::{Handles, read, write};

/// The JSON-lines file's name in the data directory.
pub const DEFAULT_FILE: &str = "audit.jsonl";

/// `[audit]`: where the audit trail goes. Every tool call (allowed or
/// denied), sign-in, token issued and token refused is one record.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAudit {
    /// The JSON-lines file (created 0600, appended to). Default
    /// `audit.jsonl` in the data directory.
    pub file: Option<PathBuf>,
    /// Whether records also go to the store, where `mcpgate audit` reads
    /// them. Default true.
    pub store: Option<bool>,
    /// Tools whose call arguments are recorded: names or `*` / `?` globs.
    /// Default none: arguments may hold personal data.
    pub arguments_for: Vec<String>,
    /// Records the store keeps; the oldest go first. Default 1,000,000.
    pub max_records: Option<u64>,
    /// Days the store keeps a record. Default 90.
    pub max_age_days: Option<u64>,
}

impl RawAudit {
    /// The JSON-lines file, defaults filled in.
    pub fn file(&self, data_dir: &Path) -> PathBuf {
        self.file
            .clone()
            .unwrap_or_else(|| data_dir.join(DEFAULT_FILE))
    }

    /// Whether records go to the store.
    pub fn to_store(&self) -> bool {
        self.store.unwrap_or(true)
    }
}

/// Starts the auditor `[audit]` describes: the file (its directory created
/// 0700 if missing) and, unless `store = false`, `store`. Call
/// [`Auditor::shutdown`] when the server stops, so that nothing queued is
/// lost.
pub async fn start(
    raw: &RawConfig,
    data_dir: &Path,
    store: Option<Arc<dyn Store>>,
) -> anyhow::Result<Arc<Auditor>> {
    let file = raw.audit.file(data_dir);
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let store = store
        .filter(|_| raw.audit.to_store())
        .map(|s| Arc::new(StoreAudit(s)) as Arc<dyn AuditStore>);
    let options = AuditorOptions {
        file: Some(file),
        arguments_for: ArgumentPolicy::new(raw.audit.arguments_for.iter().cloned()),
        ..AuditorOptions::default()
    };
    let auditor = Auditor::start(options, store).await?;
    Ok(auditor)
}

/// Distinct tool names a metric series is kept for; past it, `other`: a
/// caller may ask for any name, and each would be a series forever.
const MAX_TOOL_LABELS: usize = 256;

/// Sees every decision before the [`Auditor`] queues it: one log line in
/// the request's span (so with its request id), the decision on that span
/// for traces, and the counters and latencies derived from it.
#[derive(Debug)]
pub struct Observed {
    inner: Arc<Auditor>,
    // Each tool's call counters, made once: a call then costs an atomic
    // add, not a registry lookup with freshly allocated labels.
    tools: RwLock<HashMap<Box<str>, Arc<ToolSeries>>>,
    other: Arc<ToolSeries>,
}

/// The `mcpgate_tool_calls_total` counters of one tool label.
#[derive(Debug)]
struct ToolSeries {
    label: String,
    counters: Handles<(AuditEvent, Decision), metrics::Counter>,
}

impl ToolSeries {
    fn new(label: &str) -> Arc<Self> {
        Arc::new(Self {
            label: label.to_owned(),
            counters: Handles::default(),
        })
    }

    fn count(&self, event: AuditEvent, decision: Decision) {
        self.counters
            .get((event, decision), || {
                metrics::counter!(
                    "mcpgate_tool_calls_total",
                    "kind" => event.as_str(),
                    "tool" => self.label.clone(),
                    "decision" => decision.as_str()
                )
            })
            .increment(1);
    }
}

impl Observed {
    /// Observes what goes to `inner`.
    pub fn new(inner: Arc<Auditor>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            tools: RwLock::default(),
            other: ToolSeries::new("other"),
        })
    }

    // The tool's own series while few are known; `other` past the bound.
    fn tool_series(&self, tool: &str) -> Arc<ToolSeries> {
        if let Some(series) = read(&self.tools).get(tool) {
            return series.clone();
        }
        let mut tools = write(&self.tools);
        if let Some(series) = tools.get(tool) {
            return series.clone();
        }
        if tools.len() >= MAX_TOOL_LABELS {
            return self.other.clone();
        }
        let series = ToolSeries::new(tool);
        tools.insert(tool.into(), series.clone());
        series
    }

    fn observe(&self, r: &AuditRecord) {
        let decision = r.decision.as_str();
        tracing::info!(
            target: "mcpgate::decision",
            event = r.event.as_str(),
            decision,
            tool = r.tool.as_deref().unwrap_or(""),
            upstream = r.upstream.as_deref().unwrap_or(""),
            oid = r.user_oid.as_deref().unwrap_or(""),
            client_app = r.client_app.as_deref().unwrap_or(""),
            grant_type = r.grant_type.as_deref().unwrap_or(""),
            reason = r.reason.as_deref().unwrap_or(""),
            outcome = %r.upstream_outcome.map(|o| o.to_string()).unwrap_or_default(),
            latency_ms = r.latency_ms.unwrap_or_default(),
            "decision"
        );
        match r.event {
            AuditEvent::ToolCall | AuditEvent::ResourceRead | AuditEvent::PromptGet => {
                let span = tracing::Span::current();
                span.record("decision", decision);
                if let Some(tool) = &r.tool {
                    span.record("mcp.tool", tool.as_str());
                }
                self.tool_series(r.tool.as_deref().unwrap_or(""))
                    .count(r.event, r.decision);
                if let Some(outcome) = r.upstream_outcome {
                    let upstream = r.upstream.clone().unwrap_or_default();
                    metrics::counter!(
                        "mcpgate_upstream_calls_total",
                        "upstream" => upstream.clone(),
                        "outcome" => outcome_label(outcome)
                    )
                    .increment(1);
                    if let Some(ms) = r.latency_ms {
                        metrics::histogram!(
                            "mcpgate_upstream_call_duration_seconds",
                            "upstream" => upstream
                        )
                        .record(ms / 1000.0);
                    }
                }
            }
            AuditEvent::TokenIssued | AuditEvent::TokenRefused => {
                let outcome = if r.event == AuditEvent::TokenIssued {
                    "issued"
                } else {
                    "refused"
                };
                // At /token the reason is the OAuth error code: a short,
                // bounded set.
                let error = match r.event {
                    AuditEvent::TokenRefused => r
                        .reason
                        .as_deref()
                        .filter(|e| {
                            e.len() <= 40 && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                        })
                        .unwrap_or("other")
                        .to_owned(),
                    _ => String::new(),
                };
                metrics::counter!(
                    "mcpgate_broker_grants_total",
                    "grant_type" => grant_label(r.grant_type.as_deref()),
                    "outcome" => outcome,
                    "error" => error
                )
                .increment(1);
            }
            AuditEvent::SignIn => {
                metrics::counter!("mcpgate_broker_sign_ins_total", "decision" => decision)
                    .increment(1);
            }
            _ => {}
        }
    }
}

fn outcome_label(outcome: UpstreamOutcome) -> &'static str {
    match outcome {
        UpstreamOutcome::Ok => "ok",
        UpstreamOutcome::ToolError => "tool_error",
        UpstreamOutcome::RpcError { .. } => "rpc_error",
        UpstreamOutcome::Timeout => "timeout",
        UpstreamOutcome::Unavailable => "unavailable",
    }
}

// The grant types OAuth defines, and `other`: the field is the client's.
fn grant_label(grant: Option<&str>) -> &'static str {
    match grant {
        Some("authorization_code") => "authorization_code",
        Some("refresh_token") => "refresh_token",
        Some("client_credentials") => "client_credentials",
        Some("urn:ietf:params:oauth:grant-type:device_code") => "device_code",
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => "jwt_bearer",
        Some("urn:ietf:params:oauth:grant-type:token-exchange") => "token_exchange",
        None => "none",
        Some(_) => "other",
    }
}

impl AuditSink for Observed {
    fn record(&self, record: AuditRecord) {
        self.observe(&record);
        self.inner.record(record);
    }

    fn wants_arguments(&self, tool: &str) -> bool {
        self.inner.wants_arguments(tool)
    }
}

#[cfg(test)]
mod tests {
    use mcpgate_audit::{AuditEvent, AuditQuery, AuditRecord, AuditSink as _, Decision};

    use super::*;

    #[test]
    fn the_audit_table_loads_with_its_defaults_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("mcpgate.toml");
        std::fs::write(&file, "").expect("write");
        let raw = RawConfig::load(Some(&file)).expect("empty config");
        assert_eq!(raw.audit.file(Path::new("/d")), Path::new("/d/audit.jsonl"));
        assert!(raw.audit.to_store());
        assert!(raw.audit.arguments_for.is_empty());

        std::fs::write(
            &file,
            "[audit]\nfile = \"/var/log/a.jsonl\"\nstore = false\narguments_for = [\"search_*\"]\n",
        )
        .expect("write");
        let raw = RawConfig::load(Some(&file)).expect("config");
        assert_eq!(
            raw.audit.file(Path::new("/d")),
            Path::new("/var/log/a.jsonl")
        );
        assert!(!raw.audit.to_store());
        assert_eq!(raw.audit.arguments_for, ["search_*"]);

        std::fs::write(&file, "[audit]\narguments = [\"x\"]\n").expect("write");
        assert!(
            RawConfig::load(Some(&file)).is_err(),
            "a misspelt key is refused"
        );
    }

    #[tokio::test]
    async fn the_auditor_writes_the_file_and_the_store_as_configured() {
        let dir = tempfile::tempdir().expect("dir");
        let data_dir = dir.path().join("data");
        let mut raw = RawConfig::default();
        raw.audit.arguments_for = vec!["write_*".into()];
        let store = mcpgate_store::open("memory:", mcpgate_store::Options::default())
            .await
            .expect("store");
        let auditor = start(&raw, &data_dir, Some(store.clone()))
            .await
            .expect("start");
        let mut r = AuditRecord::new(AuditEvent::ToolCall, Decision::Allow);
        r.tool = Some("write_file".into());
        r.arguments = Some(serde_json::json!({"path": "/tmp/x"}));
        assert!(auditor.wants_arguments("write_file"));
        assert!(!auditor.wants_arguments("read_file"));
        auditor.record(r);
        auditor.shutdown().await;
        let text = std::fs::read_to_string(data_dir.join(DEFAULT_FILE)).expect("file");
        assert_eq!(text.lines().count(), 1);
        let stored = store
            .query_audit(&AuditQuery::default())
            .await
            .expect("query");
        assert_eq!(stored.len(), 1);
        assert!(stored[0].arguments.is_some());

        // store = false: the file only.
        raw.audit.store = Some(false);
        let auditor = start(&raw, &data_dir, Some(store.clone()))
            .await
            .expect("start");
        auditor.record(AuditRecord::new(AuditEvent::SignIn, Decision::Allow));
        auditor.shutdown().await;
        let text = std::fs::read_to_string(data_dir.join(DEFAULT_FILE)).expect("file");
        assert_eq!(text.lines().count(), 2);
        let stored = store
            .query_audit(&AuditQuery::default())
            .await
            .expect("query");
        assert_eq!(stored.len(), 1);
    }

    /// A counter: its name, labels and value.
    type Counted = (String, Vec<(String, String)>, u64);

    /// The counters a sequence of decisions leaves, by name and labels.
    fn counted(records: Vec<AuditRecord>) -> Vec<Counted> {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("dir");
        runtime.block_on(async {
            let auditor = start(&RawConfig::default(), dir.path(), None)
                .await
                .expect("start");
            let observed = Observed::new(auditor.clone());
            metrics::with_local_recorder(&recorder, || {
                for r in records {
                    observed.record(r);
                }
            });
            auditor.shutdown().await;
        });
        let mut counters: Vec<_> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| match value {
                DebugValue::Counter(n) => {
                    let key = key.key();
                    let labels = key
                        .labels()
                        .map(|l| (l.key().to_owned(), l.value().to_owned()))
                        .collect();
                    Some((key.name().to_owned(), labels, n))
                }
                _ => None,
            })
            .collect();
        counters.sort();
        counters
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn broker_grants_are_counted_issued_and_refused_by_error() {
        let mut issued = AuditRecord::new(AuditEvent::TokenIssued, Decision::Allow);
        issued.grant_type = Some("authorization_code".into());
        let mut refused = AuditRecord::new(AuditEvent::TokenRefused, Decision::Deny);
        refused.grant_type = Some("refresh_token".into());
        refused.reason = Some("invalid_grant".into());
        let mut odd = AuditRecord::new(AuditEvent::TokenRefused, Decision::Deny);
        odd.grant_type = Some("made-up grant".into());
        odd.reason = Some("a sentence, not a code".into());
        let counters = counted(vec![issued.clone(), issued, refused, odd]);
        let name = "mcpgate_broker_grants_total".to_owned();
        assert_eq!(
            counters,
            vec![
                (
                    name.clone(),
                    labels(&[
                        ("grant_type", "authorization_code"),
                        ("outcome", "issued"),
                        ("error", "")
                    ]),
                    2
                ),
                (
                    name.clone(),
                    labels(&[
                        ("grant_type", "other"),
                        ("outcome", "refused"),
                        ("error", "other")
                    ]),
                    1
                ),
                (
                    name,
                    labels(&[
                        ("grant_type", "refresh_token"),
                        ("outcome", "refused"),
                        ("error", "invalid_grant")
                    ]),
                    1
                ),
            ]
        );
    }

    #[test]
    fn tool_labels_are_bounded() {
        let records = (0..MAX_TOOL_LABELS + 10)
            .map(|n| {
                let mut r = AuditRecord::new(AuditEvent::ToolCall, Decision::Deny);
                r.tool = Some(format!("tool-{n}"));
                r
            })
            .collect();
        let counters = counted(records);
        assert_eq!(counters.len(), MAX_TOOL_LABELS + 1, "256 names and `other`");
        let other = counters
            .iter()
            .find(|(_, l, _)| l.contains(&("tool".to_owned(), "other".to_owned())))
            .expect("an `other` series");
        assert_eq!(other.2, 10);
    }
}

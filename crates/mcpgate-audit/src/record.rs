//! [`AuditRecord`]: one decision, as one JSON object; [`AuditQuery`]: which
//! records to read back.
//!
//! # No token fits in a record
//!
//! A record has no field for a credential: its fields are identifiers
//! (object id, UPN, tenant, client id, request id), names (upstream, tool,
//! grant type), a decision, one sentence of reason, a latency and an
//! upstream outcome. Tool arguments, the one free-form value, are absent
//! unless the operator opted in for that tool, and the [`Auditor`]
//! drops them otherwise. As a second line, the auditor replaces anything
//! shaped like a JWT in every text field (and in opted-in arguments) with
//! `[redacted]` and cuts long texts, before a record is written anywhere.
//!
//! [`Auditor`]: crate::Auditor

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::UtcTime;

/// What happened. New kinds are added at the end; a reader that meets a
/// kind it does not know reads it as [`AuditEvent::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditEvent {
    /// An MCP `tools/call`.
    ToolCall,
    /// An MCP `resources/read`.
    ResourceRead,
    /// An MCP `prompts/get`.
    PromptGet,
    /// A user completed a sign-in at the broker.
    SignIn,
    /// The broker issued tokens (a grant).
    TokenIssued,
    /// The broker refused a token request.
    TokenRefused,
    /// An upstream tool's definition changed against its pin.
    PinChanged,
    /// A kind written by a newer mcpgate.
    #[serde(other)]
    Unknown,
}

impl AuditEvent {
    /// The name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::ToolCall => "tool_call",
            AuditEvent::ResourceRead => "resource_read",
            AuditEvent::PromptGet => "prompt_get",
            AuditEvent::SignIn => "sign_in",
            AuditEvent::TokenIssued => "token_issued",
            AuditEvent::TokenRefused => "token_refused",
            AuditEvent::PinChanged => "pin_changed",
            AuditEvent::Unknown => "unknown",
        }
    }
}

/// Whether the request went ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// It did.
    Allow,
    /// It was refused.
    Deny,
}

impl Decision {
    /// `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

impl std::str::FromStr for Decision {
    type Err = UnknownDecision;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(Decision::Allow),
            "deny" => Ok(Decision::Deny),
            _ => Err(UnknownDecision),
        }
    }
}

/// A decision other than `allow` or `deny`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a decision is `allow` or `deny`")]
pub struct UnknownDecision;

/// What the upstream MCP server made of a call that went ahead. JSON:
/// `"ok"`, `"tool_error"`, `{"rpc_error":{"code":-32601}}`, `"timeout"`,
/// `"unavailable"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamOutcome {
    /// A result.
    Ok,
    /// A result with `isError: true`.
    ToolError,
    /// A JSON-RPC error.
    RpcError {
        /// Its code.
        code: i64,
    },
    /// No answer in time.
    Timeout,
    /// The upstream could not be reached (or its process is gone).
    Unavailable,
}

impl std::fmt::Display for UpstreamOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamOutcome::Ok => f.write_str("ok"),
            UpstreamOutcome::ToolError => f.write_str("tool_error"),
            UpstreamOutcome::RpcError { code } => write!(f, "rpc_error {code}"),
            UpstreamOutcome::Timeout => f.write_str("timeout"),
            UpstreamOutcome::Unavailable => f.write_str("unavailable"),
        }
    }
}

/// One decision: a tool call allowed or denied, a sign-in, a token issued
/// or refused. Build it with [`AuditRecord::new`] and set the fields that
/// apply; absent fields are left out of the JSON. See the module docs for
/// why no field can carry a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditRecord {
    /// When it was decided.
    pub at: UtcTime,
    /// What happened.
    pub event: AuditEvent,
    /// Allowed or refused.
    pub decision: Decision,
    /// The request's id (the JSON-RPC id, or one mcpgate made), to match a
    /// record with logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The user's object id (`oid`), else the token's subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_oid: Option<String>,
    /// The user's sign-in name (`preferred_username` / `upn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_upn: Option<String>,
    /// The user's tenant (`tid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The client application (`azp` / `appid`, or the broker's client id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_app: Option<String>,
    /// Which upstream MCP server (gateway mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The tool called (or the resource URI read, or the prompt got).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The OAuth grant type, for `token_issued` and `token_refused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_type: Option<String>,
    /// Why, in one sentence (for a refusal at `/token`, the OAuth error code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long the decision and the call took, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// What the upstream made of a call that went ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_outcome: Option<UpstreamOutcome>,
    /// The call's arguments: only for tools the operator opted in for
    /// (`[audit] arguments_for`); the [`Auditor`](crate::Auditor) drops
    /// them for every other tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<serde_json::Value>,
}

impl AuditRecord {
    /// A record of `event` decided now, every optional field empty.
    pub fn new(event: AuditEvent, decision: Decision) -> Self {
        Self::at(UtcTime::now(), event, decision)
    }

    /// A record of `event` decided at `at`, every optional field empty.
    pub fn at(at: UtcTime, event: AuditEvent, decision: Decision) -> Self {
        Self {
            at,
            event,
            decision,
            request_id: None,
            user_oid: None,
            user_upn: None,
            tenant: None,
            client_app: None,
            upstream: None,
            tool: None,
            grant_type: None,
            reason: None,
            latency_ms: None,
            upstream_outcome: None,
            arguments: None,
        }
    }

    /// Sets the latency from a measured duration.
    pub fn set_latency(&mut self, latency: Duration) {
        // Microsecond resolution: calls on the hot path take well under 1 ms.
        self.latency_ms = Some((latency.as_micros() as f64) / 1000.0);
    }
}

/// Which records to read back, newest first. Every filter set must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditQuery {
    /// The user's object id, or their UPN (case-insensitive).
    pub user: Option<String>,
    /// The tool's (resource's, prompt's) exact name.
    pub tool: Option<String>,
    /// Only allowed, or only denied.
    pub decision: Option<Decision>,
    /// Records at or after this instant.
    pub since: Option<UtcTime>,
    /// Records strictly before this instant.
    pub until: Option<UtcTime>,
    /// At most this many; 0 means [`AuditQuery::DEFAULT_LIMIT`], and
    /// anything above [`AuditQuery::MAX_LIMIT`] reads as that.
    pub limit: usize,
}

impl AuditQuery {
    /// The limit when none is given.
    pub const DEFAULT_LIMIT: usize = 100;
    /// The most records one query returns.
    pub const MAX_LIMIT: usize = 10_000;

    /// The number of records to return at most.
    pub fn effective_limit(&self) -> usize {
        match self.limit {
            0 => Self::DEFAULT_LIMIT,
            n => n.min(Self::MAX_LIMIT),
        }
    }

    /// Whether `at` lies in `[since, until)`.
    pub fn in_range(&self, at: UtcTime) -> bool {
        self.since.is_none_or(|s| at >= s) && self.until.is_none_or(|u| at < u)
    }

    /// Whether `record` passes every filter, its time included.
    pub fn matches(&self, record: &AuditRecord) -> bool {
        let user_ok = self.user.as_deref().is_none_or(|user| {
            record.user_oid.as_deref() == Some(user)
                || record
                    .user_upn
                    .as_deref()
                    .is_some_and(|upn| upn.eq_ignore_ascii_case(user))
        });
        user_ok
            && self
                .tool
                .as_deref()
                .is_none_or(|t| record.tool.as_deref() == Some(t))
            && self.decision.is_none_or(|d| record.decision == d)
            && self.in_range(record.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> AuditRecord {
        let mut r = AuditRecord::at(
            UtcTime::from_unix_millis(1_796_402_826_123),
            AuditEvent::ToolCall,
            Decision::Deny,
        );
        r.request_id = Some("7".into());
        r.user_oid = Some("00000000-0000-0000-0000-0000000000a1".into());
        r.user_upn = Some("Alice@Contoso.example".into());
        r.tenant = Some("contoso".into());
        r.client_app = Some("vscode".into());
        r.upstream = Some("files".into());
        r.tool = Some("delete_file".into());
        r.reason = Some("the tool needs the role Files.Admin".into());
        r.set_latency(Duration::from_micros(1_250));
        r.upstream_outcome = Some(UpstreamOutcome::RpcError { code: -32601 });
        r.arguments = Some(serde_json::json!({"path": "/tmp/x"}));
        r
    }

    #[test]
    fn a_record_round_trips_through_json() {
        let r = full();
        let json = serde_json::to_string(&r).expect("json");
        assert!(
            json.starts_with(
                r#"{"at":"2026-12-04T16:47:06.123Z","event":"tool_call","decision":"deny","#
            ),
            "{json}"
        );
        assert!(
            json.contains(r#""upstream_outcome":{"rpc_error":{"code":-32601}}"#),
            "{json}"
        );
        assert!(json.contains(r#""latency_ms":1.25"#), "{json}");
        assert_eq!(serde_json::from_str::<AuditRecord>(&json).expect("back"), r);
    }

    #[test]
    fn a_record_serialises_only_what_was_put_in() {
        let r = AuditRecord::at(
            UtcTime::from_unix_millis(0),
            AuditEvent::SignIn,
            Decision::Allow,
        );
        let value = serde_json::to_value(&r).expect("json");
        let keys: Vec<&str> = value
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["at", "decision", "event"]);
        let mut with_tool = r.clone();
        with_tool.tool = Some("whoami".into());
        let value = serde_json::to_value(&with_tool).expect("json");
        assert_eq!(value.as_object().expect("object").len(), 4);
    }

    #[test]
    fn an_unknown_event_from_a_newer_writer_still_reads() {
        let json =
            r#"{"at":"2026-12-04T16:47:06.123Z","event":"session_started","decision":"allow"}"#;
        let r: AuditRecord = serde_json::from_str(json).expect("read");
        assert_eq!(r.event, AuditEvent::Unknown);
    }

    #[test]
    fn queries_match_user_by_oid_or_upn_and_time_half_open() {
        let r = full();
        let q = |f: fn(&mut AuditQuery)| {
            let mut q = AuditQuery::default();
            f(&mut q);
            q.matches(&r)
        };
        assert!(q(|_| {}));
        assert!(q(|q| q.user = Some("alice@contoso.example".into())));
        assert!(q(
            |q| q.user = Some("00000000-0000-0000-0000-0000000000a1".into())
        ));
        assert!(!q(|q| q.user = Some("bob@contoso.example".into())));
        assert!(q(|q| q.tool = Some("delete_file".into())));
        assert!(!q(|q| q.tool = Some("delete".into())));
        assert!(q(|q| q.decision = Some(Decision::Deny)));
        assert!(!q(|q| q.decision = Some(Decision::Allow)));
        assert!(q(
            |q| q.since = Some(UtcTime::from_unix_millis(1_796_402_826_123))
        ));
        assert!(!q(
            |q| q.until = Some(UtcTime::from_unix_millis(1_796_402_826_123))
        ));
        assert!(q(
            |q| q.until = Some(UtcTime::from_unix_millis(1_796_402_826_124))
        ));
        assert_eq!(AuditQuery::default().effective_limit(), 100);
        let huge = AuditQuery {
            limit: usize::MAX,
            ..AuditQuery::default()
        };
        assert_eq!(huge.effective_limit(), AuditQuery::MAX_LIMIT);
    }
}

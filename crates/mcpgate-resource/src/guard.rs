//! What a caller may do, and the record of what they did: the per-tool
//! policy applied to calls and lists, refusals in the protocol's form (403
//! `insufficient_scope` when more scope would help, a JSON-RPC error when
//! it would not), pinned tool definitions, and one audit record per
//! decision.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use mcpgate_audit::{AuditEvent, AuditRecord, AuditSink, Decision as Verdict, UpstreamOutcome};
use mcpgate_token::{Principal, ValidationError};
use rmcp::model::{ErrorCode, ErrorData, RequestId};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::challenge::{AuthRejection, ChallengeContext};
use crate::gateway::Link;
use crate::gateway::reply::{Ended, Finish};
use crate::pins::{PinMode, ToolPins};
use crate::policy::{Decision, Denial, Kind, PolicyHandle};
use crate::ratelimit::{RateLimiter, RateLimits};
use crate::wire;

/// The JSON-RPC error code of a policy refusal that more scope would not
/// lift.
pub const FORBIDDEN: ErrorCode = ErrorCode(-32003);
/// The JSON-RPC error code of a call over its rate limit (with HTTP 429).
pub const RATE_LIMITED: ErrorCode = ErrorCode(-32029);

/// Policy, pins and audit, as the endpoint applies them.
#[derive(Debug)]
pub struct Guard {
    policy: Arc<PolicyHandle>,
    audit: Option<Arc<dyn AuditSink>>,
    // The challenge a step-up refusal extends with the scopes it needs.
    challenge: Option<ChallengeContext>,
    limiter: Option<RateLimiter>,
}

/// What a request names that policy governs.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Tool, resource or prompt.
    pub kind: Kind,
    /// Its name (a resource's URI), as the client sees it.
    pub name: &'a str,
    /// The upstream it belongs to, in gateway mode.
    pub upstream: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// What `method` acts on, given its params' `name` and `uri`.
    pub fn of(method: &str, name: Option<&'a str>, uri: Option<&'a str>) -> Option<Self> {
        let (kind, name) = match method {
            "tools/call" => (Kind::Tool, name?),
            "prompts/get" => (Kind::Prompt, name?),
            "resources/read" | "resources/subscribe" => (Kind::Resource, uri?),
            _ => return None,
        };
        Some(Self {
            kind,
            name,
            upstream: None,
        })
    }

    /// The same, at upstream `name`.
    pub fn at(self, upstream: &'a str) -> Self {
        Self {
            upstream: Some(upstream),
            ..self
        }
    }

    fn event(self) -> AuditEvent {
        match self.kind {
            Kind::Tool => AuditEvent::ToolCall,
            Kind::Prompt => AuditEvent::PromptGet,
            Kind::Resource => AuditEvent::ResourceRead,
        }
    }
}

impl Guard {
    /// A guard applying `policy` and recording to `audit`.
    pub fn new(
        policy: Arc<PolicyHandle>,
        audit: Option<Arc<dyn AuditSink>>,
        challenge: Option<ChallengeContext>,
    ) -> Self {
        Self {
            policy,
            audit,
            challenge,
            limiter: None,
        }
    }

    /// Also enforces `limits` on tool calls by authenticated callers.
    pub fn with_rate_limits(mut self, limits: RateLimits) -> Self {
        let limiter = RateLimiter::new(limits);
        self.limiter = limiter.is_active().then_some(limiter);
        self
    }

    /// Whether anything is recorded.
    pub fn audits(&self) -> bool {
        self.audit.is_some()
    }

    /// Decides whether `caller` may act on `target`: `None` to go ahead,
    /// else the refusal to answer with (its audit record written).
    /// `hidden`: the tool's definition, as this session's upstream shows
    /// it, awaits an operator's acceptance.
    pub fn check(
        &self,
        caller: Option<&Arc<Principal>>,
        id: &RequestId,
        target: Target<'_>,
        arguments: Option<&RawValue>,
        hidden: bool,
    ) -> Option<Response> {
        let who = caller.map(|p| &**p);
        if target.kind == Kind::Tool && hidden {
            let reason = "the tool's definition changed since it was approved; an operator must accept the change (mcpgate pins)";
            self.record(who, id, target, arguments, Verdict::Deny, |r| {
                r.reason = Some(reason.to_owned());
            });
            let error = ErrorData::new(FORBIDDEN, format!("{}: {reason}", target.name), None);
            return Some(json(wire::error(Some(id), &error)));
        }
        let Decision::Deny(denial) = self.policy.load().decide(who, target.kind, target.name)
        else {
            return self.rate_limit(who, id, target, arguments);
        };
        self.record(who, id, target, arguments, Verdict::Deny, |r| {
            r.reason = Some(denial.reason.clone());
        });
        Some(self.refusal(id, target, &denial))
    }

    // A tool call over its caller's quota: 429 with Retry-After, and a
    // JSON-RPC error that says which limit.
    fn rate_limit(
        &self,
        who: Option<&Principal>,
        id: &RequestId,
        target: Target<'_>,
        arguments: Option<&RawValue>,
    ) -> Option<Response> {
        let (Some(limiter), Some(p), Kind::Tool) = (&self.limiter, who, target.kind) else {
            return None;
        };
        let limited = limiter
            .check(p.identity_key(), p.client_app_id.as_deref(), Instant::now())
            .err()?;
        let reason = format!(
            "rate limit: {} calls per minute per {} (burst {}); retry in {} s",
            limited.quota.per_minute,
            limited.whose,
            limited.quota.burst,
            limited.retry_after.as_secs().max(1)
        );
        self.record(who, id, target, arguments, Verdict::Deny, |r| {
            r.reason = Some(reason.clone());
        });
        let error = ErrorData::new(RATE_LIMITED, reason, None);
        let mut response = json(wire::error(Some(id), &error));
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        let secs = limited.retry_after.as_secs().max(1).to_string();
        if let Ok(value) = HeaderValue::from_str(&secs) {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, value);
        }
        Some(response)
    }

    fn refusal(&self, id: &RequestId, target: Target<'_>, denial: &Denial) -> Response {
        if !denial.step_up_scopes.is_empty()
            && let Some(base) = &self.challenge
        {
            // The scopes that would let the call through, besides those the
            // client asks for anyway: a compliant client signs in again
            // with all of them and retries.
            let mut scopes: Vec<&str> = base.scope.split_whitespace().collect();
            for s in &denial.step_up_scopes {
                if !scopes.contains(&s.as_str()) {
                    scopes.push(s);
                }
            }
            let ctx = ChallengeContext {
                resource_metadata: base.resource_metadata.clone(),
                scope: scopes.join(" "),
            };
            let missing = format!(
                "calling {} {} needs scope {}",
                target.kind.as_str(),
                target.name,
                denial.step_up_scopes.join(" or ")
            );
            return AuthRejection::Token(ValidationError::InsufficientScope { missing })
                .into_response(&ctx);
        }
        let error = ErrorData::new(
            FORBIDDEN,
            format!(
                "{} {} is not allowed for this caller: {}",
                target.kind.as_str(),
                target.name,
                denial.reason
            ),
            None,
        );
        json(wire::error(Some(id), &error))
    }

    /// Reviews one upstream session's tools against their pins: reports
    /// (log and audit) each change seen for the first time, and returns
    /// the names to hide from that session.
    pub async fn review_tools(
        &self,
        pins: &ToolPins,
        upstream: &str,
        tools: &[Value],
    ) -> HashSet<String> {
        let review = pins.review(upstream, tools).await;
        for change in &review.changed {
            tracing::warn!(target: "mcpgate::pins", upstream, tool = change.tool, old = change.old_digest, new = change.new_digest, mode = ?pins.mode(), "an upstream tool's definition changed since it was pinned");
            if let Some(audit) = &self.audit {
                let mut record = AuditRecord::new(AuditEvent::PinChanged, Verdict::Deny);
                record.upstream = Some(upstream.to_owned());
                record.tool = Some(change.tool.clone());
                record.reason = Some(format!(
                    "definition changed from {} to {}",
                    change.old_digest, change.new_digest
                ));
                audit.record(record);
            }
        }
        let mut hidden: HashSet<String> = review.hidden.into_iter().collect();
        if pins.mode() == PinMode::Enforce {
            // Pinning fails closed: a tool whose pin could not be read is
            // not shown.
            hidden.extend(review.unavailable);
        }
        hidden
    }

    /// Writes one record of `target` decided `verdict`.
    fn record(
        &self,
        who: Option<&Principal>,
        id: &RequestId,
        target: Target<'_>,
        arguments: Option<&RawValue>,
        verdict: Verdict,
        fill: impl FnOnce(&mut AuditRecord),
    ) {
        let Some(audit) = &self.audit else { return };
        let mut record = AuditRecord::new(target.event(), verdict);
        record.request_id = Some(match id {
            RequestId::Number(n) => n.to_string(),
            RequestId::String(s) => s.to_string(),
        });
        if let Some(p) = who {
            record.user_oid = Some(p.object_id.clone().unwrap_or_else(|| p.subject.clone()));
            record.user_upn = p.preferred_username.clone();
            record.tenant = p.tenant_id.clone();
            record.client_app = p.client_app_id.clone();
        }
        record.upstream = target.upstream.map(str::to_owned);
        record.tool = Some(target.name.to_owned());
        if target.kind == Kind::Tool
            && audit.wants_arguments(target.name)
            && let Some(arguments) = arguments
        {
            record.arguments = serde_json::from_str(arguments.get()).ok();
        }
        fill(&mut record);
        audit.record(record);
    }

    /// What the answer to an allowed request goes through: lists are cut
    /// to what the caller may use (and, for tools, to pinned definitions);
    /// calls are recorded with their outcome. `None` when the answer needs
    /// nothing (no rule, no pin, no audit): the common case costs nothing.
    pub fn finish(
        self: &Arc<Self>,
        caller: Option<&Arc<Principal>>,
        id: &RequestId,
        method: &str,
        target: Option<Target<'_>>,
        arguments: Option<&RawValue>,
        link: Option<&Arc<Link>>,
    ) -> Option<Finish> {
        let list = match method {
            "tools/list" => Some((Kind::Tool, "tools", "name")),
            "prompts/list" => Some((Kind::Prompt, "prompts", "name")),
            "resources/list" => Some((Kind::Resource, "resources", "uri")),
            "resources/templates/list" => {
                Some((Kind::Resource, "resourceTemplates", "uriTemplate"))
            }
            _ => None,
        };
        if let Some((kind, _, _)) = list
            && link.is_none_or(|l| l.pins().is_none())
        {
            // With no rule, the default decides for every name alike.
            let policy = self.policy.load();
            if policy.rule_count() == 0 && policy.decide(None, kind, "") == Decision::Allow {
                return None;
            }
        }
        let guard = self.clone();
        let caller = caller.cloned();
        let link = link.cloned();
        if let Some((kind, key, field)) = list {
            return Some(Box::new(move |answer, ended| {
                Box::pin(async move {
                    if ended != Ended::Answered {
                        return answer;
                    }
                    guard
                        .filter(caller.as_deref(), link.as_deref(), kind, key, field, answer)
                        .await
                })
            }));
        }
        let target = target.filter(|_| self.audits())?;
        let started = Instant::now();
        let id = id.clone();
        let kind = target.kind;
        let name = target.name.to_owned();
        let upstream = target.upstream.map(str::to_owned);
        let arguments = arguments.map(ToOwned::to_owned);
        Some(Box::new(move |answer, ended| {
            let outcome = match ended {
                Ended::Answered => outcome_of(&answer),
                Ended::TimedOut => UpstreamOutcome::Timeout,
                Ended::Gone => UpstreamOutcome::Unavailable,
            };
            let target = Target {
                kind,
                name: &name,
                upstream: upstream.as_deref(),
            };
            guard.record(
                caller.as_deref(),
                &id,
                target,
                arguments.as_deref(),
                Verdict::Allow,
                |r| {
                    r.set_latency(started.elapsed());
                    r.upstream_outcome = Some(outcome);
                },
            );
            Box::pin(std::future::ready(answer))
        }))
    }

    /// Records a call that could not be forwarded at all.
    pub fn unavailable(
        &self,
        caller: Option<&Arc<Principal>>,
        id: &RequestId,
        target: Target<'_>,
        reason: &str,
    ) {
        self.record(
            caller.map(|p| &**p),
            id,
            target,
            None,
            Verdict::Allow,
            |r| {
                r.upstream_outcome = Some(UpstreamOutcome::Unavailable);
                r.reason = Some(reason.to_owned());
            },
        );
    }

    async fn filter(
        &self,
        who: Option<&Principal>,
        link: Option<&Link>,
        kind: Kind,
        key: &str,
        field: &str,
        answer: Bytes,
    ) -> Bytes {
        let Ok(mut message) = serde_json::from_slice::<Value>(&answer) else {
            return answer;
        };
        let Some(items) = message
            .get_mut("result")
            .and_then(|r| r.get_mut(key))
            .and_then(Value::as_array_mut)
        else {
            return answer;
        };
        if kind == Kind::Tool
            && let Some(link) = link
            && let Some(pins) = link.pins()
        {
            let hidden = self.review_tools(pins, link.name(), items).await;
            items.retain(|t| {
                t.get("name")
                    .and_then(Value::as_str)
                    .is_none_or(|n| !hidden.contains(n))
            });
            link.set_hidden(hidden).await;
        }
        self.visible_only(who, kind, field, items);
        serde_json::to_vec(&message).map_or(answer, Bytes::from)
    }

    /// Cuts a list to the items `who` may use; `field` names an item.
    pub fn visible_only(
        &self,
        who: Option<&Principal>,
        kind: Kind,
        field: &str,
        items: &mut Vec<Value>,
    ) {
        let policy = self.policy.load();
        items.retain(|item| {
            item.get(field)
                .and_then(Value::as_str)
                .is_some_and(|name| policy.visible(who, kind, name))
        });
    }
}

fn outcome_of(answer: &[u8]) -> UpstreamOutcome {
    #[derive(serde::Deserialize)]
    struct Answer {
        result: Option<ResultPart>,
        error: Option<ErrorPart>,
    }
    #[derive(serde::Deserialize)]
    struct ResultPart {
        #[serde(rename = "isError", default)]
        is_error: bool,
    }
    #[derive(serde::Deserialize)]
    struct ErrorPart {
        code: i64,
    }
    match serde_json::from_slice::<Answer>(answer) {
        Ok(Answer { error: Some(e), .. }) => UpstreamOutcome::RpcError { code: e.code },
        Ok(Answer {
            result: Some(ResultPart { is_error: true }),
            ..
        }) => UpstreamOutcome::ToolError,
        Ok(_) => UpstreamOutcome::Ok,
        Err(_) => UpstreamOutcome::Unavailable,
    }
}

fn json(body: Bytes) -> Response {
    wire::json(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_read_from_answers() {
        assert_eq!(
            outcome_of(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#),
            UpstreamOutcome::Ok
        );
        assert_eq!(
            outcome_of(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#),
            UpstreamOutcome::ToolError
        );
        assert_eq!(
            outcome_of(br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"x"}}"#),
            UpstreamOutcome::RpcError { code: -32602 }
        );
    }

    #[test]
    fn targets_follow_the_method() {
        let t = Target::of("tools/call", Some("send"), None).expect("tool");
        assert_eq!((t.kind, t.name), (Kind::Tool, "send"));
        let r = Target::of("resources/read", None, Some("file:///x")).expect("resource");
        assert_eq!((r.kind, r.name), (Kind::Resource, "file:///x"));
        assert!(Target::of("tools/list", Some("x"), None).is_none());
        assert!(Target::of("tools/call", None, None).is_none());
    }
}

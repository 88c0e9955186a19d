//! What the auditor does to every record before writing it: arguments only
//! where opted in, no JWT-shaped text, bounded sizes.

use std::borrow::Cow;

use crate::record::AuditRecord;

/// The longest text field kept, in bytes; longer ones are cut (with `…`).
pub const MAX_TEXT_BYTES: usize = 1024;
/// The largest opted-in arguments kept, as JSON bytes; larger ones are
/// replaced by `{"truncated": true, "bytes": N}`.
pub const MAX_ARGUMENT_BYTES: usize = 16 * 1024;

/// Tool names (or `*` / `?` globs) whose arguments are recorded.
/// Empty: no tool's (the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArgumentPolicy {
    patterns: Vec<String>,
}

impl ArgumentPolicy {
    /// Records the arguments of tools matching any of `patterns`.
    pub fn new(patterns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            patterns: patterns.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether `tool`'s arguments are recorded.
    pub fn records(&self, tool: &str) -> bool {
        self.patterns
            .iter()
            .any(|p| glob(p.as_bytes(), tool.as_bytes()))
    }
}

/// `*` is any run of characters, `?` any one byte; everything else itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and how much of the text it has taken.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// Applies the policy and the bounds to `record`.
pub(crate) fn sanitize(record: &mut AuditRecord, policy: &ArgumentPolicy) {
    let opted_in = record.tool.as_deref().is_some_and(|t| policy.records(t));
    if !opted_in {
        record.arguments = None;
    }
    for field in [
        &mut record.request_id,
        &mut record.user_oid,
        &mut record.user_upn,
        &mut record.tenant,
        &mut record.client_app,
        &mut record.upstream,
        &mut record.tool,
        &mut record.grant_type,
        &mut record.reason,
    ]
    .into_iter()
    .flatten()
    {
        clean_text(field);
    }
    if let Some(arguments) = &mut record.arguments {
        redact_value(arguments);
        let size = serde_json::to_vec(arguments).map_or(usize::MAX, |v| v.len());
        if size > MAX_ARGUMENT_BYTES {
            *arguments = serde_json::json!({"truncated": true, "bytes": size});
        }
    }
}

fn clean_text(text: &mut String) {
    if let Cow::Owned(clean) = redact_jwts(text) {
        *text = clean;
    }
    if text.len() > MAX_TEXT_BYTES {
        let mut cut = MAX_TEXT_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
}

fn redact_value(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => clean_text(s),
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_value),
        serde_json::Value::Object(map) => map.values_mut().for_each(redact_value),
        _ => {}
    }
}

fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// The length of a JWT (JWS or JWE compact form: `eyJ…` segments joined by
/// dots, at least three) starting at `b[0]`, if one does.
fn jwt_at(b: &[u8]) -> Option<usize> {
    if !b.starts_with(b"eyJ") {
        return None;
    }
    let mut at = 0;
    let mut segments = 0;
    loop {
        let len = b[at..].iter().take_while(|&&c| is_b64url(c)).count();
        segments += 1;
        at += len;
        if b.get(at) != Some(&b'.') {
            break;
        }
        at += 1;
    }
    (segments >= 3).then_some(at)
}

/// `text` with every JWT-shaped run replaced by `[redacted]`.
pub fn redact_jwts(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    if !text.contains("eyJ") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let (mut i, mut copied) = (0, 0);
    while i < b.len() {
        let starts_word = i == 0 || !is_b64url(b[i - 1]);
        match jwt_at(&b[i..]).filter(|_| starts_word) {
            Some(len) => {
                out.push_str(&text[copied..i]);
                out.push_str("[redacted]");
                i += len;
                copied = i;
            }
            None => i += 1,
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{AuditEvent, Decision};

    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";

    #[test]
    fn globs_match_names() {
        let p = ArgumentPolicy::new(["search_*", "get_?ser", "exact"]);
        assert!(p.records("search_files"));
        assert!(p.records("search_"));
        assert!(p.records("get_user"));
        assert!(p.records("exact"));
        assert!(!p.records("exactly"));
        assert!(!p.records("xsearch_files"));
        assert!(!p.records("get_users"));
        assert!(ArgumentPolicy::new(["*"]).records("anything"));
        assert!(ArgumentPolicy::new(["a*b*c"]).records("aXXbYYbZc"));
        assert!(!ArgumentPolicy::default().records("anything"));
    }

    #[test]
    fn jwt_shaped_text_is_redacted() {
        assert_eq!(redact_jwts("no token here"), "no token here");
        assert_eq!(
            redact_jwts(&format!("Bearer {JWT} was refused")),
            "Bearer [redacted] was refused"
        );
        assert_eq!(
            redact_jwts(&format!("{JWT},{JWT}")),
            "[redacted],[redacted]"
        );
        // Two segments is not a JWT; a word that merely contains eyJ is not one.
        assert_eq!(redact_jwts("eyJhbGciOi.eyJzdWIi"), "eyJhbGciOi.eyJzdWIi");
        assert_eq!(redact_jwts("xeyJa.b.c"), "xeyJa.b.c");
    }

    #[test]
    fn sanitize_drops_arguments_unless_opted_in_and_bounds_sizes() {
        let mut r = AuditRecord::new(AuditEvent::ToolCall, Decision::Allow);
        r.tool = Some("write_file".into());
        r.arguments = Some(serde_json::json!({"token": JWT}));
        r.reason = Some(format!("saw {JWT}"));
        let mut dropped = r.clone();
        sanitize(&mut dropped, &ArgumentPolicy::default());
        assert_eq!(dropped.arguments, None);
        assert_eq!(dropped.reason.as_deref(), Some("saw [redacted]"));

        let policy = ArgumentPolicy::new(["write_*"]);
        let mut kept = r.clone();
        sanitize(&mut kept, &policy);
        assert_eq!(
            kept.arguments,
            Some(serde_json::json!({"token": "[redacted]"}))
        );

        let mut big = r;
        // Each string is within bounds; together they are not.
        let parts = vec!["x".repeat(MAX_TEXT_BYTES); MAX_ARGUMENT_BYTES / MAX_TEXT_BYTES + 1];
        big.arguments = Some(serde_json::json!({ "parts": parts }));
        big.reason = Some("é".repeat(MAX_TEXT_BYTES));
        sanitize(&mut big, &policy);
        assert_eq!(
            big.arguments.as_ref().and_then(|a| a.get("truncated")),
            Some(&serde_json::json!(true))
        );
        let reason = big.reason.expect("reason");
        assert!(reason.len() <= MAX_TEXT_BYTES + '…'.len_utf8() && reason.ends_with('…'));
    }
}

//! The `fixture_*` tools mcpgate's gateway tests need, listed only with
//! `--test-tools`: a cheap echo (the benchmark's call), a sleep that can
//! last forever, a crash in the middle of a call, the process environment,
//! a description change with `notifications/tools/list_changed`, and who
//! the caller looks like from here (identity headers, never a token).

use std::collections::BTreeMap;
use std::time::Duration;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use serde_json::{Value, json};

use crate::server::{Fixture, Transport};
use crate::suite::schema;

/// Exit status of `fixture_crash`, so a test can tell it from other exits.
pub const CRASH_STATUS: i32 = 3;

pub fn tools() -> Vec<Tool> {
    vec![
        Tool::new(
            "fixture_echo",
            "Answers with `text` as one text block",
            schema(json!({
                "type": "object",
                "properties": { "text": { "type": "string" } },
                "required": ["text"],
            })),
        ),
        Tool::new(
            "fixture_sleep",
            "Answers after `ms` milliseconds; without `ms`, never answers",
            schema(json!({
                "type": "object",
                "properties": { "ms": { "type": "integer", "minimum": 0 } },
            })),
        ),
        Tool::new(
            "fixture_crash",
            "Exits the process with status 3 in the middle of the call",
            schema(json!({ "type": "object", "properties": {} })),
        ),
        Tool::new(
            "fixture_env",
            "Returns the process environment (name to value) and current directory",
            schema(json!({ "type": "object", "properties": {} })),
        ),
        Tool::new(
            "fixture_mutate",
            "Sets `tool`'s description in later tools/list answers and sends \
             notifications/tools/list_changed",
            schema(json!({
                "type": "object",
                "properties": {
                    "tool": { "type": "string" },
                    "description": { "type": "string" },
                },
                "required": ["tool", "description"],
            })),
        ),
        Tool::new(
            "fixture_whoami",
            "Returns the x-mcpgate-* request headers and whether an Authorization header \
             came (HTTP), or the MCPGATE_USER_* variables (stdio)",
            schema(json!({ "type": "object", "properties": {} })),
        ),
    ]
}

/// Runs the test tool `name`; `None` when it is not one of them.
pub async fn call_tool(
    fixture: &Fixture,
    name: &str,
    args: &JsonObject,
    context: &RequestContext<RoleServer>,
) -> Option<Result<CallToolResult, McpError>> {
    Some(match name {
        "fixture_echo" => match args.get("text").and_then(Value::as_str) {
            Some(text) => Ok(CallToolResult::success(vec![ContentBlock::text(text)])),
            None => Err(McpError::invalid_params(
                "argument `text` (string) is required",
                None,
            )),
        },
        "fixture_sleep" => sleep(args, context).await,
        "fixture_crash" => {
            tracing::warn!("fixture_crash: exiting with status {CRASH_STATUS}");
            std::process::exit(CRASH_STATUS)
        }
        "fixture_env" => Ok(env()),
        "fixture_mutate" => mutate(fixture, args, context).await,
        "fixture_whoami" => Ok(whoami(&fixture.shared.transport, context)),
        _ => return None,
    })
}

async fn sleep(
    args: &JsonObject,
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    let ms = match args.get("ms") {
        None | Some(Value::Null) => None,
        Some(ms) => Some(ms.as_u64().ok_or_else(|| {
            McpError::invalid_params("argument `ms` must be a non-negative integer", None)
        })?),
    };
    let wait = async {
        match ms {
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = wait => {}
        // A cancelled request gets no answer; this only frees the task.
        () = context.ct.cancelled() => {
            return Err(McpError::internal_error("cancelled", None));
        }
    }
    let slept = ms.unwrap_or_default();
    Ok(CallToolResult::success(vec![ContentBlock::text(format!(
        "slept {slept} ms"
    ))]))
}

fn env() -> CallToolResult {
    // Names and values that are not Unicode are shown lossily rather than
    // dropped, so a test sees that the variable was passed.
    let env: BTreeMap<String, String> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let cwd = std::env::current_dir()
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    CallToolResult::structured(json!({ "env": env, "cwd": cwd }))
}

async fn mutate(
    fixture: &Fixture,
    args: &JsonObject,
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    let field = |name: &str| {
        args.get(name).and_then(Value::as_str).ok_or_else(|| {
            McpError::invalid_params(format!("argument `{name}` (string) is required"), None)
        })
    };
    let (tool, description) = (field("tool")?, field("description")?);
    if !fixture.shared.set_description(tool, description) {
        return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
            "no tool named {tool}"
        ))]));
    }
    context
        .peer
        .notify_tool_list_changed()
        .await
        .map_err(|e| McpError::internal_error(format!("list_changed failed: {e}"), None))?;
    Ok(CallToolResult::success(vec![ContentBlock::text(format!(
        "description of {tool} changed"
    ))]))
}

/// Over HTTP, the `x-mcpgate-*` headers of the request (lower-case names,
/// values as text) and `authorization` as a boolean: a test can check that
/// the gateway never passes the caller's token on without the fixture ever
/// echoing one (only its `aud` and `amr`). Over stdio, the `MCPGATE_USER_*` environment variables.
// The `aud` and `amr` of a bearer JWT, read without verifying it (this
// fixture only reports whom the token it got was issued to, and how its
// user signed in; it never prints a token).
fn bearer_claims(header: &[u8]) -> (serde_json::Value, serde_json::Value) {
    use base64::Engine as _;
    let payload = std::str::from_utf8(header)
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .and_then(|t| t.split('.').nth(1))
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok());
    let claim = |name: &str| {
        payload
            .as_ref()
            .and_then(|p| p.get(name).cloned())
            .unwrap_or_default()
    };
    (claim("aud"), claim("amr"))
}

fn whoami(transport: &Transport, context: &RequestContext<RoleServer>) -> CallToolResult {
    match transport {
        Transport::Http(_) => {
            let parts = context.extensions.get::<http::request::Parts>();
            let mut headers = BTreeMap::new();
            let mut authorization = false;
            let mut audience = serde_json::Value::Null;
            let mut amr = serde_json::Value::Null;
            if let Some(parts) = parts {
                for (name, value) in &parts.headers {
                    if name == http::header::AUTHORIZATION {
                        authorization = true;
                        (audience, amr) = bearer_claims(value.as_bytes());
                    } else if name.as_str().starts_with("x-mcpgate-") || name == "traceparent" {
                        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                        headers.insert(name.as_str().to_owned(), value);
                    }
                }
            }
            CallToolResult::structured(json!({
                "transport": "http",
                "headers": headers,
                "authorization": authorization,
                "audience": audience,
                "amr": amr,
            }))
        }
        Transport::Stdio => {
            let env: BTreeMap<String, String> = std::env::vars_os()
                .filter_map(|(k, v)| {
                    let k = k.into_string().ok()?;
                    k.starts_with("MCPGATE_USER_")
                        .then(|| (k, v.to_string_lossy().into_owned()))
                })
                .collect();
            CallToolResult::structured(json!({ "transport": "stdio", "env": env }))
        }
    }
}

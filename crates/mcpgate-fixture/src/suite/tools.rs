//! The suite's tools: content of every kind, an error, logging and
//! progress while running, sampling, and the stream that closes mid-call.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolResult, ContentBlock, JsonObject, ProgressNotificationParam, ResourceContents, Role,
    Tool,
};
// Logging and sampling are deprecated from 2026-07-28 on, current at the
// 2025-11-25 wire the suite speaks.
#[allow(deprecated)]
use rmcp::model::{
    CreateMessageRequestParams, LoggingLevel, LoggingMessageNotificationParam, SamplingMessage,
    SamplingMessageContentBlock,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use serde_json::{Value, json};

use super::elicitation;
use super::{PNG_BASE64, WAV_BASE64, schema, string_arg};
use crate::http;
use crate::server::{Fixture, Transport};

/// How long `test_reconnection` tells the client to wait before resuming.
const RECONNECT_RETRY: Duration = Duration::from_millis(500);

fn no_arguments() -> Arc<JsonObject> {
    schema(json!({ "type": "object", "properties": {} }))
}

pub fn tools() -> Vec<Tool> {
    let string_arg = |name: &str, description: &str| {
        schema(json!({
            "type": "object",
            "properties": { name: { "type": "string", "description": description } },
            "required": [name],
        }))
    };
    vec![
        Tool::new("test_simple_text", "Returns one text block", no_arguments()),
        Tool::new("test_image_content", "Returns a PNG image", no_arguments()),
        Tool::new("test_audio_content", "Returns a WAV clip", no_arguments()),
        Tool::new(
            "test_embedded_resource",
            "Returns an embedded text resource",
            no_arguments(),
        ),
        Tool::new(
            "test_multiple_content_types",
            "Returns text, an image and an embedded resource",
            no_arguments(),
        ),
        Tool::new(
            "test_tool_with_logging",
            "Sends three info log messages while it runs",
            no_arguments(),
        ),
        Tool::new(
            "test_error_handling",
            "Always fails with a tool error (isError)",
            no_arguments(),
        ),
        Tool::new(
            "test_tool_with_progress",
            "Reports progress 0, 50 and 100 of 100 when given a progress token",
            no_arguments(),
        ),
        Tool::new(
            "test_sampling",
            "Asks the client's LLM (sampling/createMessage) and returns its answer",
            string_arg("prompt", "The prompt to send to the LLM"),
        ),
        Tool::new(
            "test_elicitation",
            "Asks the user for a username and email (elicitation/create)",
            string_arg("message", "The message to show the user"),
        ),
        Tool::new(
            "test_elicitation_sep1034_defaults",
            "Elicits fields of every primitive type, each with a default (SEP-1034)",
            no_arguments(),
        ),
        Tool::new(
            "test_elicitation_sep1330_enums",
            "Elicits the five enum shapes of SEP-1330",
            no_arguments(),
        ),
        Tool::new(
            "json_schema_2020_12_tool",
            "Tool with JSON Schema 2020-12 features",
            schema(json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": {
                    "address": {
                        "type": "object",
                        "properties": {
                            "street": { "type": "string" },
                            "city": { "type": "string" },
                        },
                    },
                },
                "properties": {
                    "name": { "type": "string" },
                    "address": { "$ref": "#/$defs/address" },
                },
                "additionalProperties": false,
            })),
        ),
        Tool::new(
            "test_reconnection",
            "Answers after a short pause, for the SSE polling scenario (SEP-1699)",
            no_arguments(),
        ),
    ]
}

/// Runs the suite's tool `name`; `None` when it is not one of them.
pub async fn call_tool(
    fixture: &Fixture,
    name: &str,
    args: &JsonObject,
    context: &RequestContext<RoleServer>,
) -> Option<Result<CallToolResult, McpError>> {
    let text = |t: &str| Ok(CallToolResult::success(vec![ContentBlock::text(t)]));
    Some(match name {
        "test_simple_text" => text("This is a simple text response for testing."),
        "test_image_content" => Ok(CallToolResult::success(vec![ContentBlock::image(
            PNG_BASE64,
            "image/png",
        )])),
        "test_audio_content" => Ok(CallToolResult::success(vec![ContentBlock::audio(
            WAV_BASE64,
            "audio/wav",
        )])),
        "test_embedded_resource" => Ok(CallToolResult::success(vec![ContentBlock::resource(
            ResourceContents::text(
                "This is an embedded resource content.",
                "test://embedded-resource",
            )
            .with_mime_type("text/plain"),
        )])),
        "test_multiple_content_types" => Ok(CallToolResult::success(vec![
            ContentBlock::text("Multiple content types test:"),
            ContentBlock::image(PNG_BASE64, "image/png"),
            ContentBlock::resource(
                ResourceContents::text(
                    json!({ "test": "data", "value": 123 }).to_string(),
                    "test://mixed-content-resource",
                )
                .with_mime_type("application/json"),
            ),
        ])),
        "test_error_handling" => Ok(CallToolResult::error(vec![ContentBlock::text(
            "This tool intentionally returns an error for testing",
        )])),
        "test_tool_with_logging" => with_logging(fixture, context).await,
        "test_tool_with_progress" => with_progress(context).await,
        "test_sampling" => sampling(args, context).await,
        "test_elicitation" => elicitation::user(args, context).await,
        "test_elicitation_sep1034_defaults" => elicitation::sep1034_defaults(context).await,
        "test_elicitation_sep1330_enums" => elicitation::sep1330_enums(context).await,
        "json_schema_2020_12_tool" => Ok(CallToolResult::success(vec![ContentBlock::text(
            format!("Received: {}", Value::Object(args.clone())),
        )])),
        "test_reconnection" => {
            // Over HTTP the POST's stream closes first and the answer comes
            // on the stream the client resumes with Last-Event-ID.
            if let Transport::Http(sessions) = &fixture.shared.transport {
                let closed = http::close_post_stream(sessions, context, RECONNECT_RETRY).await;
                tracing::debug!(closed, "test_reconnection: POST stream closed mid-call");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            text("Reconnection test completed successfully")
        }
        _ => return None,
    })
}

#[allow(deprecated)]
async fn with_logging(
    fixture: &Fixture,
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    let steps = [
        "Tool execution started",
        "Tool processing data",
        "Tool execution completed",
    ];
    for (i, step) in steps.into_iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if fixture.session.wants_log(LoggingLevel::Info) {
            let param = LoggingMessageNotificationParam::new(LoggingLevel::Info, json!(step))
                .with_logger("mcpgate-fixture");
            context
                .peer
                .notify_logging_message(param)
                .await
                .map_err(|e| {
                    McpError::internal_error(format!("log notification failed: {e}"), None)
                })?;
        }
    }
    Ok(CallToolResult::success(vec![ContentBlock::text(
        "Tool with logging executed successfully",
    )]))
}

async fn with_progress(context: &RequestContext<RoleServer>) -> Result<CallToolResult, McpError> {
    let token = context.meta.get_progress_token();
    for (i, progress) in [0.0, 50.0, 100.0].into_iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(token) = &token {
            let param = ProgressNotificationParam::new(token.clone(), progress).with_total(100.0);
            context.peer.notify_progress(param).await.map_err(|e| {
                McpError::internal_error(format!("progress notification failed: {e}"), None)
            })?;
        }
    }
    Ok(CallToolResult::success(vec![ContentBlock::text(
        "Tool with progress executed successfully",
    )]))
}

#[allow(deprecated)]
async fn sampling(
    args: &JsonObject,
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    let prompt = string_arg(args, "prompt")?;
    let params = CreateMessageRequestParams::new(
        vec![SamplingMessage::new(
            Role::User,
            SamplingMessageContentBlock::text(prompt),
        )],
        100,
    );
    let answer = match context.peer.create_message(params).await {
        Ok(answer) => answer,
        Err(e) => {
            return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                "Sampling failed: {e}"
            ))]));
        }
    };
    let answer = serde_json::to_value(&answer).unwrap_or_default();
    let text = answer
        .pointer("/content/text")
        .and_then(Value::as_str)
        .map_or_else(|| answer["content"].to_string(), str::to_owned);
    Ok(CallToolResult::success(vec![ContentBlock::text(format!(
        "LLM response: {text}"
    ))]))
}

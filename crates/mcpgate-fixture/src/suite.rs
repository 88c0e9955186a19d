//! What the server scenarios of `@modelcontextprotocol/conformance@0.1.16`
//! call, by the names and with the shapes its scenario sources check:
//! tools `test_*` and `json_schema_2020_12_tool`, resources under `test://`,
//! prompts `test_*`, and completion for `test_prompt_with_arguments`.

use std::sync::Arc;
use std::time::Duration;

// Logging and sampling are deprecated from 2026-07-28 on, current at the
// 2025-11-25 wire the suite speaks.
use rmcp::model::{
    CallToolResult, CompleteRequestParams, CompleteResult, CompletionInfo, ContentBlock,
    ElicitRequestParams, ElicitationSchema, GetPromptResult, JsonObject, ProgressNotificationParam,
    Prompt, PromptArgument, PromptMessage, ReadResourceResult, Reference, Resource,
    ResourceContents, ResourceTemplate, Role, Tool,
};
#[allow(deprecated)]
use rmcp::model::{
    CreateMessageRequestParams, LoggingLevel, LoggingMessageNotificationParam, SamplingMessage,
    SamplingMessageContentBlock,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use serde_json::{Value, json};

use crate::http;
use crate::server::{Fixture, Transport};

/// A 1x1 red pixel, PNG.
pub const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// One silent sample, 8 kHz mono 16-bit PCM WAV.
pub const WAV_BASE64: &str = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQIAAAAAAA==";

/// How long `test_reconnection` tells the client to wait before resuming.
const RECONNECT_RETRY: Duration = Duration::from_millis(500);

const STATIC_TEXT: &str = "test://static-text";
const STATIC_BINARY: &str = "test://static-binary";
const WATCHED: &str = "test://watched-resource";
const TEMPLATE: &str = "test://template/{id}/data";

/// A JSON object literal as a tool schema; anything else is an empty one.
pub fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::default(),
    }
}

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
        "test_elicitation" => elicit_user(args, context).await,
        "test_elicitation_sep1034_defaults" => {
            let message = "Please review and update the form fields with defaults";
            elicit(context, message, sep1034_schema(), "Elicitation completed").await
        }
        "test_elicitation_sep1330_enums" => {
            let message = "Please select options from the enum fields";
            elicit(context, message, sep1330_schema(), "Elicitation completed").await
        }
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

fn string_arg<'a>(args: &'a JsonObject, name: &str) -> Result<&'a str, McpError> {
    args.get(name).and_then(Value::as_str).ok_or_else(|| {
        McpError::invalid_params(format!("argument `{name}` (string) is required"), None)
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

async fn elicit_user(
    args: &JsonObject,
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    let message = string_arg(args, "message")?;
    elicit(context, message, user_schema(), "User response").await
}

fn user_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "username": { "type": "string", "description": "User's response" },
            "email": { "type": "string", "description": "User's email address" },
        },
        "required": ["username", "email"],
    })
}

/// A default for every primitive type (SEP-1034).
fn sep1034_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": { "type": "string", "description": "User name", "default": "John Doe" },
            "age": { "type": "integer", "description": "User age", "default": 30 },
            "score": { "type": "number", "description": "User score", "default": 95.5 },
            "status": {
                "type": "string",
                "description": "User status",
                "enum": ["active", "inactive", "pending"],
                "default": "active",
            },
            "verified": {
                "type": "boolean",
                "description": "Verification status",
                "default": true,
            },
        },
    })
}

/// Sends `elicitation/create` with `requested_schema` and reports the
/// user's action and content as `"{label}: action=..., content=..."`.
async fn elicit(
    context: &RequestContext<RoleServer>,
    message: &str,
    requested_schema: Value,
    label: &str,
) -> Result<CallToolResult, McpError> {
    let requested_schema: ElicitationSchema = serde_json::from_value(requested_schema)
        .map_err(|e| McpError::internal_error(format!("bad elicitation schema: {e}"), None))?;
    let params = ElicitRequestParams::FormElicitationParams {
        meta: None,
        message: message.to_owned(),
        requested_schema,
    };
    match context.peer.create_elicitation(params).await {
        Ok(result) => {
            let action = serde_json::to_value(&result.action).unwrap_or_default();
            let action = action.as_str().unwrap_or("unknown");
            let content = result.content.unwrap_or(Value::Null);
            Ok(CallToolResult::success(vec![ContentBlock::text(format!(
                "{label}: action={action}, content={content}"
            ))]))
        }
        Err(e) => Ok(CallToolResult::error(vec![ContentBlock::text(format!(
            "Elicitation failed: {e}"
        ))])),
    }
}

/// The five enum shapes of SEP-1330, one field each.
fn sep1330_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "untitledSingle": {
                "type": "string",
                "description": "Untitled single-select",
                "enum": ["option1", "option2", "option3"],
            },
            "titledSingle": {
                "type": "string",
                "description": "Titled single-select",
                "oneOf": [
                    { "const": "value1", "title": "First Option" },
                    { "const": "value2", "title": "Second Option" },
                    { "const": "value3", "title": "Third Option" },
                ],
            },
            "legacyEnum": {
                "type": "string",
                "description": "Legacy titled enum",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"],
            },
            "untitledMulti": {
                "type": "array",
                "description": "Untitled multi-select",
                "items": { "type": "string", "enum": ["option1", "option2", "option3"] },
            },
            "titledMulti": {
                "type": "array",
                "description": "Titled multi-select",
                "items": {
                    "anyOf": [
                        { "const": "value1", "title": "First Choice" },
                        { "const": "value2", "title": "Second Choice" },
                        { "const": "value3", "title": "Third Choice" },
                    ],
                },
            },
        },
    })
}

pub fn resources() -> Vec<Resource> {
    vec![
        Resource::new(STATIC_TEXT, "static-text")
            .with_description("A static text resource")
            .with_mime_type("text/plain"),
        Resource::new(STATIC_BINARY, "static-binary")
            .with_description("A static PNG image")
            .with_mime_type("image/png"),
        Resource::new(WATCHED, "watched-resource")
            .with_description("A resource to subscribe to")
            .with_mime_type("text/plain"),
    ]
}

pub fn resource_templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(TEMPLATE, "template-data")
            .with_description("JSON data for any id")
            .with_mime_type("application/json"),
    ]
}

pub fn read_resource(uri: &str) -> Result<ReadResourceResult, McpError> {
    let content = match uri {
        STATIC_TEXT => {
            ResourceContents::text("This is the content of the static text resource.", uri)
                .with_mime_type("text/plain")
        }
        STATIC_BINARY => ResourceContents::blob(PNG_BASE64, uri).with_mime_type("image/png"),
        WATCHED => {
            ResourceContents::text("Watched resource content", uri).with_mime_type("text/plain")
        }
        _ => {
            let id = uri
                .strip_prefix("test://template/")
                .and_then(|rest| rest.strip_suffix("/data"))
                .filter(|id| !id.is_empty() && !id.contains('/'))
                .ok_or_else(|| McpError::resource_not_found(format!("no resource {uri}"), None))?;
            let data =
                json!({ "id": id, "templateTest": true, "data": format!("Data for ID: {id}") });
            ResourceContents::text(data.to_string(), uri).with_mime_type("application/json")
        }
    };
    Ok(ReadResourceResult::new(vec![content]))
}

pub fn prompts() -> Vec<Prompt> {
    let required = |name: &str, description: &str| {
        PromptArgument::new(name)
            .with_description(description)
            .with_required(true)
    };
    vec![
        Prompt::new(
            "test_simple_prompt",
            Some("A prompt without arguments"),
            None,
        ),
        Prompt::new(
            "test_prompt_with_arguments",
            Some("A prompt with two required arguments"),
            Some(vec![
                required("arg1", "First test argument"),
                required("arg2", "Second test argument"),
            ]),
        ),
        Prompt::new(
            "test_prompt_with_embedded_resource",
            Some("A prompt embedding a resource"),
            Some(vec![required(
                "resourceUri",
                "URI of the resource to embed",
            )]),
        ),
        Prompt::new(
            "test_prompt_with_image",
            Some("A prompt with an image"),
            None,
        ),
    ]
}

pub fn get_prompt(name: &str, args: &JsonObject) -> Result<GetPromptResult, McpError> {
    let arg = |name: &str| {
        args.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| McpError::invalid_params(format!("argument `{name}` is required"), None))
    };
    let messages = match name {
        "test_simple_prompt" => vec![PromptMessage::new_text(
            Role::User,
            "This is a simple prompt for testing.",
        )],
        "test_prompt_with_arguments" => vec![PromptMessage::new_text(
            Role::User,
            format!(
                "Prompt with arguments: arg1='{}', arg2='{}'",
                arg("arg1")?,
                arg("arg2")?
            ),
        )],
        "test_prompt_with_embedded_resource" => vec![
            PromptMessage::new(
                Role::User,
                ContentBlock::resource(
                    ResourceContents::text(
                        "Embedded resource content for testing.",
                        arg("resourceUri")?,
                    )
                    .with_mime_type("text/plain"),
                ),
            ),
            PromptMessage::new_text(Role::User, "Please process the embedded resource above."),
        ],
        "test_prompt_with_image" => vec![
            PromptMessage::new(Role::User, ContentBlock::image(PNG_BASE64, "image/png")),
            PromptMessage::new_text(Role::User, "Please analyze the image above."),
        ],
        _ => {
            return Err(McpError::invalid_params(
                format!("unknown prompt: {name}"),
                None,
            ));
        }
    };
    Ok(GetPromptResult::new(messages))
}

/// Completion for the arguments of `test_prompt_with_arguments` and the
/// template's `id`: fixed candidates that start with what was typed.
pub fn complete(request: &CompleteRequestParams) -> Result<CompleteResult, McpError> {
    let candidates: &[&str] = match (&request.r#ref, request.argument.name.as_str()) {
        (Reference::Prompt(p), "arg1" | "arg2") if p.name == "test_prompt_with_arguments" => {
            &["paris", "park", "party", "test", "testValue1", "testValue2"]
        }
        (Reference::Resource(r), "id") if r.uri == TEMPLATE => &["1", "2", "3", "123"],
        _ => &[],
    };
    let typed = request.argument.value.as_str();
    let values = candidates
        .iter()
        .filter(|c| c.starts_with(typed))
        .map(|c| (*c).to_owned())
        .collect();
    let info = CompletionInfo::new(values).map_err(|e| McpError::internal_error(e, None))?;
    Ok(CompleteResult::new(info))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(b64: &str) -> Vec<u8> {
        // A few lines of base64 rather than a dependency for two constants.
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::new();
        for c in b64.bytes().filter(|c| *c != b'=') {
            let v = alphabet.iter().position(|a| *a == c).expect("base64 digit");
            bits = (bits << 6) | u32::try_from(v).expect("small");
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push(u8::try_from((bits >> n) & 0xff).expect("byte"));
            }
        }
        out
    }

    #[test]
    fn media_constants_are_what_their_mime_types_say() {
        let png = decode(PNG_BASE64);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let wav = decode(WAV_BASE64);
        assert_eq!((&wav[..4], &wav[8..12]), (&b"RIFF"[..], &b"WAVE"[..]));
        // RIFF size field = file length - 8; data chunk length = 2 bytes.
        assert_eq!(
            u32::from_le_bytes([wav[4], wav[5], wav[6], wav[7]]) as usize,
            wav.len() - 8
        );
        assert_eq!(wav.len(), 46);
    }

    #[test]
    fn elicitation_schemas_survive_rmcp_types() {
        // The suite checks these shapes key by key: rmcp's typed schema
        // must neither drop (enumNames, oneOf) nor retype (30 vs 30.0) any.
        for schema in [user_schema(), sep1034_schema(), sep1330_schema()] {
            let typed: ElicitationSchema = serde_json::from_value(schema.clone()).expect("parses");
            let back = serde_json::to_value(&typed).expect("serialises");
            assert_eq!(back["properties"], schema["properties"]);
            assert_eq!(back.get("required"), schema.get("required"));
        }
    }

    #[test]
    fn template_reads_substitute_the_id_and_refuse_other_uris() {
        let result = read_resource("test://template/123/data").expect("read");
        let text = serde_json::to_value(&result).expect("json")["contents"][0]["text"].clone();
        assert!(
            text.as_str()
                .is_some_and(|t| t.contains("Data for ID: 123"))
        );
        assert!(read_resource("test://template//data").is_err());
        assert!(read_resource("test://nothing").is_err());
    }
}

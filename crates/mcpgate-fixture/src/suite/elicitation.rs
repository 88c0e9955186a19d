//! The suite's elicitation tools: a username and email, a default for
//! every primitive type (SEP-1034), and the five enum shapes (SEP-1330).

use rmcp::model::{
    CallToolResult, ContentBlock, ElicitRequestParams, ElicitationSchema, JsonObject,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use serde_json::{Value, json};

use super::string_arg;

/// `test_elicitation`: asks for a username and email with `message`.
pub async fn user(
    args: &JsonObject,
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    let message = string_arg(args, "message")?;
    elicit(context, message, user_schema(), "User response").await
}

/// `test_elicitation_sep1034_defaults`.
pub async fn sep1034_defaults(
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    let message = "Please review and update the form fields with defaults";
    elicit(context, message, sep1034_schema(), "Elicitation completed").await
}

/// `test_elicitation_sep1330_enums`.
pub async fn sep1330_enums(
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    let message = "Please select options from the enum fields";
    elicit(context, message, sep1330_schema(), "Elicitation completed").await
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

//! The built-in tools: `whoami`, and `get_user_details` when a directory
//! API is configured. Their definitions and the `tools/list` answers are
//! built once; a call gets the caller from its context, never from globals.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use mcpgate_token::Principal;
use rmcp::handler::server::common::{schema_for_empty_input, schema_for_output};
use rmcp::model::{
    CallToolResult, ContentBlock, ErrorData, Implementation, InitializeResult, ListToolsResult,
    ServerCapabilities, ServerResult, Tool,
};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::Stats;
use crate::downstream::{DownstreamError, UserDetails, UserDetailsSource};
use crate::protocol::is_stateless_wire;
use crate::service::{CallContext, McpService, ServiceFuture, ToolOutput};

/// What `whoami` answers, borrowed from the caller's principal.
#[derive(Debug, Serialize, JsonSchema, PartialEq, Eq)]
pub struct WhoAmI<'a> {
    /// False when the server runs with authentication off.
    pub authenticated: bool,
    /// Display name.
    pub name: Option<&'a str>,
    /// Sign-in name.
    pub preferred_username: Option<&'a str>,
    /// Object id of the user or application.
    pub oid: Option<&'a str>,
    /// Tenant id.
    pub tid: Option<&'a str>,
    /// Subject.
    pub sub: Option<&'a str>,
    /// Issuer of the token.
    pub issuer: Option<&'a str>,
    /// Delegated scopes.
    pub scopes: &'a [String],
    /// App roles.
    pub roles: &'a [String],
    /// The client application that obtained the token.
    pub client_app_id: Option<&'a str>,
    /// `delegated` or `app_only`.
    pub token_kind: Option<&'a str>,
}

impl<'a> WhoAmI<'a> {
    fn of(caller: Option<&'a Principal>) -> Self {
        let Some(p) = caller else {
            return Self {
                authenticated: false,
                name: None,
                preferred_username: None,
                oid: None,
                tid: None,
                sub: None,
                issuer: None,
                scopes: &[],
                roles: &[],
                client_app_id: None,
                token_kind: None,
            };
        };
        Self {
            authenticated: true,
            name: p.name.as_deref(),
            preferred_username: p.preferred_username.as_deref(),
            oid: p.object_id.as_deref(),
            tid: p.tenant_id.as_deref(),
            sub: Some(&p.subject),
            issuer: Some(&p.issuer),
            scopes: &p.scopes,
            roles: &p.roles,
            client_app_id: p.client_app_id.as_deref(),
            token_kind: Some(p.kind.as_str()),
        }
    }
}

/// The built-in tools.
#[derive(Debug)]
pub struct GateTools {
    info: InitializeResult,
    // `tools/list`, serialised once for each wire shape.
    list_legacy: Bytes,
    list_stateless: Bytes,
    stats: Arc<Stats>,
    user_details: Option<Arc<dyn UserDetailsSource>>,
}

impl GateTools {
    /// The tools, counting their calls in `stats`. `get_user_details` is
    /// listed only when there is a `user_details` source to answer it.
    pub fn new(stats: Arc<Stats>, user_details: Option<Arc<dyn UserDetailsSource>>) -> Self {
        let mut tools = vec![
            Tool::new(
                "whoami",
                "Who is calling: the signed-in user or application, as this server sees the access token (name, username, object and tenant ids, scopes, roles, client app, token kind).",
                schema_for_empty_input(),
            )
            .with_raw_output_schema(schema_for_output::<WhoAmI<'static>>()),
        ];
        if user_details.is_some() {
            tools.push(
                Tool::new(
                    "get_user_details",
                    "The signed-in user's profile from Microsoft Graph (/me): display name, mail, user principal name, job title and id. The server asks the directory with its own token for the user, never the caller's.",
                    schema_for_empty_input(),
                )
                .with_raw_output_schema(schema_for_output::<UserDetails>()),
            );
        }
        let stateless = ServerResult::ListToolsResult(ListToolsResult::with_all_items(tools));
        let mut legacy = stateless.clone();
        legacy.strip_result_type_for_legacy_peer();
        Self {
            info: InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
                .with_server_info(Implementation::new("mcpgate", env!("CARGO_PKG_VERSION")))
                .with_instructions(
                    "An MCP server secured by mcpgate. Call `whoami` to see who you are signed in as.",
                ),
            list_legacy: to_bytes(&legacy),
            list_stateless: to_bytes(&stateless),
            stats,
            user_details,
        }
    }

    async fn get_user_details(&self, caller: Option<&Arc<Principal>>) -> ToolOutput {
        let Some(source) = &self.user_details else {
            return ToolOutput::Model(tool_error("this server has no directory API configured"));
        };
        let Some(p) = caller else {
            return ToolOutput::Model(tool_error("get_user_details needs a signed-in caller"));
        };
        let result = source.user_details(p).await;
        audit("get_user_details", p, result.is_ok());
        match result {
            Ok(details) => structured(&details),
            Err(DownstreamError::ClaimsChallenge(claims)) => ToolOutput::Challenge(claims),
            Err(
                e @ (DownstreamError::NoGrant
                | DownstreamError::Refused(_)
                | DownstreamError::Unavailable(_)),
            ) => ToolOutput::Model(tool_error(&e.to_string())),
        }
    }
}

fn audit(tool: &str, p: &Principal, ok: bool) {
    tracing::info!(
        target: "mcpgate::audit",
        tool,
        oid = p.object_id.as_deref().unwrap_or(""),
        tid = p.tenant_id.as_deref().unwrap_or(""),
        client_app = p.client_app_id.as_deref().unwrap_or(""),
        ok,
        "tool called"
    );
}

fn to_bytes(result: &ServerResult) -> Bytes {
    // Model types always serialise.
    serde_json::to_vec(result).unwrap_or_default().into()
}

/// A successful result carrying `value` as structured content and, for
/// clients that read only text, as JSON text (what rmcp's
/// `CallToolResult::structured` makes), serialised in one pass.
fn structured(value: &impl Serialize) -> ToolOutput {
    let json = match serde_json::to_string(value) {
        Ok(json) => json,
        Err(e) => {
            return ToolOutput::Model(tool_error(&format!(
                "the result could not be serialised: {e}"
            )));
        }
    };
    let mut out = Vec::with_capacity(2 * json.len() + 80);
    out.extend_from_slice(br#"{"content":[{"type":"text","text":"#);
    // A string always serialises.
    let _ = serde_json::to_writer(&mut out, &json);
    out.extend_from_slice(br#"}],"structuredContent":"#);
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(br#","isError":false}"#);
    ToolOutput::Json(out.into())
}

fn tool_error(message: &str) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}

impl McpService for GateTools {
    fn info(&self) -> &InitializeResult {
        &self.info
    }

    fn list_tools(&self, cx: CallContext<'_>) -> Bytes {
        if is_stateless_wire(cx.version.as_str()) {
            self.list_stateless.clone()
        } else {
            self.list_legacy.clone()
        }
    }

    fn call_tool<'a>(
        &'a self,
        cx: CallContext<'a>,
        name: &'a str,
        _arguments: Option<&'a RawValue>,
    ) -> ServiceFuture<'a, Result<ToolOutput, ErrorData>> {
        Box::pin(async move {
            let result = match name {
                "whoami" => {
                    self.stats.tool_calls.fetch_add(1, Ordering::Relaxed);
                    if let Some(p) = cx.caller {
                        audit("whoami", p, true);
                    }
                    structured(&WhoAmI::of(cx.caller.map(|p| &**p)))
                }
                "get_user_details" if self.user_details.is_some() => {
                    self.stats.tool_calls.fetch_add(1, Ordering::Relaxed);
                    self.get_user_details(cx.caller).await
                }
                _ => {
                    return Err(ErrorData::invalid_params(
                        format!("unknown tool: {name}"),
                        None,
                    ));
                }
            };
            Ok(result)
        })
    }
}

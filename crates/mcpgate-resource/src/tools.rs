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
use crate::downstream::{UserDetails, UserDetailsSource};
use crate::protocol::is_stateless_wire;
use crate::service::{CallContext, McpService, ServiceFuture};

/// What `whoami` answers.
#[derive(Debug, Serialize, JsonSchema, PartialEq, Eq)]
pub struct WhoAmI {
    /// False when the server runs with authentication off.
    pub authenticated: bool,
    /// Display name.
    pub name: Option<String>,
    /// Sign-in name.
    pub preferred_username: Option<String>,
    /// Object id of the user or application.
    pub oid: Option<String>,
    /// Tenant id.
    pub tid: Option<String>,
    /// Subject.
    pub sub: Option<String>,
    /// Issuer of the token.
    pub issuer: Option<String>,
    /// Delegated scopes.
    pub scopes: Vec<String>,
    /// App roles.
    pub roles: Vec<String>,
    /// The client application that obtained the token.
    pub client_app_id: Option<String>,
    /// `delegated` or `app_only`.
    pub token_kind: Option<String>,
}

impl WhoAmI {
    fn of(caller: Option<&Principal>) -> Self {
        let Some(p) = caller else {
            return Self {
                authenticated: false,
                name: None,
                preferred_username: None,
                oid: None,
                tid: None,
                sub: None,
                issuer: None,
                scopes: Vec::new(),
                roles: Vec::new(),
                client_app_id: None,
                token_kind: None,
            };
        };
        Self {
            authenticated: true,
            name: p.name.clone(),
            preferred_username: p.preferred_username.clone(),
            oid: p.object_id.clone(),
            tid: p.tenant_id.clone(),
            sub: Some(p.subject.clone()),
            issuer: Some(p.issuer.clone()),
            scopes: p.scopes.clone(),
            roles: p.roles.clone(),
            client_app_id: p.client_app_id.clone(),
            token_kind: Some(p.kind.as_str().to_owned()),
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
            .with_raw_output_schema(schema_for_output::<WhoAmI>()),
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

    async fn get_user_details(&self, caller: Option<&Arc<Principal>>) -> CallToolResult {
        let Some(source) = &self.user_details else {
            return tool_error("this server has no directory API configured");
        };
        let Some(p) = caller else {
            return tool_error("get_user_details needs a signed-in caller");
        };
        let result = source.user_details(p).await;
        tracing::info!(
            target: "mcpgate::audit",
            tool = "get_user_details",
            oid = p.object_id.as_deref().unwrap_or(""),
            tid = p.tenant_id.as_deref().unwrap_or(""),
            client_app = p.client_app_id.as_deref().unwrap_or(""),
            ok = result.is_ok(),
            "tool called"
        );
        match result {
            Ok(details) => structured(&details),
            Err(e) => tool_error(&e.to_string()),
        }
    }
}

fn to_bytes(result: &ServerResult) -> Bytes {
    // Model types always serialise.
    serde_json::to_vec(result).unwrap_or_default().into()
}

fn structured(value: &impl Serialize) -> CallToolResult {
    match serde_json::to_value(value) {
        Ok(v) => CallToolResult::structured(v),
        Err(e) => tool_error(&format!("the result could not be serialised: {e}")),
    }
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
    ) -> ServiceFuture<'a, Result<CallToolResult, ErrorData>> {
        Box::pin(async move {
            let result = match name {
                "whoami" => {
                    self.stats.tool_calls.fetch_add(1, Ordering::Relaxed);
                    if let Some(p) = cx.caller {
                        tracing::info!(
                            target: "mcpgate::audit",
                            tool = "whoami",
                            oid = p.object_id.as_deref().unwrap_or(""),
                            tid = p.tenant_id.as_deref().unwrap_or(""),
                            client_app = p.client_app_id.as_deref().unwrap_or(""),
                            "tool called"
                        );
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

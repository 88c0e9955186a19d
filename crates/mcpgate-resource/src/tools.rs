//! The built-in tools, served by rmcp. The caller reaches a handler through
//! the HTTP request's extensions, never through globals.

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Json;
use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Serialize;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::Stats;
use crate::auth::Caller;
use crate::downstream::{UserDetails, UserDetailsSource};

/// The MCP server behind the gate.
#[derive(Debug, Clone)]
pub struct GateTools {
    tool_router: ToolRouter<Self>,
    stats: Arc<Stats>,
    user_details: Option<Arc<dyn UserDetailsSource>>,
}

impl GateTools {
    /// The tools, counting their calls in `stats`. `get_user_details` is
    /// listed only when there is a `user_details` source to answer it.
    pub fn new(stats: Arc<Stats>, user_details: Option<Arc<dyn UserDetailsSource>>) -> Self {
        let mut tool_router = Self::tool_router();
        if user_details.is_none() {
            tool_router.remove_route("get_user_details");
        }
        Self {
            tool_router,
            stats,
            user_details,
        }
    }
}

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

#[tool_router]
impl GateTools {
    /// Who the caller is, as this server sees their access token.
    #[tool(
        description = "Who is calling: the signed-in user or application, as this server sees the access token (name, username, object and tenant ids, scopes, roles, client app, token kind)."
    )]
    async fn whoami(&self, Extension(parts): Extension<http::request::Parts>) -> Json<WhoAmI> {
        self.stats.tool_calls.fetch_add(1, Ordering::Relaxed);
        let Some(Caller(p)) = parts.extensions.get::<Caller>() else {
            return Json(WhoAmI {
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
            });
        };
        tracing::info!(
            target: "mcpgate::audit",
            tool = "whoami",
            oid = p.object_id.as_deref().unwrap_or(""),
            tid = p.tenant_id.as_deref().unwrap_or(""),
            client_app = p.client_app_id.as_deref().unwrap_or(""),
            "tool called"
        );
        Json(WhoAmI {
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
        })
    }

    /// The signed-in user's profile from the directory, fetched with a
    /// token the server obtained for them.
    #[tool(
        description = "The signed-in user's profile from Microsoft Graph (/me): display name, mail, user principal name, job title and id. The server asks the directory with its own token for the user, never the caller's."
    )]
    async fn get_user_details(
        &self,
        Extension(parts): Extension<http::request::Parts>,
    ) -> Result<Json<UserDetails>, String> {
        self.stats.tool_calls.fetch_add(1, Ordering::Relaxed);
        let Some(source) = &self.user_details else {
            return Err("this server has no directory API configured".to_owned());
        };
        let Some(Caller(p)) = parts.extensions.get::<Caller>() else {
            return Err("get_user_details needs a signed-in caller".to_owned());
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
        result.map(Json).map_err(|e| e.to_string())
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for GateTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mcpgate", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "An MCP server secured by mcpgate. Call `whoami` to see who you are signed in as.",
            )
    }
}

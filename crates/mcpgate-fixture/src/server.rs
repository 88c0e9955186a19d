//! The rmcp handler: what is shared by the whole process (the tool
//! descriptions `fixture_mutate` changed) and what belongs to one session
//! (its log level and resource subscriptions).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

// Logging is deprecated from protocol 2026-07-28 on, but the suite's
// logging scenarios run at 2025-11-25, where it is current.
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult,
    GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
    SubscribeRequestParams, Tool, UnsubscribeRequestParams,
};
#[allow(deprecated)]
use rmcp::model::{LoggingLevel, SetLevelRequestParams};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};

use crate::{extra, suite};

/// How the process is reached: `fixture_whoami` reports request headers
/// over HTTP and `MCPGATE_USER_*` variables over stdio; over HTTP,
/// `test_reconnection` closes its stream through the session manager.
#[derive(Debug, Clone)]
pub enum Transport {
    Stdio,
    Http(Arc<LocalSessionManager>),
}

/// State of the whole process, seen by every session.
#[derive(Debug)]
pub struct Shared {
    pub test_tools: bool,
    pub transport: Transport,
    /// Descriptions set by `fixture_mutate`, by tool name. Process-wide, so
    /// that a gateway that lists tools on another upstream session sees the
    /// change too.
    descriptions: Mutex<HashMap<String, String>>,
}

impl Shared {
    pub fn new(test_tools: bool, transport: Transport) -> Arc<Self> {
        Arc::new(Self {
            test_tools,
            transport,
            descriptions: Mutex::new(HashMap::new()),
        })
    }

    /// Every tool this process lists, with mutated descriptions applied.
    pub fn tools(&self) -> Vec<Tool> {
        let mut tools = suite::tools();
        if self.test_tools {
            tools.extend(extra::tools());
        }
        let descriptions = self
            .descriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for tool in &mut tools {
            if let Some(description) = descriptions.get(tool.name.as_ref()) {
                tool.description = Some(description.clone().into());
            }
        }
        tools
    }

    /// Sets `tool`'s description; false when no such tool is listed.
    pub fn set_description(&self, tool: &str, description: &str) -> bool {
        if !self.tools().iter().any(|t| t.name == tool) {
            return false;
        }
        self.descriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tool.to_owned(), description.to_owned());
        true
    }
}

/// State of one MCP session (one stdio connection, one HTTP session).
#[derive(Debug, Default)]
pub struct Session {
    /// The least severe level the client asked for (`logging/setLevel`);
    /// none asked means everything is sent.
    min_log_level: Mutex<Option<u8>>,
    subscriptions: Mutex<HashSet<String>>,
}

impl Session {
    #[allow(deprecated)]
    pub fn wants_log(&self, level: LoggingLevel) -> bool {
        let min = *self
            .min_log_level
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        min.is_none_or(|min| level as u8 >= min)
    }
}

/// The handler rmcp runs, one per session.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub shared: Arc<Shared>,
    pub session: Arc<Session>,
}

impl Fixture {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            session: Arc::default(),
        }
    }
}

#[allow(deprecated)] // logging/setLevel and resources/(un)subscribe: see LoggingLevel
impl ServerHandler for Fixture {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_logging()
            .enable_completions()
            .enable_prompts()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_tools()
            .enable_tool_list_changed()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new(
                "mcpgate-fixture",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Test fixture for mcpgate: the MCP conformance suite's tools, resources and \
                 prompts. Not for real use.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.shared.tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let args = request.arguments.unwrap_or_default();
        if let Some(result) = suite::call_tool(self, &request.name, &args, &context).await {
            return result.map(Into::into);
        }
        if self.shared.test_tools
            && let Some(result) = extra::call_tool(self, &request.name, &args, &context).await
        {
            return result.map(Into::into);
        }
        Err(McpError::invalid_params(
            format!("unknown tool: {}", request.name),
            None,
        ))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(suite::resources()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(
            suite::resource_templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        suite::read_resource(&request.uri).map(Into::into)
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.session
            .subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(request.uri);
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.session
            .subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&request.uri);
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        Ok(ListPromptsResult::with_all_items(suite::prompts()))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        suite::get_prompt(&request.name, &request.arguments.unwrap_or_default()).map(Into::into)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        suite::complete(&request)
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        *self
            .session
            .min_log_level
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(request.level as u8);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_tools_are_listed_only_when_asked_for() {
        let plain = Shared::new(false, Transport::Stdio).tools();
        assert!(plain.iter().all(|t| !t.name.starts_with("fixture_")));
        assert!(plain.iter().any(|t| t.name == "test_simple_text"));
        let with = Shared::new(true, Transport::Stdio).tools();
        assert!(with.iter().any(|t| t.name == "fixture_echo"));
        assert_eq!(with.len(), plain.len() + extra::tools().len());
    }

    #[test]
    fn every_tool_has_a_description_and_a_unique_name() {
        let tools = Shared::new(true, Transport::Stdio).tools();
        let names: HashSet<_> = tools.iter().map(|t| t.name.clone()).collect();
        assert_eq!(names.len(), tools.len());
        assert!(
            tools
                .iter()
                .all(|t| t.description.as_deref().is_some_and(|d| !d.is_empty()))
        );
    }

    #[test]
    fn a_mutated_description_is_listed_and_an_unknown_tool_is_refused() {
        let shared = Shared::new(true, Transport::Stdio);
        assert!(shared.set_description("fixture_echo", "changed"));
        let echo = shared
            .tools()
            .into_iter()
            .find(|t| t.name == "fixture_echo");
        assert_eq!(echo.and_then(|t| t.description).as_deref(), Some("changed"));
        assert!(!shared.set_description("no_such_tool", "x"));
    }

    #[test]
    #[allow(deprecated)]
    fn log_level_filters_less_severe_messages() {
        let session = Session::default();
        assert!(session.wants_log(LoggingLevel::Debug));
        *session.min_log_level.lock().expect("lock") = Some(LoggingLevel::Warning as u8);
        assert!(!session.wants_log(LoggingLevel::Info));
        assert!(session.wants_log(LoggingLevel::Error));
    }
}

//! What answers MCP requests behind the endpoint: the built-in tools
//! today, an upstream server in gateway mode. The endpoint has done the
//! protocol's work (authentication, session, revision, headers) by the
//! time a service is asked, and hands it the caller.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use mcpgate_token::Principal;
use rmcp::model::{CallToolResult, ErrorData, InitializeResult, ProtocolVersion};
use serde_json::value::RawValue;

/// A boxed future, so that services can be held as trait objects.
pub type ServiceFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who is asking, and in which revision of the protocol.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    /// The authenticated caller; `None` when authentication is off.
    pub caller: Option<&'a Arc<Principal>>,
    /// The revision the request speaks.
    pub version: &'a ProtocolVersion,
}

/// An MCP server behind the endpoint.
pub trait McpService: Send + Sync + 'static {
    /// Name, version, capabilities and instructions, as `initialize` and
    /// `server/discover` report them.
    fn info(&self) -> &InitializeResult;

    /// The `tools/list` result for this caller, already serialised (the
    /// list rarely changes, so it need not be built per request).
    fn list_tools(&self, cx: CallContext<'_>) -> Bytes;

    /// Calls tool `name` with `arguments` as sent.
    fn call_tool<'a>(
        &'a self,
        cx: CallContext<'a>,
        name: &'a str,
        arguments: Option<&'a RawValue>,
    ) -> ServiceFuture<'a, Result<ToolOutput, ErrorData>>;
}

/// What a tool call answers.
#[derive(Debug)]
pub enum ToolOutput {
    /// A result in rmcp's model.
    Model(CallToolResult),
    /// A result the tool serialised itself: a `CallToolResult` JSON object
    /// without `resultType` (the endpoint adds it where the revision wants
    /// it). Spares a tool whose answer is already JSON a round trip through
    /// `serde_json::Value`.
    Json(Bytes),
    /// No answer until the caller signs in again satisfying these claims
    /// (the identity provider refused the tool a token to act for them):
    /// the endpoint answers HTTP 401 with the claims challenge.
    Challenge(crate::challenge::ClaimsChallenge),
}

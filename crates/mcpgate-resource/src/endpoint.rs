//! The MCP endpoint over Streamable HTTP, served in the request's own task.
//!
//! mcpgate owns this layer rather than running rmcp's session transport:
//! that transport gives every session a worker task and channels, so each
//! call hops between tasks, calls on one session queue behind each other,
//! and each open session costs tens of kilobytes. Here a request is read
//! once, checked (origin, token, session, revision, headers) and answered
//! by the [`McpService`] in the same future; a session is a table entry.
//! rmcp still supplies the protocol's types and constants.
//!
//! Every reply is a single JSON body: nothing here sends server-initiated
//! messages yet, so there is no stream to open (`GET` is 405, which the
//! transport allows).

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{ACCEPT, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use mcpgate_token::Principal;
use rmcp::model::{
    DiscoverResult, ErrorCode, ErrorData, InitializeRequestParams, ProtocolVersion, RequestId,
    ServerResult,
};
use rmcp::transport::common::http_header::HEADER_SESSION_ID;
use serde_json::value::RawValue;

use crate::auth::{self, AuthState};
use crate::challenge::{AuthRejection, ClaimsChallenge};
use crate::closing::Closing;
use crate::gateway::credential::CallerToken;
use crate::gateway::{Gateway, UpstreamError, frame::Outcome, mux, reply};
use crate::guard::{Guard, Target};
use crate::origin::OriginPolicy;
use crate::policy::Kind;
use crate::protocol::{self, Params, RequestMeta};
use crate::service::{CallContext, McpService, ToolOutput};
use crate::session::{OpenError, Sessions};
use crate::wire::{self, Incoming, json};

// The owner of every session when authentication is off.
const ANONYMOUS: &str = "anonymous";

/// Everything the endpoint needs, built once.
pub struct Endpoint {
    service: Arc<dyn McpService>,
    auth: Option<AuthState>,
    origins: OriginPolicy,
    pub(crate) sessions: Sessions,
    pub(crate) max_body: usize,
    discover: Bytes,
    pub(crate) gateway: Option<Arc<Gateway>>,
    guard: Arc<Guard>,
    // Sessions of the 2024-11-05 HTTP+SSE transport: where their messages
    // go ([`crate::legacy`]).
    pub(crate) legacy:
        std::sync::Mutex<std::collections::HashMap<Arc<str>, tokio::sync::mpsc::Sender<Bytes>>>,
    closing: Closing,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("authenticated", &self.auth.is_some())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint answering with `service`; `auth` is `None` when
    /// authentication is off.
    pub fn new(
        service: Arc<dyn McpService>,
        auth: Option<AuthState>,
        origins: OriginPolicy,
        sessions: Sessions,
        max_body: usize,
    ) -> Self {
        let info = service.info().clone();
        let discover = DiscoverResult::from_server_info(protocol::supported().to_vec(), info);
        let discover = serde_json::to_vec(&discover).unwrap_or_default().into();
        Self {
            service,
            auth,
            origins,
            sessions,
            max_body,
            discover,
            gateway: None,
            guard: Arc::new(Guard::new(Arc::default(), None, None)),
            legacy: std::sync::Mutex::default(),
            closing: Closing::default(),
        }
    }

    /// Ends standalone streams when `closing` is closed.
    pub fn with_closing(mut self, closing: Closing) -> Self {
        self.closing = closing;
        self
    }

    /// Applies `guard` (policy, pins, audit) to every call.
    pub fn with_guard(mut self, guard: Arc<Guard>) -> Self {
        self.guard = guard;
        self
    }

    /// The same endpoint in front of an upstream server: every request of
    /// a session goes to the session's upstream session.
    pub fn with_gateway(mut self, gateway: Arc<Gateway>) -> Self {
        let ended = gateway.clone();
        self.sessions
            .on_end(Arc::new(move |id: &str| ended.close(id)));
        self.gateway = Some(gateway);
        self
    }

    /// The open sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }
}

/// Serves `/mcp`.
pub async fn handle(State(ep): State<Arc<Endpoint>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Some(refusal) = ep.origin_refusal(&parts) {
        return refusal;
    }
    if !matches!(parts.method, Method::POST | Method::GET | Method::DELETE) {
        return method_not_allowed();
    }
    let caller = match ep.caller(&parts).await {
        Ok(caller) => caller,
        Err(challenge) => return challenge,
    };
    match parts.method {
        Method::POST => ep.post(&parts, body, caller.as_ref()).await,
        Method::DELETE => ep.delete(&parts, owner(caller.as_ref())).await,
        // GET opens a stream for server-initiated messages: only an
        // upstream sends any.
        _ => match session_header(&parts.headers) {
            Some(id) => match ep.sessions.find(id, owner(caller.as_ref())).await {
                None => session_not_found(),
                Some(session) => match ep.gateway.as_ref().and_then(|g| g.session(&session.id)) {
                    // A client that lost a request's stream picks it up
                    // after the last event it saw.
                    Some(links) => match parts.headers.get("last-event-id") {
                        Some(last) => match last.to_str().ok().and_then(|l| links.streams.resume(l)) {
                            Some(rest) => reply::event_stream(rest),
                            None => (
                                StatusCode::NOT_FOUND,
                                "Not Found: no stream to resume from that Last-Event-ID (ended and read, or dropped)",
                            )
                                .into_response(),
                        },
                        None => reply::standalone(links.standalone(), ep.closing.clone()),
                    },
                    None => method_not_allowed(),
                },
            },
            None => method_not_allowed(),
        },
    }
}

impl Endpoint {
    /// The DNS-rebinding defence's answer to a request from a `Host` or
    /// `Origin` this endpoint does not serve.
    pub(crate) fn origin_refusal(&self, parts: &Parts) -> Option<Response> {
        let refused = self.origins.check(&parts.uri, &parts.headers).err()?;
        tracing::warn!(target: "mcpgate::mcp", reason = refused.message(), "request refused (DNS-rebinding defence)");
        let status = match refused {
            crate::origin::Refused::BadHost => StatusCode::BAD_REQUEST,
            _ => StatusCode::FORBIDDEN,
        };
        Some((status, refused.message()).into_response())
    }

    /// Who calls: their validated token's principal, `None` when
    /// authentication is off, or the challenge to answer with.
    pub(crate) async fn caller(&self, parts: &Parts) -> Result<Option<Arc<Principal>>, Response> {
        match &self.auth {
            Some(auth) => auth::authenticate(auth, parts).await.map(Some),
            None => Ok(None),
        }
    }
}

/// Who sessions are bound to.
pub(crate) fn owner(caller: Option<&Arc<Principal>>) -> &str {
    caller.map_or(ANONYMOUS, |p| p.identity_key())
}

impl Endpoint {
    async fn post(&self, parts: &Parts, body: Body, caller: Option<&Arc<Principal>>) -> Response {
        let headers = &parts.headers;
        if !accepts_json_and_sse(headers) {
            return (
                StatusCode::NOT_ACCEPTABLE,
                "Not Acceptable: Client must accept both application/json and text/event-stream",
            )
                .into_response();
        }
        if !is_json(headers) {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported Media Type: Content-Type must be application/json",
            )
                .into_response();
        }
        let bytes = match read_body(body, self.max_body).await {
            Ok(bytes) => bytes,
            Err(refusal) => return refusal,
        };
        let message = match parse_or_refuse(&bytes) {
            Ok(m) => m,
            Err(refusal) => return refusal,
        };
        let header_version = match protocol::header_version(headers) {
            Ok(v) => v,
            Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
        };

        if let Incoming::Request { id, method, params } = &message
            && method == "initialize"
        {
            return self
                .initialize(headers, id, *params, header_version, caller)
                .await;
        }

        // A session's requests speak the revision its handshake chose.
        if let Some(session_id) = session_header(headers) {
            let Some(session) = self.sessions.find(session_id, owner(caller)).await else {
                return session_not_found();
            };
            if let Some(v) = header_version
                && protocol::known(v).is_none()
            {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("Bad Request: Unsupported MCP-Protocol-Version: {v}"),
                )
                    .into_response();
            }
            if let Some(gateway) = &self.gateway {
                return self
                    .forward(
                        gateway,
                        &session.id,
                        caller,
                        presented_token(gateway, headers).as_ref(),
                        message,
                        None,
                    )
                    .await;
            }
            let Incoming::Request { id, method, params } = message else {
                // Notifications (`initialized`, `cancelled`) and answers to
                // requests this server never sends need nothing.
                return StatusCode::ACCEPTED.into_response();
            };
            let params = Params::of(params);
            if let Some(refusal) = check_meta_agrees(&id, &params.meta, header_version) {
                return refusal;
            }
            if header_version.is_some_and(protocol::is_stateless_wire)
                && let Err(why) = protocol::check_routing_headers(
                    headers,
                    &method,
                    params.routed_name(&method),
                    true,
                )
            {
                return header_mismatch(&id, why);
            }
            let cx = CallContext {
                caller,
                version: &session.version,
            };
            return self.guarded(cx, false, &id, &method, &params).await;
        }

        // No session: the 2026-07-28 wire, where each request carries its
        // revision and the client's capabilities in `_meta`.
        let (id, method, params) = match message {
            Incoming::Request { id, method, params } => (id, method, params),
            Incoming::Notification { .. } => return StatusCode::ACCEPTED.into_response(),
            Incoming::Response { .. } => {
                let error = ErrorData::invalid_request(
                    "a response without a session answers nothing here",
                    None,
                );
                return refuse(StatusCode::BAD_REQUEST, None, &error);
            }
        };
        if self.gateway.is_some() {
            // An upstream session is what carries a client's state to the
            // upstream server; a request without one has nowhere to go.
            let error = ErrorData::invalid_request(
                "Bad Request: this server is a gateway and needs a session: send initialize first (Mcp-Session-Id)",
                None,
            );
            return refuse(StatusCode::BAD_REQUEST, Some(&id), &error);
        }
        let params = Params::of(params);
        let meta = &params.meta;
        let Some(meta_version) = meta.protocol_version.as_deref() else {
            if method == "server/discover"
                || header_version.is_some_and(protocol::is_stateless_wire)
            {
                let error = protocol::missing_meta_error(&meta.missing());
                return refuse(StatusCode::BAD_REQUEST, Some(&id), &error);
            }
            let error = ErrorData::invalid_request(
                "Bad Request: Mcp-Session-Id header is required: send initialize first, or use the 2026-07-28 wire (protocol version and client capabilities in each request's _meta)",
                None,
            );
            return refuse(StatusCode::BAD_REQUEST, Some(&id), &error);
        };
        let missing = meta.missing();
        if !missing.is_empty() {
            let error = protocol::missing_meta_error(&missing);
            return refuse(StatusCode::BAD_REQUEST, Some(&id), &error);
        }
        if let Some(refusal) = check_meta_agrees(&id, meta, header_version) {
            return refusal;
        }
        let Some(version) = protocol::known(meta_version) else {
            let error = ErrorData::unsupported_protocol_version(
                serde_json::from_value(serde_json::Value::String(meta_version.to_owned()))
                    .unwrap_or(ProtocolVersion::LATEST),
                protocol::supported(),
            );
            return refuse(StatusCode::BAD_REQUEST, Some(&id), &error);
        };
        if protocol::is_stateless_wire(meta_version)
            && let Err(why) =
                protocol::check_routing_headers(headers, &method, params.routed_name(&method), true)
        {
            return header_mismatch(&id, why);
        }
        let cx = CallContext {
            caller,
            version: &version,
        };
        self.guarded(cx, true, &id, &method, &params).await
    }

    /// [`Self::dispatch`] behind the guard: the built-in tools answer to the
    /// same policy and audit as an upstream's.
    async fn guarded(
        &self,
        cx: CallContext<'_>,
        stateless: bool,
        id: &RequestId,
        method: &str,
        params: &Params<'_>,
    ) -> Response {
        let target = Target::of(method, params.name.as_deref(), params.uri.as_deref());
        if let Some(target) = target
            && let Some(refusal) = self
                .guard
                .check(cx.caller, id, target, params.arguments, false)
        {
            return refusal;
        }
        let finish = self
            .guard
            .finish(cx.caller, id, method, target, params.arguments, None);
        let (status, body) = match self.dispatch(cx, stateless, id, method, params).await {
            Ok(answer) => answer,
            Err(claims) => {
                if let Some(target) = target {
                    self.guard
                        .unavailable(cx.caller, id, target, "insufficient_claims");
                }
                let refused = UpstreamError::ClaimsChallenge(claims);
                if let Some(challenge) = self.claims_challenge(&refused) {
                    return challenge;
                }
                let error = ErrorData::internal_error(refused.to_string(), None);
                (StatusCode::OK, wire::error(Some(id), &error))
            }
        };
        match finish {
            Some(finish) => json(status, finish(body, reply::Ended::Answered).await),
            None => json(status, body),
        }
    }

    async fn initialize(
        &self,
        headers: &HeaderMap,
        id: &RequestId,
        params: Option<&RawValue>,
        header_version: Option<&str>,
        caller: Option<&Arc<Principal>>,
    ) -> Response {
        let owner = owner(caller);
        if session_header(headers).is_some() {
            let error = ErrorData::invalid_request(
                "this session is already initialized: send initialize without Mcp-Session-Id to open a new one",
                None,
            );
            return refuse(StatusCode::BAD_REQUEST, Some(id), &error);
        }
        let init: InitializeRequestParams = match params.map(|p| serde_json::from_str(p.get())) {
            Some(Ok(init)) => init,
            Some(Err(e)) => {
                let error =
                    ErrorData::invalid_params(format!("invalid initialize params: {e}"), None);
                return refuse(StatusCode::BAD_REQUEST, Some(id), &error);
            }
            None => {
                let error = ErrorData::invalid_params("initialize needs params", None);
                return refuse(StatusCode::BAD_REQUEST, Some(id), &error);
            }
        };
        if let Some(h) = header_version
            && h != init.protocol_version.as_str()
        {
            let error = ErrorData::invalid_request(
                format!(
                    "Invalid Request: MCP-Protocol-Version header ({h}) does not match initialize params.protocolVersion ({})",
                    init.protocol_version
                ),
                None,
            );
            return refuse(StatusCode::BAD_REQUEST, Some(id), &error);
        }
        if let Err(why) = protocol::check_routing_headers(headers, "initialize", None, false) {
            return header_mismatch(id, why);
        }
        let version = protocol::negotiate(&init.protocol_version);
        let session = match self.sessions.open(owner, version.clone()).await {
            Ok(session) => session,
            Err(e @ OpenError::Full) => {
                tracing::warn!(target: "mcpgate::sessions", limit = self.sessions.limits().max_total, "refused a new MCP session: the server is at its session cap");
                let error = ErrorData::new(ErrorCode(-32000), e.to_string(), None);
                let mut response = refuse(StatusCode::SERVICE_UNAVAILABLE, Some(id), &error);
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("30"));
                return response;
            }
            Err(e @ OpenError::NoRandom) => {
                tracing::error!(target: "mcpgate::sessions", error = %e, "could not open an MCP session");
                let error = ErrorData::internal_error(e.to_string(), None);
                return refuse(StatusCode::INTERNAL_SERVER_ERROR, Some(id), &error);
            }
        };
        tracing::debug!(target: "mcpgate::sessions", version = %version, client = init.client_info.name, "MCP session opened");
        let body = match (&self.gateway, params) {
            (Some(gateway), Some(params)) => {
                match gateway
                    .open(
                        &session.id,
                        caller.map(|p| &**p),
                        presented_token(gateway, headers).as_ref(),
                        params,
                    )
                    .await
                {
                    Ok(upstream) => upstream_initialized(id, &upstream, &version),
                    Err(e) => {
                        self.sessions.close(&session.id, owner).await;
                        if let Some(challenge) = self.claims_challenge(&e) {
                            return challenge;
                        }
                        tracing::warn!(target: "mcpgate::upstream", error = %e, "could not open an upstream session");
                        let error = ErrorData::internal_error(
                            format!("the upstream MCP server is unavailable: {e}"),
                            None,
                        );
                        return refuse(StatusCode::OK, Some(id), &error);
                    }
                }
            }
            _ => wire::result(
                id,
                &ServerResult::InitializeResult(
                    self.service.info().clone().with_protocol_version(version),
                ),
            ),
        };
        let mut response = json(StatusCode::OK, body);
        if let Ok(value) = HeaderValue::from_str(&session.id) {
            response.headers_mut().insert(HEADER_SESSION_ID, value);
        }
        response
    }

    /// Answers one request. `stateless` marks the 2026-07-28 wire, where
    /// `ping` is gone and an unknown method is a 404. A tool that needs the
    /// caller to sign in again satisfying claims answers nothing: the
    /// claims are returned for the challenge.
    async fn dispatch(
        &self,
        cx: CallContext<'_>,
        stateless: bool,
        id: &RequestId,
        method: &str,
        params: &Params<'_>,
    ) -> Result<(StatusCode, Bytes), ClaimsChallenge> {
        let outcome = match method {
            "ping" if !stateless => Ok(wire::raw_result(id, b"{}")),
            "server/discover" => Ok(wire::raw_result(id, &self.discover)),
            "tools/list" => Ok(wire::raw_result(id, &self.service.list_tools(cx))),
            "tools/call" => match self.call_tool(cx, id, params).await {
                Ok(Ok(body)) => Ok(body),
                Ok(Err(claims)) => return Err(claims),
                Err(error) => Err(error),
            },
            _ => Err(ErrorData::new(
                ErrorCode::METHOD_NOT_FOUND,
                method.to_owned(),
                None,
            )),
        };
        Ok(match outcome {
            Ok(body) => (StatusCode::OK, body),
            Err(error) => {
                // Sessions keep JSON-RPC errors in-band (HTTP 200); the
                // 2026-07-28 wire maps some to HTTP statuses.
                let status = match error.code {
                    ErrorCode::METHOD_NOT_FOUND if stateless => StatusCode::NOT_FOUND,
                    ErrorCode::UNSUPPORTED_PROTOCOL_VERSION
                    | ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY
                    | ErrorCode::HEADER_MISMATCH
                        if stateless =>
                    {
                        StatusCode::BAD_REQUEST
                    }
                    _ => StatusCode::OK,
                };
                (status, wire::error(Some(id), &error))
            }
        })
    }

    /// A tool's answer; inside, the claims a tool needs the caller to sign
    /// in again with before it can answer.
    async fn call_tool(
        &self,
        cx: CallContext<'_>,
        id: &RequestId,
        params: &Params<'_>,
    ) -> Result<Result<Bytes, ClaimsChallenge>, ErrorData> {
        let Some(name) = params.name.as_deref() else {
            return Err(ErrorData::invalid_params(
                "tools/call needs the name of a tool",
                None,
            ));
        };
        let stateless = protocol::is_stateless_wire(cx.version.as_str());
        Ok(
            match self.service.call_tool(cx, name, params.arguments).await? {
                ToolOutput::Model(result) => {
                    let mut result = ServerResult::CallToolResult(result);
                    if !stateless {
                        result.strip_result_type_for_legacy_peer();
                    }
                    Ok(wire::result(id, &result))
                }
                ToolOutput::Json(json) if stateless => {
                    // The 2026-07-28 wire names the result's type (SEP-2322).
                    let rest = json.strip_prefix(b"{").unwrap_or(&json);
                    let mut result = Vec::with_capacity(json.len() + 32);
                    result.extend_from_slice(br#"{"resultType":"complete""#);
                    if rest.first().is_some_and(|b| *b != b'}') {
                        result.push(b',');
                    }
                    result.extend_from_slice(rest);
                    Ok(wire::raw_result(id, &result))
                }
                ToolOutput::Json(json) => Ok(wire::raw_result(id, &json)),
                ToolOutput::Challenge(claims) => Err(claims),
            },
        )
    }

    async fn delete(&self, parts: &Parts, owner: &str) -> Response {
        let Some(id) = session_header(&parts.headers) else {
            return (
                StatusCode::BAD_REQUEST,
                "Bad Request: DELETE needs the Mcp-Session-Id of the session to end",
            )
                .into_response();
        };
        if self.sessions.close(id, owner).await {
            StatusCode::NO_CONTENT.into_response()
        } else {
            session_not_found()
        }
    }
}

/// The upstream's `initialize` result, at the revision negotiated with
/// the client.
pub(crate) fn upstream_initialized(
    id: &RequestId,
    upstream: &RawValue,
    version: &ProtocolVersion,
) -> Bytes {
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(upstream.get()) {
        Ok(mut result) => {
            result.insert(
                "protocolVersion".to_owned(),
                serde_json::Value::String(version.as_str().to_owned()),
            );
            wire::result(id, &result)
        }
        Err(e) => wire::error(
            Some(id),
            &ErrorData::internal_error(
                format!("the upstream's initialize result is not an object: {e}"),
                None,
            ),
        ),
    }
}

impl Endpoint {
    /// Passes one message of a session to its upstream session, once the
    /// guard let it through. Answers go in the response, or, for a session
    /// of the legacy transport, to its event stream (`legacy`).
    pub(crate) async fn forward(
        &self,
        gateway: &Gateway,
        session: &str,
        caller: Option<&Arc<Principal>>,
        presented: Option<&CallerToken>,
        message: Incoming<'_>,
        legacy: Option<&tokio::sync::mpsc::Sender<Bytes>>,
    ) -> Response {
        let Some(links) = gateway.session(session) else {
            // The session outlived its upstream session (another replica's, or
            // from before a restart): the client starts anew.
            return session_not_found();
        };
        links.present(presented);
        let to_client = |response: Response| async move {
            match legacy {
                Some(out) => crate::legacy::to_stream(response, out).await,
                None => response,
            }
        };
        match message {
            Incoming::Request { id, method, params } => {
                if links.is_multi()
                    && let Some(answer) = self
                        .answer_for_all(&links, caller, &id, &method, params)
                        .await
                {
                    return to_client(answer).await;
                }
                let route = match links.route(&method, params) {
                    Ok(route) => route,
                    Err(error) => {
                        return to_client(refuse(StatusCode::OK, Some(&id), &error)).await;
                    }
                };
                let member = route.member;
                let link = &member.link;
                // Policy judges names as the client sees them; the upstream
                // gets its own.
                let parsed = Params::of(params);
                let upstream_params = route.params.as_deref().or(params);
                let own = route.params.as_deref().map(|p| Params::of(Some(p)));
                let target = Target::of(&method, parsed.name.as_deref(), parsed.uri.as_deref())
                    .map(|t| t.at(member.name()));
                if let Some(target) = target {
                    // A tool is judged by its definition as this session's
                    // upstream shows it.
                    let own_name = own
                        .as_ref()
                        .map_or(target.name, |o| o.name.as_deref().unwrap_or_default());
                    let hidden =
                        target.kind == Kind::Tool && link.tool_hidden(&self.guard, own_name).await;
                    if let Some(refusal) =
                        self.guard
                            .check(caller, &id, target, parsed.arguments, hidden)
                    {
                        return to_client(refusal).await;
                    }
                }
                let finish = self
                    .guard
                    .finish(caller, &id, &method, target, parsed.arguments, Some(link))
                    .unwrap_or_else(reply::passthrough);
                let finish = match &member.namespace {
                    // Resource URIs in the answer, as the client knows them.
                    Some(namespace) => {
                        let namespace = namespace.clone();
                        let method = method.to_string();
                        Box::new(move |answer: Bytes, ended| {
                            finish(mux::show_uris(answer, &method, &namespace), ended)
                        }) as reply::Finish
                    }
                    None => finish,
                };
                match (link.request(&id, &method, upstream_params).await, legacy) {
                    (Ok(forwarded), None) => {
                        reply::respond(id, forwarded, finish, &links.streams).await
                    }
                    (Ok(forwarded), Some(out)) => {
                        tokio::spawn(reply::relay(id, forwarded, finish, out.clone()));
                        StatusCode::ACCEPTED.into_response()
                    }
                    (Err(e), _) => {
                        let claims = matches!(e, UpstreamError::ClaimsChallenge(_));
                        if let Some(target) = target {
                            let reason = if claims {
                                "insufficient_claims".to_owned()
                            } else {
                                e.to_string()
                            };
                            self.guard.unavailable(caller, &id, target, &reason);
                        }
                        // On the legacy transport the answer goes to the
                        // stream, where no status can be: a JSON-RPC error.
                        if legacy.is_none()
                            && let Some(challenge) = self.claims_challenge(&e)
                        {
                            return challenge;
                        }
                        let error = ErrorData::internal_error(e.to_string(), None);
                        to_client(refuse(StatusCode::OK, Some(&id), &error)).await
                    }
                }
            }
            Incoming::Notification { method, params } => {
                links.notify(&method, params).await;
                StatusCode::ACCEPTED.into_response()
            }
            Incoming::Response {
                id,
                outcome,
                is_error,
            } => {
                let outcome = if is_error {
                    Outcome::Error(outcome)
                } else {
                    Outcome::Result(outcome)
                };
                match links.answer(&id, outcome).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::debug!(target: "mcpgate::upstream", "an answer to no open request of the upstream's was dropped");
                    }
                    Err(e) => {
                        tracing::debug!(target: "mcpgate::upstream", error = %e, "an answer could not be passed on");
                    }
                }
                StatusCode::ACCEPTED.into_response()
            }
        }
    }

    /// With several upstreams, what the gateway answers itself: `ping`,
    /// the merged lists and `logging/setLevel`. `None`: a request for one
    /// upstream.
    async fn answer_for_all(
        &self,
        links: &mux::Links,
        caller: Option<&Arc<Principal>>,
        id: &RequestId,
        method: &str,
        params: Option<&RawValue>,
    ) -> Option<Response> {
        let body = match method {
            "ping" => wire::raw_result(id, b"{}"),
            "logging/setLevel" => match links.set_level(params).await {
                Ok(()) => wire::raw_result(id, b"{}"),
                Err(e) => wire::error(Some(id), &ErrorData::internal_error(e.to_string(), None)),
            },
            _ => {
                let (key, field) = mux::list_shape(method)?;
                let cursor = params
                    .and_then(|p| serde_json::from_str::<serde_json::Value>(p.get()).ok())
                    .is_some_and(|p| p.get("cursor").is_some_and(|c| !c.is_null()));
                if cursor {
                    // Everything comes in one page: no cursor was handed out.
                    let error =
                        ErrorData::invalid_params("unknown cursor: this list has one page", None);
                    return Some(json(StatusCode::OK, wire::error(Some(id), &error)));
                }
                let mut items = links.list(&self.guard, method).await;
                let kind = match key {
                    "tools" => Kind::Tool,
                    "prompts" => Kind::Prompt,
                    _ => Kind::Resource,
                };
                self.guard
                    .visible_only(caller.map(|p| &**p), kind, field, &mut items);
                let mut result = serde_json::Map::new();
                result.insert(key.to_owned(), serde_json::Value::Array(items));
                wire::result(id, &result)
            }
        };
        Some(json(StatusCode::OK, body))
    }
}

impl Endpoint {
    /// The 401 for an upstream that needs the caller to sign in again
    /// satisfying claims (relayed as `insufficient_claims`); `None` for any
    /// other failure, or where there is no authentication to challenge for.
    fn claims_challenge(&self, error: &UpstreamError) -> Option<Response> {
        let UpstreamError::ClaimsChallenge(claims) = error else {
            return None;
        };
        let auth = self.auth.as_ref()?;
        Some(auth::refuse(auth, AuthRejection::Claims(claims.clone())))
    }
}

/// The caller's token, kept only where an upstream's tokens are obtained
/// by exchanging it (On-Behalf-Of in direct mode).
pub(crate) fn presented_token(gateway: &Gateway, headers: &HeaderMap) -> Option<CallerToken> {
    if !gateway.exchanges_caller_token() {
        return None;
    }
    crate::bearer::extract(headers, None)
        .ok()
        .map(CallerToken::new)
}

/// When a request carries a revision in `_meta`, the header must name the
/// same one.
fn check_meta_agrees(
    id: &RequestId,
    meta: &RequestMeta,
    header_version: Option<&str>,
) -> Option<Response> {
    let meta_version = meta.protocol_version.as_deref()?;
    match header_version {
        Some(h) if h == meta_version => None,
        Some(h) => Some(header_mismatch(
            id,
            format!(
                "MCP-Protocol-Version header ({h}) does not match request _meta protocolVersion ({meta_version})"
            ),
        )),
        None => Some(header_mismatch(
            id,
            "request _meta protocolVersion requires MCP-Protocol-Version header".into(),
        )),
    }
}

/// The `Mcp-Session-Id` presented, if any. One that is not visible ASCII
/// names no session (every lookup of it fails) rather than none at all, so
/// that it never turns a session request into a stateless one.
fn session_header(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(HEADER_SESSION_ID)
        .map(|v| v.to_str().unwrap_or_default())
}

fn accepts_json_and_sse(headers: &HeaderMap) -> bool {
    let (mut json, mut sse) = (false, false);
    for value in headers.get_all(ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut pieces = range.split(';');
            let essence = pieces.next().unwrap_or_default().trim();
            // `q=0` means "not this one".
            let refused = pieces.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q == 0.0))
            });
            if refused {
                continue;
            }
            json |= essence.eq_ignore_ascii_case("application/json");
            sse |= essence.eq_ignore_ascii_case("text/event-stream");
        }
    }
    json && sse
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The body, up to `max` bytes; 413 past it.
pub(crate) async fn read_body(body: Body, max: usize) -> Result<Bytes, Response> {
    to_bytes(body, max)
        .await
        .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response())
}

/// One JSON-RPC message, or the JSON-RPC error that says why not.
#[allow(
    clippy::result_large_err,
    reason = "the refusal is the answer, returned at once"
)]
pub(crate) fn parse_or_refuse(bytes: &[u8]) -> Result<Incoming<'_>, Response> {
    wire::parse(bytes).map_err(|malformed| {
        let (id, error) = malformed.error();
        refuse(StatusCode::BAD_REQUEST, id.as_ref(), &error)
    })
}

/// A JSON-RPC error as the whole answer.
pub(crate) fn refuse(status: StatusCode, id: Option<&RequestId>, error: &ErrorData) -> Response {
    json(status, wire::error(id, error))
}

fn header_mismatch(id: &RequestId, why: String) -> Response {
    refuse(
        StatusCode::BAD_REQUEST,
        Some(id),
        &ErrorData::header_mismatch(why, None),
    )
}

pub(crate) fn session_not_found() -> Response {
    // Unknown, expired and foreign sessions look alike: nothing tells an
    // attacker that a guessed id exists. 404 makes a client start anew.
    let error = ErrorData::new(ErrorCode(-32001), "Session not found", None);
    refuse(StatusCode::NOT_FOUND, None, &error)
}

fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(ALLOW, HeaderValue::from_static("POST, DELETE"))],
        "Method Not Allowed",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_str(v).expect("header"));
        h
    }

    #[test]
    fn accept_needs_both_media_types_unrefused() {
        assert!(accepts_json_and_sse(&accept(
            "application/json, text/event-stream"
        )));
        assert!(accepts_json_and_sse(&accept(
            "text/event-stream;q=0.5, Application/JSON"
        )));
        assert!(!accepts_json_and_sse(&accept("application/json")));
        assert!(!accepts_json_and_sse(&accept(
            "application/json, text/event-stream;q=0"
        )));
        assert!(!accepts_json_and_sse(&HeaderMap::new()));
    }
}

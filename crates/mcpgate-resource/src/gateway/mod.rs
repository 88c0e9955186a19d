//! Gateway mode: the endpoint in front of an existing MCP server.
//!
//! Each client session gets its own upstream session (a child process of
//! its own, or its own session at an HTTP server), so that users never
//! share one; a server known to keep no per-client state may instead be
//! shared. Messages pass both ways with their ids rewritten
//! ([`routes`]); the endpoint applies authentication, policy and audit
//! before anything reaches the upstream.
//!
//! | module | what it owns |
//! | --- | --- |
//! | [`frame`] | reading and rewriting JSON-RPC messages |
//! | [`routes`] | which request, on which stream, each message belongs to |
//! | [`stdio`] | a child process upstream |
//! | [`http`] | a Streamable HTTP upstream |
//! | [`credential`] | a token for an HTTP upstream's own audience, for the caller (On-Behalf-Of) |
//! | [`identity`] | who the caller is, told to an HTTP upstream in signed headers |
//! | [`sse`] | reading the upstream's event streams |
//! | [`reply`] | a forwarded request's answer, as JSON or as an event stream |
//! | [`mux`] | several upstreams behind one endpoint, each under its name |
//! | [`resume`] | event streams a client can resume after a dropped connection |

pub mod credential;
pub mod frame;
pub mod http;
pub mod identity;
pub mod mux;
pub mod reply;
pub mod resume;
pub mod routes;
pub mod sse;
pub mod stdio;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use mcpgate_token::Principal;
use rmcp::model::RequestId;
use serde_json::Value;
use serde_json::value::RawValue;

use self::credential::CallerToken;
use self::frame::Outcome;
use self::http::{HttpSpec, HttpUpstream};
use self::mux::{Links, Member, Namespace};
use self::routes::{Call, Routes};
use self::stdio::{StdioSpec, StdioUpstream};
use crate::guard::Guard;
use crate::pins::ToolPins;

/// Why the upstream could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The configuration cannot work.
    #[error("{0}")]
    Config(String),
    /// The upstream is down, or could not be reached or started.
    #[error("{0}")]
    Unavailable(String),
    /// It did not answer in time.
    #[error("the upstream server did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
    /// It refused the handshake.
    #[error("the upstream server refused to initialize: {0}")]
    Refused(String),
    /// No token for the upstream until the caller signs in again
    /// satisfying these claims ([`credential::CredentialError::ClaimsChallenge`]):
    /// the endpoint answers with the challenge.
    #[error("the identity provider asks the caller to sign in again satisfying claims {}", .0.json())]
    ClaimsChallenge(crate::challenge::ClaimsChallenge),
}

/// Which upstream, and how it is reached.
#[derive(Debug, Clone)]
pub enum UpstreamSpec {
    /// A child process over stdio.
    Stdio(Arc<StdioSpec>),
    /// A server over Streamable HTTP.
    Http(Arc<HttpSpec>),
}

impl UpstreamSpec {
    /// Whether the upstream looks usable, without speaking MCP to it (that
    /// needs a session, and for stdio a child): an HTTP upstream accepts a
    /// TCP connection; a stdio upstream's program is an executable file.
    pub async fn probe(&self) -> Result<(), UpstreamError> {
        match self {
            UpstreamSpec::Http(spec) => {
                let host = spec.url.host_str().unwrap_or_default();
                let port = spec.url.port_or_known_default().unwrap_or(443);
                // Brackets belong to the URL, not to the address.
                let host = host.trim_start_matches('[').trim_end_matches(']');
                tokio::net::TcpStream::connect((host, port))
                    .await
                    .map(drop)
                    .map_err(|e| {
                        UpstreamError::Unavailable(format!("cannot connect to {host}:{port}: {e}"))
                    })
            }
            UpstreamSpec::Stdio(spec) => {
                let program = spec.argv.first().map(String::as_str).unwrap_or_default();
                if stdio::find_program(program, spec.cwd.as_deref()).is_some() {
                    Ok(())
                } else {
                    Err(UpstreamError::Unavailable(format!(
                        "{program:?} is not an executable file here or on PATH"
                    )))
                }
            }
        }
    }
}

/// Whether sessions share an upstream session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Isolation {
    /// One upstream session (for stdio: one child) per client session.
    #[default]
    PerSession,
    /// One for everyone: only for servers that keep no state per client.
    Shared,
}

/// How the gateway treats its upstream.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// The upstream.
    pub upstream: UpstreamSpec,
    /// Sharing of upstream sessions. Default: per session.
    pub isolation: Isolation,
    /// How long a forwarded request may take. Default: 120 s.
    pub request_timeout: Duration,
    /// How long starting and initializing an upstream session may take.
    /// Default: 30 s.
    pub start_timeout: Duration,
    /// The upstream's tool definitions as first seen; a changed one is
    /// hidden until accepted. Default: none (no pinning).
    pub pins: Option<Arc<crate::pins::ToolPins>>,
    /// Upstream sessions open at once (for stdio: child processes); past
    /// it a new client session is refused. Default: 256.
    pub max_upstream_sessions: usize,
}

impl GatewaySettings {
    /// Defaults for `upstream`.
    pub fn new(upstream: UpstreamSpec) -> Self {
        Self {
            upstream,
            isolation: Isolation::PerSession,
            request_timeout: Duration::from_secs(120),
            start_timeout: Duration::from_secs(30),
            pins: None,
            max_upstream_sessions: 256,
        }
    }
}

#[derive(Debug)]
enum Transport {
    Stdio(StdioUpstream),
    Http(Arc<HttpUpstream>),
}

/// One upstream session.
#[derive(Debug)]
pub struct Link {
    name: Arc<str>,
    pins: Option<Arc<ToolPins>>,
    routes: Arc<Routes>,
    transport: Transport,
    // What the client sent in `initialize`, replayed after a restart.
    init: Box<RawValue>,
    start_timeout: Duration,
    request_timeout: Duration,
    // Held while (re)starting, so that nothing is sent before the handshake.
    starting: tokio::sync::Mutex<()>,
    // With pinning: the tools this session's upstream shows whose changed
    // definition awaits acceptance; `None` until reviewed.
    hidden: tokio::sync::Mutex<Option<HashSet<String>>>,
}

/// A request in flight upstream. Dropping it before the answer came tells
/// the upstream to stop (`notifications/cancelled`).
#[derive(Debug)]
pub struct Forwarded {
    /// The request's messages, as the client will see them.
    pub call: Call,
    /// How long the answer may take.
    pub timeout: Duration,
    link: Arc<Link>,
    answered: bool,
}

impl Forwarded {
    /// Marks the answer received: dropping no longer cancels.
    pub fn answered(&mut self) {
        self.answered = true;
    }

    /// Gives up on the request (timeout): the upstream is told to stop.
    pub fn abandon(mut self, reason: &str) {
        self.answered = true;
        self.link.abandon(self.call.number, reason);
    }
}

impl Drop for Forwarded {
    fn drop(&mut self) {
        if !self.answered {
            self.link.abandon(self.call.number, "the client went away");
        }
    }
}

impl Link {
    // `caller`: whose session it is; `None` when shared or unauthenticated.
    fn new(
        settings: &GatewaySettings,
        namespace: Option<&Namespace>,
        numbers: &Arc<AtomicU64>,
        init: Box<RawValue>,
        caller: Option<&Principal>,
    ) -> Self {
        let routes = match settings.isolation {
            Isolation::PerSession => Routes::default(),
            Isolation::Shared => Routes::shared(),
        };
        let routes = Arc::new(
            routes
                .numbered_by(numbers.clone())
                .with_uri_prefix(namespace.map(|n| n.uri_prefix().clone())),
        );
        let transport = match &settings.upstream {
            UpstreamSpec::Stdio(spec) => Transport::Stdio(StdioUpstream::new(
                spec.clone(),
                identity_env(caller),
                routes.clone(),
            )),
            UpstreamSpec::Http(spec) => Transport::Http(Arc::new(HttpUpstream::new(
                spec.clone(),
                routes.clone(),
                identity::Identity::of(caller),
                caller.cloned().map(Arc::new),
            ))),
        };
        Self {
            name: settings.upstream.name().into(),
            pins: settings.pins.clone(),
            routes,
            transport,
            init,
            start_timeout: settings.start_timeout,
            request_timeout: settings.request_timeout,
            starting: tokio::sync::Mutex::new(()),
            hidden: tokio::sync::Mutex::new(None),
        }
    }

    /// The upstream's name, as configured.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the upstream's tool definitions are pinned, if they are.
    pub fn pins(&self) -> Option<&ToolPins> {
        self.pins.as_deref()
    }

    /// Keeps the outcome of a review of this session's tools.
    pub async fn set_hidden(&self, hidden: HashSet<String>) {
        *self.hidden.lock().await = Some(hidden);
    }

    /// Whether `tool`, as this session's upstream defines it now, awaits
    /// an operator's acceptance. The tools are reviewed first if they never
    /// were here, or changed since: a client that calls without listing
    /// cannot reach a changed tool. Fails closed: hidden when the list
    /// cannot be had.
    pub async fn tool_hidden(&self, guard: &Guard, tool: &str) -> bool {
        let Some(pins) = self.pins() else {
            return false;
        };
        let changed = self.routes.take_tools_changed();
        let mut hidden = self.hidden.lock().await;
        if hidden.is_none() || changed {
            match self.list_all("tools/list", "tools").await {
                Ok(tools) => *hidden = Some(guard.review_tools(pins, &self.name, &tools).await),
                Err(e) => {
                    tracing::warn!(target: "mcpgate::pins", error = %e, "could not review the upstream's tools; the call is refused");
                    return true;
                }
            }
        }
        hidden.as_ref().is_none_or(|h| h.contains(tool))
    }

    /// Every item of a paginated list (`tools/list` → `tools`), asked by
    /// the gateway itself; at most 100 pages.
    pub(crate) async fn list_all(
        &self,
        method: &str,
        key: &str,
    ) -> Result<Vec<Value>, UpstreamError> {
        self.ready().await?;
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let params = match &cursor {
                Some(c) => serde_json::json!({ "cursor": c }),
                None => serde_json::json!({}),
            };
            let params = RawValue::from_string(params.to_string())
                .map_err(|e| UpstreamError::Unavailable(e.to_string()))?;
            let answer = self
                .ask(method, Some(&params), self.request_timeout)
                .await?;
            let mut page: Value = serde_json::from_slice(&answer)
                .map_err(|_| UpstreamError::Unavailable("an answer that is not JSON".into()))?;
            if let Some(error) = page.get("error") {
                return Err(UpstreamError::Unavailable(format!(
                    "{method} failed: {error}"
                )));
            }
            let result = page.get_mut("result").map(Value::take).unwrap_or_default();
            if let Some(Value::Array(list)) = result.get(key) {
                items.extend(list.iter().cloned());
            }
            cursor = result
                .get("nextCursor")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if cursor.is_none() {
                return Ok(items);
            }
        }
        Ok(items)
    }

    /// Keeps the token the client presented with its newest request, for
    /// an upstream whose tokens are obtained by exchanging it.
    pub fn present(&self, token: Option<&CallerToken>) {
        if let Transport::Http(h) = &self.transport {
            h.present(token.cloned());
        }
    }

    fn is_up(&self) -> bool {
        match &self.transport {
            Transport::Stdio(s) => s.is_running(),
            Transport::Http(h) => h.is_up(),
        }
    }

    /// Starts the upstream session if it is not running (again), and
    /// returns the upstream's `initialize` result when it did.
    async fn ready(&self) -> Result<Option<Box<RawValue>>, UpstreamError> {
        if self.is_up() {
            return Ok(None);
        }
        let _starting = self.starting.lock().await;
        match &self.transport {
            Transport::Stdio(s) => {
                if !s.ensure().await? {
                    return Ok(None);
                }
            }
            Transport::Http(h) => {
                if !h.ensure() {
                    return Ok(None);
                }
            }
        }
        let mut shook = self.handshake().await;
        if shook.is_err()
            && let Transport::Http(h) = &self.transport
            && h.take_maybe_legacy()
        {
            h.open_legacy(self.start_timeout).await?;
            shook = self.handshake().await;
        }
        match shook {
            Ok(result) => {
                if let Transport::Http(h) = &self.transport {
                    h.opened();
                }
                Ok(Some(result))
            }
            Err(e) => {
                self.stop();
                Err(e)
            }
        }
    }

    /// A request of the gateway's own (not a client's), and its answer
    /// within `within`; one not sent, or not answered in time, is
    /// forgotten (the upstream told to stop).
    async fn ask(
        &self,
        method: &str,
        params: Option<&RawValue>,
        within: Duration,
    ) -> Result<Bytes, UpstreamError> {
        let (message, call) = self.routes.request(None, method, params);
        let number = call.number;
        if let Err(e) = self.send(message, Some(number)).await {
            self.routes.abandon(number, "not sent");
            return Err(e);
        }
        match tokio::time::timeout(within, call.done).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(UpstreamError::Unavailable(format!(
                "the upstream server exited during {method}"
            ))),
            Err(_) => {
                self.routes.abandon(number, &format!("{method} timed out"));
                Err(UpstreamError::Timeout(within))
            }
        }
    }

    /// A request of the gateway's own, started first if need be; an error
    /// answer is a refusal.
    pub(crate) async fn ask_checked(
        &self,
        method: &str,
        params: Option<&RawValue>,
    ) -> Result<(), UpstreamError> {
        self.ready().await?;
        let answer = self.ask(method, params, self.request_timeout).await?;
        match frame::Frame::parse(&answer).and_then(|f| f.error) {
            Some(error) => Err(UpstreamError::Refused(format!(
                "{method}: {}",
                error_message(error)
            ))),
            None => Ok(()),
        }
    }

    async fn handshake(&self) -> Result<Box<RawValue>, UpstreamError> {
        let answer = self
            .ask("initialize", Some(&self.init), self.start_timeout)
            .await?;
        let frame = frame::Frame::parse(&answer)
            .ok_or_else(|| UpstreamError::Refused("an answer that is not JSON-RPC".into()))?;
        if let Some(error) = frame.error {
            return Err(UpstreamError::Refused(error_message(error)));
        }
        let result = frame
            .result
            .ok_or_else(|| UpstreamError::Refused("an answer without a result".into()))?
            .to_owned();
        if let Transport::Http(h) = &self.transport {
            // Later messages name the revision (the session id is kept by
            // the transport already).
            h.set_version(negotiated(&result).as_deref());
        }
        self.send(frame::notification("notifications/initialized", None), None)
            .await?;
        Ok(result)
    }

    async fn send(&self, message: Bytes, related: Option<u64>) -> Result<(), UpstreamError> {
        match &self.transport {
            Transport::Stdio(s) => s.send(&message).await,
            Transport::Http(h) => h.send(message, related).await,
        }
    }

    fn stop(&self) {
        match &self.transport {
            Transport::Stdio(s) => s.stop(),
            Transport::Http(h) => h.stop(),
        }
    }

    fn abandon(self: &Arc<Self>, number: u64, reason: &str) {
        if let Some(cancel) = self.routes.abandon(number, reason) {
            let link = self.clone();
            tokio::spawn(async move {
                let _ = link.send(cancel, None).await;
            });
        }
    }

    /// Sends the client's request upstream.
    pub async fn request(
        self: &Arc<Self>,
        id: &RequestId,
        method: &str,
        params: Option<&RawValue>,
    ) -> Result<Forwarded, UpstreamError> {
        self.ready().await?;
        let (message, call) = self.routes.request(Some(id.clone()), method, params);
        let number = call.number;
        // Made before sending, so that a client who leaves meanwhile takes
        // the request with it.
        let mut forwarded = Forwarded {
            call,
            timeout: self.request_timeout,
            link: self.clone(),
            answered: false,
        };
        let sent =
            tokio::time::timeout(self.request_timeout, self.send(message, Some(number))).await;
        let failed = match sent {
            Ok(Ok(())) => return Ok(forwarded),
            Ok(Err(e)) => e,
            Err(_) => UpstreamError::Timeout(self.request_timeout),
        };
        forwarded.answered = true;
        self.routes.abandon(number, "not sent");
        Err(failed)
    }

    /// Passes the client's notification upstream (`cancelled` renamed to
    /// the upstream's number; `initialized` is the gateway's to send).
    pub async fn notify(
        &self,
        method: &str,
        params: Option<&RawValue>,
    ) -> Result<(), UpstreamError> {
        let message = match method {
            "notifications/initialized" => return Ok(()),
            "notifications/cancelled" => {
                #[derive(serde::Deserialize)]
                struct Cancelled {
                    #[serde(rename = "requestId")]
                    id: RequestId,
                    reason: Option<String>,
                }
                let Some(c) = params.and_then(|p| serde_json::from_str::<Cancelled>(p.get()).ok())
                else {
                    return Ok(());
                };
                match self.routes.cancel(&c.id, c.reason.as_deref()) {
                    Some(message) => message,
                    None => return Ok(()),
                }
            }
            _ => frame::notification(method, params),
        };
        if !self.is_up() {
            // Nothing to tell a server that is not running.
            return Ok(());
        }
        self.send(message, None).await
    }

    /// Passes the client's answer to a request of the upstream's.
    pub async fn answer(
        &self,
        id: &RequestId,
        outcome: Outcome<'_>,
    ) -> Result<bool, UpstreamError> {
        let Some(message) = self.routes.answer(id, outcome) else {
            return Ok(false);
        };
        self.send(message, None).await?;
        Ok(true)
    }
}

// The revision the upstream chose in its `initialize` result.
fn negotiated(result: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct R {
        #[serde(rename = "protocolVersion")]
        version: Option<String>,
    }
    serde_json::from_str::<R>(result.get()).ok()?.version
}

fn error_message(error: &RawValue) -> String {
    #[derive(serde::Deserialize)]
    struct E {
        message: Option<String>,
    }
    serde_json::from_str::<E>(error.get())
        .ok()
        .and_then(|e| e.message)
        .unwrap_or_else(|| "no reason given".into())
}

/// One configured upstream.
#[derive(Debug)]
struct Upstream {
    settings: GatewaySettings,
    // With several upstreams: its prefixes.
    namespace: Option<Namespace>,
    // Isolation::Shared: the one upstream session, and its handshake's
    // result.
    shared: tokio::sync::Mutex<Option<(Arc<Link>, Box<RawValue>)>>,
    // Upstream sessions open or being started, counted against the cap.
    held: AtomicUsize,
}

// Gives back a held slot, unless kept.
struct Slot<'a>(Option<&'a AtomicUsize>);

impl Slot<'_> {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(held) = self.0 {
            held.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Upstream {
    /// An upstream session for a new client session, and the upstream's
    /// `initialize` result.
    async fn open(
        &self,
        numbers: &Arc<AtomicU64>,
        caller: Option<&Principal>,
        presented: Option<&CallerToken>,
        init: &RawValue,
    ) -> Result<(Arc<Link>, Box<RawValue>), UpstreamError> {
        let new_link = |caller| {
            let link = Link::new(
                &self.settings,
                self.namespace.as_ref(),
                numbers,
                init.to_owned(),
                caller,
            );
            link.present(presented);
            Arc::new(link)
        };
        if self.settings.isolation == Isolation::Shared {
            let mut shared = self.shared.lock().await;
            if let Some((link, result)) = &*shared {
                return Ok((link.clone(), result.clone()));
            }
            // Started with the first client's handshake, and nobody's
            // identity: it serves everyone.
            let link = new_link(None);
            let result = link.ready().await?.ok_or_else(not_started)?;
            *shared = Some((link.clone(), result.clone()));
            return Ok((link, result));
        }
        // The slot is taken before the (slow) start, so that a burst of
        // sessions cannot start more children than the cap.
        let max = self.settings.max_upstream_sessions;
        let slot = Slot(Some(&self.held));
        if self.held.fetch_add(1, Ordering::AcqRel) >= max {
            return Err(UpstreamError::Unavailable(format!(
                "the gateway already holds its maximum of {max} upstream sessions with {}; try again later",
                self.settings.upstream.name()
            )));
        }
        let link = new_link(caller);
        let result = link.ready().await?.ok_or_else(not_started)?;
        slot.keep();
        Ok((link, result))
    }

    /// Ends one of its upstream sessions.
    fn release(&self, link: &Link) {
        if self.settings.isolation == Isolation::PerSession {
            link.stop();
            self.held.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn not_started() -> UpstreamError {
    UpstreamError::Unavailable("the upstream session did not start".into())
}

/// The upstream sessions of every client session.
#[derive(Debug)]
pub struct Gateway {
    upstreams: Vec<Upstream>,
    sessions: Mutex<HashMap<Arc<str>, Arc<Links>>>,
    // Request numbers, unique across every upstream session.
    numbers: Arc<AtomicU64>,
}

impl Gateway {
    /// A gateway to one upstream, or to several (their names checked with
    /// [`mux::check_names`]); nothing starts until a session opens.
    pub fn new(upstreams: Vec<GatewaySettings>) -> Self {
        let several = upstreams.len() > 1;
        Self {
            upstreams: upstreams
                .into_iter()
                .map(|settings| Upstream {
                    namespace: several.then(|| Namespace::new(settings.upstream.name())),
                    settings,
                    shared: tokio::sync::Mutex::new(None),
                    held: AtomicUsize::new(0),
                })
                .collect(),
            sessions: Mutex::new(HashMap::new()),
            numbers: Arc::new(AtomicU64::new(0)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Links>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the upstream sessions of client session `session`, with the
    /// client's `initialize` params; the `initialize` result to answer
    /// with. With several upstreams, those that cannot start are left out
    /// of the session (and logged); it opens if one did.
    pub async fn open(
        &self,
        session: &Arc<str>,
        caller: Option<&Principal>,
        presented: Option<&CallerToken>,
        init: &RawValue,
    ) -> Result<Box<RawValue>, UpstreamError> {
        let opening = self
            .upstreams
            .iter()
            .map(|u| u.open(&self.numbers, caller, presented, init));
        let opened = futures::future::join_all(opening).await;
        let mut members = Vec::new();
        let mut results = Vec::new();
        let mut failure = None;
        for (index, (upstream, outcome)) in self.upstreams.iter().zip(opened).enumerate() {
            match outcome {
                Ok((link, result)) => {
                    members.push(Member::new(
                        upstream.namespace.clone(),
                        link,
                        index,
                        &result,
                    ));
                    results.push(result);
                }
                Err(e) => {
                    if self.upstreams.len() > 1 {
                        tracing::warn!(target: "mcpgate::upstream", upstream = upstream.settings.upstream.name(), error = %e, "an upstream could not start for a new session; the session goes on without it");
                    }
                    failure = Some(e);
                }
            }
        }
        let result = match (self.upstreams.len(), results.pop(), failure) {
            (1, Some(result), _) => result,
            (_, None, failure) => {
                return Err(failure.unwrap_or_else(not_started));
            }
            (_, Some(last), _) => {
                results.push(last);
                let opened: Vec<(&str, &RawValue)> = members
                    .iter()
                    .zip(&results)
                    .map(|(m, r)| (m.name(), &**r))
                    .collect();
                let merged = mux::initialize_result(&opened);
                RawValue::from_string(merged.to_string())
                    .map_err(|e| UpstreamError::Unavailable(e.to_string()))?
            }
        };
        self.lock()
            .insert(session.clone(), Arc::new(Links::new(members)));
        Ok(result)
    }

    /// The upstream sessions of client session `session`.
    pub fn session(&self, session: &str) -> Option<Arc<Links>> {
        self.lock().get(session).cloned()
    }

    /// Ends the upstream sessions of `session` (their children stopped).
    pub fn close(&self, session: &str) {
        let Some(links) = self.lock().remove(session) else {
            return;
        };
        for member in links.members() {
            if let Some(upstream) = self.upstreams.get(member.upstream) {
                upstream.release(&member.link);
            }
        }
    }

    /// How many client sessions have upstream sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none has.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether an upstream's tokens are obtained by exchanging the
    /// caller's own: the endpoint then hands each request's token on.
    pub fn exchanges_caller_token(&self) -> bool {
        self.upstreams.iter().any(|u| match &u.settings.upstream {
            UpstreamSpec::Http(spec) => spec
                .credential
                .as_ref()
                .is_some_and(|c| c.exchanges_caller_token()),
            UpstreamSpec::Stdio(_) => false,
        })
    }

    /// The upstreams, for the startup banner.
    pub fn upstreams(&self) -> impl Iterator<Item = &UpstreamSpec> {
        self.upstreams.iter().map(|u| &u.settings.upstream)
    }
}

/// Who the user is, for a child started for them: identifiers only,
/// never a token.
pub fn identity_env(caller: Option<&Principal>) -> Vec<(String, String)> {
    let Some(p) = caller else {
        return Vec::new();
    };
    let mut env = vec![("MCPGATE_USER_SUB".to_owned(), p.subject.clone())];
    let mut add = |name: &str, value: &Option<String>| {
        if let Some(v) = value {
            env.push((name.to_owned(), v.clone()));
        }
    };
    add("MCPGATE_USER_OID", &p.object_id);
    add("MCPGATE_USER_TID", &p.tenant_id);
    add("MCPGATE_USER_UPN", &p.preferred_username);
    add("MCPGATE_USER_NAME", &p.name);
    add("MCPGATE_CLIENT_APP", &p.client_app_id);
    env
}

impl UpstreamSpec {
    /// Its name, in logs and audit records.
    pub fn name(&self) -> &str {
        match self {
            UpstreamSpec::Stdio(spec) => &spec.name,
            UpstreamSpec::Http(spec) => &spec.name,
        }
    }
}

impl std::fmt::Display for UpstreamSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The program only: arguments may name files or options an
            // operator would rather not see in every log.
            UpstreamSpec::Stdio(spec) => write!(
                f,
                "{} (stdio: {})",
                spec.name,
                spec.argv.first().map_or("", String::as_str)
            ),
            UpstreamSpec::Http(spec) => write!(
                f,
                "{} (http: {})",
                spec.name,
                spec.url.host_str().unwrap_or("")
            ),
        }
    }
}

//! An upstream MCP server over Streamable HTTP.
//!
//! Each message is a POST; an answer comes back as one JSON body or as an
//! event stream that also carries what the server sends on the way, which
//! is read in a task of its own so that the client's stream can follow it.
//! After the handshake a GET stream, when the server offers one, carries
//! what belongs to no request. The upstream's session id is the gateway's
//! to keep: the client never sees it, and never sends it.
//!
//! A server still on the 2024-11-05 HTTP+SSE transport refuses that first
//! POST with a 4xx; the gateway then does what the specification's
//! backwards-compatibility section says: GET the same URL, take the
//! `endpoint` event's URL (same origin only) for its POSTs, and read every
//! answer from that one stream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use tokio::task::JoinHandle;
use url::Url;

use super::UpstreamError;
use super::credential::{CallerToken, CredentialError, TokenSource, UpstreamToken};
use super::identity::{Identity, IdentityKey};
use super::routes::Routes;
use super::sse::{EventReader, Kind};
use mcpgate_token::Principal;

const SESSION: &str = "mcp-session-id";
const VERSION: &str = "mcp-protocol-version";
const ACCEPT_BOTH: HeaderValue = HeaderValue::from_static("application/json, text/event-stream");

/// Where the server is, and how to reach it.
#[derive(Debug, Clone)]
pub struct HttpSpec {
    /// Its MCP endpoint.
    pub url: Url,
    /// The client to reach it with (its roots, its timeouts).
    pub client: reqwest::Client,
    /// The upstream's name, for logs.
    pub name: String,
    /// With a key: every request carries the caller's identity in signed
    /// headers ([`super::identity`]). Without: the upstream learns nothing
    /// of the caller.
    pub identity: Option<Arc<IdentityKey>>,
    /// With a source: every request carries a token for the upstream's own
    /// audience, obtained for the caller (On-Behalf-Of).
    pub credential: Option<Arc<dyn TokenSource>>,
    /// Adds the current trace context (`traceparent`) to each request, when
    /// the server exports traces.
    pub trace_context: Option<fn(&mut http::HeaderMap)>,
}

/// One upstream session at an HTTP server.
#[derive(Debug)]
pub struct HttpUpstream {
    spec: Arc<HttpSpec>,
    routes: Arc<Routes>,
    session: Mutex<Option<HeaderValue>>,
    version: Mutex<Option<HeaderValue>>,
    up: AtomicBool,
    standalone: Mutex<Option<JoinHandle<()>>>,
    // The legacy transport's POST URL, once found.
    legacy: Mutex<Option<Url>>,
    // The first POST was refused with a 4xx: worth trying the legacy way.
    maybe_legacy: AtomicBool,
    identity: Identity,
    caller: Option<Arc<Principal>>,
    // The caller's token for the upstream, reused until near its expiry.
    token: tokio::sync::Mutex<Option<UpstreamToken>>,
    // The newest token the client presented, where the upstream's token is
    // obtained by exchanging it.
    presented: Mutex<Option<CallerToken>>,
}

impl HttpUpstream {
    /// A session that opens on first use.
    pub fn new(
        spec: Arc<HttpSpec>,
        routes: Arc<Routes>,
        identity: Identity,
        caller: Option<Arc<Principal>>,
    ) -> Self {
        Self {
            identity,
            caller,
            token: tokio::sync::Mutex::new(None),
            presented: Mutex::new(None),
            spec,
            routes,
            session: Mutex::new(None),
            version: Mutex::new(None),
            up: AtomicBool::new(false),
            standalone: Mutex::new(None),
            legacy: Mutex::new(None),
            maybe_legacy: AtomicBool::new(false),
        }
    }

    /// Keeps the token the client presented with its newest request, when
    /// this upstream's tokens are obtained by exchanging it (never on a
    /// session several callers share).
    pub fn present(&self, token: Option<CallerToken>) {
        if token.is_some()
            && self.caller.is_some()
            && self
                .spec
                .credential
                .as_ref()
                .is_some_and(|c| c.exchanges_caller_token())
        {
            *lock(&self.presented) = token;
        }
    }

    /// Whether the last handshake was refused in a way that says "legacy
    /// transport" (a 4xx to the first POST); clears the mark.
    pub fn take_maybe_legacy(&self) -> bool {
        self.maybe_legacy.swap(false, Ordering::AcqRel) && lock(&self.legacy).is_none()
    }

    /// Opens the legacy HTTP+SSE transport: GET the URL, wait for the
    /// `endpoint` event, then read the stream's messages in a task.
    pub async fn open_legacy(self: &Arc<Self>, within: Duration) -> Result<(), UpstreamError> {
        let response = self
            .authorized(self.signed(self.spec.client.get(self.spec.url.clone()), b""))
            .await?
            .header(ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| {
                UpstreamError::Unavailable(format!(
                    "the upstream server could not be reached: {}",
                    without_url(&e)
                ))
            })?;
        if !response.status().is_success() || !is_event_stream(&response) {
            return Err(UpstreamError::Unavailable(format!(
                "the upstream server speaks neither Streamable HTTP nor HTTP+SSE (GET answered {})",
                response.status()
            )));
        }
        let mut events = EventReader::new(response);
        let endpoint = tokio::time::timeout(within, async {
            loop {
                match events.next_event().await {
                    Ok(Some((Kind::Endpoint, data))) => return Ok(data),
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        return Err(UpstreamError::Unavailable(
                            "the upstream's event stream ended before naming its endpoint".into(),
                        ));
                    }
                }
            }
        })
        .await
        .map_err(|_| UpstreamError::Timeout(within))??;
        let endpoint = std::str::from_utf8(&endpoint)
            .ok()
            .and_then(|e| self.spec.url.join(e.trim()).ok())
            .ok_or_else(|| {
                UpstreamError::Unavailable(
                    "the upstream named an endpoint that is not a URL".into(),
                )
            })?;
        // A server may not send the gateway's messages elsewhere.
        if endpoint.origin() != self.spec.url.origin() {
            return Err(UpstreamError::Unavailable(
                "the upstream named an endpoint on another origin; refused".into(),
            ));
        }
        *lock(&self.legacy) = Some(endpoint);
        tracing::info!(target: "mcpgate::upstream", upstream = %self.spec.name, "the upstream speaks the 2024-11-05 HTTP+SSE transport");
        let this = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            loop {
                let data = match events.next().await {
                    Ok(Some(data)) => data,
                    Ok(None) | Err(_) => break,
                };
                let Some(upstream) = this.upgrade() else {
                    return;
                };
                if let Some(reply) = upstream.routes.inbound(&data, None) {
                    upstream.reply(reply).await;
                }
            }
            if let Some(upstream) = this.upgrade() {
                // The session lives in that stream: it is over.
                upstream.up.store(false, Ordering::Release);
                *lock(&upstream.legacy) = None;
                upstream.routes.fail_all(-32603, "the upstream server closed its event stream; the session is reopened on the next call");
            }
        });
        if let Some(old) = lock(&self.standalone).replace(task) {
            old.abort();
        }
        Ok(())
    }

    /// Whether the session is open.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Forgets the old session, if any, so that the next handshake opens
    /// a new one; `true` (a handshake is due) unless one is open.
    pub fn ensure(&self) -> bool {
        if self.is_up() {
            return false;
        }
        *lock(&self.session) = None;
        *lock(&self.version) = None;
        true
    }

    /// The handshake chose `version`: later requests name it.
    pub fn set_version(&self, version: Option<&str>) {
        *lock(&self.version) = version.and_then(|v| HeaderValue::from_str(v).ok());
    }

    /// The session is open (the handshake done, `initialized` sent): the
    /// standalone stream opens. Once per session: a server may allow only
    /// one such stream, and refuse a second while it has not noticed the
    /// first one closed.
    pub fn opened(self: &Arc<Self>) {
        self.up.store(true, Ordering::Release);
        if lock(&self.legacy).is_some() {
            // Its one stream is read already.
            return;
        }
        let this = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            // Reopened while the session lives; a server without one (405)
            // or a session gone (404) ends it.
            loop {
                let Some(upstream) = this.upgrade() else {
                    return;
                };
                if !upstream.is_up() {
                    return;
                }
                match upstream.listen().await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        tracing::debug!(target: "mcpgate::upstream", upstream = %upstream.spec.name, error = %e, "the upstream's standalone stream failed");
                    }
                }
                drop(upstream);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        if let Some(old) = lock(&self.standalone).replace(task) {
            old.abort();
        }
    }

    // The caller's token for the upstream, when it takes one: the cached
    // one while it has a minute left, else a new one.
    async fn authorized(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, UpstreamError> {
        let Some(source) = &self.spec.credential else {
            return Ok(request);
        };
        let Some(caller) = &self.caller else {
            return Err(UpstreamError::Config(
                "this upstream takes a token for the caller, and the request has no caller (authentication is off)".into(),
            ));
        };
        let mut cached = self.token.lock().await;
        let now = std::time::SystemTime::now();
        let token =
            match &*cached {
                Some(token) if token.fresh_at(now, Duration::from_secs(60)) => token.clone(),
                _ => {
                    let presented = lock(&self.presented).clone();
                    let token = source.token_for(caller, presented.as_ref()).await.map_err(
                        |e| match e {
                            CredentialError::ClaimsChallenge(c) => {
                                UpstreamError::ClaimsChallenge(c)
                            }
                            e @ (CredentialError::NoGrant | CredentialError::Unavailable(_)) => {
                                UpstreamError::Unavailable(e.to_string())
                            }
                        },
                    )?;
                    *cached = Some(token.clone());
                    token
                }
            };
        Ok(request.bearer_auth(token.secret()))
    }

    // The caller's identity, signed over `body`, when the upstream takes it.
    fn signed(&self, request: reqwest::RequestBuilder, body: &[u8]) -> reqwest::RequestBuilder {
        let Some(key) = &self.spec.identity else {
            return request;
        };
        let mut request = request;
        for (name, value) in self
            .identity
            .headers(key, body, std::time::SystemTime::now())
        {
            request = request.header(name, value);
        }
        request
    }

    // Where messages go: the legacy endpoint, else the MCP URL.
    fn post(&self) -> reqwest::RequestBuilder {
        let request = match lock(&self.legacy).clone() {
            Some(endpoint) => self.spec.client.post(endpoint),
            None => self.headers(self.spec.client.post(self.spec.url.clone())),
        };
        self.traced(request)
    }

    // The calling request's trace context, so that the upstream's spans
    // join the caller's trace.
    fn traced(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let Some(inject) = self.spec.trace_context else {
            return request;
        };
        let mut headers = http::HeaderMap::new();
        inject(&mut headers);
        if headers.is_empty() {
            request
        } else {
            request.headers(headers)
        }
    }

    fn headers(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let mut request = request;
        if let Some(session) = lock(&self.session).clone() {
            request = request.header(SESSION, session);
        }
        if let Some(version) = lock(&self.version).clone() {
            request = request.header(VERSION, version);
        }
        request
    }

    // The standalone stream, until it ends: `false` when it should not be
    // reopened.
    async fn listen(self: &Arc<Self>) -> Result<bool, reqwest::Error> {
        let request = self
            .signed(
                self.headers(self.spec.client.get(self.spec.url.clone())),
                b"",
            )
            .header(ACCEPT, "text/event-stream");
        let response = request.send().await?;
        if !response.status().is_success() || !is_event_stream(&response) {
            return Ok(false);
        }
        self.read_events(response, None).await;
        Ok(true)
    }

    /// POSTs one message; an answer in the response is routed before this
    /// returns, an event stream is read on by a task of its own.
    pub async fn send(
        self: &Arc<Self>,
        message: Bytes,
        related: Option<u64>,
    ) -> Result<(), UpstreamError> {
        let request = self
            .authorized(self.signed(self.post(), &message))
            .await?
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, ACCEPT_BOTH)
            .body(message);
        let response = request.send().await.map_err(|e| {
            UpstreamError::Unavailable(format!(
                "the upstream server could not be reached: {}",
                without_url(&e)
            ))
        })?;
        if let Some(session) = response.headers().get(SESSION)
            && lock(&self.session).is_none()
        {
            *lock(&self.session) = Some(session.clone());
        }
        match response.status() {
            StatusCode::ACCEPTED => Ok(()),
            // The legacy transport answers on its stream, never in the POST.
            status if status.is_success() && lock(&self.legacy).is_some() => Ok(()),
            status
                if status.is_client_error()
                    && !self.is_up()
                    && lock(&self.session).is_none()
                    && lock(&self.legacy).is_none() =>
            {
                self.maybe_legacy.store(true, Ordering::Release);
                Err(UpstreamError::Unavailable(format!(
                    "the upstream server answered HTTP {status}"
                )))
            }
            StatusCode::NOT_FOUND if lock(&self.session).is_some() => {
                // The upstream forgot the session: the next call opens one.
                self.up.store(false, Ordering::Release);
                Err(UpstreamError::Unavailable(
                    "the upstream session expired; it is reopened on the next call".into(),
                ))
            }
            status if status.is_success() => {
                if is_event_stream(&response) {
                    let this = self.clone();
                    tokio::spawn(async move { this.read_events(response, related).await });
                    return Ok(());
                }
                let body = read_bounded(response).await?;
                if let Some(reply) = self.routes.inbound(&body, related) {
                    self.reply(reply).await;
                }
                Ok(())
            }
            status => Err(UpstreamError::Unavailable(format!(
                "the upstream server answered HTTP {status}"
            ))),
        }
    }

    async fn read_events(self: &Arc<Self>, response: reqwest::Response, related: Option<u64>) {
        let mut events = EventReader::new(response);
        loop {
            match events.next().await {
                Ok(Some(data)) => {
                    if data.is_empty() {
                        continue;
                    }
                    if let Some(reply) = self.routes.inbound(&data, related) {
                        self.reply(reply).await;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(target: "mcpgate::upstream", upstream = %self.spec.name, error = %e, "an upstream event stream ended early");
                    return;
                }
            }
        }
    }

    // A refusal of the upstream's request, sent back as it would be by a
    // client.
    async fn reply(self: &Arc<Self>, reply: Bytes) {
        let Ok(request) = self.authorized(self.signed(self.post(), &reply)).await else {
            return;
        };
        let request = request
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, ACCEPT_BOTH)
            .body(reply);
        // Not awaited inline: the stream being read may be what the
        // upstream holds open until it hears back.
        tokio::spawn(async move {
            let _ = request.send().await;
        });
    }

    /// Ends the session at the upstream.
    pub fn stop(&self) {
        self.up.store(false, Ordering::Release);
        if let Some(task) = lock(&self.standalone).take() {
            task.abort();
        }
        lock(&self.legacy).take();
        let Some(session) = lock(&self.session).take() else {
            return;
        };
        let mut request = self
            .signed(self.spec.client.delete(self.spec.url.clone()), b"")
            .header(SESSION, session);
        // Ending a session needs no new token: the last one, if any.
        if let Some(token) = self.token.try_lock().ok().and_then(|t| t.clone()) {
            request = request.bearer_auth(token.secret());
        }
        tokio::spawn(async move {
            let _ = request.send().await;
        });
    }
}

impl Drop for HttpUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

// A JSON answer, at most as large as one event may be: an upstream cannot
// make the gateway hold more.
async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, UpstreamError> {
    let too_large = || {
        UpstreamError::Unavailable(format!(
            "the upstream's answer is larger than {} bytes",
            super::sse::MAX_EVENT
        ))
    };
    if response
        .content_length()
        .is_some_and(|n| n > super::sse::MAX_EVENT as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > super::sse::MAX_EVENT {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(UpstreamError::Unavailable(format!(
                    "the upstream's answer was cut: {}",
                    without_url(&e)
                )));
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_event_stream(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

// reqwest's errors name the URL; an upstream URL may carry a key in its
// query, and these messages reach clients.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection refused or failed"
    } else if e.is_body() || e.is_decode() {
        "the body could not be read"
    } else {
        "the request failed"
    };
    kind.to_owned()
}

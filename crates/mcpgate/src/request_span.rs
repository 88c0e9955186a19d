//! One span per HTTP request: its id (taken from `X-Request-Id` when sane,
//! else made here, and sent back), which every log line inside carries;
//! with tracing on, the OpenTelemetry attributes and the caller's
//! `traceparent` as parent. Also the request counters and latency.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher as _, Hasher as _};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::Response;
use tracing::field::Empty;

use crate::series::{Handles, read, write};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The header a request id travels in.
pub const REQUEST_ID: &str = "x-request-id";

/// Longest request id taken from a client; longer ones are replaced.
const MAX_ID_LEN: usize = 64;

/// What the middleware needs.
#[derive(Debug)]
pub struct Tracking {
    traces: bool,
    // Ids are `<process prefix><counter>`: unique across replicas without
    // a random draw per request.
    prefix: u32,
    next: AtomicU64,
    routes: RwLock<HashMap<Box<str>, Arc<RouteSeries>>>,
}

impl Tracking {
    /// `traces`: whether spans are exported (then they carry the
    /// OpenTelemetry attributes and the caller's trace context).
    pub fn new(traces: bool) -> Arc<Self> {
        let prefix = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish() as u32;
        Arc::new(Self {
            traces,
            prefix,
            next: AtomicU64::new(1),
            routes: RwLock::default(),
        })
    }

    fn request_id(&self, headers: &HeaderMap) -> String {
        if let Some(given) = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok())
            && is_sane_id(given)
        {
            return given.to_owned();
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}{:08x}", self.prefix, n)
    }
}

// Only what cannot forge a log line or a header: letters, digits, `-_.:`.
fn is_sane_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Reads the caller's trace context from `headers`.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes the current span's trace context into outgoing headers.
struct HeaderInjector<'a>(&'a mut HeaderMap);

impl opentelemetry::propagation::Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The current span's `traceparent` (and `tracestate`), for a request to
/// an upstream; nothing when tracing is off.
pub fn inject_trace_context(headers: &mut HeaderMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers));
    });
}

/// The request series' handles for one route, made once: a request then
/// costs an atomic add and a histogram push, not a registry lookup with
/// freshly allocated labels.
#[derive(Debug)]
struct RouteSeries {
    route: Box<str>,
    duration: metrics::Histogram,
    counts: Handles<(&'static str, u16), metrics::Counter>,
}

impl RouteSeries {
    fn count(&self, method: &'static str, status: u16) {
        self.counts
            .get((method, status), || {
                metrics::counter!(
                    "mcpgate_http_requests_total",
                    "route" => self.route.to_string(),
                    "method" => method,
                    "status" => status.to_string()
                )
            })
            .increment(1);
    }
}

// Methods as labels: the standard ones, else `other` (a route taking any
// method would otherwise let a caller mint series).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

impl Tracking {
    fn series(&self, route: &str) -> Arc<RouteSeries> {
        if let Some(series) = read(&self.routes).get(route) {
            return series.clone();
        }
        write(&self.routes)
            .entry(route.into())
            .or_insert_with(|| {
                Arc::new(RouteSeries {
                    route: route.into(),
                    duration: metrics::histogram!(
                        "mcpgate_http_request_duration_seconds",
                        "route" => route.to_owned()
                    ),
                    counts: Handles::default(),
                })
            })
            .clone()
    }

    fn span(&self, request: &Request, id: &str, route: &str) -> tracing::Span {
        if !self.traces {
            return tracing::info_span!(target: "mcpgate::request", "request", id = %id);
        }
        let method = request.method();
        let span = tracing::info_span!(
            target: "mcpgate::request",
            "request",
            otel.name = %format_args!("{method} {route}"),
            otel.kind = "server",
            http.request.method = %method,
            http.route = %route,
            http.response.status_code = Empty,
            request_id = %id,
            enduser.id = Empty,
            enduser.tenant = Empty,
            client.app = Empty,
            mcp.tool = Empty,
            decision = Empty,
        );
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        let _ = span.set_parent(parent);
        span
    }
}

/// The layer: a route layer (`Router::route_layer`), so that the matched
/// route is known. A service of its own rather than `from_fn`, which would
/// clone the route's boxed service and box a future on every request.
#[derive(Debug, Clone)]
pub struct TrackLayer(pub Arc<Tracking>);

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track {
            inner,
            tracking: self.0.clone(),
        }
    }
}

/// [`TrackLayer`]'s service.
#[derive(Debug, Clone)]
pub struct Track<S> {
    inner: S,
    tracking: Arc<Tracking>,
}

impl<S> tower::Service<Request> for Track<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let id = self.tracking.request_id(request.headers());
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", |p| p.as_str());
        let series = self.tracking.series(route);
        let span = self.tracking.span(&request, &id, &series.route);
        let method = method_label(request.method());
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Tracked {
            future,
            span,
            state: Some(Pending {
                started,
                id,
                method,
                series,
            }),
        }
    }
}

#[derive(Debug)]
struct Pending {
    started: Instant,
    id: String,
    method: &'static str,
    series: Arc<RouteSeries>,
}

pin_project_lite::pin_project! {
    /// A request's response, polled inside its span; counted and given its
    /// id once ready.
    pub struct Tracked<F> {
        #[pin]
        future: F,
        span: tracing::Span,
        state: Option<Pending>,
    }
}

impl<F, E> Future for Tracked<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let mut result = std::task::ready!(this.future.poll(cx));
        if let (Ok(response), Some(done)) = (&mut result, this.state.take()) {
            let status = response.status();
            this.span
                .record("http.response.status_code", status.as_u16());
            if let Ok(value) = HeaderValue::from_str(&done.id) {
                response.headers_mut().insert(REQUEST_ID, value);
            }
            done.series.count(done.method, status.as_u16());
            done.series.duration.record(done.started.elapsed());
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_request_id_is_kept_and_others_replaced() {
        let tracking = Tracking::new(false);
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("lb-1234.abc:7"));
        assert_eq!(tracking.request_id(&headers), "lb-1234.abc:7");

        for bad in ["a b", "x\u{7f}", "id\"}", &"x".repeat(65)] {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(bad) {
                headers.insert(REQUEST_ID, value);
            }
            let made = tracking.request_id(&headers);
            assert_ne!(made, bad);
            assert_eq!(made.len(), 16, "{made}");
        }
    }

    #[test]
    fn made_ids_differ() {
        let tracking = Tracking::new(false);
        let headers = HeaderMap::new();
        assert_ne!(tracking.request_id(&headers), tracking.request_id(&headers));
    }
}

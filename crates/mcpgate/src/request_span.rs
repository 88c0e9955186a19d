//! One span per HTTP request: its id (taken from `X-Request-Id` when sane,
//! else made here, and sent back), which every log line inside carries;
//! with tracing on, the OpenTelemetry attributes and the caller's
//! `traceparent` as parent. Also the request counters and latency.

use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;
use tracing::field::Empty;
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

/// The middleware: `axum::middleware::from_fn_with_state(tracking, track)`,
/// as a route layer so that the matched route is known.
pub async fn track(
    State(tracking): State<Arc<Tracking>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = tracking.request_id(request.headers());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = request.method().clone();
    let span = if tracking.traces {
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
            mcp.method = Empty,
            mcp.tool = Empty,
            decision = Empty,
        );
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        let _ = span.set_parent(parent);
        span
    } else {
        tracing::info_span!(target: "mcpgate::request", "request", id = %id)
    };
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    metrics::counter!(
        "mcpgate_http_requests_total",
        "route" => route.clone(),
        "method" => method.as_str().to_owned(),
        "status" => status.as_str().to_owned()
    )
    .increment(1);
    metrics::histogram!("mcpgate_http_request_duration_seconds", "route" => route)
        .record(started.elapsed());
    response
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

//! What operators scrape and probe: Prometheus text at `/metrics` on a
//! listener of its own (loopback by default, so never public by accident),
//! `/healthz` (alive) and `/readyz` (keys loaded, store reachable,
//! upstreams up), the latter two also on the public listener for load
//! balancers.
//!
//! The libraries count with the `metrics` facade; this module installs the
//! Prometheus recorder behind it and names and describes every series.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mcpgate_resource::gateway::UpstreamSpec;
use mcpgate_store::Store;
use mcpgate_token::jwks::JwksCache;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;

/// The default scrape address.
pub const DEFAULT_METRICS_BIND: &str = "127.0.0.1:9090";

/// How long one readiness check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Latency buckets, in seconds: from a cached token check (microseconds)
/// to an upstream tool call (up to the gateway's two-minute timeout).
const SECONDS_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 5.0, 30.0,
];

/// Installs the process-wide Prometheus recorder. Once per process.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &SECONDS_BUCKETS)?
        .install_recorder()?;
    describe();
    // Histograms are folded into what `render` shows on upkeep; without
    // it they grow between scrapes.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Every series mcpgate exports, with its help text.
fn describe() {
    describe_counter!(
        "mcpgate_http_requests_total",
        "HTTP requests answered, by route, method and status"
    );
    describe_histogram!(
        "mcpgate_http_request_duration_seconds",
        Unit::Seconds,
        "Time to the response's head, by route"
    );
    describe_counter!(
        "mcpgate_token_refusals_total",
        "Bearer tokens (or requests without one) refused at /mcp, by reason code"
    );
    describe_histogram!(
        "mcpgate_token_validation_duration_seconds",
        Unit::Seconds,
        "Token validation time; cache=hit for a token verified before, miss for first sight"
    );
    describe_counter!(
        "mcpgate_jwks_fetches_total",
        "Signing-key fetches, by issuer and outcome (ok, error)"
    );
    describe_gauge!("mcpgate_sessions_open", "MCP sessions open at this replica");
    describe_counter!(
        "mcpgate_tool_calls_total",
        "Tool calls (and prompt gets, resource reads) decided, by kind, tool and decision"
    );
    describe_histogram!(
        "mcpgate_upstream_call_duration_seconds",
        Unit::Seconds,
        "Calls that went ahead to an upstream MCP server, decision to answer, by upstream"
    );
    describe_counter!(
        "mcpgate_upstream_calls_total",
        "Calls that went ahead to an upstream, by upstream and outcome (ok, tool_error, rpc_error, timeout, unavailable)"
    );
    describe_counter!(
        "mcpgate_broker_grants_total",
        "Token requests at the broker, by grant type and outcome (issued, refused) and OAuth error"
    );
    describe_counter!(
        "mcpgate_broker_sign_ins_total",
        "Sign-ins completed at the broker, by decision"
    );
    describe_histogram!(
        "mcpgate_store_operation_duration_seconds",
        Unit::Seconds,
        "Store operations, by backend, operation and outcome"
    );
    describe_counter!(
        "mcpgate_audit_records_dropped_total",
        "Audit records the writer could not keep up with"
    );
}

/// What `/readyz` checks.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Every trusted issuer's key cache.
    pub keys: Vec<Arc<JwksCache>>,
    /// The store, when there is one.
    pub store: Option<Arc<dyn Store>>,
    /// The gateway's upstreams.
    pub upstreams: Vec<(String, UpstreamSpec)>,
    /// Set once shutdown begins: a draining replica takes no new traffic.
    pub draining: AtomicBool,
}

#[derive(Debug, Serialize)]
struct Check {
    name: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

#[derive(Debug, Serialize)]
struct ReadyAnswer {
    status: &'static str,
    checks: Vec<Check>,
}

impl Readiness {
    /// Runs every check at once, each bounded by [`CHECK_TIMEOUT`].
    async fn checks(&self) -> Vec<Check> {
        let keys = self.keys.iter().map(|cache| async move {
            let name = format!("keys {}", cache.label());
            let outcome = tokio::time::timeout(CHECK_TIMEOUT, cache.ensure_loaded()).await;
            match outcome {
                Ok(Ok(n)) if n > 0 => ok(name),
                Ok(Ok(_)) => failed(name, "the key set is empty".to_owned()),
                Ok(Err(e)) => failed(name, e.to_string()),
                Err(_) => failed(name, "timed out".to_owned()),
            }
        });
        let store = self.store.iter().map(|store| async move {
            match tokio::time::timeout(CHECK_TIMEOUT, store.ping()).await {
                Ok(Ok(())) => ok("store".to_owned()),
                Ok(Err(e)) => failed("store".to_owned(), e.to_string()),
                Err(_) => failed("store".to_owned(), "timed out".to_owned()),
            }
        });
        let upstreams = self.upstreams.iter().map(|(name, spec)| async move {
            let name = format!("upstream {name}");
            match tokio::time::timeout(CHECK_TIMEOUT, spec.probe()).await {
                Ok(Ok(())) => ok(name),
                Ok(Err(e)) => failed(name, e.to_string()),
                Err(_) => failed(name, "timed out".to_owned()),
            }
        });
        let (mut all, store, upstreams) = futures::join!(
            futures::future::join_all(keys),
            futures::future::join_all(store),
            futures::future::join_all(upstreams)
        );
        all.extend(store);
        all.extend(upstreams);
        if self.draining.load(Ordering::Acquire) {
            all.push(failed("draining".to_owned(), "shutting down".to_owned()));
        }
        all
    }
}

fn ok(name: String) -> Check {
    Check {
        name,
        ok: true,
        detail: None,
    }
}

fn failed(name: String, detail: String) -> Check {
    Check {
        name,
        ok: false,
        detail: Some(detail),
    }
}

/// `GET /readyz`: 200 when every check passes, else 503; the body says
/// which failed and why (no secrets: URLs are the issuers' and upstreams'
/// public ones).
pub async fn readyz(State(readiness): State<Arc<Readiness>>) -> Response {
    let checks = readiness.checks().await;
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let answer = ReadyAnswer {
        status: if ready { "ready" } else { "not ready" },
        checks,
    };
    (status, axum::Json(answer)).into_response()
}

/// What the metrics listener serves.
#[derive(Clone)]
pub struct Scrape {
    /// The recorder's renderer.
    pub handle: PrometheusHandle,
    /// Gauges read at scrape time rather than kept on the request path.
    pub gauges: Arc<dyn Fn() + Send + Sync>,
}

async fn metrics(State(scrape): State<Scrape>) -> Response {
    (scrape.gauges)();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        scrape.handle.render(),
    )
        .into_response()
}

/// The metrics listener's routes: `/metrics`, `/healthz`, `/readyz`.
pub fn router(scrape: Scrape, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(metrics).with_state(scrape))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz).with_state(readiness))
}

/// Where the metrics listener goes: `None` for `off`. With no setting it
/// is loopback, on port 0 when the server's own port is ephemeral (tests
/// and scripts that run several servers at once).
pub fn metrics_addr(setting: Option<&str>, bind: SocketAddr) -> anyhow::Result<Option<SocketAddr>> {
    match setting.map(str::trim) {
        Some("off" | "none" | "") => Ok(None),
        Some(addr) => addr.parse().map(Some).map_err(|_| {
            anyhow::anyhow!("--metrics-bind {addr:?} is not an address (IP:PORT) or `off`")
        }),
        None if bind.port() == 0 => Ok(Some(SocketAddr::from(([127, 0, 0, 1], 0)))),
        None => Ok(Some(DEFAULT_METRICS_BIND.parse()?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_listener_is_loopback_unless_told_otherwise() {
        let fixed: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        let ephemeral: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        assert_eq!(
            metrics_addr(None, fixed).expect("ok"),
            Some("127.0.0.1:9090".parse().expect("addr"))
        );
        assert_eq!(
            metrics_addr(None, ephemeral).expect("ok"),
            Some("127.0.0.1:0".parse().expect("addr"))
        );
        assert_eq!(
            metrics_addr(Some("0.0.0.0:9464"), fixed).expect("ok"),
            Some("0.0.0.0:9464".parse().expect("addr"))
        );
        assert_eq!(metrics_addr(Some("off"), fixed).expect("ok"), None);
        assert!(metrics_addr(Some("9090"), fixed).is_err());
    }
}

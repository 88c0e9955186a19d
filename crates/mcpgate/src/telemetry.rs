//! Logs and traces: text for people or JSON lines for collectors on
//! stderr, and OpenTelemetry spans over OTLP when the standard `OTEL_*`
//! variables ask for them (off, and nothing installed, otherwise).

use std::io::IsTerminal;

use clap::ValueEnum;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per line, with the spans (the request id) it
    /// happened in.
    Json,
}

/// What [`init`] installed; [`Telemetry::shutdown`] flushes it.
#[must_use = "spans not flushed at exit are lost"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn traces_on(&self) -> bool {
        self.traces.is_some()
    }

    /// Exports the spans still buffered.
    pub fn shutdown(self) {
        if let Some(provider) = self.traces
            && let Err(e) = provider.shutdown()
        {
            eprintln!("mcpgate: could not flush the last traces: {e}");
        }
    }
}

/// Installs the global subscriber: `MCPGATE_LOG` (an `EnvFilter`) else
/// `default_level`, in `format`; and, when `otel` and the environment
/// configure an OTLP endpoint, the OpenTelemetry layer and the W3C trace
/// context propagator.
pub fn init(format: LogFormat, default_level: &str, otel: bool) -> Telemetry {
    let filter =
        EnvFilter::try_from_env("MCPGATE_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let (provider, problem) = if otel {
        match otlp_from_env(&|name| std::env::var(name).ok()) {
            Ok(Some(settings)) => match settings.build() {
                Ok(provider) => (Some(provider), None),
                Err(e) => (None, Some(format!("OpenTelemetry is off: {e}"))),
            },
            Ok(None) => (None, None),
            Err(e) => (None, Some(format!("OpenTelemetry is off: {e}"))),
        }
    } else {
        (None, None)
    };
    let traces = provider.as_ref().map(|p| {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("mcpgate"))
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                // Only the spans mcpgate opens itself: one per request and
                // what it calls; its events ride in the logs.
                meta.is_span() && meta.target().starts_with("mcpgate")
            }))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .init();
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
    if provider.is_some() {
        tracing::info!("exporting traces over OTLP");
    }
    Telemetry { traces: provider }
}

/// The exporter the `OTEL_*` variables describe.
#[derive(Debug, PartialEq)]
struct OtlpSettings {
    /// The traces endpoint, when given in full
    /// (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); else the exporter appends
    /// `/v1/traces` to `OTEL_EXPORTER_OTLP_ENDPOINT`, which it reads itself.
    traces_endpoint: Option<String>,
    protocol: Protocol,
    service_name: Option<String>,
}

/// Whether the standard variables turn traces on, and how. `Ok(None)`: no
/// endpoint, or the SDK or the traces exporter is switched off.
fn otlp_from_env(var: &dyn Fn(&str) -> Option<String>) -> Result<Option<OtlpSettings>, String> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    if let Some(exporter) = set("OTEL_TRACES_EXPORTER") {
        match exporter.trim() {
            "none" => return Ok(None),
            "otlp" => {}
            other => {
                return Err(format!(
                    "OTEL_TRACES_EXPORTER={other} is not supported; use otlp"
                ));
            }
        }
    }
    let traces_endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    if traces_endpoint.is_none() && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
        return Ok(None);
    }
    let protocol = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http/protobuf".to_owned());
    let protocol = match protocol.trim() {
        "http/protobuf" => Protocol::HttpBinary,
        "http/json" => Protocol::HttpJson,
        // Built without gRPC (tonic) to keep the binary lean; every
        // collector also listens for OTLP over HTTP on 4318.
        "grpc" => {
            return Err(
                "OTLP over gRPC is not built in; set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf and the collector's HTTP port (4318)"
                    .to_owned(),
            );
        }
        other => return Err(format!("unknown OTEL_EXPORTER_OTLP_PROTOCOL {other:?}")),
    };
    Ok(Some(OtlpSettings {
        traces_endpoint,
        protocol,
        service_name: set("OTEL_SERVICE_NAME"),
    }))
}

impl OtlpSettings {
    fn build(self) -> Result<SdkTracerProvider, String> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(self.protocol);
        if let Some(endpoint) = self.traces_endpoint {
            exporter = exporter.with_endpoint(endpoint);
        }
        let exporter = exporter.build().map_err(|e| e.to_string())?;
        // The resource reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES;
        // without a name, "mcpgate" rather than "unknown_service".
        let mut resource = opentelemetry_sdk::Resource::builder();
        if self.service_name.is_none() {
            resource = resource.with_service_name("mcpgate");
        }
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<OtlpSettings>, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        otlp_from_env(&|name| vars.get(name).cloned())
    }

    #[test]
    fn traces_are_off_without_an_endpoint() {
        assert_eq!(settings(&[]), Ok(None));
        assert_eq!(settings(&[("OTEL_SERVICE_NAME", "gw")]), Ok(None));
    }

    #[test]
    fn an_endpoint_turns_them_on_over_http_protobuf() {
        let on = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")])
            .expect("valid")
            .expect("on");
        assert_eq!(on.protocol, Protocol::HttpBinary);
        assert_eq!(on.traces_endpoint, None);
    }

    #[test]
    fn the_traces_variables_win_over_the_general_ones() {
        let on = settings(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces",
            ),
        ])
        .expect("valid")
        .expect("on");
        assert_eq!(on.protocol, Protocol::HttpJson);
        assert_eq!(
            on.traces_endpoint.as_deref(),
            Some("http://c:4318/v1/traces")
        );
    }

    #[test]
    fn the_switches_off_are_honoured() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert_eq!(
            settings(&[endpoint, ("OTEL_SDK_DISABLED", "true")]),
            Ok(None)
        );
        assert_eq!(
            settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]),
            Ok(None)
        );
    }

    #[test]
    fn grpc_is_refused_with_what_to_set_instead() {
        let e = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ])
        .expect_err("refused");
        assert!(e.contains("http/protobuf"), "{e}");
    }
}

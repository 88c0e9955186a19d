//! Gateway mode's settings, from the flags and `[[upstreams]]`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use mcpgate_resource::gateway::http::HttpSpec;
use mcpgate_resource::gateway::identity::IdentityKey;
use mcpgate_resource::gateway::stdio::StdioSpec;
use mcpgate_resource::gateway::{GatewaySettings, Isolation, UpstreamSpec};

use mcpgate_resource::pins::{MemoryPins, PinBackend, PinMode, ToolPins};
use mcpgate_store::Store;

use crate::cli::ServeArgs;
use crate::config::{RawConfig, RawUpstream};
use crate::pins::StorePins;

/// The upstreams `/mcp` stands in front of, if any: `--upstream-cmd` or
/// `--upstream-url` win over the configuration (keeping a lone configured
/// upstream's other settings).
pub fn settings(
    args: &ServeArgs,
    raw: &RawConfig,
    store: Option<Arc<dyn Store>>,
) -> anyhow::Result<Vec<Planned>> {
    let from_flags = match (&args.upstream_cmd, &args.upstream_url) {
        (Some(command), _) => Some(RawUpstream {
            command: Some(command.clone()),
            ..RawUpstream::default()
        }),
        (None, Some(url)) => Some(RawUpstream {
            url: Some(url.clone()),
            ..RawUpstream::default()
        }),
        (None, None) => None,
    };
    let upstreams = match (from_flags, raw.upstreams.as_slice()) {
        (Some(flags), configured) => {
            if configured.len() > 1 {
                bail!(
                    "--upstream-cmd/--upstream-url name one upstream, and the configuration has {} [[upstreams]]; keep one or the other",
                    configured.len()
                );
            }
            vec![match configured {
                [one] if one.command.is_some() == flags.command.is_some() => RawUpstream {
                    command: flags.command,
                    url: flags.url,
                    ..one.clone()
                },
                _ => flags,
            }]
        }
        (None, configured) => configured.to_vec(),
    };
    if upstreams.len() > 1 {
        let names: Vec<&str> = upstreams
            .iter()
            .map(|u| u.name.as_deref().unwrap_or_default())
            .collect();
        mcpgate_resource::gateway::mux::check_names(names.iter().copied())
            .context("several [[upstreams]]")?;
    }
    upstreams
        .iter()
        .map(|upstream| one(args, raw, upstream, store.clone()))
        .collect()
}

fn one(
    args: &ServeArgs,
    raw: &RawConfig,
    upstream: &RawUpstream,
    store: Option<Arc<dyn Store>>,
) -> anyhow::Result<Planned> {
    let name = upstream
        .name
        .clone()
        .unwrap_or_else(|| "upstream".to_owned());
    let mut obo_scopes = None;
    let spec = match (&upstream.command, &upstream.url) {
        (Some(_), None) if upstream.identity.as_deref().is_some_and(|i| i != "none") => bail!(
            "upstream {name:?}: identity applies to HTTP upstreams; a stdio child gets the user's identifiers in its environment"
        ),
        (Some(command), None) => UpstreamSpec::Stdio(Arc::new(StdioSpec {
            argv: StdioSpec::parse_command(command)?,
            env: upstream.env.clone().into_iter().collect(),
            cwd: upstream.cwd.clone(),
            name,
        })),
        (None, Some(url)) => {
            let loopback = mcpgate_resource::is_loopback_host(url);
            match url.scheme() {
                "https" => {}
                "http" if loopback || args.dangerous_allow_http => {}
                _ => bail!(
                    "upstream {name:?}: {} is not https on a public host (plain http only on loopback, or with --dangerous-allow-http)",
                    url.origin().ascii_serialization()
                ),
            }
            let timeout = Duration::from_secs(upstream.timeout_secs.unwrap_or(120).max(1));
            // An MCP endpoint answers where it is: a redirect would carry the
            // caller's identity (headers, token) somewhere else.
            let client = crate::outbound::client_builder(raw.ca_file.as_deref(), timeout)?
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .context("building the upstream's HTTP client")?;
            let identity = match upstream.identity.as_deref() {
                None | Some("none") => None,
                Some("headers") => Some(Arc::new(identity_key(upstream, &name)?)),
                Some("obo") => {
                    if upstream.obo_scopes.is_empty() {
                        bail!(
                            "upstream {name:?}: identity = \"obo\" needs obo_scopes (the upstream API's, e.g. \"api://<its app id>/.default\")"
                        );
                    }
                    obo_scopes = Some(upstream.obo_scopes.clone());
                    None
                }
                Some(other) => bail!(
                    "upstream {name:?}: identity = {other:?}; use \"none\", \"headers\" or \"obo\""
                ),
            };
            UpstreamSpec::Http(Arc::new(HttpSpec {
                url: url.clone(),
                client,
                name,
                identity,
                // Set once the broker runs: see `attach_obo`.
                credential: None,
                // Set when traces are exported: see `attach_trace_context`.
                trace_context: None,
            }))
        }
        (Some(_), Some(_)) => bail!("upstream {name:?} has both a command and a url; keep one"),
        (None, None) => bail!("upstream {name:?} needs a command or a url"),
    };
    let mut settings = GatewaySettings::new(spec);
    settings.isolation = match upstream.isolation.as_deref() {
        None | Some("session") => Isolation::PerSession,
        Some("shared") => Isolation::Shared,
        Some(other) => bail!("isolation = {other:?}: use \"session\" or \"shared\""),
    };
    if let Some(secs) = upstream.timeout_secs {
        settings.request_timeout = Duration::from_secs(secs.max(1));
    }
    if let Some(secs) = upstream.start_timeout_secs {
        settings.start_timeout = Duration::from_secs(secs.max(1));
    }
    if let Some(max) = upstream.max_sessions {
        settings.max_upstream_sessions = max.max(1);
    }
    let mode = upstream.pinning.unwrap_or_default();
    if mode != PinMode::Off {
        // Pins outlive the process where there is a store to keep them.
        let backend: Arc<dyn PinBackend> = match store {
            Some(store) => Arc::new(StorePins(store)),
            None => Arc::new(MemoryPins::default()),
        };
        settings.pins = Some(Arc::new(ToolPins::new(backend, mode)));
    }
    if let Some(cwd) = &upstream.cwd {
        std::fs::metadata(cwd)
            .with_context(|| format!("the upstream's working directory {}", cwd.display()))?;
    }
    Ok(Planned {
        settings,
        obo_scopes,
    })
}

/// The gateway's settings, and what must wait for the broker.
#[derive(Debug)]
pub struct Planned {
    /// The settings.
    pub settings: GatewaySettings,
    /// `identity = "obo"`: the scopes of the upstream's tokens, obtained
    /// through the broker once it runs.
    pub obo_scopes: Option<Vec<String>>,
}

/// Where On-Behalf-Of tokens come from.
#[derive(Debug, Clone)]
pub enum OboFrom {
    /// Broker mode: the user's upstream grant, which the broker holds.
    Broker(Arc<mcpgate_broker::Broker>),
    /// Direct mode: the caller's own token, exchanged by mcpgate's
    /// confidential client.
    Direct(Arc<mcpgate_broker::upstream::Upstream>),
}

/// Gives the HTTP upstream its On-Behalf-Of tokens.
pub fn attach_obo(settings: &mut GatewaySettings, scopes: Vec<String>, from: &OboFrom) {
    if let UpstreamSpec::Http(spec) = &mut settings.upstream {
        let source: Arc<dyn mcpgate_resource::gateway::credential::TokenSource> = match from {
            OboFrom::Broker(broker) => Arc::new(crate::broker::BrokerObo {
                broker: broker.clone(),
                scopes,
            }),
            OboFrom::Direct(client) => Arc::new(crate::broker::DirectObo {
                client: client.clone(),
                scopes,
            }),
        };
        Arc::make_mut(spec).credential = Some(source);
    }
}

/// Passes each request's trace context (`traceparent`) to an HTTP
/// upstream, so that its spans join the caller's trace.
pub fn attach_trace_context(settings: &mut GatewaySettings) {
    if let UpstreamSpec::Http(spec) = &mut settings.upstream {
        Arc::make_mut(spec).trace_context = Some(crate::request_span::inject_trace_context);
    }
}

/// The identity-header secret: from `identity_secret_file`, else from
/// `MCPGATE_UPSTREAM_IDENTITY_SECRET` (never a command-line argument).
fn identity_key(upstream: &RawUpstream, name: &str) -> anyhow::Result<IdentityKey> {
    let secret = match &upstream.identity_secret_file {
        Some(path) => {
            let mut bytes = std::fs::read(path)
                .with_context(|| format!("upstream {name:?}: reading {}", path.display()))?;
            // A file written by `echo` ends with a newline that is not
            // part of the secret.
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            bytes
        }
        None => std::env::var("MCPGATE_UPSTREAM_IDENTITY_SECRET")
            .map(String::into_bytes)
            .map_err(|_| {
                anyhow::anyhow!(
                    "upstream {name:?}: identity = \"headers\" needs identity_secret_file or MCPGATE_UPSTREAM_IDENTITY_SECRET"
                )
            })?,
    };
    IdentityKey::new(&secret).with_context(|| format!("upstream {name:?}"))
}

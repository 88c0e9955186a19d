//! `mcpgate serve`: the protected MCP server.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::serve::ListenerExt;
use mcpgate_resource::policy::{Policy, PolicyHandle};
use mcpgate_resource::{Access, ResourceSettings, Stats, router_with_endpoint};
use serde::Serialize;

use crate::cli::ServeArgs;
use crate::config::{BrokerMode, ConfigError};
use crate::request_span::{TrackLayer, Tracking};
use crate::{audit, broker, devidp, gateway, ops, policy_watch, ready, validator};

/// What the ready file says.
#[derive(Debug, Serialize)]
struct Ready<'a> {
    mcp_url: String,
    prm_url: String,
    issuers: &'a [String],
    authorization_servers: &'a [String],
    scopes: &'a [String],
    auth: bool,
    bind: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idp: Option<&'a mcpgate_devidp::IdpInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    login: Option<&'a str>,
}

/// How long calls in flight may take to finish after SIGTERM, by default.
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs until interrupted. `traces`: whether spans are exported (then
/// HTTP upstreams are passed the trace context).
pub async fn run(args: ServeArgs, traces: bool) -> anyhow::Result<ExitCode> {
    let mut raw = args.config.load()?;
    let bind = args.bind.or(raw.bind).unwrap_or(validator::DEFAULT_BIND);
    let metrics_setting = args.metrics_bind.as_deref().or(raw.metrics_bind.as_deref());
    let metrics_bind = ops::metrics_addr(metrics_setting, bind)?;
    let metrics_asked = metrics_setting.is_some();
    let drain_for = args
        .shutdown_timeout_secs
        .or(raw.shutdown_timeout_secs)
        .map_or(DEFAULT_SHUTDOWN_TIMEOUT, Duration::from_secs);
    let metrics_listener = match metrics_bind {
        Some(at) => match tokio::net::TcpListener::bind(at).await {
            Ok(listener) => Some(listener),
            // The default port taken (a second server on this machine):
            // serving matters more than its metrics. One asked for fails.
            Err(e) if !metrics_asked => {
                tracing::warn!(
                    "no metrics: cannot listen on {at}, the default ({e}); set --metrics-bind ADDR (or `off`)"
                );
                None
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot listen for metrics on {at} (--metrics-bind; `off` for none)"
                )));
            }
        },
        None => None,
    };
    // Counters from the first request on, and only when someone can read
    // them: with no metrics listener every count is a no-op.
    let scrape = match &metrics_listener {
        Some(_) => Some(ops::install_recorder().context("installing the metrics recorder")?),
        None => None,
    };
    if args.no_auth && !bind.ip().is_loopback() {
        bail!(
            "--no-auth is refused unless the server is bound to a loopback address (it was {bind})"
        );
    }

    // With no issuer configured, the development IdP comes up beside the
    // server and the server trusts it: a working, secured setup on defaults.
    let embedded = !args.no_auth && !raw.has_issuer();
    let brokered = !args.no_auth && broker::mode(&raw, embedded) == BrokerMode::Broker;
    let data_dir = devidp::data_dir(&args.idp.place, &raw);
    // One store for everything that must survive a restart: the broker's
    // grants and the embedded IdP's.
    // Gateway mode keeps pins and the audit trail there, even with no
    // authentication.
    let gatewayed =
        args.upstream_cmd.is_some() || args.upstream_url.is_some() || !raw.upstreams.is_empty();
    let store = if embedded || brokered || gatewayed {
        let url = broker::store_url(args.store.as_deref(), &raw, &data_dir);
        let store = broker::open_store(&url, &raw).await?;
        let backend = ["sqlite", "redis", "memory"]
            .into_iter()
            .find(|b| url.starts_with(b))
            .unwrap_or("other");
        let store = mcpgate_store::Metered::wrap(store, backend);
        broker::purge_periodically(store.clone());
        Some(store)
    } else {
        None
    };
    // Every decision on a call, a sign-in or a token, as JSON lines and in
    // the store; drained on shutdown.
    let auditor = audit::start(&raw, &data_dir, store.clone()).await?;
    // Every decision also becomes a log line, a span attribute and a count.
    let decisions: Arc<dyn mcpgate_audit::AuditSink> = audit::Observed::new(auditor.clone());
    let idp = if embedded {
        let idp =
            devidp::start_with_store(&args.idp, &raw, None, Some(bind), store.clone()).await?;
        devidp::trust(&mut raw, idp.info())?;
        Some(idp)
    } else {
        None
    };
    let idp_info = idp.as_ref().map(|i| i.info());
    let idp_ca = idp_info.and_then(|i| i.ca_file.as_deref());
    if !args.no_auth && !raw.has_issuer() {
        return Err(ConfigError::NoIssuer.into());
    }

    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let addr = listener.local_addr()?;
    let public_url = match args.public_url.clone().or(raw.public_url.clone()) {
        Some(u) => u,
        None => format!("http://{addr}").parse().context("public URL")?,
    };
    if public_url.scheme() != "https" && !addr.ip().is_loopback() && !args.dangerous_allow_http {
        bail!(
            "refusing plain http on {addr}: set --public-url https://… (TLS at a reverse proxy), bind to loopback, or pass --dangerous-allow-http for development"
        );
    }
    let mut settings = ResourceSettings::new(public_url.clone(), Vec::new());
    settings.sessions = raw.sessions.limits();
    settings.rate_limits = raw.rate_limits.limits();
    let planned = gateway::settings(&args, &raw, store.clone())?;
    let obo_scopes: Vec<Option<Vec<String>>> =
        planned.iter().map(|p| p.obo_scopes.clone()).collect();
    settings.upstreams = planned.into_iter().map(|p| p.settings).collect();
    if traces {
        settings
            .upstreams
            .iter_mut()
            .for_each(gateway::attach_trace_context);
    }
    // Who may call what: from [policy], reloaded on SIGHUP and when the
    // file changes, without touching sessions.
    let policy = match &raw.policy {
        Some(config) => Policy::compile(config)
            .map_err(|e| anyhow::anyhow!("[policy] in the configuration does not compile: {e}"))?,
        None => Policy::allow_all(),
    };
    settings.policy = Arc::new(PolicyHandle::new(policy));
    settings.audit = Some(decisions.clone());
    if let Some(path) = &args.config.config {
        policy_watch::spawn(path.clone(), settings.policy.clone())
            .context("watching the configuration file for policy changes")?;
    }
    // Pages on this machine may call a server that lives on it; a public
    // deployment (even one behind a proxy on loopback) takes only the
    // configured origins.
    settings.loopback_origins =
        addr.ip().is_loopback() && mcpgate_resource::is_loopback_host(&public_url);
    // Sessions in the store: another replica, or this one after a restart,
    // continues a session opened here.
    settings.shared_sessions = store.clone().map(|store| {
        Arc::new(broker::StoreSessions {
            store,
            idle: settings.sessions.idle,
        }) as Arc<dyn mcpgate_resource::session::SharedSessions>
    });

    // Broker mode: mcpgate is the authorization server MCP clients see,
    // and signs users in upstream as a confidential client. Its tokens are
    // validated like any issuer's; the upstream's own stay accepted too.
    let auto_approve = args.idp.auto_approve(&raw.idp);
    let broker = match store.clone().filter(|_| brokered) {
        Some(store) => Some(
            broker::attach(
                &mut raw,
                &mut settings,
                broker::Attach {
                    idp: idp_info,
                    idp_ca,
                    data_dir: &data_dir,
                    store,
                    auto_approve,
                    audit: Some(decisions.clone()),
                },
            )
            .await?,
        ),
        None => None,
    };

    if obo_scopes.iter().any(Option::is_some) {
        let from = match &broker {
            Some(broker) => gateway::OboFrom::Broker(broker.clone()),
            None if args.no_auth => anyhow::bail!(
                "identity = \"obo\" acts for the caller, and with --no-auth there is none"
            ),
            None => gateway::OboFrom::Direct(
                broker::direct_client(&raw, idp_info, idp_ca)
                    .await
                    .context("identity = \"obo\" in direct mode: mcpgate's confidential client exchanges the caller's token")?,
            ),
        };
        for (upstream, scopes) in settings.upstreams.iter_mut().zip(obo_scopes) {
            if let Some(scopes) = scopes {
                gateway::attach_obo(upstream, scopes, &from);
            }
        }
    }

    let mut readiness = ops::Readiness {
        store: store.clone(),
        upstreams: settings
            .upstreams
            .iter()
            .map(|u| (u.upstream.name().to_owned(), u.upstream.clone()))
            .collect(),
        ..ops::Readiness::default()
    };
    let (access, issuers, mut scopes, authorization_servers) = if args.no_auth {
        (Access::Open, Vec::new(), Vec::new(), Vec::new())
    } else {
        let (policy, validator) = validator::build(&raw, idp_ca)?;
        readiness.keys = validator.key_caches().to_vec();
        let servers = raw.authorization_servers(&policy);
        (
            Access::Validate(validator),
            policy.issuers.clone(),
            policy.required_scopes.clone(),
            servers,
        )
    };
    settings.authorization_servers = authorization_servers.clone();
    if let Some(broker) = &broker {
        // The broker's own keys are in this process; fetching them over
        // HTTP from the public URL would make readiness depend on the load
        // balancer already routing here.
        let own = broker.config().issuer.as_str().to_owned();
        readiness.keys.retain(|cache| cache.label() != own);
        // Clients ask the broker for its own scope names; its tokens
        // carry them, and the policy reads them as the API's.
        scopes = broker
            .config()
            .scopes
            .iter()
            .filter(|s| s.as_str() != mcpgate_broker::config::OFFLINE_ACCESS)
            .cloned()
            .collect();
    }
    settings.scopes = scopes.clone();
    settings
        .allowed_hosts
        .extend(raw.http.allowed_hosts.iter().cloned());
    settings.allowed_origins = raw.http.allowed_origins.clone();
    if let Some(max) = raw.http.max_body_bytes {
        settings.max_body_bytes = max;
    }
    if let Some(name) = &raw.http.resource_name {
        settings.resource_name = name.clone();
    }
    let (mut app, endpoint) = router_with_endpoint(&settings, access, Arc::new(Stats::default()));
    let readiness = Arc::new(readiness);
    let open_sessions = endpoint.clone();
    let dropped = auditor.clone();
    let scrape = scrape.map(|handle| ops::Scrape {
        handle,
        gauges: Arc::new(move || {
            metrics::gauge!("mcpgate_sessions_open").set(open_sessions.sessions().len() as f64);
            metrics::counter!("mcpgate_audit_records_dropped_total").absolute(dropped.dropped());
        }),
    });
    if !settings.upstreams.is_empty() {
        // Idle sessions end on time, and their children with them.
        let every =
            (settings.sessions.idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                endpoint.sessions().sweep_expired();
            }
        });
    }
    if let Some(broker) = &broker {
        app = app.merge(mcpgate_broker::router(broker.clone()));
    }
    // Load balancers probe the public listener; Prometheus scrapes its own.
    let app = app
        .route(
            "/readyz",
            axum::routing::get(ops::readyz).with_state(readiness.clone()),
        )
        .route_layer(TrackLayer(Tracking::new(traces)));
    let metrics_addr = metrics_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    if let Some(at) = metrics_addr
        && !at.ip().is_loopback()
    {
        tracing::warn!(
            "metrics are served on {at}, beyond this machine: make sure only the scraper can reach it"
        );
    }

    if args.no_auth {
        tracing::warn!(
            "AUTHENTICATION IS OFF (--no-auth): anyone who can reach {addr} can call every tool"
        );
    }
    if args.dangerous_allow_http && !addr.ip().is_loopback() {
        tracing::warn!(
            "plain http on a non-loopback address (--dangerous-allow-http): tokens cross the network in clear text"
        );
    }
    // The exact command that signs a person in to this server: through the
    // broker (the client registers itself), or with the IdP's public client.
    let login = idp_info.and_then(|info| {
        let ca = info
            .ca_file
            .as_ref()
            .map(|p| format!(" --ca-file {}", shell_word(&p.display().to_string())))
            .unwrap_or_default();
        if broker.is_some() {
            return Some(format!("mcpgate login {}{ca}", settings.mcp_url()));
        }
        let client = devidp::public_client(info)?;
        Some(format!(
            "mcpgate login {} --client-id {}{ca}",
            settings.mcp_url(),
            client.client_id
        ))
    });
    if let Some(info) = idp_info {
        devidp::print_summary(info);
    }
    eprintln!("mcpgate is serving MCP at {}", settings.mcp_url());
    for gateway in &settings.upstreams {
        eprintln!("  in front of: {}", gateway.upstream);
    }
    eprintln!("  metadata: {}", settings.prm_url());
    if let Some(at) = metrics_addr {
        eprintln!("  metrics:  http://{at}/metrics");
    }
    for issuer in &issuers {
        eprintln!("  trusts:   {issuer}");
    }
    if !scopes.is_empty() {
        eprintln!("  scopes:   {}", scopes.join(" "));
    }
    if let Some(line) = &login {
        if broker.is_some() {
            eprintln!("  sign in:  {line}");
        } else {
            eprintln!("  sign in:  {line}   (add --device-code without a browser)");
        }
    }

    if let Some(path) = &args.ready_file {
        ready::write(
            path,
            &Ready {
                mcp_url: settings.mcp_url(),
                prm_url: settings.prm_url(),
                issuers: &issuers,
                authorization_servers: &authorization_servers,
                scopes: &scopes,
                auth: !args.no_auth,
                bind: addr,
                metrics_url: metrics_addr.map(|at| format!("http://{at}/metrics")),
                idp: idp_info,
                login: login.as_deref(),
            },
        )?;
    }

    // Small JSON-RPC answers must not wait on Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    // On SIGTERM: not ready any more (load balancers stop sending), no new
    // connections, calls in flight finish; past the deadline, exit anyway.
    let stopping = Arc::new(tokio::sync::Notify::new());
    let (stop_metrics, metrics_stopped) = tokio::sync::watch::channel(false);
    if let (Some(listener), Some(scrape)) = (metrics_listener, scrape) {
        let router = ops::router(scrape, readiness.clone());
        let mut stopped = metrics_stopped;
        tokio::spawn(async move {
            let until = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(until)
                .await
            {
                tracing::warn!(error = %e, "the metrics listener failed");
            }
        });
    }
    let signalled = stopping.clone();
    let draining = readiness.clone();
    let closing = settings.closing.clone();
    // The broker rate-limits registrations per peer address.
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        draining
            .draining
            .store(true, std::sync::atomic::Ordering::Release);
        // Standalone streams never end on their own: end them, so that
        // only calls in flight hold the shutdown.
        closing.close();
        tracing::info!(
            "shutting down: new connections refused, calls in flight have {} s to finish",
            drain_for.as_secs()
        );
        signalled.notify_one();
    })
    .into_future();
    tokio::select! {
        served = server => served.context("server failed")?,
        () = async {
            stopping.notified().await;
            tokio::time::sleep(drain_for).await;
        } => {
            tracing::warn!(
                "calls still in flight after {} s: stopping anyway",
                drain_for.as_secs()
            );
        }
    }
    let _ = stop_metrics.send(true);
    if let Some(idp) = idp {
        idp.shutdown().await;
    }
    auditor.shutdown().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// A word a POSIX shell reads back unchanged: quoted only when it must be.
fn shell_word(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@%,".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn login_line_words_survive_a_shell() {
        assert_eq!(shell_word("/home/a/.local/ca.pem"), "/home/a/.local/ca.pem");
        assert_eq!(shell_word("/My Files/ca.pem"), "'/My Files/ca.pem'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }
}

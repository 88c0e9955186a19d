//! Client ID Metadata Documents over real loopback HTTP (development mode),
//! and the refusals that must happen before any connection: those tests
//! name private addresses and send nothing anywhere.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use mcpgate_broker::cimd::address::AddressClass;
use mcpgate_broker::cimd::{CimdError, CimdFetcher, CimdOptions, Lookup};
use serde_json::json;

/// A document server on 127.0.0.1 that counts the requests it sees.
struct Server {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct AppState {
    hits: Arc<AtomicUsize>,
    /// The authority clients use for this server (`127.0.0.1:port` or a
    /// test name), so that documents name their own URL.
    authority: Arc<std::sync::OnceLock<String>>,
}

fn doc_for(state: &AppState, path: &str) -> serde_json::Value {
    let authority = state.authority.get().cloned().unwrap_or_default();
    json!({
        "client_id": format!("http://{authority}{path}"),
        "client_name": "Loopback Test Client",
        "redirect_uris": ["http://127.0.0.1/callback", "https://app.example/cb"],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "none"
    })
}

async fn good(State(s): State<AppState>) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let mut r = axum::Json(doc_for(&s, "/client.json")).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    r
}

async fn mismatch(State(s): State<AppState>) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    axum::Json(doc_for(&s, "/client.json")).into_response()
}

async fn big(State(s): State<AppState>) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let mut d = doc_for(&s, "/big.json");
    d["padding"] = json!("x".repeat(6 * 1024));
    axum::Json(d).into_response()
}

/// Oversized, with no Content-Length: the cap must hold while streaming.
async fn big_chunked(State(s): State<AppState>) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let chunks = (0..64).map(|_| Ok::<_, io::Error>(vec![b' '; 1024]));
    axum::body::Body::from_stream(futures::stream::iter(chunks)).into_response()
}

async fn redirect(State(s): State<AppState>) -> Redirect {
    s.hits.fetch_add(1, Ordering::SeqCst);
    Redirect::temporary("/client.json")
}

async fn not_found(State(s): State<AppState>, _: HeaderMap) -> StatusCode {
    s.hits.fetch_add(1, Ordering::SeqCst);
    StatusCode::NOT_FOUND
}

async fn serve(name: Option<&str>) -> Server {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let authority = Arc::new(std::sync::OnceLock::new());
    let _ = authority.set(match name {
        Some(n) => format!("{n}:{}", addr.port()),
        None => addr.to_string(),
    });
    let state = AppState {
        hits: hits.clone(),
        authority,
    };
    let app = Router::new()
        .route("/client.json", get(good))
        .route("/mismatch.json", get(mismatch))
        .route("/big.json", get(big))
        .route("/big-chunked.json", get(big_chunked))
        .route("/redirect.json", get(redirect))
        .fallback(not_found)
        .with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Server { addr, hits }
}

fn dev() -> CimdFetcher {
    CimdFetcher::new(CimdOptions::development(), reqwest::Client::builder).expect("fetcher")
}

fn prod() -> CimdFetcher {
    CimdFetcher::new(CimdOptions::default(), reqwest::Client::builder).expect("fetcher")
}

/// Names resolved from a table, as a hostile DNS server might answer.
struct Table(HashMap<&'static str, Vec<IpAddr>>);

impl Lookup for Table {
    fn lookup(&self, host: &str) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
        let found = self.0.get(host).cloned();
        Box::pin(
            async move { found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "unknown")) },
        )
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[tokio::test]
async fn a_loopback_document_is_fetched_checked_and_cached() {
    let server = serve(None).await;
    let fetcher = dev();
    let id = format!("http://{}/client.json", server.addr);
    let doc = fetcher.fetch(&id).await.expect("document");
    assert_eq!(doc.client_id.as_str(), id);
    assert_eq!(
        doc.metadata.client_name().map(|n| n.as_str()),
        Some("Loopback Test Client")
    );
    assert!(doc.metadata.redirect_uris()[0].matches("http://127.0.0.1:5000/callback"));
    let again = fetcher.fetch(&id).await.expect("cached");
    assert_eq!(again, doc);
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "the second fetch was not served from cache"
    );
    fetcher.invalidate(&id);
    fetcher.fetch(&id).await.expect("refetched");
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_document_for_another_url_is_refused() {
    let server = serve(None).await;
    let id = format!("http://{}/mismatch.json", server.addr);
    let err = dev().fetch(&id).await.expect_err("mismatch");
    assert!(matches!(err, CimdError::ClientIdMismatch), "{err:?}");
}

#[tokio::test]
async fn oversized_documents_are_refused() {
    let server = serve(None).await;
    for path in ["/big.json", "/big-chunked.json"] {
        let id = format!("http://{}{path}", server.addr);
        let err = dev().fetch(&id).await.expect_err("too large");
        assert!(
            matches!(err, CimdError::TooLarge { limit: 5120 }),
            "{path}: {err:?}"
        );
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = serve(None).await;
    let id = format!("http://{}/redirect.json", server.addr);
    let err = dev().fetch(&id).await.expect_err("redirect");
    assert!(matches!(err, CimdError::Redirected(307)), "{err:?}");
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "the redirect was followed"
    );
}

#[tokio::test]
async fn other_statuses_are_refused() {
    let server = serve(None).await;
    let id = format!("http://{}/missing.json", server.addr);
    let err = dev().fetch(&id).await.expect_err("404");
    assert!(matches!(err, CimdError::Status(404)), "{err:?}");
}

#[tokio::test]
async fn the_connection_goes_to_the_address_checked() {
    // `cimd.test` exists only in this table: reaching the server proves the
    // connection used the address our resolver checked and returned.
    let server = serve(Some("cimd.test")).await;
    let table = Table(HashMap::from([("cimd.test", vec![ip("127.0.0.1")])]));
    let fetcher = CimdFetcher::with_lookup(
        CimdOptions::development(),
        reqwest::Client::builder,
        Arc::new(table),
    )
    .expect("fetcher");
    let id = format!("http://cimd.test:{}/client.json", server.addr.port());
    fetcher.fetch(&id).await.expect("document");
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn names_resolving_to_private_addresses_are_refused_before_connecting() {
    // Resolved through the table; nothing listens at these addresses and
    // no connection is attempted.
    let table = Table(HashMap::from([
        ("metadata.test", vec![ip("169.254.169.254")]),
        ("intranet.test", vec![ip("10.0.0.1")]),
        ("v6.test", vec![ip("fd00::1")]),
        ("mapped.test", vec![ip("::ffff:192.168.0.1")]),
        // One bad address spoils the name: a client could pick either.
        ("mixed.test", vec![ip("127.0.0.1"), ip("10.0.0.1")]),
        ("loop.test", vec![ip("127.0.0.1")]),
    ]));
    let table = Arc::new(table);
    let prod = CimdFetcher::with_lookup(
        CimdOptions::default(),
        reqwest::Client::builder,
        table.clone(),
    )
    .expect("fetcher");
    let dev = CimdFetcher::with_lookup(CimdOptions::development(), reqwest::Client::builder, table)
        .expect("fetcher");
    for (fetcher, host, class) in [
        (&prod, "metadata.test", AddressClass::LinkLocal),
        (&prod, "intranet.test", AddressClass::Private),
        (&prod, "v6.test", AddressClass::UniqueLocal),
        (&prod, "mapped.test", AddressClass::Private),
        (&prod, "loop.test", AddressClass::Loopback),
        (&dev, "mixed.test", AddressClass::Private),
        (&dev, "intranet.test", AddressClass::Private),
    ] {
        let err = fetcher
            .fetch(&format!("https://{host}/client.json"))
            .await
            .expect_err("refused");
        assert!(
            matches!(err, CimdError::AddressRefused { class: c, .. } if c == class),
            "{host}: {err:?}"
        );
    }
}

#[tokio::test]
async fn literal_private_addresses_are_refused_before_connecting() {
    let fetcher = prod();
    for (url, class) in [
        ("https://10.0.0.1/client.json", AddressClass::Private),
        (
            "https://169.254.169.254/latest/meta-data",
            AddressClass::LinkLocal,
        ),
        ("https://[fd00::1]/client.json", AddressClass::UniqueLocal),
        ("https://127.0.0.1/client.json", AddressClass::Loopback),
        ("https://[::1]/client.json", AddressClass::Loopback),
        (
            "https://[::ffff:a9fe:a9fe]/client.json",
            AddressClass::LinkLocal,
        ),
        (
            "https://100.64.0.1/client.json",
            AddressClass::SharedAddressSpace,
        ),
        ("https://0.0.0.0/client.json", AddressClass::Unspecified),
        ("https://224.0.0.1/client.json", AddressClass::Multicast),
        ("https://192.0.2.1/client.json", AddressClass::Documentation),
    ] {
        let err = fetcher.fetch(url).await.expect_err("refused");
        assert!(
            matches!(err, CimdError::AddressRefused { class: c, .. } if c == class),
            "{url}: {err:?}"
        );
    }
    // The system resolver's answer for localhost is checked too.
    let err = fetcher
        .fetch("https://localhost/client.json")
        .await
        .expect_err("refused");
    assert!(
        matches!(
            err,
            CimdError::AddressRefused {
                class: AddressClass::Loopback,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn development_http_reaches_loopback_only() {
    let err = dev()
        .fetch("http://10.0.0.1/client.json")
        .await
        .expect_err("refused");
    assert!(
        matches!(
            err,
            CimdError::AddressRefused {
                class: AddressClass::Private,
                ..
            }
        ),
        "{err:?}"
    );
    // A public address over http: refused by the loopback-only client
    // (literal, and through the resolver).
    let err = dev()
        .fetch("http://8.8.8.8/client.json")
        .await
        .expect_err("refused");
    assert!(matches!(err, CimdError::InvalidUrl(_)), "{err:?}");
    let table = Table(HashMap::from([("public.test", vec![ip("8.8.8.8")])]));
    let fetcher = CimdFetcher::with_lookup(
        CimdOptions::development(),
        reqwest::Client::builder,
        Arc::new(table),
    )
    .expect("fetcher");
    let err = fetcher
        .fetch("http://public.test/client.json")
        .await
        .expect_err("refused");
    assert!(matches!(err, CimdError::InvalidUrl(_)), "{err:?}");
}

#[tokio::test]
async fn url_rules_are_checked_before_fetching() {
    let fetcher = prod();
    for url in [
        "http://app.example/client.json",
        "https://app.example/",
        "https://app.example",
        "https://app.example/a/../client.json",
        "https://app.example/client.json#x",
        "https://user@app.example/client.json",
        "https://APP.example/client.json",
        "https://app.example:443/client.json",
        "ftp://app.example/client.json",
    ] {
        let err = fetcher.fetch(url).await.expect_err("refused");
        assert!(matches!(err, CimdError::InvalidUrl(_)), "{url}: {err:?}");
    }
    let long = format!("https://app.example/{}", "a".repeat(1100));
    assert!(matches!(
        fetcher.fetch(&long).await,
        Err(CimdError::InvalidUrl(_))
    ));
}

#[tokio::test]
async fn a_stalled_server_times_out() {
    // Accepts and never answers.
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut options = CimdOptions::development();
    options.timeout = Duration::from_millis(300);
    let fetcher = CimdFetcher::new(options, reqwest::Client::builder).expect("fetcher");
    let err = fetcher
        .fetch(&format!("http://{addr}/client.json"))
        .await
        .expect_err("timeout");
    assert!(matches!(err, CimdError::Timeout), "{err:?}");
}

/// A document served over real TLS on loopback, with the development CA
/// the dev IdP generates.
async fn serve_tls(dir: &std::path::Path) -> (u16, reqwest::Certificate, Arc<AtomicUsize>) {
    use mcpgate_devidp::tls::{TlsMode, cert_hosts, prepare};
    let hosts = cert_hosts(IpAddr::V4(Ipv4Addr::LOCALHOST), None);
    let tls = prepare(&TlsMode::Generate, dir, &hosts)
        .expect("tls")
        .expect("generated mode");
    let ca = std::fs::read(tls.ca_file.as_ref().expect("ca file")).expect("ca");
    let ca = reqwest::Certificate::from_pem(&ca).expect("ca pem");
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let id = format!("https://localhost:{port}/client.json");
    let app = Router::new().route(
        "/client.json",
        get(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let id = id.clone();
            async move {
                axum::Json(json!({
                    "client_id": id,
                    "client_name": "TLS Client",
                    "redirect_uris": ["http://127.0.0.1/callback"]
                }))
            }
        }),
    );
    let (keep, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        mcpgate_devidp::tls::serve_tls(listener, tls.config, app, shutdown).await;
        drop(keep);
    });
    (port, ca, hits)
}

#[tokio::test]
async fn an_https_document_on_loopback_is_fetched_in_development_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, ca, hits) = serve_tls(dir.path()).await;
    let id = format!("https://localhost:{port}/client.json");
    let builder = move || reqwest::Client::builder().tls_certs_merge([ca.clone()]);

    let dev = CimdFetcher::new(CimdOptions::development(), builder.clone()).expect("fetcher");
    let doc = dev.fetch(&id).await.expect("document over TLS");
    assert_eq!(doc.client_id.as_str(), id);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // The same URL in production: localhost resolves to loopback and is
    // refused before any connection.
    let prod = CimdFetcher::new(CimdOptions::default(), builder).expect("fetcher");
    let err = prod.fetch(&id).await.expect_err("refused");
    assert!(
        matches!(
            err,
            CimdError::AddressRefused {
                class: AddressClass::Loopback,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "production mode reached loopback"
    );
}

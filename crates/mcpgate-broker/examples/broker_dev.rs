//! The broker in front of the development IdP, as `mcpgate serve` wires
//! it: `cargo run -p mcpgate-broker --example broker_dev`, then point an
//! MCP host (or a browser, at the printed authorization URL's client) at
//! the printed issuer. Everything lives in a temporary directory; the
//! consent page is shown (no auto-approve) and alice's one-click sign-in
//! waits at the dev IdP.

use std::net::SocketAddr;

use mcpgate_broker::cimd::{CimdFetcher, CimdOptions};
use mcpgate_broker::consent_cookie::ConsentKey;
use mcpgate_broker::metadata::Issuer;
use mcpgate_broker::upstream::{Upstream, UpstreamConfig, UpstreamCredential};
use mcpgate_broker::{Broker, BrokerConfig, router};
use mcpgate_client::secret::ClientSecret;
use mcpgate_devidp::directory::DEFAULT_API_APP_ID;
use mcpgate_devidp::{IdpConfig, IdpOptions};
use mcpgate_keys::KeyRing;
use mcpgate_store::{KeyBytes, TokenCipher};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut options = IdpOptions::new(dir.path().join("idp"));
    options.bind = "127.0.0.1:0".parse()?;
    let idp = mcpgate_devidp::start(IdpConfig::builtin(), options).await?;
    let info = idp.info();

    // The upstream: the dev IdP's "mcpgate MCP server" app, by its secret.
    let ca = std::fs::read(info.ca_file.as_ref().ok_or("no CA")?)?;
    let http = reqwest::Client::builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&ca)?)
        .build()?;
    let secret_file = info
        .clients
        .iter()
        .find(|c| c.client_id == DEFAULT_API_APP_ID)
        .and_then(|c| c.secret_file.clone())
        .ok_or("no secret for the MCP server app")?;
    let upstream = Upstream::discover(
        UpstreamConfig {
            issuer: info.issuer.clone(),
            client_id: DEFAULT_API_APP_ID.to_owned(),
            credential: UpstreamCredential::Secret(ClientSecret::new(
                std::fs::read_to_string(secret_file)?.trim(),
            )),
            scopes: vec![format!("api://{DEFAULT_API_APP_ID}/mcp:tools")],
            resource: None,
        },
        http,
    )
    .await?;

    // The broker: listen first, since the issuer names the port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let issuer = format!("http://{}", listener.local_addr()?);
    let mut config = BrokerConfig::new(Issuer::new(&issuer)?, format!("{issuer}/mcp"));
    config.cimd = CimdOptions::development();
    let store = mcpgate_store::open("memory:", mcpgate_store::Options::default()).await?;
    let (consent_key, _persist_me) = ConsentKey::generate()?;
    let broker = Broker::new(
        config.clone(),
        store,
        upstream,
        KeyRing::open(&dir.path().join("broker-keys"))?,
        consent_key,
        TokenCipher::new(&KeyBytes::random()?)?,
        CimdFetcher::new(config.cimd.clone(), reqwest::Client::builder)?,
    )?;

    println!("issuer:   {issuer}");
    println!("metadata: {issuer}/.well-known/oauth-authorization-server");
    println!("dev IdP:  {}", info.base_url);
    axum::serve(
        listener,
        router(broker).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}

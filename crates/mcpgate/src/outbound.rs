//! The outbound HTTP client every part shares: system roots plus the CA
//! file the configuration names.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

/// A client trusting the system roots plus the certificates in `ca_files`.
pub fn http_client<'a>(
    ca_files: impl IntoIterator<Item = &'a Path>,
    timeout: Duration,
) -> anyhow::Result<reqwest::Client> {
    client_builder(ca_files, timeout)?
        .build()
        .context("building the HTTP client")
}

/// The builder behind [`http_client`], for a caller that needs one more
/// setting (the client's redirect-free twin).
pub fn client_builder<'a>(
    ca_files: impl IntoIterator<Item = &'a Path>,
    timeout: Duration,
) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("mcpgate/", env!("CARGO_PKG_VERSION")));
    for path in ca_files {
        let pem =
            std::fs::read(path).with_context(|| format!("reading CA file {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{} holds no PEM certificate", path.display()))?;
        builder = builder.tls_certs_merge(certs);
    }
    Ok(builder)
}

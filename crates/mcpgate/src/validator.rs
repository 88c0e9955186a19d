//! Builds the token validator from the configuration.

use std::path::Path;
use std::sync::Arc;

use mcpgate_token::jwks::KeysFrom;
use mcpgate_token::{ValidationPolicy, Validator};

use crate::cli::IdpPlace;
use crate::config::{BrokerMode, RawConfig};
use crate::outbound::http_client;
use crate::{broker, devidp};

/// Where `serve` listens when nothing says otherwise.
pub const DEFAULT_BIND: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// The policy and validator `serve` would use on this configuration: with
/// no issuer configured, the embedded development IdP's, as `serve` trusts
/// it (for `explain` and `check`, which do not start the IdP).
pub fn build_as_serve_would(
    raw: &mut RawConfig,
    idp: &IdpPlace,
) -> anyhow::Result<(ValidationPolicy, Arc<Validator>)> {
    if raw.has_issuer() {
        return build(raw, None);
    }
    let ca = devidp::trust_as_serve_would(idp, raw)?;
    if broker::mode(raw, true) == BrokerMode::Broker {
        // serve's broker: its issuer is the server's public URL.
        let base = match &raw.public_url {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None => format!("http://{}", raw.bind.unwrap_or(DEFAULT_BIND)),
        };
        raw.auth
            .audiences
            .push(format!("{base}{}", mcpgate_resource::MCP_PATH));
        raw.auth.issuers.push(base);
    }
    build(raw, ca.as_deref())
}

/// The policy and a validator for it; outbound calls trust the configured
/// CA file and `extra_ca` (the embedded IdP's).
pub fn build(
    raw: &RawConfig,
    extra_ca: Option<&Path>,
) -> anyhow::Result<(ValidationPolicy, Arc<Validator>)> {
    let policy = raw.policy()?;
    let http = http_client(
        raw.ca_file.as_deref().into_iter().chain(extra_ca),
        raw.fetch_timeout(),
    )?;
    let mut builder = Validator::builder(policy.clone())
        .http_client(http)
        .jwks_options(raw.jwks_options());
    if let Some(jwks) = &raw.auth.jwks_uri {
        for i in 0..policy.issuers.len() {
            builder = builder.keys_for(i, KeysFrom::Jwks(jwks.to_string()));
        }
    } else if let Some(v1) = raw.entra_v1_issuer_index(&policy) {
        // sts.windows.net serves no discovery; its tokens are signed with
        // the keys of the tenant's v2.0 document.
        builder = builder.keys_shared_with(v1, v1 - 1);
    }
    Ok((policy, Arc::new(builder.build()?)))
}

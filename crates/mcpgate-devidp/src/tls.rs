//! HTTPS for the IdP: a development CA and a server certificate generated
//! into the data directory (or files the user gives), and the accept loop.
//!
//! MSAL refuses an `http` authority, so TLS is the default. The accept loop
//! is written out over tokio-rustls and hyper-util because axum's own
//! `serve` speaks plain TCP only.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::IdpError;
use crate::util::write_private;

/// Where the certificate comes from.
#[derive(Debug, Clone, Default)]
pub enum TlsMode {
    /// A development CA and server certificate in the data directory,
    /// generated when missing or when they no longer cover the host.
    #[default]
    Generate,
    /// A certificate chain and key the user provides (PEM).
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// Plain http; loopback only.
    PlainHttp,
}

/// What the generated server certificate covers, to know when to redo it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ServerCertInfo {
    hosts: Vec<String>,
    not_after: i64,
}

/// The TLS material ready to serve.
pub struct Tls {
    /// The rustls configuration.
    pub config: Arc<ServerConfig>,
    /// The CA file clients must trust (generated mode).
    pub ca_file: Option<PathBuf>,
}

fn rcgen_err(e: rcgen::Error) -> IdpError {
    IdpError::Crypto(e.to_string())
}

fn ca_params() -> Result<CertificateParams, IdpError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "mcpgate development CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "mcpgate");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    Ok(params)
}

/// Loads the CA from the data directory, creating it on first use.
fn load_or_create_ca(dir: &Path) -> Result<(Issuer<'static, KeyPair>, PathBuf), IdpError> {
    let ca_file = dir.join("ca.pem");
    let ca_key_file = dir.join("ca-key.pem");
    if ca_file.exists()
        && let Ok(key_pem) = std::fs::read_to_string(&ca_key_file)
    {
        // The issuer needs only the CA's name and key: a certificate signed
        // with the same subject and key chains to the stored CA file.
        let key = KeyPair::from_pem(&key_pem).map_err(rcgen_err)?;
        return Ok((Issuer::new(ca_params()?, key), ca_file));
    }
    let key = KeyPair::generate().map_err(rcgen_err)?;
    let params = ca_params()?;
    let cert = params.self_signed(&key).map_err(rcgen_err)?;
    write_private(&ca_key_file, key.serialize_pem().as_bytes())?;
    write_private(&ca_file, cert.pem().as_bytes())?;
    Ok((Issuer::new(params, key), ca_file))
}

/// Generates (or reuses) the CA and a server certificate for `hosts`.
fn generated(dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf, PathBuf), IdpError> {
    std::fs::create_dir_all(dir).map_err(|e| IdpError::io(dir, e))?;
    let (issuer, ca_file) = load_or_create_ca(dir)?;
    let cert_file = dir.join("server.pem");
    let key_file = dir.join("server-key.pem");
    let info_file = dir.join("server.json");
    let now = time::OffsetDateTime::now_utc();
    let current: Option<ServerCertInfo> = std::fs::read(&info_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let fresh = current.as_ref().is_some_and(|info| {
        hosts.iter().all(|h| info.hosts.contains(h))
            && info.not_after > (now + time::Duration::days(7)).unix_timestamp()
    }) && cert_file.exists()
        && key_file.exists();
    if !fresh {
        let key = KeyPair::generate().map_err(rcgen_err)?;
        let mut params = CertificateParams::new(hosts.to_vec()).map_err(rcgen_err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "mcpgate development IdP");
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(365);
        let cert = params.signed_by(&key, &issuer).map_err(rcgen_err)?;
        write_private(&key_file, key.serialize_pem().as_bytes())?;
        write_private(&cert_file, cert.pem().as_bytes())?;
        let info = ServerCertInfo {
            hosts: hosts.to_vec(),
            not_after: params.not_after.unix_timestamp(),
        };
        let json = serde_json::to_vec(&info).map_err(|e| IdpError::Config(e.to_string()))?;
        write_private(&info_file, &json)?;
    }
    Ok((cert_file, key_file, ca_file))
}

fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, IdpError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| IdpError::Crypto(format!("{}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| IdpError::Crypto(format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| IdpError::Crypto(format!("{}: {e}", key.display())))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| IdpError::Crypto(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| IdpError::Crypto(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The names a certificate for a listener on `ip` must carry.
pub fn cert_hosts(ip: IpAddr, extra: Option<&str>) -> Vec<String> {
    let mut hosts = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    for h in [Some(ip.to_string()), extra.map(str::to_owned)]
        .into_iter()
        .flatten()
    {
        if !h.is_empty() && !ip.is_unspecified() && !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    hosts
}

/// Prepares TLS for `mode`; `None` for plain http.
pub fn prepare(mode: &TlsMode, data_dir: &Path, hosts: &[String]) -> Result<Option<Tls>, IdpError> {
    match mode {
        TlsMode::PlainHttp => Ok(None),
        TlsMode::Files { cert, key } => Ok(Some(Tls {
            config: server_config(cert, key)?,
            ca_file: None,
        })),
        TlsMode::Generate => {
            let (cert, key, ca) = generated(&data_dir.join("tls"), hosts)?;
            Ok(Some(Tls {
                config: server_config(&cert, &key)?,
                ca_file: Some(ca),
            }))
        }
    }
}

/// Serves `app` over TLS until `shutdown` flips.
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    app: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let (tcp, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            // A peer that never finishes its handshake must not hold a task.
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(app));
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = conn_shutdown.changed() => {}
            }
        });
    }
}

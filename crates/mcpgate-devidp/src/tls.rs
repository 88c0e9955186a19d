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
    BasicConstraints, CertificateParams, CidrSubnet, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints,
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

/// What the generated CA may vouch for: the names and addresses it was
/// made for, so that a copy of its key cannot mint a certificate for any
/// other site that trusts it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct CaInfo {
    permitted: Vec<String>,
}

/// The subtrees a CA for `hosts` permits: each DNS name (and its
/// subdomains), 127.0.0.0/8 and ::1 always, and each other address alone.
fn permitted_subtrees(hosts: &[String]) -> Vec<GeneralSubtree> {
    let mut out = vec![
        GeneralSubtree::IpAddress(CidrSubnet::from_v4_prefix([127, 0, 0, 0], 8)),
        GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            128,
        )),
    ];
    for h in hosts {
        let subtree = match h.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) if ip.is_loopback() => continue,
            Ok(ip @ IpAddr::V4(_)) => {
                GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(ip, 32))
            }
            Ok(ip @ IpAddr::V6(_)) => {
                GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(ip, 128))
            }
            Err(_) => GeneralSubtree::DnsName(h.to_ascii_lowercase()),
        };
        if !out.contains(&subtree) {
            out.push(subtree);
        }
    }
    out
}

fn ca_params(hosts: &[String]) -> Result<CertificateParams, IdpError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "mcpgate development CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "mcpgate");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: permitted_subtrees(hosts),
        excluded_subtrees: Vec::new(),
    });
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    Ok(params)
}

/// Loads the CA from the data directory, creating it on first use, and
/// again when it does not cover `hosts` (a new public name, or a CA from
/// before name constraints). Returns whether it is new.
fn load_or_create_ca(
    dir: &Path,
    hosts: &[String],
) -> Result<(Issuer<'static, KeyPair>, PathBuf, bool), IdpError> {
    let ca_file = dir.join("ca.pem");
    let ca_key_file = dir.join("ca-key.pem");
    let info_file = dir.join("ca.json");
    let current: Option<CaInfo> = std::fs::read(&info_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let covers = current
        .as_ref()
        .is_some_and(|info| hosts.iter().all(|h| info.permitted.contains(h)));
    if covers
        && ca_file.exists()
        && let Ok(key_pem) = std::fs::read_to_string(&ca_key_file)
    {
        // The issuer needs only the CA's name and key: a certificate signed
        // with the same subject and key chains to the stored CA file.
        let key = KeyPair::from_pem(&key_pem).map_err(rcgen_err)?;
        return Ok((Issuer::new(ca_params(hosts)?, key), ca_file, false));
    }
    let key = KeyPair::generate().map_err(rcgen_err)?;
    let params = ca_params(hosts)?;
    let cert = params.self_signed(&key).map_err(rcgen_err)?;
    write_private(&ca_key_file, key.serialize_pem().as_bytes())?;
    write_private(&ca_file, cert.pem().as_bytes())?;
    let info = CaInfo {
        permitted: hosts.to_vec(),
    };
    let json = serde_json::to_vec(&info).map_err(|e| IdpError::Config(e.to_string()))?;
    write_private(&info_file, &json)?;
    Ok((Issuer::new(params, key), ca_file, true))
}

/// Generates (or reuses) the CA and a server certificate for `hosts`.
fn generated(dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf, PathBuf), IdpError> {
    std::fs::create_dir_all(dir).map_err(|e| IdpError::io(dir, e))?;
    let (issuer, ca_file, new_ca) = load_or_create_ca(dir, hosts)?;
    let cert_file = dir.join("server.pem");
    let key_file = dir.join("server-key.pem");
    let info_file = dir.join("server.json");
    let now = time::OffsetDateTime::now_utc();
    let current: Option<ServerCertInfo> = std::fs::read(&info_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let fresh = !new_ca
        && current.as_ref().is_some_and(|info| {
            hosts.iter().all(|h| info.hosts.contains(h))
                && info.not_after > (now + time::Duration::days(7)).unix_timestamp()
        })
        && cert_file.exists()
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

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::GeneralName;

    /// The CA's name constraints, parsed from the PEM file: (critical,
    /// DNS names, IP subnets as address/mask bytes).
    fn constraints(ca: &Path) -> (bool, Vec<String>, Vec<Vec<u8>>) {
        let pem = std::fs::read(ca).expect("CA file");
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("PEM");
        let cert = pem.parse_x509().expect("X.509");
        let nc = cert
            .name_constraints()
            .expect("one extension")
            .expect("name constraints present");
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for subtree in nc.value.permitted_subtrees.as_deref().unwrap_or_default() {
            match &subtree.base {
                GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                GeneralName::IPAddress(ip) => ips.push(ip.to_vec()),
                other => panic!("unexpected subtree {other:?}"),
            }
        }
        assert!(nc.value.excluded_subtrees.is_none());
        (nc.critical, dns, ips)
    }

    #[test]
    fn the_dev_ca_is_limited_to_the_names_it_serves() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        let hosts = cert_hosts(ip, Some("idp.example.test"));
        generated(dir.path(), &hosts).expect("generated");
        let (critical, dns, ips) = constraints(&dir.path().join("ca.pem"));
        assert!(critical, "RFC 5280: name constraints are critical");
        assert_eq!(dns, vec!["localhost", "idp.example.test"]);
        assert!(
            ips.contains(&vec![127, 0, 0, 0, 255, 0, 0, 0]),
            "127.0.0.0/8"
        );
        let mut v6 = vec![0u8; 15];
        v6.push(1);
        v6.extend([0xff; 16]);
        assert!(ips.contains(&v6), "::1/128");
        assert!(
            ips.contains(&vec![10, 1, 2, 3, 255, 255, 255, 255]),
            "the bind address alone"
        );
        assert_eq!(ips.len(), 3, "{ips:?}");

        // Another public name: a new CA, constrained to it.
        let ca_before = std::fs::read(dir.path().join("ca.pem")).expect("ca");
        generated(dir.path(), &hosts).expect("again");
        assert_eq!(
            std::fs::read(dir.path().join("ca.pem")).expect("ca"),
            ca_before,
            "reused"
        );
        let other = cert_hosts(ip, Some("other.example.test"));
        generated(dir.path(), &other).expect("other name");
        let (_, dns, _) = constraints(&dir.path().join("ca.pem"));
        assert!(dns.contains(&"other.example.test".to_owned()), "{dns:?}");
    }

    #[test]
    fn a_ca_from_before_name_constraints_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hosts = cert_hosts(IpAddr::from([127, 0, 0, 1]), None);
        generated(dir.path(), &hosts).expect("generated");
        // What an older version left: a CA and no record of its limits.
        std::fs::remove_file(dir.path().join("ca.json")).expect("rm");
        let old = std::fs::read(dir.path().join("ca.pem")).expect("ca");
        generated(dir.path(), &hosts).expect("again");
        assert_ne!(std::fs::read(dir.path().join("ca.pem")).expect("ca"), old);
        let (critical, dns, _) = constraints(&dir.path().join("ca.pem"));
        assert!(critical && dns == vec!["localhost"], "{dns:?}");
    }
}

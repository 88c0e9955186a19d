//! The DNS-rebinding defence of the MCP endpoint: a request must name an
//! allowed `Host`, and a browser's request an allowed `Origin` (the
//! Streamable HTTP transport's security warning). Both lists are parsed
//! once, at start.
//!
//! A server that lives on loopback also accepts every loopback origin
//! (`http(s)://localhost`, `127.0.0.0/8`, `[::1]`, any port), as the
//! TypeScript SDK does since GHSA-w48q-cv73-mx4w: a web page or extension
//! on the same machine may call it, a page from anywhere else may not.

use http::uri::Authority;
use http::{HeaderMap, Uri, header};

/// Why a request was turned away (403, or 400 for an unreadable `Host`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `Host` missing or unreadable.
    BadHost,
    /// `Host` names a host this server does not serve.
    ForeignHost,
    /// `Origin` unreadable or not allowed.
    ForeignOrigin,
}

impl Refused {
    /// What the response says.
    pub fn message(self) -> &'static str {
        match self {
            Refused::BadHost => "Bad Request: missing or invalid Host header",
            Refused::ForeignHost => "Forbidden: Host header is not allowed",
            Refused::ForeignOrigin => "Forbidden: Origin header is not allowed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct HostRule {
    host: String,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum OriginRule {
    Null,
    Tuple {
        scheme: String,
        host: String,
        /// `None` for `:*` or an entry without a port.
        port: Option<u16>,
    },
}

/// The allowed hosts and origins.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    hosts: Vec<HostRule>,
    origins: Vec<OriginRule>,
    loopback: bool,
}

impl OriginPolicy {
    /// Hosts as `host` or `host:port` (an empty list allows every host);
    /// origins as `scheme://host[:port|:*]` or `null` (an empty list
    /// refuses every request that carries an `Origin`). Entries that do
    /// not parse are dropped with a warning. `loopback` (a server bound to
    /// and reached at loopback) also accepts every loopback origin.
    pub fn new(hosts: &[String], origins: &[String], loopback: bool) -> Self {
        let hosts = parse_all(hosts, parse_host_rule, "host");
        let origins = parse_all(origins, parse_origin_rule, "origin");
        Self {
            hosts,
            origins,
            loopback,
        }
    }

    /// Whether a browser page at `origin` may call the endpoint (CORS).
    pub fn allows_origin(&self, origin: &str) -> bool {
        parse_origin(origin).is_some_and(|o| self.origin_allowed(&o))
    }

    fn origin_allowed(&self, origin: &Origin) -> bool {
        (self.loopback && is_loopback(origin))
            || self.origins.iter().any(|rule| origin_matches(rule, origin))
    }

    /// Lets a request through, or says why not.
    pub fn check(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), Refused> {
        if !self.hosts.is_empty() {
            // HTTP/2 carries the host in `:authority`, not `Host`.
            let authority = match headers.get(header::HOST) {
                Some(h) => h
                    .to_str()
                    .ok()
                    .and_then(|h| Authority::try_from(h).ok())
                    .ok_or(Refused::BadHost)?,
                None => uri.authority().cloned().ok_or(Refused::BadHost)?,
            };
            let host = normalize(authority.host());
            let port = authority.port_u16();
            if !self
                .hosts
                .iter()
                .any(|r| r.host == host && r.port.is_none_or(|p| Some(p) == port))
            {
                return Err(Refused::ForeignHost);
            }
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin
            .to_str()
            .ok()
            .and_then(parse_origin)
            .ok_or(Refused::ForeignOrigin)?;
        if self.origin_allowed(&origin) {
            Ok(())
        } else {
            Err(Refused::ForeignOrigin)
        }
    }
}

/// Every entry that parses; the others are dropped with a warning.
fn parse_all<T>(entries: &[String], parse: fn(&str) -> Option<T>, what: &str) -> Vec<T> {
    entries
        .iter()
        .filter_map(|entry| {
            let rule = parse(entry);
            if rule.is_none() {
                tracing::warn!(
                    entry = entry.as_str(),
                    "ignoring an allowed {what} that does not parse"
                );
            }
            rule
        })
        .collect()
}

fn normalize(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

fn parse_host_rule(value: &str) -> Option<HostRule> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    Some(match Authority::try_from(value) {
        Ok(a) => HostRule {
            host: normalize(a.host()),
            port: a.port_u16(),
        },
        // A bare IPv6 address (`::1`) is not an authority.
        Err(_) => HostRule {
            host: normalize(value),
            port: None,
        },
    })
}

struct Origin {
    null: bool,
    scheme: String,
    host: String,
    port: Option<u16>,
}

fn parse_origin(value: &str) -> Option<Origin> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("null") {
        return Some(Origin {
            null: true,
            scheme: String::new(),
            host: String::new(),
            port: None,
        });
    }
    let uri = Uri::try_from(value).ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?;
    // RFC 6454 §6.2: a default port is left out of an origin.
    let port = authority.port_u16().or(match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    });
    Some(Origin {
        null: false,
        scheme,
        host: normalize(authority.host()),
        port,
    })
}

/// `http` or `https` on `localhost` or a loopback address. A name that
/// merely starts like one (`127.0.0.1.evil.example`) is not.
fn is_loopback(origin: &Origin) -> bool {
    !origin.null
        && matches!(origin.scheme.as_str(), "http" | "https")
        && (origin.host == "localhost"
            || origin
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()))
}

fn parse_origin_rule(value: &str) -> Option<OriginRule> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("null") {
        return Some(OriginRule::Null);
    }
    let (base, any_port) = match value.strip_suffix(":*") {
        Some(base) => (base, true),
        None => (value, false),
    };
    let uri = Uri::try_from(base).ok()?;
    let authority = uri.authority()?;
    if any_port && authority.port().is_some() {
        return None;
    }
    Some(OriginRule::Tuple {
        scheme: uri.scheme_str()?.to_ascii_lowercase(),
        host: normalize(authority.host()),
        // `:*`, or an entry without a port (as rmcp took them): any port.
        port: authority.port_u16(),
    })
}

fn origin_matches(rule: &OriginRule, origin: &Origin) -> bool {
    match rule {
        OriginRule::Null => origin.null,
        OriginRule::Tuple { scheme, host, port } => {
            !origin.null
                && *scheme == origin.scheme
                && *host == origin.host
                && port.is_none_or(|p| Some(p) == origin.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(host: &str, origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).expect("header"));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).expect("header"));
        }
        h
    }

    fn policy(origins: &[&str]) -> OriginPolicy {
        let hosts = ["localhost", "127.0.0.1", "::1", "mcp.example:8443"].map(String::from);
        let origins: Vec<String> = origins.iter().map(|o| o.to_string()).collect();
        OriginPolicy::new(&hosts, &origins, false)
    }

    #[test]
    fn hosts() {
        let p = policy(&[]);
        let uri = Uri::from_static("/mcp");
        for ok in [
            "localhost:8080",
            "127.0.0.1",
            "[::1]:9",
            "LOCALHOST",
            "mcp.example:8443",
        ] {
            assert_eq!(p.check(&uri, &headers(ok, None)), Ok(()), "{ok}");
        }
        for bad in ["evil.example", "mcp.example:8444", "127.0.0.1.evil.example"] {
            assert_eq!(
                p.check(&uri, &headers(bad, None)),
                Err(Refused::ForeignHost),
                "{bad}"
            );
        }
        assert_eq!(p.check(&uri, &HeaderMap::new()), Err(Refused::BadHost));
        assert_eq!(
            p.check(
                &Uri::from_static("http://localhost:1/mcp"),
                &HeaderMap::new()
            ),
            Ok(())
        );
    }

    #[test]
    fn origins() {
        let p = policy(&["https://app.example", "http://localhost:*", "null"]);
        let uri = Uri::from_static("/mcp");
        for ok in [
            "https://app.example",
            "https://app.example:443",
            "http://localhost:3000",
            "null",
        ] {
            assert_eq!(
                p.check(&uri, &headers("localhost", Some(ok))),
                Ok(()),
                "{ok}"
            );
        }
        for bad in ["http://app.example", "https://evil.example", "not a url"] {
            assert_eq!(
                p.check(&uri, &headers("localhost", Some(bad))),
                Err(Refused::ForeignOrigin),
                "{bad}"
            );
        }
        let none = policy(&[]);
        assert_eq!(
            none.check(&uri, &headers("localhost", Some("http://localhost:3000"))),
            Err(Refused::ForeignOrigin)
        );
        assert_eq!(none.check(&uri, &headers("localhost", None)), Ok(()));
    }

    #[test]
    fn on_loopback_every_loopback_origin_and_no_other() {
        let hosts = ["localhost", "127.0.0.1", "::1"].map(String::from);
        let p = OriginPolicy::new(&hosts, &[], true);
        let uri = Uri::from_static("/mcp");
        for ok in [
            "http://localhost",
            "http://localhost:3000",
            "https://localhost:8443",
            "http://127.0.0.1:5173",
            "http://127.0.0.2",
            "http://[::1]:9",
            "HTTP://LOCALHOST:1",
        ] {
            assert_eq!(
                p.check(&uri, &headers("localhost:8080", Some(ok))),
                Ok(()),
                "{ok}"
            );
            assert!(p.allows_origin(ok), "{ok}");
        }
        for bad in [
            "http://evil.example",
            "null",
            "http://127.0.0.1.evil.example",
            "http://localhost.evil.example:3000",
            "file://localhost",
            "chrome-extension://abcdef",
            "http://[::2]",
            "http://0.0.0.0",
        ] {
            assert_eq!(
                p.check(&uri, &headers("127.0.0.1:8080", Some(bad))),
                Err(Refused::ForeignOrigin),
                "{bad}"
            );
            assert!(!p.allows_origin(bad), "{bad}");
        }
        // A public deployment takes only what is configured.
        let public = OriginPolicy::new(&hosts, &["https://app.example".to_owned()], false);
        assert_eq!(
            public.check(&uri, &headers("localhost", Some("http://localhost:3000"))),
            Err(Refused::ForeignOrigin)
        );
        assert_eq!(
            public.check(&uri, &headers("localhost", Some("https://app.example"))),
            Ok(())
        );
    }
}

//! Redirect URIs: which a client may register, and whether a requested one
//! matches. Matching is byte-exact (OAuth 2.1 §2.3.1, the MCP security best
//! practices), with the one exception RFC 8252 §7.3 requires: a loopback
//! redirect URI matches on any port, because native apps bind whatever
//! port is free. There is no prefix, case-insensitive or normalized
//! matching anywhere: each of those has let an attacker choose where a code
//! goes.
//!
//! What a client may register:
//! - `https` with a host;
//! - `http` only on loopback: exactly `127.0.0.1`, `[::1]` or `localhost`;
//! - a private-use scheme (`cursor://…`, `com.example.app:/cb`) only for
//!   `application_type: native`. Real MCP hosts (IDEs, desktop apps) use
//!   them, and RFC 8252 §7.1 allows them; PKCE defends against another app
//!   claiming the scheme, and the consent page names the scheme. Schemes a
//!   browser runs or reads locally (`javascript`, `data`, `file`, …) are
//!   refused by name.
//!
//! Every URI is printable ASCII (no spaces, no backslashes, no IDN in
//! Unicode form), absolute, with no fragment, no userinfo and no `.`/`..`
//! path segments, and no longer than [`MAX_REDIRECT_URI_LEN`].

use serde::{Deserialize, Serialize};
use url::Url;

/// The longest redirect URI accepted.
pub const MAX_REDIRECT_URI_LEN: usize = 1024;

/// The loopback hosts an `http` redirect URI may name, as written in a URI.
const LOOPBACK_HOSTS: [&str; 3] = ["127.0.0.1", "[::1]", "localhost"];

/// Schemes a native app may not claim: they execute, read local data or
/// are not app hand-offs at all.
const FORBIDDEN_SCHEMES: [&str; 12] = [
    "javascript",
    "data",
    "vbscript",
    "file",
    "blob",
    "about",
    "filesystem",
    "view-source",
    "ws",
    "wss",
    "ftp",
    "mailto",
];

/// RFC 7591 / OpenID `application_type`: what kind of redirect URIs a
/// client may register. Absent means `web`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationType {
    /// A web client: `https`, or `http` on loopback.
    #[default]
    Web,
    /// A native app: also private-use URI schemes.
    Native,
}

/// Where a redirect URI sends the user's browser, for the consent page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectTarget {
    /// A web site: its host (and port, when not 443).
    Web(String),
    /// An app on this computer listening on loopback: the host as written.
    Loopback(String),
    /// An app registered for a URI scheme on this device.
    App(String),
}

/// Why a redirect URI may not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectUriError {
    /// Longer than [`MAX_REDIRECT_URI_LEN`].
    #[error("a redirect URI is longer than {MAX_REDIRECT_URI_LEN} bytes")]
    TooLong,
    /// Holds a space, a control character, a backslash or non-ASCII.
    #[error("a redirect URI may hold only printable ASCII, with no spaces or backslashes")]
    BadCharacters,
    /// Not an absolute URI.
    #[error("a redirect URI must be an absolute URI")]
    NotAbsolute,
    /// The scheme is not written in lower case.
    #[error("a redirect URI's scheme must be lower case")]
    SchemeCase,
    /// Has a `#fragment`.
    #[error("a redirect URI must not have a fragment")]
    Fragment,
    /// Has `user:password@`.
    #[error("a redirect URI must not hold userinfo")]
    UserInfo,
    /// Has `.` or `..` path segments.
    #[error("a redirect URI must not hold . or .. path segments")]
    DotSegment,
    /// `https` without a host.
    #[error("an https redirect URI must name a host")]
    NoHost,
    /// `http` to a host other than `127.0.0.1`, `[::1]` or `localhost`.
    #[error("http redirect URIs are allowed only on loopback (127.0.0.1, [::1], localhost)")]
    HttpNotLoopback,
    /// A private-use scheme for a client that is not `native`.
    #[error("a custom URI scheme is allowed only for application_type native")]
    CustomSchemeNotNative,
    /// A scheme that no client may use.
    #[error("the redirect URI scheme {0:?} is not allowed")]
    SchemeNotAllowed(String),
}

/// A redirect URI that passed registration rules. Kept exactly as the
/// client wrote it: it is compared byte for byte, never normalized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RedirectUri {
    raw: String,
    #[serde(skip)]
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Https,
    Loopback,
    PrivateUse,
}

impl RedirectUri {
    /// Checks a redirect URI against the registration rules for `app`.
    pub fn parse(raw: &str, app: ApplicationType) -> Result<Self, RedirectUriError> {
        if raw.len() > MAX_REDIRECT_URI_LEN {
            return Err(RedirectUriError::TooLong);
        }
        if !raw
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'\\')
        {
            return Err(RedirectUriError::BadCharacters);
        }
        if raw.contains('#') {
            return Err(RedirectUriError::Fragment);
        }
        let url = Url::parse(raw).map_err(|_| RedirectUriError::NotAbsolute)?;
        // The raw text is what gets compared, so it must say what the
        // parser understood: a lower-case scheme, no userinfo.
        if !raw.starts_with(&format!("{}:", url.scheme())) {
            return Err(RedirectUriError::SchemeCase);
        }
        if !url.username().is_empty() || url.password().is_some() || authority(raw).contains('@') {
            return Err(RedirectUriError::UserInfo);
        }
        if has_dot_segment(raw) {
            return Err(RedirectUriError::DotSegment);
        }
        let kind = match url.scheme() {
            "https" => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(RedirectUriError::NoHost);
                }
                Kind::Https
            }
            "http" => {
                split_loopback(raw).ok_or(RedirectUriError::HttpNotLoopback)?;
                Kind::Loopback
            }
            scheme if FORBIDDEN_SCHEMES.contains(&scheme) => {
                return Err(RedirectUriError::SchemeNotAllowed(scheme.to_owned()));
            }
            _ if app != ApplicationType::Native => {
                return Err(RedirectUriError::CustomSchemeNotNative);
            }
            _ => Kind::PrivateUse,
        };
        Ok(Self {
            raw: raw.to_owned(),
            kind,
        })
    }

    /// The URI exactly as registered.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Whether this is an `http` loopback URI (which matches on any port).
    pub fn is_loopback(&self) -> bool {
        self.kind == Kind::Loopback
    }

    /// Where it sends the browser, for the consent page.
    pub fn target(&self) -> RedirectTarget {
        match self.kind {
            Kind::Https => {
                let host = Url::parse(&self.raw)
                    .ok()
                    .and_then(|u| {
                        let host = u.host_str()?.to_owned();
                        Some(match u.port() {
                            Some(port) => format!("{host}:{port}"),
                            None => host,
                        })
                    })
                    .unwrap_or_default();
                RedirectTarget::Web(host)
            }
            Kind::Loopback => RedirectTarget::Loopback(
                split_loopback(&self.raw)
                    .map(|(host, _, _)| host.to_owned())
                    .unwrap_or_default(),
            ),
            Kind::PrivateUse => RedirectTarget::App(
                self.raw
                    .split_once(':')
                    .map(|(scheme, _)| scheme.to_owned())
                    .unwrap_or_default(),
            ),
        }
    }

    /// Whether `requested` (from an authorization request) is this URI:
    /// byte-exact, except that a loopback URI matches on any port (RFC 8252
    /// §7.3) with host, path and query still byte-exact.
    pub fn matches(&self, requested: &str) -> bool {
        if self.raw == requested {
            return true;
        }
        if self.kind != Kind::Loopback {
            return false;
        }
        match (split_loopback(&self.raw), split_loopback(requested)) {
            (Some((host, _, rest)), Some((req_host, _, req_rest))) => {
                host == req_host && rest == req_rest
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for RedirectUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}

/// The registered URI that `requested` matches, if any.
pub fn find_match<'a>(registered: &'a [RedirectUri], requested: &str) -> Option<&'a RedirectUri> {
    registered.iter().find(|r| r.matches(requested))
}

/// The authority of a `scheme://authority…` URI, or "".
fn authority(raw: &str) -> &str {
    let Some((_, after)) = raw.split_once("://") else {
        return "";
    };
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    &after[..end]
}

/// Splits `http://HOST[:PORT]REST` where HOST is a loopback host as
/// written and PORT is 1–65535 in plain digits. Works on the raw text so
/// that matching never depends on a parser's normalization.
fn split_loopback(raw: &str) -> Option<(&str, Option<u16>, &str)> {
    let after = raw.strip_prefix("http://")?;
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    let (host, port) = match authority.strip_prefix('[') {
        Some(_) => match authority.find(']') {
            Some(i) => authority.split_at(i + 1),
            None => return None,
        },
        None => match authority.find(':') {
            Some(i) => authority.split_at(i),
            None => (authority, ""),
        },
    };
    if !LOOPBACK_HOSTS.contains(&host) || rest.contains('#') {
        return None;
    }
    let port = match port {
        "" => None,
        p => {
            let digits = p.strip_prefix(':')?;
            if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            match digits.parse::<u16>() {
                Ok(0) | Err(_) => return None,
                Ok(n) => Some(n),
            }
        }
    };
    Some((host, port, rest))
}

/// Whether the path holds a `.` or `..` segment, literal or percent-encoded.
fn has_dot_segment(raw: &str) -> bool {
    let path_and_after = match raw.split_once("://") {
        Some((_, after)) => after.find('/').map_or("", |i| &after[i..]),
        None => raw.split_once(':').map_or("", |(_, p)| p),
    };
    let path = path_and_after.split('?').next().unwrap_or_default();
    path.split('/').any(|segment| {
        let s = segment.to_ascii_lowercase().replace("%2e", ".");
        s == "." || s == ".."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web(raw: &str) -> Result<RedirectUri, RedirectUriError> {
        RedirectUri::parse(raw, ApplicationType::Web)
    }

    fn native(raw: &str) -> Result<RedirectUri, RedirectUriError> {
        RedirectUri::parse(raw, ApplicationType::Native)
    }

    #[test]
    fn registration_accepts_https_loopback_and_native_schemes() {
        for ok in [
            "https://app.example.com/callback",
            "https://vscode.dev/redirect",
            "https://app.example.com:8443/cb?x=1",
            "http://127.0.0.1:33418",
            "http://localhost:3000/callback",
            "http://[::1]/cb",
            "http://127.0.0.1/callback",
        ] {
            assert!(web(ok).is_ok(), "{ok}");
        }
        assert!(native("cursor://anysphere.cursor-retrieval/oauth/callback").is_ok());
        assert!(native("com.example.app:/oauth2redirect").is_ok());
    }

    #[test]
    fn registration_refuses_the_dangerous_shapes() {
        use RedirectUriError::*;
        let cases: &[(&str, RedirectUriError)] = &[
            ("http://app.example.com/cb", HttpNotLoopback),
            ("http://127.0.0.2/cb", HttpNotLoopback),
            ("http://127.1/cb", HttpNotLoopback),
            ("http://localhost.evil.com/cb", HttpNotLoopback),
            ("http://0.0.0.0:8080/cb", HttpNotLoopback),
            ("https://app.example.com/cb#frag", Fragment),
            ("https://user@app.example.com/cb", UserInfo),
            ("https://app.example.com:x@evil.com/cb", UserInfo),
            ("http://localhost@evil.com/cb", UserInfo),
            ("https://app.example.com/a/../cb", DotSegment),
            ("https://app.example.com/a/%2E%2e/cb", DotSegment),
            ("https://app.example.com/cb/.", DotSegment),
            ("https://app.example.com/c b", BadCharacters),
            ("https://app.example.com\\@evil.com/", BadCharacters),
            ("https://bücher.example/cb", BadCharacters),
            ("/relative/cb", NotAbsolute),
            ("HTTPS://app.example.com/cb", SchemeCase),
            ("com.example.app:/cb", CustomSchemeNotNative),
        ];
        for (raw, want) in cases {
            assert_eq!(web(raw).as_ref().err(), Some(want), "{raw}");
        }
        for scheme in [
            "javascript:alert(1)",
            "data:text/html,x",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(native(scheme), Err(SchemeNotAllowed(_))),
                "{scheme}"
            );
        }
        let long = format!("https://a.example/{}", "a".repeat(MAX_REDIRECT_URI_LEN));
        assert_eq!(web(&long).err(), Some(TooLong));
    }

    #[test]
    fn https_matches_only_byte_exact() -> Result<(), RedirectUriError> {
        let r = web("https://app.example.com/callback")?;
        assert!(r.matches("https://app.example.com/callback"));
        for attack in [
            // prefix tricks
            "https://app.example.com/callback/../../evil",
            "https://app.example.com/callback/extra",
            "https://app.example.com/callbackx",
            "https://app.example.com/callback?x=1",
            "https://app.example.com/callback#x",
            "https://app.example.com.evil.com/callback",
            // userinfo tricks
            "https://app.example.com@evil.com/callback",
            "https://evil.com@app.example.com/callback",
            // path traversal and encodings
            "https://app.example.com/x/../callback",
            "https://app.example.com/%63allback",
            // case and trailing slash
            "https://APP.example.com/callback",
            "HTTPS://app.example.com/callback",
            "https://app.example.com/Callback",
            "https://app.example.com/callback/",
            // explicit default port is not the same bytes
            "https://app.example.com:443/callback",
            "https://app.example.com:8443/callback",
        ] {
            assert!(!r.matches(attack), "{attack}");
        }
        Ok(())
    }

    #[test]
    fn loopback_matches_any_port_but_nothing_else() -> Result<(), RedirectUriError> {
        let r = web("http://127.0.0.1/callback")?;
        assert!(r.matches("http://127.0.0.1/callback"));
        assert!(r.matches("http://127.0.0.1:53412/callback"));
        assert!(r.matches("http://127.0.0.1:1/callback"));
        for attack in [
            "http://127.0.0.1:0/callback",
            "http://127.0.0.1:65536/callback",
            "http://127.0.0.1:+80/callback",
            "http://127.0.0.1:/callback",
            "http://127.0.0.1:80/callback/",
            "http://127.0.0.1:80/callbackx",
            "http://127.0.0.1:80/callback?x",
            "http://127.0.0.1:80/callback#x",
            "http://127.0.0.1:80/x/../callback",
            "http://localhost:80/callback",
            "http://[::1]:80/callback",
            "http://127.0.0.1.evil.com/callback",
            "http://127.0.0.1@evil.com/callback",
            "http://evil.com@127.0.0.1/callback",
            "https://127.0.0.1/callback",
            "HTTP://127.0.0.1:80/callback",
        ] {
            assert!(!r.matches(attack), "{attack}");
        }

        let no_path = web("http://127.0.0.1:33418")?;
        assert!(no_path.matches("http://127.0.0.1:50000"));
        assert!(!no_path.matches("http://127.0.0.1:50000/"));

        let v6 = web("http://[::1]:8080/cb")?;
        assert!(v6.matches("http://[::1]:9090/cb"));
        assert!(!v6.matches("http://[::2]:9090/cb"));
        assert!(!v6.matches("http://[::1]x:9090/cb"));
        Ok(())
    }

    #[test]
    fn native_schemes_match_byte_exact() -> Result<(), RedirectUriError> {
        let r = native("cursor://anysphere.cursor-retrieval/oauth/callback")?;
        assert!(r.matches("cursor://anysphere.cursor-retrieval/oauth/callback"));
        assert!(!r.matches("cursor://anysphere.cursor-retrieval/oauth/callback2"));
        assert!(!r.matches("Cursor://anysphere.cursor-retrieval/oauth/callback"));
        Ok(())
    }

    #[test]
    fn find_match_picks_the_registered_uri() -> Result<(), RedirectUriError> {
        let list = [web("https://a.example/cb")?, web("http://localhost/cb")?];
        assert_eq!(
            find_match(&list, "http://localhost:4000/cb").map(RedirectUri::as_str),
            Some("http://localhost/cb")
        );
        assert!(find_match(&list, "https://a.example/cb2").is_none());
        Ok(())
    }

    #[test]
    fn targets_for_the_consent_page() -> Result<(), RedirectUriError> {
        assert_eq!(
            web("https://app.example.com:8443/cb")?.target(),
            RedirectTarget::Web("app.example.com:8443".into())
        );
        assert_eq!(
            web("https://app.example.com/cb")?.target(),
            RedirectTarget::Web("app.example.com".into())
        );
        assert_eq!(
            web("http://[::1]:5/cb")?.target(),
            RedirectTarget::Loopback("[::1]".into())
        );
        assert_eq!(
            native("com.example.app:/cb")?.target(),
            RedirectTarget::App("com.example.app".into())
        );
        Ok(())
    }
}

//! Receiving the authorization response: a one-shot loopback listener for
//! a browser (RFC 8252 §7.3), opening the browser without a shell, and the
//! non-interactive mode that follows the authorization URL's redirect with
//! an HTTP client instead.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;

use crate::oauth::FlowError;

/// A loopback listener waiting for the redirect.
#[derive(Debug)]
pub struct Loopback {
    listener: TcpListener,
    /// The redirect URI to register and send.
    pub redirect_uri: String,
}

impl Loopback {
    /// Listens on 127.0.0.1: on `port` when given (a registration made
    /// with it), else on a free one.
    pub async fn bind(port: Option<u16>) -> Result<Self, FlowError> {
        let fixed = match port {
            Some(p) => TcpListener::bind(("127.0.0.1", p)).await.ok(),
            None => None,
        };
        let listener = match fixed {
            Some(l) => l,
            None => TcpListener::bind(("127.0.0.1", 0))
                .await
                .map_err(|e| FlowError::Protocol(format!("cannot listen on loopback: {e}")))?,
        };
        let port = listener
            .local_addr()
            .map_err(|e| FlowError::Protocol(e.to_string()))?
            .port();
        Ok(Self {
            listener,
            redirect_uri: format!("http://127.0.0.1:{port}/callback"),
        })
    }

    /// Waits for the browser to arrive at the redirect URI; answers it with
    /// a short page and returns the full redirect URL. Requests for other
    /// paths (a favicon) are answered 404 and ignored.
    pub async fn wait(&self, timeout: Duration) -> Result<Url, FlowError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let accepted = tokio::time::timeout_at(deadline, self.listener.accept())
                .await
                .map_err(|_| FlowError::Protocol("no sign-in arrived before the timeout".into()))?;
            let Ok((mut stream, _)) = accepted else {
                continue;
            };
            // Enough for a request line and headers; the request has no body.
            let mut buf = vec![0u8; 16 * 1024];
            let mut len = 0;
            while len < buf.len() {
                let n = match tokio::time::timeout(
                    Duration::from_secs(5),
                    stream.read(&mut buf[len..]),
                )
                .await
                {
                    Ok(Ok(n)) if n > 0 => n,
                    _ => break,
                };
                len += n;
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let target = head
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("GET "))
                .and_then(|l| l.split(' ').next())
                .unwrap_or_default()
                .to_owned();
            if !target.starts_with("/callback") {
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
                continue;
            }
            let page = "<!doctype html><title>mcpgate</title><p>Signed in. You can close this window and return to the terminal.</p>";
            let _ = stream
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{page}",
                        page.len()
                    )
                    .as_bytes(),
                )
                .await;
            let base =
                Url::parse(&self.redirect_uri).map_err(|e| FlowError::Protocol(e.to_string()))?;
            return base
                .join(&target)
                .map_err(|e| FlowError::Protocol(format!("bad redirect: {e}")));
        }
    }
}

/// Opens `url` in the system browser, never through a shell, and only for
/// http(s) URLs. Failure is not an error: the URL is printed as well.
pub fn open_browser(url: &Url) -> bool {
    if !matches!(url.scheme(), "http" | "https") {
        return false;
    }
    let program = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    std::process::Command::new(program)
        .arg(url.as_str())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

/// Non-interactive authorization: requests the authorization URL without
/// following redirects and returns the `Location` it sends to the
/// redirect URI. For automated runs against servers that approve without
/// a page.
pub async fn follow(
    http_no_redirect: &reqwest::Client,
    url: &Url,
    redirect_uri: &str,
) -> Result<Url, FlowError> {
    let expected = Url::parse(redirect_uri).map_err(|e| FlowError::Protocol(e.to_string()))?;
    let mut current = url.clone();
    // A few hops within the authorization server are allowed (a sign-in
    // step that redirects on); the first hop to the redirect URI ends it.
    for _ in 0..5 {
        let resp = http_no_redirect
            .get(current.clone())
            .send()
            .await
            .map_err(|source| FlowError::Http {
                url: current.origin().ascii_serialization(),
                source,
            })?;
        if !resp.status().is_redirection() {
            return Err(FlowError::Protocol(format!(
                "the authorization endpoint answered {} instead of redirecting: it wants a person; sign in interactively",
                resp.status()
            )));
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| FlowError::Protocol("the redirect has no Location".into()))?;
        let target = current
            .join(location)
            .map_err(|e| FlowError::Protocol(format!("bad Location: {e}")))?;
        if target.origin() == expected.origin() && target.path() == expected.path() {
            return Ok(target);
        }
        if target.origin() != current.origin() {
            return Err(FlowError::Protocol(format!(
                "the authorization endpoint redirected to {}, which is neither itself nor the redirect URI",
                target.origin().ascii_serialization()
            )));
        }
        current = target;
    }
    Err(FlowError::Protocol(
        "too many redirects before the redirect URI".into(),
    ))
}

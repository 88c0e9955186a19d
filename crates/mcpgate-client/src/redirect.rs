//! Receiving the authorization response: a loopback listener for a
//! browser (RFC 8252 §7.3) that waits for the callback carrying this
//! sign-in's `state`, opening the browser without a shell (or saying why
//! none can be opened), and the non-interactive mode that follows the
//! authorization URL's redirect with an HTTP client instead.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;

use crate::error::FlowError;

/// Connections read at once by the loopback listener.
const MAX_CONNECTIONS: usize = 32;

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
                .map_err(FlowError::Loopback)?,
        };
        let port = listener.local_addr().map_err(FlowError::Loopback)?.port();
        Ok(Self {
            listener,
            redirect_uri: format!("http://127.0.0.1:{port}/callback"),
        })
    }

    /// Waits for the browser to arrive at the redirect URI with this
    /// sign-in's `state`, and returns the full redirect URL. Any web page
    /// can make the browser load `http://127.0.0.1:PORT/callback?…`, so a
    /// callback with another `state` (or none) is answered with an error
    /// page and ignored, and the wait goes on until `timeout`. Requests for
    /// other paths (a favicon) are answered 404 and ignored.
    pub async fn wait(&self, state: &str, timeout: Duration) -> Result<Url, FlowError> {
        let base = Url::parse(&self.redirect_uri).map_err(|e| FlowError::BadUrl {
            what: "redirect URI",
            url: self.redirect_uri.clone(),
            reason: e.to_string(),
        })?;
        let deadline = tokio::time::Instant::now() + timeout;
        // Each connection is read on its own, so that a page holding
        // connections open cannot delay the browser's; a few dozen at once
        // at most.
        let mut reading = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept(), if reading.len() < MAX_CONNECTIONS => {
                    if let Ok((mut stream, _)) = accepted {
                        reading.spawn(async move {
                            let target = read_target(&mut stream, deadline).await;
                            (stream, target)
                        });
                    }
                    continue;
                }
                Some(read) = reading.join_next() => read,
                () = tokio::time::sleep_until(deadline) => {
                    return Err(FlowError::CallbackTimeout(timeout.as_secs()));
                }
            };
            let Ok((mut stream, target)) = accepted else {
                continue;
            };
            let callback = target
                .filter(|t| t.starts_with("/callback"))
                .and_then(|t| base.join(&t).ok());
            let Some(callback) = callback else {
                respond(&mut stream, "404 Not Found", "").await;
                continue;
            };
            if !callback
                .query_pairs()
                .any(|(k, v)| k == "state" && v == state)
            {
                respond(
                    &mut stream,
                    "400 Bad Request",
                    "<p>This sign-in response does not belong to the sign-in in progress, and was ignored. Go back to the terminal.</p>",
                )
                .await;
                continue;
            }
            respond(
                &mut stream,
                "200 OK",
                "<p>Signed in. You can close this window and return to the terminal.</p>",
            )
            .await;
            return Ok(callback);
        }
    }
}

/// Reads a request's head (it has no body) and returns its target, for a
/// `GET` only. A client that sends nothing gives up its turn after a few
/// seconds, or at the deadline.
async fn read_target(
    stream: &mut tokio::net::TcpStream,
    deadline: tokio::time::Instant,
) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut len = 0;
    let until = deadline.min(tokio::time::Instant::now() + Duration::from_secs(5));
    while len < buf.len() {
        match tokio::time::timeout_at(until, stream.read(&mut buf[len..])).await {
            Ok(Ok(n)) if n > 0 => len += n,
            _ => break,
        }
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    head.lines()
        .next()?
        .strip_prefix("GET ")?
        .split(' ')
        .next()
        .map(str::to_owned)
}

async fn respond(stream: &mut tokio::net::TcpStream, status: &str, body: &str) {
    let page = if body.is_empty() {
        String::new()
    } else {
        format!("<!doctype html><title>mcpgate</title>{body}")
    };
    let _ = stream
        .write_all(
            format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{page}",
                page.len()
            )
            .as_bytes(),
        )
        .await;
}

/// Why no browser can be opened here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoBrowser {
    /// No graphical session (Linux: neither `DISPLAY` nor `WAYLAND_DISPLAY`).
    #[error("no graphical display (neither DISPLAY nor WAYLAND_DISPLAY is set)")]
    NoDisplay,
    /// The opener program is not installed.
    #[error("{0} is not installed")]
    OpenerMissing(&'static str),
    /// The opener ran and failed.
    #[error("{program} failed{}", code.map(|c| format!(" (exit {c})")).unwrap_or_default())]
    OpenerFailed {
        /// The program.
        program: &'static str,
        /// Its exit code.
        code: Option<i32>,
    },
    /// Only http(s) URLs are opened.
    #[error("only http(s) URLs are opened")]
    NotHttp,
}

/// Opening a browser, as a value so that tests can stand in for the
/// system's.
pub trait Browser: Send + Sync {
    /// Whether one can be opened at all (cheap: nothing is launched).
    fn available(&self) -> Result<(), NoBrowser>;
    /// Opens `url`.
    fn open(&self, url: &Url) -> Result<(), NoBrowser>;
}

/// The system browser: `open` on macOS, `explorer` on Windows, `xdg-open`
/// elsewhere, which needs a graphical session.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemBrowser;

impl SystemBrowser {
    fn program() -> &'static str {
        if cfg!(target_os = "macos") {
            "open"
        } else if cfg!(windows) {
            "explorer"
        } else {
            "xdg-open"
        }
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let p = dir.join(program);
            p.is_file() || (cfg!(windows) && p.with_extension("exe").is_file())
        })
    })
}

impl Browser for SystemBrowser {
    fn available(&self) -> Result<(), NoBrowser> {
        if cfg!(any(target_os = "macos", windows)) {
            return Ok(());
        }
        let set = |v: &str| std::env::var_os(v).is_some_and(|x| !x.is_empty());
        if !set("DISPLAY") && !set("WAYLAND_DISPLAY") {
            return Err(NoBrowser::NoDisplay);
        }
        if !on_path(Self::program()) {
            return Err(NoBrowser::OpenerMissing(Self::program()));
        }
        Ok(())
    }

    fn open(&self, url: &Url) -> Result<(), NoBrowser> {
        open_browser(url)
    }
}

/// Opens `url` in the system browser, never through a shell, and only for
/// http(s) URLs. An opener that exits at once with a failure (xdg-open
/// with no browser configured) is reported; one still running after a few
/// seconds is taken to have worked.
pub fn open_browser(url: &Url) -> Result<(), NoBrowser> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(NoBrowser::NotHttp);
    }
    let program = SystemBrowser::program();
    let mut child = std::process::Command::new(program)
        .arg(url.as_str())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|_| NoBrowser::OpenerMissing(program))?;
    for _ in 0..30 {
        match child.try_wait() {
            // Windows' explorer exits 1 even when it opened the page.
            Ok(Some(status)) if status.success() || cfg!(windows) => return Ok(()),
            Ok(Some(status)) => {
                return Err(NoBrowser::OpenerFailed {
                    program,
                    code: status.code(),
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(_) => break,
        }
    }
    // Still running: reap it whenever it ends.
    std::thread::spawn(move || child.wait());
    Ok(())
}

/// Redirects followed before giving up on a non-interactive sign-in.
const MAX_HOPS: usize = 8;

/// Non-interactive authorization: requests the authorization URL without
/// following redirects and returns the `Location` it sends to the
/// redirect URI. For automated runs against servers that approve without
/// a page.
pub async fn follow(
    http_no_redirect: &reqwest::Client,
    url: &Url,
    redirect_uri: &str,
) -> Result<Url, FlowError> {
    let expected = Url::parse(redirect_uri).map_err(|e| FlowError::BadUrl {
        what: "redirect URI",
        url: redirect_uri.to_owned(),
        reason: e.to_string(),
    })?;
    let mut current = url.clone();
    // A few hops are allowed (a sign-in step that redirects on, or a
    // federated sign-in through the upstream identity provider and back:
    // broker, Entra, broker); the first hop to the redirect URI ends it.
    for _ in 0..MAX_HOPS {
        let resp = http_no_redirect
            .get(current.clone())
            .send()
            .await
            .map_err(|source| FlowError::Http {
                url: current.origin().ascii_serialization(),
                source,
            })?;
        if !resp.status().is_redirection() {
            return Err(FlowError::NotRedirected(resp.status().as_u16()));
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or(FlowError::Redirect("a redirect has no Location"))?;
        let target = current
            .join(location)
            .map_err(|_| FlowError::Redirect("a Location is not a URL"))?;
        if target.origin() == expected.origin() && target.path() == expected.path() {
            return Ok(target);
        }
        // Another origin gets the hop only over https, or http on loopback,
        // as every endpoint the client uses; no cookie or credential goes
        // with it.
        if target.origin() != current.origin()
            && crate::discovery::require_secure("redirect target", target.as_str()).is_err()
        {
            return Err(FlowError::Redirect(
                "it redirected to a plain-http origin off loopback",
            ));
        }
        current = target;
    }
    Err(FlowError::Redirect(
        "too many redirects before the redirect URI",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(redirect_uri: &str, query: &str) -> String {
        let url = Url::parse(redirect_uri).expect("url");
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", url.port().expect("port")))
            .await
            .expect("connect");
        stream
            .write_all(
                format!("GET /callback?{query} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").as_bytes(),
            )
            .await
            .expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
    }

    #[tokio::test]
    async fn a_forged_callback_is_ignored_and_the_real_one_still_counts() {
        let loopback = Loopback::bind(None).await.expect("bind");
        let uri = loopback.redirect_uri.clone();
        let waiting = tokio::spawn(async move {
            loopback
                .wait("the-real-state", Duration::from_secs(60))
                .await
        });
        // A connection that says nothing does not hold the listener.
        let _silent = tokio::net::TcpStream::connect((
            "127.0.0.1",
            Url::parse(&uri).expect("url").port().expect("port"),
        ))
        .await
        .expect("connect");
        // Any web page can send the browser here; the sign-in goes on.
        let forged = get(&uri, "code=attacker&state=forged").await;
        assert!(forged.starts_with("HTTP/1.1 400"), "{forged}");
        assert!(forged.contains("does not belong"), "{forged}");
        let no_state = get(&uri, "code=attacker").await;
        assert!(no_state.starts_with("HTTP/1.1 400"), "{no_state}");

        let real = get(&uri, "code=c&state=the-real-state").await;
        assert!(real.starts_with("HTTP/1.1 200"), "{real}");
        let got = waiting.await.expect("join").expect("the real callback");
        let code = got
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned());
        assert_eq!(code.as_deref(), Some("c"));
    }

    /// A server that answers every request with a redirect to `to`.
    async fn redirector(to: String) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().fallback(move || {
            let to = to.clone();
            async move { axum::response::Redirect::to(&to) }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}/authorize")
    }

    fn no_redirect() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    /// A federated sign-in: the authorization server sends the browser to
    /// the upstream identity provider (another origin), which sends it
    /// back, which sends it to the redirect URI.
    #[tokio::test]
    async fn follows_a_federated_sign_in_across_secure_origins() {
        let redirect_uri = "http://127.0.0.1:9/callback";
        let back = redirector(format!("{redirect_uri}?code=c&state=s")).await;
        let upstream = redirector(back).await;
        let start = redirector(upstream).await;
        let url = Url::parse(&start).expect("url");
        let landed = follow(&no_redirect(), &url, redirect_uri)
            .await
            .expect("followed");
        assert_eq!(landed.query(), Some("code=c&state=s"));
    }

    #[tokio::test]
    async fn refuses_a_hop_to_plain_http_off_loopback() {
        let start = redirector("http://example.invalid/steal".to_owned()).await;
        let url = Url::parse(&start).expect("url");
        let err = follow(&no_redirect(), &url, "http://127.0.0.1:9/callback")
            .await
            .expect_err("refused before any request to it");
        assert!(matches!(err, FlowError::Redirect(_)), "{err:?}");
    }
}

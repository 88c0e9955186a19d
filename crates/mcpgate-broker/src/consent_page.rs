//! The consent page the broker shows before it sends a user to Entra on a
//! client's behalf: one per (user, client) pair. It names the client, and
//! above all where the browser goes next (the redirect URI's host), which
//! is the confused-deputy defence of the MCP security best practices: a
//! name is whatever the client says it is, a redirect host is not.
//!
//! Rendering only; the handler supplies the CSRF value, checks it on
//! submission, and sets the consent cookie ([`crate::consent_cookie`]).
//!
//! The page runs no script, loads nothing, and forbids framing:
//! `Content-Security-Policy` allows only its own inline stylesheet (by
//! hash) and `frame-ancestors 'none'`; `X-Frame-Options: DENY` for older
//! browsers; `Cache-Control: no-store`. There is no `form-action`: Chrome
//! applies it to the redirect that follows the form post (to Entra or the
//! client), and the form's action is a fixed path of ours anyway.

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::redirect::{RedirectTarget, RedirectUri};
use crate::registration::{ClientId, ClientName};
use crate::secret::CsrfToken;

/// The form field names the page posts.
pub mod fields {
    /// The CSRF value.
    pub const CSRF: &str = "csrf";
    /// `approve` or `deny`.
    pub const DECISION: &str = "decision";
    /// The value of [`DECISION`] that grants consent.
    pub const APPROVE: &str = "approve";
    /// The value of [`DECISION`] that refuses it.
    pub const DENY: &str = "deny";
}

const STYLE: &str = include_str!("consent_page.css");

/// The `Content-Security-Policy` of every broker page: nothing but our
/// stylesheet, pinned by its hash.
static CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; img-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )
});

/// Who is asking and how we know its name.
#[derive(Debug, Clone, Copy)]
pub enum ClientOrigin<'a> {
    /// Registered through `/register`: name and URIs are self-asserted.
    Registered,
    /// A Client ID Metadata Document: the document's host vouches for it.
    Document {
        /// The host serving the document.
        host: &'a str,
    },
}

/// What the page shows and posts.
#[derive(Debug, Clone, Copy)]
pub struct ConsentPage<'a> {
    /// The client's name, if it gave one.
    pub client_name: Option<&'a ClientName>,
    /// The client's identifier.
    pub client_id: &'a ClientId,
    /// How the client is known.
    pub origin: ClientOrigin<'a>,
    /// The (registered, matched) redirect URI of this request.
    pub redirect_uri: &'a RedirectUri,
    /// The scopes requested.
    pub scopes: &'a [&'a str],
    /// The signed-in user, as shown (name or username).
    pub user: &'a str,
    /// The form's CSRF value.
    pub csrf: &'a CsrfToken,
    /// Where the form posts (a path of ours).
    pub action: &'a str,
    /// Further hidden fields the handler needs back (a pending-request id).
    pub hidden: &'a [(&'a str, &'a str)],
}

impl ConsentPage<'_> {
    /// The page with its security headers.
    pub fn response(&self) -> Response<String> {
        let mut response = Response::new(self.html());
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        page_headers(headers);
        response
    }

    /// The HTML document.
    pub fn html(&self) -> String {
        let name = self.client_name.map(ClientName::as_str);
        let title_name = esc(name.unwrap_or("An unnamed application"));
        let (destination, destination_note) = match self.redirect_uri.target() {
            RedirectTarget::Web(host) => (
                esc(&host),
                "After you choose, your browser goes to this site.".to_owned(),
            ),
            RedirectTarget::Loopback(host) => (
                format!("An app on this computer ({})", esc(&host)),
                "After you choose, your browser hands the result to a program running on this computer.".to_owned(),
            ),
            RedirectTarget::App(scheme) => (
                format!("The app for {}:// links", esc(&scheme)),
                "After you choose, your browser opens the app that handles these links on this device.".to_owned(),
            ),
        };
        let vouched = match self.origin {
            ClientOrigin::Registered => {
                "The name above is supplied by the application and has not been verified."
                    .to_owned()
            }
            ClientOrigin::Document { host } => format!(
                "Published by <strong>{}</strong>. The name above is supplied by the application.",
                esc(host)
            ),
        };
        let scopes: String = if self.scopes.is_empty() {
            "<li><span class=\"what\">Sign you in to this MCP server</span></li>".to_owned()
        } else {
            self.scopes
                .iter()
                .map(|s| match describe_scope(s) {
                    Some(text) => format!(
                        "<li><span class=\"what\">{}</span><code>{}</code></li>",
                        esc(text),
                        esc(s)
                    ),
                    None => format!(
                        "<li><span class=\"what\"><code>{}</code></span></li>",
                        esc(s)
                    ),
                })
                .collect()
        };
        let hidden: String = self
            .hidden
            .iter()
            .map(|(k, v)| {
                format!(
                    "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                    esc(k),
                    esc(v)
                )
            })
            .collect();
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"referrer\" content=\"no-referrer\">\
<title>Allow access? · mcpgate</title><style>{STYLE}</style></head><body>\
<main class=\"card\">\
<p class=\"brand\">mcpgate</p>\
<h1>Allow <span class=\"client\">{title_name}</span> to use your MCP server?</h1>\
<p class=\"muted\">Signed in as <strong>{user}</strong></p>\
<section class=\"dest\" aria-label=\"Where you will be sent\">\
<p class=\"label\">You will be sent to</p>\
<p class=\"host\" id=\"redirect-host\">{destination}</p>\
<p class=\"note\">{destination_note} Continue only if you started this sign-in from there.</p>\
</section>\
<section aria-label=\"Permissions\"><p class=\"label\">It will be able to</p><ul class=\"scopes\">{scopes}</ul></section>\
<details><summary>Application details</summary><dl>\
<dt>Client ID</dt><dd><code>{client_id}</code></dd>\
<dt>Redirect URI</dt><dd><code>{redirect}</code></dd></dl></details>\
<p class=\"muted small\">{vouched}</p>\
<form method=\"post\" action=\"{action}\">{hidden}\
<input type=\"hidden\" name=\"{csrf_field}\" value=\"{csrf}\">\
<div class=\"actions\">\
<button type=\"submit\" name=\"{decision}\" value=\"{deny}\" class=\"secondary\" id=\"deny\">Deny</button>\
<button type=\"submit\" name=\"{decision}\" value=\"{approve}\" class=\"primary\" id=\"approve\">Allow</button>\
</div></form></main></body></html>",
            user = esc(self.user),
            client_id = esc(self.client_id.as_str()),
            redirect = esc(self.redirect_uri.as_str()),
            action = esc(self.action),
            csrf_field = fields::CSRF,
            csrf = esc(self.csrf.secret()),
            decision = fields::DECISION,
            deny = fields::DENY,
            approve = fields::APPROVE,
        )
    }
}

/// A page that says why a sign-in stopped: the same look and headers as
/// the consent page. `back`, when given, is a link to the client's
/// redirect URI carrying the error (only ever a URI already matched
/// against the client's registration).
pub fn error_page(
    status: StatusCode,
    title: &str,
    message: &str,
    back: Option<&str>,
) -> Response<String> {
    let back = back
        .map(|url| {
            format!(
                "<div class=\"actions\"><a class=\"button primary\" id=\"back\" href=\"{}\">Return to the application</a></div>",
                esc(url)
            )
        })
        .unwrap_or_default();
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"referrer\" content=\"no-referrer\">\
<title>{title} · mcpgate</title><style>{STYLE}</style></head><body>\
<main class=\"card\"><p class=\"brand\">mcpgate</p>\
<h1 id=\"error-title\">{title}</h1><p id=\"error-message\">{message}</p>{back}\
<p class=\"muted small\">You can close this window and start the sign-in again from your application.</p>\
</main></body></html>",
        title = esc(title),
        message = esc(&sentence(message)),
    );
    let mut response = Response::new(html);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    page_headers(headers);
    response
}

/// Error texts are written for logs ("the client is not registered"); a
/// page shows them as a sentence.
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => return String::new(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// The headers every broker page carries: CSP, no framing, no caching, no
/// referrer, no sniffing.
pub fn page_headers(headers: &mut HeaderMap) {
    if let Ok(csp) = HeaderValue::from_str(&CSP) {
        headers.insert(CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

/// Plain words for the scopes people see most.
fn describe_scope(scope: &str) -> Option<&'static str> {
    match scope {
        "offline_access" => Some("Stay signed in when you are not using it"),
        "openid" => Some("Know who you are"),
        "profile" => Some("See your name"),
        "email" => Some("See your email address"),
        s if s.ends_with("mcp:tools") || s.ends_with("/mcp.tools") => {
            Some("Use the tools of this MCP server as you")
        }
        _ => None,
    }
}

/// Escapes text for HTML content and double- or single-quoted attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redirect::ApplicationType;

    struct Fixture {
        name: Option<ClientName>,
        id: ClientId,
        redirect: RedirectUri,
        csrf: CsrfToken,
    }

    fn fixture(name: &str, redirect: &str) -> Fixture {
        Fixture {
            name: ClientName::sanitize(name),
            id: ClientId::new("c-123"),
            redirect: RedirectUri::parse(redirect, ApplicationType::Native).expect("redirect"),
            csrf: CsrfToken::new("csrf-value"),
        }
    }

    fn page(f: &Fixture) -> ConsentPage<'_> {
        ConsentPage {
            client_name: f.name.as_ref(),
            client_id: &f.id,
            origin: ClientOrigin::Registered,
            redirect_uri: &f.redirect,
            scopes: &["api://mcp/mcp:tools", "offline_access"],
            user: "Ada <ada@example.com>",
            csrf: &f.csrf,
            action: "/authorize/consent",
            hidden: &[("pending", "p\"1")],
        }
    }

    #[test]
    fn names_the_client_the_redirect_host_and_the_scopes() {
        let f = fixture("Acme Desktop", "https://app.acme.example/cb");
        let html = page(&f).html();
        assert!(html.contains("Allow <span class=\"client\">Acme Desktop</span>"));
        assert!(html.contains("<p class=\"host\" id=\"redirect-host\">app.acme.example</p>"));
        assert!(html.contains("<code>api://mcp/mcp:tools</code>"));
        assert!(html.contains("<code>offline_access</code>"));
        assert!(html.contains("<input type=\"hidden\" name=\"csrf\" value=\"csrf-value\">"));
        assert!(html.contains("value=\"p&quot;1\""));
        assert!(html.contains("id=\"approve\"") && html.contains("id=\"deny\""));
    }

    #[test]
    fn client_supplied_text_is_escaped() {
        let f = fixture(
            "<script>alert(1)</script>\"'&",
            "https://app.example/cb?a=1&b=\"",
        );
        let html = page(&f).html();
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
        assert!(!html.contains("b=\""));
        let f = fixture("x", "http://127.0.0.1/cb");
        assert!(
            page(&f)
                .html()
                .contains("An app on this computer (127.0.0.1)")
        );
        let f = fixture("x", "cursor://anysphere.cursor-retrieval/cb");
        assert!(page(&f).html().contains("The app for cursor:// links"));
    }

    #[test]
    fn headers_forbid_framing_caching_and_everything_else() {
        let f = fixture("Acme", "https://app.acme.example/cb");
        let r = page(&f).response();
        let h = |name| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        };
        let csp = h(CONTENT_SECURITY_POLICY);
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.starts_with("default-src 'none';"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h(X_FRAME_OPTIONS), "DENY");
        assert_eq!(h(CACHE_CONTROL), "no-store");
        assert_eq!(h(REFERRER_POLICY), "no-referrer");
        // The hash in the policy is that of the stylesheet the page holds.
        let hash = STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
        assert!(csp.contains(&hash));
        assert!(r.body().contains(&format!("<style>{STYLE}</style>")));
    }
}

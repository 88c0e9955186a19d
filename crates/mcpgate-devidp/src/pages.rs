//! The HTML a person sees: sign-in, consent, device-code entry, errors.
//! Every page forbids framing and caching; forms carry a CSRF value that
//! must match a cookie.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use crate::directory::User;
use crate::error::AadError;
use crate::util::html_escape as esc;

/// The prefix of the cookies holding CSRF values: one cookie per flow.
pub const CSRF_COOKIE_PREFIX: &str = "mcpgate_idp_csrf_";
/// The cookie holding the browser session.
pub const SESSION_COOKIE: &str = "mcpgate_idp_session";

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#1b1b1b}\
h1{font-size:1.4rem}.muted{color:#555;font-size:.9rem}.err{color:#a4262c;border:1px solid #a4262c;padding:.5rem}\
button{padding:.5rem 1rem;margin:.25rem 0}input{display:block;width:100%;padding:.4rem;margin:.25rem 0 .75rem}\
.user{display:block;width:100%;text-align:left}ul{padding-left:1.2rem}";

fn page(status: StatusCode, title: &str, body: &str, script: bool) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        title = esc(title),
    );
    let mut resp = (status, Html(html)).into_response();
    let h = resp.headers_mut();
    if status == StatusCode::TOO_MANY_REQUESTS {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(if script {
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; frame-ancestors 'none'"
        } else {
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
        }),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// The CSRF cookie of one flow (a sign-in page, a device page): named for
/// it, so that two flows open in one browser keep their own values.
pub fn csrf_cookie(flow: &str) -> String {
    // Flow ids are base64url, which cookie names allow; a prefix of one is
    // enough to keep flows apart.
    let short: String = flow
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(16)
        .collect();
    format!("{CSRF_COOKIE_PREFIX}{short}")
}

/// Adds a cookie.
pub fn set_cookie(resp: &mut Response, name: &str, value: &str, secure: bool, max_age: u64) {
    let cookie = format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Reads a cookie from the request headers.
pub fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The sign-in page.
pub fn sign_in(
    pending: &str,
    csrf: &str,
    app_name: &str,
    users: &[&User],
    login_hint: Option<&str>,
    error: Option<&AadError>,
) -> Response {
    let mut body = format!(
        "<h1>Sign in</h1><p class=\"muted\">to continue to <strong>{}</strong> — mcpgate development identity provider</p>",
        esc(app_name)
    );
    if let Some(e) = error {
        body.push_str(&format!(
            "<p class=\"err\" role=\"alert\">AADSTS{}: {}</p>",
            e.code,
            esc(&e.message)
        ));
    }
    let hidden = format!(
        "<input type=\"hidden\" name=\"pending\" value=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(pending),
        esc(csrf)
    );
    if !users.is_empty() {
        body.push_str("<h2>Development users</h2>");
        for u in users {
            body.push_str(&format!(
                "<form method=\"post\">{hidden}<input type=\"hidden\" name=\"action\" value=\"pick\"><input type=\"hidden\" name=\"username\" value=\"{user}\"><button class=\"user\" type=\"submit\" data-user=\"{user}\">{name} <span class=\"muted\">{user}</span></button></form>",
                user = esc(&u.username),
                name = esc(&u.display_name),
            ));
        }
    }
    let heading = if users.is_empty() {
        "Sign in with a password"
    } else {
        "Or sign in with a password"
    };
    body.push_str(&format!(
        "<h2>{heading}</h2><form method=\"post\">{hidden}<input type=\"hidden\" name=\"action\" value=\"password\"><label>Username<input name=\"username\" autocomplete=\"username\" value=\"{}\"></label><label>Password<input name=\"password\" type=\"password\" autocomplete=\"current-password\"></label><button type=\"submit\" id=\"sign-in\">Sign in</button></form>",
        esc(login_hint.unwrap_or_default())
    ));
    page(StatusCode::OK, "Sign in", &body, false)
}

/// The second-factor step of a sign-in: the code from an authenticator
/// app. `dev_code` is shown as a hint (loopback only, like the listed
/// users); `error` after a wrong code.
pub fn second_factor(
    pending: &str,
    csrf: &str,
    app_name: &str,
    user: &User,
    dev_code: Option<&str>,
    error: Option<&AadError>,
) -> Response {
    let mut body = format!(
        "<h1>Verify your identity</h1><p class=\"muted\">{name} ({user}) signing in to <strong>{app}</strong> — mcpgate development identity provider</p>\
<p>Your organisation requires multi-factor authentication for this sign-in.</p>",
        name = esc(&user.display_name),
        user = esc(&user.username),
        app = esc(app_name),
    );
    if let Some(e) = error {
        body.push_str(&format!(
            "<p class=\"err\" role=\"alert\">AADSTS{}: {}</p>",
            e.code,
            esc(&e.message)
        ));
    }
    body.push_str(&format!(
        "<form method=\"post\"><input type=\"hidden\" name=\"pending\" value=\"{p}\"><input type=\"hidden\" name=\"csrf\" value=\"{c}\">\
<input type=\"hidden\" name=\"action\" value=\"second_factor\">\
<label>Enter the code from your authenticator app<input name=\"otp\" id=\"otp\" inputmode=\"numeric\" autocomplete=\"one-time-code\" maxlength=\"12\" autofocus></label>\
<button type=\"submit\" id=\"verify\">Verify</button></form>",
        p = esc(pending),
        c = esc(csrf),
    ));
    if let Some(code) = dev_code {
        body.push_str(&format!(
            "<p class=\"muted\" id=\"dev-code\">Development identity provider: the code is <strong>{}</strong>.</p>",
            esc(code)
        ));
    }
    page(StatusCode::OK, "Verify your identity", &body, false)
}

/// The consent page.
pub fn consent(
    pending: &str,
    csrf: &str,
    app_name: &str,
    user: &User,
    scopes: &[String],
) -> Response {
    let items: String = scopes
        .iter()
        .map(|s| format!("<li>{}</li>", esc(s)))
        .collect();
    let body = format!(
        "<h1>Permissions requested</h1><p><strong>{app}</strong> wants to, on behalf of {name} ({user}):</p><ul>{items}</ul>\
<form method=\"post\"><input type=\"hidden\" name=\"pending\" value=\"{p}\"><input type=\"hidden\" name=\"csrf\" value=\"{c}\">\
<button type=\"submit\" name=\"action\" value=\"consent\" id=\"accept\">Accept</button> <button type=\"submit\" name=\"action\" value=\"decline\" id=\"decline\">Cancel</button></form>",
        app = esc(app_name),
        name = esc(&user.display_name),
        user = esc(&user.username),
        p = esc(pending),
        c = esc(csrf),
    );
    page(StatusCode::OK, "Permissions requested", &body, false)
}

/// An error shown in the browser, for errors that must not be redirected
/// (unknown client, unregistered redirect URI).
pub fn error(e: &AadError) -> Response {
    let body = format!(
        "<h1>Sign-in failed</h1><p class=\"err\" role=\"alert\">AADSTS{}: {}</p>",
        e.code,
        esc(&e.message)
    );
    page(e.status, "Sign-in failed", &body, false)
}

/// A plain message.
pub fn message(title: &str, text: &str) -> Response {
    let body = format!("<h1>{}</h1><p>{}</p>", esc(title), esc(text));
    page(StatusCode::OK, title, &body, false)
}

/// `response_mode=form_post`: a page that posts the response to the client.
pub fn form_post(redirect_uri: &str, params: &[(&str, String)]) -> Response {
    let fields: String = params
        .iter()
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                esc(k),
                esc(v)
            )
        })
        .collect();
    let body = format!(
        "<form method=\"post\" action=\"{}\">{fields}<noscript><button type=\"submit\">Continue</button></noscript></form><script>document.forms[0].submit()</script>",
        esc(redirect_uri)
    );
    page(StatusCode::OK, "Working…", &body, true)
}

/// The device-code page: enter the code, choose who signs in, approve or
/// deny. `users` are offered for one click; with none (an IdP exposed
/// beyond loopback), the username is typed and the password is required.
pub fn device(csrf: &str, flow: &str, users: &[&User], notice: Option<&str>) -> Response {
    let mut body = format!(
        "<h1>Enter code</h1><p class=\"muted\">Enter the code shown on your other device, then {}.</p>",
        if users.is_empty() {
            "sign in with your username and password"
        } else {
            "choose who signs in"
        }
    );
    if let Some(n) = notice {
        body.push_str(&format!("<p class=\"err\" role=\"alert\">{}</p>", esc(n)));
    }
    let who = if users.is_empty() {
        "<label>Username<input name=\"username\" autocomplete=\"username\"></label>\
<label>Password<input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>"
            .to_owned()
    } else {
        let options: String = users
            .iter()
            .map(|u| {
                format!(
                    "<option value=\"{user}\">{name} ({user})</option>",
                    user = esc(&u.username),
                    name = esc(&u.display_name)
                )
            })
            .collect();
        format!(
            "<label>User<select name=\"username\">{options}</select></label>\
<label>Password (optional for development users)<input name=\"password\" type=\"password\"></label>"
        )
    };
    body.push_str(&format!(
        "<form method=\"post\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"flow\" value=\"{}\">\
<label>Code<input name=\"user_code\" autocomplete=\"off\" autofocus></label>{who}\
<button type=\"submit\" name=\"action\" value=\"approve\" id=\"approve\">Approve</button> <button type=\"submit\" name=\"action\" value=\"deny\" id=\"deny\">Deny</button></form>",
        esc(csrf),
        esc(flow)
    ));
    page(StatusCode::OK, "Enter code", &body, false)
}

/// Hidden inputs carrying a password and a second-factor code from one
/// step of the device form to the next.
fn carried(password: Option<&str>, otp: Option<&str>) -> String {
    [("password", password), ("otp", otp)]
        .iter()
        .filter_map(|(name, value)| {
            value.map(|v| {
                format!(
                    "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                    esc(v)
                )
            })
        })
        .collect()
}

/// The device flow's second-factor step: the same form again, with the
/// code from an authenticator app asked.
#[allow(clippy::too_many_arguments)]
pub fn device_second_factor(
    csrf: &str,
    flow: &str,
    user_code: &str,
    user: &User,
    password: Option<&str>,
    dev_code: Option<&str>,
    notice: Option<&str>,
) -> Response {
    let mut body = format!(
        "<h1>Verify your identity</h1><p class=\"muted\">{name} ({user}) — mcpgate development identity provider</p>\
<p>Your organisation requires multi-factor authentication for this sign-in.</p>",
        name = esc(&user.display_name),
        user = esc(&user.username),
    );
    if let Some(n) = notice {
        body.push_str(&format!("<p class=\"err\" role=\"alert\">{}</p>", esc(n)));
    }
    body.push_str(&format!(
        "<form method=\"post\"><input type=\"hidden\" name=\"csrf\" value=\"{c}\"><input type=\"hidden\" name=\"flow\" value=\"{f}\"><input type=\"hidden\" name=\"user_code\" value=\"{code}\">\
<input type=\"hidden\" name=\"username\" value=\"{user}\">{carried}\
<label>Enter the code from your authenticator app<input name=\"otp\" id=\"otp\" inputmode=\"numeric\" autocomplete=\"one-time-code\" maxlength=\"12\" autofocus></label>\
<button type=\"submit\" name=\"action\" value=\"approve\" id=\"verify\">Verify</button> <button type=\"submit\" name=\"action\" value=\"deny\" id=\"deny\">Deny</button></form>",
        c = esc(csrf),
        f = esc(flow),
        code = esc(user_code),
        user = esc(&user.username),
        carried = carried(password, None),
    ));
    if let Some(code) = dev_code {
        body.push_str(&format!(
            "<p class=\"muted\" id=\"dev-code\">Development identity provider: the code is <strong>{}</strong>.</p>",
            esc(code)
        ));
    }
    page(StatusCode::OK, "Verify your identity", &body, false)
}

/// The device flow's consent step: the same form again, with the
/// permissions shown and `consent=yes`.
#[allow(clippy::too_many_arguments)]
pub fn device_consent(
    csrf: &str,
    flow: &str,
    user_code: &str,
    user: &User,
    app_name: &str,
    scopes: &[String],
    password: Option<&str>,
    otp: Option<&str>,
) -> Response {
    let items: String = scopes
        .iter()
        .map(|s| format!("<li>{}</li>", esc(s)))
        .collect();
    let password_field = carried(password, otp);
    let body = format!(
        "<h1>Permissions requested</h1><p><strong>{app}</strong> wants to, on behalf of {name} ({user}):</p><ul>{items}</ul>\
<form method=\"post\"><input type=\"hidden\" name=\"csrf\" value=\"{c}\"><input type=\"hidden\" name=\"flow\" value=\"{f}\"><input type=\"hidden\" name=\"user_code\" value=\"{code}\">\
<input type=\"hidden\" name=\"username\" value=\"{user}\"><input type=\"hidden\" name=\"consent\" value=\"yes\">{password_field}\
<button type=\"submit\" name=\"action\" value=\"approve\" id=\"accept\">Accept</button> <button type=\"submit\" name=\"action\" value=\"deny\" id=\"decline\">Cancel</button></form>",
        app = esc(app_name),
        name = esc(&user.display_name),
        user = esc(&user.username),
        c = esc(csrf),
        f = esc(flow),
        code = esc(user_code),
    );
    page(StatusCode::OK, "Permissions requested", &body, false)
}

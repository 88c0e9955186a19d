//! OpenID discovery and the key set, in Entra's shapes; Graph's `/me`;
//! sign-out.
//!
//! Entra publishes OpenID discovery only: there is no RFC 8414
//! `/.well-known/oauth-authorization-server`, no `registration_endpoint`,
//! and no `code_challenge_methods_supported` even though S256 works. The
//! dev IdP reproduces all three, since those are what MCP clients trip on.
//! It leaves out what it does not serve (Entra's `userinfo_endpoint` on
//! Graph, `kerberos_endpoint`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::directory::{GRAPH_APP_ID, GRAPH_URI};
use crate::error::AadError;
use crate::idp::Idp;
use crate::mint::Issuers;
use crate::pages::{self, SESSION_COOKIE};
use crate::util::token_hash;

fn cached_json(body: Value) -> Response {
    let mut resp = Json(body).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        "max-age=86400, private".parse().expect("static"),
    );
    resp.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        "*".parse().expect("static"),
    );
    resp
}

fn issuer_template(idp: &Idp, tenant: &str, v2: bool) -> String {
    // For the multi-tenant segments Entra publishes a template issuer.
    let tid = idp
        .dir
        .tenant(tenant)
        .map_or_else(|| "{tenantid}".to_owned(), |t| t.id.clone());
    let issuers = Issuers::new(&idp.base, &tid);
    if v2 { issuers.v2 } else { issuers.v1 }
}

/// `/{tenant}/v2.0/.well-known/openid-configuration`.
pub async fn openid_v2(State(idp): State<Arc<Idp>>, Path(tenant): Path<String>) -> Response {
    if let Err(e) = idp.tenant_segment_ok(&tenant) {
        return e.into_response();
    }
    let b = &idp.base;
    cached_json(json!({
        "token_endpoint": format!("{b}/{tenant}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{b}/{tenant}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": issuer_template(&idp, &tenant, true),
        "request_uri_parameter_supported": false,
        "authorization_endpoint": format!("{b}/{tenant}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{b}/{tenant}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{b}/{tenant}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": b.trim_start_matches("https://").trim_start_matches("http://"),
        "rbac_url": "https://pas.windows.net",
    }))
}

/// `/{tenant}/.well-known/openid-configuration` (the v1 document).
pub async fn openid_v1(State(idp): State<Arc<Idp>>, Path(tenant): Path<String>) -> Response {
    if let Err(e) = idp.tenant_segment_ok(&tenant) {
        return e.into_response();
    }
    let b = &idp.base;
    cached_json(json!({
        "token_endpoint": format!("{b}/{tenant}/oauth2/token"),
        "jwks_uri": format!("{b}/{tenant}/discovery/keys"),
        "issuer": issuer_template(&idp, &tenant, false),
        "authorization_endpoint": format!("{b}/{tenant}/oauth2/authorize"),
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code"],
        "subject_types_supported": ["pairwise"],
    }))
}

/// `/{tenant}/discovery/v2.0/keys` and the other key paths.
pub async fn keys(State(idp): State<Arc<Idp>>, tenant: Option<Path<String>>) -> Response {
    let tenant = tenant.map_or_else(|| "common".to_owned(), |p| p.0);
    if let Err(e) = idp.tenant_segment_ok(&tenant) {
        return e.into_response();
    }
    let issuer = issuer_template(&idp, &tenant, true);
    cached_json(idp.keys.jwks(&issuer, idp.now()))
}

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut resp = (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\""
                .parse()
                .expect("static"),
        );
    }
    resp
}

/// `GET /v1.0/me`: the signed-in user, for a Graph token with `User.Read`.
pub async fn me(State(idp): State<Arc<Idp>>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token else {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty.",
        );
    };
    let now = idp.now();
    let Some(claims) = idp.keys.verify(token, now) else {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token validation failure. Invalid audience or signature.",
        );
    };
    let aud = claims["aud"].as_str().unwrap_or_default();
    if aud != GRAPH_APP_ID && aud.trim_end_matches('/') != GRAPH_URI {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token validation failure. Invalid audience.",
        );
    }
    if claims["exp"].as_u64().unwrap_or(0) <= now {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Lifetime validation failed, the token is expired.",
        );
    }
    let scp = claims["scp"].as_str().unwrap_or_default();
    let allowed = scp
        .split(' ')
        .any(|s| matches!(s, "User.Read" | "User.ReadBasic.All"));
    if !allowed {
        return graph_error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        );
    }
    let Some(user) = claims["oid"].as_str().and_then(|o| idp.dir.user_by_oid(o)) else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            "Resource does not exist or one of its queried reference-property objects are not present.",
        );
    };
    let (given, surname) = user.names();
    Json(json!({
        "@odata.context": format!("{}/v1.0/$metadata#users/$entity", idp.base),
        "businessPhones": [],
        "displayName": user.display_name,
        "givenName": given,
        "jobTitle": null,
        "mail": user.username,
        "mobilePhone": null,
        "officeLocation": null,
        "preferredLanguage": "en-US",
        "surname": surname,
        "userPrincipalName": user.username,
        "id": user.oid,
    }))
    .into_response()
}

/// Query of the sign-out endpoint.
#[derive(Debug, serde::Deserialize)]
pub struct LogoutQuery {
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
}

/// `/{tenant}/oauth2/v2.0/logout`: ends the browser session; returns to
/// `post_logout_redirect_uri` only if some app registered it.
pub async fn logout(
    State(idp): State<Arc<Idp>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(q): Query<LogoutQuery>,
) -> Response {
    if let Err(e) = idp.tenant_segment_ok(&tenant) {
        return pages::error(&e);
    }
    if let Some(cookie) = pages::cookie(&headers, SESSION_COOKIE) {
        idp.state().sessions.remove(&token_hash(&cookie));
    }
    let target = q
        .post_logout_redirect_uri
        .filter(|uri| idp.dir.apps.iter().any(|a| a.redirect_allowed(uri)))
        .and_then(|uri| url::Url::parse(&uri).ok());
    let mut resp = match target {
        Some(mut url) => {
            if let Some(s) = &q.state {
                url.query_pairs_mut().append_pair("state", s);
            }
            let mut r = StatusCode::FOUND.into_response();
            if let Ok(v) = url.as_str().parse() {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        None => pages::message(
            "Signed out",
            "You have signed out of the mcpgate development identity provider. You can close this window.",
        ),
    };
    pages::set_cookie(&mut resp, SESSION_COOKIE, "", idp.tls, 0);
    resp
}

/// Anything else: a 404 in Entra's error form. In particular
/// `/.well-known/oauth-authorization-server` does not exist on Entra.
pub async fn not_found() -> Response {
    AadError::new(
        "invalid_request",
        900561,
        "The endpoint only accepts requests it is documented for; this path does not exist.",
    )
    .with_status(StatusCode::NOT_FOUND)
    .into_response()
}

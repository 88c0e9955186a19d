//! Scopes as Entra reads them: `api://<app>/<scope>`, `<app-guid>/<scope>`,
//! `<resource>/.default`, the OpenID scopes, and a bare scope meaning
//! Microsoft Graph. One request names at most one resource.
//!
//! The codes follow Microsoft's error reference
//! (<https://learn.microsoft.com/entra/identity-platform/reference-error-codes>)
//! and the v2 scope documentation
//! (<https://learn.microsoft.com/entra/identity-platform/scopes-oidc>).
//! The messages follow what Entra returns in practice, as users report it:
//! AADSTS28000 in github.com/Earlybyte/aad_oauth/issues/328, AADSTS9010010
//! for an MCP client's `resource=<server URL>` in
//! github.com/anthropics/claude-code/issues/73460 (which also shows
//! AADSTS650053 for a bare scope resolved against Graph).

use std::collections::BTreeSet;

use crate::directory::{Directory, GRAPH_APP_ID, GRAPH_SCOPES, GRAPH_URI};
use crate::error::AadError;

/// The OpenID Connect scopes, which belong to no resource.
pub const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// A parsed, checked `scope` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRequest {
    /// The resource's app id (Graph's when only OpenID scopes are asked).
    pub resource: String,
    /// Whether a resource scope was named at all.
    pub explicit_resource: bool,
    /// The resource's scopes, canonical short names (empty with `.default`).
    pub scopes: BTreeSet<String>,
    /// `<resource>/.default`: every permission the client was granted.
    pub default: bool,
    /// The OpenID scopes asked, lower-case.
    pub oidc: BTreeSet<String>,
}

impl ScopeRequest {
    /// Whether `openid` was asked (an ID token is due).
    pub fn openid(&self) -> bool {
        self.oidc.contains("openid")
    }

    /// Whether `offline_access` was asked (a refresh token is due).
    pub fn offline(&self) -> bool {
        self.oidc.contains("offline_access")
    }

    /// Whether the resource is Microsoft Graph.
    pub fn is_graph(&self) -> bool {
        self.resource == GRAPH_APP_ID
    }
}

fn invalid_scope(code: u32, message: String) -> AadError {
    AadError::new("invalid_scope", code, message)
}

/// Which resource a scope's prefix names.
fn resource_of(prefix: &str, dir: &Directory, tenant: &str) -> Result<String, AadError> {
    if prefix.eq_ignore_ascii_case(GRAPH_URI)
        || prefix.eq_ignore_ascii_case(GRAPH_APP_ID)
        || prefix.eq_ignore_ascii_case("https://graph.microsoft.com/")
    {
        return Ok(GRAPH_APP_ID.to_owned());
    }
    match dir.api_named(prefix) {
        Some(app) if app.is_api() => Ok(app.client_id.clone()),
        _ => Err(AadError::new(
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {prefix} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."
            ),
        )),
    }
}

/// Parses `scope` (and RFC 8707 `resource`, when given) for `tenant`.
pub fn parse(
    raw: Option<&str>,
    resource_param: Option<&str>,
    dir: &Directory,
    tenant: &str,
) -> Result<ScopeRequest, AadError> {
    let raw = raw.map(str::trim).unwrap_or_default();
    if raw.is_empty() {
        return Err(AadError::missing("scope"));
    }
    let mut oidc = BTreeSet::new();
    // (resource app id, short scope) in the order asked.
    let mut asked: Vec<(String, String)> = Vec::new();
    for token in raw.split_ascii_whitespace() {
        if let Some(o) = OIDC_SCOPES.iter().find(|o| o.eq_ignore_ascii_case(token)) {
            oidc.insert((*o).to_owned());
            continue;
        }
        let (resource, short) = match token.rfind('/') {
            Some(i) if i > 0 && i + 1 < token.len() => {
                (resource_of(&token[..i], dir, tenant)?, &token[i + 1..])
            }
            Some(_) => {
                return Err(invalid_scope(
                    70011,
                    format!(
                        "The provided value for the input parameter 'scope' is not valid. The scope '{token}' is not valid."
                    ),
                ));
            }
            // A bare scope is a Microsoft Graph permission.
            None => (GRAPH_APP_ID.to_owned(), token),
        };
        asked.push((resource, short.to_owned()));
    }

    let resources: BTreeSet<&str> = asked.iter().map(|(r, _)| r.as_str()).collect();
    if resources.len() > 1 {
        return Err(invalid_scope(
            28000,
            format!(
                "Provided value for the input parameter scope is not valid because it contains more than one resource. Scope {raw} is not valid."
            ),
        ));
    }
    let explicit_resource = !asked.is_empty();
    let resource = resources
        .first()
        .map_or_else(|| GRAPH_APP_ID.to_owned(), |r| (*r).to_owned());

    let default = asked.iter().any(|(_, s)| s == ".default");
    if default && asked.len() > 1 {
        return Err(invalid_scope(
            70011,
            format!(
                "The provided value for the input parameter 'scope' is not valid. The scope {raw} is not valid. static scope limit exceeded."
            ),
        ));
    }

    let mut scopes = BTreeSet::new();
    if !default {
        for (_, short) in &asked {
            let canonical = if resource == GRAPH_APP_ID {
                GRAPH_SCOPES
                    .iter()
                    .find(|s| s.eq_ignore_ascii_case(short))
                    .map(|s| (*s).to_owned())
            } else {
                dir.app(&resource)
                    .and_then(|app| app.scopes.iter().find(|s| s.eq_ignore_ascii_case(short)))
                    .cloned()
            };
            let Some(canonical) = canonical else {
                let name = if resource == GRAPH_APP_ID {
                    "Microsoft Graph".to_owned()
                } else {
                    dir.app(&resource)
                        .map_or(resource.clone(), |a| a.name.clone())
                };
                return Err(invalid_scope(
                    650053,
                    format!(
                        "The application asked for scope '{short}' that doesn't exist on the resource '{resource}' ({name}). Contact the app vendor."
                    ),
                ));
            };
            scopes.insert(canonical);
        }
    }

    if let Some(given) = resource_param.filter(|r| !r.is_empty()) {
        let matches = explicit_resource
            && if resource == GRAPH_APP_ID {
                given.trim_end_matches('/').eq_ignore_ascii_case(GRAPH_URI)
                    || given.eq_ignore_ascii_case(GRAPH_APP_ID)
            } else {
                dir.app(&resource).is_some_and(|a| a.is_named_by(given))
            };
        if !matches {
            return Err(AadError::new(
                "invalid_request",
                9010010,
                "The resource parameter provided in the request doesn't match with the requested scopes.",
            ));
        }
    }

    Ok(ScopeRequest {
        resource,
        explicit_resource,
        scopes,
        default,
        oidc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{
        DEFAULT_API_APP_ID, DEFAULT_TENANT_ID, IdpConfig, URL_API_APP_ID, URL_API_IDENTIFIER,
    };

    fn dir() -> Directory {
        Directory::from_config(&IdpConfig::builtin()).expect("builtin")
    }

    fn code(raw: &str, resource: Option<&str>) -> u32 {
        parse(Some(raw), resource, &dir(), DEFAULT_TENANT_ID)
            .expect_err(raw)
            .code
    }

    #[test]
    fn entra_scope_forms_parse() {
        let d = dir();
        let api = format!("api://{DEFAULT_API_APP_ID}/mcp:tools openid offline_access");
        let r = parse(Some(&api), None, &d, DEFAULT_TENANT_ID).expect("api scope");
        assert_eq!(r.resource, DEFAULT_API_APP_ID);
        assert!(r.scopes.contains("mcp:tools") && r.openid() && r.offline());

        let guid_form = format!("{DEFAULT_API_APP_ID}/MCP:TOOLS");
        let r = parse(Some(&guid_form), None, &d, DEFAULT_TENANT_ID).expect("guid form");
        assert!(r.scopes.contains("mcp:tools"), "canonical case");

        let r = parse(Some("user.read"), None, &d, DEFAULT_TENANT_ID).expect("bare");
        assert!(r.is_graph() && r.scopes.contains("User.Read"));

        let r = parse(Some("openid profile"), None, &d, DEFAULT_TENANT_ID).expect("oidc");
        assert!(r.is_graph() && !r.explicit_resource);

        let dflt = format!("api://{DEFAULT_API_APP_ID}/.default");
        let r = parse(
            Some(&dflt),
            Some(&format!("api://{DEFAULT_API_APP_ID}")),
            &d,
            DEFAULT_TENANT_ID,
        )
        .expect("default with matching resource");
        assert!(r.default && r.scopes.is_empty());
    }

    #[test]
    fn entra_scope_errors_carry_entra_codes() {
        let api = format!("api://{DEFAULT_API_APP_ID}");
        assert_eq!(code("", None), 900144);
        assert_eq!(code(&format!("{api}/mcp:tools User.Read"), None), 28000);
        assert_eq!(
            code(&format!("{api}/.default {api}/mcp:tools"), None),
            70011
        );
        assert_eq!(
            code(
                &format!("{api}/mcp:tools"),
                Some("http://127.0.0.1:8080/mcp")
            ),
            9010010
        );
        assert_eq!(code("openid", Some(&api)), 9010010);
        assert_eq!(code(&format!("{api}/nope"), None), 650053);
        assert_eq!(code("Nope.Read", None), 650053);
        assert_eq!(code("api://unknown-app/x", None), 500011);
    }

    #[test]
    fn an_api_named_by_its_url_takes_that_url_as_resource() {
        let d = dir();
        let scope = format!("{URL_API_IDENTIFIER}/mcp:tools offline_access");
        // What an MCP client sends when the identifier is the server's URL:
        // scope and resource name the same API (with or without a slash).
        for resource in [
            URL_API_IDENTIFIER.to_owned(),
            format!("{URL_API_IDENTIFIER}/"),
        ] {
            let r = parse(Some(&scope), Some(&resource), &d, DEFAULT_TENANT_ID)
                .expect("resource is the identifier URI");
            assert_eq!(r.resource, URL_API_APP_ID);
            assert!(r.scopes.contains("mcp:tools"));
        }
        // The same URL next to the api:// API's scope, or another URL next
        // to this API's: AADSTS9010010, as Entra answers.
        let api = format!("api://{DEFAULT_API_APP_ID}/mcp:tools");
        assert_eq!(code(&api, Some(URL_API_IDENTIFIER)), 9010010);
        assert_eq!(
            code(&scope, Some("https://mcp.mcpgate.test/other")),
            9010010
        );
        assert_eq!(
            code("https://mcp.mcpgate.test/nope/mcp:tools", None),
            500011
        );
    }
}

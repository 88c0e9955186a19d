//! Which scopes to ask for, and whether to name the resource (RFC 8707):
//! the MCP specification's scope selection, with Entra ID's rules beside
//! it.

use crate::challenge::BearerChallenge;
use crate::discovery::{AuthServer, ProtectedResource};

/// The scopes for a sign-in: the challenge's, else the resource metadata's
/// `scopes_supported`; then the configured extras; on a step-up, the union
/// with what was held, so that the new token can still do what the old one
/// could.
pub fn select(
    challenge: Option<&BearerChallenge>,
    prm: Option<&ProtectedResource>,
    extra: &[String],
    held_on_step_up: Option<&[String]>,
) -> Vec<String> {
    let named = challenge.map(BearerChallenge::scopes).unwrap_or_default();
    let mut scopes = if named.is_empty() {
        prm.map(|p| p.scopes_supported.clone()).unwrap_or_default()
    } else {
        named
    };
    scopes = union(&scopes, extra);
    if let Some(held) = held_on_step_up {
        scopes = union(held, &scopes);
    }
    scopes
}

/// Entra's rules on top: it issues refresh tokens only for
/// `offline_access`, which a user sign-in adds (client credentials has no
/// refresh token, and Entra refuses the scope there). Elsewhere the client
/// asks for exactly what the server named.
pub fn with_entra_rules(mut scopes: Vec<String>, meta: &AuthServer, user: bool) -> Vec<String> {
    if meta.is_entra_v2()
        && user
        && !scopes.is_empty()
        && !scopes.iter().any(|s| s == "offline_access")
    {
        scopes.push("offline_access".into());
    }
    scopes
}

/// The RFC 8707 `resource` to send: the MCP server's identifier. Entra v2
/// accepts it only when it names the API the scopes are for, that is when
/// the server's URL is the API's Application ID URI (as Microsoft's guide
/// for MCP servers registers it); any other value next to v2 scopes is
/// AADSTS9010010. There it is sent exactly when every API scope is
/// `<resource>/<name>`, and never otherwise.
pub fn resource_indicator(
    prm: Option<&ProtectedResource>,
    meta: &AuthServer,
    scopes: &[String],
) -> Option<String> {
    let resource = &prm?.resource;
    if !meta.is_entra_v2() || names_every_api_scope(resource, scopes) {
        Some(resource.clone())
    } else {
        None
    }
}

/// Whether `scopes` name at least one API scope and every one of them
/// belongs to `identifier` (compared as Entra does: case-insensitive, with
/// or without a trailing slash). The OpenID scopes belong to no API.
pub fn names_every_api_scope(identifier: &str, scopes: &[String]) -> bool {
    const OPENID: [&str; 4] = ["openid", "profile", "email", "offline_access"];
    let identifier = identifier.trim_end_matches('/');
    let mut api = scopes
        .iter()
        .filter(|s| !OPENID.iter().any(|o| o.eq_ignore_ascii_case(s)))
        .peekable();
    api.peek().is_some()
        && api.all(|s| {
            s.rsplit_once('/').is_some_and(|(prefix, name)| {
                !name.is_empty() && prefix.eq_ignore_ascii_case(identifier)
            })
        })
}

fn union(a: &[String], b: &[String]) -> Vec<String> {
    let mut out = a.to_vec();
    for s in b {
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(entra: bool) -> AuthServer {
        let mut doc = serde_json::json!({ "issuer": "https://login.example/t/v2.0" });
        if entra {
            doc["cloud_instance_name"] = "microsoftonline.com".into();
        }
        serde_json::from_value(doc).expect("metadata")
    }

    fn prm(scopes: &[&str]) -> ProtectedResource {
        serde_json::from_value(serde_json::json!({
            "resource": "https://s.example/mcp",
            "scopes_supported": scopes,
        }))
        .expect("prm")
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_challenge_wins_then_the_metadata() {
        let c = BearerChallenge {
            scope: Some("a b".into()),
            ..Default::default()
        };
        let p = prm(&["x"]);
        assert_eq!(select(Some(&c), Some(&p), &[], None), strings(&["a", "b"]));
        assert_eq!(select(None, Some(&p), &[], None), strings(&["x"]));
        assert!(select(None, None, &[], None).is_empty());
        assert_eq!(
            select(None, Some(&p), &strings(&["y", "x"]), None),
            strings(&["x", "y"])
        );
    }

    #[test]
    fn a_step_up_keeps_what_was_held() {
        let c = BearerChallenge {
            scope: Some("write".into()),
            ..Default::default()
        };
        assert_eq!(
            select(Some(&c), None, &[], Some(&strings(&["read"]))),
            strings(&["read", "write"])
        );
    }

    #[test]
    fn entra_gets_offline_access_and_no_resource() {
        let p = prm(&["api://x/mcp"]);
        let s = with_entra_rules(strings(&["api://x/mcp"]), &meta(true), true);
        assert_eq!(s, strings(&["api://x/mcp", "offline_access"]));
        assert_eq!(
            with_entra_rules(strings(&["api://x/.default"]), &meta(true), false),
            strings(&["api://x/.default"]),
            "not for client credentials"
        );
        assert_eq!(
            with_entra_rules(strings(&["a"]), &meta(false), true),
            strings(&["a"])
        );
        let api = strings(&["api://x/mcp", "offline_access"]);
        assert_eq!(resource_indicator(Some(&p), &meta(true), &api), None);
        assert_eq!(
            resource_indicator(Some(&p), &meta(false), &api).as_deref(),
            Some("https://s.example/mcp")
        );
    }

    #[test]
    fn entra_gets_the_resource_when_the_server_url_is_the_api_identifier() {
        let p = prm(&["https://s.example/mcp/mcp:tools"]);
        let own = strings(&["https://s.example/mcp/mcp:tools", "offline_access"]);
        assert_eq!(
            resource_indicator(Some(&p), &meta(true), &own).as_deref(),
            Some("https://s.example/mcp")
        );
        // Entra compares identifier URIs without regard to case or a
        // trailing slash.
        let upper = strings(&["HTTPS://S.example/mcp/.default"]);
        assert!(resource_indicator(Some(&p), &meta(true), &upper).is_some());
        // One scope of another API, or none at all: no resource.
        let mixed = strings(&["https://s.example/mcp/mcp:tools", "User.Read"]);
        assert_eq!(resource_indicator(Some(&p), &meta(true), &mixed), None);
        let other = strings(&["https://s.example/mcp2/x"]);
        assert_eq!(resource_indicator(Some(&p), &meta(true), &other), None);
        assert_eq!(
            resource_indicator(Some(&p), &meta(true), &strings(&["openid"])),
            None
        );
        assert_eq!(
            resource_indicator(Some(&p), &meta(true), &strings(&["https://s.example/mcp/"])),
            None,
            "a scope needs a name"
        );
    }
}

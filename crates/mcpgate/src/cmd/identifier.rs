//! What `check` says of `[auth.entra] identifier_uri`: whether Entra will
//! register it, and whether MCP clients that send RFC 8707 `resource` (the
//! TypeScript SDK and mcp-remote always do) will be let through.
//!
//! Entra registers an `https` Application ID URI only on a domain the
//! tenant has verified (or its `*.onmicrosoft.com` one); no API can list a
//! tenant's domains offline, so this flags the hosts no tenant can ever
//! verify and notes the rule for the rest.

use url::{Host, Url};

use crate::config::RawEntra;

/// How sure the finding is that Entra refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Entra will refuse, or clients will be refused.
    Warn,
    /// Worth knowing; may be fine.
    Note,
}

/// One thing to say, with its fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifierFinding {
    /// Warn or note.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub fix: String,
}

/// Reserved names (RFC 2606, RFC 6761, RFC 6762) and shared hosting
/// domains a tenant cannot add as its own.
const UNVERIFIABLE_SUFFIXES: [&str; 18] = [
    "localhost",
    "local",
    "test",
    "example",
    "invalid",
    "internal",
    "azurewebsites.net",
    "azurecontainerapps.io",
    "azure-api.net",
    "cloudapp.azure.com",
    "devtunnels.ms",
    "ngrok.io",
    "ngrok.app",
    "ngrok-free.app",
    "trycloudflare.com",
    "herokuapp.com",
    "vercel.app",
    "fly.dev",
];

/// The findings for `entra`, given the server's MCP URL when known.
pub fn findings(entra: &RawEntra, mcp_url: Option<&str>) -> Vec<IdentifierFinding> {
    let uri = entra.identifier_uri();
    let mut out = Vec::new();
    let Ok(parsed) = Url::parse(&uri) else {
        out.push(IdentifierFinding {
            severity: Severity::Warn,
            message: format!("identifier URI {uri:?} is not an absolute URI"),
            fix: "set [auth.entra] identifier_uri to the API's Application ID URI (api://<app-id>, or the server's https MCP URL)".into(),
        });
        return out;
    };
    match parsed.scheme() {
        "https" => {
            if let Some(why) = parsed.host().and_then(|h| unverifiable(&h)) {
                out.push(IdentifierFinding {
                    severity: Severity::Warn,
                    message: format!(
                        "Entra will refuse to register identifier URI {uri}: {why}, and an https Application ID URI must be on a domain verified in the tenant"
                    ),
                    fix: "serve the MCP endpoint on a domain of your own, verify it (Entra admin center, Domain names), and use that URL; or keep api://<app-id>".into(),
                });
            } else if let Some(host) = parsed.host_str()
                && !host.to_ascii_lowercase().ends_with(".onmicrosoft.com")
            {
                out.push(IdentifierFinding {
                    severity: Severity::Note,
                    message: format!(
                        "Entra registers identifier URI {uri} only if {host} (or a domain above it) is verified in the tenant"
                    ),
                    fix: "check Domain names in the Entra admin center".into(),
                });
            }
        }
        "api" | "urn" | "ms-appx" => {}
        other => out.push(IdentifierFinding {
            severity: Severity::Warn,
            message: format!(
                "Entra will refuse to register identifier URI {uri}: the {other}: scheme is not one it takes"
            ),
            fix: "use api://<app-id>, or the server's https MCP URL".into(),
        }),
    }
    if let Some(mcp) = mcp_url {
        let same = uri.eq_ignore_ascii_case(mcp.trim_end_matches('/'));
        if !same {
            out.push(IdentifierFinding {
                severity: Severity::Note,
                message: format!(
                    "the identifier URI {uri} is not this server's MCP URL {mcp}: MCP clients that send it as RFC 8707 resource (the TypeScript SDK, mcp-remote) are refused by Entra with AADSTS9010010; mcpgate's own client and broker leave it out"
                ),
                fix: format!(
                    "to let every MCP client in directly, add {mcp} as an Application ID URI (Expose an API) and set [auth.entra] identifier_uri to it"
                ),
            });
        }
    }
    out
}

/// Why no tenant can verify `host`, if none can.
fn unverifiable(host: &Host<&str>) -> Option<String> {
    let name = match host {
        Host::Ipv4(_) | Host::Ipv6(_) => return Some("its host is an IP address".into()),
        Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
    };
    if !name.contains('.') && name != "localhost" {
        return Some(format!("{name} is not a public domain name"));
    }
    UNVERIFIABLE_SUFFIXES
        .iter()
        .find(|s| name == **s || name.ends_with(&format!(".{s}")))
        .map(|s| format!("{name} is under {s}, which no tenant can verify"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entra(identifier_uri: Option<&str>) -> RawEntra {
        RawEntra {
            tenant_id: "t".into(),
            app_id: "a".into(),
            scope: "mcp:tools".into(),
            identifier_uri: identifier_uri.map(str::to_owned),
            authority: "https://login.microsoftonline.com".into(),
            external_id: None,
        }
    }

    fn warned(f: &[IdentifierFinding]) -> bool {
        f.iter().any(|f| f.severity == Severity::Warn)
    }

    #[test]
    fn hosts_no_tenant_can_verify_are_warned_of() {
        for uri in [
            "https://127.0.0.1:8080/mcp",
            "https://[::1]/mcp",
            "https://localhost/mcp",
            "https://mcp.localhost/mcp",
            "https://mcp.contoso.test/mcp",
            "https://myapp.azurewebsites.net/mcp",
            "https://abc.ngrok-free.app/mcp",
            "https://intranet/mcp",
            "http://mcp.contoso.com/mcp",
        ] {
            assert!(warned(&findings(&entra(Some(uri)), None)), "{uri}");
        }
    }

    #[test]
    fn an_own_domain_gets_a_note_and_api_uris_nothing() {
        let f = findings(&entra(Some("https://mcp.contoso.com/mcp")), None);
        assert!(!warned(&f));
        assert_eq!(f.len(), 1);
        assert!(f[0].message.contains("verified"), "{f:?}");
        assert!(findings(&entra(Some("https://contoso.onmicrosoft.com/mcp")), None).is_empty());
        assert!(findings(&entra(None), None).is_empty());
    }

    #[test]
    fn an_identifier_that_is_not_the_mcp_url_names_aadsts9010010() {
        let f = findings(&entra(None), Some("https://mcp.contoso.com/mcp"));
        assert_eq!(f.len(), 1);
        assert!(f[0].message.contains("AADSTS9010010"));
        let same = findings(
            &entra(Some("https://mcp.contoso.com/mcp/")),
            Some("https://mcp.contoso.com/mcp"),
        );
        assert!(
            same.iter().all(|f| !f.message.contains("9010010")),
            "{same:?}"
        );
    }
}

//! What `explain` says of the Entra failures MCP deployments hit: an
//! AADSTS code pasted from an error, and the issuer form of a token. One
//! sentence each, and the fix. The codes are Microsoft's
//! (<https://learn.microsoft.com/entra/identity-platform/reference-error-codes>).

/// One known AADSTS code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// The number after `AADSTS`.
    pub code: u32,
    /// What happened, in one sentence.
    pub what: &'static str,
    /// What to do.
    pub fix: &'static str,
}

const KNOWN: [Known; 12] = [
    Known {
        code: 50076,
        what: "Conditional Access requires multi-factor authentication for this user and resource, and the sign-in (or the token given to On-Behalf-Of) did not include it.",
        fix: "sign in again interactively with the `claims` value from the error: mcpgate relays it to MCP clients as WWW-Authenticate error=\"insufficient_claims\", and its client, bridge and stdio server retry once with it; other clients must pass claims= on /authorize",
    },
    Known {
        code: 50079,
        what: "the user must register for multi-factor authentication before this resource can be used.",
        fix: "sign in interactively once and complete the MFA registration, then retry",
    },
    Known {
        code: 53003,
        what: "a Conditional Access policy blocked the sign-in (location, device or risk), and no second factor can satisfy it.",
        fix: "an administrator must look up the failing policy in the sign-in logs (by the error's correlation id); retrying will not help",
    },
    Known {
        code: 7000114,
        what: "On-Behalf-Of was asked with an app-only token: only a user's (delegated) token can be exchanged.",
        fix: "call with a user's token; for a daemon, give the upstream its own app-only credential (client credentials) instead of identity = \"obo\"",
    },
    Known {
        code: 500011,
        what: "no API in the tenant has the identifier the request named (the Application ID URI in the scope or resource).",
        fix: "set the API's Application ID URI (Expose an API) to the value asked for, or ask for the one it has; with [auth.entra] identifier_uri mcpgate names scopes by it",
    },
    Known {
        code: 9010010,
        what: "the RFC 8707 resource parameter does not name the API the scopes are for: the client sent the MCP server's URL, but the API's Application ID URI is something else (typically api://<app-id>).",
        fix: "add the server's MCP URL as the API's Application ID URI and set [auth.entra] identifier_uri to it (Microsoft's guide for MCP servers); mcpgate's own client sends resource only when it is that URI",
    },
    Known {
        code: 28000,
        what: "the scope names more than one resource (for example the MCP API and Microsoft Graph), which one token cannot carry.",
        fix: "ask for one resource's scopes per token; OpenID scopes (openid, profile, offline_access) may go with any",
    },
    Known {
        code: 65001,
        what: "the user or an administrator has not consented to the client's use of the API.",
        fix: "sign in interactively to consent, or have an administrator grant consent (or pre-authorize the client on the API)",
    },
    Known {
        code: 700016,
        what: "the client id is not registered in this tenant.",
        fix: "use the Application (client) ID of a registration in this tenant; Entra has no dynamic client registration, so MCP hosts need a pre-registered id, or sign in through mcpgate's broker",
    },
    Known {
        code: 50011,
        what: "the redirect URI is not registered for the client.",
        fix: "register it (Mobile and desktop: http://localhost matches any port; Web: the broker's https://<host>/auth/callback)",
    },
    Known {
        code: 9002313,
        what: "the request is malformed (often a scope or resource the v2.0 endpoint cannot read).",
        fix: "check the scope: <Application ID URI>/<scope>, one resource per request",
    },
    Known {
        code: 7000215,
        what: "the client secret is wrong: often its ID was given instead of its value, or it expired.",
        fix: "create a new secret and give its value (not its ID) to mcpgate's client_secret_file",
    },
];

/// The known codes an error text names (`AADSTS50076: …`, or the bare
/// number), in order, without repeats.
pub fn codes_in(text: &str) -> Vec<Known> {
    let mut out: Vec<Known> = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("AADSTS") {
        rest = &rest[i + "AADSTS".len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Some(k) = digits.parse().ok().and_then(known)
            && !out.contains(&k)
        {
            out.push(k);
        }
    }
    if out.is_empty()
        && let Some(k) = text.trim().parse().ok().and_then(known)
    {
        out.push(k);
    }
    out
}

/// The code's entry, if it is one of the known ones.
pub fn known(code: u32) -> Option<Known> {
    KNOWN.iter().copied().find(|k| k.code == code)
}

/// Which Entra issuer form `iss` is, in one sentence, with what trusts it.
pub fn issuer_form(iss: &str) -> Option<String> {
    let url = url::Url::parse(iss).ok()?;
    let host = url.host_str()?.to_ascii_lowercase();
    let tenant = url.path_segments()?.next().unwrap_or_default().to_owned();
    let v2 = iss.trim_end_matches('/').ends_with("/v2.0");
    if host == "sts.windows.net" {
        return Some(format!(
            "Entra ID v1.0 issuer of tenant {tenant}: the API's manifest accepts v1.0 tokens; the [auth.entra] shorthand trusts this form, or set requestedAccessTokenVersion to 2"
        ));
    }
    if host.ends_with(".ciamlogin.com") {
        return Some(format!(
            "Microsoft Entra External ID (CIAM) issuer of tenant {tenant}: trust it with [auth.entra] authority = \"https://<name>.ciamlogin.com\" (or external_id = true for a custom domain)"
        ));
    }
    if host.ends_with(".b2clogin.com") {
        return Some(
            "Azure AD B2C issuer (user flows): not an Entra ID tenant; trust it with [auth] issuers and its own audience".into(),
        );
    }
    let entra_hosts = [
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.partner.microsoftonline.cn",
    ];
    if entra_hosts.contains(&host.as_str()) && v2 {
        return Some(format!(
            "Entra ID v2.0 issuer of tenant {tenant}: trusted by [auth.entra] tenant_id = \"{tenant}\" (or \"organizations\" for a multi-tenant API)"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_the_issue_names_is_known_and_found_in_an_error_text() {
        for code in [50076, 53003, 7000114, 500011, 9010010] {
            let k = known(code).expect("known");
            assert!(k.what.ends_with('.') && !k.fix.is_empty(), "{code}");
        }
        let text = "invalid_grant: AADSTS50076: Due to a configuration change… Trace ID: x AADSTS50076 again, then AADSTS53003.";
        let found: Vec<u32> = codes_in(text).iter().map(|k| k.code).collect();
        assert_eq!(found, [50076, 53003]);
        assert_eq!(codes_in("7000114").len(), 1, "a bare number");
        assert!(codes_in("AADSTS1 and AADSTS").is_empty());
    }

    #[test]
    fn each_issuer_form_is_named() {
        let tid = "7c3e9f2a-0d1b-4e5a-9c8b-2f6a1d4e8b30";
        let form = |iss: String| issuer_form(&iss).expect("named");
        assert!(form(format!("https://sts.windows.net/{tid}/")).contains("v1.0"));
        assert!(form(format!("https://login.microsoftonline.com/{tid}/v2.0")).contains("v2.0"));
        assert!(form(format!("https://{tid}.ciamlogin.com/{tid}/v2.0")).contains("External ID"));
        assert!(
            form("https://contoso.b2clogin.com/tfp/x/b2c_1_signin/v2.0/".into()).contains("B2C")
        );
        assert_eq!(issuer_form("https://accounts.google.com"), None);
    }
}

//! Which issuers are trusted, including Entra's two issuer forms and its
//! multi-tenant `{tenantid}` template.

use url::Url;

use crate::error::PolicyError;

/// The placeholder Entra's multi-tenant discovery documents use.
pub const TENANT_TEMPLATE: &str = "{tenantid}";

/// Entra's authority host for the public cloud.
pub const ENTRA_PUBLIC_AUTHORITY: &str = "https://login.microsoftonline.com";

/// A trusted issuer: an exact string, or a template whose `{tenantid}` must
/// equal the token's `tid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerPattern {
    raw: String,
}

/// How a token's `iss` relates to a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerMatch {
    /// The issuer is this one.
    Matches,
    /// The template fits, but with another tenant than the token's `tid`.
    TenantMismatch,
    /// Not this issuer.
    No,
}

impl IssuerPattern {
    /// Parses an issuer, refusing anything but https (http on loopback only,
    /// for development).
    pub fn parse(raw: &str) -> Result<Self, PolicyError> {
        let probe = raw.replace(TENANT_TEMPLATE, "tenant");
        let url = Url::parse(&probe).map_err(|_| PolicyError::InsecureIssuer(raw.to_owned()))?;
        let secure = match url.scheme() {
            "https" => true,
            "http" => is_loopback_host(&url),
            _ => false,
        };
        if !secure {
            return Err(PolicyError::InsecureIssuer(raw.to_owned()));
        }
        Ok(Self {
            raw: raw.to_owned(),
        })
    }

    /// The issuer as configured.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Whether this is a multi-tenant template.
    pub fn is_template(&self) -> bool {
        self.raw.contains(TENANT_TEMPLATE)
    }

    /// Matches a token's `iss` (and `tid`, for templates) exactly.
    pub fn matches(&self, iss: &str, tid: Option<&str>) -> IssuerMatch {
        let Some((before, after)) = self.raw.split_once(TENANT_TEMPLATE) else {
            return if self.raw == iss {
                IssuerMatch::Matches
            } else {
                IssuerMatch::No
            };
        };
        let Some(middle) = iss
            .strip_prefix(before)
            .and_then(|rest| rest.strip_suffix(after))
        else {
            return IssuerMatch::No;
        };
        if middle.is_empty() || middle.contains('/') {
            return IssuerMatch::No;
        }
        match tid {
            Some(tid) if tid == middle => IssuerMatch::Matches,
            _ => IssuerMatch::TenantMismatch,
        }
    }

    /// Where its OpenID configuration lives. For a template, the
    /// `organizations` endpoint, whose document names the template itself.
    pub fn discovery_url(&self) -> String {
        let base = self.raw.replace(TENANT_TEMPLATE, "organizations");
        format!(
            "{}/.well-known/openid-configuration",
            base.trim_end_matches('/')
        )
    }
}

/// Both issuer forms of an Entra tenant (or of the `{tenantid}` template for
/// a multi-tenant app): v2.0 tokens carry the first, v1.0 tokens the second.
pub fn entra_issuers(authority: &str, tenant: &str) -> [String; 2] {
    let authority = authority.trim_end_matches('/');
    [
        format!("{authority}/{tenant}/v2.0"),
        format!("https://sts.windows.net/{tenant}/"),
    ]
}

/// The host suffix of Microsoft Entra External ID (CIAM) authorities.
pub const CIAM_HOST_SUFFIX: &str = ".ciamlogin.com";

/// Whether `authority` is an External ID (CIAM) one,
/// `https://<name>.ciamlogin.com`.
pub fn is_ciam_authority(authority: &str) -> bool {
    Url::parse(authority)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .is_some_and(|host| host.ends_with(CIAM_HOST_SUFFIX))
}

/// The issuer an External ID tenant's tokens carry, whichever of its
/// domains signed the user in: `https://<tenant-id>.ciamlogin.com/<tenant-id>/v2.0`.
/// Its discovery document is served there too. External ID issues v2.0
/// tokens only, so there is no `sts.windows.net` form.
pub fn ciam_issuer(tenant_id: &str) -> String {
    format!("https://{tenant_id}{CIAM_HOST_SUFFIX}/{tenant_id}/v2.0")
}

pub(crate) fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    #[test]
    fn external_id_authorities_and_their_issuer() {
        assert!(is_ciam_authority("https://contoso.ciamlogin.com"));
        assert!(is_ciam_authority("https://Contoso.CIAMLOGIN.com/"));
        assert!(!is_ciam_authority("https://login.microsoftonline.com"));
        assert!(!is_ciam_authority("https://ciamlogin.com.evil.example"));
        assert_eq!(
            ciam_issuer(TID),
            format!("https://{TID}.ciamlogin.com/{TID}/v2.0")
        );
        let p = IssuerPattern::parse(&ciam_issuer(TID)).expect("valid");
        assert_eq!(
            p.matches(&ciam_issuer(TID), Some(TID)),
            IssuerMatch::Matches
        );
    }

    #[test]
    fn exact_issuers_match_to_the_letter() {
        let p = IssuerPattern::parse("https://login.microsoftonline.com/t/v2.0").expect("valid");
        assert_eq!(
            p.matches("https://login.microsoftonline.com/t/v2.0", None),
            IssuerMatch::Matches
        );
        assert_eq!(
            p.matches("https://login.microsoftonline.com/t/v2.0/", None),
            IssuerMatch::No
        );
        assert_eq!(
            p.matches("https://LOGIN.microsoftonline.com/t/v2.0", None),
            IssuerMatch::No
        );
    }

    #[test]
    fn template_must_equal_tid() {
        let [v2, v1] = entra_issuers(ENTRA_PUBLIC_AUTHORITY, TENANT_TEMPLATE);
        let v2 = IssuerPattern::parse(&v2).expect("valid");
        let v1 = IssuerPattern::parse(&v1).expect("valid");
        let iss2 = format!("https://login.microsoftonline.com/{TID}/v2.0");
        let iss1 = format!("https://sts.windows.net/{TID}/");
        assert_eq!(v2.matches(&iss2, Some(TID)), IssuerMatch::Matches);
        assert_eq!(v1.matches(&iss1, Some(TID)), IssuerMatch::Matches);
        assert_eq!(
            v2.matches(&iss2, Some("other")),
            IssuerMatch::TenantMismatch
        );
        assert_eq!(v2.matches(&iss2, None), IssuerMatch::TenantMismatch);
        assert_eq!(v2.matches(&iss1, Some(TID)), IssuerMatch::No);
        assert_eq!(
            v2.matches("https://login.microsoftonline.com/a/b/v2.0", Some("a/b")),
            IssuerMatch::No
        );
    }

    #[test]
    fn http_issuers_only_on_loopback() {
        assert!(IssuerPattern::parse("http://127.0.0.1:9000/t/v2.0").is_ok());
        assert!(IssuerPattern::parse("http://localhost/t").is_ok());
        assert!(IssuerPattern::parse("http://idp.example.com/t").is_err());
        assert!(IssuerPattern::parse("not a url").is_err());
    }

    #[test]
    fn discovery_url_of_template_uses_organizations() {
        let p = IssuerPattern::parse("https://login.microsoftonline.com/{tenantid}/v2.0")
            .expect("valid");
        assert_eq!(
            p.discovery_url(),
            "https://login.microsoftonline.com/organizations/v2.0/.well-known/openid-configuration"
        );
    }
}

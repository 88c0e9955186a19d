//! Request parameters (query string or form body), refusing duplicates as
//! OAuth requires (RFC 6749 §3.1: "Request and response parameters MUST
//! NOT be included more than once"), and values longer than the IdP keeps:
//! what an authorize request carries is held until the sign-in ends, so
//! each value is bounded (Entra bounds them too, with AADSTS90015).

use std::collections::BTreeMap;

use crate::error::AadError;

/// The longest query string the IdP reads (Entra answers longer ones
/// with AADSTS90015).
pub const MAX_QUERY: usize = 8 * 1024;

/// The longest value `name` may have.
pub fn max_len(name: &str) -> usize {
    match name {
        "code_challenge"
        | "code_challenge_method"
        | "response_type"
        | "response_mode"
        | "prompt"
        | "grant_type"
        | "action"
        | "consent"
        | "user_code"
        | "pending"
        | "csrf"
        | "otp"
        | "flow"
        | "client_info"
        | "requested_token_use" => 128,
        "client_id" | "login_hint" | "username" | "password" | "domain_hint" => 256,
        "nonce" => 512,
        "redirect_uri" | "post_logout_redirect_uri" | "resource" => 1024,
        "state" | "scope" => 2048,
        "claims" => crate::conditional_access::MAX_CLAIMS,
        "code" | "refresh_token" | "device_code" | "client_secret" => 4096,
        "assertion" | "client_assertion" => 16 * 1024,
        _ => 2048,
    }
}

/// Parameters by name, each present once.
#[derive(Debug, Default, Clone)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Collects pairs, refusing a repeated name.
    pub fn new(pairs: Vec<(String, String)>) -> Result<Self, AadError> {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            if k.len() > 128 {
                return Err(AadError::too_long("parameter name", 128));
            }
            let max = max_len(&k);
            if v.len() > max {
                return Err(AadError::too_long(&format!("parameter '{k}'"), max));
            }
            if map.contains_key(&k) {
                return Err(AadError::new(
                    "invalid_request",
                    9000411,
                    format!(
                        "The request is not properly formatted. The parameter '{k}' is duplicated."
                    ),
                ));
            }
            map.insert(k, v);
        }
        Ok(Self(map))
    }

    /// A parameter, `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A required parameter.
    pub fn require(&self, name: &str) -> Result<&str, AadError> {
        self.get(name).ok_or_else(|| AadError::missing(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_missing_are_refused() {
        let p = Params::new(vec![("a".into(), "1".into()), ("b".into(), String::new())])
            .expect("distinct");
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), None);
        assert_eq!(p.require("c").expect_err("missing").code, 900144);
        let e = Params::new(vec![("a".into(), "1".into()), ("a".into(), "2".into())])
            .expect_err("duplicate");
        assert_eq!(e.code, 9000411);
        let e = Params::new(vec![("state".into(), "s".repeat(30 * 1024))]).expect_err("long");
        assert_eq!(e.code, 90015);
        assert!(!e.message.contains("sss"), "the value is not echoed");
    }
}

//! Request parameters (query string or form body), refusing duplicates as
//! OAuth requires (RFC 6749 §3.1: "Request and response parameters MUST
//! NOT be included more than once").

use std::collections::BTreeMap;

use crate::error::AadError;

/// Parameters by name, each present once.
#[derive(Debug, Default, Clone)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Collects pairs, refusing a repeated name.
    pub fn new(pairs: Vec<(String, String)>) -> Result<Self, AadError> {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
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
    }
}

//! Request parameters: a query string or a form body read into a map,
//! refusing what RFC 6749 §3.1 forbids (a parameter sent twice) and bodies
//! past a bound, so that no handler reads unbounded input.

use std::collections::HashMap;

use axum::body::Body;

/// The largest form body read at `/token`, `/revoke` and the consent form.
pub const MAX_FORM_BODY: usize = 16 * 1024;

/// Why parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// A parameter appears twice.
    #[error("the parameter {0} is repeated")]
    Repeated(String),
    /// The body is too large or could not be read.
    #[error("the request body is larger than {MAX_FORM_BODY} bytes or unreadable")]
    Body,
    /// A required parameter is missing or empty.
    #[error("the parameter {0} is required")]
    Missing(&'static str),
}

/// Parameters by name, each present once.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, String>);

impl Params {
    /// Parses `application/x-www-form-urlencoded` bytes.
    pub fn parse(raw: &[u8]) -> Result<Self, ParamError> {
        let mut map = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(raw) {
            if map.insert(k.clone().into_owned(), v.into_owned()).is_some() {
                let shown: String = k.chars().take(40).collect();
                return Err(ParamError::Repeated(shown));
            }
        }
        Ok(Self(map))
    }

    /// Reads and parses a form body, at most [`MAX_FORM_BODY`] bytes.
    pub async fn from_body(body: Body) -> Result<Self, ParamError> {
        let bytes = axum::body::to_bytes(body, MAX_FORM_BODY)
            .await
            .map_err(|_| ParamError::Body)?;
        Self::parse(&bytes)
    }

    /// A parameter; empty counts as absent (RFC 6749 §3.1).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A required parameter.
    pub fn require(&self, name: &'static str) -> Result<&str, ParamError> {
        self.get(name).ok_or(ParamError::Missing(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused() {
        assert_eq!(
            Params::parse(b"a=1&b=2&a=3").map(|_| ()),
            Err(ParamError::Repeated("a".into()))
        );
        let p = Params::parse(b"a=1&b=&c=x%20y").expect("parses");
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), None);
        assert_eq!(p.get("c"), Some("x y"));
        assert_eq!(p.require("b"), Err(ParamError::Missing("b")));
    }
}

//! Taking the bearer token from a request, the one way RFC 6750 and the MCP
//! authorization spec allow it here: one `Authorization: Bearer` header.
//! The scheme name is case-insensitive (RFC 9110 §11.1); a header with
//! another scheme carries no bearer credentials, so it is answered like no
//! header at all (RFC 6750 §3.1), and the client starts its sign-in.

use http::HeaderMap;
use http::header::AUTHORIZATION;

/// Why no token could be taken from a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    /// No `Authorization` header: the client has not authenticated yet.
    Missing,
    /// A token in the URL (RFC 6750 §2.3): refused, URLs end up in logs.
    InQuery,
    /// More than one `Authorization` header.
    Duplicated,
    /// A scheme other than `Bearer` (Basic, Digest, DPoP…): no bearer
    /// credentials, answered as [`BearerError::Missing`] is.
    OtherScheme,
    /// `Bearer` with nothing, or with characters RFC 6750's b64token forbids.
    MalformedToken,
}

impl BearerError {
    /// A short code for metrics and logs.
    pub fn code(self) -> &'static str {
        match self {
            BearerError::Missing => "missing_token",
            BearerError::InQuery => "token_in_query",
            BearerError::Duplicated => "duplicated_header",
            BearerError::OtherScheme => "other_scheme",
            BearerError::MalformedToken => "malformed_bearer",
        }
    }

    /// The sentence that goes into `error_description`.
    pub fn describe(self) -> &'static str {
        match self {
            BearerError::Missing => "no access token",
            BearerError::InQuery => {
                "access tokens are accepted only in the Authorization header, never in the URL"
            }
            BearerError::Duplicated => "more than one Authorization header",
            BearerError::OtherScheme => "the Authorization header carries no Bearer credentials",
            BearerError::MalformedToken => {
                "the bearer token is empty or has characters a token cannot have"
            }
        }
    }
}

/// The token of a request, if it carries exactly one well-formed
/// `Authorization: Bearer <token>` header and no token in its query.
pub fn extract<'a>(headers: &'a HeaderMap, query: Option<&str>) -> Result<&'a str, BearerError> {
    if query.is_some_and(has_access_token_param) {
        return Err(BearerError::InQuery);
    }
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(BearerError::Missing)?;
    if values.next().is_some() {
        return Err(BearerError::Duplicated);
    }
    // Bytes, not `to_str`: the token's own check below admits only ASCII,
    // so the value is scanned once, not twice.
    let value = value.as_bytes();
    let (scheme, token) = match value.iter().position(|b| *b == b' ') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"Bearer") {
        return Err(BearerError::OtherScheme);
    }
    let start = token.iter().position(|b| *b != b' ').unwrap_or(token.len());
    let token = &token[start..];
    if is_b64token(token) {
        // Every byte is ASCII: always UTF-8.
        std::str::from_utf8(token).map_err(|_| BearerError::MalformedToken)
    } else {
        Err(BearerError::MalformedToken)
    }
}

fn has_access_token_param(query: &str) -> bool {
    query
        .split('&')
        .any(|pair| pair.split('=').next() == Some("access_token"))
}

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &[u8]) -> bool {
    let end = token.iter().rposition(|b| *b != b'=').map_or(0, |i| i + 1);
    let body = &token[..end];
    // Every request scans its whole token (a kilobyte or two): branch-free
    // over chunks, so that the compiler can check many bytes at once.
    !body.is_empty()
        && body
            .chunks(64)
            .all(|chunk| chunk.iter().fold(true, |ok, &c| ok & b64token_byte(c)))
}

fn b64token_byte(c: u8) -> bool {
    let letter = (c | 0x20).wrapping_sub(b'a') < 26;
    let digit = c.wrapping_sub(b'0') < 10;
    letter
        | digit
        | (c == b'-')
        | (c == b'.')
        | (c == b'_')
        | (c == b'~')
        | (c == b'+')
        | (c == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn the_byte_rule_is_rfc_6750s() {
        for c in 0..=255u8 {
            let expected =
                c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            assert_eq!(b64token_byte(c), expected, "byte {c:#04x}");
        }
    }

    #[test]
    fn takes_one_bearer_token() {
        assert_eq!(
            extract(&headers(&["Bearer abc.def-_~+/="]), None),
            Ok("abc.def-_~+/=")
        );
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        for value in ["bearer abc", "BEARER abc", "bEaReR abc"] {
            assert_eq!(extract(&headers(&[value]), None), Ok("abc"), "{value}");
        }
    }

    #[test]
    fn refuses_every_other_shape() {
        assert_eq!(extract(&headers(&[]), None), Err(BearerError::Missing));
        for value in [
            "Basic abc",
            "Digest username=\"a\"",
            "DPoP abc",
            "Bearerabc",
        ] {
            assert_eq!(
                extract(&headers(&[value]), None),
                Err(BearerError::OtherScheme),
                "{value}"
            );
        }
        assert_eq!(
            extract(&headers(&["Bearer"]), None),
            Err(BearerError::MalformedToken)
        );
        assert_eq!(
            extract(&headers(&["Bearer "]), None),
            Err(BearerError::MalformedToken)
        );
        assert_eq!(
            extract(&headers(&["Bearer a b"]), None),
            Err(BearerError::MalformedToken)
        );
        assert_eq!(
            extract(&headers(&["Bearer a", "Bearer b"]), None),
            Err(BearerError::Duplicated)
        );
        assert_eq!(
            extract(&headers(&["Bearer a"]), Some("x=1&access_token=a")),
            Err(BearerError::InQuery)
        );
        assert_eq!(
            extract(&headers(&[]), Some("access_token")),
            Err(BearerError::InQuery)
        );
    }
}

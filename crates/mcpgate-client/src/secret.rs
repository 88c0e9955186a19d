//! Newtypes for the credentials the client holds: tokens, client secrets,
//! client assertions, device codes and PKCE verifiers. Each prints as
//! `[redacted]` in `Debug`, so that no `{:?}` of a struct that holds one
//! (a token set, a registration, a request) can put it in a log or an
//! error; the value is reached only through `secret()`. A PKCE verifier is
//! not `Clone`: it is made for one authorization request and spent once.
//! (As oauth2-rs does in its `src/types.rs`.)

use serde::{Deserialize, Serialize};

macro_rules! secret_string {
    ($(#[$doc:meta])* $name:ident, clone) => {
        secret_string!($(#[$doc])* $name, [Clone]);
    };
    ($(#[$doc:meta])* $name:ident, [$($derive:ident),*]) => {
        $(#[$doc])*
        #[derive(Serialize, Deserialize, PartialEq, Eq $(, $derive)*)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The value itself, for the one place that sends it.
            pub fn secret(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

secret_string!(
    /// An OAuth access token.
    AccessToken,
    clone
);
secret_string!(
    /// An OAuth refresh token.
    RefreshToken,
    clone
);
secret_string!(
    /// A client secret (configured, or issued by dynamic registration).
    ClientSecret,
    clone
);
secret_string!(
    /// A `private_key_jwt` client assertion (RFC 7523), a bearer credential
    /// for its few minutes of life.
    ClientAssertion,
    clone
);
secret_string!(
    /// A device code (RFC 8628): whoever holds it gets the tokens once the
    /// person approves.
    DeviceCode,
    clone
);
secret_string!(
    /// A PKCE code verifier (RFC 7636). Not `Clone`: one per request.
    PkceVerifier,
    []
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let shown = format!(
            "{:?} {:?} {:?} {:?} {:?} {:?}",
            AccessToken::new("at-secret-1"),
            RefreshToken::new("rt-secret-2"),
            ClientSecret::new("cs-secret-3"),
            ClientAssertion::new("ca-secret-4"),
            DeviceCode::new("dc-secret-5"),
            PkceVerifier::new("pv-secret-6"),
        );
        assert!(!shown.contains("secret-"), "{shown}");
        assert!(shown.contains("AccessToken([redacted])"), "{shown}");
    }

    /// Every structure that holds a credential, formatted with `{:?}`.
    #[test]
    fn no_struct_that_holds_a_secret_prints_it() {
        use crate::oauth::{AuthorizeRequest, ClientAuth, DeviceAuthorization, Pkce, TokenSet};
        use crate::store::{CachedTokens, Registration};

        let tokens = TokenSet {
            access_token: AccessToken::new("secret-access"),
            token_type: "Bearer".into(),
            refresh_token: Some(RefreshToken::new("secret-refresh")),
            scope: None,
            expires_at: None,
        };
        let registration = Registration {
            issuer: "https://as.example".into(),
            client_id: "c".into(),
            client_secret: Some(ClientSecret::new("secret-client")),
            redirect_uris: vec![],
            token_endpoint_auth_method: None,
        };
        let cached = CachedTokens {
            resource: "https://s.example/mcp".into(),
            issuer: "https://as.example".into(),
            client_id: "c".into(),
            scopes: vec![],
            token_endpoint: None,
            resource_indicator: None,
            tokens: tokens.clone(),
        };
        let pkce = Pkce::new();
        let verifier = pkce.verifier.secret().to_owned();
        let request = AuthorizeRequest {
            client_id: "c".into(),
            redirect_uri: "http://127.0.0.1:1/callback".into(),
            scopes: vec![],
            resource: None,
            state: "s".into(),
            pkce,
            claims: None,
        };
        let device: DeviceAuthorization = serde_json::from_value(serde_json::json!({
            "device_code": "secret-device",
            "user_code": "U",
            "verification_uri": "https://as.example/device",
        }))
        .expect("device");
        let credentials = crate::registration::Credentials {
            client_id: Some("c".into()),
            secret: Some(ClientSecret::new("secret-configured")),
            ..Default::default()
        };
        let shown = format!(
            "{tokens:?} {registration:?} {cached:?} {request:?} {device:?} {credentials:?} {:?} {:?}",
            ClientAuth::Secret {
                secret: ClientSecret::new("secret-basic"),
                basic: true,
            },
            ClientAuth::Assertion(ClientAssertion::new("secret-assertion")),
        );
        assert!(!shown.contains("secret-"), "{shown}");
        assert!(!shown.contains(&verifier), "{shown}");
    }

    #[test]
    fn serialised_as_the_bare_string() {
        let t = AccessToken::new("abc");
        assert_eq!(serde_json::to_string(&t).expect("json"), "\"abc\"");
        let back: AccessToken = serde_json::from_str("\"abc\"").expect("json");
        assert_eq!(back.secret(), "abc");
    }
}

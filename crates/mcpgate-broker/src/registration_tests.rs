use serde_json::{Value, json};

use super::*;

fn parse(v: Value) -> Result<ClientMetadata, RegistrationError> {
    ClientMetadata::from_registration(v.to_string().as_bytes())
}

fn error_code(v: Value) -> Option<ErrorCode> {
    parse(v).err().map(|e| e.to_oauth().error)
}

#[test]
fn a_typical_mcp_host_registration_is_accepted() -> Result<(), RegistrationError> {
    // What the TypeScript SDK sends.
    let m = parse(json!({
        "redirect_uris": ["http://localhost:6274/oauth/callback"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "client_name": "MCP Inspector",
        "client_uri": "https://github.com/modelcontextprotocol/inspector",
        "logo_uri": "https://example.com/logo.png",
        "x-unknown": {"ignored": true}
    }))?;
    assert_eq!(
        m.token_endpoint_auth_method(),
        TokenEndpointAuthMethod::None
    );
    assert_eq!(
        m.grant_types(),
        [GrantType::AuthorizationCode, GrantType::RefreshToken]
    );
    assert_eq!(
        m.client_name().map(ClientName::as_str),
        Some("MCP Inspector")
    );
    let echoed = serde_json::to_value(&m).map_err(RegistrationError::NotJson)?;
    assert!(echoed.get("logo_uri").is_none() && echoed.get("x-unknown").is_none());
    assert_eq!(
        echoed["redirect_uris"],
        json!(["http://localhost:6274/oauth/callback"])
    );
    Ok(())
}

#[test]
fn defaults_follow_rfc_7591() -> Result<(), RegistrationError> {
    let m = parse(json!({"redirect_uris": ["https://app.example/cb"]}))?;
    assert_eq!(
        m.token_endpoint_auth_method(),
        TokenEndpointAuthMethod::ClientSecretBasic
    );
    assert_eq!(m.grant_types(), [GrantType::AuthorizationCode]);
    assert_eq!(m.application_type(), ApplicationType::Web);
    Ok(())
}

#[test]
fn redirect_uri_problems_are_invalid_redirect_uri() {
    for bad in [
        json!({}),
        json!({"redirect_uris": []}),
        json!({"redirect_uris": ["http://evil.example/cb"]}),
        json!({"redirect_uris": ["https://app.example/cb#x"]}),
        json!({"redirect_uris": ["https://u@app.example/cb"]}),
        json!({"redirect_uris": ["cursor://x/cb"]}),
        json!({"redirect_uris": vec!["https://app.example/cb"; MAX_REDIRECT_URIS + 1]}),
    ] {
        assert_eq!(
            error_code(bad.clone()),
            Some(ErrorCode::InvalidRedirectUri),
            "{bad}"
        );
    }
    let e = parse(json!({"redirect_uris": ["https://a.example/cb", "http://evil.example/cb"]}));
    assert!(matches!(
        e,
        Err(RegistrationError::RedirectUri {
            index: 1,
            source: RedirectUriError::HttpNotLoopback
        })
    ));
}

#[test]
fn custom_schemes_only_for_native_apps() -> Result<(), RegistrationError> {
    let m = parse(json!({
        "application_type": "native",
        "redirect_uris": ["cursor://anysphere.cursor-retrieval/oauth/callback"],
        "token_endpoint_auth_method": "none"
    }))?;
    assert_eq!(m.application_type(), ApplicationType::Native);
    assert_eq!(
        error_code(
            json!({"application_type": "desktop", "redirect_uris": ["https://a.example/cb"]})
        ),
        Some(ErrorCode::InvalidClientMetadata)
    );
    Ok(())
}

#[test]
fn only_served_methods_grants_and_response_types() {
    let base = |extra: Value| {
        let mut v = json!({"redirect_uris": ["https://a.example/cb"]});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v
    };
    for bad in [
        json!({"token_endpoint_auth_method": "private_key_jwt"}),
        json!({"token_endpoint_auth_method": "client_secret_jwt"}),
        json!({"grant_types": ["implicit"]}),
        json!({"grant_types": ["client_credentials"]}),
        json!({"grant_types": ["refresh_token"]}),
        json!({"response_types": ["token"]}),
        json!({"response_types": ["code", "id_token"]}),
        json!({"scope": "a  b"}),
        json!({"scope": "a\"b"}),
        json!({"redirect_uris": "https://a.example/cb"}),
        json!({"client_name": 7}),
    ] {
        assert_eq!(
            error_code(base(bad.clone())),
            Some(ErrorCode::InvalidClientMetadata),
            "{bad}"
        );
    }
    assert!(parse(base(json!({"scope": "mcp:tools offline_access"}))).is_ok());
}

#[test]
fn sizes_are_bounded() {
    let big = vec![b' '; MAX_REGISTRATION_BODY + 1];
    assert!(matches!(
        ClientMetadata::from_registration(&big),
        Err(RegistrationError::BodyTooLarge { .. })
    ));
    for field in ["client_uri", "scope", "software_id", "software_version"] {
        let mut v = json!({"redirect_uris": ["https://a.example/cb"]});
        v[field] = json!("a".repeat(MAX_FIELD_LEN + 1));
        assert!(
            matches!(parse(v), Err(RegistrationError::FieldTooLong { field: f, .. }) if f == field),
            "{field}"
        );
    }
    let v = json!({"redirect_uris": ["https://a.example/cb"], "client_name": "a".repeat(MAX_CLIENT_NAME_INPUT + 1)});
    assert!(matches!(
        parse(v),
        Err(RegistrationError::FieldTooLong {
            field: "client_name",
            ..
        })
    ));
    assert!(matches!(
        ClientMetadata::from_registration(b"[]"),
        Err(RegistrationError::NotJson(_))
    ));
}

#[test]
fn client_names_are_sanitised_for_display() {
    let s = |raw: &str| ClientName::sanitize(raw).map(|n| n.as_str().to_owned());
    assert_eq!(s("  My\tClient \n App "), Some("My Client App".into()));
    // A right-to-left override could make "evil.com" read as "moc.live".
    assert_eq!(s("Good\u{202E}moc.live"), Some("Goodmoc.live".into()));
    assert_eq!(s("zero\u{200B}width\u{FEFF}"), Some("zerowidth".into()));
    assert_eq!(s("bell\u{7}"), Some("bell".into()));
    assert_eq!(s("\u{200B} \u{202E}"), None);
    assert_eq!(
        s(&"é".repeat(200)).map(|n| n.chars().count()),
        Some(MAX_CLIENT_NAME_CHARS)
    );
    // Markup stays text; the page escapes it.
    assert_eq!(s("<b>x</b>"), Some("<b>x</b>".into()));
}

#[test]
fn non_https_client_uri_is_dropped() -> Result<(), RegistrationError> {
    let m = parse(
        json!({"redirect_uris": ["https://a.example/cb"], "client_uri": "javascript:alert(1)"}),
    )?;
    assert_eq!(m.client_uri(), None);
    Ok(())
}

#[test]
fn registration_issues_a_secret_only_to_confidential_clients()
-> Result<(), Box<dyn std::error::Error>> {
    let public = parse(
        json!({"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"}),
    )?;
    let (client, response) = register(public, 1_700_000_000)?;
    assert!(client.secret_hash.is_none());
    let json = serde_json::to_value(&response)?;
    assert!(json.get("client_secret").is_none() && json.get("client_secret_expires_at").is_none());
    assert_eq!(json["client_id"], json!(client.client_id.as_str()));
    assert_eq!(json["client_id_issued_at"], json!(1_700_000_000));
    assert_eq!(json["token_endpoint_auth_method"], json!("none"));

    let confidential = parse(json!({"redirect_uris": ["https://a.example/cb"]}))?;
    let (client, response) = register(confidential, 1)?;
    let secret = response.client_secret.as_ref().ok_or("no secret")?;
    assert!(
        client
            .secret_hash
            .is_some_and(|h| h.verify(secret.secret()))
    );
    let printed = format!("{response:?} {client:?}");
    assert!(!printed.contains(secret.secret()), "Debug leaks the secret");
    let json = serde_json::to_value(&response)?;
    assert_eq!(json["client_secret"], json!(secret.secret()));
    assert_eq!(json["client_secret_expires_at"], json!(0));
    Ok(())
}

#[test]
fn stored_metadata_reads_back_unchanged() -> Result<(), Box<dyn std::error::Error>> {
    let m = parse(json!({
        "redirect_uris": ["https://a.example/cb", "https://a.example/cb"],
        "client_name": "A", "grant_types": ["authorization_code", "refresh_token", "refresh_token"]
    }))?;
    assert_eq!(m.redirect_uris().len(), 1);
    assert_eq!(m.grant_types().len(), 2);
    let again = ClientMetadata::from_registration(&serde_json::to_vec(&m)?)?;
    assert_eq!(again, m);
    Ok(())
}

#[test]
fn documents_cannot_hold_secrets() {
    let doc = |v: Value| {
        serde_json::from_value::<RawClientMetadata>(v)
            .map_err(RegistrationError::NotJson)
            .and_then(|raw| ClientMetadata::validate(raw, Source::Document))
    };
    assert!(
        doc(json!({"redirect_uris": ["https://a.example/cb"]}))
            .is_ok_and(|m| m.token_endpoint_auth_method() == TokenEndpointAuthMethod::None)
    );
    for bad in [
        json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "client_secret_basic"}),
        json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "client_secret_post"}),
        json!({"redirect_uris": ["https://a.example/cb"], "client_secret": "s"}),
    ] {
        assert!(matches!(doc(bad), Err(RegistrationError::SecretInDocument)));
    }
}

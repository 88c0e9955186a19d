//! The metadata document, pinned by a golden file. To accept a deliberate
//! change: `UPDATE_GOLDEN=1 cargo test -p mcpgate-broker --test broker`.

use std::path::PathBuf;

use mcpgate_broker::metadata::{AuthorizationServerMetadata, Issuer};

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("writing the golden file");
    }
    let expected = std::fs::read_to_string(&path).expect("reading the golden file");
    assert_eq!(actual, expected.trim_end(), "{} changed", path.display());
}

#[test]
fn authorization_server_metadata_matches_golden() {
    let issuer = Issuer::new("https://mcp.example.com/").expect("issuer");
    let doc = AuthorizationServerMetadata::new(
        &issuer,
        vec!["mcp:tools".into(), "offline_access".into()],
    );
    golden("authorization_server_metadata.json", &doc.to_json());

    // The fields MCP hosts decide on, checked by meaning too.
    let v: serde_json::Value = serde_json::from_str(&doc.to_json()).expect("json");
    assert_eq!(
        v["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(v["client_id_metadata_document_supported"], true);
    assert_eq!(v["authorization_response_iss_parameter_supported"], true);
    assert_eq!(v["issuer"], "https://mcp.example.com");
    assert!(
        !v["token_endpoint_auth_methods_supported"]
            .as_array()
            .expect("array")
            .contains(&serde_json::json!("private_key_jwt")),
        "private_key_jwt is not served"
    );
}

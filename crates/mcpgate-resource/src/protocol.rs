//! Which protocol revision a request speaks, and the header rules each
//! revision sets: `MCP-Protocol-Version`, the per-request `_meta` of the
//! 2026-07-28 wire (SEP-2567), and its routing headers `Mcp-Method` and
//! `Mcp-Name` (SEP-2243), which must agree with the body because proxies
//! route on them without reading it.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use rmcp::model::{ErrorData, ProtocolVersion};
use rmcp::transport::common::http_header::{
    BASE64_HEADER_PREFIX, BASE64_HEADER_SUFFIX, HEADER_MCP_METHOD, HEADER_MCP_NAME,
    HEADER_MCP_PROTOCOL_VERSION,
};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Every revision this endpoint speaks, oldest first.
pub fn supported() -> &'static [ProtocolVersion] {
    ProtocolVersion::KNOWN_VERSIONS
}

/// The revision `s` names, if this endpoint speaks it.
pub fn known(s: &str) -> Option<ProtocolVersion> {
    supported().iter().find(|v| v.as_str() == s).cloned()
}

/// Whether `version` is the 2026-07-28 wire or later (ISO dates compare
/// as strings).
pub fn is_stateless_wire(version: &str) -> bool {
    version >= ProtocolVersion::V_2026_07_28.as_str()
}

/// The answer to `initialize`: the client's revision when it has a
/// handshake and is spoken here, else the newest that has one.
pub fn negotiate(requested: &ProtocolVersion) -> ProtocolVersion {
    if requested.has_initialize() && supported().contains(requested) {
        requested.clone()
    } else {
        ProtocolVersion::LATEST_WITH_INITIALIZE
    }
}

/// The `MCP-Protocol-Version` header. A value that is not text is a 400.
pub fn header_version(headers: &HeaderMap) -> Result<Option<&str>, &'static str> {
    match headers.get(HEADER_MCP_PROTOCOL_VERSION) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| "Bad Request: Invalid MCP-Protocol-Version header encoding"),
    }
}

/// What a request's `_meta` says about the protocol.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestMeta {
    /// `io.modelcontextprotocol/protocolVersion`, when a string.
    pub protocol_version: Option<String>,
    /// Whether `io.modelcontextprotocol/clientCapabilities` is an object.
    pub has_client_capabilities: bool,
}

impl RequestMeta {
    /// The required keys that are missing or malformed.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if self.protocol_version.is_none() {
            missing.push("io.modelcontextprotocol/protocolVersion");
        }
        if !self.has_client_capabilities {
            missing.push("io.modelcontextprotocol/clientCapabilities");
        }
        missing
    }
}

/// The error for a request whose `_meta` lacks what the 2026-07-28 wire needs.
pub fn missing_meta_error(missing: &[&str]) -> ErrorData {
    ErrorData::invalid_params(
        format!(
            "request _meta is missing or has malformed required fields: {}",
            missing.join(", ")
        ),
        None,
    )
}

/// Checks `Mcp-Method` and `Mcp-Name` against the body (SEP-2243). `name`
/// is what the body names for methods that carry one (a tool's name, a
/// resource's URI); `required` is false for `initialize`, which may omit
/// the headers but not contradict itself.
pub fn check_routing_headers(
    headers: &HeaderMap,
    method: &str,
    name: Option<&str>,
    required: bool,
) -> Result<(), String> {
    match single(headers, HEADER_MCP_METHOD)? {
        None if required => return Err("missing required Mcp-Method header".to_owned()),
        None => return Ok(()),
        Some(value) if value != method => {
            return Err(format!(
                "Mcp-Method header `{value}` does not match body method `{method}`"
            ));
        }
        Some(_) => {}
    }
    if let Some(expected) = name {
        let Some(raw) = single(headers, HEADER_MCP_NAME)? else {
            return Err(format!("missing required Mcp-Name header for `{method}`"));
        };
        let decoded = decode(raw).ok_or("Mcp-Name header is not valid Base64")?;
        if decoded != expected {
            return Err(format!(
                "Mcp-Name header `{decoded}` does not match body value `{expected}`"
            ));
        }
    }
    Ok(())
}

/// The members of a request's `params` the endpoint reads, from one pass
/// over them; the rest (a tool's arguments, say) stays raw. Members of the
/// wrong type count as absent.
#[derive(Debug, Default)]
pub struct Params<'a> {
    /// `_meta`, as the protocol reads it.
    pub meta: RequestMeta,
    /// `name` (a tool's, a prompt's).
    pub name: Option<Cow<'a, str>>,
    /// `uri` (a resource's).
    pub uri: Option<Cow<'a, str>>,
    /// `taskId`.
    pub task_id: Option<Cow<'a, str>>,
    /// `arguments`, as sent.
    pub arguments: Option<&'a RawValue>,
}

impl<'a> Params<'a> {
    /// Reads `params`; anything that is not an object reads as empty.
    pub fn of(params: Option<&'a RawValue>) -> Self {
        #[derive(Deserialize)]
        struct Raw<'a> {
            #[serde(rename = "_meta", borrow, default)]
            meta: Option<&'a RawValue>,
            #[serde(borrow, default)]
            name: Option<&'a RawValue>,
            #[serde(borrow, default)]
            uri: Option<&'a RawValue>,
            #[serde(rename = "taskId", borrow, default)]
            task_id: Option<&'a RawValue>,
            #[serde(borrow, default)]
            arguments: Option<&'a RawValue>,
        }
        #[derive(Deserialize)]
        struct Meta<'a> {
            #[serde(rename = "io.modelcontextprotocol/protocolVersion", borrow, default)]
            protocol_version: Option<&'a RawValue>,
            #[serde(rename = "io.modelcontextprotocol/clientCapabilities", borrow, default)]
            client_capabilities: Option<&'a RawValue>,
        }
        fn string<'a>(raw: Option<&'a RawValue>) -> Option<Cow<'a, str>> {
            serde_json::from_str(raw?.get()).ok()
        }
        let Some(raw) = params.and_then(|p| serde_json::from_str::<Raw<'a>>(p.get()).ok()) else {
            return Self::default();
        };
        let meta = raw
            .meta
            .and_then(|m| serde_json::from_str::<Meta<'_>>(m.get()).ok())
            .map(|m| RequestMeta {
                protocol_version: string(m.protocol_version).map(Cow::into_owned),
                has_client_capabilities: m
                    .client_capabilities
                    .is_some_and(|c| c.get().trim_start().starts_with('{')),
            })
            .unwrap_or_default();
        Self {
            meta,
            name: string(raw.name),
            uri: string(raw.uri),
            task_id: string(raw.task_id),
            arguments: raw.arguments,
        }
    }

    /// What the body names for the `Mcp-Name` header, for the methods
    /// that carry one: a tool's or prompt's name, a resource's URI, a
    /// task's id.
    pub fn routed_name(&self, method: &str) -> Option<&str> {
        match method {
            "tools/call" | "prompts/get" => self.name.as_deref(),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                self.uri.as_deref()
            }
            "tasks/get" | "tasks/update" | "tasks/cancel" => self.task_id.as_deref(),
            _ => None,
        }
    }
}

// These headers are singletons: a duplicate could let an intermediary route
// on a value this request never dispatches.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, String> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(format!("duplicate {name} header"));
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| format!("{name} header contains invalid characters"))
}

fn decode(value: &str) -> Option<String> {
    match value
        .strip_prefix(BASE64_HEADER_PREFIX)
        .and_then(|inner| inner.strip_suffix(BASE64_HEADER_SUFFIX))
    {
        Some(inner) => String::from_utf8(STANDARD.decode(inner).ok()?).ok(),
        None => Some(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).expect("json")
    }

    #[test]
    fn meta_is_read_leniently() {
        let full = raw(
            r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}"#,
        );
        let meta = Params::of(Some(&full)).meta;
        assert_eq!(meta.protocol_version.as_deref(), Some("2026-07-28"));
        assert!(meta.missing().is_empty());
        let bad = raw(
            r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":7,"io.modelcontextprotocol/clientCapabilities":[]}}"#,
        );
        assert_eq!(Params::of(Some(&bad)).meta.missing().len(), 2);
        assert_eq!(Params::of(None).meta, RequestMeta::default());
        let not_an_object = raw(r#"{"_meta":"x","name":7}"#);
        let p = Params::of(Some(&not_an_object));
        assert_eq!(p.meta, RequestMeta::default());
        assert_eq!(p.name, None);
    }

    #[test]
    fn negotiation_falls_back_to_a_handshake_version() {
        assert_eq!(
            negotiate(&ProtocolVersion::V_2025_06_18),
            ProtocolVersion::V_2025_06_18
        );
        assert_eq!(
            negotiate(&ProtocolVersion::V_2026_07_28),
            ProtocolVersion::LATEST_WITH_INITIALIZE
        );
    }

    #[test]
    fn routing_headers_must_agree_with_the_body() {
        let mut h = HeaderMap::new();
        assert!(check_routing_headers(&h, "tools/call", Some("whoami"), true).is_err());
        assert!(check_routing_headers(&h, "initialize", None, false).is_ok());
        h.insert("mcp-method", HeaderValue::from_static("tools/call"));
        assert!(check_routing_headers(&h, "tools/call", Some("whoami"), true).is_err());
        h.insert("mcp-name", HeaderValue::from_static("=?base64?d2hvYW1p?="));
        assert_eq!(
            check_routing_headers(&h, "tools/call", Some("whoami"), true),
            Ok(())
        );
        assert!(check_routing_headers(&h, "tools/call", Some("other"), true).is_err());
        assert!(check_routing_headers(&h, "tools/list", None, true).is_err());
        h.append("mcp-method", HeaderValue::from_static("tools/call"));
        assert!(check_routing_headers(&h, "tools/call", Some("whoami"), true).is_err());
    }

    #[test]
    fn the_routed_name_comes_from_the_right_member() {
        let p = raw(r#"{"name":"who\u0061mi","uri":"file:///x","arguments":{"big":[1,2,3]}}"#);
        let p = Params::of(Some(&p));
        assert_eq!(p.routed_name("tools/call"), Some("whoami"));
        assert_eq!(p.routed_name("resources/read"), Some("file:///x"));
        assert_eq!(p.routed_name("tools/list"), None);
        assert_eq!(p.arguments.map(RawValue::get), Some(r#"{"big":[1,2,3]}"#));
        assert_eq!(Params::of(None).routed_name("tools/call"), None);
    }
}

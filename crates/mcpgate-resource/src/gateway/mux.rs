//! Several upstreams behind one endpoint.
//!
//! Each upstream has a name, and clients see what it offers under it: its
//! tools and prompts as `<name>__<tool>`, its resources as `<name>+<uri>`.
//! Names are lowercase letters, digits and `-`, so the split is never
//! ambiguous (`_` and `+` cannot occur in a name), and a prefixed URI is
//! still a URI (`+` is allowed in a scheme, which clients may lowercase).
//!
//! The gateway answers what concerns all upstreams itself: `initialize`
//! (their capabilities merged), the lists (every upstream's, prefixed, in
//! one page), `ping` and `logging/setLevel`. A request that names a tool,
//! prompt or resource goes to its upstream with the prefix taken off, and
//! the URIs in its answer are prefixed again.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use rmcp::model::{ErrorCode, ErrorData};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::{Link, UpstreamError};

/// Between an upstream's name and a tool's or prompt's.
pub const NAME_SEPARATOR: &str = "__";
/// Between an upstream's name and a resource's URI.
pub const URI_SEPARATOR: char = '+';

/// Whether `name` can name an upstream among several: 1 to 32 of
/// `a-z 0-9 -`, starting with a letter.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.len() <= 32
}

/// Checks the names of several upstreams: each valid, none twice.
pub fn check_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), UpstreamError> {
    let mut seen = HashSet::new();
    for name in names {
        if !valid_name(name) {
            return Err(UpstreamError::Config(format!(
                "upstream name {name:?}: with several upstreams each needs a name of 1 to 32 lowercase letters, digits and '-', starting with a letter (clients see its tools as <name>__<tool>)"
            )));
        }
        if !seen.insert(name) {
            return Err(UpstreamError::Config(format!(
                "two upstreams are named {name:?}; names must differ"
            )));
        }
    }
    Ok(())
}

/// One upstream's prefixes.
#[derive(Debug, Clone)]
pub struct Namespace {
    name: Arc<str>,
    uri_prefix: Arc<str>,
}

impl Namespace {
    /// The prefixes of upstream `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            uri_prefix: format!("{name}{URI_SEPARATOR}").into(),
        }
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What its resource URIs start with, as clients see them.
    pub fn uri_prefix(&self) -> &Arc<str> {
        &self.uri_prefix
    }

    fn show_name(&self, name: &str) -> String {
        format!("{}{NAME_SEPARATOR}{name}", self.name)
    }

    fn show_uri(&self, uri: &str) -> String {
        format!("{}{uri}", self.uri_prefix)
    }
}

/// Which upstream a tool's or prompt's name belongs to, and its own name
/// there.
pub fn split_name(shown: &str) -> Option<(&str, &str)> {
    let (name, rest) = shown.split_once(NAME_SEPARATOR)?;
    (valid_name(name) && !rest.is_empty()).then_some((name, rest))
}

/// Which upstream a resource's URI belongs to, and its own URI there.
pub fn split_uri(shown: &str) -> Option<(&str, &str)> {
    let (name, rest) = shown.split_once(URI_SEPARATOR)?;
    // Schemes are case-insensitive: a client may have lowercased it.
    (valid_name(name) && !rest.is_empty()).then_some((name, rest))
}

// Which upstream a shown name belongs to, and its own name there.
type Splitter = fn(&str) -> Option<(&str, &str)>;

/// What one upstream session of a client session is, for routing.
#[derive(Debug)]
pub struct Member {
    /// Its prefixes; `None` when it is the only upstream.
    pub namespace: Option<Namespace>,
    /// The upstream session.
    pub link: Arc<Link>,
    /// Which upstream of the gateway's it is.
    pub(super) upstream: usize,
    // The capabilities its `initialize` result announced.
    serves: HashSet<String>,
}

impl Member {
    pub(super) fn new(
        namespace: Option<Namespace>,
        link: Arc<Link>,
        upstream: usize,
        initialized: &RawValue,
    ) -> Self {
        let serves = capabilities(initialized)
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default();
        Self {
            namespace,
            link,
            upstream,
            serves,
        }
    }

    /// The upstream's name (logs, audit).
    pub fn name(&self) -> &str {
        self.link.name()
    }
}

/// The upstream sessions of one client session: one per upstream that
/// started.
#[derive(Debug)]
pub struct Links {
    members: Vec<Member>,
    /// The session's event streams, for resuming.
    pub streams: Arc<super::resume::Streams>,
}

/// Where a request goes: the upstream session, and its params as that
/// upstream names things (`None`: as sent).
#[derive(Debug)]
pub struct Route<'a> {
    /// The upstream session.
    pub member: &'a Member,
    /// The params with the prefix taken off.
    pub params: Option<Box<RawValue>>,
}

/// The lists the gateway merges: method, the result's key, and the member
/// of an item that carries its name.
pub fn list_shape(method: &str) -> Option<(&'static str, &'static str)> {
    Some(match method {
        "tools/list" => ("tools", "name"),
        "prompts/list" => ("prompts", "name"),
        "resources/list" => ("resources", "uri"),
        "resources/templates/list" => ("resourceTemplates", "uriTemplate"),
        _ => return None,
    })
}

impl Links {
    pub(super) fn new(members: Vec<Member>) -> Self {
        Self {
            members,
            streams: Arc::default(),
        }
    }

    /// The upstream sessions.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Whether names carry prefixes (several upstreams).
    pub fn is_multi(&self) -> bool {
        self.members.iter().any(|m| m.namespace.is_some())
    }

    fn by_name(&self, name: &str) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.namespace.as_ref().is_some_and(|n| n.name() == name))
    }

    /// Where `method` goes. With one upstream, there, as sent; with
    /// several, to the one its params name, prefix taken off.
    pub fn route(&self, method: &str, params: Option<&RawValue>) -> Result<Route<'_>, ErrorData> {
        if !self.is_multi() {
            let member = self.members.first().ok_or_else(|| {
                ErrorData::internal_error("the session has no upstream session", None)
            })?;
            return Ok(Route {
                member,
                params: None,
            });
        }
        let mut object = params
            .and_then(|p| serde_json::from_str::<Map<String, Value>>(p.get()).ok())
            .unwrap_or_default();
        // The member of the params that names the target, and how it splits.
        let (slot, split): (&mut Value, Splitter) = match method {
            "tools/call" | "prompts/get" => (member_of(&mut object, "name")?, split_name),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                (member_of(&mut object, "uri")?, split_uri)
            }
            "completion/complete" => {
                let reference = object
                    .get_mut("ref")
                    .and_then(Value::as_object_mut)
                    .ok_or_else(|| invalid_params("completion/complete needs params.ref"))?;
                match reference.get("type").and_then(Value::as_str) {
                    Some("ref/prompt") => (member_of(reference, "name")?, split_name),
                    Some("ref/resource") => (member_of(reference, "uri")?, split_uri),
                    _ => {
                        return Err(invalid_params(
                            "params.ref.type is not one this server knows",
                        ));
                    }
                }
            }
            _ => {
                return Err(ErrorData::new(
                    ErrorCode::METHOD_NOT_FOUND,
                    format!(
                        "{method}: this gateway stands in front of several servers and cannot tell which one this is for"
                    ),
                    None,
                ));
            }
        };
        let shown = slot.as_str().unwrap_or_default().to_owned();
        let (member, own) = split(&shown)
            .and_then(|(name, own)| Some((self.by_name(name)?, own)))
            .ok_or_else(|| {
                invalid_params(&format!(
                    "unknown name {shown:?}: names here are <server>{NAME_SEPARATOR}<name>, and resource URIs <server>{URI_SEPARATOR}<uri>, for servers {}",
                    self.names().join(", ")
                ))
            })?;
        *slot = Value::String(own.to_owned());
        let params = serde_json::to_string(&object)
            .ok()
            .and_then(|s| RawValue::from_string(s).ok())
            .ok_or_else(|| ErrorData::internal_error("could not rewrite the params", None))?;
        Ok(Route {
            member,
            params: Some(params),
        })
    }

    fn names(&self) -> Vec<&str> {
        self.members
            .iter()
            .filter_map(|m| m.namespace.as_ref().map(Namespace::name))
            .collect()
    }

    /// Every upstream's items of list `method`, prefixed, with each
    /// upstream's pinned tools reviewed (its hidden ones left out). An
    /// upstream that cannot list is left out, and logged.
    pub async fn list(&self, guard: &crate::guard::Guard, method: &str) -> Vec<Value> {
        let Some((key, field)) = list_shape(method) else {
            return Vec::new();
        };
        let capability = method.split('/').next().unwrap_or_default();
        let asked = self
            .members
            .iter()
            .filter(|m| m.serves.contains(capability))
            .map(|m| async move { (m, m.link.list_all(method, key).await) });
        let mut merged = Vec::new();
        for (member, listed) in futures::future::join_all(asked).await {
            let mut items = match listed {
                Ok(items) => items,
                Err(e) => {
                    tracing::warn!(target: "mcpgate::upstream", upstream = member.name(), method, error = %e, "an upstream could not list; its items are left out");
                    continue;
                }
            };
            if method == "tools/list"
                && let Some(pins) = member.link.pins()
            {
                let hidden = guard.review_tools(pins, member.name(), &items).await;
                items.retain(|t| {
                    t.get("name")
                        .and_then(Value::as_str)
                        .is_none_or(|n| !hidden.contains(n))
                });
                member.link.set_hidden(hidden).await;
            }
            let Some(namespace) = &member.namespace else {
                merged.extend(items);
                continue;
            };
            for mut item in items {
                if let Some(slot) = item.get_mut(field)
                    && let Some(own) = slot.as_str()
                {
                    *slot = Value::String(match field {
                        "name" => namespace.show_name(own),
                        _ => namespace.show_uri(own),
                    });
                    merged.push(item);
                }
            }
        }
        merged
    }

    /// Hands the token the client presented to every upstream session
    /// whose tokens are obtained by exchanging it.
    pub fn present(&self, token: Option<&super::credential::CallerToken>) {
        for member in &self.members {
            member.link.present(token);
        }
    }

    /// One stream for everything the upstreams send outside a request.
    pub fn standalone(&self) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(super::routes::EVENT_BACKLOG);
        for member in &self.members {
            member.link.routes.set_standalone(tx.clone());
        }
        rx
    }

    /// Passes a client's notification to every upstream session that is
    /// up (a cancellation reaches only the one with that request).
    pub async fn notify(&self, method: &str, params: Option<&RawValue>) {
        for member in &self.members {
            if let Err(e) = member.link.notify(method, params).await {
                tracing::debug!(target: "mcpgate::upstream", upstream = member.name(), error = %e, method, "a notification could not be passed on");
            }
        }
    }

    /// Passes a client's answer to the upstream that asked; `false` when
    /// none did.
    pub async fn answer(
        &self,
        id: &rmcp::model::RequestId,
        outcome: super::frame::Outcome<'_>,
    ) -> Result<bool, UpstreamError> {
        for member in &self.members {
            if member.link.answer(id, outcome).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `logging/setLevel` to every upstream that logs; the first refusal,
    /// if any.
    pub async fn set_level(&self, params: Option<&RawValue>) -> Result<(), UpstreamError> {
        let asked = self
            .members
            .iter()
            .filter(|m| m.serves.contains("logging"))
            .map(|m| m.link.ask_checked("logging/setLevel", params));
        for result in futures::future::join_all(asked).await {
            result?;
        }
        Ok(())
    }
}

fn member_of<'a>(
    object: &'a mut Map<String, Value>,
    key: &str,
) -> Result<&'a mut Value, ErrorData> {
    object
        .get_mut(key)
        .filter(|v| v.is_string())
        .ok_or_else(|| invalid_params(&format!("params.{key} is missing")))
}

fn invalid_params(message: &str) -> ErrorData {
    ErrorData::invalid_params(message.to_owned(), None)
}

fn capabilities(initialized: &RawValue) -> Option<Map<String, Value>> {
    #[derive(serde::Deserialize)]
    struct R {
        capabilities: Option<Map<String, Value>>,
    }
    serde_json::from_str::<R>(initialized.get())
        .ok()?
        .capabilities
}

/// The gateway's own `initialize` result over several upstreams: their
/// capabilities merged (a list changes, or can be subscribed to, if any
/// upstream's can), their instructions each under its name.
pub fn initialize_result(opened: &[(&str, &RawValue)]) -> Value {
    const MERGED: [&str; 5] = ["tools", "prompts", "resources", "logging", "completions"];
    let mut merged = Map::new();
    let mut instructions = Vec::new();
    for (name, result) in opened {
        let caps = capabilities(result).unwrap_or_default();
        for key in MERGED {
            let Some(Value::Object(theirs)) = caps.get(key) else {
                continue;
            };
            let ours = merged
                .entry(key)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(ours) = ours {
                for (flag, value) in theirs {
                    if value == &Value::Bool(true) {
                        ours.insert(flag.clone(), Value::Bool(true));
                    }
                }
            }
        }
        #[derive(serde::Deserialize)]
        struct I {
            instructions: Option<String>,
        }
        if let Ok(I {
            instructions: Some(text),
        }) = serde_json::from_str(result.get())
        {
            instructions.push(format!(
                "Tools, prompts and resources of {name} start with {name}{NAME_SEPARATOR} (resources {name}{URI_SEPARATOR}). {text}"
            ));
        }
    }
    let mut result = Map::new();
    result.insert("capabilities".into(), Value::Object(merged));
    result.insert(
        "serverInfo".into(),
        serde_json::json!({ "name": "mcpgate", "title": "mcpgate gateway", "version": env!("CARGO_PKG_VERSION") }),
    );
    if !instructions.is_empty() {
        result.insert("instructions".into(), instructions.join("\n\n").into());
    }
    Value::Object(result)
}

/// `answer` (to `method`) with the resource URIs in its result shown under
/// `namespace`: resource links and embedded resources in tool results and
/// prompt messages, and the contents of a read.
pub fn show_uris(answer: Bytes, method: &str, namespace: &Namespace) -> Bytes {
    // Most answers name no resource: they pass without a parse.
    if !matches!(method, "tools/call" | "prompts/get" | "resources/read")
        || !answer.windows(5).any(|w| w == b"\"uri\"")
    {
        return answer;
    }
    let Ok(mut message) = serde_json::from_slice::<Value>(&answer) else {
        return answer;
    };
    let Some(result) = message.get_mut("result") else {
        return answer;
    };
    let prefix = |slot: Option<&mut Value>| {
        if let Some(uri) = slot
            && let Some(s) = uri.as_str()
        {
            *uri = Value::String(namespace.show_uri(s));
        }
    };
    let content_item = |item: &mut Value| match item.get("type").and_then(Value::as_str) {
        Some("resource_link") => prefix(item.get_mut("uri")),
        Some("resource") => prefix(item.get_mut("resource").and_then(|r| r.get_mut("uri"))),
        _ => {}
    };
    match method {
        "tools/call" => {
            if let Some(Value::Array(items)) = result.get_mut("content") {
                items.iter_mut().for_each(content_item);
            }
        }
        "prompts/get" => {
            if let Some(Value::Array(messages)) = result.get_mut("messages") {
                for m in messages {
                    match m.get_mut("content") {
                        Some(Value::Array(items)) => items.iter_mut().for_each(content_item),
                        Some(item) => content_item(item),
                        None => {}
                    }
                }
            }
        }
        _ => {
            if let Some(Value::Array(contents)) = result.get_mut("contents") {
                for c in contents {
                    prefix(c.get_mut("uri"));
                }
            }
        }
    }
    serde_json::to_vec(&message).map_or(answer, Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_split_on_the_first_separator_only_with_a_valid_server_name() {
        assert_eq!(split_name("files__read"), Some(("files", "read")));
        assert_eq!(split_name("files__read__all"), Some(("files", "read__all")));
        assert_eq!(split_name("git-hub__x_y"), Some(("git-hub", "x_y")));
        assert_eq!(split_name("files__"), None);
        assert_eq!(split_name("Files__read"), None);
        assert_eq!(split_name("read"), None);
        assert_eq!(
            split_uri("files+file:///etc/hosts"),
            Some(("files", "file:///etc/hosts"))
        );
        assert_eq!(split_uri("file:///a+b"), None);
        assert_eq!(split_uri("files+"), None);
    }

    #[test]
    fn names_of_several_upstreams_are_checked() {
        assert!(check_names(["files", "git-hub", "a1"]).is_ok());
        assert!(check_names(["files", "files"]).is_err());
        for bad in ["", "Files", "1files", "my_files", "a+b", &"x".repeat(33)] {
            assert!(check_names([bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn initialize_merges_capabilities_and_names_instructions() {
        let a = RawValue::from_string(
            json!({"protocolVersion":"2025-06-18","capabilities":{"tools":{"listChanged":true},"logging":{}},"serverInfo":{"name":"a","version":"1"},"instructions":"Use a."}).to_string(),
        )
        .expect("raw");
        let b = RawValue::from_string(
            json!({"capabilities":{"tools":{"listChanged":false},"resources":{"subscribe":true}},"serverInfo":{"name":"b","version":"1"}}).to_string(),
        )
        .expect("raw");
        let result = initialize_result(&[("a", &a), ("b", &b)]);
        assert_eq!(
            result["capabilities"],
            json!({"tools":{"listChanged":true},"logging":{},"resources":{"subscribe":true}})
        );
        assert_eq!(result["serverInfo"]["name"], "mcpgate");
        let instructions = result["instructions"].as_str().expect("instructions");
        assert!(instructions.contains("a__") && instructions.ends_with("Use a."));
    }

    #[test]
    fn uris_in_answers_are_shown_under_the_prefix() {
        let ns = Namespace::new("files");
        let call = json!({"jsonrpc":"2.0","id":1,"result":{"content":[
            {"type":"text","text":"uri"},
            {"type":"resource_link","uri":"file:///a","name":"a"},
            {"type":"resource","resource":{"uri":"file:///b","text":"b"}}
        ]}});
        let out: Value =
            serde_json::from_slice(&show_uris(Bytes::from(call.to_string()), "tools/call", &ns))
                .expect("json");
        assert_eq!(out["result"]["content"][1]["uri"], "files+file:///a");
        assert_eq!(
            out["result"]["content"][2]["resource"]["uri"],
            "files+file:///b"
        );
        let read =
            json!({"jsonrpc":"2.0","id":1,"result":{"contents":[{"uri":"file:///a","text":"x"}]}});
        let out: Value = serde_json::from_slice(&show_uris(
            Bytes::from(read.to_string()),
            "resources/read",
            &ns,
        ))
        .expect("json");
        assert_eq!(out["result"]["contents"][0]["uri"], "files+file:///a");
        // Answers naming no resource pass as they are.
        let plain = Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#);
        assert_eq!(show_uris(plain.clone(), "tools/call", &ns), plain);
    }
}

//! What the binary's test files share.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Waits until `child` writes its ready file and returns what it says; a
/// child that does not within `timeout` is killed and the test fails.
pub fn wait_ready(mut child: Child, ready: &Path, timeout: Duration) -> (Child, Value) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(ready)
            && let Ok(v) = serde_json::from_str::<Value>(&text)
        {
            return (child, v);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mcpgate never became ready");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `name` and `value` of each hidden input of a page.
#[allow(dead_code, reason = "not every test file signs in through a page")]
pub fn hidden_fields(html: &str) -> Vec<(String, String)> {
    let attr = |tag: &str, name: &str| {
        let marker = format!("{name}=\"");
        let start = tag.find(&marker)? + marker.len();
        Some(tag[start..start + tag[start..].find('"')?].to_owned())
    };
    html.split("<input")
        .skip(1)
        .filter_map(|rest| rest.split('>').next())
        .filter(|tag| tag.contains("type=\"hidden\""))
        .filter_map(|tag| Some((attr(tag, "name")?, attr(tag, "value")?)))
        .collect()
}

/// The dev IdP's CSRF cookie a sign-in page set, as a `Cookie` value.
#[allow(dead_code, reason = "not every test file signs in through a page")]
pub fn csrf_cookie(page: &reqwest::Response) -> String {
    page.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("mcpgate_idp_csrf"))
        .and_then(|v| v.split(';').next())
        .expect("a CSRF cookie")
        .to_owned()
}

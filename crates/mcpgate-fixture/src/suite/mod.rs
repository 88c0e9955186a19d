//! What the server scenarios of `@modelcontextprotocol/conformance@0.1.16`
//! call, by the names and with the shapes its scenario sources check:
//! [`tools`] (`test_*` and `json_schema_2020_12_tool`, the elicitation ones
//! in [`elicitation`]), and in [`content`] the resources under `test://`,
//! the `test_*` prompts and completion.

mod content;
mod elicitation;
mod tools;

use std::sync::Arc;

use rmcp::ErrorData as McpError;
use rmcp::model::JsonObject;
use serde_json::Value;

pub use content::{complete, get_prompt, prompts, read_resource, resource_templates, resources};
pub use tools::{call_tool, tools};

/// A 1x1 red pixel, PNG.
pub const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// One silent sample, 8 kHz mono 16-bit PCM WAV.
pub const WAV_BASE64: &str = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQIAAAAAAA==";

/// A JSON object literal as a tool schema; anything else is an empty one.
pub fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::default(),
    }
}

/// The string argument `name`, which the tool requires.
fn string_arg<'a>(args: &'a JsonObject, name: &str) -> Result<&'a str, McpError> {
    args.get(name).and_then(Value::as_str).ok_or_else(|| {
        McpError::invalid_params(format!("argument `{name}` (string) is required"), None)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(b64: &str) -> Vec<u8> {
        // A few lines of base64 rather than a dependency for two constants.
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::new();
        for c in b64.bytes().filter(|c| *c != b'=') {
            let v = alphabet.iter().position(|a| *a == c).expect("base64 digit");
            bits = (bits << 6) | u32::try_from(v).expect("small");
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push(u8::try_from((bits >> n) & 0xff).expect("byte"));
            }
        }
        out
    }

    #[test]
    fn media_constants_are_what_their_mime_types_say() {
        let png = decode(PNG_BASE64);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let wav = decode(WAV_BASE64);
        assert_eq!((&wav[..4], &wav[8..12]), (&b"RIFF"[..], &b"WAVE"[..]));
        // RIFF size field = file length - 8; data chunk length = 2 bytes.
        assert_eq!(
            u32::from_le_bytes([wav[4], wav[5], wav[6], wav[7]]) as usize,
            wav.len() - 8
        );
        assert_eq!(wav.len(), 46);
    }
}

//! The ready file: one JSON object written once the server listens, so
//! that scripts and tests know where everything is. Never secrets.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

/// Writes `value` to `path` atomically (a temporary file, then a rename),
/// so that a reader never sees half a document.
pub fn write(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

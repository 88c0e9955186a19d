//! The ready file: one JSON object written once the server listens, so
//! that scripts and tests know where everything is. Never secrets.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

/// Writes `value` to `path` atomically: a new temporary file with an
/// unpredictable name beside it (created exclusively, so a planted symlink
/// is never followed), then a rename over `path`, so that a reader never
/// sees half a document.
pub fn write(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".mcpgate-ready.")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_document_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ready.json");
        write(
            &path,
            &serde_json::json!({ "mcp_url": "http://127.0.0.1:1/mcp" }),
        )
        .expect("written");
        let text = std::fs::read_to_string(&path).expect("read back");
        assert!(text.contains("127.0.0.1:1"), "{text}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["ready.json"]);
    }

    /// The old writer used `ready.tmp`, a name anyone could predict and
    /// plant as a symlink to a file of the victim's.
    #[cfg(unix)]
    #[test]
    fn a_planted_symlink_is_not_followed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").expect("victim");
        let path = dir.path().join("ready.json");
        std::os::unix::fs::symlink(&victim, dir.path().join("ready.tmp")).expect("plant");
        std::os::unix::fs::symlink(&victim, &path).expect("plant");
        write(&path, &serde_json::json!({ "ok": true })).expect("written");
        assert_eq!(
            std::fs::read_to_string(&victim).expect("victim"),
            "precious"
        );
        assert!(
            !std::fs::symlink_metadata(&path)
                .expect("ready file")
                .file_type()
                .is_symlink(),
            "the ready file replaced the symlink"
        );
    }
}

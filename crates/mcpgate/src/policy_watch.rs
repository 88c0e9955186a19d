//! Reloading the per-tool policy while serving: on SIGHUP, and when the
//! configuration file's content changes (polled every second: one small
//! read, and no watcher crate to carry), the `[policy]` table is read
//! again, compiled, and swapped into the [`PolicyHandle`]. Sessions and
//! everything else in the file stay as they are; a file that does not
//! parse or compile is reported once, naming the file and line, and the
//! policy in force is kept.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use mcpgate_resource::policy::{Policy, PolicyConfig, PolicyError, PolicyHandle};
use serde::Deserialize;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;

/// How often the file is read for changes.
const POLL: Duration = Duration::from_secs(1);

/// Why the policy was not reloaded.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file cannot be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or its `[policy]` table has an unknown
    /// key or a value of the wrong type.
    #[error("{path}:{line}:{column}: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message (it quotes no line of the file, which may
        /// hold secrets elsewhere).
        message: String,
    },
    /// An `MCPGATE_POLICY__…` variable does not fit the table.
    #[error("the MCPGATE_POLICY__ environment variables: {0}")]
    Env(#[source] Box<figment::Error>),
    /// The table parses but does not compile (a bad glob, a rule that
    /// names nothing).
    #[error("{path}:{line}: {source}", line = line.map_or_else(|| "?".to_owned(), |l| l.to_string()))]
    Compile {
        /// The file.
        path: PathBuf,
        /// 1-based line of the pattern or rule at fault, when it can be
        /// found.
        line: Option<usize>,
        /// What is wrong.
        #[source]
        source: PolicyError,
    },
}

/// Starts watching `config_path`: reloads on SIGHUP and when the file's
/// content changes. Fails only when the SIGHUP handler cannot be
/// installed; from then on SIGHUP no longer ends the process.
pub fn spawn(config_path: PathBuf, handle: Arc<PolicyHandle>) -> std::io::Result<JoinHandle<()>> {
    spawn_polling(config_path, handle, POLL)
}

fn spawn_polling(
    path: PathBuf,
    handle: Arc<PolicyHandle>,
    every: Duration,
) -> std::io::Result<JoinHandle<()>> {
    // Installed here, before returning, so that a SIGHUP sent once `spawn`
    // returned is never the default "terminate".
    let mut hup = signal(SignalKind::hangup())?;
    let mut last = std::fs::read_to_string(&path).ok();
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unreadable = false;
        loop {
            let forced = tokio::select! {
                signalled = hup.recv() => {
                    if signalled.is_none() {
                        return;
                    }
                    true
                }
                _ = tick.tick() => false,
            };
            let text = match tokio::fs::read_to_string(&path).await {
                Ok(text) => {
                    unreadable = false;
                    text
                }
                Err(source) => {
                    // Said once per outage, not every second.
                    if forced || !unreadable {
                        let e = ReloadError::Read {
                            path: path.clone(),
                            source,
                        };
                        tracing::error!("policy not reloaded, the one in force is kept: {e}");
                    }
                    unreadable = true;
                    continue;
                }
            };
            if !forced && last.as_deref() == Some(text.as_str()) {
                continue;
            }
            match apply(&path, &text, &handle) {
                Ok(rules) => tracing::info!(
                    file = %path.display(),
                    rules,
                    signal = forced,
                    "policy reloaded"
                ),
                Err(e) => tracing::error!("policy not reloaded, the one in force is kept: {e}"),
            }
            last = Some(text);
        }
    }))
}

fn apply(path: &Path, text: &str, handle: &PolicyHandle) -> Result<usize, ReloadError> {
    let policy = compile(path, text)?;
    let rules = policy.rule_count();
    handle.replace(policy);
    Ok(rules)
}

#[derive(Deserialize)]
struct PolicyOnly {
    #[serde(default)]
    policy: Option<PolicyConfig>,
}

fn compile(path: &Path, text: &str) -> Result<Policy, ReloadError> {
    // toml first, for the line of a mistake in the file; figment then adds
    // the environment as the startup load does.
    toml::from_str::<PolicyOnly>(text).map_err(|e| {
        let (line, column) = line_col(text, e.span().map_or(0, |s| s.start));
        ReloadError::Toml {
            path: path.to_owned(),
            line,
            column,
            message: e.message().trim().to_owned(),
        }
    })?;
    let env = Env::prefixed("MCPGATE_")
        .split("__")
        .filter(|key| key.as_str().split('.').next() == Some("policy"));
    let cfg = Figment::from(Toml::string(text))
        .merge(env)
        .extract::<PolicyOnly>()
        .map_err(|e| ReloadError::Env(Box::new(e)))?
        .policy
        .unwrap_or_default();
    Policy::compile(&cfg).map_err(|source| ReloadError::Compile {
        path: path.to_owned(),
        line: fault_line(text, &source),
        source,
    })
}

// Where the rule (or its pattern) at fault is written, from the spans of
// a second, lenient parse.
fn fault_line(text: &str, e: &PolicyError) -> Option<usize> {
    #[derive(Deserialize)]
    struct File {
        policy: Spanned,
    }
    #[derive(Deserialize)]
    struct Spanned {
        rules: Vec<toml::Spanned<SpannedRule>>,
    }
    #[derive(Deserialize)]
    struct SpannedRule {
        #[serde(default)]
        tools: Vec<toml::Spanned<String>>,
        #[serde(default)]
        resources: Vec<toml::Spanned<String>>,
        #[serde(default)]
        prompts: Vec<toml::Spanned<String>>,
    }
    let file: File = toml::from_str(text).ok()?;
    let rule = file.policy.rules.get(e.rule()?)?;
    let bad = match e {
        PolicyError::BadPattern { pattern, .. } => Some(pattern.as_str()),
        PolicyError::EmptyPattern { .. } => Some(""),
        _ => None,
    };
    let r = rule.get_ref();
    let at: Range<usize> = bad
        .and_then(|bad| {
            r.tools
                .iter()
                .chain(&r.resources)
                .chain(&r.prompts)
                .find(|p| p.get_ref() == bad)
        })
        .map_or_else(|| rule.span(), |p| p.span());
    Some(line_col(text, at.start).0)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcpgate_resource::policy::Kind;

    // What a SIGHUP does, without the signal: the number of rules now in force.
    fn reload(path: &Path, handle: &PolicyHandle) -> Result<usize, ReloadError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReloadError::Read {
            path: path.to_owned(),
            source,
        })?;
        apply(path, &text, handle)
    }

    const ALLOW: &str = "bind = \"127.0.0.1:0\"\n\n[policy]\ndefault = \"allow\"\n";
    const DENY: &str = "bind = \"127.0.0.1:0\"\n\n[policy]\ndefault = \"deny\"\n";

    fn allows(handle: &PolicyHandle) -> bool {
        handle.load().visible(None, Kind::Tool, "anything")
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..200 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn a_changed_file_is_swapped_in_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mcpgate.toml");
        std::fs::write(&path, ALLOW).expect("write");
        let handle = Arc::new(PolicyHandle::default());
        let task =
            spawn_polling(path.clone(), handle.clone(), Duration::from_millis(20)).expect("spawn");
        assert!(allows(&handle));

        std::fs::write(&path, DENY).expect("write");
        until("the deny policy", || !allows(&handle)).await;

        // Broken three ways; each time the deny policy stays.
        for broken in [
            "[policy]\ndefault = \"deny\"\n[[policy.rules]\n",
            "[policy]\ndefault = \"allow\"\nwhatever = 1\n",
            "[policy]\ndefault = \"allow\"\n[[policy.rules]]\ntools = [\"x[\"]\n",
        ] {
            std::fs::write(&path, broken).expect("write");
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert!(!allows(&handle), "kept after {broken:?}");
        }
        std::fs::write(&path, ALLOW).expect("write");
        until("the allow policy again", || allows(&handle)).await;
        task.abort();
    }

    #[tokio::test]
    async fn sighup_reloads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mcpgate.toml");
        std::fs::write(&path, ALLOW).expect("write");
        let handle = Arc::new(PolicyHandle::default());
        // No polling within the test's time: only the signal can reload.
        let task =
            spawn_polling(path.clone(), handle.clone(), Duration::from_secs(3600)).expect("spawn");
        std::fs::write(&path, DENY).expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(allows(&handle), "no reload without the signal");
        // Safe: `spawn_polling` installed the handler before returning, and
        // the signal goes to this test process alone.
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::HUP)
            .expect("SIGHUP sent");
        until("the reload on SIGHUP", || !allows(&handle)).await;
        task.abort();
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.toml");
        let handle = PolicyHandle::default();
        let cases = [
            ("a = 1\n[policy]\ndefault = \"maybe\"\n", ":3:"),
            (
                "[policy]\n\n[[policy.rules]]\ntools = [\"ok\"]\ntool = [\"x\"]\n",
                ":5:",
            ),
            (
                "[policy]\n[[policy.rules]]\ntools = [\"a\"]\n[[policy.rules]]\nname = \"r\"\ntools = [\"fine\",\n  \"b[\"]\n",
                ":7:",
            ),
            (
                "[policy]\n[[policy.rules]]\nname = \"x\"\nscopes = [\"s\"]\n",
                ":2:",
            ),
            ("[policy\n", ":1:"),
        ];
        for (text, at) in cases {
            std::fs::write(&path, text).expect("write");
            let e = reload(&path, &handle).expect_err(text).to_string();
            assert!(e.starts_with(&path.display().to_string()), "{e}");
            assert!(e.contains(at), "{text:?} gave {e:?}, wanted line {at}");
        }
        // A file without a [policy] table allows everything.
        std::fs::write(&path, "bind = \"127.0.0.1:0\"\n").expect("write");
        assert_eq!(reload(&path, &handle).expect("reload"), 0);
        let missing = dir.path().join("missing.toml");
        assert!(matches!(
            reload(&missing, &handle),
            Err(ReloadError::Read { .. })
        ));
    }

    #[test]
    fn only_the_policy_table_is_read() {
        // Other sections are not checked here: `serve` did that at start.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "[sessions]\nmax_total = 3\n[something_new]\nx = 1\n[policy]\ndefault = \"deny\"\n",
        )
        .expect("write");
        let handle = PolicyHandle::default();
        reload(&path, &handle).expect("reload");
        assert!(!allows(&handle));
    }
}

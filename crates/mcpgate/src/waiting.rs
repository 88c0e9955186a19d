//! The client commands' prompts on stderr, and a spinner with the time
//! elapsed while a sign-in waits for its person (the browser's redirect, or
//! the device code being entered).
//!
//! `mcpgate-client` waits inside one call and says nothing when the wait
//! ends; what it does say, it says through its `notify` hook. So the spinner
//! starts on the prompt that precedes a wait, stops at the next line, and
//! stops for good when the command's call returns ([`Prompter::stop`], or
//! drop). It is drawn only when stderr is a terminal: a script, a pipe or an
//! MCP host reading stderr sees the same lines as before and nothing else.
//! `bridge` and `stdio` never use it.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Prints the client's lines on stderr, spinning while a sign-in waits.
pub struct Prompter {
    spinner: Mutex<Option<ProgressBar>>,
    terminal: bool,
}

impl Prompter {
    /// A spinner only if stderr is a terminal.
    pub fn new() -> Self {
        Self {
            spinner: Mutex::new(None),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// One line from the client. A line that leaves the person to act
    /// (re)starts the spinner; any other stops it.
    pub fn line(&self, text: &str) {
        let mut spinner = self.spinner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = spinner.take() {
            old.finish_and_clear();
        }
        say(text);
        if self.terminal && waits_for_person(text) {
            *spinner = Some(start());
        }
    }

    /// The wait is over (the call returned): clears the spinner.
    pub fn stop(&self) {
        let mut spinner = self.spinner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = spinner.take() {
            old.finish_and_clear();
        }
    }
}

impl Drop for Prompter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A line on stderr; a closed stderr (the host went away) is not an error.
pub fn say(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{message}");
}

fn start() -> ProgressBar {
    // Explicitly stderr, whatever indicatif's default: stdout carries only
    // what was asked for.
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message("waiting for the sign-in…");
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Whether the client's line asks the person to do something and the
/// client now waits for it: the browser's sign-in URL, or a device code to
/// enter at a URL (the authorization server's own words, or the client's).
/// The notices around them ("no browser here…", "the secret is now bound…")
/// are not waits.
fn waits_for_person(text: &str) -> bool {
    if text.starts_with("Sign in at: ") {
        return true;
    }
    let lower = text.to_ascii_lowercase();
    let aside = text.starts_with('(') || lower.starts_with("no browser");
    !aside && lower.contains("code") && lower.contains("://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompts_before_a_wait_start_the_spinner_and_nothing_else_does() {
        // What mcpgate-client says, and what Entra and the dev IdP send.
        for wait in [
            "Sign in at: https://login.example/authorize?client_id=x",
            "To sign in, open https://login.example/device and enter the code ABCD-EFGH",
            "To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code F3KQ9ZL2P to authenticate.",
        ] {
            assert!(waits_for_person(wait), "{wait}");
        }
        for notice in [
            "No browser can be opened here (no graphical display (neither DISPLAY nor WAYLAND_DISPLAY is set)): signing in with a device code instead (--device-code).",
            "(could not open a browser: xdg-open failed (exit 3); signing in with a device code instead)",
            "The client secret or key of 0f3c is now bound to https://login.example/t/v2.0: it will be sent to no other authorization server (--issuer names it explicitly).",
            "the refresh token was refused (invalid_grant); signing in again",
            "signed in to https://mcp.example/mcp",
        ] {
            assert!(!waits_for_person(notice), "{notice}");
        }
    }

    #[test]
    fn off_a_terminal_no_spinner_is_made() {
        let p = Prompter {
            spinner: Mutex::new(None),
            terminal: false,
        };
        p.line("Sign in at: https://login.example/authorize");
        assert!(p.spinner.lock().expect("lock").is_none());
    }

    #[test]
    fn a_later_line_or_stop_clears_the_spinner() {
        // As on a terminal (indicatif itself draws only if the test's
        // stderr is one).
        let p = Prompter {
            spinner: Mutex::new(None),
            terminal: true,
        };
        p.line("Sign in at: https://login.example/authorize");
        assert!(p.spinner.lock().expect("lock").is_some());
        p.line("the refresh token was refused (invalid_grant); signing in again");
        assert!(p.spinner.lock().expect("lock").is_none());
        p.line("To sign in, open https://login.example/device and enter the code X");
        assert!(p.spinner.lock().expect("lock").is_some());
        p.stop();
        assert!(p.spinner.lock().expect("lock").is_none());
    }
}

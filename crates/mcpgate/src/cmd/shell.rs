//! `mcpgate completions SHELL` and `mcpgate man [COMMAND…]`: what a shell
//! and `man` need, generated from the same definition the parser uses, so
//! that they never fall behind a new flag.

use std::io::Write;
use std::process::ExitCode;

use anyhow::bail;
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// The completion script for `shell`, on stdout.
pub fn completions(shell: Shell) -> anyhow::Result<ExitCode> {
    print(&completion_script(shell))
}

/// The manual page (roff) of the top command, or of the subcommand
/// `path` names, on stdout.
pub fn man(path: &[String]) -> anyhow::Result<ExitCode> {
    print(&man_page(path)?)
}

fn completion_script(shell: Shell) -> Vec<u8> {
    let mut command = Cli::command();
    let name = command.get_name().to_owned();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut out);
    out
}

fn man_page(path: &[String]) -> anyhow::Result<Vec<u8>> {
    let mut page = Cli::command();
    // Built, every subcommand carries the name the pages refer to it by
    // (mcpgate-serve(1)), its synopsis (`mcpgate serve`), the global flags
    // and the help flags.
    page.build();
    for name in path {
        let Some(sub) = page.find_subcommand(name) else {
            let known: Vec<&str> = page.get_subcommands().map(|c| c.get_name()).collect();
            bail!(
                "`{}` has no subcommand {name:?} (it has: {})",
                page.get_bin_name().unwrap_or(page.get_name()),
                known.join(", ")
            );
        };
        page = sub.clone();
    }
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .source(format!("mcpgate {}", env!("CARGO_PKG_VERSION")))
        .render(&mut out)?;
    Ok(out)
}

/// Writes all of `bytes`; a reader that stopped early (`| head`) is not an
/// error worth a message.
fn print(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    #[test]
    fn every_shell_gets_a_script_that_names_the_binary() {
        for shell in Shell::value_variants() {
            let script = String::from_utf8(completion_script(*shell)).expect("utf-8");
            assert!(script.contains("mcpgate"), "{shell}");
            // Subcommands added later are completed too: they come from
            // the parser's own definition.
            assert!(script.contains("completions"), "{shell}");
        }
    }

    #[test]
    fn the_man_page_lists_the_subcommands_and_each_has_its_own() {
        let page = String::from_utf8(man_page(&[]).expect("render")).expect("utf-8");
        assert!(page.contains(".TH mcpgate 1"), "{page}");
        for sub in ["serve", "explain", "check", "completions", "man"] {
            assert!(
                page.contains(&format!("mcpgate\\-{sub}(1)")),
                "{sub}: {page}"
            );
        }
        let serve =
            String::from_utf8(man_page(&["serve".to_owned()]).expect("render")).expect("utf-8");
        assert!(serve.contains(".TH mcpgate-serve 1"), "{serve}");
        assert!(serve.contains("upstream\\-cmd"), "{serve}");
        let rotate = man_page(&["idp".to_owned(), "rotate-keys".to_owned()]).expect("render");
        let rotate = String::from_utf8(rotate).expect("utf-8");
        assert!(rotate.contains(".TH mcpgate-idp-rotate-keys 1"), "{rotate}");
        assert!(man_page(&["nope".to_owned()]).is_err());
    }
}

//! What is generated from the CLI definition ([`crate::cli::Cli`]) for packaging (issue #6):
//! the shell completion scripts and the manual pages, so that neither can drift from the
//! commands the binary accepts.

use std::io::{self, Write};
use std::path::Path;

use clap::CommandFactory;
use clap_complete::{Generator, Shell};

use crate::cli::Cli;

const BIN: &str = "edge-agent";

/// The completion script of `shell`.
pub fn completions(shell: Shell, out: &mut dyn Write) -> io::Result<()> {
    let mut command = Cli::command();
    command.set_bin_name(BIN);
    command.build();
    shell.try_generate(&command, out)?;
    out.flush()
}

/// The page edge-agent(1), with the commands listed.
pub fn page(out: &mut dyn Write) -> io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)?;
    out.flush()
}

/// edge-agent(1) and a page per command (edge-agent-run(1), edge-agent-bridge-render(1), …),
/// written into `dir` (made if missing) as `<name>.1`.
pub fn pages(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bash_script_completes_every_command() {
        let mut script = Vec::new();
        completions(Shell::Bash, &mut script).unwrap();
        let script = String::from_utf8(script).unwrap();
        assert!(script.starts_with("_edge__agent() {"), "{script:.40}");
        for command in [
            "run", "config", "bridge", "files", "child", "op", "health", "man",
        ] {
            assert!(
                script.contains(&format!("edge__agent,{command})")),
                "no completion for {command}"
            );
        }
    }

    #[test]
    fn the_page_names_the_program_and_lists_its_commands() {
        let mut roff = Vec::new();
        page(&mut roff).unwrap();
        let roff = String::from_utf8(roff).unwrap();
        assert!(roff.contains(".TH edge-agent 1"), "{roff:.200}");
        assert!(roff.contains("edge\\-agent\\-bridge(1)"));
        assert!(roff.contains("edge\\-agent\\-health(1)"));
    }

    #[test]
    fn every_command_gets_a_page() {
        let dir = tempfile::tempdir().unwrap();
        pages(dir.path()).unwrap();
        for name in [
            "edge-agent.1",
            "edge-agent-run.1",
            "edge-agent-bridge.1",
            "edge-agent-bridge-render.1",
            "edge-agent-files-get.1",
            "edge-agent-op-start.1",
            "edge-agent-health.1",
        ] {
            let page = std::fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(page.contains(".TH "), "{name} is not a page");
        }
    }
}

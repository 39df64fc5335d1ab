//! The command line (clap derive): `edge-agent [--config FILE] <command>`.
//!
//! Only the grammar lives here. What the commands do is `main`'s business, and where the
//! configuration comes from when `--config` is absent is [`crate::config::load`]'s.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "edge-agent", version, about)]
pub struct Cli {
    /// The configuration file [default: $EDGE_AGENT_CONFIG, else /etc/edge-agent/edge-agent.yaml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Connect to the broker, keep the digital twin and serve the HTTP API, until SIGINT or SIGTERM
    Run,
    /// Inspect the configuration
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum ConfigAction {
    /// Print the effective configuration (file + environment + defaults), secrets masked
    Show,
    /// Print the documented default configuration file
    Default,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("edge-agent").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_an_optional_config_file() {
        let cli = parse(&["run"]).unwrap();
        assert_eq!(cli.command, Command::Run);
        assert_eq!(cli.config, None);

        let cli = parse(&["--config", "a.yaml", "run"]).unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("a.yaml")));
    }

    #[test]
    fn the_config_file_may_also_follow_the_subcommand() {
        let cli = parse(&["config", "show", "--config", "b.yaml"]).unwrap();
        assert_eq!(
            cli.command,
            Command::Config {
                action: ConfigAction::Show
            }
        );
        assert_eq!(cli.config, Some(PathBuf::from("b.yaml")));
        assert_eq!(
            parse(&["run", "--config=c.yaml"]).unwrap().config,
            Some("c.yaml".into())
        );
    }

    #[test]
    fn config_default_is_a_command() {
        assert_eq!(
            parse(&["config", "default"]).unwrap().command,
            Command::Config {
                action: ConfigAction::Default
            }
        );
    }

    #[test]
    fn a_command_is_required_and_unknown_ones_are_refused() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["serve"]).is_err());
        assert!(parse(&["config"]).is_err());
    }

    #[test]
    fn version_is_printed() {
        let err = parse(&["--version"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayVersion);
        assert!(err.to_string().contains(env!("CARGO_PKG_VERSION")));
    }
}

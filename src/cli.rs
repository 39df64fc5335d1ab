//! The command line (clap derive): `edge-agent [--config FILE] <command>`.
//!
//! Only the grammar lives here (`files` REMOTE arguments are parsed into
//! [`crate::client::Remote`]s, so a bad path is a usage error). What the commands do is `main`'s business, and where the
//! configuration comes from when `--config` is absent is [`crate::config::load`]'s.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::client::{Base, Remote};

#[derive(Debug, Parser)]
#[command(name = "edge-agent", version, about)]
pub struct Cli {
    /// The configuration file [default: $EDGE_AGENT_CONFIG, else /etc/edge-agent/edge-agent.yaml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

// `Files` carries URLs; the value is built once per process, so its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Connect to the broker, keep the digital twin and serve the HTTP API, until SIGINT or SIGTERM
    Run,
    /// Inspect the configuration
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Generate, prove and explain the Mosquitto bridge files of the configured clouds
    Bridge {
        #[command(subcommand)]
        action: BridgeAction,
    },
    /// Move files to and from an agent's file transfer service (/te/v1/files)
    Files {
        #[command(flatten)]
        options: FilesOptions,
        #[command(subcommand)]
        action: FilesAction,
    },
}

/// Where the agent is and how to trust it; accepted before or after the `files` action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct FilesOptions {
    /// The agent's base URL, e.g. http://gateway:8000 [default: http.public_url of the configuration]
    #[arg(long, global = true, value_name = "BASE")]
    pub url: Option<Base>,
    /// Trust only this CA (PEM) for an HTTPS agent, instead of the system's roots
    #[arg(long, global = true, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM), for an agent that requires one; needs --key-file
    #[arg(long, global = true, value_name = "PEM", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM); needs --cert-file
    #[arg(long, global = true, value_name = "PEM", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
}

/// REMOTE: a path in the agent's file store (child1/firmware_update/fw.bin) or a full
/// http(s)://…/te/v1/files/… URL.
#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum FilesAction {
    /// Upload LOCAL to REMOTE, with its SHA-256 for the agent to verify
    Put { local: PathBuf, remote: Remote },
    /// Download REMOTE to LOCAL, resuming a partial LOCAL, and verify its SHA-256
    Get { remote: Remote, local: PathBuf },
    /// Delete REMOTE (also succeeds when it does not exist)
    Rm { remote: Remote },
}

#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum BridgeAction {
    /// Check the clouds of the configuration and write their bridge files into bridge.dir (or
    /// --out DIR); then run bridge.restart_command if a file changed
    Render {
        /// Only this cloud (other clouds' files are left alone)
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Write into DIR instead of bridge.dir, and do not restart the broker
        #[arg(long, value_name = "DIR", conflicts_with = "stdout")]
        out: Option<PathBuf>,
        /// Print the files instead of writing them
        #[arg(long)]
        stdout: bool,
    },
    /// Render into a temp dir and start the real mosquitto on it (every bridge pointed at a
    /// closed loopback port): exit 0 when mosquitto loads it, 1 with its error mapped to the YAML key
    Validate {
        /// Only this cloud
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Print a cloud's rules: local topic, direction, remote topic, QoS
    Inspect { name: String },
    /// Tell where a local or remote TOPIC goes through a cloud's bridge: exit 0 if some rule
    /// carries it, 2 if none does, 1 for a topic with wildcards
    Route { name: String, topic: String },
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

    fn files(args: &[&str]) -> (FilesOptions, FilesAction) {
        match parse(args).unwrap().command {
            Command::Files { options, action } => (options, action),
            other => panic!("not a files command: {other:?}"),
        }
    }

    #[test]
    fn files_put_get_and_rm_take_their_local_and_remote_arguments() {
        let remote: Remote = "child1/fw.bin".parse().unwrap();
        assert_eq!(
            files(&["files", "put", "fw.bin", "child1/fw.bin"]),
            (
                FilesOptions::default(),
                FilesAction::Put {
                    local: "fw.bin".into(),
                    remote: remote.clone()
                }
            )
        );
        assert_eq!(
            files(&["files", "get", "child1/fw.bin", "out.bin"]).1,
            FilesAction::Get {
                remote: remote.clone(),
                local: "out.bin".into()
            }
        );
        assert_eq!(
            files(&["files", "rm", "http://gw:8000/te/v1/files/child1/fw.bin"]).1,
            FilesAction::Rm {
                remote: "http://gw:8000/te/v1/files/child1/fw.bin".parse().unwrap()
            }
        );
    }

    #[test]
    fn files_options_go_before_or_after_the_action() {
        let expected = FilesOptions {
            url: Some("https://gw:8000".parse().unwrap()),
            ca_file: Some("ca.pem".into()),
            cert_file: Some("c.pem".into()),
            key_file: Some("k.pem".into()),
        };
        let (before, _) = files(&[
            "files",
            "--url",
            "https://gw:8000",
            "--ca-file",
            "ca.pem",
            "--cert-file",
            "c.pem",
            "--key-file",
            "k.pem",
            "rm",
            "a",
        ]);
        let (after, _) = files(&[
            "files",
            "rm",
            "a",
            "--url=https://gw:8000",
            "--ca-file",
            "ca.pem",
            "--cert-file",
            "c.pem",
            "--key-file",
            "k.pem",
        ]);
        assert_eq!((before, after), (expected.clone(), expected));
    }

    #[test]
    fn files_commands_refuse_bad_remotes_and_missing_arguments() {
        assert!(parse(&["files", "rm", "../etc/passwd"]).is_err());
        assert!(parse(&["files", "rm", "ftp://gw/x"]).is_err());
        assert!(parse(&["files", "put", "only-local"]).is_err());
        assert!(parse(&["files", "get"]).is_err());
        assert!(parse(&["files"]).is_err());
        assert!(parse(&["files", "rm", "a", "--cert-file", "c.pem"]).is_err());
        assert!(parse(&["files", "rm", "a", "--key-file", "k.pem"]).is_err());
        assert!(parse(&["files", "rm", "a", "--url", "gw:8000"]).is_err());
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

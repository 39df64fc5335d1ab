//! The command line (clap derive): `edge-agent [--config FILE] <command>`.
//!
//! Only the grammar lives here (`files` REMOTE arguments are parsed into
//! [`crate::client::Remote`]s, `op start --set` into [`Setting`]s, so a bad value is a usage
//! error). What the commands do is `main`'s business, and where the
//! configuration comes from when `--config` is absent is [`crate::config::load`]'s.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::child::HandlerSpec;
use crate::client::op::start::check_name;
use crate::client::op::Setting;
use crate::client::{Base, Remote};
use crate::files::digest::Sha256;
use crate::topic::EntityTopicId;

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
    /// Act as a child device of a gateway: register, announce a capability per handler, and run
    /// the handler of each command the gateway sends, downloading and uploading its files
    Child(ChildArgs),
    /// Start, follow, list and cancel operations on child devices (/te/v1/operations)
    Op {
        #[command(flatten)]
        options: OpOptions,
        #[command(subcommand)]
        action: OpAction,
    },
    /// Ask a running agent whether it is ready (GET /readyz; with --live, alive: /healthz): exit 0
    /// when it is, 1 otherwise, with its answer on stdout. For container and monitoring health
    /// checks
    Health(HealthArgs),
    /// Print the completion script for SHELL on stdout (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page edge-agent(1), in roff, on stdout; with --dir, write it and a page
    /// per command (edge-agent-run.1, edge-agent-bridge-render.1, ...) into DIR
    Man {
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `health`: which agent, which probe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct HealthArgs {
    /// The agent's base URL [default: the configuration's http.bind on the loopback interface,
    /// or http.public_url when the agent speaks HTTPS]
    #[arg(long, value_name = "BASE")]
    pub url: Option<Base>,
    /// Ask whether the agent is alive (/healthz) rather than ready (/readyz)
    #[arg(long)]
    pub live: bool,
    /// How long to wait for the answer
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub tls: AgentTls,
}

/// Where the agent is and how to trust it; accepted before or after the `op` action. The
/// agent's URL is `--gateway-url` (as for `child`), not `--url`: `op start --url` is the
/// remote file's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct OpOptions {
    /// The agent's base URL, e.g. http://gateway:8000 [default: http.public_url of the configuration]
    #[arg(long, global = true, value_name = "BASE")]
    pub gateway_url: Option<Base>,
    #[command(flatten)]
    pub tls: AgentTls,
}

#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum OpAction {
    /// Start OP on a child device: upload --file (or have the agent download --url), send the
    /// command, print its cmd id and topic; with --wait, print each status until the end and
    /// exit 0 when successful, 1 when failed, 2 when timed out
    Start(StartArgs),
    /// List operations: cmd id, entity, operation, status, time of the last change
    List {
        /// Only this entity's (topic id)
        #[arg(long, value_name = "TOPIC-ID")]
        entity: Option<EntityTopicId>,
        /// Only operations of this type
        #[arg(long, value_name = "OP")]
        operation: Option<String>,
        /// Only operations with this status
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
    },
    /// Show an operation as JSON, with every status it went through
    Show {
        #[arg(value_name = "CMD_ID")]
        cmd_id: String,
    },
    /// Cancel an operation that has not ended: it fails with reason `cancelled`
    Cancel {
        #[arg(value_name = "CMD_ID")]
        cmd_id: String,
    },
    /// Download the file a config_snapshot or log_upload operation received to LOCAL,
    /// resuming a partial LOCAL, and verify its SHA-256
    Fetch {
        #[arg(value_name = "CMD_ID")]
        cmd_id: String,
        local: PathBuf,
    },
}

/// `op start`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct StartArgs {
    /// The operation: firmware_update, config_snapshot, …
    #[arg(value_name = "OP", value_parser = operation_name)]
    pub operation: String,
    /// The child device (or service) to run it: its topic id, e.g. device/child1//
    #[arg(long, value_name = "TOPIC-ID")]
    pub entity: EntityTopicId,
    /// Upload this file for the operation (the agent serves it to the child)
    #[arg(long, value_name = "LOCAL", conflicts_with = "url")]
    pub file: Option<PathBuf>,
    /// Have the agent download the operation's file from this http(s) URL
    #[arg(long, value_name = "URL", value_parser = remote_url)]
    pub url: Option<String>,
    /// The file's SHA-256: a local file must have it, a downloaded one is checked against it
    #[arg(long, value_name = "HEX", value_parser = sha256)]
    pub sha256: Option<Sha256>,
    /// A payload field: KEY=VALUE (JSON if it reads as an object, array, string, true, false
    /// or null, else text, numbers included) or KEY:=JSON; repeat for more
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub settings: Vec<Setting>,
    /// The command id [default: chosen by the agent; with --file, cli-<unix ms>-<4 hex digits>]
    #[arg(long, value_name = "ID", value_parser = cmd_id)]
    pub cmd_id: Option<String>,
    /// Fail the operation (reason `timeout`) if the child has not finished within this time
    /// [default: the agent's for OP]
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub timeout: Option<Duration>,
    /// Send it even if the child has not announced OP
    #[arg(long)]
    pub force: bool,
    /// Keep the served file in the agent's store after the end
    #[arg(long)]
    pub keep_file: bool,
    /// Follow the operation to its end, printing each status
    #[arg(long)]
    pub wait: bool,
}

fn operation_name(text: &str) -> Result<String, String> {
    check_name("operation", text)
}

fn cmd_id(text: &str) -> Result<String, String> {
    check_name("cmd id", text)
}

fn remote_url(text: &str) -> Result<String, String> {
    match text.parse::<Remote>() {
        Ok(Remote::Url(url)) => Ok(url.to_string()),
        Ok(Remote::Path(_)) => Err(format!("{text:?} is not an http:// or https:// URL")),
        Err(e) => Err(e.to_string()),
    }
}

fn sha256(text: &str) -> Result<Sha256, String> {
    text.parse()
        .map_err(|()| format!("{text:?} is not a SHA-256: 64 hex digits"))
}

/// `edge-agent child`: the reference child-device runner (issue #5). Checked further, all
/// problems at once, by [`crate::child::Settings::resolve`].
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ChildArgs {
    /// The child's entity topic id: device/<name>//
    #[arg(long, value_name = "TOPIC-ID")]
    pub entity: EntityTopicId,
    /// The gateway's file transfer service, e.g. http://gw:8000; file-store URLs in commands
    /// (tedgeUrl) are fetched from here
    #[arg(long, value_name = "URL")]
    pub gateway_url: Base,
    /// The gateway's MQTT broker [default: the host of --gateway-url]
    #[arg(long, value_name = "HOST")]
    pub mqtt_host: Option<String>,
    /// The gateway's MQTT port (plain MQTT)
    #[arg(long, value_name = "PORT", default_value_t = 1883)]
    pub mqtt_port: u16,
    /// The first level of the gateway's topics (its mqtt.topic_root)
    #[arg(long, value_name = "ROOT", default_value = "te")]
    pub topic_root: String,
    /// The entity this child registers under [default: none given, the gateway's main device]
    #[arg(long, value_name = "TOPIC-ID")]
    pub parent: Option<EntityTopicId>,
    /// <op>=<command>: run `sh -c <command>` for each <op> command; repeat for more operations
    #[arg(long = "handler", value_name = "OP=COMMAND", required = true)]
    pub handlers: Vec<HandlerSpec>,
    /// A handler still running after this long is killed and its command fails
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = duration)]
    pub handler_timeout: Duration,
    /// On SIGINT/SIGTERM, how long running commands may take to finish before they are
    /// killed and reported failed
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    pub shutdown_grace: Duration,
    /// Where each command gets its temporary directory (downloads, handler output)
    /// [default: the system's temp dir]
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

fn duration(text: &str) -> Result<Duration, String> {
    crate::config::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration like 30s, 10m or 1h"))
}

/// How a client of the agent trusts it, and proves itself to it (`files`, `op`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct AgentTls {
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

impl AgentTls {
    pub fn options(self) -> crate::client::TlsOptions {
        crate::client::TlsOptions {
            ca_file: self.ca_file,
            identity: self.cert_file.zip(self.key_file),
        }
    }
}

/// Where the agent is and how to trust it; accepted before or after the `files` action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct FilesOptions {
    /// The agent's base URL, e.g. http://gateway:8000 [default: http.public_url of the configuration]
    #[arg(long, global = true, value_name = "BASE")]
    pub url: Option<Base>,
    #[command(flatten)]
    pub tls: AgentTls,
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
            tls: AgentTls {
                ca_file: Some("ca.pem".into()),
                cert_file: Some("c.pem".into()),
                key_file: Some("k.pem".into()),
            },
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

    fn child(args: &[&str]) -> Result<ChildArgs, clap::Error> {
        let all = [
            "child",
            "--entity",
            "device/c1//",
            "--gateway-url",
            "http://gw:8000",
        ];
        match parse(&[&all[..], args].concat())?.command {
            Command::Child(args) => Ok(args),
            other => panic!("not a child command: {other:?}"),
        }
    }

    #[test]
    fn child_takes_repeated_handlers_and_has_defaults_for_the_rest() {
        let args = child(&[
            "--handler",
            "firmware_update=flash \"$EDGE_FILE\"",
            "--handler",
            "restart=reboot",
        ])
        .unwrap();
        assert_eq!(
            args,
            ChildArgs {
                entity: "device/c1//".parse().unwrap(),
                gateway_url: "http://gw:8000".parse().unwrap(),
                mqtt_host: None,
                mqtt_port: 1883,
                topic_root: "te".into(),
                parent: None,
                handlers: vec![
                    "firmware_update=flash \"$EDGE_FILE\"".parse().unwrap(),
                    "restart=reboot".parse().unwrap()
                ],
                handler_timeout: Duration::from_secs(600),
                shutdown_grace: Duration::from_secs(10),
                work_dir: None,
            }
        );
        let args = child(&[
            "--handler=restart=reboot",
            "--mqtt-host",
            "broker",
            "--mqtt-port",
            "8883",
            "--topic-root",
            "tedge",
            "--parent",
            "device/gw2",
            "--handler-timeout",
            "90s",
            "--shutdown-grace",
            "500ms",
            "--work-dir",
            "/var/tmp/child",
        ])
        .unwrap();
        assert_eq!(args.mqtt_host.as_deref(), Some("broker"));
        assert_eq!(args.mqtt_port, 8883);
        assert_eq!(args.topic_root, "tedge");
        assert_eq!(args.parent, Some("device/gw2//".parse().unwrap()));
        assert_eq!(args.handler_timeout, Duration::from_secs(90));
        assert_eq!(args.shutdown_grace, Duration::from_millis(500));
        assert_eq!(args.work_dir, Some("/var/tmp/child".into()));
    }

    #[test]
    fn child_refuses_missing_handlers_and_malformed_values() {
        assert!(child(&[]).is_err());
        assert!(child(&["--handler", "no-equals"]).is_err());
        assert!(child(&["--handler", "a=b", "--handler-timeout", "soon"]).is_err());
        assert!(child(&["--handler", "a=b", "--parent", "a/b/c/d/e"]).is_err());
        assert!(parse(&[
            "child",
            "--entity",
            "device/+//",
            "--gateway-url",
            "http://gw",
            "--handler",
            "a=b"
        ])
        .is_err());
        assert!(parse(&[
            "child",
            "--entity",
            "device/c1",
            "--gateway-url",
            "gw:8000",
            "--handler",
            "a=b"
        ])
        .is_err());
    }

    fn op(args: &[&str]) -> Result<(OpOptions, OpAction), clap::Error> {
        match parse(&[&["op"], args].concat())?.command {
            Command::Op { options, action } => Ok((options, action)),
            other => panic!("not an op command: {other:?}"),
        }
    }

    fn start(args: &[&str]) -> Result<StartArgs, clap::Error> {
        match op(args)?.1 {
            OpAction::Start(args) => Ok(args),
            other => panic!("not op start: {other:?}"),
        }
    }

    #[test]
    fn op_start_takes_a_file_or_a_url_settings_and_switches() {
        let args = start(&[
            "start",
            "firmware_update",
            "--entity",
            "device/child1//",
            "--file",
            "fw.bin",
            "--set",
            "name=fw",
            "--set",
            "version=1.2",
            "--wait",
        ])
        .unwrap();
        assert_eq!(
            args,
            StartArgs {
                operation: "firmware_update".into(),
                entity: "device/child1//".parse().unwrap(),
                file: Some("fw.bin".into()),
                url: None,
                sha256: None,
                settings: vec!["name=fw".parse().unwrap(), "version=1.2".parse().unwrap()],
                cmd_id: None,
                timeout: None,
                force: false,
                keep_file: false,
                wait: true,
            }
        );
        let hex = "AB".repeat(32);
        let args = start(&[
            "start",
            "config_update",
            "--entity=device/c2",
            "--url",
            "https://example.com/a.conf",
            "--sha256",
            &hex,
            "--cmd-id",
            "my-1",
            "--timeout",
            "90s",
            "--force",
            "--keep-file",
        ])
        .unwrap();
        assert_eq!(args.entity.as_str(), "device/c2//");
        assert_eq!(args.url.as_deref(), Some("https://example.com/a.conf"));
        assert_eq!(args.sha256, Some(Sha256([0xab; 32])));
        assert_eq!(args.cmd_id.as_deref(), Some("my-1"));
        assert_eq!(args.timeout, Some(Duration::from_secs(90)));
        assert!(args.force && args.keep_file && !args.wait);
    }

    #[test]
    fn op_start_refuses_both_sources_and_malformed_values() {
        let base = ["start", "firmware_update", "--entity", "device/c1//"];
        let with = |more: &[&str]| start(&[&base[..], more].concat());
        assert!(with(&[]).is_ok());
        assert!(with(&["--file", "a", "--url", "http://x/a"]).is_err());
        assert!(with(&["--url", "ftp://x/a"]).is_err());
        assert!(with(&["--url", "fw.bin"]).is_err());
        assert!(with(&["--sha256", "abc"]).is_err());
        assert!(with(&["--set", "novalue"]).is_err());
        assert!(with(&["--cmd-id", "a/b"]).is_err());
        assert!(with(&["--timeout", "soon"]).is_err());
        assert!(
            start(&["start", "firmware_update"]).is_err(),
            "--entity is required"
        );
        assert!(start(&["start", "a b", "--entity", "device/c1//"]).is_err());
        assert!(start(&["start", "x", "--entity", "device/+//"]).is_err());
    }

    #[test]
    fn op_options_go_before_or_after_the_action() {
        let expected = OpOptions {
            gateway_url: Some("https://gw:8000".parse().unwrap()),
            tls: AgentTls {
                ca_file: Some("ca.pem".into()),
                cert_file: Some("c.pem".into()),
                key_file: Some("k.pem".into()),
            },
        };
        let options = [
            "--gateway-url",
            "https://gw:8000",
            "--ca-file",
            "ca.pem",
            "--cert-file",
            "c.pem",
            "--key-file",
            "k.pem",
        ];
        let (before, action) = op(&[&options[..], &["show", "c1"]].concat()).unwrap();
        let (after, _) = op(&[&["show", "c1"], &options[..]].concat()).unwrap();
        assert_eq!((before, after), (expected.clone(), expected));
        assert_eq!(
            action,
            OpAction::Show {
                cmd_id: "c1".into()
            }
        );
        assert!(op(&["show", "c1", "--cert-file", "c.pem"]).is_err());
        assert!(op(&["show", "c1", "--url", "http://gw"]).is_err());
    }

    #[test]
    fn op_list_show_cancel_and_fetch_take_their_arguments() {
        assert_eq!(
            op(&["list", "--entity", "device/child1", "--status", "failed"])
                .unwrap()
                .1,
            OpAction::List {
                entity: Some("device/child1//".parse().unwrap()),
                operation: None,
                status: Some("failed".into()),
            }
        );
        assert_eq!(
            op(&["cancel", "c1"]).unwrap().1,
            OpAction::Cancel {
                cmd_id: "c1".into()
            }
        );
        assert_eq!(
            op(&["fetch", "c1", "out.conf"]).unwrap().1,
            OpAction::Fetch {
                cmd_id: "c1".into(),
                local: "out.conf".into()
            }
        );
        assert!(op(&["fetch", "c1"]).is_err());
        assert!(op(&["show"]).is_err());
        assert!(op(&[]).is_err());
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

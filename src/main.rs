//! The `edge-agent` binary, in three phases (STYLE.md, linkerd's model): load and validate the
//! config (a bad config exits with 64), bind and load (a failure exits with 1), then run until
//! SIGINT or SIGTERM and shut down gracefully (exit 0). `anyhow` lives here and nowhere below.
//! The `files` commands are a client: 0 on success, 1 on any failure, 64 when the configuration
//! they need (for `http.public_url`) is invalid. The `op` commands likewise, except that
//! `op start --wait` exits with 0 when the operation ends successful, 1 when it fails and 2
//! when it times out. `child` reads no configuration file: invalid options exit with 64, a
//! failure to start with 1, and SIGINT/SIGTERM end it with 0. Usage errors exit with 2 (clap).
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use edge_agent::bridge::commands;
use edge_agent::bridge::watch::ConfigSource;
use edge_agent::cli::{
    BridgeAction, ChildArgs, Cli, Command, ConfigAction, FilesAction, FilesOptions, HealthArgs,
    OpAction, OpOptions, StartArgs,
};
use edge_agent::client::health::Probe;
use edge_agent::client::op::{render, End, Source, Start};
use edge_agent::client::{self, Base, Client, TlsOptions};
use edge_agent::config::{self, Config, HttpConfig, LogFormat};
use edge_agent::manual;
use edge_agent::ops::store::Filter;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Config {
        action: ConfigAction::Default,
    } = cli.command
    {
        print!("{}", config::DEFAULT_YAML);
        return ExitCode::SUCCESS;
    }
    match cli.command {
        Command::Completions { shell } => {
            let written = manual::completions(shell, &mut std::io::stdout().lock());
            return written_or_failed(written, "the completion script");
        }
        Command::Man { dir: None } => {
            let written = manual::page(&mut std::io::stdout().lock());
            return written_or_failed(written, "the manual page");
        }
        Command::Man { dir: Some(dir) } => {
            let written = manual::pages(&dir);
            return written_or_failed(written, &format!("the manual pages in {}", dir.display()));
        }
        _ => {}
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    if let Command::Health(args) = cli.command {
        return health(cli.config.as_deref(), &env, args);
    }
    if let Command::Files { options, action } = cli.command {
        return files(cli.config.as_deref(), &env, options, action);
    }
    if let Command::Child(args) = cli.command {
        return child(args);
    }
    if let Command::Op { options, action } = cli.command {
        return op(cli.config.as_deref(), &env, options, action);
    }
    let config = match config::load(cli.config.as_deref(), &env) {
        Ok(config) => config,
        Err(error) => {
            // With its cause: "cannot read the configuration file F: No such file or directory".
            eprintln!("edge-agent: {:#}", anyhow::Error::new(error));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command {
        Command::Config { .. } => {
            print!("{}", config.to_yaml_masked());
            ExitCode::SUCCESS
        }
        Command::Files { .. }
        | Command::Child(_)
        | Command::Op { .. }
        | Command::Health(_)
        | Command::Completions { .. }
        | Command::Man { .. } => {
            unreachable!("handled before the configuration is loaded")
        }
        Command::Bridge { action } => {
            let path = config::path(cli.config.as_deref(), &env);
            ExitCode::from(bridge(&config, &path, action))
        }
        Command::Run => match run(config, config::path(cli.config.as_deref(), &env), env) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!("{error:#}");
                eprintln!("edge-agent: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(config: Config, path: std::path::PathBuf, env: Vec<(String, String)>) -> anyhow::Result<()> {
    init_logging(&config);
    // Before anything builds a TLS client: rustls needs exactly one crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .thread_name("edge-agent")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Before the agent starts: a SIGHUP while it loads must not end it.
        let signals = edge_agent::service::Signals::install();
        let source = ConfigSource { path, env };
        let agent = edge_agent::app::start_following(config, Some(source))
            .await
            .context("cannot start")?;
        edge_agent::service::supervise(&agent, signals).await;
        tracing::info!("shutting down");
        let graceful = agent.shutdown().await;
        if graceful {
            tracing::info!("stopped gracefully");
        } else {
            tracing::warn!("stopped after the grace period ran out");
        }
        Ok(())
    })
}

/// `bridge render|validate|inspect|route`, on a current-thread runtime; the exit code.
fn bridge(config: &Config, config_path: &Path, action: BridgeAction) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("edge-agent: cannot start the async runtime: {e}");
            return commands::EXIT_PROBLEM;
        }
    };
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    let io = &mut commands::Out {
        out: &mut stdout,
        err: &mut stderr,
    };
    runtime.block_on(async {
        match action {
            BridgeAction::Render { name, out, stdout } => {
                commands::render(
                    config,
                    config_path,
                    name.as_deref(),
                    out.as_deref(),
                    stdout,
                    io,
                )
                .await
            }
            BridgeAction::Validate { name } => {
                commands::validate(config, config_path, name.as_deref(), io).await
            }
            BridgeAction::Inspect { name } => commands::inspect(config, &name, io),
            BridgeAction::Route { name, topic } => commands::route(config, &name, &topic, io),
        }
    })
}

/// `files put|get|rm`: the configuration is read only when REMOTE is a store path and no
/// `--url` is given, for `http.public_url`.
fn files(
    config_path: Option<&Path>,
    env: &[(String, String)],
    options: FilesOptions,
    action: FilesAction,
) -> ExitCode {
    let remote = match &action {
        FilesAction::Put { remote, .. } | FilesAction::Get { remote, .. } => remote,
        FilesAction::Rm { remote } => remote,
    };
    let base = match options.url {
        Some(base) => Some(base),
        None if remote.needs_base() => match agent_base(config_path, env, PUBLIC_URL) {
            Ok(base) => Some(base),
            Err(code) => return code,
        },
        None => None,
    };
    let Some(url) = remote.url(base.as_ref()) else {
        eprintln!("edge-agent: no base URL for {remote}");
        return ExitCode::from(EXIT_CONFIG);
    };
    printed(with_client(options.tls.options(), |client| async move {
        Ok(match action {
            FilesAction::Put { local, .. } => client.put(&local, &url).await?.to_string(),
            FilesAction::Get { local, .. } => client.get(&url, &local).await?.to_string(),
            FilesAction::Rm { .. } => client.rm(&url).await?.to_string(),
        })
    }))
}

/// `op start|list|show|cancel|fetch`: the configuration is read only when no
/// `--gateway-url` is given, for `http.public_url`.
fn op(
    config_path: Option<&Path>,
    env: &[(String, String)],
    options: OpOptions,
    action: OpAction,
) -> ExitCode {
    let base = match options.gateway_url {
        Some(base) => base,
        None => match agent_base(config_path, env, PUBLIC_URL) {
            Ok(base) => base,
            Err(code) => return code,
        },
    };
    let outcome = with_client(options.tls.options(), |client| async move {
        op_action(&client, &base, action).await
    });
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("edge-agent: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `work` with a client of the agent (`files`, `op`), on a current-thread runtime.
fn with_client<T, F, Fut>(tls: TlsOptions, work: F) -> anyhow::Result<T>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Before the client is built: rustls needs exactly one crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::new(&tls, client::Style::detect())?;
        work(client).await
    })
}

/// Runs one `op` action, printing its result on stdout; the exit code.
async fn op_action(client: &Client, base: &Base, action: OpAction) -> anyhow::Result<u8> {
    match action {
        OpAction::Start(args) => {
            let wait = args.wait;
            let started = client.start_operation(base, &start_of(args)).await?;
            println!("{} {}", started.cmd_id, started.topic);
            if !wait {
                return Ok(0);
            }
            let end = client
                .follow(base, &started, |line| println!("{line}"))
                .await?;
            match &end {
                End::Successful => {}
                End::Failed(reason) if reason.is_empty() => {
                    eprintln!("edge-agent: operation {} failed", started.cmd_id)
                }
                End::Failed(reason) => {
                    eprintln!("edge-agent: operation {} failed: {reason}", started.cmd_id)
                }
                End::TimedOut => eprintln!(
                    "edge-agent: operation {} timed out: the child did not finish in time",
                    started.cmd_id
                ),
            }
            Ok(end.exit_code())
        }
        OpAction::List {
            entity,
            operation,
            status,
        } => {
            let filter = Filter {
                entity: entity.map(|e| e.as_str().to_owned()),
                operation,
                status,
            };
            print!(
                "{}",
                render::table(&client.operations(base, &filter).await?)
            );
            Ok(0)
        }
        OpAction::Show { cmd_id } => {
            println!("{}", render::show(&client.operation(base, &cmd_id).await?));
            Ok(0)
        }
        OpAction::Cancel { cmd_id } => {
            let op = client.cancel_operation(base, &cmd_id).await?;
            println!("cancelled {}", op.cmd_id);
            Ok(0)
        }
        OpAction::Fetch { cmd_id, local } => {
            println!("{}", client.fetch_operation(base, &cmd_id, &local).await?);
            Ok(0)
        }
    }
}

fn start_of(args: StartArgs) -> Start {
    let source = match (args.file, args.url) {
        (Some(local), _) => Source::Local(local),
        (None, Some(url)) => Source::Remote(url),
        (None, None) => Source::None,
    };
    Start {
        operation: args.operation,
        entity: args.entity,
        source,
        sha256: args.sha256,
        settings: args.settings,
        cmd_id: args.cmd_id,
        timeout: args.timeout,
        force: args.force,
        keep_file: args.keep_file,
    }
}

/// `child`: the reference child device, until SIGINT or SIGTERM.
fn child(args: ChildArgs) -> ExitCode {
    let settings = match edge_agent::child::Settings::resolve(args) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("edge-agent: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|level| !level.trim().is_empty())
        .map_or_else(|| log_filter("info"), |level| log_filter(&level));
    tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .finish()
        .with(filter)
        .init();
    // Before the HTTP client is built: rustls needs exactly one crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("edge-agent-child")
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| {
            runtime
                .block_on(edge_agent::child::run(settings, shutdown_signal()))
                .context("cannot start")
        });
    match outcome {
        Ok(graceful) => {
            if graceful {
                tracing::info!("stopped gracefully");
            } else {
                tracing::warn!("stopped after killing what did not end in time");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("edge-agent: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `completions`, `man`: 0, or 1 with the reason.
fn written_or_failed(written: std::io::Result<()>, what: &str) -> ExitCode {
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("edge-agent: cannot write {what}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `health`: 0 and the agent's answer when it is ready (or alive, with `--live`), 1 otherwise;
/// the configuration is read only when no `--url` is given.
fn health(config_path: Option<&Path>, env: &[(String, String)], args: HealthArgs) -> ExitCode {
    let base = match args.url {
        Some(base) => base,
        None => match agent_base(config_path, env, ("http.bind", HttpConfig::local_url)) {
            Ok(base) => base,
            Err(code) => return code,
        },
    };
    let probe = if args.live { Probe::Live } else { Probe::Ready };
    printed(with_client(args.tls.options(), |client| async move {
        let body = client.health(&base, probe, args.timeout).await?;
        Ok(body.trim_end().to_owned())
    }))
}

/// Which URL of the configuration a client command takes, and the key it comes from.
type AgentUrl = (&'static str, fn(&HttpConfig) -> String);

const PUBLIC_URL: AgentUrl = ("http.public_url", |http| http.public_url.clone());

/// The agent's base URL from the configuration, when the command line gave none; a bad
/// configuration is said on stderr and is the exit code 64.
fn agent_base(
    config_path: Option<&Path>,
    env: &[(String, String)],
    (key, url): AgentUrl,
) -> Result<Base, ExitCode> {
    let base = config::load(config_path, env)
        .map_err(anyhow::Error::new)
        .and_then(|config| {
            let url = url(&config.http);
            url.parse::<Base>()
                .with_context(|| format!("invalid {key} {url:?}"))
        });
    base.map_err(|error| {
        eprintln!("edge-agent: {error:#}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// A client command's result on stdout (0), or its failure on stderr (1).
fn printed(outcome: anyhow::Result<String>) -> ExitCode {
    match outcome {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("edge-agent: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT and SIGTERM, as one future.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// `log.level` as a filter of targets (`info,edge_agent::mqtt=debug`): the configuration
/// checked it already. Not tracing-subscriber's `EnvFilter`, whose regex engine would take
/// hundreds of KiB of the binary and of the idle RSS for span and field filters no one sets.
fn log_filter(level: &str) -> Targets {
    level
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO))
}

fn init_logging(config: &Config) {
    let builder = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(std::io::stderr);
    let filter = log_filter(&config.log.level);
    match config.log.format {
        LogFormat::Json => builder.json().finish().with(filter).init(),
        LogFormat::Text => builder.with_ansi(false).finish().with(filter).init(),
    }
}

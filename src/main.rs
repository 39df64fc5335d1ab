//! The `edge-agent` binary, in three phases (STYLE.md, linkerd's model): load and validate the
//! config (a bad config exits with 64), bind and load (a failure exits with 1), then run until
//! SIGINT or SIGTERM and shut down gracefully (exit 0). `anyhow` lives here and nowhere below.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use edge_agent::cli::{Cli, Command, ConfigAction};
use edge_agent::config::{self, Config, LogFormat};

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
    let env: Vec<(String, String)> = std::env::vars().collect();
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
        Command::Run => match run(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!("{error:#}");
                eprintln!("edge-agent: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(config: Config) -> anyhow::Result<()> {
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
        let agent = edge_agent::app::start(config)
            .await
            .context("cannot start")?;
        shutdown_signal().await;
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

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
}

//! Wiring (issue #2 "Running"): the agent's three start-up phases and its graceful shutdown.
//!
//! 1. read the HTTPS certificate and key if `http.tls` is set, bind the HTTP listener (a bad
//!    certificate or a taken port fails here, before anything else runs) and serve at once: twin
//!    routes answer 503 until the state is loaded (spec/twin.md §7.3);
//! 2. load the persisted twin, then build the MQTT connection with the last will;
//! 3. spawn the connection and the twin's owner task; with a configuration file to follow
//!    ([`start_following`]), the bridges' task, which renders them and re-renders on change.
//!
//! Shutdown: stop HTTP, let the twin flush and publish its `down` health, disconnect, all within
//! a grace period. [`start`] returns a handle with every bound address so tests run in-process;
//! the handle also answers what a service manager asks while the agent runs (`crate::service`):
//! is the twin alive, reload the configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bridge::watch::ConfigSource;
use crate::config::Config;
use crate::files::{OpenError, Store as FileStore};
use crate::http::tls::{self, TlsError};
use crate::metrics::Metrics;
use crate::mqtt::{self, Connection, MqttError};
use crate::readiness::{self, Readiness};
use crate::topic::EntityTopicId;
use crate::twin::api::Query;
use crate::twin::changes::Changes;
use crate::twin::error::TwinError;
use crate::twin::feed::ChangeFeed;
use crate::twin::history_file::HistoryFile;
use crate::twin::persist::{Persist, PersistError};
use crate::twin::store::{LoadError, Store, StoreConfig};
use crate::twin::task::TwinTask;
use crate::twin::{Input, TwinHandle};

/// Inputs queued for the twin; an MQTT input carries up to 1024 messages.
const INPUT_CAPACITY: usize = 1024;
const GRACE: Duration = Duration::from_secs(4);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid HTTPS settings (http.tls)")]
    HttpTls(#[from] TlsError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the persisted twin in {dir}")]
    Persist {
        dir: PathBuf,
        #[source]
        source: PersistError,
    },
    #[error(transparent)]
    Files(#[from] OpenError),
    #[error("cannot load the persisted twin")]
    Load(#[from] LoadError),
    #[error("invalid MQTT settings")]
    Mqtt(#[from] MqttError),
    #[error("the loading task failed")]
    Join(#[from] tokio::task::JoinError),
    #[error("cannot load the operations")]
    Operations(#[from] crate::ops::persist::PersistError),
    #[error("cannot prepare the download cache")]
    Fetch(#[from] crate::ops::fetch::FetchError),
}

/// A running agent.
pub struct Agent {
    http_addr: SocketAddr,
    files: FileStore,
    readiness: watch::Receiver<Readiness>,
    http_stop: CancellationToken,
    twin_stop: CancellationToken,
    mqtt_stop: CancellationToken,
    http: JoinHandle<()>,
    twin: JoinHandle<()>,
    mqtt: JoinHandle<()>,
    bridges: Option<JoinHandle<()>>,
    /// Asks the bridges' task to read the configuration again; it answers when done.
    reloads: Option<mpsc::Sender<oneshot::Sender<()>>>,
    twin_handle: TwinHandle,
    main_device: EntityTopicId,
    ops: JoinHandle<()>,
    ops_stop: CancellationToken,
}

/// Starts the agent: binds, loads the twin, connects. Must run inside a multi-thread runtime.
/// The configuration file is not followed and no bridge file is rendered.
pub async fn start(config: Config) -> Result<Agent, StartError> {
    start_following(config, None).await
}

/// [`start`], and with `source`, the bridges' task: it renders the bridge files of `config`
/// and re-renders them when `source` changes (`edge-agent run`).
pub async fn start_following(
    config: Config,
    source: Option<ConfigSource>,
) -> Result<Agent, StartError> {
    let tls = config.http.tls.as_ref().map(tls::acceptor).transpose()?;
    let listener = crate::http::bind(config.http.bind).map_err(|source| StartError::Bind {
        addr: config.http.bind,
        source,
    })?;
    let http_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.http.bind,
        source,
    })?;
    let files_config = config.files.clone();
    let files = tokio::task::spawn_blocking(move || FileStore::open(&files_config)).await??;
    tracing::info!(dir = %config.files.dir.display(), used_bytes = files.used(), "file store open");
    let (readiness_tx, readiness_rx) = readiness::channel();
    let (input_tx, input_rx) = mpsc::channel(INPUT_CAPACITY);
    let handle = TwinHandle::new(input_tx.clone(), readiness_rx.clone());
    let (ops, commands, ops_inbox) = crate::ops::task::channels();
    let metrics = Metrics::new(
        config
            .bridge
            .clouds
            .iter()
            .map(|cloud| cloud.name.clone())
            .collect(),
    );
    let feed = ChangeFeed::new(config.twin.changes_kept, Changes::first_seq());
    let http_stop = CancellationToken::new();
    let http = tokio::spawn(crate::http::serve(
        crate::http::Services {
            twin: handle.clone(),
            files: files.clone(),
            ops,
            metrics: metrics.clone(),
            feed: feed.clone(),
        },
        listener,
        tls,
        http_stop.clone(),
    ));
    tokio::spawn(crate::files::sweep_task(files.clone(), http_stop.clone()));
    tracing::info!(%http_addr, "HTTP API listening");

    let dir = config.data_dir.join("twin");
    let store_config = StoreConfig::from_config(&config, std::process::id());
    let loaded = tokio::task::spawn_blocking(move || {
        let (persist, loaded) = Persist::open(&dir).map_err(|source| StartError::Persist {
            dir: dir.clone(),
            source,
        })?;
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        let (store, warnings) = Store::load(store_config, loaded.entries)?;
        for warning in &warnings {
            tracing::warn!("{warning}");
        }
        Ok::<_, StartError>((persist, store))
    })
    .await;
    // From here on a failure to start also stops the HTTP server already serving.
    let serving = http_stop.clone().drop_guard();
    let (persist, mut store) = loaded??;
    // The numbering of changes goes on from what the feed announced to early clients.
    store.changes = Changes::new(feed.latest());
    tracing::info!(entities = store.len(), "loaded the persisted twin");
    // The measurement history is read while the twin already serves and gets ready: it is
    // telemetry, and a large one (millions of points) must not delay the start (issue #2).
    {
        let (dir, cfg, twin) = (
            config.data_dir.join("twin"),
            config.twin.history,
            input_tx.clone(),
        );
        tokio::spawn(async move {
            let reading = {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || HistoryFile::read(&dir, cfg))
            };
            // The twin writes no history until it has one: it always gets one.
            let loaded = reading
                .await
                .unwrap_or_else(|e| HistoryFile::unread(&dir, cfg, e.to_string()));
            let _ = twin.send(Input::History(Box::new(loaded))).await;
        });
    }

    let options = mqtt::options(&config, store.down_health())?;
    let (publisher, connection) = Connection::new(options, &config, metrics);
    let ops_path = crate::ops::persist::path(&config.data_dir);
    let fetch_options = crate::ops::fetch::FetchOptions {
        max_bytes: config.files.max_file_bytes,
        ..Default::default()
    };
    // In the store's own directory: a download is served by a hard link to it.
    let cache = config.files.dir.join(".edge-agent").join("cache");
    // File system work, off the runtime's threads (the HTTP server is serving already).
    let (loaded_ops, fetcher) = {
        let path = ops_path.clone();
        tokio::task::spawn_blocking(move || {
            let ops = crate::ops::persist::load_or_set_aside(&path)?;
            let fetcher = crate::ops::fetch::Fetcher::new(cache, fetch_options)?;
            Ok::<_, StartError>((ops, fetcher))
        })
        .await??
    };
    let ops_settings = crate::ops::store::Settings {
        root: config.mqtt.topic_root.clone(),
        public_url: bound_public_url(&config.http.public_url, http_addr.port()),
        keep_final: config.operations.keep_final,
        default_timeout: config.operations.default_timeout,
        timeouts: config.operations.timeouts.clone(),
    };
    let ops_task = crate::ops::task::OpsTask::new(
        crate::ops::store::OpsStore::new(ops_settings, loaded_ops),
        files.clone(),
        fetcher,
        publisher.clone(),
        ops_path,
        ops_inbox,
    );
    let ops_stop = CancellationToken::new();
    let ops = tokio::spawn(ops_task.run(ops_stop.clone(), readiness_rx.clone()));
    let (bridges, reloads) = match source {
        Some(source) => {
            let (reloads, requests) = mpsc::channel(1);
            let task = tokio::spawn(crate::bridge::watch::run(
                source,
                config.clone(),
                publisher.clone(),
                requests,
                http_stop.clone(),
            ));
            (Some(task), Some(reloads))
        }
        None => (None, None),
    };
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    let mqtt_stop = CancellationToken::new();
    let mqtt = tokio::spawn(connection.run(input_tx, acks_tx, mqtt_stop.clone()));
    let twin_stop = CancellationToken::new();
    let task = TwinTask {
        store,
        persist,
        publisher,
        inputs: input_rx,
        outbox_acks: acks_rx,
        readiness: readiness_tx,
        telemetry_flush: config.twin.telemetry_flush_interval,
        endpoint: format!("{}:{}", config.mqtt.host, config.mqtt.port),
        commands: Some(commands),
        feed,
        history: None,
    };
    let twin = tokio::spawn(task.run(twin_stop.clone()));
    serving.disarm();
    Ok(Agent {
        http_addr,
        files,
        readiness: readiness_rx,
        http_stop,
        twin_stop,
        mqtt_stop,
        http,
        twin,
        mqtt,
        bridges,
        reloads,
        twin_handle: handle,
        main_device: config.twin.main_device.clone(),
        ops,
        ops_stop,
    })
}

impl Agent {
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The file store, for its counters.
    pub fn files(&self) -> &FileStore {
        &self.files
    }

    pub fn readiness(&self) -> Readiness {
        self.readiness.borrow().clone()
    }

    /// The readiness, to follow its changes.
    pub fn readiness_changes(&self) -> watch::Receiver<Readiness> {
        self.readiness.clone()
    }

    /// Whether the twin's owner task answers a query within `within`: what the service
    /// manager's watchdog is fed on. A refusal is an answer; only silence is not.
    pub async fn alive(&self, within: Duration) -> bool {
        let query = self
            .twin_handle
            .query(Query::Entity(self.main_device.clone()));
        match tokio::time::timeout(within, query).await {
            Ok(Err(TwinError::Unavailable)) | Err(_) => false,
            Ok(_) => true,
        }
    }

    /// Reads the configuration file again and applies what can change while running (the
    /// bridges), as a change of the file would; returns when that is done. Without a file to
    /// follow ([`start`]), there is nothing to read.
    pub async fn reload(&self) {
        let Some(reloads) = &self.reloads else {
            tracing::info!("no configuration file is followed: nothing to reload");
            return;
        };
        let (done, finished) = oneshot::channel();
        if reloads.send(done).await.is_err() || finished.await.is_err() {
            tracing::warn!("the bridges' task has ended: the configuration was not read again");
        }
    }

    /// Graceful shutdown (§8); true when every step finished within the grace period.
    pub async fn shutdown(self) -> bool {
        let deadline = tokio::time::Instant::now() + GRACE;
        self.http_stop.cancel();
        // Operations stop first: what they publish at the end still reaches the connection.
        self.ops_stop.cancel();
        let ops_done = tokio::time::timeout_at(deadline, self.ops).await.is_ok();
        self.twin_stop.cancel();
        let twin_done = tokio::time::timeout_at(deadline, self.twin).await.is_ok();
        let mqtt_done = tokio::time::timeout_at(deadline, wait(self.mqtt, &self.mqtt_stop))
            .await
            .is_ok();
        self.mqtt_stop.cancel();
        let http_done = tokio::time::timeout_at(deadline, self.http).await.is_ok();
        if let Some(bridges) = self.bridges {
            // A restart command still running is left to finish on its own.
            bridges.abort();
        }
        ops_done && twin_done && mqtt_done && http_done
    }

    /// Stops everything at once, as a crash would (no flush, no `down` health); for tests.
    pub fn abort(self) {
        self.http.abort();
        self.twin.abort();
        self.mqtt.abort();
        self.ops.abort();
        if let Some(bridges) = self.bridges {
            bridges.abort();
        }
    }
}

/// `http.public_url` with the bound port for a port 0 (a listener on `:0` picks a free port,
/// which is the one the links must name).
fn bound_public_url(url: &str, port: u16) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.strip_suffix(":0") {
        Some(host) => format!("{scheme}://{host}:{port}{path}"),
        None => url.to_owned(),
    }
}

/// Waits for the connection task to end after its DISCONNECT, stopping it if it does not.
async fn wait(task: JoinHandle<()>, stop: &CancellationToken) {
    let mut task = task;
    tokio::select! {
        _ = &mut task => {}
        _ = tokio::time::sleep(Duration::from_secs(1)) => {
            stop.cancel();
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bound_public_url;

    #[test]
    fn a_public_url_on_port_0_names_the_bound_port() {
        assert_eq!(
            bound_public_url("http://127.0.0.1:0", 4321),
            "http://127.0.0.1:4321"
        );
        assert_eq!(
            bound_public_url("https://gw:0/base", 9),
            "https://gw:9/base"
        );
        assert_eq!(bound_public_url("http://gw:8000", 9), "http://gw:8000");
        assert_eq!(bound_public_url("http://gw:80", 9), "http://gw:80");
    }
}

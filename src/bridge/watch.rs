//! `edge-agent run`'s bridges: rendered once at start, then re-rendered whenever the
//! configuration file changes (issue #4, "Live operation").
//!
//! The file's directory is watched, not the file: editors replace a file by renaming a new one
//! over it, and a watch on the old inode would go silent (CRATES.md). Events are debounced.
//! A valid change re-renders the bridges whose output changed and runs the restart command
//! once, never more than once per [`restart::MIN_INTERVAL`]; an invalid change (a config problem,
//! a bridge check that fails, or files the installed mosquitto refuses) keeps the running configuration, and each problem is logged and
//! published on `<root>/errors`. Other sections change only when the agent restarts; a change
//! to them is logged as such. A reload request (SIGHUP, `systemctl reload`) reads the file
//! again the same way, whether or not a change was seen, and is answered when it is applied.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::ModifyKind;
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::check::Finding;
use super::output;
use super::plan::{self, chain};
use super::prove::ProveError;
use super::restart::{self, Pacer};
use crate::config::{self, Config};
use crate::mqtt::Publisher;
use crate::twin::effects::Publication;

/// How long the file must be quiet before it is read: editors write in several steps.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// After a failed restart command: the first retry waits twice this, then twice as long each
/// time, up to [`MAX_RETRY`].
const RETRY_BASE: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// Where the running configuration came from, so that it can be read again.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    /// The process environment, for the `EDGE_AGENT_*` overrides.
    pub env: Vec<(String, String)>,
}

/// The task: renders the bridges of `config`, then follows `source` until `stop`, reading it
/// again on each of `reloads` too.
pub async fn run(
    source: ConfigSource,
    config: Config,
    publisher: Publisher,
    mut reloads: mpsc::Receiver<oneshot::Sender<()>>,
    stop: CancellationToken,
) {
    let mut live = Live {
        source,
        config,
        publisher,
        pacer: Pacer::default(),
        restart_at: None,
        failed_restarts: 0,
        removed: Vec::new(),
    };
    live.apply_bridges(None).await;
    let (tx, mut changes) = mpsc::channel::<()>(1);
    let _watcher = match watch(&live.source.path, tx) {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            tracing::warn!(
                path = %live.source.path.display(),
                "cannot watch the configuration file, changes apply when edge-agent restarts: {e}"
            );
            None
        }
    };
    loop {
        let restart_at = live.restart_at;
        tokio::select! {
            () = stop.cancelled() => break,
            Some(()) = changes.recv() => live.reload().await,
            Some(done) = reloads.recv() => {
                live.reload().await;
                let _ = done.send(());
            }
            () = sleep_until(restart_at) => live.restart().await,
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Watches the directory of `path` and sends a unit on `tx` when something in it changes.
fn watch(
    path: &Path,
    tx: mpsc::Sender<()>,
) -> Result<
    notify_debouncer_full::Debouncer<
        notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
    notify::Error,
> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
        let Ok(events) = result else { return };
        // Any change in the directory: an editor renames a new file over the old one, and a
        // symlinked file (a Kubernetes ConfigMap) changes by a rename of its target's link, whose
        // event does not name the file. Reading it again is cheap, and an unchanged bridge
        // section does nothing. Reading it raises access events: only changes count.
        let changed = events.iter().any(|e| {
            matches!(
                e.kind,
                EventKind::Create(_)
                    | EventKind::Remove(_)
                    | EventKind::Modify(
                        ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any
                    )
            )
        });
        if changed {
            // A change already waiting to be read covers this one.
            let _ = tx.try_send(());
        }
    })?;
    debouncer.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(debouncer)
}

struct Live {
    source: ConfigSource,
    config: Config,
    publisher: Publisher,
    pacer: Pacer,
    restart_at: Option<Instant>,
    failed_restarts: u32,
    /// Clouds whose files were removed: their services are deregistered after the restart.
    removed: Vec<String>,
}

impl Live {
    /// Reads the file again and applies what changed.
    async fn reload(&mut self) {
        let source = self.source.clone();
        let loaded =
            tokio::task::spawn_blocking(move || config::load(Some(&source.path), &source.env))
                .await;
        let new = match loaded {
            Ok(Ok(new)) => new,
            Ok(Err(e)) => {
                let problems: Vec<String> = match e.problems() {
                    [] => vec![chain(&e)],
                    problems => problems.iter().map(ToString::to_string).collect(),
                };
                self.report_refusal(&problems);
                return;
            }
            Err(e) => {
                tracing::error!("the configuration reload failed: {e}");
                return;
            }
        };
        let restart_only: Vec<&str> = changed_sections(&self.config, &new);
        if !restart_only.is_empty() {
            tracing::warn!(
                "the configuration of {} changed: it takes effect when edge-agent restarts",
                restart_only.join(", ")
            );
        }
        if new.bridge == self.config.bridge {
            tracing::debug!("the configuration file changed, but not its bridges");
            return;
        }
        tracing::info!("the bridge configuration changed: rendering");
        // Only the bridges change while running: they are rendered with the running topic
        // root and main device, which the agent itself keeps until it restarts.
        let candidate = Config {
            bridge: new.bridge,
            ..self.config.clone()
        };
        self.apply_bridges(Some(candidate)).await;
    }

    /// Renders the bridges of `new` (or of the running configuration at start), proves them
    /// against mosquitto, and writes them; `new` then becomes the running configuration. A file
    /// changed: a restart is scheduled. Files mosquitto refuses are never written, since the
    /// broker would not start again on them.
    async fn apply_bridges(&mut self, new: Option<Config>) {
        let starting = new.is_none();
        let candidate = new.unwrap_or_else(|| self.config.clone());
        let path = self.source.path.clone();
        let config = candidate.clone();
        let planned = tokio::task::spawn_blocking(move || plan::plan(&config, &path, None)).await;
        let plan = match planned {
            Ok(Ok(plan)) => plan,
            Ok(Err(found)) => return self.refuse(&found, candidate, starting),
            Err(e) => return tracing::error!("rendering the bridges failed: {e}"),
        };
        for warning in &plan.warnings {
            tracing::warn!("{warning}");
        }
        match plan::prove(&candidate, &plan).await {
            Ok(()) => {}
            Err(e @ ProveError::Refused { .. }) => {
                let found = [Finding::new("", e.to_string())];
                return self.refuse(&found, candidate, starting);
            }
            // No mosquitto beside the agent (a container of its own): written unproven.
            Err(e) => tracing::warn!(
                "the bridge files are written without being proven: {}",
                chain(&e)
            ),
        }
        let dir = candidate.bridge.dir.clone();
        let written =
            tokio::task::spawn_blocking(move || output::apply(&dir, &plan.files, true)).await;
        let applied = match written {
            Ok(Ok(applied)) => applied,
            Ok(Err(e)) => {
                let found = [Finding::new("bridge.dir", chain(&e))];
                return self.refuse(&found, candidate, starting);
            }
            Err(e) => return tracing::error!("writing the bridge files failed: {e}"),
        };
        self.config = candidate;
        for path in &applied.written {
            tracing::info!(path = %path.display(), "bridge file written");
        }
        for path in &applied.removed {
            tracing::info!(path = %path.display(), "bridge file removed");
            let name = path.file_name().and_then(|n| n.to_str());
            if let Some(cloud) = name.and_then(|n| n.strip_suffix("-bridge.conf")) {
                self.removed.push(cloud.to_owned());
            }
        }
        if applied.changed() {
            self.restart_at = Some(self.pacer.next_slot(Instant::now()));
        }
    }

    /// Bridges that could not be applied: reported; a change is not taken (the running
    /// configuration and files stay), while at start the configuration is the only one there is.
    fn refuse(&mut self, found: &[Finding], candidate: Config, starting: bool) {
        let problems: Vec<String> = found.iter().map(ToString::to_string).collect();
        self.report_refusal(&problems);
        if starting {
            self.config = candidate;
        }
    }

    /// Runs the restart command of the running configuration. A failure is reported like a
    /// refused change and tried again, later each time (up to [`MAX_RETRY`]); after a success,
    /// the services of removed bridges are deregistered.
    async fn restart(&mut self) {
        self.restart_at = None;
        let now = Instant::now();
        self.pacer.ran(now);
        let command = self.config.bridge.restart_command.clone();
        if command.is_empty() {
            tracing::warn!(
                "bridge files changed: restart mosquitto to apply them (it reads bridges only \
                 when it starts), or set bridge.restart_command"
            );
            return;
        }
        match restart::run(&command).await {
            Ok(()) => {
                tracing::info!(command = command.join(" "), "restarted the broker");
                self.failed_restarts = 0;
                self.deregister_removed();
            }
            Err(e) => {
                self.failed_restarts += 1;
                let wait = RETRY_BASE
                    .saturating_mul(1 << self.failed_restarts.min(8))
                    .min(MAX_RETRY);
                self.report_refusal(&[format!(
                    "{} (tried again in {}s)",
                    chain(&e),
                    wait.as_secs()
                )]);
                self.restart_at = Some(now + wait);
            }
        }
    }

    /// The broker runs without the bridges of removed clouds: their services leave the twin
    /// (an empty retained registration; the twin clears their retained topics, `0` health
    /// included, spec/twin.md §4.8).
    fn deregister_removed(&mut self) {
        let device = plan::main_device_name(&self.config).to_owned();
        for name in std::mem::take(&mut self.removed) {
            let topic = format!(
                "{}/device/{device}/service/mosquitto-{name}-bridge",
                self.config.mqtt.topic_root
            );
            tracing::info!(topic, "deregistering the service of a removed bridge");
            self.publisher
                .publish(Publication::retained(topic, Vec::new()), None);
        }
    }

    /// Logs and publishes each problem on `<root>/errors`.
    fn report_refusal(&self, problems: &[String]) {
        let topic = format!("{}/errors", self.config.mqtt.topic_root);
        let path = self.source.path.display();
        for problem in problems {
            tracing::error!(config = %path, "bridges: {problem}");
            self.publisher.publish(
                Publication::transient(topic.clone(), format!("{path}: {problem}")),
                None,
            );
        }
    }
}

/// The sections other than `bridge` that differ: they take effect only at the next start.
fn changed_sections(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.device != new.device {
        changed.push("device");
    }
    if old.mqtt != new.mqtt {
        changed.push("mqtt");
    }
    if old.http != new.http {
        changed.push("http");
    }
    if old.data_dir != new.data_dir {
        changed.push("data_dir");
    }
    if old.twin != new.twin {
        changed.push("twin");
    }
    if old.files != new.files {
        changed.push("files");
    }
    if old.log != new.log {
        changed.push("log");
    }
    changed
}

//! `edge-agent child` (issue #5, "A reference child device"): a child-device runner that
//! registers `device/<name>//` on the gateway's broker, announces one capability per handler,
//! and runs each command the gateway sends it: `executing`, download and verify `tedgeUrl`, run
//! the handler, upload its output for `config_snapshot`/`log_upload`, then `successful` or
//! `failed` with a reason. It is what the end-to-end tests use as the child, and what a user can
//! run on a Linux child device.
//!
//! # Layout
//! - `settings`: the command line checked into [`Settings`]; `--handler <op>=<command>`.
//! - `command`: payload rules (what is a command, what is ignored), status messages, the
//!   [`command::Plan`] of a command (pure).
//! - `tracker`: one command at a time per operation; duplicates and done commands ignored (pure).
//! - `bus`: the broker connection: persistent session, event-loop task, re-subscription.
//! - `execute`: one command's steps, with the file transfer [`crate::client`].
//! - `handler`: running `sh -c <command>` with its variables and a time limit.
//!
//! [`run`] owns the tracker in one loop: messages from the bus and ends of commands come in, and
//! command tasks go out. A `successful` or `failed` from someone else for a running command (the
//! agent cancelling it, or timing it out) stops that command without another word from the
//! child. It does not touch the agent's twin or operations: the child knows only its own topics
//! and the file URLs it is given.
//!
//! A command that was running when the process died stays `executing` on the broker: a new
//! process does not run it again (only `init` is run), and the agent's timeout ends it.

mod bus;
pub mod command;
mod execute;
mod handler;
mod settings;
pub mod tracker;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use settings::{HandlerSpec, InvalidHandler, Settings, SettingsError};

use crate::client::{Client, ClientError, Style, TlsOptions};
use crate::topic::{parse_topic, Channel};
use command::{Incoming, Status};
use execute::{Command, Job};
use tracker::{Decision, Tracker};

/// Messages queued between the event-loop task and the runner.
const INBOX_CAPACITY: usize = 1024;
/// The largest command payload run; larger ones are refused (the agent sends a few hundred bytes).
const MAX_PAYLOAD: usize = 1024 * 1024;
/// After the grace period, how long killed commands get to report `failed`.
const ABORT_WAIT: Duration = Duration::from_secs(5);
/// How long the final statuses get to reach the broker before the connection is dropped.
const DISCONNECT_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("cannot create the work directory {}", path.display())]
    WorkDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the HTTP client")]
    Http(#[source] ClientError),
}

/// Runs the child until `shutdown` completes; then lets running commands finish within the
/// grace period, kills what remains (reported `failed`), and disconnects. Whether everything
/// ended within its time.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<bool, ChildError> {
    std::fs::create_dir_all(&settings.work_dir).map_err(|source| ChildError::WorkDir {
        path: settings.work_dir.clone(),
        source,
    })?;
    let http = Client::new(&TlsOptions::default(), Style::Lines).map_err(ChildError::Http)?;
    let settings = Arc::new(settings);
    let (bus, connection) = bus::connect(&settings);
    let (inbox_tx, mut inbox) = mpsc::channel(INBOX_CAPACITY);
    tracing::info!(
        entity = %settings.entity,
        broker = %format!("{}:{}", settings.mqtt_host, settings.mqtt_port),
        gateway = %settings.gateway,
        operations = %settings.handlers.iter().map(|h| h.op.as_str()).collect::<Vec<_>>().join(","),
        "child runner started"
    );
    let give_up = CancellationToken::new();
    let mut connection_task = tokio::spawn(connection.run(inbox_tx, give_up.clone()));

    let job = Job {
        settings: settings.clone(),
        bus: bus.clone(),
        http: Arc::new(http),
        abort: CancellationToken::new(),
    };
    let tasks = TaskTracker::new();
    let (done_tx, mut done) = mpsc::unbounded_channel::<(String, String)>();
    let mut runner = Runner {
        tracker: Tracker::default(),
        job: job.clone(),
        tasks: tasks.clone(),
        done: done_tx,
        running: HashMap::new(),
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(received) = inbox.recv() => runner.on_message(received).await,
            Some((op, id)) = done.recv() => runner.on_done(&op, &id),
        }
    }

    // Commands not started stay `init` on the broker, for the next start.
    tracing::info!(running = runner.tracker.running(), "stopping");
    drop(inbox);
    tasks.close();
    let mut graceful = true;
    if tokio::time::timeout(settings.shutdown_grace, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("commands still running after the grace period: killing them");
        job.abort.cancel();
        graceful = false;
        if tokio::time::timeout(ABORT_WAIT, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("commands did not report in time");
        }
    }
    // Bounded as a whole: with the broker away, even queueing the DISCONNECT may wait.
    let disconnected = tokio::time::timeout(DISCONNECT_WAIT, async {
        bus.disconnect().await;
        (&mut connection_task).await
    });
    if disconnected.await.is_err() {
        tracing::warn!("the broker did not take the last statuses in time");
        give_up.cancel();
        connection_task.abort();
        graceful = false;
    }
    Ok(graceful)
}

/// The runner's state, owned by [`run`]'s loop.
struct Runner {
    tracker: Tracker<Command>,
    job: Job,
    tasks: TaskTracker,
    /// Ends of commands, `(op, id)`, from their tasks.
    done: mpsc::UnboundedSender<(String, String)>,
    /// The running commands' cancellation.
    running: HashMap<tracker::Key, CancellationToken>,
}

impl Runner {
    async fn on_message(&mut self, received: bus::Received) {
        let root = &self.job.settings.topic_root;
        let (op, id) = match parse_topic(root, &received.topic) {
            Ok((entity, Channel::Command { op, id })) if entity == self.job.settings.entity => {
                (op, id)
            }
            // `cmd/health/check` is a health-check request, not a command; nothing else
            // matches the subscription.
            _ => return,
        };
        let topic = received.topic;
        let incoming = if received.payload.len() > MAX_PAYLOAD {
            Incoming::Invalid(format!(
                "invalid command payload: {} bytes, more than {MAX_PAYLOAD}",
                received.payload.len()
            ))
        } else {
            command::classify(&received.payload)
        };
        let payload = match incoming {
            Incoming::Cleared | Incoming::Progress => return,
            Incoming::Final => {
                // Our own echo, or the agent ending it (a cancellation, a timeout): a running
                // command stops silently, a waiting one is dropped.
                self.tracker.remember(&op, &id);
                if let Some(cancelled) = self.running.get(&(op, id)) {
                    cancelled.cancel();
                }
                return;
            }
            Incoming::Invalid(reason) => {
                if !self.tracker.is_known(&op, &id) {
                    tracing::warn!(%topic, "refused: {reason}");
                    self.tracker.remember(&op, &id);
                    self.job
                        .bus
                        .publish(&topic, command::refusal_payload(&reason))
                        .await;
                }
                return;
            }
            Incoming::Init(payload) => payload,
        };
        if self.tracker.is_known(&op, &id) {
            tracing::debug!(%topic, "already handled: ignored");
            return;
        }
        let refuse =
            |reason: String| command::status_payload(&payload, Status::Failed, Some(&reason));
        let settings = &self.job.settings;
        let refusal = if settings.handler(&op).is_none() {
            Err(format!("no handler for {op} on this child"))
        } else {
            command::plan(&op, &payload, &settings.gateway)
        };
        let plan = match refusal {
            Ok(plan) => plan,
            Err(reason) => {
                tracing::warn!(%topic, "refused: {reason}");
                self.tracker.remember(&op, &id);
                self.job.bus.publish(&topic, refuse(reason)).await;
                return;
            }
        };
        let raw = String::from_utf8_lossy(&received.payload).into_owned();
        let command = Command {
            topic: topic.clone(),
            op: op.clone(),
            id: id.clone(),
            raw,
            payload: payload.clone(),
            plan,
            cancelled: CancellationToken::new(),
        };
        match self.tracker.on_init(&op, &id, command) {
            Decision::Start(command) => self.start(command),
            Decision::Queued => tracing::info!(%op, %id, "waiting for the running {op} command"),
            Decision::Duplicate => {}
            Decision::Full => {
                let reason = format!("too many {op} commands waiting");
                tracing::warn!(%topic, "refused: {reason}");
                self.job.bus.publish(&topic, refuse(reason)).await;
            }
        }
    }

    fn on_done(&mut self, op: &str, id: &str) {
        self.running.remove(&(op.to_owned(), id.to_owned()));
        if let Some((_, next)) = self.tracker.on_done(op, id) {
            self.start(next);
        }
    }

    fn start(&mut self, command: Command) {
        let key = (command.op.clone(), command.id.clone());
        self.running.insert(key, command.cancelled.clone());
        let job = self.job.clone();
        let done = self.done.clone();
        self.tasks.spawn(async move {
            job.run(&command).await;
            let _ = done.send((command.op, command.id));
        });
    }
}

//! The task that owns the twin (spec/twin.md §5.1, §7): it applies inputs one at a time in
//! arrival order, persists with group commit (the records of every input already received, one
//! fsync, then that batch's publications and HTTP answers), publishes through the MQTT publisher,
//! answers HTTP writes once the broker acknowledged their publications, reports rejections on
//! `<root>/errors`, keeps the readiness value, and runs the graceful-shutdown steps of §8.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::api::Reply;
use super::effects::{Effects, Publication, Rejection};
use super::error::TwinError;
use super::errors_topic::{LogLimiter, RateLimiter};
use super::feed::ChangeFeed;
use super::history_file::HistoryFile;
use super::persist::Persist;
use super::store::{Durability, Store};
use super::time::Timestamp;
use super::{BusEvent, Input, Received, Responder};
use crate::mqtt::Publisher;
use crate::ops::task::CommandUpdate;
use crate::readiness::{Readiness, WAITING_FOR_SYNC};
use crate::topic::{parse_topic, Channel};

/// Inputs applied before one group commit. MQTT messages already arrive in batches (one input
/// per socket read), so a few hundred inputs cover thousands of messages; the vector is kept,
/// so a larger one would stay resident after a burst.
const BATCH: usize = 256;
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
const MARKER_RESEND: Duration = Duration::from_secs(30);
const RETAINED_FLUSH: Duration = Duration::from_secs(1);
const SHUTDOWN_ACK: Duration = Duration::from_secs(2);
/// The back-off of persistence after a failed write: first, and longest.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

pub struct TwinTask {
    pub store: Store,
    pub persist: Persist,
    pub publisher: Publisher,
    pub inputs: mpsc::Receiver<Input>,
    /// Acknowledged outbox messages: (topic, generation).
    pub outbox_acks: mpsc::UnboundedReceiver<(String, u64)>,
    pub readiness: watch::Sender<Readiness>,
    pub telemetry_flush: Duration,
    /// `host:port`, for the reason given before the first connection.
    pub endpoint: String,
    /// The operations task, which follows the command topics (issue #5).
    pub commands: Option<mpsc::Sender<CommandUpdate>>,
    /// Where the changes go for `/te/v1/changes` (issue #7).
    pub feed: ChangeFeed,
    /// The measurement history's file (issue #7); `None` until it was read ([`Input::History`]):
    /// nothing is written before.
    pub history: Option<HistoryFile>,
}

struct Runner {
    store: Store,
    persist: Persist,
    publisher: Publisher,
    readiness: watch::Sender<Readiness>,
    limiter: RateLimiter,
    log_limiter: LogLimiter,
    marker_deadline: Option<tokio::time::Instant>,
    persist_errors: u64,
    last_persist_log: Option<Instant>,
    /// After a failed write: when to try again, and the back-off after that.
    retry_at: Option<Instant>,
    retry_after: Duration,
    commands: Option<mpsc::Sender<CommandUpdate>>,
    /// Command messages the operations task had no room for.
    commands_dropped: u64,
    feed: ChangeFeed,
    history: Option<HistoryFile>,
    history_errors: u64,
    /// After a failed history write: when to try again (a rewrite of the whole history), and
    /// the back-off after that, as for the twin's own persistence.
    history_retry_at: Option<Instant>,
    history_retry_after: Duration,
}

impl TwinTask {
    /// Runs until `shutdown`, then flushes the state, publishes the `down` health and disconnects.
    pub async fn run(self, shutdown: CancellationToken) {
        let TwinTask {
            store,
            persist,
            publisher,
            mut inputs,
            mut outbox_acks,
            readiness,
            telemetry_flush,
            endpoint,
            commands,
            feed,
            history,
        } = self;
        readiness.send_replace(Readiness::Disconnected(format!("connecting to {endpoint}")));
        let mut runner = Runner {
            store,
            persist,
            publisher,
            readiness,
            limiter: RateLimiter::default(),
            log_limiter: LogLimiter::default(),
            marker_deadline: None,
            persist_errors: 0,
            last_persist_log: None,
            retry_at: None,
            retry_after: RETRY_FIRST,
            commands,
            commands_dropped: 0,
            feed,
            history,
            history_errors: 0,
            history_retry_at: None,
            history_retry_after: RETRY_FIRST,
        };
        let mut retained_tick = tokio::time::interval(RETAINED_FLUSH);
        let mut telemetry_tick =
            tokio::time::interval(telemetry_flush.max(Duration::from_millis(10)));
        retained_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        telemetry_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let marker = runner.marker_deadline;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                n = inputs.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    runner.process(&mut batch);
                }
                Some((topic, generation)) = outbox_acks.recv() => {
                    runner.store.outbox_acknowledged(&topic, generation);
                    while let Ok((topic, generation)) = outbox_acks.try_recv() {
                        runner.store.outbox_acknowledged(&topic, generation);
                    }
                }
                _ = retained_tick.tick() => runner.flush(Durability::Retained),
                _ = telemetry_tick.tick() => {
                    runner.flush(Durability::Telemetry);
                    runner.flush_history();
                }
                _ = sleep_until(marker) => {
                    tracing::warn!("the sync marker did not come back within 30 s; sending another");
                    runner.store.resend_marker();
                    runner.marker_deadline = Some(tokio::time::Instant::now() + MARKER_RESEND);
                    let fx = runner.store.take_effects();
                    runner.carry_out(vec![(fx, None)]);
                }
            }
        }
        runner.shutdown(inputs).await;
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

type WriteResult = (Responder, Result<Reply, TwinError>);

impl Runner {
    /// Applies a batch of inputs, then persists once and carries out the effects in order.
    /// Reads are answered after the batch's group commit, so nothing a client sees can be lost
    /// by a crash (§7.1).
    /// Empties `batch`, keeping its capacity for the next wake-up.
    fn process(&mut self, batch: &mut Vec<Input>) {
        self.store.changes.active = self.feed.wanted();
        let mut steps: Vec<(Effects, Option<WriteResult>)> = Vec::new();
        let mut reads = Vec::new();
        for input in batch.drain(..) {
            match input {
                Input::Query(query, tx) => reads.push((tx, self.store.query(&query))),
                Input::Write(write, tx) => {
                    steps.push((self.store.take_effects(), None));
                    let result = self.store.write(write);
                    steps.push((self.store.take_effects(), Some((tx, result))));
                }
                Input::Bus(event) => self.on_bus(event),
                Input::Stats(tx) => {
                    let _ = tx.send(self.store.stats());
                }
                Input::History(loaded) => self.history_loaded(*loaded),
            }
        }
        steps.push((self.store.take_effects(), None));
        self.carry_out(steps);
        for (tx, reply) in reads {
            let _ = tx.send(reply);
        }
        let synced = self.store.is_synced();
        if synced && !self.readiness.borrow().is_ready() {
            self.marker_deadline = None;
            self.readiness.send_replace(Readiness::Ready);
            tracing::info!(entities = self.store.len(), "sync completed: ready");
        }
    }

    fn on_bus(&mut self, event: BusEvent) {
        match event {
            BusEvent::Messages(messages) => {
                let now = Timestamp::now();
                for message in messages {
                    match message {
                        Received::Message { topic, payload } => {
                            self.store.on_message(&topic, &payload, now);
                            self.forward_command(&topic, &payload);
                        }
                        Received::Oversize { topic, size } => {
                            self.store.counters.mqtt_dropped_oversize += 1;
                            if self.limiter.allow("oversize", None, Instant::now()) {
                                tracing::warn!(
                                    topic,
                                    size,
                                    "dropped a message above mqtt.max_packet_size"
                                );
                            }
                        }
                    }
                }
            }
            BusEvent::Subscribed => {
                self.store.begin_sync(nonce());
                self.marker_deadline = Some(tokio::time::Instant::now() + MARKER_RESEND);
                self.readiness
                    .send_replace(Readiness::Starting(WAITING_FOR_SYNC.to_string()));
            }
            BusEvent::Disconnected(reason) => {
                self.store.disconnected();
                self.marker_deadline = None;
                self.readiness.send_replace(Readiness::Disconnected(reason));
            }
        }
    }

    /// Hands a command-instance message to the operations task, which follows its commands;
    /// never waits: a full queue drops it (the retained state comes again at the next
    /// connection).
    fn forward_command(&mut self, topic: &str, payload: &bytes::Bytes) {
        let Some(commands) = &self.commands else {
            return;
        };
        if !topic.contains("/cmd/") {
            return;
        }
        let Ok((entity, Channel::Command { op, id })) =
            parse_topic(&self.store.config().root, topic)
        else {
            return;
        };
        let update = CommandUpdate {
            entity,
            operation: op,
            cmd_id: id,
            payload: payload.clone(),
        };
        if commands.try_send(update).is_err() {
            self.commands_dropped += 1;
            if self.limiter.allow("commands_dropped", None, Instant::now()) {
                tracing::warn!(
                    dropped = self.commands_dropped,
                    "the operations task is behind: a command message was not followed"
                );
            }
        }
    }

    /// Persists what must be durable, then publishes, then answers HTTP writes once the broker
    /// acknowledged their publications (§5.1, §7.1).
    fn carry_out(&mut self, steps: Vec<(Effects, Option<WriteResult>)>) {
        // A group commit pays for an fsync anyway: take every unsaved change along, which also
        // empties the table of dirty entities after a burst.
        if steps.iter().any(|(fx, _)| fx.durable) {
            self.flush(Durability::Telemetry);
        }
        for (fx, write) in steps {
            let Effects {
                publications,
                rejections,
                ..
            } = fx;
            let mut rejections = rejections.into_iter().peekable();
            let mut acks = Vec::new();
            for (i, publication) in publications.into_iter().enumerate() {
                while let Some(rejection) = rejections.next_if(|r| r.at <= i) {
                    self.report(rejection);
                }
                let ack = match write {
                    Some((_, Ok(_))) => {
                        let (tx, rx) = oneshot::channel();
                        acks.push(rx);
                        Some(tx)
                    }
                    _ => None,
                };
                self.publisher.publish(publication, ack);
            }
            for rejection in rejections {
                self.report(rejection);
            }
            if let Some((tx, result)) = write {
                answer_after_acks(tx, result, acks);
            }
        }
        self.feed
            .publish(self.store.changes.take(), self.store.changes.seq());
    }

    /// Adds the history read from disk to what was recorded since the start; from now on the
    /// history is written.
    fn history_loaded(&mut self, loaded: super::history_file::Loaded) {
        let super::history_file::Loaded {
            mut file,
            history,
            warnings,
        } = loaded;
        for warning in &warnings {
            tracing::warn!("{warning}");
        }
        file.merge_into(history, &mut self.store);
        tracing::info!(
            points = self.store.history.points(),
            "loaded the measurement history"
        );
        self.history = Some(file);
    }

    /// Appends the new history points to their file; failures are logged (once a minute) and
    /// counted, and the next attempt, after a back-off of 1 s doubling to 1 min, rewrites the
    /// whole history.
    fn flush_history(&mut self) {
        let now = Instant::now();
        if self.history_retry_at.is_some_and(|at| now < at) {
            return;
        }
        let Some(file) = self.history.as_mut() else {
            return;
        };
        let Err(error) = file.write(&mut self.store.history, Timestamp::now()) else {
            self.history_retry_at = None;
            self.history_retry_after = RETRY_FIRST;
            return;
        };
        self.history_retry_at = Some(now + self.history_retry_after);
        self.history_retry_after = (self.history_retry_after * 2).min(RETRY_MAX);
        self.history_errors += 1;
        if self
            .log_limiter
            .allow("history_write", Instant::now())
            .is_some()
        {
            tracing::error!(
                errors = self.history_errors,
                "cannot write the measurement history, keeping it in memory: {:#}",
                crate::report::chain(&error)
            );
        }
    }

    /// Logs a rejection and, when reportable, publishes it on `<root>/errors`, each rate limited
    /// in its own way (`errors_topic`).
    fn report(&mut self, rejection: Rejection) {
        let now = Instant::now();
        if let Some(unlogged) = self.log_limiter.allow(rejection.kind, now) {
            tracing::warn!(
                kind = rejection.kind,
                topic = rejection.topic,
                unlogged,
                "rejected: {} ({unlogged} more {} rejections since the last line)",
                rejection.reason,
                rejection.kind
            );
        }
        if !self
            .limiter
            .allow(rejection.kind, rejection.id.as_ref(), now)
        {
            return;
        }
        if rejection.report {
            let topic = format!("{}/errors", self.store.config().root);
            let text = format!("{}: {}", rejection.topic, rejection.reason);
            self.publisher
                .publish(Publication::transient(topic, text), None);
        }
    }

    /// Writes the unsaved changes at `level` or above; a full snapshot when the journal grew
    /// too large or after a failed write. Failures are logged and counted, never fatal (§7.2).
    /// After a failure the next attempt (a whole snapshot, serialized in this task) waits for a
    /// back-off, 1 s doubling to 1 min, so a disk that keeps failing does not stall the twin.
    fn flush(&mut self, level: Durability) {
        let now = Instant::now();
        if self.retry_at.is_some_and(|at| now < at) {
            return;
        }
        if self.store.unsaved().is_none_or(|u| u < level) && !self.persist.needs_snapshot() {
            return;
        }
        let mut result = Ok(());
        if !self.persist.needs_snapshot() {
            let ops = self.store.take_persist_ops(level);
            result = self.persist.append(&ops);
        }
        if result.is_ok() && self.persist.needs_snapshot() {
            let entries = self.store.snapshot_entries();
            result = self.persist.write_snapshot(entries);
        }
        let Err(error) = result else {
            self.retry_at = None;
            self.retry_after = RETRY_FIRST;
            return;
        };
        self.persist_errors += 1;
        self.retry_at = Some(now + self.retry_after);
        self.retry_after = (self.retry_after * 2).min(RETRY_MAX);
        if self
            .last_persist_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            self.last_persist_log = Some(now);
            tracing::error!(
                errors = self.persist_errors,
                "cannot persist the twin, serving from memory: {:#}",
                crate::report::chain(&error)
            );
        }
    }

    /// §8 graceful shutdown: flush, publish `down` retained, disconnect. Inputs still arriving
    /// are dropped meanwhile, so that the connection task is never stuck handing them over.
    async fn shutdown(mut self, mut inputs: mpsc::Receiver<Input>) {
        // One last attempt, whatever the back-off says.
        self.retry_at = None;
        self.flush(Durability::Telemetry);
        self.history_retry_at = None;
        self.flush_history();
        let (topic, payload) = self.store.down_health();
        let (tx, rx) = oneshot::channel();
        self.publisher
            .publish(Publication::retained(topic, payload), Some(tx));
        let drain = async {
            while inputs.recv().await.is_some() {}
            std::future::pending::<()>().await
        };
        let acknowledged = tokio::select! {
            ack = tokio::time::timeout(SHUTDOWN_ACK, rx) => matches!(ack, Ok(Ok(true))),
            _ = drain => false,
        };
        self.publisher.disconnect();
        tracing::info!(acknowledged, "published the down health");
    }
}

fn answer_after_acks(
    tx: Responder,
    result: Result<Reply, TwinError>,
    acks: Vec<oneshot::Receiver<bool>>,
) {
    if result.is_err() || acks.is_empty() {
        let _ = tx.send(result);
        return;
    }
    tokio::spawn(async move {
        let acknowledged = tokio::time::timeout(ACK_TIMEOUT, join_all(acks))
            .await
            .is_ok_and(|all| all.into_iter().all(|a| matches!(a, Ok(true))));
        let _ = tx.send(if acknowledged {
            result
        } else {
            Err(TwinError::NotAcknowledged)
        });
    });
}

/// 32 lowercase hex digits, new for each connection (§7.4 step 3).
fn nonce() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = (t ^ u128::from(std::process::id())).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

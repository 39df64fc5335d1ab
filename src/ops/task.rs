//! The task that owns the operations' table: it answers the HTTP layer, follows the command
//! topics the twin task forwards, makes files available (linking a stored file, or downloading
//! a remote one) off the task, runs the timeouts and clean-ups, and saves the table after each
//! change. The table is never shared: everything goes through [`OpsHandle`]'s channel.

use std::path::PathBuf;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::fetch::{Fetched, Fetcher};
use super::model::{NewOperation, Operation, Source, PREPARING};
use super::persist;
use super::store::{Action, Facts, Filter, OpsError, OpsStore};
use crate::files::digest::Sha256;
use crate::files::{Store as FileStore, StorePath};
use crate::mqtt::Publisher;
use crate::readiness::Readiness;
use crate::topic::EntityTopicId;
use crate::twin::effects::Publication;
use crate::twin::time::Timestamp;

/// Requests waiting for the task; more wait in the HTTP handlers.
const REQUESTS: usize = 64;
/// Command messages waiting for the task; more are dropped and counted (the retained state is
/// delivered again at the next connection).
pub const UPDATES: usize = 4096;

/// What the HTTP layer asks.
#[derive(Debug)]
pub enum Request {
    Start(
        NewOperation,
        Facts,
        oneshot::Sender<Result<Operation, OpsError>>,
    ),
    List(Filter, oneshot::Sender<Vec<Operation>>),
    Get(String, oneshot::Sender<Option<Operation>>),
    Cancel(String, oneshot::Sender<Result<Operation, OpsError>>),
    Stats(oneshot::Sender<crate::ops::store::OpsStats>),
}

/// A message on a command topic (`<root>/<entity>/cmd/<op>/<id>`), forwarded by the twin task.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandUpdate {
    pub entity: EntityTopicId,
    pub operation: String,
    pub cmd_id: String,
    pub payload: Bytes,
}

/// The task is gone (the agent is stopping).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the operations service is stopping")]
pub struct Stopped;

/// A clonable handle for the HTTP layer.
#[derive(Clone)]
pub struct OpsHandle {
    tx: mpsc::Sender<Request>,
}

impl OpsHandle {
    pub async fn start(
        &self,
        new: NewOperation,
        facts: Facts,
    ) -> Result<Result<Operation, OpsError>, Stopped> {
        self.ask(|tx| Request::Start(new, facts, tx)).await
    }

    pub async fn list(&self, filter: Filter) -> Result<Vec<Operation>, Stopped> {
        self.ask(|tx| Request::List(filter, tx)).await
    }

    /// The figures of the metrics endpoint.
    pub async fn stats(&self) -> Result<crate::ops::store::OpsStats, Stopped> {
        self.ask(Request::Stats).await
    }

    pub async fn get(&self, cmd_id: String) -> Result<Option<Operation>, Stopped> {
        self.ask(|tx| Request::Get(cmd_id, tx)).await
    }

    pub async fn cancel(&self, cmd_id: String) -> Result<Result<Operation, OpsError>, Stopped> {
        self.ask(|tx| Request::Cancel(cmd_id, tx)).await
    }

    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(request(tx)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }
}

/// A preparation's end: the file's SHA-256 and the download it came from, or why it could not
/// be made available (and the download, if there was one, for the cache to evict).
type Prepared = (
    String,
    Result<(Option<String>, Option<Fetched>), (String, Option<Fetched>)>,
);

pub struct OpsTask {
    store: OpsStore,
    files: FileStore,
    fetcher: Fetcher,
    publisher: Publisher,
    path: PathBuf,
    requests: mpsc::Receiver<Request>,
    updates: mpsc::Receiver<CommandUpdate>,
    prepared_tx: mpsc::UnboundedSender<Prepared>,
    prepared: mpsc::UnboundedReceiver<Prepared>,
    /// The downloads in the cache, by the operation that uses them: evicted when the last
    /// operation using one has ended (its link in the store keeps the bytes until then).
    downloads: Vec<(String, Fetched)>,
}

/// The receiving ends of an [`OpsHandle`] and of the twin's forwarded command messages,
/// made before the task (the HTTP server starts first).
pub struct Inbox {
    requests: mpsc::Receiver<Request>,
    updates: mpsc::Receiver<CommandUpdate>,
}

/// The handle, the sender the twin task forwards command messages to, and their inbox.
pub fn channels() -> (OpsHandle, mpsc::Sender<CommandUpdate>, Inbox) {
    let (tx, requests) = mpsc::channel(REQUESTS);
    let (updates_tx, updates) = mpsc::channel(UPDATES);
    (OpsHandle { tx }, updates_tx, Inbox { requests, updates })
}

impl OpsHandle {
    /// A handle whose task is gone: every request answers [`Stopped`] (handler tests).
    pub fn closed() -> OpsHandle {
        channels().0
    }
}

impl OpsTask {
    pub fn new(
        store: OpsStore,
        files: FileStore,
        fetcher: Fetcher,
        publisher: Publisher,
        path: PathBuf,
        inbox: Inbox,
    ) -> OpsTask {
        let (prepared_tx, prepared) = mpsc::unbounded_channel();
        OpsTask {
            store,
            files,
            fetcher,
            publisher,
            path,
            requests: inbox.requests,
            updates: inbox.updates,
            prepared_tx,
            prepared,
            downloads: Vec::new(),
        }
    }

    /// Runs until `stop`. Timeouts wait for the twin's first sync on a connection
    /// (`readiness`): a child's final status retained on the broker while the agent was away
    /// must be read before the agent decides it never came.
    pub async fn run(mut self, stop: CancellationToken, mut readiness: watch::Receiver<Readiness>) {
        // Downloads of a former run: whatever still needs one keeps it through its link in
        // the store, and an operation still being prepared downloads it again.
        let cache = self.fetcher.cache_dir().to_owned();
        let _ = tokio::task::spawn_blocking(move || clear_cache(&cache)).await;
        // Operations that were being prepared when the agent stopped are prepared again.
        let preparing: Vec<Operation> = self
            .store
            .all()
            .filter(|o| o.status == PREPARING)
            .cloned()
            .collect();
        for op in preparing {
            self.prepare(&op);
        }
        let mut synced = readiness.borrow().is_ready();
        loop {
            let deadline = self.store.next_deadline().map(instant_of);
            tokio::select! {
                () = stop.cancelled() => break,
                changed = readiness.changed(), if !synced => {
                    if changed.is_err() {
                        break;
                    }
                    synced = readiness.borrow().is_ready();
                }
                Some(request) = self.requests.recv() => self.on_request(request).await,
                Some(update) = self.updates.recv() => {
                    // Every update already queued is applied before one save: a burst of
                    // statuses costs one write of the table, not one each.
                    let now = Timestamp::now();
                    let (mut changed, mut actions) = (false, Vec::new());
                    let mut next = Some(update);
                    while let Some(update) = next {
                        let (c, a) = self.store.on_update(
                            &update.entity,
                            &update.operation,
                            &update.cmd_id,
                            &update.payload,
                            now,
                        );
                        changed |= c;
                        actions.extend(a);
                        next = self.updates.try_recv().ok();
                    }
                    if changed || !actions.is_empty() {
                        self.carry_out(actions).await;
                    }
                }
                Some((cmd_id, result)) = self.prepared.recv() => {
                    let result = match result {
                        Ok((sha256, fetched)) => {
                            if let Some(fetched) = fetched {
                                self.downloads.push((cmd_id.clone(), fetched));
                            }
                            Ok(sha256)
                        }
                        Err((reason, fetched)) => {
                            tracing::warn!(cmd_id, "operation failed before it started: {reason}");
                            if let Some(fetched) = fetched {
                                self.downloads.push((cmd_id.clone(), fetched));
                            }
                            Err(reason)
                        }
                    };
                    let actions = self.store.prepared(&cmd_id, result, Timestamp::now());
                    self.carry_out(actions).await;
                }
                () = sleep_until(deadline), if synced => {
                    let actions = self.store.tick(Timestamp::now());
                    self.carry_out(actions).await;
                }
            }
        }
    }

    async fn on_request(&mut self, request: Request) {
        let now = Timestamp::now();
        match request {
            Request::Start(new, facts, reply) => {
                if let Source::Stored(path) = &new.source {
                    // Refused now, rather than failing once the operation has started.
                    let files = self.files.clone();
                    let wanted = path.clone();
                    let exists = tokio::task::spawn_blocking(move || {
                        StorePath::parse(&wanted)
                            .ok()
                            .is_some_and(|p| files.file_path(&p).is_ok())
                    })
                    .await
                    .unwrap_or(false);
                    if !exists {
                        let _ = reply.send(Err(OpsError::FileNotFound(path.clone())));
                        return;
                    }
                }
                let result = self.store.start(new, &facts, now);
                if let Ok(op) = &result {
                    tracing::info!(
                        cmd_id = op.cmd_id,
                        entity = op.entity.as_str(),
                        operation = op.operation,
                        "operation started"
                    );
                    self.save().await;
                    self.prepare(op);
                }
                let _ = reply.send(result);
            }
            Request::Stats(reply) => {
                let _ = reply.send(self.store.stats());
            }
            Request::List(filter, reply) => {
                let _ = reply.send(self.store.list(&filter).into_iter().cloned().collect());
            }
            Request::Get(id, reply) => {
                let _ = reply.send(self.store.get(&id).cloned());
            }
            Request::Cancel(id, reply) => match self.store.cancel(&id, now) {
                Ok(actions) => {
                    self.carry_out(actions).await;
                    let _ = reply.send(self.store.get(&id).cloned().ok_or(OpsError::NotFound(id)));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
        }
    }

    /// Makes the file of `op` available, off the task; the result comes back on `prepared`.
    fn prepare(&self, op: &Operation) {
        let cmd_id = op.cmd_id.clone();
        let done = self.prepared_tx.clone();
        let files = self.files.clone();
        let fetcher = self.fetcher.clone();
        let dest = op.file.clone();
        let from_file = op.from_file.clone();
        let remote = op.remote_url.clone();
        let expected = op.sha256.clone();
        let upload = super::model::is_upload(&op.operation);
        tokio::spawn(async move {
            let result = match (dest, upload) {
                (Some(dest), false) => {
                    make_available(&files, &fetcher, &dest, from_file, remote, expected).await
                }
                // Nothing to serve: no file, or the child sends it.
                _ => Ok((None, None)),
            };
            let _ = done.send((cmd_id, result));
        });
    }

    /// Carries out `actions` and saves the table; called after every change, with or without
    /// actions (a timeout of an operation still being prepared changes it and publishes nothing).
    async fn carry_out(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Publish {
                    topic,
                    payload,
                    retain,
                } => {
                    let publication = match retain {
                        true => Publication::retained(topic, payload),
                        false => Publication::transient(topic, payload),
                    };
                    self.publisher.publish(publication, None);
                }
                Action::RemoveFile(path) => {
                    let files = self.files.clone();
                    let removed = tokio::task::spawn_blocking(move || {
                        let path = StorePath::parse(&path).map_err(|e| e.to_string())?;
                        files.delete(&path, None).map_err(|e| e.to_string())
                    })
                    .await;
                    if let Ok(Err(e)) = removed {
                        tracing::warn!("cannot remove an operation's file: {e}");
                    }
                }
            }
        }
        self.evict_unused();
        self.save().await;
    }

    /// Evicts the downloads no running operation uses any more.
    fn evict_unused(&mut self) {
        let store = &self.store;
        let (ended, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.downloads)
            .into_iter()
            .partition(|(id, _)| {
                store
                    .get(id)
                    .is_none_or(|o| o.is_final() && o.cleared.is_some())
            });
        for (_, fetched) in ended {
            if kept.iter().all(|(_, f)| f.path != fetched.path) {
                if let Err(e) = self.fetcher.evict(&fetched) {
                    tracing::warn!("{}", crate::report::chain(&e));
                }
            }
        }
        self.downloads.extend(kept);
    }

    async fn save(&self) {
        let path = self.path.clone();
        let ops: Vec<Operation> = self.store.all().cloned().collect();
        let saved = tokio::task::spawn_blocking(move || {
            let refs: Vec<&Operation> = ops.iter().collect();
            persist::save(&path, &refs)
        })
        .await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("{}", crate::report::chain(&e)),
            Err(e) => tracing::error!("saving the operations failed: {e}"),
        }
    }
}

/// Links the stored file, or downloads the remote one and links it, at `dest` in the store.
async fn make_available(
    files: &FileStore,
    fetcher: &Fetcher,
    dest: &str,
    from_file: Option<String>,
    remote: Option<String>,
    expected: Option<String>,
) -> Result<(Option<String>, Option<Fetched>), (String, Option<Fetched>)> {
    let alone = |reason: String| (reason, None);
    let dest = StorePath::parse(dest).map_err(|e| alone(e.to_string()))?;
    let mut in_place = false;
    let (source, digest, cached) = match (from_file, remote) {
        (Some(stored), _) => {
            let files = files.clone();
            let path = StorePath::parse(&stored).map_err(|e| alone(e.to_string()))?;
            // Uploaded for this command at the path it is served at (`op start --file`):
            // nothing to link (a link onto itself would leave its temp name behind).
            in_place = path.as_str() == dest.as_str();
            tokio::task::spawn_blocking(move || {
                let open = files.open_read(&path).map_err(|e| e.to_string())?;
                let full = files.file_path(&path).map_err(|e| e.to_string())?;
                Ok::<_, String>((full, open.digest, None))
            })
            .await
            .map_err(|e| alone(e.to_string()))?
            .map_err(alone)?
        }
        (None, Some(url)) => {
            let fetched = fetcher
                .fetch(&url, expected.as_deref())
                .await
                .map_err(|e| alone(crate::report::chain(&e)))?;
            let digest: Sha256 = match fetched.sha256.parse() {
                Ok(digest) => digest,
                Err(()) => {
                    return Err((
                        "the download's digest is not SHA-256".to_owned(),
                        Some(fetched),
                    ))
                }
            };
            (fetched.path.clone(), digest, Some(fetched))
        }
        (None, None) => return Ok((None, None)),
    };
    if let Some(expected) = &expected {
        if digest.to_string() != *expected {
            return Err((
                format!(
                    "sha256 mismatch: the file's SHA-256 is {digest}, the request announced \
                     {expected}"
                ),
                cached,
            ));
        }
    }
    if in_place {
        return Ok((Some(digest.to_string()), None));
    }
    let files = files.clone();
    let linked = tokio::task::spawn_blocking(move || files.link(&dest, &source, digest)).await;
    match linked {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(
                "cannot serve an operation's file: {}",
                crate::report::chain(&e)
            );
            return Err((e.to_string(), cached));
        }
        Err(e) => return Err((e.to_string(), cached)),
    }
    // The cache keeps the download for the next child updated from the same URL; the link in
    // the store keeps the bytes for this one.
    Ok((Some(digest.to_string()), cached))
}

/// Removes the downloads (files named by 64 hex digits) from the cache directory.
fn clear_cache(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_download = name
            .to_str()
            .is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()));
        if is_download {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The tokio instant of a wall-clock time (now if it is past).
fn instant_of(at: Timestamp) -> tokio::time::Instant {
    let wait = at.as_millis() - Timestamp::now().as_millis();
    tokio::time::Instant::now() + std::time::Duration::from_millis(wait.max(0) as u64)
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

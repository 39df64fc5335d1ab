//! Receiving an upload (issue #3 "Atomic, durable uploads", "Bounded disk"): the request body is
//! streamed into a temp file by a writer thread that hashes as it writes, under the size limit
//! and the quota, then fsynced, checked against the digest the client announced, and committed
//! by rename. Nothing is visible under the path until the commit; an upload that fails or is
//! abandoned (client gone, future dropped) leaves only its temp file, which is removed at once,
//! or at the next start if the agent died.

use std::io::Write;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::buffers::{self, Pool};

use super::blocking;
use super::digest::{Hasher, Sha256};
use super::error::FileError;
use super::path::StorePath;
use super::store::{Precondition, Staged, Store};

/// Bytes handed to the writer thread at a time.
const BATCH: usize = 1 << 20;
/// Batches queued for the writer, and for the hasher.
const QUEUE: usize = 2;
/// Blocks of one upload: those queued for both threads, and the one being filled.
const BLOCKS: usize = 2 * QUEUE + 2;
/// The longest wait for the next bytes of an upload's body before it is abandoned (408).
const BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(60);
/// How long, and how many bytes, a refused upload's body is still read (see [`linger`]).
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(1);
const LINGER_BYTES: u64 = 16 << 20;
/// Written bytes between two background flushes of a large upload.
const SYNC_EVERY: u64 = 8 << 20;

enum Block {
    Data(Arc<buffers::Block>),
    /// The body ended normally; without it a closed channel means abandoned.
    End,
}

/// What the request says about its body.
pub struct Upload {
    pub path: StorePath,
    pub content_length: Option<u64>,
    /// Digests the client announced; the body must match each.
    pub expected: Vec<Sha256>,
    /// Checked again against the file when the upload is committed.
    pub precondition: Option<Precondition>,
}

/// Quota bytes held by one upload, given back when it ends, however it ends.
struct Reservation<'a> {
    store: &'a Store,
    bytes: u64,
    replaces: u64,
}

impl Reservation<'_> {
    fn grow(&mut self, bytes: u64) -> bool {
        let ok = self.store.reserve(bytes, self.replaces);
        if ok {
            self.bytes += bytes;
        }
        ok
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.store.unreserve(self.bytes);
    }
}

/// Stores `body` at `upload.path`.
pub async fn receive<S>(store: &Store, upload: Upload, body: S) -> Result<(), FileError>
where
    S: Stream<Item = Result<Bytes, warp::Error>> + Send + Unpin,
{
    let _slot = store.upload_slot().ok_or(FileError::Busy)?;
    let _in_flight = store.counters().upload();
    let Upload {
        path,
        content_length,
        expected,
        precondition,
    } = upload;
    let limit = store.config().max_file_bytes;
    let quota = store.config().quota_bytes;
    let too_large = || FileError::TooLarge {
        path: path.shown().to_owned(),
        limit,
    };
    let over_quota = || FileError::Quota {
        path: path.shown().to_owned(),
        quota,
    };

    let s = store.clone();
    let p = path.clone();
    let replaces = blocking(move || s.check_upload(&p)).await?;
    let mut reservation = Reservation {
        store,
        bytes: 0,
        replaces,
    };
    if let Some(len) = content_length {
        if len > limit {
            return Err(too_large());
        }
        if !reservation.grow(len) {
            return Err(over_quota());
        }
    }

    let s = store.clone();
    let temp = blocking(move || s.temp_file()).await?;
    let (tx, rx) = mpsc::channel(QUEUE);
    // A thread of its own, not tokio's small blocking pool: a slow client keeps its writer
    // waiting for as long as its body takes, and must not starve the store's other calls.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("upload-write".into())
        .spawn(move || {
            let _ = done_tx.send(write(temp, rx));
        })
        .map_err(|e| FileError::io("starting an upload's writer", e))?;

    let started = std::time::Instant::now();
    let mut body = body;
    let mut pool = Pool::new(BLOCKS, BATCH);
    let mut batch = pool.take().await;
    let mut total: u64 = 0;
    let mut writer_gone = false;
    'body: loop {
        let chunk = match tokio::time::timeout(BODY_IDLE, body.next()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(_) => {
                tracing::info!(%path, "upload abandoned: no bytes for {BODY_IDLE:?}");
                return Err(FileError::BodyTimeout);
            }
        };
        let chunk = chunk.map_err(|e| {
            tracing::info!(%path, "upload interrupted: {e}");
            FileError::BodyRead
        })?;
        total += chunk.len() as u64;
        if total > limit {
            return Err(linger(&mut body, too_large()).await);
        }
        if total > reservation.bytes && !reservation.grow(total - reservation.bytes) {
            return Err(linger(&mut body, over_quota()).await);
        }
        store.counters().received(chunk.len() as u64);
        let mut rest: &[u8] = &chunk;
        while !rest.is_empty() {
            let n = (pool.size() - batch.len()).min(rest.len());
            batch.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if batch.len() == pool.size() {
                let full = std::mem::replace(&mut batch, pool.take().await);
                if tx.send(Block::Data(pool.share(full))).await.is_err() {
                    // The writer failed; its error is collected below.
                    writer_gone = true;
                    break 'body;
                }
            }
        }
    }
    if !writer_gone && content_length.is_some_and(|len| len != total) {
        return Err(FileError::BodyRead);
    }
    if !writer_gone {
        if !batch.is_empty() {
            let _ = tx.send(Block::Data(pool.share(batch))).await;
        }
        let _ = tx.send(Block::End).await;
    }
    drop(tx);
    let received = started.elapsed();
    // After a failed write this is the writer's own error (disk full: 507), not the body's.
    let staged = match done_rx.await {
        Ok(result) => result?,
        Err(_) => {
            return Err(FileError::io(
                format!("writing the upload of {path}"),
                std::io::Error::other("the writer thread ended without a result"),
            ))
        }
    };
    let flushed = started.elapsed();
    if let Some(expected) = expected.iter().find(|e| **e != staged.digest) {
        return Err(FileError::DigestMismatch {
            expected: *expected,
            actual: staged.digest,
        });
    }
    let s = store.clone();
    let p = path.clone();
    blocking(move || s.commit(&p, staged, precondition)).await?;
    store.counters().stored();
    tracing::debug!(
        %path,
        bytes = total,
        receive_ms = received.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        flushed_ms = flushed.as_millis() as u64,
        "file stored"
    );
    Ok(())
}

/// Reads and discards what is left of a refused body, for a bounded time and size, before the
/// refusal is sent: a client still sending then reads the answer instead of a connection reset
/// (closing a socket with unread data resets it), as nginx's lingering close does.
async fn linger<S>(body: &mut S, error: FileError) -> FileError
where
    S: Stream<Item = Result<Bytes, warp::Error>> + Send + Unpin,
{
    let mut left = LINGER_BYTES;
    let drain = async {
        while let Some(Ok(chunk)) = body.next().await {
            left = left.saturating_sub(chunk.len() as u64);
            if left == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    error
}

/// The writer thread: writes each block, while a hasher thread hashes it and, past
/// [`SYNC_EVERY`], a syncer thread flushes what was written so far: the disk works while the rest
/// of the body arrives, and the final fsync only has the tail to write.
fn write(
    mut temp: tempfile::NamedTempFile,
    mut rx: mpsc::Receiver<Block>,
) -> Result<Staged, FileError> {
    let io = |what: &'static str| move |e| FileError::io(what, e);
    let (hash_tx, hash_rx) = std::sync::mpsc::sync_channel::<Arc<buffers::Block>>(QUEUE);
    let hasher = std::thread::Builder::new()
        .name("upload-hash".into())
        .spawn(move || {
            let mut hasher = Hasher::new();
            for block in hash_rx {
                hasher.update(&block);
            }
            hasher.finish()
        })
        .map_err(io("starting an upload's hasher"))?;
    let mut syncer: Option<Syncer> = None;
    let mut len = 0u64;
    let mut synced_at = 0u64;
    let ended = loop {
        match rx.blocking_recv() {
            Some(Block::Data(bytes)) => {
                let _ = hash_tx.send(Arc::clone(&bytes));
                temp.write_all(&bytes).map_err(io("writing an upload"))?;
                len += bytes.len() as u64;
                if len - synced_at >= SYNC_EVERY {
                    synced_at = len;
                    if syncer.is_none() {
                        syncer = Some(Syncer::start(temp.as_file())?);
                    }
                    if let Some(s) = &syncer {
                        s.poke();
                    }
                }
            }
            Some(Block::End) => break true,
            // Abandoned: dropping the temp file removes it.
            None => break false,
        }
    };
    drop(hash_tx);
    let digest = hasher.join();
    if let Some(s) = syncer {
        s.finish()?;
    }
    if !ended {
        return Err(FileError::BodyRead);
    }
    let digest = digest.map_err(|_| {
        FileError::io(
            "hashing an upload",
            std::io::Error::other("the hasher thread panicked"),
        )
    })?;
    temp.as_file()
        .sync_data()
        .map_err(io("syncing an upload"))?;
    Ok(Staged {
        file: temp,
        len,
        digest,
    })
}

/// A thread that runs `fdatasync` on an upload's file each time it is poked, coalescing pokes
/// that arrive while it works.
struct Syncer {
    poke: std::sync::mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl Syncer {
    fn start(file: &std::fs::File) -> Result<Syncer, FileError> {
        let file = file
            .try_clone()
            .map_err(|e| FileError::io("opening an upload for syncing", e))?;
        let (poke, pokes) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("upload-sync".into())
            .spawn(move || {
                for () in pokes {
                    file.sync_data()?;
                }
                Ok(())
            })
            .map_err(|e| FileError::io("starting an upload's syncer", e))?;
        Ok(Syncer { poke, thread })
    }

    fn poke(&self) {
        let _ = self.poke.try_send(());
    }

    fn finish(self) -> Result<(), FileError> {
        drop(self.poke);
        match self.thread.join() {
            Ok(result) => result.map_err(|e| FileError::io("syncing an upload", e)),
            Err(_) => Err(FileError::io(
                "syncing an upload",
                std::io::Error::other("the syncer thread panicked"),
            )),
        }
    }
}

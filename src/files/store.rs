//! The file store's disk: where a [`StorePath`] lives, opening files to read, committing uploads,
//! deleting, the space used, and the sweeps (issue #3).
//!
//! Every method here is blocking; callers run them on tokio's blocking pool. Layout under the
//! root: the files themselves, and `.edge-agent/` with `tmp/` (uploads in progress, removed at
//! start) and `meta/` (digest records, see `meta`). A path is refused when it, or the deepest part
//! of it that exists, resolves through a symlink to outside the root. Commits (record, rename,
//! directory fsync) take one lock, so two uploads of one path never interleave: the last to
//! commit wins, and a reader holding the old file keeps reading it whole.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tempfile::NamedTempFile;

use super::conditional::Validators;
use super::counters::Counters;
use super::digest::Sha256;
use super::error::FileError;
use super::meta::{self, Records, Stamp};
use super::path::{InvalidPath, StorePath, RESERVED};
use crate::config::FilesConfig;

/// Why the store could not be opened at start.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the file store {}", dir.display())]
pub struct OpenError {
    pub dir: PathBuf,
    #[source]
    pub source: io::Error,
}

/// An open stored file with what its headers need.
pub struct OpenFile {
    pub file: File,
    pub len: u64,
    pub modified: SystemTime,
    pub digest: Sha256,
}

/// A write's `If-Match` / `If-None-Match` / `If-Unmodified-Since`, given the current file's
/// validators (`None`: no file): true when the write may go ahead.
pub type Precondition = Box<dyn FnOnce(Option<&Validators>) -> bool + Send>;

/// An upload's bytes, complete, fsynced, hashed, waiting to be committed.
pub struct Staged {
    pub file: NamedTempFile,
    pub len: u64,
    pub digest: Sha256,
}

pub(super) struct Inner {
    pub(super) root: PathBuf,
    tmp: PathBuf,
    records: Records,
    pub(super) config: FilesConfig,
    commit: Mutex<()>,
    /// Bytes of the stored files, as last counted and kept up to date by commits and deletes.
    used: AtomicU64,
    /// Bytes of uploads in progress.
    reserved: AtomicU64,
    /// Uploads in progress: each holds a writer, a hasher and maybe a syncer thread.
    uploads: Arc<tokio::sync::Semaphore>,
    pub(super) counters: Arc<Counters>,
}

/// The most uploads received at once; more get 503 with `Retry-After`.
pub const MAX_UPLOADS: usize = 32;

/// The file store: a cheap, clonable handle.
#[derive(Clone)]
pub struct Store(pub(super) Arc<Inner>);

impl Store {
    /// Creates the root and the bookkeeping directories, removes what interrupted uploads left,
    /// and counts the space used.
    pub fn open(config: &FilesConfig) -> Result<Store, OpenError> {
        let err = |source| OpenError {
            dir: config.dir.clone(),
            source,
        };
        fs::create_dir_all(&config.dir).map_err(err)?;
        let root = config.dir.canonicalize().map_err(err)?;
        let own = root.join(RESERVED);
        let tmp = own.join("tmp");
        let meta_dir = own.join("meta");
        for dir in [&tmp, &meta_dir] {
            fs::create_dir_all(dir).map_err(err)?;
        }
        let removed = remove_children(&tmp) + remove_temp_records(&meta_dir);
        if removed > 0 {
            tracing::info!(removed, "removed the temp files of interrupted uploads");
        }
        let store = Store(Arc::new(Inner {
            root,
            tmp,
            records: Records::new(meta_dir),
            config: config.clone(),
            commit: Mutex::new(()),
            used: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
            uploads: Arc::new(tokio::sync::Semaphore::new(MAX_UPLOADS)),
            counters: Arc::default(),
        }));
        store.sweep(SystemTime::now());
        Ok(store)
    }

    /// A place among the uploads in progress, if one is free.
    pub fn upload_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.0.uploads.clone().try_acquire_owned().ok()
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.0.counters
    }

    pub fn config(&self) -> &FilesConfig {
        &self.0.config
    }

    /// Bytes of the stored files.
    pub fn used(&self) -> u64 {
        self.0.used.load(Ordering::Relaxed)
    }

    /// Where `path` lives, refusing one that resolves through a symlink to outside the root.
    fn locate(&self, path: &StorePath) -> Result<PathBuf, FileError> {
        let full = path.under(&self.0.root);
        let mut probe = Some(full.as_path());
        while let Some(p) = probe {
            match p.canonicalize() {
                // Inside the root, but not (through a symlink to the root) in its own files.
                Ok(real) if real.starts_with(&self.0.root) => {
                    if real.starts_with(self.0.root.join(RESERVED)) {
                        return Err(InvalidPath(path.shown().to_owned()).into());
                    }
                    break;
                }
                Ok(_) => return Err(InvalidPath(path.shown().to_owned()).into()),
                // Missing, or a parent is a file: judge the part that exists.
                Err(_) => probe = p.parent().filter(|p| p.starts_with(&self.0.root)),
            }
        }
        Ok(full)
    }

    /// Opens a stored file to read it, with its length, time and digest (hashed again when its
    /// record is missing or stale). A directory, or anything that is not a regular file, is not
    /// found.
    pub fn open_read(&self, path: &StorePath) -> Result<OpenFile, FileError> {
        let not_found = || FileError::NotFound(path.shown().to_owned());
        if path.is_root() {
            return Err(not_found());
        }
        let full = self.locate(path)?;
        // Checked before opening: opening a FIFO would block.
        match fs::metadata(&full) {
            Ok(m) if m.is_file() => {}
            _ => return Err(not_found()),
        }
        let mut file = match File::open(&full) {
            Ok(f) => f,
            Err(e) if is_missing(&e) => return Err(not_found()),
            Err(e) => return Err(FileError::io(format!("opening {path}"), e)),
        };
        let m = file
            .metadata()
            .map_err(|e| FileError::io(format!("reading the metadata of {path}"), e))?;
        if !m.is_file() {
            return Err(not_found());
        }
        let stamp = Stamp::of(&m);
        let digest = match self.0.records.get(path.as_str(), stamp) {
            Some(d) => d,
            None => {
                tracing::info!(%path, bytes = m.len(), "hashing a file stored without the agent");
                let d = meta::hash_file(&mut file)
                    .map_err(|e| FileError::io(format!("hashing {path}"), e))?;
                if let Err(e) = self.0.records.put(path.as_str(), stamp, d) {
                    tracing::warn!(%path, "cannot record the digest: {e}");
                }
                d
            }
        };
        Ok(OpenFile {
            file,
            len: m.len(),
            modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            digest,
        })
    }

    /// The validators of the file at `path`; `None` when there is none.
    pub fn current(&self, path: &StorePath) -> Result<Option<Validators>, FileError> {
        match self.open_read(path) {
            Ok(file) => Ok(Some(Validators::new(file.digest.etag(), file.modified))),
            Err(FileError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Evaluates a write's precondition against the file as it is now; under the commit lock, so
    /// that two conditional writes cannot both pass against the same version.
    fn check(&self, path: &StorePath, precondition: Option<Precondition>) -> Result<(), FileError> {
        let Some(holds) = precondition else {
            return Ok(());
        };
        if holds(self.current(path)?.as_ref()) {
            Ok(())
        } else {
            Err(FileError::PreconditionFailed)
        }
    }

    /// Checks that `path` can take an upload, before its body is read: not the root, not a
    /// directory, no file among its parents. Returns the size of the file it replaces.
    pub fn check_upload(&self, path: &StorePath) -> Result<u64, FileError> {
        if path.is_root() {
            return Err(FileError::UploadOnDirectory(path.shown().to_owned()));
        }
        let full = self.locate(path)?;
        match fs::metadata(&full) {
            Ok(m) if m.is_dir() => Err(FileError::UploadOnDirectory(path.shown().to_owned())),
            Ok(m) => Ok(m.len()),
            Err(_) => {
                self.parent_file(path)?;
                Ok(0)
            }
        }
    }

    /// An error naming the first parent of `path` that is a file, if any.
    fn parent_file(&self, path: &StorePath) -> Result<(), FileError> {
        let mut prefix = PathBuf::new();
        let segments: Vec<&str> = path.as_str().split('/').collect();
        for segment in &segments[..segments.len().saturating_sub(1)] {
            prefix.push(segment);
            if fs::metadata(self.0.root.join(&prefix)).is_ok_and(|m| !m.is_dir()) {
                return Err(FileError::ParentIsFile {
                    path: path.shown().to_owned(),
                    parent: prefix.to_string_lossy().into_owned(),
                });
            }
        }
        Ok(())
    }

    /// A new temp file for an upload, in the store's temp directory (same file system as the
    /// files, so the commit is a rename). Removed when dropped uncommitted.
    pub fn temp_file(&self) -> Result<NamedTempFile, FileError> {
        tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(&self.0.tmp)
            .map_err(|e| FileError::io("creating an upload's temp file", e))
    }

    /// Makes a staged upload the file at `path`, atomically: its digest record first, then the
    /// rename, then an fsync of the directory so the new name survives a crash.
    pub fn commit(
        &self,
        path: &StorePath,
        staged: Staged,
        precondition: Option<Precondition>,
    ) -> Result<(), FileError> {
        let _one_at_a_time = self.0.commit.lock().unwrap_or_else(|e| e.into_inner());
        self.check(path, precondition)?;
        let (full, parent, old_len) = self.target(path)?;
        let m = staged
            .file
            .as_file()
            .metadata()
            .map_err(|e| FileError::io(format!("reading the upload of {path}"), e))?;
        self.0
            .records
            .put(path.as_str(), Stamp::of(&m), staged.digest)
            .map_err(|e| FileError::io(format!("recording the digest of {path}"), e))?;
        staged
            .file
            .persist(&full)
            .map_err(|e| FileError::io(format!("renaming the upload of {path}"), e.error))?;
        sync_dir(&parent)
            .map_err(|e| FileError::io(format!("syncing the directory of {path}"), e))?;
        self.0.used.fetch_add(staged.len, Ordering::Relaxed);
        self.release_used(old_len);
        Ok(())
    }

    /// Makes the file at `source` also the file at `path`, by a hard link (no copy: ten children
    /// updated from one download share its blocks), with its known `digest`. `source` must be on
    /// the store's file system: a stored file, or a download in the store's own cache. Like a
    /// commit, atomic and durable; counted against the quota like any file.
    pub fn link(&self, path: &StorePath, source: &Path, digest: Sha256) -> Result<(), FileError> {
        let len = fs::metadata(source)
            .map_err(|e| FileError::io(format!("reading {}", source.display()), e))?
            .len();
        let _one_at_a_time = self.0.commit.lock().unwrap_or_else(|e| e.into_inner());
        let (full, parent, old_len) = self.target(path)?;
        if !self.reserve(len, old_len) {
            return Err(FileError::Quota {
                path: path.shown().to_owned(),
                quota: self.0.config.quota_bytes,
            });
        }
        let linked = self.put_link(path, source, digest, &full, &parent);
        if linked.is_ok() {
            self.0.used.fetch_add(len, Ordering::Relaxed);
            self.release_used(old_len);
        }
        self.unreserve(len);
        linked
    }

    /// [`Store::link`]'s file work, with the quota reserved and the commit lock held.
    fn put_link(
        &self,
        path: &StorePath,
        source: &Path,
        digest: Sha256,
        full: &Path,
        parent: &Path,
    ) -> Result<(), FileError> {
        // A new name in the temp dir, linked, then renamed over the path: readers see the old
        // file or the new one, never none.
        let temp = self.temp_file()?.into_temp_path();
        let temp_name = temp.to_path_buf();
        temp.close()
            .map_err(|e| FileError::io("preparing a link", e))?;
        fs::hard_link(source, &temp_name)
            .map_err(|e| FileError::io(format!("linking {path}"), e))?;
        let cleanup = |e: FileError| {
            let _ = fs::remove_file(&temp_name);
            e
        };
        let m = fs::metadata(&temp_name)
            .map_err(|e| cleanup(FileError::io(format!("reading {path}"), e)))?;
        self.0
            .records
            .put(path.as_str(), Stamp::of(&m), digest)
            .map_err(|e| cleanup(FileError::io(format!("recording the digest of {path}"), e)))?;
        fs::rename(&temp_name, full)
            .map_err(|e| cleanup(FileError::io(format!("renaming the link of {path}"), e)))?;
        // rename(2) does nothing when both names are links to one file (a file linked onto
        // itself): the temp name is then still there.
        let _ = fs::remove_file(&temp_name);
        sync_dir(parent)
            .map_err(|e| FileError::io(format!("syncing the directory of {path}"), e))?;
        Ok(())
    }

    /// Where a file written at `path` goes: its full path, its directory (created), and the
    /// length of the file it replaces. A directory there is refused. Under the commit lock.
    fn target(&self, path: &StorePath) -> Result<(PathBuf, PathBuf, u64), FileError> {
        let full = self.locate(path)?;
        let old_len = match fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => {
                return Err(FileError::UploadOnDirectory(path.shown().to_owned()))
            }
            Ok(m) => m.len(),
            Err(_) => 0,
        };
        let parent = full.parent().unwrap_or(&self.0.root).to_path_buf();
        if let Err(e) = fs::create_dir_all(&parent) {
            self.parent_file(path)?;
            return Err(FileError::io(
                format!("creating the directory of {path}"),
                e,
            ));
        }
        Ok((full, parent, old_len))
    }

    /// The path of the file at `path` on disk, if it is a file (for linking it elsewhere).
    pub fn file_path(&self, path: &StorePath) -> Result<PathBuf, FileError> {
        let full = self.locate(path)?;
        match fs::metadata(&full) {
            Ok(m) if m.is_file() => Ok(full),
            _ => Err(FileError::NotFound(path.shown().to_owned())),
        }
    }

    /// Deletes the file at `path`; a missing one is fine, a directory is refused.
    pub fn delete(
        &self,
        path: &StorePath,
        precondition: Option<Precondition>,
    ) -> Result<(), FileError> {
        if path.is_root() {
            return Err(FileError::DeleteDirectory(path.shown().to_owned()));
        }
        let full = self.locate(path)?;
        let _one_at_a_time = self.0.commit.lock().unwrap_or_else(|e| e.into_inner());
        self.check(path, precondition)?;
        let len = match fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => return Err(FileError::DeleteDirectory(path.shown().to_owned())),
            Ok(m) => m.len(),
            Err(_) => return Ok(()),
        };
        match fs::remove_file(&full) {
            Ok(()) => {}
            Err(e) if is_missing(&e) => return Ok(()),
            Err(e) => return Err(FileError::io(format!("deleting {path}"), e)),
        }
        self.0.records.remove(path.as_str());
        self.release_used(len);
        Ok(())
    }

    /// Reserves `bytes` more for an upload that will replace `replaces` bytes, if the quota has
    /// room; the reservation is released by [`Store::unreserve`].
    pub fn reserve(&self, bytes: u64, replaces: u64) -> bool {
        let quota = self.0.config.quota_bytes;
        let used = self.0.used.load(Ordering::Relaxed).saturating_sub(replaces);
        let reserved = self.0.reserved.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if used.saturating_add(reserved) > quota {
            self.unreserve(bytes);
            return false;
        }
        true
    }

    pub fn unreserve(&self, bytes: u64) {
        let _ = self
            .0
            .reserved
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                Some(r.saturating_sub(bytes))
            });
    }

    fn release_used(&self, bytes: u64) {
        let _ = self
            .0
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(bytes))
            });
    }

    /// Walks the store: removes files older than `files.ttl` (and records of files that are
    /// gone), and recounts the space used, which also corrects for files changed behind the
    /// agent's back. Returns how many files it removed.
    pub fn sweep(&self, now: SystemTime) -> usize {
        let _one_at_a_time = self.0.commit.lock().unwrap_or_else(|e| e.into_inner());
        let ttl = self.0.config.ttl;
        let mut used = 0;
        let mut removed = 0;
        let mut stack = vec![self.0.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                let path = entry.path();
                if dir == self.0.root && entry.file_name() == RESERVED {
                    continue;
                }
                let Ok(m) = entry.metadata() else { continue };
                if m.is_dir() {
                    stack.push(path);
                    continue;
                }
                let expired = ttl.is_some_and(|ttl| {
                    m.modified()
                        .ok()
                        .and_then(|t| now.duration_since(t).ok())
                        .is_some_and(|age| age > ttl)
                });
                if expired && fs::remove_file(&path).is_ok() {
                    removed += 1;
                    if let Ok(rel) = path.strip_prefix(&self.0.root) {
                        tracing::info!(path = %rel.display(), "removed a file older than files.ttl");
                    }
                    continue;
                }
                used += m.len();
            }
        }
        for (rel, record) in self.0.records.list() {
            if !self.0.root.join(&rel).is_file() {
                let _ = fs::remove_file(record);
            }
        }
        self.0.used.store(used, Ordering::Relaxed);
        removed
    }

    /// How often the TTL sweep runs: a tenth of the TTL, between 1 s and 1 min.
    pub fn sweep_interval(&self) -> Option<Duration> {
        self.0
            .config
            .ttl
            .map(|ttl| (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60)))
    }
}

fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes every entry of `dir`; returns how many.
fn remove_children(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| fs::remove_file(e.path()).is_ok())
        .count()
}

/// Removes the temp files of digest records that were being written.
fn remove_temp_records(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".rec-"))
        .filter(|e| fs::remove_file(e.path()).is_ok())
        .count()
}

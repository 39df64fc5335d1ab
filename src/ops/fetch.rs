//! The agent's downloader of remote files for operations (issue #5, "Making the file available"):
//! an `http(s)://` URL becomes a verified file in a cache directory.
//!
//! It owns the cache directory and the HTTP client it downloads with (rustls, trusting the
//! platform's roots as reqwest does). A body streams into a temp file in that directory, hashed as
//! it arrives, then fsynced and renamed into place, so a file under its final name is always
//! complete and, when a digest was given, verified. A dropped connection (an error or
//! [`FetchOptions::idle_timeout`] of silence mid-body) is resumed with `Range` and `If-Range`
//! (a 200 instead of a 206 starts again from zero); connection errors, 5xx and drops are retried
//! with a doubling pause, 4xx other than 408 and 429 are not. The cache key is the URL and the
//! expected digest (none is a key of its own: the first download of the URL stands until it is
//! evicted). Concurrent calls for one key share one download, which runs in its own task, so a
//! caller that gives up does not cancel it for the others; a file in the cache is a hit without
//! any request (after a restart, once it is hashed again and still matches).
//!
//! Not here: where the file is served from, and when it is no longer needed (the operations
//! call [`Fetcher::evict`]).

use crate::client::get::range_total;
use crate::client::remote::{parse_http_url, InvalidRemote};
use std::collections::HashMap;
use std::fmt;
use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::header::{HeaderMap, CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE};
use reqwest::{StatusCode, Url};
use tempfile::NamedTempFile;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::client::error::Transport;
use crate::files::digest::{Hasher, Sha256};

/// The longest pause between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A server that accepts no connection within this time counts as a connection error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Temp files of downloads in progress start with this; any left by an earlier run are removed
/// by [`Fetcher::new`].
const PART_PREFIX: &str = ".part-";

/// How downloads are retried and bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Attempts made again after a failure, before giving up. A failed attempt that got further
    /// into the file than any before it does not use one up: a weak link that keeps making
    /// progress is followed to the end, while a server that keeps cutting at the same place is
    /// given up on.
    pub retries: u32,
    /// The first pause before a retry; it doubles with each failure, up to [`MAX_BACKOFF`].
    pub backoff: Duration,
    /// The largest file accepted, checked against `Content-Length` and while streaming.
    pub max_bytes: u64,
    /// A body that sends nothing for this long is a dropped connection; so is a server that
    /// takes this long to answer a request.
    pub idle_timeout: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            retries: 5,
            backoff: Duration::from_secs(1),
            max_bytes: 1 << 30,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// A downloaded file in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The file, inside the cache directory.
    pub path: PathBuf,
    /// Its SHA-256, lower-case hex, computed while it was received.
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot download {url:?}: only http and https URLs are supported")]
    UnsupportedScheme { url: String },
    #[error("invalid sha256 {value:?}: expected 64 hexadecimal digits")]
    InvalidDigest { value: String },
    #[error("cannot set up the HTTP client")]
    Client(#[source] Arc<reqwest::Error>),
    #[error("cannot {action} in the download cache {}", dir.display())]
    Cache {
        action: &'static str,
        dir: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    #[error("{} is not a file of the download cache {}", path.display(), dir.display())]
    NotCached { path: PathBuf, dir: PathBuf },
    #[error("cannot reach {url}")]
    Unreachable {
        url: String,
        #[source]
        source: Arc<Transport>,
    },
    /// The server answered with an error; 4xx are not retried, 5xx only so many times.
    #[error("GET {url}: {status}")]
    Status { url: String, status: StatusCode },
    #[error("the download of {url} was interrupted at byte {received}")]
    Interrupted {
        url: String,
        received: u64,
        #[source]
        source: Arc<Transport>,
    },
    #[error("the download of {url} stalled at byte {received}: nothing received for {idle:?}")]
    Stalled {
        url: String,
        received: u64,
        idle: Duration,
    },
    #[error("the download of {url} ended at byte {received} of {expected}")]
    EndedEarly {
        url: String,
        received: u64,
        expected: u64,
    },
    #[error(
        "{url} answered with bytes {content_range:?}, not from byte {offset} to the end as asked"
    )]
    BadRange {
        url: String,
        offset: u64,
        content_range: String,
    },
    #[error("{url} is larger than the limit of {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    /// The file received is not the one expected; it was deleted.
    #[error("{url} does not match its sha256: expected {expected}, received {actual}")]
    DigestMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    /// The last failure, once the retries are used up.
    #[error("gave up after {attempts} attempts")]
    GaveUp {
        attempts: u32,
        #[source]
        last: Box<FetchError>,
    },
    #[error("the download of {url} ended without a result")]
    Abandoned { url: String },
}

impl FetchError {
    /// The error itself, or the last failure when the retries were used up.
    pub fn last(&self) -> &FetchError {
        match self {
            FetchError::GaveUp { last, .. } => last.last(),
            e => e,
        }
    }
}

/// Downloads remote files into a cache directory: a cheap, clonable handle.
#[derive(Clone)]
pub struct Fetcher(Arc<Inner>);

struct Inner {
    dir: PathBuf,
    options: FetchOptions,
    /// Built at the first download: its root store (the system's CAs) costs memory an agent
    /// that never downloads should not pay.
    http: std::sync::OnceLock<reqwest::Client>,
    state: Mutex<State>,
}

type Outcome = Result<Fetched, FetchError>;

#[derive(Default)]
struct State {
    /// Files downloaded (or found and hashed) by this fetcher, by cache key.
    cached: HashMap<String, Fetched>,
    /// Downloads in progress, by cache key; the result is sent once.
    flights: HashMap<String, watch::Receiver<Option<Outcome>>>,
}

impl fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetcher")
            .field("dir", &self.0.dir)
            .field("options", &self.0.options)
            .finish_non_exhaustive()
    }
}

/// What one `fetch` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    url: Url,
    expected: Option<Sha256>,
    /// The file name in the cache.
    key: String,
}

impl Target {
    fn parse(url: &str, sha256: Option<&str>) -> Result<Target, FetchError> {
        let parsed = parse_http_url(url).map_err(|e| match e {
            InvalidRemote::Url { reason, .. } => FetchError::InvalidUrl {
                url: url.to_owned(),
                reason,
            },
            _ => FetchError::UnsupportedScheme {
                url: url.to_owned(),
            },
        })?;
        let expected = sha256
            .map(|value| {
                value
                    .parse::<Sha256>()
                    .map_err(|()| FetchError::InvalidDigest {
                        value: value.to_owned(),
                    })
            })
            .transpose()?;
        let key = cache_key(&parsed, expected.as_ref());
        Ok(Target {
            url: parsed,
            expected,
            key,
        })
    }

    fn url(&self) -> String {
        self.url.to_string()
    }
}

/// The cache's file name for a URL and an expected digest: the hex SHA-256 of
/// `<url>\n<expected hex, or nothing>`, the URL as normalized by parsing.
fn cache_key(url: &Url, expected: Option<&Sha256>) -> String {
    let mut hasher = Hasher::new();
    hasher.update(url.as_str().as_bytes());
    hasher.update(b"\n");
    if let Some(expected) = expected {
        hasher.update(expected.to_string().as_bytes());
    }
    hasher.finish().to_string()
}

fn is_key(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The pause before the retry that follows `failures` failures in a row (the first is 0).
pub fn backoff_delay(first: Duration, failures: u32) -> Duration {
    first
        .saturating_mul(2u32.saturating_pow(failures))
        .min(MAX_BACKOFF)
}

/// What `If-Range` can carry to resume this response's body: a strong `ETag`, else
/// `Last-Modified` (a weak tag cannot be used for a range, RFC 9110 §13.1.5).
fn validator(headers: &HeaderMap) -> Option<String> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    match text(ETAG) {
        Some(etag) if !etag.starts_with("W/") => Some(etag.to_owned()),
        _ => text(LAST_MODIFIED).map(str::to_owned),
    }
}

/// Whether an answer is worth asking again: server errors, and the two client errors that say
/// "later" (408 Request Timeout, 429 Too Many Requests).
fn is_transient(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// How an attempt failed.
enum Failure {
    Retry(FetchError),
    Fatal(FetchError),
}

/// A download in progress: its temp file (removed on drop unless committed), what it holds,
/// and the running hash of exactly those bytes.
struct Part {
    temp: NamedTempFile,
    file: tokio::fs::File,
    have: u64,
    hasher: Hasher,
    /// What resumes it (`If-Range`), from the answer that started the current body.
    validator: Option<String>,
}

impl Part {
    async fn create(dir: &Path) -> Result<Part, FetchError> {
        let owned = dir.to_owned();
        let temp = blocking(dir, "create a temp file", move || {
            tempfile::Builder::new()
                .prefix(PART_PREFIX)
                .tempfile_in(&owned)
        })
        .await?;
        let file = temp
            .as_file()
            .try_clone()
            .map_err(|e| cache_error("open a temp file", dir, e))?;
        Ok(Part {
            temp,
            file: tokio::fs::File::from_std(file),
            have: 0,
            hasher: Hasher::new(),
            validator: None,
        })
    }

    async fn restart(&mut self) -> io::Result<()> {
        self.file.flush().await?;
        self.file.set_len(0).await?;
        self.file.seek(SeekFrom::Start(0)).await?;
        self.have = 0;
        self.hasher = Hasher::new();
        self.validator = None;
        Ok(())
    }

    async fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes).await?;
        self.hasher.update(bytes);
        self.have += bytes.len() as u64;
        Ok(())
    }
}

impl Fetcher {
    /// A fetcher keeping its files in `cache_dir`, which is created if missing; temp files an
    /// earlier run left there are removed. Files already cached are found again by `fetch`.
    pub fn new(cache_dir: PathBuf, options: FetchOptions) -> Result<Fetcher, FetchError> {
        let dir = cache_dir.as_path();
        let fail = |action| move |e| cache_error(action, dir, e);
        std::fs::create_dir_all(&cache_dir).map_err(fail("create the directory"))?;
        for entry in std::fs::read_dir(&cache_dir).map_err(fail("list the directory"))? {
            let entry = entry.map_err(fail("list the directory"))?;
            if entry.file_name().to_string_lossy().starts_with(PART_PREFIX) {
                if let Err(e) = std::fs::remove_file(entry.path()) {
                    tracing::warn!(path = %entry.path().display(), "cannot remove an old temp file: {e}");
                }
            }
        }
        Ok(Fetcher(Arc::new(Inner {
            dir: cache_dir,
            options,
            http: std::sync::OnceLock::new(),
            state: Mutex::default(),
        })))
    }

    pub fn cache_dir(&self) -> &Path {
        &self.0.dir
    }

    /// The file at `url`, downloaded into the cache (or found there), verified against `sha256`
    /// when given. Concurrent calls with the same (url, sha256) share one download; later calls
    /// find it in the cache.
    pub async fn fetch(&self, url: &str, sha256: Option<&str>) -> Result<Fetched, FetchError> {
        let target = Target::parse(url, sha256)?;
        // At most twice: a cached file found missing on disk is forgotten and fetched again.
        for _ in 0..2 {
            let flight = {
                let mut state = self.0.lock();
                if let Some(hit) = state.cached.get(&target.key) {
                    Ok(hit.clone())
                } else if let Some(flight) = state.flights.get(&target.key) {
                    Err(flight.clone())
                } else {
                    let (tx, rx) = watch::channel(None);
                    state.flights.insert(target.key.clone(), rx.clone());
                    tokio::spawn(Arc::clone(&self.0).fly(target.clone(), tx));
                    Err(rx)
                }
            };
            let mut flight = match flight {
                Ok(hit) => {
                    if self.0.still_there(&hit).await {
                        return Ok(hit);
                    }
                    self.0.forget(&target.key, &hit);
                    continue;
                }
                Err(flight) => flight,
            };
            return match flight.wait_for(Option::is_some).await {
                Ok(outcome) => outcome.clone().unwrap_or_else(|| Err(abandoned(&target))),
                Err(_) => Err(abandoned(&target)),
            };
        }
        Err(abandoned(&target))
    }

    /// Forgets a cached file (when no operation needs it any more) and deletes it. A file
    /// already gone is not an error; a path outside the cache is refused.
    pub fn evict(&self, fetched: &Fetched) -> Result<(), FetchError> {
        let key = fetched
            .path
            .file_name()
            .and_then(|name| name.to_str())
            .filter(|name| is_key(name))
            .filter(|_| fetched.path.parent() == Some(self.0.dir.as_path()))
            .ok_or_else(|| FetchError::NotCached {
                path: fetched.path.clone(),
                dir: self.0.dir.clone(),
            })?;
        self.0.lock().cached.remove(key);
        match std::fs::remove_file(&fetched.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(cache_error("remove a file", &self.0.dir, e)),
        }
    }
}

fn abandoned(target: &Target) -> FetchError {
    FetchError::Abandoned { url: target.url() }
}

/// Removes a flight from the map however its task ends (a panic included), so that the next
/// call starts afresh instead of waiting forever.
struct Landing<'a> {
    inner: &'a Inner,
    key: &'a str,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        self.inner.lock().flights.remove(self.key);
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The task of one download: obtains the file, records it, lands, then tells the callers.
    async fn fly(self: Arc<Inner>, target: Target, tx: watch::Sender<Option<Outcome>>) {
        let outcome = {
            let _landing = Landing {
                inner: &self,
                key: &target.key,
            };
            let outcome = self.obtain(&target).await;
            if let Ok(fetched) = &outcome {
                self.lock()
                    .cached
                    .insert(target.key.clone(), fetched.clone());
            }
            outcome
        };
        let _ = tx.send(Some(outcome));
    }

    /// Whether a cached file is still on disk, as long as when it was cached.
    async fn still_there(&self, fetched: &Fetched) -> bool {
        match tokio::fs::metadata(&fetched.path).await {
            Ok(meta) => meta.is_file() && meta.len() == fetched.size,
            Err(_) => false,
        }
    }

    fn forget(&self, key: &str, fetched: &Fetched) {
        let mut state = self.lock();
        if state.cached.get(key) == Some(fetched) {
            tracing::warn!(path = %fetched.path.display(), "a cached download has gone: fetching it again");
            state.cached.remove(key);
        }
    }

    /// The file under its key: found on disk (left by an earlier run) and hashed, or downloaded.
    async fn obtain(&self, target: &Target) -> Outcome {
        let path = self.dir.join(&target.key);
        if let Some(found) = self.rehash(&path).await? {
            match target.expected {
                Some(expected) if expected.to_string() != found.sha256 => {
                    tracing::warn!(path = %path.display(), "a cached download does not match its digest: fetching it again");
                }
                _ => return Ok(found),
            }
        }
        self.download(target, path).await
    }

    /// The digest and size of a file already in the cache; `None` when there is none.
    async fn rehash(&self, path: &Path) -> Result<Option<Fetched>, FetchError> {
        let owned = path.to_owned();
        let found = blocking(&self.dir, "read a cached file", move || {
            let mut file = match std::fs::File::open(&owned) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            if !file.metadata()?.is_file() {
                return Ok(None);
            }
            let mut hasher = Hasher::new();
            let size = hasher.read_from(&mut file)?;
            Ok(Some(Fetched {
                path: owned,
                sha256: hasher.finish().to_string(),
                size,
            }))
        })
        .await?;
        if let Some(found) = &found {
            tracing::info!(path = %found.path.display(), bytes = found.size, "found a cached download");
        }
        Ok(found)
    }

    /// Downloads into a temp file, retrying and resuming, then verifies and commits it.
    async fn download(&self, target: &Target, path: PathBuf) -> Outcome {
        let options = &self.options;
        let mut part = Part::create(&self.dir).await?;
        tracing::info!(url = %target.url, "downloading");
        let mut attempts = 0u32;
        let mut failures = 0u32;
        // The most of the file held after any attempt: getting past it is progress.
        let mut furthest = 0u64;
        loop {
            attempts += 1;
            let error = match self.attempt(target, &mut part).await {
                Ok(()) => break,
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(e)) => e,
            };
            if part.have > furthest {
                furthest = part.have;
                failures = 0;
            } else if failures >= options.retries {
                return Err(FetchError::GaveUp {
                    attempts,
                    last: Box::new(error),
                });
            } else {
                failures += 1;
            }
            let pause = backoff_delay(options.backoff, failures.saturating_sub(1));
            tracing::warn!(url = %target.url, "{}; retrying in {pause:?}", crate::report::chain(&error));
            tokio::time::sleep(pause).await;
        }
        let actual = part.hasher.finish().to_string();
        let size = part.have;
        if let Some(expected) = target.expected {
            let expected = expected.to_string();
            if expected != actual {
                // `part.temp` is dropped here: the file is deleted.
                return Err(FetchError::DigestMismatch {
                    url: target.url(),
                    expected,
                    actual,
                });
            }
        }
        let fail = |e| cache_error("write a download", &self.dir, e);
        part.file.flush().await.map_err(fail)?;
        part.file.sync_all().await.map_err(fail)?;
        drop(part.file);
        let (temp, dest) = (part.temp, path.clone());
        blocking(&self.dir, "commit a download", move || {
            temp.persist(&dest).map_err(|e| e.error)?;
            match dest.parent() {
                Some(dir) => std::fs::File::open(dir)?.sync_all(),
                None => Ok(()),
            }
        })
        .await?;
        tracing::info!(url = %target.url, path = %path.display(), bytes = size, sha256 = %actual, "downloaded");
        Ok(Fetched {
            path,
            sha256: actual,
            size,
        })
    }

    /// One request: from the start, or from `part.have` when the part can be resumed.
    async fn attempt(&self, target: &Target, part: &mut Part) -> Result<(), Failure> {
        let url = || target.url();
        let disk = |e| Failure::Fatal(cache_error("write a download", &self.dir, e));
        let limit = self.options.max_bytes;
        let too_large = || Failure::Fatal(FetchError::TooLarge { url: url(), limit });
        let http = match self.http.get() {
            Some(http) => http,
            None => {
                let built = build_client(&self.options).map_err(Failure::Fatal)?;
                self.http.get_or_init(|| built)
            }
        };
        let mut request = http.get(target.url.clone());
        let offset = match &part.validator {
            Some(validator) if part.have > 0 => {
                request = request
                    .header(RANGE, format!("bytes={}-", part.have))
                    .header(IF_RANGE, validator.as_str());
                Some(part.have)
            }
            _ => None,
        };
        let mut response = request.send().await.map_err(|e| {
            Failure::Retry(FetchError::Unreachable {
                url: url(),
                source: Arc::new(Transport::of(&e)),
            })
        })?;
        let status = response.status();
        let total = match (status, offset) {
            (StatusCode::PARTIAL_CONTENT, Some(offset)) => {
                let content_range = header_text(response.headers(), CONTENT_RANGE);
                let Some(total) = range_total(&content_range, offset) else {
                    part.restart().await.map_err(disk)?;
                    return Err(Failure::Retry(FetchError::BadRange {
                        url: url(),
                        offset,
                        content_range,
                    }));
                };
                tracing::info!(url = %target.url, offset, total, "resuming");
                Some(total)
            }
            (StatusCode::OK, _) => {
                if part.have > 0 {
                    tracing::info!(url = %target.url, "the server sent the whole file: starting again from zero");
                }
                part.restart().await.map_err(disk)?;
                part.validator = validator(response.headers());
                response.content_length()
            }
            // The file shrank or changed under our range: start again from zero.
            (StatusCode::RANGE_NOT_SATISFIABLE, Some(offset)) => {
                part.restart().await.map_err(disk)?;
                return Err(Failure::Retry(FetchError::BadRange {
                    url: url(),
                    offset,
                    content_range: header_text(response.headers(), CONTENT_RANGE),
                }));
            }
            (status, _) => {
                let error = FetchError::Status { url: url(), status };
                return Err(if is_transient(status) {
                    Failure::Retry(error)
                } else {
                    Failure::Fatal(error)
                });
            }
        };
        if total.is_some_and(|total| total > limit) {
            return Err(too_large());
        }
        let idle = self.options.idle_timeout;
        loop {
            let chunk = match tokio::time::timeout(idle, response.chunk()).await {
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    return Err(Failure::Retry(FetchError::Interrupted {
                        url: url(),
                        received: part.have,
                        source: Arc::new(Transport::of(&e)),
                    }))
                }
                Err(_) => {
                    return Err(Failure::Retry(FetchError::Stalled {
                        url: url(),
                        received: part.have,
                        idle,
                    }))
                }
            };
            if part.have + chunk.len() as u64 > limit {
                return Err(too_large());
            }
            part.append(&chunk).await.map_err(disk)?;
        }
        match total {
            Some(expected) if part.have != expected => {
                Err(Failure::Retry(FetchError::EndedEarly {
                    url: url(),
                    received: part.have,
                    expected,
                }))
            }
            _ => Ok(()),
        }
    }
}

fn header_text(headers: &HeaderMap, name: reqwest::header::HeaderName) -> String {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

fn cache_error(action: &'static str, dir: &Path, source: io::Error) -> FetchError {
    FetchError::Cache {
        action,
        dir: dir.to_owned(),
        source: Arc::new(source),
    }
}

/// Runs a file-system call on the blocking pool; its error is a cache error.
async fn blocking<T: Send + 'static>(
    dir: &Path,
    action: &'static str,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, FetchError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
        .map_err(|e| cache_error(action, dir, e))
}

/// The HTTP client of the downloads.
fn build_client(options: &FetchOptions) -> Result<reqwest::Client, FetchError> {
    // reqwest panics without a crypto provider; `main` installs ring, but a fetcher must not
    // depend on that (a second install is refused, harmlessly).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(options.idle_timeout)
        .user_agent(concat!("edge-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| FetchError::Client(Arc::new(e)))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn the_pause_doubles_from_the_first_and_stops_at_a_minute() {
        let first = Duration::from_millis(500);
        let pauses: Vec<_> = (0..9).map(|n| backoff_delay(first, n)).collect();
        assert_eq!(
            pauses,
            [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000].map(Duration::from_millis)
        );
        assert_eq!(backoff_delay(first, u32::MAX), MAX_BACKOFF);
        assert_eq!(backoff_delay(Duration::MAX, 3), MAX_BACKOFF);
        assert_eq!(backoff_delay(Duration::ZERO, 3), Duration::ZERO);
    }

    #[test]
    fn the_defaults_are_five_retries_from_one_second() {
        let o = FetchOptions::default();
        assert_eq!((o.retries, o.backoff), (5, Duration::from_secs(1)));
        assert_eq!(
            (o.max_bytes, o.idle_timeout),
            (1 << 30, Duration::from_secs(60))
        );
    }

    #[test]
    fn the_cache_key_is_the_sha256_of_the_url_and_the_expected_digest() {
        let plain = Target::parse("https://example.com/fw.bin", None).unwrap();
        let mut h = Hasher::new();
        h.update(b"https://example.com/fw.bin\n");
        assert_eq!(plain.key, h.finish().to_string());
        let verified = Target::parse("https://example.com/fw.bin", Some(ABC)).unwrap();
        let mut h = Hasher::new();
        h.update(format!("https://example.com/fw.bin\n{ABC}").as_bytes());
        assert_eq!(verified.key, h.finish().to_string());
        assert!(is_key(&plain.key) && is_key(&verified.key));
        // One digest in either case, one URL however it is spelled: one key.
        let upper = Target::parse("HTTPS://Example.COM/fw.bin", Some(&ABC.to_uppercase()));
        assert_eq!(upper.unwrap().key, verified.key);
        let other = Target::parse("https://example.com/fw2.bin", Some(ABC)).unwrap();
        assert_ne!(other.key, verified.key);
    }

    #[test]
    fn only_http_and_https_urls_with_a_host_are_fetched() {
        assert!(Target::parse("http://gw:8000/a", None).is_ok());
        assert!(Target::parse("https://gw/a?x=1", None).is_ok());
        for url in ["ftp://gw/a", "file:///etc/passwd", "data:text/plain,hi"] {
            assert_eq!(
                Target::parse(url, None).unwrap_err().to_string(),
                format!("cannot download {url:?}: only http and https URLs are supported")
            );
        }
        for url in ["gw/a", "", "http://", "http://gw:99999/"] {
            assert!(
                matches!(Target::parse(url, None), Err(FetchError::InvalidUrl { .. })),
                "{url:?}"
            );
        }
    }

    #[test]
    fn an_expected_digest_must_be_64_hex_digits() {
        for value in ["", "abc", &ABC[1..], &format!("{}zz", &ABC[..62])] {
            assert_eq!(
                Target::parse("http://gw/a", Some(value))
                    .unwrap_err()
                    .to_string(),
                format!("invalid sha256 {value:?}: expected 64 hexadecimal digits")
            );
        }
    }

    #[test]
    fn a_strong_etag_is_preferred_to_resume_then_last_modified() {
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        let mut h = HeaderMap::new();
        assert_eq!(validator(&h), None);
        h.insert(LAST_MODIFIED, HeaderValue::from_static(date));
        assert_eq!(validator(&h).as_deref(), Some(date));
        h.insert(ETAG, HeaderValue::from_static("W/\"weak\""));
        assert_eq!(validator(&h).as_deref(), Some(date));
        h.insert(ETAG, HeaderValue::from_static("\"strong\""));
        assert_eq!(validator(&h).as_deref(), Some("\"strong\""));
    }

    #[test]
    fn a_part_must_run_from_the_offset_asked_to_the_end() {
        assert_eq!(range_total("bytes 10-99/100", 10), Some(100));
        assert_eq!(range_total("bytes 0-0/1", 0), Some(1));
        assert_eq!(range_total("bytes 11-99/100", 10), None);
        assert_eq!(range_total("bytes 10-49/100", 10), None);
        assert_eq!(range_total("bytes 10-99/*", 10), None);
        assert_eq!(range_total("bytes */100", 10), None);
        assert_eq!(range_total("", 10), None);
        assert_eq!(
            range_total(&format!("bytes 10-{}/{}", u64::MAX, u64::MAX), 10),
            None
        );
    }

    #[test]
    fn server_errors_and_later_are_retried_other_refusals_are_not() {
        for code in [500, 502, 503, 504, 408, 429] {
            assert!(is_transient(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [400, 401, 403, 404, 410, 301, 204] {
            assert!(!is_transient(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }

    #[test]
    fn errors_name_the_url_and_a_gave_up_error_leads_to_the_last_failure() {
        let last = FetchError::Status {
            url: "http://gw/a".into(),
            status: StatusCode::SERVICE_UNAVAILABLE,
        };
        let e = FetchError::GaveUp {
            attempts: 6,
            last: Box::new(last),
        };
        assert_eq!(
            crate::report::chain(&e),
            "gave up after 6 attempts: GET http://gw/a: 503 Service Unavailable"
        );
        assert!(matches!(e.last(), FetchError::Status { status, .. } if status.as_u16() == 503));
    }

    #[test]
    fn only_files_of_the_cache_can_be_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let fetcher = Fetcher::new(dir.path().join("cache"), FetchOptions::default()).unwrap();
        let outside = dir.path().join("victim");
        std::fs::write(&outside, "keep").unwrap();
        let key = "a".repeat(64);
        for path in [
            outside.clone(),
            dir.path().join(&key),
            fetcher.cache_dir().join("not-a-key"),
            fetcher.cache_dir().join("..").join(&key),
        ] {
            let fetched = Fetched {
                path,
                sha256: key.clone(),
                size: 4,
            };
            assert!(
                matches!(fetcher.evict(&fetched), Err(FetchError::NotCached { .. })),
                "{fetched:?}"
            );
        }
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
        // A key that was never downloaded, or was already evicted: nothing to do.
        let gone = Fetched {
            path: fetcher.cache_dir().join(&key),
            sha256: key.clone(),
            size: 0,
        };
        assert!(fetcher.evict(&gone).is_ok());
    }

    #[test]
    fn temp_files_of_an_earlier_run_are_removed_and_cached_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        let key = "b".repeat(64);
        std::fs::write(dir.path().join(".part-x1"), "half").unwrap();
        std::fs::write(dir.path().join(&key), "whole").unwrap();
        Fetcher::new(dir.path().to_owned(), FetchOptions::default()).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [key]);
    }
}

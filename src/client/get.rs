//! `files get REMOTE LOCAL`: downloads to a local file, streamed to disk, resuming a partial one
//! and verifying the SHA-256 the server announces (`X-Checksum-Sha256`).
//!
//! When LOCAL exists, a HEAD tells its fate ([`plan`], pure): shorter than the remote file, the
//! rest is asked for with `Range: bytes=<len>-` and `If-Range: <etag>`, so a file replaced since
//! the HEAD comes whole (200) and LOCAL is rewritten from its start; as long, it is hashed and,
//! if it matches, nothing is downloaded; otherwise it is downloaded whole. LOCAL is truncated
//! only once a successful answer has come, so a refused or failed request leaves it as it was.
//! The digest covers the whole file, the kept prefix included: a prefix that is not the remote
//! file's is caught at the end. On a mismatch the file is kept (it is reported, never deleted
//! behind the user's back); a second `get` sees a complete but wrong file and downloads it whole.
//! An interrupted download keeps what arrived, for the next `get` to resume. The file is synced
//! to disk before success is reported.

use std::fmt;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, RANGE};
use reqwest::{Response, StatusCode, Url};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::error::Transport;
use super::local::{self, read_error, write_error};
use super::progress::Progress;
use super::{refusal, unreachable, Client, ClientError};
use crate::files::digest::{Hasher, Sha256};

const X_CHECKSUM: &str = "x-checksum-sha256";

/// A finished `get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Downloaded {
    /// Bytes were received; `digest` is `None` when the server announced none to verify.
    Fetched {
        url: Url,
        path: PathBuf,
        len: u64,
        digest: Option<Sha256>,
    },
    /// LOCAL already held the remote file: nothing was downloaded.
    Complete {
        path: PathBuf,
        len: u64,
        digest: Sha256,
    },
}

impl fmt::Display for Downloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Downloaded::Fetched {
                url,
                path,
                len,
                digest: Some(digest),
            } => write!(
                f,
                "downloaded {url} to {}: {len} bytes, sha256 {digest}",
                path.display()
            ),
            Downloaded::Fetched {
                url, path, len, ..
            } => write!(
                f,
                "downloaded {url} to {}: {len} bytes, not verified: the server announced no SHA-256",
                path.display()
            ),
            Downloaded::Complete { path, len, digest } => write!(
                f,
                "{} is already complete: {len} bytes, sha256 {digest}",
                path.display()
            ),
        }
    }
}

/// What a HEAD says of the remote file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub len: u64,
    pub etag: Option<String>,
    pub digest: Option<Sha256>,
}

/// What to do with a local file of `local_len` bytes (0 when missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Download from the start (LOCAL is truncated once the answer is a success).
    Whole,
    /// Ask for the bytes from `offset`, if the file is still the one tagged `etag`.
    Resume { offset: u64, etag: String },
    /// LOCAL is as long as the remote file: compare digests before downloading anything.
    Check { expected: Sha256 },
}

/// The plan for a local file of `local_len` bytes, given the HEAD's answer (`None`: no HEAD,
/// or not a success; the GET will tell why).
pub fn plan(local_len: u64, head: Option<&Head>) -> Plan {
    let Some(head) = head else {
        return Plan::Whole;
    };
    match (&head.etag, head.digest) {
        (Some(etag), _) if 0 < local_len && local_len < head.len => Plan::Resume {
            offset: local_len,
            etag: etag.clone(),
        },
        (_, Some(expected)) if local_len == head.len && local_len > 0 => Plan::Check { expected },
        _ => Plan::Whole,
    }
}

impl Client {
    pub async fn get(&self, url: &Url, local: &Path) -> Result<Downloaded, ClientError> {
        let local_len = match tokio::fs::metadata(local).await {
            Ok(meta) if meta.is_file() => meta.len(),
            Ok(_) => {
                return Err(ClientError::NotAFile {
                    path: local.to_owned(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(read_error(local.to_owned(), e)),
        };
        let head = if local_len > 0 {
            self.head(url).await?
        } else {
            None
        };
        let mut request = self.http.get(url.clone());
        let mut prefix = None;
        match plan(local_len, head.as_ref()) {
            Plan::Whole => {}
            Plan::Check { expected } => {
                let (len, digest) = local::digest(local).await?;
                if digest == expected {
                    return Ok(Downloaded::Complete {
                        path: local.to_owned(),
                        len,
                        digest,
                    });
                }
                eprintln!(
                    "{} differs from {url}: downloading it whole",
                    local.display()
                );
            }
            Plan::Resume { offset, etag } => {
                let (_, hasher) = local::hash(local, Some(offset)).await?;
                prefix = Some((offset, hasher));
                request = request
                    .header(RANGE, format!("bytes={offset}-"))
                    .header(IF_RANGE, etag);
            }
        }
        let response = request.send().await.map_err(|e| unreachable(url, &e))?;
        let (offset, hasher) = match (response.status(), prefix) {
            (StatusCode::PARTIAL_CONTENT, Some((offset, hasher))) => {
                check_range(url, response.headers(), offset)?;
                (offset, hasher)
            }
            (StatusCode::OK, _) => (0, Hasher::new()),
            _ => return Err(refusal("GET", url, response).await),
        };
        let announced = announced_digest(url, response.headers())?;
        let total = offset + response.content_length().unwrap_or(0);
        let heading = if offset > 0 {
            format!(
                "resuming {url} into {} at byte {offset} of {total}",
                local.display()
            )
        } else {
            format!("downloading {url} to {}: {total} bytes", local.display())
        };
        let progress = Progress::start(self.style, &heading, total, offset);
        let received = receive(url, local, offset, hasher, response, &progress).await;
        let (len, digest) = match received {
            Ok(done) => done,
            Err(e) => {
                progress.abandon();
                return Err(e);
            }
        };
        progress.finish(len - offset, &digest);
        match announced {
            Some(expected) if expected != digest => Err(ClientError::DigestMismatch {
                path: local.to_owned(),
                url: url.to_string(),
                expected,
                actual: digest,
            }),
            announced => Ok(Downloaded::Fetched {
                url: url.clone(),
                path: local.to_owned(),
                len,
                digest: announced,
            }),
        }
    }

    /// The remote file's length, tag and digest; `None` if the answer is not a success.
    async fn head(&self, url: &Url) -> Result<Option<Head>, ClientError> {
        let response = self
            .http
            .head(url.clone())
            .send()
            .await
            .map_err(|e| unreachable(url, &e))?;
        if !response.status().is_success() {
            return Ok(None);
        }
        let h = response.headers();
        let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
        // Not `Response::content_length`: a HEAD answer has no body to measure.
        let Some(len) = text(CONTENT_LENGTH.as_str()).and_then(|v| v.trim().parse().ok()) else {
            return Ok(None);
        };
        Ok(Some(Head {
            len,
            etag: text(ETAG.as_str()).map(str::to_owned),
            digest: text(X_CHECKSUM).and_then(|v| v.parse().ok()),
        }))
    }
}

/// Writes the body into `local` from `offset`, hashing on, and syncs it; the file's final
/// length and SHA-256.
async fn receive(
    url: &Url,
    local: &Path,
    offset: u64,
    mut hasher: Hasher,
    mut response: Response,
    progress: &Progress,
) -> Result<(u64, Sha256), ClientError> {
    let fail = |e| write_error(local, e);
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(offset == 0)
        .open(local)
        .await
        .map_err(fail)?;
    if offset > 0 {
        file.set_len(offset).await.map_err(fail)?;
        file.seek(SeekFrom::Start(offset)).await.map_err(fail)?;
    }
    let mut len = offset;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                // Keep what arrived, for the next `get` to resume from.
                let _ = file.flush().await;
                return Err(ClientError::Interrupted {
                    url: url.to_string(),
                    source: Transport::of(&e),
                });
            }
        };
        file.write_all(&chunk).await.map_err(fail)?;
        hasher.update(&chunk);
        len += chunk.len() as u64;
        progress.advance(chunk.len() as u64);
    }
    file.flush().await.map_err(fail)?;
    file.sync_all().await.map_err(fail)?;
    Ok((len, hasher.finish()))
}

/// A 206 must start where we asked and run to the end of the file (`bytes <offset>-<n-1>/<n>`):
/// a server that sends less would leave a short file that looks complete.
fn check_range(url: &Url, headers: &HeaderMap, offset: u64) -> Result<(), ClientError> {
    let value = headers
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if range_total(value, offset).is_some() {
        Ok(())
    } else {
        Err(ClientError::BadRange {
            url: url.to_string(),
            offset,
            content_range: value.to_owned(),
        })
    }
}

/// A `Content-Range` of a part that runs from `offset` to the end: its total length. Also the
/// operations' downloader's check (`ops::fetch`).
pub(crate) fn range_total(content_range: &str, offset: u64) -> Option<u64> {
    let (range, total) = content_range.strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let (start, end, total) = (
        start.trim().parse::<u64>().ok()?,
        end.trim().parse::<u64>().ok()?,
        total.trim().parse::<u64>().ok()?,
    );
    (start == offset && end.checked_add(1) == Some(total)).then_some(total)
}

fn announced_digest(url: &Url, headers: &HeaderMap) -> Result<Option<Sha256>, ClientError> {
    let Some(value) = headers.get(X_CHECKSUM) else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    text.parse()
        .map(Some)
        .map_err(|()| ClientError::BadDigestHeader {
            url: url.to_string(),
            value: text.into_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(len: u64, etag: bool, digest: bool) -> Head {
        Head {
            len,
            etag: etag.then(|| "\"e\"".to_owned()),
            digest: digest.then_some(Sha256([7; 32])),
        }
    }

    #[test]
    fn a_shorter_local_file_is_resumed_if_the_remote_file_has_a_tag() {
        assert_eq!(
            plan(10, Some(&head(100, true, true))),
            Plan::Resume {
                offset: 10,
                etag: "\"e\"".into()
            }
        );
        assert_eq!(plan(10, Some(&head(100, false, true))), Plan::Whole);
    }

    #[test]
    fn a_local_file_as_long_as_the_remote_one_is_checked_before_anything_is_downloaded() {
        assert_eq!(
            plan(100, Some(&head(100, true, true))),
            Plan::Check {
                expected: Sha256([7; 32])
            }
        );
        assert_eq!(plan(100, Some(&head(100, true, false))), Plan::Whole);
    }

    #[test]
    fn anything_else_is_downloaded_whole() {
        assert_eq!(plan(0, Some(&head(100, true, true))), Plan::Whole);
        assert_eq!(plan(0, Some(&head(0, true, true))), Plan::Whole);
        assert_eq!(plan(200, Some(&head(100, true, true))), Plan::Whole);
        assert_eq!(plan(10, None), Plan::Whole);
    }

    #[test]
    fn a_partial_answer_must_start_where_it_was_asked_to() {
        let url = Url::parse("http://gw/te/v1/files/a").unwrap();
        let mut h = HeaderMap::new();
        h.insert(CONTENT_RANGE, "bytes 10-99/100".parse().unwrap());
        assert!(check_range(&url, &h, 10).is_ok());
        assert_eq!(
            check_range(&url, &h, 11).unwrap_err().to_string(),
            "http://gw/te/v1/files/a answered with bytes \"bytes 10-99/100\", not from byte 11 to the end as asked"
        );
        assert!(check_range(&url, &HeaderMap::new(), 10).is_err());
        // A part that stops before the end of the file is refused too.
        h.insert(CONTENT_RANGE, "bytes 10-49/100".parse().unwrap());
        assert!(check_range(&url, &h, 10).is_err());
        h.insert(CONTENT_RANGE, "bytes 10-99/*".parse().unwrap());
        assert!(check_range(&url, &h, 10).is_err());
    }

    #[test]
    fn results_print_the_url_path_size_and_digest() {
        let url = Url::parse("http://gw/te/v1/files/a").unwrap();
        let digest = Sha256([0xab; 32]);
        let fetched = Downloaded::Fetched {
            url: url.clone(),
            path: "out.bin".into(),
            len: 5,
            digest: Some(digest),
        };
        assert_eq!(
            fetched.to_string(),
            format!("downloaded {url} to out.bin: 5 bytes, sha256 {digest}")
        );
        let complete = Downloaded::Complete {
            path: "out.bin".into(),
            len: 5,
            digest,
        };
        assert_eq!(
            complete.to_string(),
            format!("out.bin is already complete: 5 bytes, sha256 {digest}")
        );
    }
}

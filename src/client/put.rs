//! `files put LOCAL REMOTE`: uploads a local file, streamed from disk in large blocks (never
//! whole in memory), with its SHA-256 in `X-Checksum-Sha256`, computed by a first pass over the
//! file. The server stores the body only if it matches, so a file that changes between the two
//! passes is refused (400) rather than stored torn. Success is the server's 201.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use reqwest::header::{CONTENT_LENGTH, IF_NONE_MATCH};
use reqwest::{StatusCode, Url};
use tokio::io::AsyncReadExt;

use super::local::{self, read_error, BLOCK};
use super::progress::Progress;
use super::{refusal, unreachable, Client, ClientError};
use crate::files::digest::Sha256;

/// A stored upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub url: Url,
    pub len: u64,
    pub digest: Sha256,
}

impl fmt::Display for Uploaded {
    /// `uploaded <url>: <len> bytes, sha256 <hex>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "uploaded {}: {} bytes, sha256 {}",
            self.url, self.len, self.digest
        )
    }
}

/// The first read error of the body stream, so that it is reported naming the local file
/// rather than as whatever the HTTP client makes of a failed body.
type ReadFailure = Arc<Mutex<Option<io::Error>>>;

/// How an upload is conditioned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// The SHA-256 the local file must have: checked before anything is sent.
    pub expected: Option<Sha256>,
    /// Store only if nothing is at the path yet (`If-None-Match: *`; taken: 412).
    pub create_only: bool,
}

impl Client {
    pub async fn put(&self, local: &Path, url: &Url) -> Result<Uploaded, ClientError> {
        self.put_with(local, url, PutOptions::default()).await
    }

    pub async fn put_with(
        &self,
        local: &Path,
        url: &Url,
        options: PutOptions,
    ) -> Result<Uploaded, ClientError> {
        let (len, digest) = local::digest(local).await?;
        if let Some(expected) = options.expected.filter(|e| *e != digest) {
            return Err(ClientError::LocalDigest {
                path: local.to_owned(),
                expected,
                actual: digest,
            });
        }
        let file = tokio::fs::File::open(local)
            .await
            .map_err(|e| read_error(local.to_owned(), e))?;
        let heading = format!("uploading {} to {url}: {len} bytes", local.display());
        let progress = Progress::start(self.style, &heading, len, 0);
        let failure = ReadFailure::default();
        let body = reqwest::Body::wrap_stream(blocks(file, progress.clone(), failure.clone()));
        let mut request = self
            .http
            .put(url.clone())
            .header(CONTENT_LENGTH, len)
            .header("x-checksum-sha256", digest.to_string());
        if options.create_only {
            request = request.header(IF_NONE_MATCH, "*");
        }
        let sent = request.body(body).send().await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                progress.abandon();
                let read = failure.lock().unwrap_or_else(|e| e.into_inner()).take();
                return Err(match read {
                    Some(source) => read_error(local.to_owned(), source),
                    None => unreachable(url, &e),
                });
            }
        };
        if response.status() != StatusCode::CREATED {
            progress.abandon();
            return Err(refusal("PUT", url, response).await);
        }
        progress.finish(len, &digest);
        Ok(Uploaded {
            url: url.clone(),
            len,
            digest,
        })
    }
}

/// The file, from where it stands, as blocks of up to [`BLOCK`] bytes.
fn blocks(
    file: tokio::fs::File,
    progress: Progress,
    failure: ReadFailure,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold(Some(file), move |file| {
        let progress = progress.clone();
        let failure = failure.clone();
        async move {
            let mut file = file?;
            let mut buf = BytesMut::with_capacity(BLOCK);
            match file.read_buf(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    progress.advance(n as u64);
                    Some((Ok(buf.freeze()), Some(file)))
                }
                Err(e) => {
                    let copy = io::Error::new(e.kind(), e.to_string());
                    *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(copy);
                    Some((Err(e), None))
                }
            }
        }
    })
}

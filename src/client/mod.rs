//! The client side of the file transfer service (issue #3, "Progress and CLI"): what
//! `edge-agent files put|get|rm` do against an agent's `/te/v1/files`; and, built on it, the
//! client of operations on child devices (`edge-agent op`, issue #5) and the health probe
//! (`edge-agent health`, issue #6).
//!
//! # Layout
//! - `remote`: the file addressed, a store path or a URL, and the base URL a path is put under (pure).
//! - `put`: uploading a local file, streamed, with its SHA-256 for the server to check.
//! - `get`: downloading to a local file, streamed; resuming a partial one; verifying the digest.
//! - `rm`: deleting a remote file.
//! - `health`: one probe of a running agent (`edge-agent health`).
//! - `local`: a local file's SHA-256 (or its prefix's) in one pass, on the blocking pool.
//! - `progress`: the progress bar or plain lines on stderr.
//! - `error`: what a command fails with.
//! - `op`: `op start|list|show|cancel|fetch` against `/te/v1/operations`.
//!
//! This module owns the HTTP client ([`Client`]: TLS trust and identity, timeouts) and the
//! reading of a refusal. It prints progress to stderr only; the result of a command is returned
//! for `main` to print, and the grammar is `cli`'s.

pub mod error;
pub mod get;
pub mod health;
mod local;
pub mod op;
pub mod progress;
pub mod put;
pub mod remote;
pub mod rm;

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Response, Url};

pub use error::ClientError;
pub use get::Downloaded;
pub use progress::Style;
pub use put::{PutOptions, Uploaded};
pub use remote::{Base, Remote};
pub use rm::Removed;

/// A server that accepts no connection within this time is reported unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A transfer that moves no byte for this long is reported interrupted (it can be resumed).
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest part of an error body put in a message.
const MAX_MESSAGE: usize = 1024;

/// How to trust an HTTPS agent and how to prove who we are to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Trust only this CA (PEM, one or more certificates), not the system's roots.
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM) and its key, for an agent that requires one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// An HTTP client and how progress is shown.
pub struct Client {
    http: reqwest::Client,
    style: Style,
}

impl Client {
    /// Builds the client; the rustls crypto provider must be installed already (`main` does).
    pub fn new(tls: &TlsOptions, style: Style) -> Result<Client, ClientError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("edge-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &tls.ca_file {
            let pem = read_tls_file(path)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                ClientError::TlsPem {
                    path: path.clone(),
                    source,
                }
            })?;
            if certs.is_empty() {
                return Err(ClientError::NoCertificate { path: path.clone() });
            }
            builder = builder.tls_certs_only(certs);
        }
        if let Some((cert, key)) = &tls.identity {
            let mut pem = read_tls_file(cert)?;
            pem.push(b'\n');
            pem.extend(read_tls_file(key)?);
            let identity =
                reqwest::Identity::from_pem(&pem).map_err(|source| ClientError::TlsPem {
                    path: cert.clone(),
                    source,
                })?;
            builder = builder.identity(identity);
        }
        let http = builder.build().map_err(ClientError::Build)?;
        Ok(Client { http, style })
    }
}

fn read_tls_file(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::TlsFile {
        path: path.to_owned(),
        source,
    })
}

/// A request that could not be sent, or whose answer never came.
fn unreachable(url: &Url, error: &reqwest::Error) -> ClientError {
    ClientError::Connect {
        url: url.to_string(),
        source: error::Transport::of(error),
    }
}

/// The error for an answer that is not the success expected: its status and its text, on one
/// line and shortened.
async fn refusal(method: &'static str, url: &Url, response: Response) -> ClientError {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    ClientError::Status {
        method,
        url: url.to_string(),
        status,
        body: one_line(&body),
    }
}

/// `text` on one line, its runs of white space made single spaces, shortened to
/// [`MAX_MESSAGE`] bytes.
fn one_line(text: &str) -> String {
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_error(tls: TlsOptions) -> String {
        let _ = rustls::crypto::ring::default_provider().install_default();
        match Client::new(&tls, Style::Lines) {
            Ok(_) => panic!("the client was built"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn tls_files_that_cannot_be_used_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let text = dir.path().join("text.pem");
        std::fs::write(&text, "not a certificate\n").unwrap();
        assert_eq!(
            client_error(TlsOptions {
                ca_file: Some(missing.clone()),
                identity: None
            }),
            format!("cannot read the TLS file {}", missing.display())
        );
        assert_eq!(
            client_error(TlsOptions {
                ca_file: Some(text.clone()),
                identity: None
            }),
            format!("no PEM certificate in {}", text.display())
        );
        assert_eq!(
            client_error(TlsOptions {
                ca_file: None,
                identity: Some((text.clone(), text.clone()))
            }),
            format!("invalid TLS file {}", text.display())
        );
    }
}

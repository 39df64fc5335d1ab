//! What a `files` command can fail with. Each error names what it concerns (the local path, the
//! URL, the TLS file) and carries its cause as `#[source]`; `main` prints the chain on one line.
//!
//! A transport failure is reduced to its root cause ([`Transport`]): reqwest's own chain
//! (`error sending request` → `client error (Connect)` → `tcp connect error` → the I/O error)
//! repeats itself and says less than its last link.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::path::PathBuf;

use reqwest::StatusCode;

use crate::files::digest::Sha256;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read {}", path.display())]
    ReadLocal {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}", path.display())]
    WriteLocal {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("cannot read the TLS file {}", path.display())]
    TlsFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid TLS file {}", path.display())]
    TlsPem {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("no PEM certificate in {}", path.display())]
    NoCertificate { path: PathBuf },
    #[error("cannot set up the HTTP client")]
    Build(#[source] reqwest::Error),
    /// The local file is not the one its given SHA-256 names: nothing was sent.
    #[error("{}'s SHA-256 is {actual}, not {expected} as given", path.display())]
    LocalDigest {
        path: PathBuf,
        expected: Sha256,
        actual: Sha256,
    },
    #[error("cannot reach {url}")]
    Connect {
        url: String,
        #[source]
        source: Transport,
    },
    /// The server answered, but not with success: its status and its plain-text message.
    #[error("{method} {url}: {status}{}", message(body))]
    Status {
        method: &'static str,
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("the transfer with {url} was interrupted")]
    Interrupted {
        url: String,
        #[source]
        source: Transport,
    },
    #[error(
        "{url} answered with bytes {content_range:?}, not from byte {offset} to the end as asked"
    )]
    BadRange {
        url: String,
        offset: u64,
        content_range: String,
    },
    #[error("{url} announced an unreadable X-Checksum-Sha256: {value:?}")]
    BadDigestHeader { url: String, value: String },
    /// The downloaded file is not what the server holds; the file is kept, see `files get`.
    #[error(
        "{} does not match {url}: its SHA-256 is {actual}, the server's is {expected}; the file is \
         kept: run `files get` again to download it whole",
        path.display()
    )]
    DigestMismatch {
        path: PathBuf,
        url: String,
        expected: Sha256,
        actual: Sha256,
    },
}

fn message(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// The root cause of a failed HTTP exchange: the innermost error of reqwest's chain, or
/// `timed out`.
#[derive(Debug)]
pub struct Transport(String);

impl Transport {
    pub fn of(error: &reqwest::Error) -> Transport {
        if error.is_timeout() {
            return Transport("timed out".to_owned());
        }
        let mut cause: &dyn StdError = error;
        while let Some(next) = cause.source() {
            cause = next;
        }
        Transport(cause.to_string())
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Transport {}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> String {
        "http://gw/te/v1/files/a".to_owned()
    }

    #[test]
    fn a_refusal_shows_the_status_and_the_servers_message_on_one_line() {
        let e = ClientError::Status {
            method: "GET",
            url: url(),
            status: StatusCode::NOT_FOUND,
            body: "File not found: \"a\"".into(),
        };
        assert_eq!(
            e.to_string(),
            "GET http://gw/te/v1/files/a: 404 Not Found: File not found: \"a\""
        );
        let e = ClientError::Status {
            method: "DELETE",
            url: url(),
            status: StatusCode::METHOD_NOT_ALLOWED,
            body: String::new(),
        };
        assert_eq!(
            e.to_string(),
            "DELETE http://gw/te/v1/files/a: 405 Method Not Allowed"
        );
    }
}

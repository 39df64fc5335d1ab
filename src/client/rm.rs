//! `files rm REMOTE`: deletes a remote file. The server answers 202 whether or not the file
//! existed (thin-edge.io's behaviour), so removing a missing file succeeds too.

use std::fmt;

use reqwest::{StatusCode, Url};

use super::{refusal, unreachable, Client, ClientError};

/// A deletion the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub url: Url,
}

impl fmt::Display for Removed {
    /// `removed <url>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "removed {}", self.url)
    }
}

impl Client {
    pub async fn rm(&self, url: &Url) -> Result<Removed, ClientError> {
        let response = self
            .http
            .delete(url.clone())
            .send()
            .await
            .map_err(|e| unreachable(url, &e))?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(refusal("DELETE", url, response).await);
        }
        Ok(Removed { url: url.clone() })
    }
}

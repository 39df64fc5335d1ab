//! `GET /te/v1/changes` (issue #7): the twin's changes as Server-Sent Events.
//!
//! Each client follows the [`ChangeFeed`] from its own position: the `Last-Event-ID` header an
//! EventSource sends when it reconnects, else `?since=<number>`, else "now". What it receives:
//! - `event: reset` (`data: {"seq":N,"reason":"start"|"behind"}`) first on a new stream, and
//!   whenever its position is no longer in the bounded journal: it re-reads `/te/v1/state` and
//!   goes on with the changes after N;
//! - `event: change` with `id:` = the change's number and
//!   `data: {"seq","@topic-id","channel","value"}` (the twin's `changes` makes these);
//! - a `: keep-alive` comment every [`KEEP_ALIVE`] when nothing happens.
//!
//! The stream is read by hyper only as fast as the client takes it, so a slow client costs a
//! position in the journal and nothing else; changes go out in batches at most every
//! [`LINGER`]. Streams end when the server shuts down.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use warp::http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use warp::http::{HeaderMap, Method};
use warp::reply::Response;
use warp::Reply;

use super::error::ApiError;
use super::path::{query_pairs, PathError};
use crate::twin::feed::{ChangeFeed, Client, Read};

pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a client waits after a change before reading: the changes of that time go out in
/// one write, so a stream of thousands of changes per second costs each client tens of
/// wake-ups and writes per second, not thousands.
const LINGER: Duration = Duration::from_millis(25);
/// How soon an EventSource reconnects after the stream broke, in milliseconds.
const RETRY_MS: u32 = 2000;
const ALLOW: &str = "GET, HEAD";

/// Any method on `/te/v1/changes`.
pub async fn changes(
    feed: ChangeFeed,
    method: Method,
    query: Option<String>,
    headers: HeaderMap,
    shutdown: CancellationToken,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return ApiError::MethodNotAllowed { allow: ALLOW }.into_response();
    }
    let from = match position(query.as_deref(), &headers) {
        Ok(from) => from,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let mut response = if method == Method::HEAD {
        Response::default()
    } else {
        let follow = Follow {
            latest: feed.watch(),
            client: feed.client(),
            feed,
            position: from,
            pending: VecDeque::new(),
            started: false,
            shutdown,
        };
        let stream = futures_util::stream::unfold(follow, Follow::next);
        warp::reply::stream(stream).into_response()
    };
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // A reverse proxy (nginx) would otherwise hold events back to fill its buffer.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Where a client starts: `Last-Event-ID` (an unreadable one is a position nobody has: the
/// client is reset), else `since`, else `None` (now, after a `reset`).
fn position(query: Option<&str>, headers: &HeaderMap) -> Result<Option<u64>, PathError> {
    if let Some(id) = headers.get("last-event-id") {
        let id = id.to_str().ok().and_then(|s| s.trim().parse().ok());
        return Ok(Some(id.unwrap_or(u64::MAX)));
    }
    let mut since = None;
    for pair in query_pairs(query) {
        let (name, value) = pair?;
        if name != "since" {
            continue;
        }
        since = match value.as_str() {
            "" => None,
            v => Some(v.parse().map_err(|_| PathError::Parameter {
                name: "since",
                reason: format!("expected the number of a change, got {v:?}"),
            })?),
        };
    }
    Ok(since)
}

/// One client's stream.
struct Follow {
    feed: ChangeFeed,
    latest: watch::Receiver<u64>,
    /// The number of the last change sent; `None` before the first `reset`.
    position: Option<u64>,
    /// Parts of the last read not yet handed to hyper (each a slice of a journal buffer,
    /// written as they are: no copy).
    pending: VecDeque<Bytes>,
    started: bool,
    shutdown: CancellationToken,
    /// Counted as a client while the stream lives.
    #[allow(dead_code)]
    client: Client,
}

impl Follow {
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Follow)> {
        loop {
            if let Some(part) = self.pending.pop_front() {
                return Some((Ok(part), self));
            }
            // Marked seen before reading, so that a change published after the read wakes us.
            self.latest.borrow_and_update();
            let chunk = match self.position {
                None => Some(self.reset(self.feed.latest(), "start")),
                Some(position) => match self.feed.read(position) {
                    Read::Events(parts, last) => {
                        self.position = Some(last);
                        self.pending.extend(parts);
                        self.pending.pop_front()
                    }
                    Read::Reset(latest) => Some(self.reset(latest, "behind")),
                    Read::UpToDate => None,
                },
            };
            if let Some(chunk) = chunk {
                return Some((Ok(self.with_retry(chunk)), self));
            }
            if !self.started {
                // The retry interval goes out at once, even when nothing else does.
                return Some((Ok(self.with_retry(Bytes::new())), self));
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                changed = self.latest.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(LINGER) => {}
                    }
                }
                _ = tokio::time::sleep(KEEP_ALIVE) => {
                    return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), self));
                }
            }
        }
    }

    fn reset(&mut self, latest: u64, reason: &str) -> Bytes {
        self.position = Some(latest);
        Bytes::from(format!(
            "id: {latest}\nevent: reset\ndata: {{\"seq\":{latest},\"reason\":\"{reason}\"}}\n\n"
        ))
    }

    /// The first chunk of a stream starts with the retry interval.
    fn with_retry(&mut self, chunk: Bytes) -> Bytes {
        if self.started {
            return chunk;
        }
        self.started = true;
        let mut first = format!("retry: {RETRY_MS}\n\n").into_bytes();
        first.extend_from_slice(&chunk);
        Bytes::from(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("last-event-id", HeaderValue::from_str(id).unwrap());
        h
    }

    #[test]
    fn the_position_comes_from_last_event_id_then_since() {
        let none = HeaderMap::new();
        assert_eq!(position(None, &none), Ok(None));
        assert_eq!(position(Some("since=42"), &none), Ok(Some(42)));
        assert_eq!(position(Some("since="), &none), Ok(None));
        assert_eq!(position(Some("since=7"), &headers("9")), Ok(Some(9)));
        assert_eq!(position(None, &headers("junk")), Ok(Some(u64::MAX)));
        assert_eq!(
            position(Some("since=-1"), &none).unwrap_err().to_string(),
            "Invalid value of since: expected the number of a change, got \"-1\""
        );
    }
}

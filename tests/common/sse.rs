//! A Server-Sent Events client for `/te/v1/changes`: real HTTP (reqwest, streaming body),
//! events parsed as an EventSource does (`id:`, `event:`, `data:` lines, blank line ends an
//! event, `:` comments and `retry:` skipped). Every wait has a timeout.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(10);

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }

    /// The event's `id:` as a number.
    pub fn seq(&self) -> u64 {
        self.id
            .as_deref()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("an event without a numeric id: {self:?}"))
    }
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// An open stream.
pub struct Sse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    body: Body,
    /// Bytes not yet parsed: an event is decoded only once whole, so a character cut by a
    /// chunk's end is never decoded in halves.
    buf: Vec<u8>,
    /// Comments seen (`: keep-alive`), for tests of the keep-alive.
    pub comments: usize,
}

impl Sse {
    /// Opens `url` (with `Last-Event-ID` when given) and waits for the response head.
    pub async fn open(url: &str, last_event_id: Option<&str>) -> Sse {
        // No whole-request timeout: a stream lasts as long as the test; each wait below has one.
        let client = reqwest::Client::builder()
            .connect_timeout(TIMEOUT)
            .build()
            .expect("an HTTP client");
        let mut request = client.get(url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = tokio::time::timeout(TIMEOUT, request.send())
            .await
            .unwrap_or_else(|_| panic!("no answer to GET {url} within {TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        Sse {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: Box::pin(response.bytes_stream()),
            buf: Vec::new(),
            comments: 0,
        }
    }

    /// The next event; panics after the timeout or when the stream ends.
    pub async fn next(&mut self) -> Event {
        match tokio::time::timeout(TIMEOUT, self.next_or_end()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("the event stream ended"),
            Err(_) => panic!(
                "no event within {TIMEOUT:?}; unread: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// The next event, or `None` when the server ended the stream.
    pub async fn next_or_end(&mut self) -> Option<Event> {
        loop {
            while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let block = String::from_utf8(block).expect("events are UTF-8");
                if let Some(event) = self.parse(&block) {
                    return Some(event);
                }
            }
            let chunk = self.body.next().await?.ok()?;
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// The next `n` events whose `@topic-id` is `id` (others, like the agent's own health,
    /// are skipped); resets are returned too.
    pub async fn of(&mut self, id: &str, n: usize) -> Vec<Event> {
        let mut out = Vec::new();
        while out.len() < n {
            let event = self.next().await;
            if event.event != "change" || event.json()["@topic-id"] == id {
                out.push(event);
            }
        }
        out
    }

    fn parse(&mut self, block: &str) -> Option<Event> {
        let (mut id, mut event, mut data) = (None, None, Vec::new());
        for line in block.lines() {
            if line.starts_with(':') {
                self.comments += 1;
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => id = Some(value.to_owned()),
                "event" => event = Some(value.to_owned()),
                "data" => data.push(value.to_owned()),
                _ => {}
            }
        }
        if data.is_empty() {
            return None;
        }
        Some(Event {
            id,
            event: event.unwrap_or_else(|| "message".to_owned()),
            data: data.join("\n"),
        })
    }
}

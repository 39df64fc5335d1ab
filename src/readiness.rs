//! The agent's readiness (spec/twin.md §6.3): one value, written by the start-up code and the MQTT
//! connection task, read by `/readyz` and by the write gate of the HTTP API (§5.1).

use serde::Serialize;
use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Loading persisted state, or connected and waiting for the sync marker.
    Starting(String),
    /// No broker connection.
    Disconnected(String),
    Ready,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready)
    }

    pub fn is_loading(&self) -> bool {
        matches!(self, Readiness::Starting(r) if r == LOADING)
    }

    /// The reason given to clients while not ready.
    pub fn reason(&self) -> &str {
        match self {
            Readiness::Starting(r) | Readiness::Disconnected(r) => r,
            Readiness::Ready => "ready",
        }
    }

    /// The `/readyz` body.
    pub fn body(&self) -> ReadyzBody<'_> {
        match self {
            Readiness::Ready => ReadyzBody {
                status: "ready",
                reason: None,
            },
            Readiness::Starting(r) => ReadyzBody {
                status: "starting",
                reason: Some(r),
            },
            Readiness::Disconnected(r) => ReadyzBody {
                status: "disconnected",
                reason: Some(r),
            },
        }
    }
}

pub const LOADING: &str = "loading persisted state";
pub const WAITING_FOR_SYNC: &str = "waiting for the retained-message sync marker";

#[derive(Debug, Serialize)]
pub struct ReadyzBody<'a> {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

/// Creates the shared readiness, starting in the loading phase.
pub fn channel() -> (watch::Sender<Readiness>, watch::Receiver<Readiness>) {
    watch::channel(Readiness::Starting(LOADING.to_string()))
}

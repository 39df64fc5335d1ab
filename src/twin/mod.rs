//! The digital twin (spec/twin.md): its model, rules, persistence and owner task.
//!
//! One task owns the [`store::Store`]; everything else talks to it through a [`TwinHandle`]
//! (HTTP requests) or the bus input channel (MQTT events), both carried by one ordered channel
//! so that HTTP and MQTT inputs are applied one at a time, in arrival order (§5.1).

pub mod api;
pub mod changes;
mod data;
pub mod effects;
pub mod error;
mod errors_topic;
pub mod feed;
pub mod history;
pub mod history_file;
pub mod model;
mod names;
pub mod outbox;
pub mod payload;
pub mod persist;
mod query;
pub mod records;
mod registry;
pub mod stats;
pub mod store;
mod sync;
pub mod task;
#[cfg(test)]
mod tests;
pub mod time;
pub mod vecmap;

pub use data::CHANNEL_KINDS;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::readiness::{Readiness, LOADING};
use api::{Query, Reply, Write};
use error::TwinError;

pub type Responder = oneshot::Sender<Result<Reply, TwinError>>;

/// What the owner task receives, in arrival order.
#[derive(Debug)]
pub enum Input {
    Query(Query, Responder),
    Write(Write, Responder),
    Bus(BusEvent),
    /// The summary for the metrics endpoint.
    Stats(oneshot::Sender<stats::TwinStats>),
    /// The measurement history, read from disk while the twin already serves (issue #7).
    History(Box<history_file::Loaded>),
}

/// What the MQTT connection task reports to the twin.
#[derive(Debug, Clone, PartialEq)]
pub enum BusEvent {
    /// CONNACK received and the subscription acknowledged: start the sync (§7.4).
    Subscribed,
    /// Messages on the subscribed topics, in arrival order: everything one read from the socket
    /// brought, so that a stream of small messages wakes the twin once per read, not per message.
    Messages(Vec<Received>),
    /// The connection is gone; the reason is for `/readyz`.
    Disconnected(String),
}

/// One received message.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    Message {
        topic: String,
        payload: Bytes,
    },
    /// A message above `mqtt.max_packet_size`, dropped unread (§9).
    Oversize {
        topic: String,
        size: usize,
    },
}

/// A clonable handle to the twin for the HTTP layer.
#[derive(Clone)]
pub struct TwinHandle {
    tx: mpsc::Sender<Input>,
    readiness: watch::Receiver<Readiness>,
}

impl TwinHandle {
    pub fn new(tx: mpsc::Sender<Input>, readiness: watch::Receiver<Readiness>) -> Self {
        TwinHandle { tx, readiness }
    }

    pub fn readiness(&self) -> Readiness {
        self.readiness.borrow().clone()
    }

    /// A read; refused only while the persisted state is loading (§7.3).
    pub async fn query(&self, query: Query) -> Result<Reply, TwinError> {
        if self.readiness.borrow().is_loading() {
            return Err(TwinError::NotReady(LOADING.to_string()));
        }
        let (tx, rx) = oneshot::channel();
        self.send(Input::Query(query, tx), rx).await
    }

    /// A write; refused with 503 unless the agent is ready (§5.1 write gate).
    pub async fn write(&self, write: Write) -> Result<Reply, TwinError> {
        {
            let readiness = self.readiness.borrow();
            if !readiness.is_ready() {
                return Err(TwinError::NotReady(readiness.reason().to_string()));
            }
        }
        let (tx, rx) = oneshot::channel();
        self.send(Input::Write(write, tx), rx).await
    }

    /// The twin's summary for the metrics endpoint, from its owner task (which starts once the
    /// persisted state is loaded: a request before that waits for it).
    pub async fn stats(&self) -> Result<stats::TwinStats, TwinError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Input::Stats(tx))
            .await
            .map_err(|_| TwinError::Unavailable)?;
        rx.await.map_err(|_| TwinError::Unavailable)
    }

    async fn send(
        &self,
        input: Input,
        rx: oneshot::Receiver<Result<Reply, TwinError>>,
    ) -> Result<Reply, TwinError> {
        self.tx
            .send(input)
            .await
            .map_err(|_| TwinError::Unavailable)?;
        rx.await.map_err(|_| TwinError::Unavailable)?
    }
}

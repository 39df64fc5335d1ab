//! The broker connection (issue #2 "Running", spec/twin.md §7.4, §8): MQTT options from the
//! config (TLS with rustls, credentials, last will, persistent session), the event-loop task that
//! polls rumqttc continuously and forwards messages to the twin, and the publisher that sends the
//! twin's publications and reports their acknowledgements.
//!
//! Acknowledgements: rumqttc reports `Outgoing::Publish(pkid)` in the order publish requests
//! entered its channel, then `Incoming::PubAck(pkid)`. This one task both polls the event loop and
//! moves the twin's requests into rumqttc (with `try_publish`, never waiting, and only while
//! connected), so a FIFO of waiters maps each request to its pkid exactly. `EventLoop::poll` is
//! never cancelled: a cancelled poll can drop a packet rumqttc already reported as sent, so the
//! poll future owns the event loop and gives it back with the event, surviving the `select!`. On a dropped connection
//! the task resets that state itself: rumqttc would replay or silently drop what it had queued
//! depending on the next session, which no FIFO could follow; instead every waiter is failed and
//! rumqttc's queued publishes are discarded. What must reach the broker is in the twin's outbox,
//! which publishes it again after the next sync (spec/twin.md §7.4 step 7).
//!
//! Backpressure: messages go to the twin without waiting; while its input queue is full, this
//! task keeps polling (pings, acknowledgements) and gathers messages, up to [`HOLD_MAX`]. Only
//! past that does it wait for room, so that the broker holds further messages for the persistent
//! session instead of this process buffering without bound. The twin stalls only for a group
//! commit or a snapshot, well within that.

use crate::metrics::Metrics;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ClientError, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing,
    Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::twin::effects::Publication;
use crate::twin::{BusEvent, Input, Received};

/// The largest packet MQTT allows: rumqttc accepts anything the broker sends, and the agent drops
/// payloads above `mqtt.max_packet_size` itself (§9: "skip the packet"), so that one oversized
/// message never costs the connection (a v3.1.1 client cannot advertise a limit).
const MQTT_MAX_PACKET: usize = 268_435_455 + 5;
const REQUEST_CAPACITY: usize = 1024;
/// Most messages forwarded to the twin as one input.
const MAX_BATCH: usize = 1024;
/// Most messages held while the twin's queue is full before this task waits for room.
const HOLD_MAX: usize = 64 * 1024;
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("cannot read {what} file {path}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mqtt.tls.cert_file and mqtt.tls.key_file must be given together")]
    IncompleteClientAuth,
}

/// Builds the rumqttc options: persistent session with the configured client id, last will,
/// credentials and TLS (§7.4, §8).
pub fn options(config: &Config, will: (String, Vec<u8>)) -> Result<MqttOptions, MqttError> {
    let m = &config.mqtt;
    let mut options = MqttOptions::new(m.client_id.clone(), m.host.clone(), m.port);
    options
        .set_clean_session(false)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(MQTT_MAX_PACKET, MQTT_MAX_PACKET)
        .set_inflight(100)
        .set_last_will(LastWill::new(will.0, will.1, QoS::AtLeastOnce, true));
    if let Some(username) = &m.username {
        let password = match &m.password_file {
            Some(path) => read_file("password", path).map(|bytes| {
                String::from_utf8_lossy(&bytes)
                    .trim_end_matches(['\n', '\r'])
                    .to_string()
            })?,
            None => String::new(),
        };
        options.set_credentials(username.clone(), password);
    }
    if let Some(tls) = &m.tls {
        let ca = read_file("CA", &tls.ca_file)?;
        let client_auth = match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => {
                Some((read_file("certificate", cert)?, read_file("key", key)?))
            }
            (None, None) => None,
            _ => return Err(MqttError::IncompleteClientAuth),
        };
        options.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }));
    }
    Ok(options)
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, MqttError> {
    std::fs::read(path).map_err(|source| MqttError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Waiters for acknowledgements, owned by the connection task.
#[derive(Default)]
struct AckTracker {
    /// One slot per publish handed to rumqttc and not yet given a pkid, in request order.
    queued: VecDeque<Option<Waiter>>,
    /// Publishes sent and not yet acknowledged.
    inflight: HashMap<u16, Option<Waiter>>,
}

/// Who wants to know that the broker acknowledged a publication: an HTTP write waiting to
/// answer, and/or the twin's outbox (topic and generation).
struct Waiter {
    reply: Option<oneshot::Sender<bool>>,
    outbox: Option<(String, u64)>,
}

impl AckTracker {
    /// The connection dropped: nobody will learn about these any more.
    fn fail_all(&mut self) {
        for waiter in self
            .queued
            .drain(..)
            .chain(self.inflight.drain().map(|(_, w)| w))
        {
            if let Some(tx) = waiter.and_then(|w| w.reply) {
                let _ = tx.send(false);
            }
        }
    }
}

/// What the twin task asks of the connection.
enum Request {
    Publish(Publication, Option<oneshot::Sender<bool>>),
    Disconnect,
}

/// A clonable handle for publishing from the twin's owner task; never blocks the caller.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::UnboundedSender<Request>,
}

impl Publisher {
    /// Queues a publication; `ack` learns whether the broker acknowledged it (false when the
    /// connection dropped first).
    pub fn publish(&self, publication: Publication, ack: Option<oneshot::Sender<bool>>) {
        if let Err(mpsc::error::SendError(Request::Publish(_, Some(ack)))) =
            self.tx.send(Request::Publish(publication, ack))
        {
            let _ = ack.send(false);
        }
    }

    /// Sends DISCONNECT after everything queued before it.
    pub fn disconnect(&self) {
        let _ = self.tx.send(Request::Disconnect);
    }
}

/// The connection: rumqttc's client and event loop, and the twin's request queue.
pub struct Connection {
    client: AsyncClient,
    eventloop: EventLoop,
    requests: mpsc::UnboundedReceiver<Request>,
    topic_filter: String,
    max_payload: usize,
    endpoint: String,
    metrics: Metrics,
}

/// One `EventLoop::poll`, owning the event loop until it completes.
type Polling = Pin<Box<dyn Future<Output = (EventLoop, Result<Event, ConnectionError>)> + Send>>;

fn poll(mut eventloop: EventLoop) -> Polling {
    Box::pin(async move {
        let event = eventloop.poll().await;
        (eventloop, event)
    })
}

/// The state of the connection task between two events.
struct Session {
    client: AsyncClient,
    tracker: AckTracker,
    /// A request rumqttc's channel had no room for, retried after the next event.
    stash: Option<Request>,
    connected: bool,
    subscribe_due: bool,
    topic_filter: String,
}

impl Session {
    /// Hands a request to rumqttc without waiting; false when its channel is full (the request
    /// is kept in the stash).
    fn submit(&mut self, request: Request) -> bool {
        match request {
            Request::Publish(publication, reply) => {
                let Publication {
                    topic,
                    payload,
                    retain,
                    tracked,
                } = publication;
                let outbox = tracked.map(|generation| (topic.clone(), generation));
                match self
                    .client
                    .try_publish(topic, QoS::AtLeastOnce, retain, payload)
                {
                    Ok(()) => {
                        let waiter = (reply.is_some() || outbox.is_some())
                            .then_some(Waiter { reply, outbox });
                        self.tracker.queued.push_back(waiter);
                        true
                    }
                    Err(ClientError::TryRequest(rumqttc::Request::Publish(p))) => {
                        let publication = Publication {
                            topic: p.topic,
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                            tracked: outbox.map(|(_, g)| g),
                        };
                        self.stash = Some(Request::Publish(publication, reply));
                        false
                    }
                    Err(error) => {
                        // Only an invalid topic gets here; the twin never builds one.
                        tracing::error!("cannot publish: {error}");
                        if let Some(tx) = reply {
                            let _ = tx.send(false);
                        }
                        true
                    }
                }
            }
            Request::Disconnect => {
                if self.client.try_disconnect().is_err() {
                    self.stash = Some(Request::Disconnect);
                    return false;
                }
                true
            }
        }
    }

    fn retry(&mut self) {
        if self.connected && self.subscribe_due {
            self.subscribe_due = self
                .client
                .try_subscribe(self.topic_filter.clone(), QoS::AtLeastOnce)
                .is_err();
        }
        if self.connected {
            if let Some(request) = self.stash.take() {
                self.submit(request);
            }
        }
    }

    /// The connection dropped: fail every waiter and drop what rumqttc kept to resend, so that
    /// the next session starts with an exact FIFO (see the module doc).
    fn reset(&mut self, eventloop: &mut EventLoop) {
        self.connected = false;
        self.tracker.fail_all();
        eventloop.pending.retain(|r| {
            !matches!(
                r,
                rumqttc::Request::Publish(_) | rumqttc::Request::Subscribe(_)
            )
        });
        eventloop
            .state
            .events
            .retain(|e| !matches!(e, Event::Outgoing(Outgoing::Publish(_))));
    }
}

impl Connection {
    pub fn new(options: MqttOptions, config: &Config, metrics: Metrics) -> (Publisher, Connection) {
        let endpoint = format!("{}:{}", config.mqtt.host, config.mqtt.port);
        let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
        let (tx, requests) = mpsc::unbounded_channel();
        let connection = Connection {
            client,
            eventloop,
            requests,
            topic_filter: format!("{}/+/+/+/+/#", config.mqtt.topic_root),
            max_payload: config.mqtt.max_packet_size,
            endpoint,
            metrics,
        };
        (Publisher { tx }, connection)
    }

    /// Runs the connection until `stop` or a sent DISCONNECT. Messages and connection changes go
    /// to `twin`; acknowledged outbox messages to `outbox_acks`.
    pub async fn run(
        self,
        twin: mpsc::Sender<Input>,
        outbox_acks: mpsc::UnboundedSender<(String, u64)>,
        stop: CancellationToken,
    ) {
        let Connection {
            client,
            eventloop,
            mut requests,
            topic_filter,
            max_payload,
            endpoint,
            metrics,
        } = self;
        let mut session = Session {
            client,
            tracker: AckTracker::default(),
            stash: None,
            connected: false,
            subscribe_due: false,
            topic_filter,
        };
        let mut backoff = BACKOFF_START;
        let mut batch: Vec<Received> = Vec::new();
        let mut requests_open = true;
        // Messages gathered while the twin's queue was full.
        let mut held = false;
        let mut polling = poll(eventloop);
        loop {
            session.retry();
            let accepting = requests_open && session.connected && session.stash.is_none();
            let (mut eventloop, event) = tokio::select! {
                done = &mut polling => done,
                request = requests.recv(), if accepting => {
                    match request {
                        Some(request) => {
                            session.submit(request);
                        }
                        // The twin is gone; keep polling until its DISCONNECT went out.
                        None => requests_open = false,
                    }
                    continue;
                }
                // `flush` may have forwarded them meanwhile: nothing is held then.
                permit = twin.reserve(), if held && !batch.is_empty() => {
                    let Ok(permit) = permit else { break };
                    permit.send(Input::Bus(BusEvent::Messages(std::mem::take(&mut batch))));
                    held = false;
                    continue;
                }
                _ = stop.cancelled() => break,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = BACKOFF_START;
                    tracing::info!(broker = %endpoint, session_present = ack.session_present, "connected to the MQTT broker");
                    session.connected = true;
                    session.subscribe_due = true;
                    metrics.connected();
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if !flush(&twin, &mut batch).await
                        || twin.send(Input::Bus(BusEvent::Subscribed)).await.is_err()
                    {
                        break;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    batch.push(if publish.payload.len() > max_payload {
                        Received::Oversize {
                            topic: publish.topic,
                            size: publish.payload.len(),
                        }
                    } else {
                        Received::Message {
                            topic: publish.topic,
                            payload: publish.payload,
                        }
                    });
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    let waiter = session.tracker.queued.pop_front().flatten();
                    session.tracker.inflight.insert(pkid, waiter);
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(Waiter { reply, outbox }) =
                        session.tracker.inflight.remove(&ack.pkid).flatten()
                    {
                        if let Some(tx) = reply {
                            let _ = tx.send(true);
                        }
                        if let Some(entry) = outbox {
                            let _ = outbox_acks.send(entry);
                        }
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    let _ = flush(&twin, &mut batch).await;
                    tracing::info!("disconnected from the MQTT broker");
                    break;
                }
                Ok(_) => {}
                Err(error) => {
                    let was_connected = session.connected;
                    session.reset(&mut eventloop);
                    let reason = format!("connecting to {endpoint}: {error}");
                    if was_connected {
                        tracing::warn!("lost the MQTT connection: {error}");
                    } else {
                        tracing::debug!("{reason}");
                    }
                    if !flush(&twin, &mut batch).await
                        || twin
                            .send(Input::Bus(BusEvent::Disconnected(reason)))
                            .await
                            .is_err()
                    {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            // rumqttc buffers every packet of one socket read: forward the messages once the
            // buffer is drained, and before any other event, so that order is kept.
            if !batch.is_empty() && (eventloop.state.events.is_empty() || batch.len() >= MAX_BATCH)
            {
                match hand_over(&twin, &mut batch).await {
                    HandOver::Sent => held = false,
                    HandOver::Held => held = true,
                    HandOver::Gone => break,
                }
            }
            polling = poll(eventloop);
        }
        session.tracker.fail_all();
        if let Some(Request::Publish(_, Some(tx))) = session.stash.take() {
            let _ = tx.send(false);
        }
    }
}

/// What became of gathered messages.
enum HandOver {
    Sent,
    /// The twin's queue is full: they stay gathered until it has room.
    Held,
    Gone,
}

/// Forwards the messages gathered so far without waiting, unless [`HOLD_MAX`] of them are held.
async fn hand_over(twin: &mpsc::Sender<Input>, batch: &mut Vec<Received>) -> HandOver {
    let messages = std::mem::take(batch);
    match twin.try_send(Input::Bus(BusEvent::Messages(messages))) {
        Ok(()) => HandOver::Sent,
        Err(mpsc::error::TrySendError::Full(Input::Bus(BusEvent::Messages(messages)))) => {
            *batch = messages;
            if batch.len() < HOLD_MAX {
                HandOver::Held
            } else if flush(twin, batch).await {
                HandOver::Sent
            } else {
                HandOver::Gone
            }
        }
        Err(_) => HandOver::Gone,
    }
}

/// Forwards the messages gathered so far, waiting for room; false when the twin is gone.
async fn flush(twin: &mpsc::Sender<Input>, batch: &mut Vec<Received>) -> bool {
    if batch.is_empty() {
        return true;
    }
    let messages = std::mem::take(batch);
    twin.send(Input::Bus(BusEvent::Messages(messages)))
        .await
        .is_ok()
}

//! The broker connection (issue #2 "Running", spec/twin.md §7.4, §8): MQTT options from the
//! config (TLS with rustls, credentials, last will, persistent session), the event-loop task that
//! polls rumqttc continuously and forwards messages to the twin, and the publisher that sends the
//! twin's publications and reports their acknowledgements.
//!
//! Acknowledgements: rumqttc reports `Outgoing::Publish(pkid)` in the order publish requests were
//! queued, then `Incoming::PubAck(pkid)`. Only the publisher task queues publishes, so a FIFO of
//! waiters maps each request to its pkid. After a dropped connection rumqttc replays unacknowledged
//! publishes with their old pkids (session resumed) or forgets them (new session); the tracker
//! keeps those pkids, without waiters, until then.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration,
    Transport,
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

/// Waiters for acknowledgements, shared by the publisher and the event-loop task.
#[derive(Default)]
struct AckTracker {
    /// One slot per publish request not yet given a pkid, in request order.
    queued: VecDeque<Option<Waiter>>,
    /// Publishes sent and not yet acknowledged; `None` once their waiter was answered.
    inflight: HashMap<u16, Option<Waiter>>,
}

/// Who wants to know that the broker acknowledged a publication: an HTTP write waiting to
/// answer, and/or the twin's outbox (topic and generation).
struct Waiter {
    reply: Option<oneshot::Sender<bool>>,
    outbox: Option<(String, u64)>,
}

impl AckTracker {
    fn fail(waiter: Option<Waiter>) {
        if let Some(tx) = waiter.and_then(|w| w.reply) {
            let _ = tx.send(false);
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

/// The connection: its event loop and the publisher feeding it.
pub struct Connection {
    client: AsyncClient,
    eventloop: EventLoop,
    requests: mpsc::UnboundedReceiver<Request>,
    tracker: Arc<Mutex<AckTracker>>,
    topic_filter: String,
    max_payload: usize,
    endpoint: String,
}

impl Connection {
    pub fn new(options: MqttOptions, config: &Config) -> (Publisher, Connection) {
        let endpoint = format!("{}:{}", config.mqtt.host, config.mqtt.port);
        let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
        let (tx, requests) = mpsc::unbounded_channel();
        let connection = Connection {
            client,
            eventloop,
            requests,
            tracker: Arc::default(),
            topic_filter: format!("{}/+/+/+/+/#", config.mqtt.topic_root),
            max_payload: config.mqtt.max_packet_size,
            endpoint,
        };
        (Publisher { tx }, connection)
    }

    /// Runs the event loop and the publisher until `stop` or a sent DISCONNECT. Messages and
    /// connection changes go to `twin`; acknowledged outbox messages to `outbox_acks`.
    pub async fn run(
        self,
        twin: mpsc::Sender<Input>,
        outbox_acks: mpsc::UnboundedSender<(String, u64)>,
        stop: CancellationToken,
    ) {
        let Connection {
            client,
            mut eventloop,
            requests,
            tracker,
            topic_filter,
            max_payload,
            endpoint,
        } = self;
        let publisher = tokio::spawn(run_publisher(client.clone(), requests, tracker.clone()));
        let mut backoff = BACKOFF_START;
        let mut connected = false;
        let mut batch: Vec<Received> = Vec::new();
        loop {
            // rumqttc buffers every packet of one socket read: forward the messages once the
            // buffer is drained, and before any other event, so that order is kept.
            if !batch.is_empty() && (eventloop.state.events.is_empty() || batch.len() >= MAX_BATCH)
            {
                let messages = std::mem::take(&mut batch);
                if twin
                    .send(Input::Bus(BusEvent::Messages(messages)))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            let event = tokio::select! {
                event = eventloop.poll() => event,
                _ = stop.cancelled() => break,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    connected = true;
                    backoff = BACKOFF_START;
                    tracing::info!(broker = %endpoint, session_present = ack.session_present, "connected to the MQTT broker");
                    {
                        let mut t = lock(&tracker);
                        if !ack.session_present {
                            t.inflight.clear();
                        }
                    }
                    if let Err(e) = client.try_subscribe(topic_filter.clone(), QoS::AtLeastOnce) {
                        tracing::error!("cannot queue the subscription: {e}");
                    }
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
                    let mut t = lock(&tracker);
                    if !t.inflight.contains_key(&pkid) {
                        let waiter = t.queued.pop_front().flatten();
                        t.inflight.insert(pkid, waiter);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    let waiter = lock(&tracker).inflight.remove(&ack.pkid).flatten();
                    if let Some(Waiter { reply, outbox }) = waiter {
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
                    {
                        let mut t = lock(&tracker);
                        for waiter in t.inflight.values_mut() {
                            AckTracker::fail(waiter.take());
                        }
                    }
                    let reason = format!("connecting to {endpoint}: {error}");
                    if connected {
                        tracing::warn!("lost the MQTT connection: {error}");
                    } else {
                        tracing::debug!("{reason}");
                    }
                    connected = false;
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
        }
        publisher.abort();
        let mut t = lock(&tracker);
        for waiter in t.queued.drain(..) {
            AckTracker::fail(waiter);
        }
        for (_, waiter) in t.inflight.drain() {
            AckTracker::fail(waiter);
        }
    }
}

/// Forwards the messages gathered so far; false when the twin is gone.
async fn flush(twin: &mpsc::Sender<Input>, batch: &mut Vec<Received>) -> bool {
    if batch.is_empty() {
        return true;
    }
    let messages = std::mem::take(batch);
    twin.send(Input::Bus(BusEvent::Messages(messages)))
        .await
        .is_ok()
}

/// Sends queued requests to rumqttc in order, registering each publish's waiter first.
async fn run_publisher(
    client: AsyncClient,
    mut requests: mpsc::UnboundedReceiver<Request>,
    tracker: Arc<Mutex<AckTracker>>,
) {
    while let Some(request) = requests.recv().await {
        match request {
            Request::Publish(publication, ack) => {
                let outbox = publication
                    .tracked
                    .map(|generation| (publication.topic.clone(), generation));
                let waiter =
                    (ack.is_some() || outbox.is_some()).then_some(Waiter { reply: ack, outbox });
                lock(&tracker).queued.push_back(waiter);
                let sent = client
                    .publish(
                        publication.topic,
                        QoS::AtLeastOnce,
                        publication.retain,
                        publication.payload,
                    )
                    .await;
                if sent.is_err() {
                    let waiter = lock(&tracker).queued.pop_back().flatten();
                    AckTracker::fail(waiter);
                    break;
                }
            }
            Request::Disconnect => {
                let _ = client.disconnect().await;
            }
        }
    }
}

fn lock(tracker: &Mutex<AckTracker>) -> std::sync::MutexGuard<'_, AckTracker> {
    tracker
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

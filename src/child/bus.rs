//! The child's broker connection (rumqttc, CRATES.md's traps): a persistent session under a
//! stable client id, an event-loop task that polls continuously and backs off after errors,
//! and [`Bus`], the handle the command tasks publish through.
//!
//! On every CONNACK the task publishes the registration and subscribes to the entity's command
//! topics; on every SUBACK it announces the capabilities, so that an announced capability means
//! that commands are received. The broker sends the retained commands with each SUBACK, which
//! is why the runner must (and does) ignore commands it already has. The task never waits on
//! rumqttc's request channel (`try_*` only) nor on the runner: messages go to the runner with
//! `try_send`, and what a full queue drops is counted and logged.
//!
//! Publications ride rumqttc's own queue: with a persistent session, what was in flight when the
//! connection dropped is sent again after the reconnect. `Bus::disconnect` queues DISCONNECT
//! behind everything published before it, and the task ends once it has been written.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::settings::Settings;

/// The largest packet MQTT allows, both ways: a large retained command must not cost the
/// connection (it would come back after every reconnect); the runner refuses it instead.
const MQTT_MAX_PACKET: usize = 268_435_455 + 5;
const REQUEST_CAPACITY: usize = 256;
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A message on one of the entity's command topics.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Bytes,
}

/// Publishes retained QoS 1 messages; clonable, for the command tasks.
#[derive(Clone)]
pub struct Bus {
    client: AsyncClient,
}

impl Bus {
    /// Queues a retained QoS 1 publication; waits only for room in rumqttc's queue.
    pub async fn publish(&self, topic: &str, payload: Vec<u8>) {
        tracing::debug!(topic, payload = %String::from_utf8_lossy(&payload), "publishing");
        if let Err(e) = self
            .client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .await
        {
            // Only once the event-loop task is gone, at the very end of a shutdown.
            tracing::warn!("cannot publish on {topic}: {e}");
        }
    }

    /// Queues DISCONNECT after everything published so far.
    pub async fn disconnect(&self) {
        let _ = self.client.disconnect().await;
    }
}

/// The event loop and what it announces on each connection.
pub struct Connection {
    client: AsyncClient,
    eventloop: EventLoop,
    endpoint: String,
    filter: String,
    registration: (String, Vec<u8>),
    capabilities: Vec<(String, Vec<u8>)>,
}

/// The handle and the connection, not yet connected.
pub fn connect(settings: &Settings) -> (Bus, Connection) {
    let mut options = MqttOptions::new(
        settings.client_id(),
        settings.mqtt_host.clone(),
        settings.mqtt_port,
    );
    options
        .set_clean_session(false)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(MQTT_MAX_PACKET, MQTT_MAX_PACKET);
    let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    let connection = Connection {
        client: client.clone(),
        eventloop,
        endpoint: format!("{}:{}", settings.mqtt_host, settings.mqtt_port),
        filter: settings.command_filter(),
        registration: settings.registration(),
        capabilities: settings.capabilities(),
    };
    (Bus { client }, connection)
}

impl Connection {
    /// Polls until DISCONNECT is written, or until `give_up` while the broker is unreachable.
    pub async fn run(mut self, inbox: mpsc::Sender<Received>, give_up: CancellationToken) {
        let mut backoff = BACKOFF_START;
        let mut dropped: u64 = 0;
        loop {
            match self.eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = BACKOFF_START;
                    tracing::info!(
                        broker = %self.endpoint,
                        session_present = ack.session_present,
                        "connected to the MQTT broker"
                    );
                    let (topic, payload) = &self.registration;
                    self.try_publish(topic, payload);
                    if let Err(e) = self
                        .client
                        .try_subscribe(self.filter.clone(), QoS::AtLeastOnce)
                    {
                        tracing::error!("cannot subscribe to {}: {e}", self.filter);
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                        tracing::error!("the broker refused the subscription to {}", self.filter);
                        continue;
                    }
                    tracing::info!(filter = %self.filter, "subscribed; announcing the capabilities");
                    for (topic, payload) in self.capabilities.clone() {
                        self.try_publish(&topic, &payload);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let received = Received {
                        topic: publish.topic,
                        payload: publish.payload,
                    };
                    match inbox.try_send(received) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(r)) => {
                            dropped += 1;
                            tracing::warn!(topic = %r.topic, dropped, "the command queue is full: message dropped");
                        }
                        // The runner has stopped; keep polling until the DISCONNECT is out.
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    tracing::info!("disconnected from the MQTT broker");
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(broker = %self.endpoint, "MQTT connection: {e}; retrying in {backoff:?}");
                    if give_up.is_cancelled() {
                        return;
                    }
                    // rumqttc reconnects on the next poll at once: back off first.
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = give_up.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    fn try_publish(&self, topic: &str, payload: &[u8]) {
        if let Err(e) = self
            .client
            .try_publish(topic, QoS::AtLeastOnce, true, payload.to_vec())
        {
            tracing::error!("cannot publish on {topic}: {e}");
        }
    }
}

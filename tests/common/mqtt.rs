//! A test MQTT client on rumqttc: acknowledged publish/subscribe and message expectations.
//!
//! Owns one connection and its event-loop task; every call that talks to the broker returns
//! only after the broker acknowledged it (PUBACK, SUBACK, UNSUBACK) or the request was written
//! (QoS 0), and every wait has a timeout. It does not start brokers (`mosquitto.rs`).
//!
//! Correlation: rumqttc reports `Outgoing::{Publish, Subscribe, ..}(pkid)` in the order requests
//! were queued, and acks carry that pkid. Requests are queued only under the session lock, so
//! the lock-protected FIFO `submitted` lines up with those events. When the connection drops,
//! rumqttc's queued and in-flight requests are cleared under the same lock (clean session: they
//! would be discarded anyway) and ours are re-sent after the next CONNACK, after the
//! subscriptions are restored; callers just see a longer wait, bounded by their timeout.
//!
//! "Nothing was published" is asserted without sleeping: [`TestClient::collect_until_marker`]
//! publishes a marker to itself and returns what arrived before the marker came back.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, SubscribeReasonCode,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The default bound of every wait in this module.
pub const WAIT: Duration = Duration::from_secs(10);
const MAX_PACKET_SIZE: usize = 32 * 1024 * 1024;
const MARKER_PREFIX: &str = "edge-agent-test/marker/";
const MIN_BACKOFF: Duration = Duration::from_millis(25);
const MAX_BACKOFF: Duration = Duration::from_millis(250);

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(0);

/// A message received by a [`TestClient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub retain: bool,
}

impl Message {
    /// The payload as UTF-8; panics (naming the topic) if it is not.
    pub fn payload_str(&self) -> &str {
        std::str::from_utf8(&self.payload)
            .unwrap_or_else(|e| panic!("payload on {} is not UTF-8: {e}", self.topic))
    }

    /// The payload parsed as JSON; panics (naming the topic and payload) if it is not.
    pub fn payload_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload on {} is not JSON ({e}): {}",
                self.topic,
                preview(&self.payload)
            )
        })
    }
}

/// MQTT topic filter matching (`+` one level, `#` the rest); an exact topic matches itself.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match (level, topic_levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (l, Some(t)) if l == t => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

/// A connected MQTT client for tests (clean session, QoS 1 subscriptions, 32 MiB packets).
pub struct TestClient {
    id: String,
    session: Arc<Mutex<Session>>,
    inbox: tokio::sync::Mutex<Inbox>,
    ready: watch::Receiver<Ready>,
    seen_ready: AtomicU64,
    next_marker: AtomicU64,
    marker_subscribed: tokio::sync::OnceCell<()>,
    task: JoinHandle<()>,
}

impl TestClient {
    /// Connects to `127.0.0.1:<port>` with a unique client id; panics if no CONNACK within 10 s.
    pub async fn connect(port: u16) -> TestClient {
        TestClient::connect_with(TestClient::options(port)).await
    }

    /// The options [`TestClient::connect`] uses, to be adjusted (credentials, last will, ...)
    /// and passed to [`TestClient::connect_with`].
    pub fn options(port: u16) -> MqttOptions {
        let id = format!(
            "test-{}-{}",
            std::process::id(),
            NEXT_CLIENT.fetch_add(1, Ordering::Relaxed)
        );
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options
            .set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE)
            .set_request_channel_capacity(65_536);
        options
    }

    /// Connects with the given options; clean session is forced (re-sends rely on it).
    pub async fn connect_with(mut options: MqttOptions) -> TestClient {
        options.set_clean_session(true);
        let id = options.client_id();
        let broker = options.broker_address();
        let capacity = options.request_channel_capacity();
        let (client, eventloop) = AsyncClient::new(options, capacity);
        let session = Arc::new(Mutex::new(Session::new(client)));
        let (inbox_tx, inbox_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = watch::channel(Ready::default());
        let task = tokio::spawn(run(
            eventloop,
            session.clone(),
            inbox_tx,
            ready_tx,
            format!("{MARKER_PREFIX}{id}/"),
        ));
        let client = TestClient {
            id,
            session,
            inbox: tokio::sync::Mutex::new(Inbox {
                rx: inbox_rx,
                buffer: VecDeque::new(),
            }),
            ready: ready_rx,
            seen_ready: AtomicU64::new(0),
            next_marker: AtomicU64::new(0),
            marker_subscribed: tokio::sync::OnceCell::new(),
            task,
        };
        if let Err(e) = client.wait_ready_after(0, WAIT).await {
            panic!(
                "test client {} cannot connect to {broker:?}: {e}",
                client.id
            );
        }
        client
    }

    pub fn client_id(&self) -> &str {
        &self.id
    }

    /// Subscribes at QoS 1 and returns once the SUBACK arrived; panics after 10 s or if the
    /// broker refused the filter. The subscription is restored after every reconnect.
    pub async fn subscribe(&self, filter: &str) {
        if let Err(e) = self.subscribe_within(filter, WAIT).await {
            panic!("{e}");
        }
    }

    pub async fn subscribe_within(&self, filter: &str, timeout: Duration) -> Result<(), String> {
        self.lock().remember(filter);
        self.request(
            Op::Subscribe {
                filter: filter.to_owned(),
            },
            timeout,
        )
        .await
    }

    pub async fn unsubscribe(&self, filter: &str) {
        self.lock().forget(filter);
        let op = Op::Unsubscribe {
            filter: filter.to_owned(),
        };
        if let Err(e) = self.request(op, WAIT).await {
            panic!("{e}");
        }
    }

    /// Publishes at QoS 1 and returns once the PUBACK arrived; panics after 10 s.
    pub async fn publish(&self, topic: &str, payload: impl Into<Bytes>, retain: bool) {
        if let Err(e) = self
            .publish_within(topic, payload, QoS::AtLeastOnce, retain, WAIT)
            .await
        {
            panic!("{e}");
        }
    }

    /// Publishes at QoS 0 and returns once the packet was written to the socket; panics
    /// after 10 s.
    pub async fn publish_qos0(&self, topic: &str, payload: impl Into<Bytes>, retain: bool) {
        if let Err(e) = self
            .publish_within(topic, payload, QoS::AtMostOnce, retain, WAIT)
            .await
        {
            panic!("{e}");
        }
    }

    /// The fallible publish: `Err` if no PUBACK (QoS 1), PUBCOMP (QoS 2) or write (QoS 0) within
    /// `timeout`, e.g. because the broker is down, or if rumqttc rejects the topic.
    pub async fn publish_within(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
        timeout: Duration,
    ) -> Result<(), String> {
        let op = Op::Publish {
            topic: topic.to_owned(),
            payload: payload.into(),
            qos,
            retain,
        };
        self.request(op, timeout).await
    }

    /// Waits until the client has reconnected (and re-subscribed) since it was created or since
    /// the previous call, e.g. after `Broker::restart`. Panics after `timeout`.
    pub async fn wait_reconnected(&self, timeout: Duration) {
        let seen = self.seen_ready.load(Ordering::SeqCst);
        if let Err(e) = self.wait_ready_after(seen, timeout).await {
            panic!("test client {} did not reconnect: {e}", self.id);
        }
    }

    /// The next message, buffered or new; `None` after `timeout`.
    pub async fn recv(&self, timeout: Duration) -> Option<Message> {
        let mut inbox = self.inbox.lock().await;
        if let Some(message) = inbox.buffer.pop_front() {
            return Some(message);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, inbox.rx.recv()).await {
                Ok(Some(Inbound::Message(message))) => return Some(message),
                Ok(Some(Inbound::Marker(_))) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The first message whose topic matches `filter` (wildcards allowed); messages skipped on
    /// the way stay buffered for later calls. Panics after 10 s, listing what did arrive.
    pub async fn expect(&self, filter: &str) -> Message {
        self.expect_within(filter, WAIT).await
    }

    pub async fn expect_within(&self, filter: &str, timeout: Duration) -> Message {
        self.expect_message_within(&format!("a message on {filter}"), timeout, |m| {
            topic_matches(filter, &m.topic)
        })
        .await
    }

    /// [`TestClient::expect`], then asserts the payload is exactly `payload`.
    pub async fn expect_payload(&self, filter: &str, payload: impl AsRef<[u8]>) -> Message {
        let message = self.expect(filter).await;
        let expected = payload.as_ref();
        assert!(
            message.payload.as_ref() == expected,
            "test client {}: unexpected payload on {}\n  expected ({} bytes): {}\n  got      ({} bytes): {}",
            self.id,
            message.topic,
            expected.len(),
            preview(expected),
            message.payload.len(),
            preview(&message.payload)
        );
        message
    }

    /// The first message satisfying `pred`; the others stay buffered. `what` names the
    /// awaited message in the panic raised after 10 s.
    pub async fn expect_message(&self, what: &str, pred: impl FnMut(&Message) -> bool) -> Message {
        self.expect_message_within(what, WAIT, pred).await
    }

    pub async fn expect_message_within(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Message) -> bool,
    ) -> Message {
        let mut inbox = self.inbox.lock().await;
        if let Some(i) = inbox.buffer.iter().position(&mut pred) {
            return inbox.buffer.remove(i).expect("index from position");
        }
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, inbox.rx.recv()).await {
                Ok(Some(Inbound::Message(message))) if pred(&message) => return message,
                Ok(Some(Inbound::Message(message))) => inbox.buffer.push_back(message),
                Ok(Some(Inbound::Marker(_))) => {}
                Ok(None) => panic!("test client {}: task ended while waiting", self.id),
                Err(_) => panic!(
                    "test client {}: no {what} within {timeout:?}; received meanwhile:\n{}",
                    self.id,
                    describe(&inbox.buffer)
                ),
            }
        }
    }

    /// Every message not yet consumed, up to a marker this client publishes now and receives
    /// back: a barrier that proves what the broker had routed to this client before this call,
    /// so tests can assert that something was *not* published without sleeping. Only messages
    /// the broker received before the marker count: make sure the publisher under test has
    /// had its chance first (e.g. its HTTP response arrived). Panics after 10 s.
    pub async fn collect_until_marker(&self) -> Vec<Message> {
        let filter = format!("{MARKER_PREFIX}{}/+", self.id);
        self.marker_subscribed
            .get_or_init(|| async { self.subscribe(&filter).await })
            .await;
        let mut inbox = self.inbox.lock().await;
        let n = self.next_marker.fetch_add(1, Ordering::Relaxed);
        let topic = format!("{MARKER_PREFIX}{}/{n}", self.id);
        self.publish(&topic, Bytes::new(), false).await;
        let mut collected: Vec<Message> = inbox.buffer.drain(..).collect();
        let deadline = Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, inbox.rx.recv()).await {
                Ok(Some(Inbound::Message(message))) => collected.push(message),
                Ok(Some(Inbound::Marker(m))) if m == n => return collected,
                Ok(Some(Inbound::Marker(_))) => {}
                Ok(None) => panic!("test client {}: task ended while waiting", self.id),
                Err(_) => panic!(
                    "test client {}: marker {topic} did not come back within {WAIT:?}",
                    self.id
                ),
            }
        }
    }

    /// Asserts that no message matching `filter` arrived up to now (see
    /// [`TestClient::collect_until_marker`]); other messages are discarded.
    pub async fn expect_nothing(&self, filter: &str) {
        let unexpected: VecDeque<Message> = self
            .collect_until_marker()
            .await
            .into_iter()
            .filter(|m| topic_matches(filter, &m.topic))
            .collect();
        assert!(
            unexpected.is_empty(),
            "test client {}: expected nothing on {filter}, got:\n{}",
            self.id,
            describe(&unexpected)
        );
    }

    /// Sends DISCONNECT and returns once it was written; the client is unusable afterwards.
    pub async fn disconnect(&self) {
        self.lock().disconnecting = true;
        if let Err(e) = self.request(Op::Disconnect, WAIT).await {
            panic!("{e}");
        }
    }

    fn lock(&self) -> MutexGuard<'_, Session> {
        lock(&self.session)
    }

    async fn request(&self, op: Op, timeout: Duration) -> Result<(), String> {
        let what = op.describe();
        let (reply, result) = oneshot::channel();
        self.lock().submit(Pending {
            op,
            waiter: Waiter::Caller(reply),
        });
        match tokio::time::timeout(timeout, result).await {
            Ok(Ok(result)) => result.map_err(|e| format!("test client {}: {what}: {e}", self.id)),
            Ok(Err(_)) => Err(format!(
                "test client {}: {what}: the client task has ended",
                self.id
            )),
            Err(_) => Err(format!(
                "test client {}: {what}: not acknowledged within {timeout:?}",
                self.id
            )),
        }
    }

    async fn wait_ready_after(&self, seen: u64, timeout: Duration) -> Result<(), String> {
        let mut ready = self.ready.clone();
        let outcome = tokio::time::timeout(
            timeout,
            ready.wait_for(|r| (r.now && r.count > seen) || r.ended.is_some()),
        )
        .await
        .map(|r| r.map(|r| r.clone()));
        match outcome {
            Ok(Ok(Ready {
                ended: Some(why), ..
            })) => Err(why),
            Ok(Ok(r)) => {
                self.seen_ready.store(r.count, Ordering::SeqCst);
                Ok(())
            }
            Ok(Err(_)) => Err("the client task has ended".to_owned()),
            Err(_) => Err(format!(
                "not connected within {timeout:?}; last error: {}",
                self.ready.borrow().last_error
            )),
        }
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Inbox {
    rx: mpsc::UnboundedReceiver<Inbound>,
    /// Received but not yet consumed by an `expect`, in arrival order.
    buffer: VecDeque<Message>,
}

enum Inbound {
    Message(Message),
    Marker(u64),
}

/// Connection state published by the event-loop task.
#[derive(Clone, Debug, Default)]
struct Ready {
    /// How many times the client became ready (connected and re-subscribed).
    count: u64,
    /// Ready now.
    now: bool,
    last_error: String,
    /// Set when the task stopped for good.
    ended: Option<String>,
}

enum Op {
    Publish {
        topic: String,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    },
    Subscribe {
        filter: String,
    },
    Unsubscribe {
        filter: String,
    },
    Disconnect,
}

impl Op {
    fn describe(&self) -> String {
        match self {
            Op::Publish { topic, qos, .. } => format!("publish to {topic} at {qos:?}"),
            Op::Subscribe { filter } => format!("subscribe to {filter}"),
            Op::Unsubscribe { filter } => format!("unsubscribe from {filter}"),
            Op::Disconnect => "disconnect".to_owned(),
        }
    }
}

enum Waiter {
    Caller(oneshot::Sender<Result<(), String>>),
    /// A subscription restored after a reconnect.
    Resubscribe,
}

struct Pending {
    op: Op,
    waiter: Waiter,
}

impl Pending {
    fn abandoned(&self) -> bool {
        matches!(&self.waiter, Waiter::Caller(reply) if reply.is_closed())
    }
}

/// What the caller side and the event-loop task share; see the module doc for the invariant.
struct Session {
    client: AsyncClient,
    connected: bool,
    disconnecting: bool,
    ended: bool,
    /// Queued in rumqttc, waiting for their `Outgoing` event, in queue order.
    submitted: VecDeque<Pending>,
    awaiting_puback: HashMap<u16, Pending>,
    awaiting_suback: HashMap<u16, Pending>,
    awaiting_unsuback: HashMap<u16, Pending>,
    /// Publishes rumqttc holds back because their pkid is still in flight (`AwaitAck`).
    collided: HashMap<u16, Pending>,
    /// Requested while disconnected; sent after the next CONNACK.
    deferred: VecDeque<Pending>,
    /// Restored after every reconnect.
    subscriptions: Vec<String>,
    resubscribing: usize,
}

impl Session {
    fn new(client: AsyncClient) -> Session {
        Session {
            client,
            connected: false,
            disconnecting: false,
            ended: false,
            submitted: VecDeque::new(),
            awaiting_puback: HashMap::new(),
            awaiting_suback: HashMap::new(),
            awaiting_unsuback: HashMap::new(),
            collided: HashMap::new(),
            deferred: VecDeque::new(),
            subscriptions: Vec::new(),
            resubscribing: 0,
        }
    }

    fn remember(&mut self, filter: &str) {
        if !self.subscriptions.iter().any(|f| f == filter) {
            self.subscriptions.push(filter.to_owned());
        }
    }

    fn forget(&mut self, filter: &str) {
        self.subscriptions.retain(|f| f != filter);
    }

    fn submit(&mut self, pending: Pending) {
        if pending.abandoned() {
            return;
        }
        if self.ended {
            return reply(pending, Err("the client is disconnected".to_owned()));
        }
        if !self.connected {
            self.deferred.push_back(pending);
            return;
        }
        let queued = match &pending.op {
            Op::Publish {
                topic,
                payload,
                qos,
                retain,
            } => self
                .client
                .try_publish(topic.as_str(), *qos, *retain, payload.clone()),
            Op::Subscribe { filter } => {
                self.client.try_subscribe(filter.as_str(), QoS::AtLeastOnce)
            }
            Op::Unsubscribe { filter } => self.client.try_unsubscribe(filter.as_str()),
            Op::Disconnect => self.client.try_disconnect(),
        };
        match queued {
            Ok(()) => self.submitted.push_back(pending),
            Err(e) => reply(pending, Err(format!("rejected by rumqttc: {e}"))),
        }
    }

    /// The next submitted request, which must be of the kind rumqttc just reported.
    fn next_submitted(&mut self, is_kind: fn(&Op) -> bool, event: &Outgoing) -> Option<Pending> {
        let pending = self.submitted.pop_front();
        match pending {
            Some(p) if is_kind(&p.op) => Some(p),
            Some(p) => {
                let e = format!("harness bug: {event:?} does not match {}", p.op.describe());
                tracing::error!("{e}");
                reply(p, Err(e));
                None
            }
            None => {
                tracing::error!("harness bug: {event:?} without a submitted request");
                None
            }
        }
    }

    fn on_connack(&mut self, ready: &watch::Sender<Ready>) {
        self.connected = true;
        self.resubscribing = self.subscriptions.len();
        for filter in self.subscriptions.clone() {
            self.submit(Pending {
                op: Op::Subscribe { filter },
                waiter: Waiter::Resubscribe,
            });
        }
        for pending in std::mem::take(&mut self.deferred) {
            self.submit(pending);
        }
        if self.resubscribing == 0 {
            mark_ready(ready);
        }
    }

    /// rumqttc has dropped everything queued and in flight: re-send it after reconnecting.
    fn on_connection_lost(&mut self) {
        self.connected = false;
        self.resubscribing = 0;
        let mut lost: Vec<Pending> = self.submitted.drain(..).collect();
        lost.extend(self.awaiting_puback.drain().map(|(_, p)| p));
        lost.extend(self.awaiting_suback.drain().map(|(_, p)| p));
        lost.extend(self.awaiting_unsuback.drain().map(|(_, p)| p));
        lost.extend(self.collided.drain().map(|(_, p)| p));
        for pending in lost.into_iter().rev() {
            match (&pending.op, &pending.waiter) {
                (_, Waiter::Resubscribe) => {}
                (Op::Disconnect, _) => reply(pending, Ok(())),
                _ => self.deferred.push_front(pending),
            }
        }
    }

    fn end(&mut self, why: &str) {
        self.ended = true;
        self.connected = false;
        let all: Vec<Pending> = self
            .submitted
            .drain(..)
            .chain(self.deferred.drain(..))
            .chain(self.awaiting_puback.drain().map(|(_, p)| p))
            .chain(self.awaiting_suback.drain().map(|(_, p)| p))
            .chain(self.awaiting_unsuback.drain().map(|(_, p)| p))
            .chain(self.collided.drain().map(|(_, p)| p))
            .collect();
        for pending in all {
            let result = match pending.op {
                Op::Disconnect => Ok(()),
                _ => Err(why.to_owned()),
            };
            reply(pending, result);
        }
    }
}

fn reply(pending: Pending, result: Result<(), String>) {
    if let Waiter::Caller(reply) = pending.waiter {
        let _ = reply.send(result);
    }
}

fn mark_ready(ready: &watch::Sender<Ready>) {
    ready.send_modify(|r| {
        r.count += 1;
        r.now = true;
    });
}

fn lock(session: &Mutex<Session>) -> MutexGuard<'_, Session> {
    // A panic elsewhere must not hide the state from the other side.
    session.lock().unwrap_or_else(|e| e.into_inner())
}

/// The event-loop task: polls continuously, backs off after errors, routes every event.
async fn run(
    mut eventloop: EventLoop,
    session: Arc<Mutex<Session>>,
    inbox: mpsc::UnboundedSender<Inbound>,
    ready: watch::Sender<Ready>,
    own_markers: String,
) {
    let deliver = |publish: rumqttc::Publish| {
        if let Some(n) = publish.topic.strip_prefix(&own_markers) {
            if let Ok(n) = n.parse() {
                let _ = inbox.send(Inbound::Marker(n));
            }
        } else if !publish.topic.starts_with(MARKER_PREFIX) {
            let _ = inbox.send(Inbound::Message(Message {
                topic: publish.topic,
                payload: publish.payload,
                retain: publish.retain,
            }));
        }
    };
    let mut backoff = MIN_BACKOFF;
    loop {
        match eventloop.poll().await {
            Ok(event) => {
                backoff = MIN_BACKOFF;
                let mut s = lock(&session);
                match event {
                    Event::Incoming(Packet::ConnAck(_)) => s.on_connack(&ready),
                    Event::Incoming(Packet::Publish(publish)) => deliver(publish),
                    Event::Incoming(Packet::PubAck(ack)) => {
                        if let Some(p) = s.awaiting_puback.remove(&ack.pkid) {
                            reply(p, Ok(()));
                        }
                    }
                    // QoS 2 completes with PUBCOMP (rumqttc answers PUBREC itself).
                    Event::Incoming(Packet::PubComp(ack)) => {
                        if let Some(p) = s.awaiting_puback.remove(&ack.pkid) {
                            reply(p, Ok(()));
                        }
                    }
                    Event::Incoming(Packet::SubAck(ack)) => {
                        if let Some(p) = s.awaiting_suback.remove(&ack.pkid) {
                            let refused = ack.return_codes.contains(&SubscribeReasonCode::Failure);
                            if let Waiter::Resubscribe = p.waiter {
                                s.resubscribing = s.resubscribing.saturating_sub(1);
                                if s.resubscribing == 0 && s.connected {
                                    mark_ready(&ready);
                                }
                            } else if refused {
                                reply(p, Err("the broker refused the subscription".to_owned()));
                            } else {
                                reply(p, Ok(()));
                            }
                        }
                    }
                    Event::Incoming(Packet::UnsubAck(ack)) => {
                        if let Some(p) = s.awaiting_unsuback.remove(&ack.pkid) {
                            reply(p, Ok(()));
                        }
                    }
                    Event::Outgoing(out @ Outgoing::Publish(pkid)) => {
                        if let Some(p) = s.collided.remove(&pkid) {
                            s.awaiting_puback.insert(pkid, p);
                        } else if let Some(p) = s.next_submitted(is_publish, &out) {
                            if pkid == 0 {
                                reply(p, Ok(()));
                            } else {
                                s.awaiting_puback.insert(pkid, p);
                            }
                        }
                    }
                    Event::Outgoing(out @ Outgoing::AwaitAck(pkid)) => {
                        if let Some(p) = s.next_submitted(is_publish, &out) {
                            s.collided.insert(pkid, p);
                        }
                    }
                    Event::Outgoing(out @ Outgoing::Subscribe(pkid)) => {
                        if let Some(p) = s.next_submitted(is_subscribe, &out) {
                            s.awaiting_suback.insert(pkid, p);
                        }
                    }
                    Event::Outgoing(out @ Outgoing::Unsubscribe(pkid)) => {
                        if let Some(p) = s.next_submitted(is_unsubscribe, &out) {
                            s.awaiting_unsuback.insert(pkid, p);
                        }
                    }
                    Event::Outgoing(out @ Outgoing::Disconnect) => {
                        if let Some(p) = s.next_submitted(is_disconnect, &out) {
                            reply(p, Ok(()));
                        }
                        s.end("the client is disconnected");
                        drop(s);
                        ready.send_modify(|r| {
                            r.now = false;
                            r.ended = Some("the client is disconnected".to_owned());
                        });
                        return;
                    }
                    Event::Incoming(_) | Event::Outgoing(_) => {}
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "test client connection error");
                {
                    let mut s = lock(&session);
                    // Under the lock, so that no request slips into rumqttc's queue between
                    // dropping its queue and re-deferring ours.
                    eventloop.clean();
                    eventloop.pending.clear();
                    for event in std::mem::take(&mut eventloop.state.events) {
                        if let Event::Incoming(Packet::Publish(publish)) = event {
                            deliver(publish);
                        }
                    }
                    if s.disconnecting {
                        s.end("the client is disconnected");
                        drop(s);
                        ready.send_modify(|r| {
                            r.now = false;
                            r.ended = Some("the client is disconnected".to_owned());
                        });
                        return;
                    }
                    s.on_connection_lost();
                }
                ready.send_modify(|r| {
                    r.now = false;
                    r.last_error = e.to_string();
                });
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn is_publish(op: &Op) -> bool {
    matches!(op, Op::Publish { .. })
}

fn is_subscribe(op: &Op) -> bool {
    matches!(op, Op::Subscribe { .. })
}

fn is_unsubscribe(op: &Op) -> bool {
    matches!(op, Op::Unsubscribe { .. })
}

fn is_disconnect(op: &Op) -> bool {
    matches!(op, Op::Disconnect)
}

fn preview(payload: &[u8]) -> String {
    const MAX: usize = 300;
    let text = String::from_utf8_lossy(&payload[..payload.len().min(MAX)]).into_owned();
    if payload.len() > MAX {
        format!("{text}... ({} bytes)", payload.len())
    } else {
        text
    }
}

/// `(topic, payload)` pairs of `messages`, in order, for comparing traffic with [`msgs`]. The
/// payload is read lossily, so that a test can also compare what became of invalid UTF-8.
pub fn pairs<'a>(messages: impl IntoIterator<Item = &'a Message>) -> Vec<(String, String)> {
    messages
        .into_iter()
        .map(|m| {
            (
                m.topic.clone(),
                String::from_utf8_lossy(&m.payload).into_owned(),
            )
        })
        .collect()
}

/// Expected `(topic, payload)` pairs from literals, to compare with [`pairs`], [`retained`] and
/// `System::published`.
pub fn msgs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(t, p)| ((*t).to_owned(), (*p).to_owned()))
        .collect()
}

/// What a brand-new subscriber to `filters` on the broker at `port` receives, as [`pairs`]
/// sorted by topic (the broker's delivery order of retained messages is its own). Asserts that
/// every message came with the retain flag; mosquitto clears it on live delivery, which is why
/// retention is checked with a fresh subscriber. The reader disconnects before returning.
pub async fn retained(port: u16, filters: &[&str]) -> Vec<(String, String)> {
    let reader = TestClient::connect(port).await;
    for filter in filters {
        reader.subscribe(filter).await;
    }
    let messages = reader.collect_until_marker().await;
    reader.disconnect().await;
    assert!(
        messages.iter().all(|m| m.retain),
        "a fresh subscriber got live messages too:\n{}",
        describe(&messages)
    );
    let mut pairs = pairs(&messages);
    pairs.sort();
    pairs
}

/// One line per message (topic, retain flag, payload preview), for panic messages.
pub fn describe<'a>(messages: impl IntoIterator<Item = &'a Message>) -> String {
    let lines: Vec<String> = messages
        .into_iter()
        .map(|m| {
            let retained = if m.retain { " (retained)" } else { "" };
            format!("  {}{retained}: {}", m.topic, preview(&m.payload))
        })
        .collect();
    if lines.is_empty() {
        "  (nothing)".to_owned()
    } else {
        lines.join("\n")
    }
}

//! Proves the test harness itself: broker life cycle, acknowledged MQTT, barriers, timeouts.

mod common;

use std::time::Duration;

use common::mosquitto::Broker;
use common::mqtt::{topic_matches, Message, TestClient};
use rumqttc::QoS;

#[tokio::test]
async fn a_qos1_message_published_after_suback_arrives_with_its_exact_payload() {
    common::init_tracing();
    let broker = Broker::start().await;
    let subscriber = TestClient::connect(broker.port()).await;
    let publisher = TestClient::connect(broker.port()).await;
    subscriber.subscribe("harness/exact/#").await;

    let binary: Vec<u8> = (0..=255u8).chain([0, 0xff, 0xfe]).collect();
    publisher
        .publish("harness/exact/binary", binary.clone(), false)
        .await;
    let message = subscriber
        .expect_payload("harness/exact/binary", &binary)
        .await;
    assert!(!message.retain);

    // Far above rumqttc's 10 KiB default packet limit, in both directions.
    let large = vec![b'x'; 5 * 1024 * 1024];
    publisher
        .publish("harness/exact/large", large.clone(), false)
        .await;
    subscriber
        .expect_payload("harness/exact/large", &large)
        .await;

    publisher
        .publish_qos0("harness/exact/qos0", "zero", false)
        .await;
    let message = subscriber.expect("harness/exact/+").await;
    assert_eq!(message.payload_str(), "zero");
    assert!(broker.log().contains("running"), "{}", broker.log());
}

#[tokio::test]
async fn a_retained_message_survives_restart_but_not_restart_without_persistence() {
    let mut broker = Broker::start().await;
    let publisher = TestClient::connect(broker.port()).await;
    publisher
        .publish("harness/retained", r#"{"kept":true}"#, true)
        .await;

    broker.restart().await;
    let reader = TestClient::connect(broker.port()).await;
    reader.subscribe("harness/retained").await;
    let message = reader.expect("harness/retained").await;
    assert!(message.retain);
    assert_eq!(message.payload_json(), serde_json::json!({"kept": true}));

    broker.restart_without_persistence().await;
    let reader = TestClient::connect(broker.port()).await;
    reader.subscribe("harness/retained").await;
    assert_eq!(reader.collect_until_marker().await, Vec::<Message>::new());
}

#[tokio::test]
async fn collect_until_marker_returns_exactly_the_messages_published_before_it() {
    let broker = Broker::start().await;
    let subscriber = TestClient::connect(broker.port()).await;
    let publisher = TestClient::connect(broker.port()).await;
    subscriber.subscribe("harness/collect/#").await;

    for topic in ["a", "b", "c"] {
        publisher
            .publish(&format!("harness/collect/{topic}"), topic, false)
            .await;
    }
    // An expectation consumes only its match: the others stay for the barrier.
    subscriber.expect_payload("harness/collect/b", "b").await;
    let topics: Vec<String> = subscriber
        .collect_until_marker()
        .await
        .into_iter()
        .map(|m| m.topic)
        .collect();
    assert_eq!(topics, ["harness/collect/a", "harness/collect/c"]);

    assert!(subscriber.collect_until_marker().await.is_empty());
    publisher.publish("harness/other", "x", false).await;
    subscriber.expect_nothing("harness/#").await;
    assert!(subscriber.recv(Duration::from_millis(1)).await.is_none());
}

#[tokio::test]
async fn markers_stay_invisible_to_clients_subscribed_to_everything() {
    let broker = Broker::start().await;
    let everything = TestClient::connect(broker.port()).await;
    let other = TestClient::connect(broker.port()).await;
    everything.subscribe("#").await;

    other.collect_until_marker().await;
    other.publish("harness/visible", "v", false).await;
    let seen = everything.collect_until_marker().await;
    assert_eq!(
        seen.iter().map(|m| m.topic.as_str()).collect::<Vec<_>>(),
        ["harness/visible"]
    );
}

#[tokio::test]
async fn two_brokers_in_parallel_get_different_ports_and_separate_traffic() {
    let (first, second) = tokio::join!(Broker::start(), Broker::start());
    assert_ne!(first.port(), second.port());
    assert_ne!(first.dir(), second.dir());

    let on_first = TestClient::connect(first.port()).await;
    let on_second = TestClient::connect(second.port()).await;
    on_second.subscribe("harness/#").await;
    on_first.publish("harness/crossing", "no", false).await;
    on_second.expect_nothing("#").await;
}

#[tokio::test]
async fn a_publish_to_a_stopped_broker_fails_within_its_timeout_and_works_after_a_restart() {
    let mut broker = Broker::start().await;
    let subscriber = TestClient::connect(broker.port()).await;
    let publisher = TestClient::connect(broker.port()).await;
    subscriber.subscribe("harness/outage").await;

    broker.stop().await;
    assert!(!broker.is_running());
    let failed = publisher
        .publish_within(
            "harness/outage",
            "lost",
            QoS::AtLeastOnce,
            false,
            Duration::from_millis(300),
        )
        .await;
    let error = failed.expect_err("a publish to a stopped broker must fail");
    assert!(error.contains("not acknowledged"), "{error}");

    broker.start_again().await;
    subscriber.wait_reconnected(Duration::from_secs(10)).await;
    publisher.publish("harness/outage", "back", false).await;
    subscriber.expect_payload("harness/outage", "back").await;
    // The abandoned publish was not sent later behind the caller's back.
    subscriber.expect_nothing("harness/outage").await;
}

#[tokio::test]
async fn a_publish_right_after_a_restart_waits_for_the_reconnect() {
    let mut broker = Broker::start().await;
    let subscriber = TestClient::connect(broker.port()).await;
    let publisher = TestClient::connect(broker.port()).await;
    subscriber.subscribe("harness/restart").await;

    broker.restart().await;
    subscriber.wait_reconnected(Duration::from_secs(10)).await;
    publisher.publish("harness/restart", "after", false).await;
    subscriber.expect_payload("harness/restart", "after").await;
}

#[tokio::test]
async fn a_client_publishing_right_after_a_restart_gets_its_subscription_back_first() {
    let mut broker = Broker::start().await;
    let client = TestClient::connect(broker.port()).await;
    client.subscribe("harness/echo").await;

    broker.restart().await;
    client.publish("harness/echo", "again", false).await;
    client.expect_payload("harness/echo", "again").await;
}

#[tokio::test]
async fn a_refused_topic_is_an_error_not_a_hang() {
    let broker = Broker::start().await;
    let client = TestClient::connect(broker.port()).await;
    let result = client
        .publish_within(
            "bad/+/topic",
            "x",
            QoS::AtLeastOnce,
            false,
            Duration::from_secs(10),
        )
        .await;
    assert!(result.is_err());
    client.disconnect().await;
    let after = client
        .publish_within("ok", "x", QoS::AtMostOnce, false, Duration::from_secs(10))
        .await;
    assert!(after.is_err(), "publishing after disconnect must fail");
}

#[test]
fn topic_filters_match_like_mqtt() {
    assert!(topic_matches("a/b", "a/b"));
    assert!(topic_matches("a/+/c", "a/b/c"));
    assert!(topic_matches("a/#", "a"));
    assert!(topic_matches("a/#", "a/b/c"));
    assert!(topic_matches("#", "a/b"));
    assert!(topic_matches("te/+/+/+/+/m/+", "te/device/main///m/"));
    assert!(!topic_matches("a/+", "a/b/c"));
    assert!(!topic_matches("a/b", "a"));
    assert!(!topic_matches("a/b", "a/b/c"));
}

#[tokio::test]
async fn wait_until_returns_as_soon_as_the_condition_holds() {
    let mut polls = 0;
    common::wait_until("the third poll", Duration::from_secs(10), || {
        polls += 1;
        let done = polls >= 3;
        async move { done }
    })
    .await;
    assert_eq!(polls, 3);
}

#[tokio::test]
#[should_panic(expected = "waiting for a condition that never holds")]
async fn wait_until_panics_with_what_it_waited_for() {
    common::wait_until(
        "a condition that never holds",
        Duration::from_millis(50),
        || async { false },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_from_one_client_are_each_acknowledged() {
    common::init_tracing();
    let broker = Broker::start().await;
    let subscriber = TestClient::connect(broker.port()).await;
    let publisher = TestClient::connect(broker.port()).await;
    subscriber.subscribe("harness/many/#").await;

    // More than rumqttc's 100 in-flight packet ids, so ids are reused while others wait.
    let publishes = (0..500).map(|i| {
        let publisher = &publisher;
        async move {
            publisher
                .publish(&format!("harness/many/{i}"), i.to_string(), false)
                .await
        }
    });
    futures_util::future::join_all(publishes).await;

    let mut received: Vec<u32> = subscriber
        .collect_until_marker()
        .await
        .iter()
        .map(|m| m.payload_str().parse().unwrap())
        .collect();
    received.sort_unstable();
    assert_eq!(received, (0..500).collect::<Vec<_>>());
}

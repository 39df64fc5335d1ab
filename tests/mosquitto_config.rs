//! The broker configuration the repository ships (issue #6 "mosquitto/"), run by the real
//! mosquitto: `mosquitto/mosquitto.conf` as `make run` uses it, with its `.run/` paths moved into
//! a temp dir and its port made free, loads the bridge directory, serves the loopback listener
//! and keeps its database where it says; its commented TLS listener, uncommented, admits only
//! clients with a certificate from its CA; and `mosquitto/acl.example` confines a child device
//! (user name = certificate CN) to `te/device/<CN>/#` while the agent sees everything.
//!
//! The rewriting asserts that every line it changes is in the shipped file, so an edit there that
//! this suite does not follow fails here rather than testing something else. A message that must
//! *not* arrive is followed, on the same connection, by a control message that must: mosquitto
//! keeps one publisher's order towards a subscriber, so receiving the control first proves the
//! other was dropped, without sleeping.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::certs::Pki;
use common::mosquitto::{free_port, Broker};
use common::mqtt::{describe, msgs, pairs, Message, TestClient, WAIT};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, TlsConfiguration, Transport};
use tempfile::TempDir;

const SHIPPED_CONF: &str = include_str!("../mosquitto/mosquitto.conf");
/// The loopback listener line of the shipped file, and the port placeholder of the harness.
const LOOPBACK_LISTENER: &str = "listener 1883 127.0.0.1";
/// The commented TLS block, line by line, as the shipped file has it.
const TLS_BLOCK: [&str; 7] = [
    "#listener 8883",
    "#cafile .run/certs/ca.pem",
    "#certfile .run/certs/server.pem",
    "#keyfile .run/certs/server.key",
    "#require_certificate true",
    "#use_identity_as_username true",
    "#acl_file mosquitto/acl.example",
];

/// The shipped configuration with `.run/` under `run_dir`, the loopback listener on the
/// harness's `{port}`, and, with `tls`, the TLS block uncommented on `{port1}` with the ACL
/// example by its path in this repository.
fn shipped_conf(run_dir: &Path, tls: bool) -> String {
    let mut conf = replace_line(SHIPPED_CONF, LOOPBACK_LISTENER, "listener {port} 127.0.0.1");
    if tls {
        for line in TLS_BLOCK {
            let uncommented = line.trim_start_matches('#');
            let uncommented = match uncommented {
                "listener 8883" => "listener {port1}".to_owned(),
                "acl_file mosquitto/acl.example" => {
                    format!("acl_file {}", repo_file("mosquitto/acl.example").display())
                }
                other => other.to_owned(),
            };
            conf = replace_line(&conf, line, &uncommented);
        }
    }
    let conf = conf.replace(".run/", &format!("{}/", run_dir.display()));
    let active: Vec<&str> = conf
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert!(
        !active
            .iter()
            .any(|l| l.contains(".run") || l.contains("1883")),
        "a path or port of the shipped file was not moved:\n{}",
        active.join("\n")
    );
    conf
}

/// `conf` with its one line `from` replaced by `to`; panics if `from` is not exactly one line.
fn replace_line(conf: &str, from: &str, to: &str) -> String {
    let found = conf.lines().filter(|l| *l == from).count();
    assert_eq!(
        found, 1,
        "mosquitto/mosquitto.conf should have the line {from:?} once"
    );
    conf.lines()
        .map(|l| if l == from { to } else { l })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `run_dir` laid out as `make run` prepares `.run/` (bridges, mosquitto), plus `certs/` with
/// the broker's files from `pki` when given.
fn run_dir(pki: Option<&Pki>) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("edge-agent-run-")
        .tempdir()
        .expect("cannot create a temp dir");
    for sub in ["bridges", "mosquitto", "certs"] {
        fs::create_dir(dir.path().join(sub)).expect("cannot create a run subdirectory");
    }
    if let Some(pki) = pki {
        let certs = dir.path().join("certs");
        for (from, to) in [
            (pki.ca(), "ca.pem"),
            (pki.server_cert(), "server.pem"),
            (pki.server_key(), "server.key"),
        ] {
            fs::copy(&from, certs.join(to)).expect("cannot copy a generated PEM file");
        }
    }
    dir
}

/// Client-side rustls needs a process-wide crypto provider.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// TLS options towards the broker's TLS listener, trusting the test CA, presenting `client`
/// (certificate, key) if given.
fn tls_options(broker: &Broker, pki: &Pki, client: Option<(PathBuf, PathBuf)>) -> MqttOptions {
    install_crypto_provider();
    let read = |path: &Path| fs::read(path).expect("a generated PEM file");
    let mut options = TestClient::options(broker.extra_port(1));
    options.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: read(&pki.ca()),
        alpn: None,
        client_auth: client.map(|(cert, key)| (read(&cert), read(&key))),
    }));
    options
}

/// A client on the TLS listener with a certificate whose CN is `name`: MQTT user `name`.
async fn device(broker: &Broker, pki: &Pki, name: &str) -> TestClient {
    TestClient::connect_with(tls_options(broker, pki, Some(pki.client_cert_for(name)))).await
}

/// How many times `client` connected to `broker`, from the broker's log.
fn connections(broker: &Broker, client: &TestClient) -> usize {
    let as_client = format!(" as {} (", client.client_id());
    broker
        .log()
        .lines()
        .filter(|l| l.contains("New client connected from") && l.contains(&as_client))
        .count()
}

/// The next message `client` receives; panics after 10 s.
async fn next(client: &TestClient, what: &str) -> Message {
    client
        .recv(WAIT)
        .await
        .unwrap_or_else(|| panic!("{what}: nothing within {WAIT:?}"))
}

#[tokio::test]
async fn the_shipped_config_loads_its_bridge_directory_and_serves_the_loopback_listener() {
    let run = run_dir(None);
    let bridges = run.path().join("bridges");
    // A bridge to a closed port: mosquitto loads it and keeps retrying in the background.
    let bridge_file = bridges.join("probe-bridge.conf");
    fs::write(
        &bridge_file,
        format!(
            "connection edge_to_probe\naddress 127.0.0.1:{}\ntopic probe/# out 1\n",
            free_port()
        ),
    )
    .unwrap();
    // A file include_dir must skip: only *.conf is loaded.
    fs::write(bridges.join("notes.txt"), "not a mosquitto option\n").unwrap();

    let mut broker = Broker::start_from_conf(0, &shipped_conf(run.path(), false)).await;
    let log = broker.log();
    assert!(
        log.contains(&format!("Loading config file {}", bridge_file.display())),
        "the bridge file was not loaded; log:\n{log}"
    );
    assert!(
        log.contains("Connecting bridge (step 1) edge_to_probe"),
        "the included bridge did not start; log:\n{log}"
    );

    let subscriber = TestClient::connect(broker.port()).await;
    subscriber.subscribe("te/#").await;
    let publisher = TestClient::connect(broker.port()).await;
    publisher
        .publish("te/device/child1//", r#"{"@type":"child-device"}"#, true)
        .await;
    subscriber
        .expect_payload("te/device/child1//", r#"{"@type":"child-device"}"#)
        .await;

    // persistence_location is honoured: the database is saved there on a clean stop.
    broker.stop().await;
    let db = run.path().join("mosquitto").join("mosquitto.db");
    assert!(
        db.is_file(),
        "no database at {}; log:\n{}",
        db.display(),
        broker.log()
    );
}

#[tokio::test]
async fn the_tls_listener_of_the_shipped_config_admits_only_certificates_of_its_ca() {
    let pki = Pki::generate();
    let run = run_dir(Some(&pki));
    let broker = Broker::start_from_conf(1, &shipped_conf(run.path(), true)).await;

    // With a certificate of the CA: connected (TestClient panics otherwise).
    let child = device(&broker, &pki, "child1").await;
    child.subscribe("te/device/child1/#").await;
    child
        .publish("te/device/child1///m/env", "{\"t\":1}", false)
        .await;
    child
        .expect_payload("te/device/child1///m/env", "{\"t\":1}")
        .await;

    // Without a certificate, and with one from another CA: refused before any CONNACK.
    for (what, client_auth) in [
        ("no client certificate", None),
        (
            "a certificate of another CA",
            Some((pki.other_client_cert(), pki.other_client_key())),
        ),
    ] {
        let outcome = first_event(tls_options(&broker, &pki, client_auth)).await;
        assert!(
            outcome.is_err(),
            "a client with {what} was admitted: {outcome:?}"
        );
    }
}

/// Connects with `options` and returns the first thing the event loop reports: `Ok` with a
/// CONNACK, or the connection error. Panics if neither comes within 10 s.
async fn first_event(options: MqttOptions) -> Result<String, String> {
    let (_client, mut eventloop) = AsyncClient::new(options, 10);
    let outcome = tokio::time::timeout(WAIT, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => return Ok(format!("{ack:?}")),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    outcome.unwrap_or_else(|_| panic!("no CONNACK nor error within {WAIT:?}"))
}

#[tokio::test]
async fn the_acl_example_confines_a_child_device_to_its_own_topics() {
    let pki = Pki::generate();
    let run = run_dir(Some(&pki));
    let broker = Broker::start_from_conf(1, &shipped_conf(run.path(), true)).await;

    // The agent as `make run` connects it: anonymous, on the loopback listener.
    let agent = TestClient::connect(broker.port()).await;
    agent.subscribe("te/#").await;
    // The agent as a TLS client (user edge-agent), and two children.
    let agent_tls = device(&broker, &pki, "edge-agent").await;
    let child1 = device(&broker, &pki, "child1").await;
    child1.subscribe("te/#").await;
    let child2 = device(&broker, &pki, "child2").await;
    child2.subscribe("te/#").await;

    // child1 under its own topics: delivered, to the agent and back to itself.
    child1
        .publish("te/device/child1//", r#"{"@type":"child-device"}"#, false)
        .await;
    // child1 forging child2's registration and a top-level topic: dropped (QoS 1 is still
    // acknowledged, and the connection kept), then a control message on its own topic, on the
    // same connection.
    child1
        .publish("te/device/child2//", r#"{"@type":"child-device"}"#, false)
        .await;
    child1
        .publish("te/device/main///m/env", "forged", false)
        .await;
    child1
        .publish("te/device/child1///m/control", "control", false)
        .await;

    let seen_by_agent = [
        next(&agent, "the agent").await,
        next(&agent, "the agent").await,
    ];
    assert_eq!(
        pairs(&seen_by_agent),
        msgs(&[
            ("te/device/child1//", r#"{"@type":"child-device"}"#),
            ("te/device/child1///m/control", "control"),
        ]),
        "the agent saw:\n{}",
        describe(&seen_by_agent)
    );
    // The test client reconnects and re-sends by itself, which would hide a broker that drops
    // the connection on a refused publication (mosquitto 2.0 with `max_queued_messages 0`).
    assert_eq!(
        connections(&broker, &child1),
        1,
        "the refused publications cost child1 its connection; log:\n{}",
        broker.log()
    );

    // Commands from the agent, anonymous and as user edge-agent: each child gets only its own.
    agent
        .publish("te/device/child2///cmd/restart/1", "for child2", false)
        .await;
    agent
        .publish("te/device/child1///cmd/restart/1", "for child1", false)
        .await;
    agent_tls
        .publish(
            "te/device/child2///cmd/restart/2",
            "for child2 (tls)",
            false,
        )
        .await;
    agent_tls
        .publish(
            "te/device/child1///cmd/restart/2",
            "for child1 (tls)",
            false,
        )
        .await;

    let mut seen_by_child1 = Vec::new();
    for _ in 0..4 {
        seen_by_child1.push(next(&child1, "child1").await);
    }
    assert_eq!(
        pairs(&seen_by_child1),
        msgs(&[
            ("te/device/child1//", r#"{"@type":"child-device"}"#),
            ("te/device/child1///m/control", "control"),
            ("te/device/child1///cmd/restart/1", "for child1"),
            ("te/device/child1///cmd/restart/2", "for child1 (tls)"),
        ]),
        "child1 saw:\n{}",
        describe(&seen_by_child1)
    );

    // child2 got none of child1's traffic, only its two commands, in order.
    let seen_by_child2 = [next(&child2, "child2").await, next(&child2, "child2").await];
    assert_eq!(
        pairs(&seen_by_child2),
        msgs(&[
            ("te/device/child2///cmd/restart/1", "for child2"),
            ("te/device/child2///cmd/restart/2", "for child2 (tls)"),
        ]),
        "child2 saw:\n{}",
        describe(&seen_by_child2)
    );

    // The agent saw all four commands (it reads everything), and nothing else.
    let mut commands = Vec::new();
    for _ in 0..4 {
        commands.push(next(&agent, "the agent").await);
    }
    assert_eq!(
        pairs(&commands),
        msgs(&[
            ("te/device/child2///cmd/restart/1", "for child2"),
            ("te/device/child1///cmd/restart/1", "for child1"),
            ("te/device/child2///cmd/restart/2", "for child2 (tls)"),
            ("te/device/child1///cmd/restart/2", "for child1 (tls)"),
        ]),
        "the agent saw:\n{}",
        describe(&commands)
    );
}

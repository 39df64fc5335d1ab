//! The secured broker connection (issue #2 "Running": "plain TCP or TLS (rustls; CA, client cert
//! and key from files), optional username/password"): `mqtt.tls.ca_file`, `cert_file` +
//! `key_file`, `mqtt.username` + `mqtt.password_file`, each against a real mosquitto configured
//! to demand it, and the agent's failure mode when the broker refuses it or cannot be trusted.
//! Certificates are made per test by `common::certs`; password files by `mosquitto_passwd`.
//!
//! A refused agent is shown to *stay* disconnected without sleeping: the broker's log records
//! each refusal, and once it has recorded the agent's retry (after the 1 s backoff), `/readyz`
//! must still say `disconnected` with the same reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::agent::TestAgent;
use common::certs::Pki;
use common::http;
use common::mosquitto::Broker;
use common::mqtt::TestClient;
use common::scenario::{get_json, wait_readiness};
use edge_agent::config::TlsConfig;
use rumqttc::{TlsConfiguration, Transport};
use serde_json::{json, Value};
use tempfile::TempDir;

/// Covers the first failed attempt and the retry after the agent's 1 s backoff.
const RETRY: Duration = Duration::from_secs(10);
const READY: Duration = Duration::from_secs(10);
const USER: &str = "gw";
const PASSWORD: &str = "s3cret-Pa55";

/// Client-side rustls (the agent's and the test client's) needs a process-wide crypto
/// provider; the binary installs it in `main`, in-process agents rely on the test.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Mosquitto lines making the harness's listener (the last `listener` of its config, so these
/// per-listener options apply to it) TLS-only with the server certificate of `pki`.
fn tls_listener(pki: &Pki, require_certificate: bool) -> Vec<String> {
    let mut lines = vec![
        format!("cafile {}", pki.ca().display()),
        format!("certfile {}", pki.server_cert().display()),
        format!("keyfile {}", pki.server_key().display()),
    ];
    if require_certificate {
        lines.push("require_certificate true".to_owned());
    }
    lines
}

async fn start_broker(lines: &[String]) -> Broker {
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    Broker::start_with(&lines).await
}

/// The agent's `mqtt.tls`: trust `ca`, and present the client certificate if `client_cert`.
fn agent_tls(pki: &Pki, ca: PathBuf, client_cert: bool) -> Option<TlsConfig> {
    Some(TlsConfig {
        ca_file: ca,
        cert_file: client_cert.then(|| pki.client_cert()),
        key_file: client_cert.then(|| pki.client_key()),
    })
}

/// A test client on the broker's TLS listener, trusting the test CA.
async fn tls_client(broker: &Broker, pki: &Pki, client_cert: bool) -> TestClient {
    let read = |path: PathBuf| std::fs::read(&path).expect("a generated PEM file");
    let mut options = TestClient::options(broker.port());
    options.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: read(pki.ca()),
        alpn: None,
        client_auth: client_cert.then(|| (read(pki.client_cert()), read(pki.client_key()))),
    }));
    TestClient::connect_with(options).await
}

/// A mosquitto password file in `dir` holding `USER` with `PASSWORD`.
fn mosquitto_password_file(dir: &Path) -> PathBuf {
    let path = dir.join("mosquitto.passwd");
    let output = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg("-c")
        .arg(&path)
        .args([USER, PASSWORD])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run mosquitto_passwd ({e}); install it: apt-get install -y mosquitto")
        });
    assert!(
        output.status.success(),
        "mosquitto_passwd failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    path
}

/// A broker on the plain listener that admits only `USER` with `PASSWORD`.
async fn password_broker(dir: &TempDir) -> Broker {
    let passwd = mosquitto_password_file(dir.path());
    start_broker(&[
        "allow_anonymous false".to_owned(),
        format!("password_file {}", passwd.display()),
    ])
    .await
}

/// The agent's `mqtt.password_file` with exactly `contents`.
fn agent_password_file(dir: &TempDir, contents: &str) -> PathBuf {
    let path = dir.path().join("agent.password");
    std::fs::write(&path, contents).expect("cannot write the agent's password file");
    path
}

/// Waits until `/readyz` answers 200 `{"status":"ready"}`; on timeout, the panic shows the last
/// answer and its reason.
async fn assert_ready(agent: &TestAgent) {
    let readyz = wait_readiness(agent, "ready", READY).await;
    assert_eq!(readyz, json!({"status":"ready"}));
}

/// A child registered by a test client is listed over HTTP: the agent receives over this
/// connection, and the registration is the only way `child1` can be known.
async fn assert_registration_is_listed(agent: &TestAgent, client: &TestClient) {
    client
        .publish("te/device/child1//", r#"{"@type":"child-device"}"#, true)
        .await;
    let child = http::get_until(&agent.url("/te/v1/entities/device/child1//"), |r| {
        r.status == 200
    })
    .await;
    assert_eq!(
        child.json(),
        json!({"@topic-id":"device/child1//","@parent":"device/main//","@type":"child-device"})
    );
    assert_eq!(
        get_json(&agent.url("/te/v1/entities")).await,
        (
            200,
            json!([
                {"@topic-id":"device/main//","@type":"device"},
                {"@topic-id":"device/child1//","@parent":"device/main//","@type":"child-device"},
                {"@topic-id":"device/main/service/edge-agent","@parent":"device/main//","@type":"service"}
            ])
        )
    );
}

/// Waits until `/readyz` reports a failed connection attempt (503 `disconnected` with the
/// attempt's error, not just the initial "connecting to …"), then until the broker has logged
/// `refusal` twice, i.e. the agent retried and was refused again; asserts the agent is still
/// disconnected for the same reason and returns that reason's error part.
async fn assert_stays_disconnected(agent: &TestAgent, broker: &Broker, refusal: &str) -> String {
    let prefix = format!("connecting to {}: ", broker.addr());
    let readyz_url = agent.url("/readyz");
    let failed = http::get_until(&readyz_url, |r| {
        let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
        body["reason"]
            .as_str()
            .is_some_and(|reason| reason.starts_with(&prefix))
    })
    .await;
    let reason = failed.json()["reason"]
        .as_str()
        .expect("a reason")
        .to_owned();
    assert_eq!(
        (failed.status, failed.json()),
        (503, json!({"status":"disconnected","reason":reason}))
    );

    common::wait_until(
        &format!("the broker to log {refusal:?} twice"),
        RETRY,
        || {
            let count = broker.log().matches(refusal).count();
            async move { count >= 2 }
        },
    )
    .await;
    assert_eq!(
        get_json(&readyz_url).await,
        (503, json!({"status":"disconnected","reason":reason})),
        "broker log:\n{}",
        broker.log()
    );
    reason[prefix.len()..].to_owned()
}

/// A refused agent still serves the twin it has: on a first start, the main device and its own
/// service.
async fn assert_serves_its_twin(agent: &TestAgent) {
    assert_eq!(
        get_json(&agent.url("/te/v1/entities")).await,
        (
            200,
            json!([
                {"@topic-id":"device/main//","@type":"device"},
                {"@topic-id":"device/main/service/edge-agent","@parent":"device/main//","@type":"service"}
            ])
        )
    );
    assert_eq!(
        get_json(&agent.url("/healthz")).await,
        (200, json!({"status":"alive"}))
    );
}

#[tokio::test]
async fn an_agent_trusting_the_brokers_ca_connects_over_tls() {
    install_crypto_provider();
    let pki = Pki::generate();
    let broker = start_broker(&tls_listener(&pki, false)).await;
    let agent = TestAgent::launch_with(&broker, |cfg| {
        cfg.mqtt.tls = agent_tls(&pki, pki.ca(), false);
    })
    .await;
    assert_ready(&agent).await;

    let client = tls_client(&broker, &pki, false).await;
    assert_registration_is_listed(&agent, &client).await;
}

#[tokio::test]
async fn a_client_certificate_admits_the_agent_to_a_broker_that_requires_one() {
    install_crypto_provider();
    let pki = Pki::generate();
    let broker = start_broker(&tls_listener(&pki, true)).await;
    let agent = TestAgent::launch_with(&broker, |cfg| {
        cfg.mqtt.tls = agent_tls(&pki, pki.ca(), true);
    })
    .await;
    assert_ready(&agent).await;

    let client = tls_client(&broker, &pki, true).await;
    assert_registration_is_listed(&agent, &client).await;
}

#[tokio::test]
async fn without_a_client_certificate_the_agent_stays_disconnected_and_serves_its_twin() {
    install_crypto_provider();
    let pki = Pki::generate();
    let broker = start_broker(&tls_listener(&pki, true)).await;
    let agent = TestAgent::launch_with(&broker, |cfg| {
        cfg.mqtt.tls = agent_tls(&pki, pki.ca(), false);
    })
    .await;

    let error =
        assert_stays_disconnected(&agent, &broker, "peer did not return a certificate").await;
    assert!(
        error.contains("CertificateRequired"),
        "the reason names the missing certificate: {error}"
    );
    assert_serves_its_twin(&agent).await;
}

#[tokio::test]
async fn a_broker_certificate_from_an_untrusted_ca_keeps_the_agent_disconnected() {
    install_crypto_provider();
    let pki = Pki::generate();
    let broker = start_broker(&tls_listener(&pki, false)).await;
    let agent = TestAgent::launch_with(&broker, |cfg| {
        cfg.mqtt.tls = agent_tls(&pki, pki.other_ca(), false);
    })
    .await;

    let error = assert_stays_disconnected(&agent, &broker, "tlsv1 alert unknown ca").await;
    assert_eq!(error, "TLS: I/O: invalid peer certificate: UnknownIssuer");
    assert_serves_its_twin(&agent).await;
}

#[tokio::test]
async fn the_password_from_the_password_file_admits_the_agent() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let broker = password_broker(&dir).await;
    let password_file = agent_password_file(&dir, PASSWORD);
    let agent = TestAgent::launch_with(&broker, |cfg| {
        cfg.mqtt.username = Some(USER.to_owned());
        cfg.mqtt.password_file = Some(password_file);
    })
    .await;
    assert_ready(&agent).await;
    let log = broker.log();
    assert!(
        log.lines()
            .any(|l| l.contains("as edge-agent (") && l.ends_with(&format!("u'{USER}')."))),
        "the broker admitted the agent as {USER}; log:\n{log}"
    );
}

#[tokio::test]
async fn a_trailing_newline_in_the_password_file_is_not_part_of_the_password() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let broker = password_broker(&dir).await;
    let password_file = agent_password_file(&dir, &format!("{PASSWORD}\n"));
    let agent = TestAgent::launch_with(&broker, |cfg| {
        cfg.mqtt.username = Some(USER.to_owned());
        cfg.mqtt.password_file = Some(password_file);
    })
    .await;
    assert_ready(&agent).await;
}

#[tokio::test]
async fn a_wrong_password_keeps_the_agent_disconnected_with_the_refusal_as_reason() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let broker = password_broker(&dir).await;
    let password_file = agent_password_file(&dir, "not-the-password");
    let agent = TestAgent::launch_with(&broker, |cfg| {
        cfg.mqtt.username = Some(USER.to_owned());
        cfg.mqtt.password_file = Some(password_file);
    })
    .await;

    let error = assert_stays_disconnected(&agent, &broker, "disconnected, not authorised.").await;
    assert_eq!(error, "Connection refused, return code: `NotAuthorized`");
    assert_serves_its_twin(&agent).await;
}

//! HTTPS (issue #3 "TLS"): with `http.tls.cert_file` + `key_file` the whole API is served over
//! TLS only; with `http.tls.client_ca_file` a client certificate from that CA is required. A
//! real mosquitto and the agent in-process; certificates made per test by `common::certs`;
//! clients trust only the CA they are given. Bad settings stop `app::start` with an error that
//! names the file, before any socket is bound.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::agent::{self, TestAgent};
use common::certs::Pki;
use common::http::{self, assert_json, ClientTls};
use common::mosquitto::Broker;
use edge_agent::app;
use edge_agent::config::{Config, HttpTlsConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The agent's `http.tls` with the server certificate of `pki`, requiring client certificates
/// from `client_ca` when given.
fn server_tls(pki: &Pki, client_ca: Option<PathBuf>) -> Option<HttpTlsConfig> {
    Some(HttpTlsConfig {
        cert_file: pki.server_cert(),
        key_file: pki.server_key(),
        client_ca_file: client_ca,
    })
}

/// An HTTPS agent on `broker` that `client` can reach (readiness is waited for with it).
async fn https_agent(broker: &Broker, pki: &Pki, client: ClientTls, client_ca: bool) -> TestAgent {
    let client_ca = client_ca.then(|| pki.ca());
    TestAgent::start_https(broker, client, |c| c.http.tls = server_tls(pki, client_ca)).await
}

/// The causes of an error, joined by ": " (for a request: without the URL of the top level).
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = Vec::new();
    let mut source = error.source();
    while let Some(e) = source {
        text.push(e.to_string());
        source = e.source();
    }
    text.join(": ")
}

/// Sends `GET /healthz` with `client` and returns the transport error it must end with.
async fn refused(agent: &TestAgent, client: reqwest::Client) -> String {
    let url = agent.url("/healthz");
    match http::try_send(client.get(&url)).await {
        Ok(response) => panic!("GET {url} was answered: {response:?}"),
        Err(error) => {
            assert!(
                !error.is_timeout(),
                "refused at once, not timed out: {error}"
            );
            causes(&error)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trusting_the_ca_gets_the_whole_api_over_https() {
    let pki = Pki::generate();
    let broker = Broker::start().await;
    // Readiness is waited for over HTTPS: `/readyz` is served there too.
    let agent = https_agent(&broker, &pki, ClientTls::trusting(pki.ca()), false).await;
    assert!(agent.url("/").starts_with("https://127.0.0.1:"));
    let client = ClientTls::trusting(pki.ca()).client();

    let healthz = http::send(client.get(agent.url("/healthz"))).await;
    assert_json(&healthz, 200, &json!({"status":"alive"}));
    assert_eq!(healthz.text(), r#"{"status":"alive"}"#);
    let readyz = http::send(client.get(agent.url("/readyz"))).await;
    assert_json(&readyz, 200, &json!({"status":"ready"}));
    let main = http::send(client.get(agent.url("/te/v1/entities/device/main//"))).await;
    assert_json(
        &main,
        200,
        &json!({"@topic-id":"device/main//","@type":"device"}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_the_https_port_gets_no_http_answer() {
    let pki = Pki::generate();
    let broker = Broker::start().await;
    let agent = https_agent(&broker, &pki, ClientTls::trusting(pki.ca()), false).await;
    let plain_url = agent.url("/healthz").replacen("https://", "http://", 1);

    let error = http::try_send(http::client().get(&plain_url))
        .await
        .expect_err("plain HTTP is not answered");
    // hyper reports the TLS alert it read as a response that is not HTTP, as a failed or a
    // cancelled send depending on timing.
    let error = causes(&error);
    assert!(error.ends_with("invalid HTTP version parsed"), "{error}");

    // On the wire: the server reads the request as a broken TLS record, answers with one TLS
    // record (content type 21: alert; TLS 1.2 framing; fatal decode_error) and closes.
    let mut stream = TcpStream::connect(agent.http_addr())
        .await
        .expect("the agent accepts TCP connections");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("the request is written");
    let mut answer = Vec::new();
    tokio::time::timeout(ANSWER_TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("the agent closes the connection within 10 s")
        .expect("the answer is read");
    assert_eq!(answer, [21, 3, 3, 0, 2, 2, 50]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_trust_the_ca_is_refused() {
    let pki = Pki::generate();
    let broker = Broker::start().await;
    let agent = https_agent(&broker, &pki, ClientTls::trusting(pki.ca()), false).await;

    let error = refused(&agent, ClientTls::trusting(pki.other_ca()).client()).await;
    assert_eq!(
        error,
        "client error (Connect): invalid peer certificate: UnknownIssuer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_does_not_hold_up_other_connections() {
    let pki = Pki::generate();
    let broker = Broker::start().await;
    let agent = https_agent(&broker, &pki, ClientTls::trusting(pki.ca()), false).await;

    // Connected, never says hello: its handshake waits in its own task.
    let _silent = TcpStream::connect(agent.http_addr())
        .await
        .expect("the agent accepts TCP connections");
    let client = ClientTls::trusting(pki.ca()).client();
    let healthz = http::send(client.get(agent.url("/healthz"))).await;
    assert_json(&healthz, 200, &json!({"status":"alive"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_only_clients_with_a_certificate_from_it_are_served() {
    let pki = Pki::generate();
    let broker = Broker::start().await;
    let with_cert =
        ClientTls::trusting(pki.ca()).with_identity(pki.client_cert(), pki.client_key());
    let agent = https_agent(&broker, &pki, with_cert.clone(), true).await;

    let healthz = http::send(with_cert.client().get(agent.url("/healthz"))).await;
    assert_json(&healthz, 200, &json!({"status":"alive"}));

    // TLS 1.3: the client learns of the refusal when it sends the request (hyper reports it as
    // a failed send or a cancelled one, depending on timing); under load the server's close can
    // overtake its alert, and the client then sees the reset instead.
    let error = refused(&agent, ClientTls::trusting(pki.ca()).client()).await;
    assert_refused_by_server(&error, "CertificateRequired");

    let other = ClientTls::trusting(pki.ca())
        .with_identity(pki.other_client_cert(), pki.other_client_key());
    let error = refused(&agent, other.client()).await;
    assert_refused_by_server(&error, "UnknownCA");
}

/// Asserts a request refused by the server after the handshake: its TLS alert, or, when the
/// server's close overtook the alert under load, the closed connection (which hyper may also
/// report as a request cancelled because the connection closed before it could be sent).
#[track_caller]
fn assert_refused_by_server(error: &str, alert: &str) {
    assert!(
        error.ends_with(&format!("connection error: received fatal alert: {alert}"))
            || error.contains("Connection reset by peer")
            || error.contains("Broken pipe")
            || error.contains("connection closed before message completed")
            || error.contains("operation was canceled: connection was not ready"),
        "{error}"
    );
}

/// The error chain of `app::start` with `config`, which must fail.
async fn start_error(config: Config) -> String {
    match app::start(config).await {
        Ok(agent) => {
            agent.abort();
            panic!("the agent started");
        }
        Err(error) => format!("{error}: {}", causes(&error)),
    }
}

/// A config whose `http.tls` is `tls`; no broker is needed, the start fails before MQTT.
fn config_with(dir: &Path, tls: HttpTlsConfig) -> Config {
    let mut config = agent::config(1, dir);
    config.http.tls = Some(tls);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_https_settings_stop_the_start_with_the_file_named() {
    let pki = Pki::generate();
    let dir = tempfile::tempdir().expect("a temp dir");
    let missing = dir.path().join("missing.pem");
    let tls = |cert: PathBuf, key: PathBuf, client_ca: Option<PathBuf>| HttpTlsConfig {
        cert_file: cert,
        key_file: key,
        client_ca_file: client_ca,
    };
    let cases = [
        (
            tls(missing.clone(), pki.server_key(), None),
            format!(
                "cannot read certificate file {}: No such file or directory (os error 2)",
                missing.display()
            ),
        ),
        (
            tls(pki.server_cert(), missing.clone(), None),
            format!(
                "cannot read key file {}: No such file or directory (os error 2)",
                missing.display()
            ),
        ),
        (
            tls(pki.server_key(), pki.server_key(), None),
            format!(
                "certificate file {} holds no PEM certificate",
                pki.server_key().display()
            ),
        ),
        (
            tls(pki.server_cert(), pki.server_cert(), None),
            format!(
                "key file {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): no items found",
                pki.server_cert().display()
            ),
        ),
        (
            tls(pki.server_cert(), pki.client_key(), None),
            format!(
                "key file {} does not match the certificate in {}",
                pki.client_key().display(),
                pki.server_cert().display()
            ),
        ),
        (
            tls(pki.server_cert(), pki.server_key(), Some(missing.clone())),
            format!(
                "cannot read client CA file {}: No such file or directory (os error 2)",
                missing.display()
            ),
        ),
        (
            tls(pki.server_cert(), pki.server_key(), Some(pki.client_key())),
            format!(
                "client CA file {} holds no PEM certificate",
                pki.client_key().display()
            ),
        ),
    ];
    for (settings, expected) in cases {
        let error = start_error(config_with(dir.path(), settings)).await;
        assert_eq!(
            error,
            format!("invalid HTTPS settings (http.tls): {expected}")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_settings_are_checked_before_the_listener_is_bound() {
    let pki = Pki::generate();
    let dir = tempfile::tempdir().expect("a temp dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let mut config = config_with(
        dir.path(),
        HttpTlsConfig {
            cert_file: pki.server_cert(),
            key_file: pki.client_key(),
            client_ca_file: None,
        },
    );
    config.http.bind = taken.local_addr().expect("a bound address");

    let error = start_error(config).await;
    assert_eq!(
        error,
        format!(
            "invalid HTTPS settings (http.tls): key file {} does not match the certificate in {}",
            pki.client_key().display(),
            pki.server_cert().display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_move_over_https_with_a_client_certificate_by_api_and_by_cli() {
    let pki = Pki::generate();
    let broker = Broker::start().await;
    let with_cert =
        ClientTls::trusting(pki.ca()).with_identity(pki.client_cert(), pki.client_key());
    let agent = https_agent(&broker, &pki, with_cert.clone(), true).await;
    assert!(agent.url("/").starts_with("https://127.0.0.1:"));

    let client = with_cert.client();
    let url = agent.url("/te/v1/files/child1/firmware_update/fw.bin");
    let res = http::send(client.put(&url).body(vec![7u8; 100_000])).await;
    assert_eq!((res.status, res.text()), (201, ""));
    let res = http::send(client.get(&url).header("range", "bytes=99990-")).await;
    assert_eq!((res.status, res.body.as_ref()), (206, &[7u8; 10][..]));

    // The CLI, trusting the CA and presenting the client certificate.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("fw.bin");
    let base = agent.url("");
    let tls_args = |args: &[&str]| -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
        for (flag, path) in [
            ("--ca-file", pki.ca()),
            ("--cert-file", pki.client_cert()),
            ("--key-file", pki.client_key()),
        ] {
            v.push(flag.into());
            v.push(path.into_os_string());
        }
        v.push("--url".into());
        v.push(base.clone().into());
        v
    };
    let got = common::process::run(
        &tls_args(&[
            "files",
            "get",
            "child1/firmware_update/fw.bin",
            &local.to_string_lossy(),
        ]),
        &[],
    )
    .await;
    assert_eq!(got.code, Some(0), "{}", got.stderr);
    assert_eq!(std::fs::read(&local).unwrap(), vec![7u8; 100_000]);
    let rm = common::process::run(
        &tls_args(&["files", "rm", "child1/firmware_update/fw.bin"]),
        &[],
    )
    .await;
    assert_eq!(rm.code, Some(0), "{}", rm.stderr);
    assert_eq!(http::send(client.get(&url)).await.status, 404);

    // Without the client certificate the CLI is refused, with a message and a failure code.
    let refused = common::process::run(
        &[
            "files",
            "get",
            "child1/x",
            &local.to_string_lossy(),
            "--ca-file",
            &pki.ca().to_string_lossy(),
            "--url",
            &base,
        ],
        &[],
    )
    .await;
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    assert!(
        refused.stderr.starts_with("edge-agent: "),
        "{}",
        refused.stderr
    );
}

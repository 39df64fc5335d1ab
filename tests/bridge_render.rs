//! Golden files of the bridge renderer (issue #4): one per cloud type and auth method, and one
//! for a mosquitto older than 2.0. Each case is a YAML config rendered with fixed facts (CA kind,
//! password, version), so the files are exact and need no real certificates; the checks of the
//! real files are covered by tests/bridge_cli.rs.
//!
//! `UPDATE_GOLDEN=1 cargo test --test bridge_render` rewrites the files; review the diff.

use std::path::{Path, PathBuf};

use edge_agent::bridge::render::{render, Ca, Context};
use edge_agent::bridge::rules::rules;
use edge_agent::bridge::version::Version;
use edge_agent::config::{self, CloudAuth};

const CONFIG_PATH: &str = "/etc/edge-agent/edge-agent.yaml";

fn golden(case: &str, cloud_yaml: &str, version: Version) {
    let text = format!("device: {{id: gw-001}}\nbridge:\n  clouds:\n    - {cloud_yaml}\n");
    let config = config::from_yaml_str(&text, &[]).expect("a valid case");
    let cloud = &config.bridge.clouds[0];
    let ca = cloud.ca.clone().map(|path| match path.extension() {
        Some(_) => Ca::File(path),
        None => Ca::Dir(path),
    });
    let password = matches!(cloud.auth, CloudAuth::Password { .. }).then_some("s3cret-Pa55");
    let ctx = Context {
        config_path: Path::new(CONFIG_PATH),
        version,
        topic_root: &config.mqtt.topic_root,
        device: "main",
        ca,
        password,
    };
    let rendered = render(cloud, &rules(cloud, &config.mqtt.topic_root), &ctx);
    assert_eq!(rendered.keys.len(), rendered.text.lines().count());
    assert_eq!(rendered.secret, password.is_some());
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bridge")
        .join(format!("{case}.conf"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &rendered.text).expect("cannot write the golden file");
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(
        rendered.text,
        expected,
        "{case} differs from {}",
        path.display()
    );
}

const NOW: Version = Version::new(2, 0, 11);

#[test]
fn cumulocity_with_a_device_certificate() {
    golden(
        "c8y-certificate",
        "{name: c8y, type: c8y, url: example.cumulocity.com, auth: {cert_file: /etc/edge-agent/certs/device.pem, key_file: /etc/edge-agent/certs/device.key}}",
        NOW,
    );
}

#[test]
fn cumulocity_with_a_password() {
    golden(
        "c8y-password",
        "{name: c8y, type: c8y, url: 'example.cumulocity.com:1883', ca: /etc/edge-agent/ca.pem, auth: {username: t123/device_gw-001, password_file: /etc/edge-agent/c8y.password}}",
        NOW,
    );
}

#[test]
fn cumulocity_on_mosquitto_before_2_0_has_no_local_cleansession() {
    golden(
        "c8y-mosquitto-1.6",
        "{name: c8y, type: c8y, url: example.cumulocity.com, auth: {cert_file: /etc/edge-agent/certs/device.pem, key_file: /etc/edge-agent/certs/device.key}}",
        Version::new(1, 6, 9),
    );
}

#[test]
fn azure_with_a_device_certificate() {
    golden(
        "azure-certificate",
        "{name: az, type: azure, url: myhub.azure-devices.net, auth: {cert_file: /etc/edge-agent/certs/device.pem, key_file: /etc/edge-agent/certs/device.key}}",
        NOW,
    );
}

#[test]
fn azure_with_a_sas_token() {
    golden(
        "azure-sas-token",
        "{name: az, type: azure, url: myhub.azure-devices.net, device_id: dev-7, auth: {password_file: /etc/edge-agent/azure.sas}}",
        NOW,
    );
}

#[test]
fn aws_with_a_device_certificate() {
    golden(
        "aws-certificate",
        "{name: aws, type: aws, url: 'abc-ats.iot.eu-west-1.amazonaws.com', ca: /etc/edge-agent/AmazonRootCA1.pem, auth: {cert_file: /etc/edge-agent/certs/device.pem, key_file: /etc/edge-agent/certs/device.key}, keepalive: 30s}",
        NOW,
    );
}

#[test]
fn any_mqtt_broker_with_a_certificate_and_extra_rules() {
    golden(
        "mqtt-certificate",
        "{name: hub, type: mqtt, url: '10.0.0.5:8883', ca: /etc/edge-agent/hub-ca.pem, auth: {cert_file: /etc/edge-agent/certs/device.pem, key_file: /etc/edge-agent/certs/device.key}, topics: [{pattern: 'extra/#', direction: out, qos: 0}, {pattern: '', direction: in, local_prefix: hub/config, remote_prefix: fleet/config}], options: {restart_timeout: '5 60', bridge_protocol_version: mqttv311}}",
        NOW,
    );
}

#[test]
fn any_mqtt_broker_with_a_password() {
    golden(
        "mqtt-password",
        "{name: hub, type: mqtt, url: 'broker.example.org', ca: /etc/ssl/certs, auth: {username: gw-001, password_file: /etc/edge-agent/hub.password}, remote_prefix: 'site-4/gw-001/', clean_session: true}",
        NOW,
    );
}

#[test]
fn any_mqtt_broker_over_plain_tcp_without_auth() {
    golden(
        "mqtt-plain",
        "{name: lab, type: mqtt, url: '192.168.1.2:1883'}",
        NOW,
    );
}

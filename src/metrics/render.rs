//! One scrape's figures ([`Snapshot`]) as OpenMetrics text, through prometheus-client: a fresh
//! registry per scrape, filled from the snapshot, so that the owners of the figures (the twin,
//! the file store, the operations) keep plain counters and never share a registry. Pure.
//!
//! Every label takes values from a fixed set or from the configuration (bridge names): none
//! carries a device, a topic or a path.

use std::collections::BTreeMap;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeMetric;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::TypedMetric;
use prometheus_client::registry::{Registry, Unit};

use crate::files::counters::Snapshot as FileFigures;
use crate::ops::store::OpsStats;
use crate::twin::stats::TwinStats;
use crate::twin::CHANNEL_KINDS;

type Labels = Vec<(&'static str, String)>;

/// Everything one scrape shows; a part whose owner did not answer is `None` and left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub twin: Option<TwinStats>,
    pub files: FileFigures,
    pub ops: Option<OpsStats>,
    /// Connected to the broker (the connection is up, whether or not the sync is done).
    pub connected: bool,
    /// Successful connections to the broker since start.
    pub connects: u64,
    /// (route group, status code) → responses.
    pub http: BTreeMap<(&'static str, u16), u64>,
    /// Each configured cloud's bridge: `Some(up)` once its health is known.
    pub bridges: Vec<(String, Option<bool>)>,
    /// Clients following `/te/v1/changes`.
    pub sse_clients: u64,
    /// Resident memory, in bytes, and open file descriptors; `None` where /proc is unreadable.
    pub rss_bytes: Option<u64>,
    pub open_fds: Option<u64>,
}

/// The OpenMetrics text of `snapshot`, names prefixed `edge_agent_`, ending with `# EOF`.
pub fn render(snapshot: &Snapshot) -> String {
    let mut registry = Registry::with_prefix("edge_agent");
    mqtt(&mut registry, snapshot);
    if let Some(twin) = &snapshot.twin {
        twin_figures(&mut registry, twin);
    }
    files(&mut registry, &snapshot.files);
    http(&mut registry, snapshot);
    if let Some(ops) = &snapshot.ops {
        operations(&mut registry, ops);
    }
    bridges(&mut registry, &snapshot.bridges);
    process(&mut registry, snapshot);
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let metric: Counter = Counter::default();
    metric.inc_by(value);
    registry.register(name, help, metric);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let metric: Gauge = Gauge::default();
    metric.set(value);
    registry.register(name, help, metric);
}

fn counters(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Labels, u64)>,
) {
    family(registry, name, help, values, |c: &Counter, v| {
        c.inc_by(v);
    });
}

fn gauges(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Labels, i64)>,
) {
    family(registry, name, help, values, |g: &Gauge, v| {
        g.set(v);
    });
}

/// A labelled family of metrics `M`, each given its value by `set`.
fn family<M, V>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Labels, V)>,
    set: impl Fn(&M, V),
) where
    M: Default + EncodeMetric + TypedMetric + Send + Sync + std::fmt::Debug + 'static,
{
    let family = Family::<Labels, M>::default();
    for (labels, value) in values {
        set(&family.get_or_create(&labels), value);
    }
    registry.register(name, help, family);
}

fn label(name: &'static str, value: &str) -> Labels {
    vec![(name, value.to_owned())]
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn mqtt(registry: &mut Registry, s: &Snapshot) {
    gauge(
        registry,
        "mqtt_connected",
        "1 while connected to the MQTT broker",
        i64::from(s.connected),
    );
    counter(
        registry,
        "mqtt_reconnects",
        "Connections to the MQTT broker after the first",
        s.connects.saturating_sub(1),
    );
}

fn twin_figures(registry: &mut Registry, twin: &TwinStats) {
    let c = &twin.counters;
    counters(
        registry,
        "mqtt_messages_received",
        "MQTT messages received on entity topics, by channel",
        CHANNEL_KINDS
            .iter()
            .zip(c.received)
            .map(|(k, v)| (label("channel", k), v)),
    );
    let mut rejected: Vec<(Labels, u64)> = vec![
        (label("reason", "ignored_topic"), c.mqtt_ignored_topic),
        (label("reason", "oversize"), c.mqtt_dropped_oversize),
        (
            label("reason", "unknown_entity"),
            c.data_dropped_unknown_entity,
        ),
        (label("reason", "pending_overflow"), c.pending_dropped),
        (
            label("reason", "sync_window_overflow"),
            c.window_held_dropped,
        ),
        (label("reason", "config_ignored"), c.config_ignored),
    ];
    let invalid = c.registration_rejected.values().sum::<u64>();
    rejected.push((label("reason", "invalid_registration"), invalid));
    for (channel, n) in &c.payload_rejected {
        rejected.push((label("reason", &format!("invalid_{channel}")), *n));
    }
    counters(
        registry,
        "mqtt_messages_rejected",
        "MQTT messages rejected or dropped, by reason",
        rejected,
    );
    counter(
        registry,
        "twin_changes",
        "Changes applied to the twin's entity records",
        c.changes,
    );
    counters(
        registry,
        "commands_ended",
        "Commands seen on the bus going from running to a final status, whoever requested them, by operation and final status",
        by_operation(&c.commands_ended),
    );
    gauges(
        registry,
        "entities",
        "Registered entities, by type",
        ["device", "child-device", "service"].into_iter().map(|t| {
            let n = twin.entities.get(t).copied().unwrap_or(0);
            (label("type", t), signed(n))
        }),
    );
}

fn files(registry: &mut Registry, f: &FileFigures) {
    counter(
        registry,
        "file_transfer_received_bytes",
        "Bytes of file uploads received",
        f.bytes_in,
    );
    counter(
        registry,
        "file_transfer_sent_bytes",
        "Bytes of file downloads sent",
        f.bytes_out,
    );
    gauges(
        registry,
        "file_transfers_in_flight",
        "File transfers in progress, by direction",
        [
            (label("direction", "upload"), signed(f.uploads_in_flight)),
            (
                label("direction", "download"),
                signed(f.downloads_in_flight),
            ),
        ],
    );
    counters(
        registry,
        "file_transfers",
        "File transfers completed, by direction",
        [
            (label("direction", "upload"), f.uploads),
            (label("direction", "download"), f.downloads),
        ],
    );
    counters(
        registry,
        "file_transfer_refused",
        "File transfer requests refused, by reason",
        f.refused.iter().map(|(k, v)| (label("reason", k), *v)),
    );
}

fn http(registry: &mut Registry, s: &Snapshot) {
    gauge(
        registry,
        "sse_clients",
        "Clients following the change stream (/te/v1/changes)",
        i64::try_from(s.sse_clients).unwrap_or(i64::MAX),
    );
    counters(
        registry,
        "http_responses",
        "HTTP responses, by route group and status code",
        s.http.iter().map(|((route, status), n)| {
            (
                vec![
                    ("route", (*route).to_owned()),
                    ("status", status.to_string()),
                ],
                *n,
            )
        }),
    );
}

/// (operation label, status label) → count, as labelled values.
fn by_operation<'a>(
    counts: &'a BTreeMap<(&'static str, &'static str), u64>,
) -> impl Iterator<Item = (Labels, u64)> + 'a {
    counts.iter().map(|((op, status), n)| {
        (
            vec![
                ("operation", (*op).to_owned()),
                ("status", (*status).to_owned()),
            ],
            *n,
        )
    })
}

fn operations(registry: &mut Registry, ops: &OpsStats) {
    counters(
        registry,
        "operations_ended",
        "Operations on child devices that ended, by operation and final status",
        by_operation(&ops.ended),
    );
    gauges(
        registry,
        "operations",
        "Operations in the agent's table, by operation and status",
        by_operation(&ops.current).map(|(labels, n)| (labels, signed(n))),
    );
}

fn bridges(registry: &mut Registry, bridges: &[(String, Option<bool>)]) {
    gauges(
        registry,
        "bridge_up",
        "1 while a configured cloud bridge reports up, 0 when down; absent until it reports",
        bridges
            .iter()
            .filter_map(|(name, up)| up.map(|up| (label("bridge", name), i64::from(up)))),
    );
}

fn process(registry: &mut Registry, s: &Snapshot) {
    if let Some(rss) = s.rss_bytes {
        let metric: Gauge = Gauge::default();
        metric.set(signed(rss));
        registry.register_with_unit(
            "process_resident_memory",
            "Resident memory of the agent",
            Unit::Bytes,
            metric,
        );
    }
    if let Some(fds) = s.open_fds {
        gauge(
            registry,
            "process_open_fds",
            "Open file descriptors of the agent",
            signed(fds),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::store::Counters;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn every_figure_is_named_labelled_and_typed() {
        let mut counters = Counters::default();
        let measurement = CHANNEL_KINDS.iter().position(|k| *k == "measurement");
        counters.received[measurement.unwrap()] = 7;
        counters.payload_rejected.insert("measurement", 2);
        counters.changes = 9;
        counters.commands_ended.insert(("restart", "successful"), 5);
        let mut entities = BTreeMap::new();
        entities.insert("child-device", 3);
        entities.insert("device", 1);
        let mut ops = OpsStats::default();
        ops.ended.insert(("firmware_update", "successful"), 2);
        ops.current.insert(("other", "executing"), 1);
        let mut http = BTreeMap::new();
        http.insert(("files", 201), 4);
        let mut files = FileFigures {
            bytes_in: 100,
            bytes_out: 50,
            uploads: 1,
            ..Default::default()
        };
        files.refused.insert("quota", 1);
        let snapshot = Snapshot {
            twin: Some(TwinStats {
                counters,
                entities,
                bridges: Vec::new(),
            }),
            files,
            ops: Some(ops),
            connected: true,
            connects: 3,
            http,
            bridges: vec![("c8y".into(), Some(true)), ("az".into(), None)],
            sse_clients: 4,
            rss_bytes: Some(8 << 20),
            open_fds: Some(12),
        };
        let text = render(&snapshot);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE edge_agent_mqtt_messages_received counter\n"));
        let figures = lines(&text);
        for expected in [
            "edge_agent_mqtt_connected 1",
            "edge_agent_sse_clients 4",
            "edge_agent_commands_ended_total{operation=\"restart\",status=\"successful\"} 5",
            "edge_agent_mqtt_reconnects_total 2",
            "edge_agent_mqtt_messages_received_total{channel=\"measurement\"} 7",
            "edge_agent_mqtt_messages_rejected_total{reason=\"invalid_measurement\"} 2",
            "edge_agent_mqtt_messages_rejected_total{reason=\"oversize\"} 0",
            "edge_agent_twin_changes_total 9",
            "edge_agent_entities{type=\"device\"} 1",
            "edge_agent_entities{type=\"child-device\"} 3",
            "edge_agent_entities{type=\"service\"} 0",
            "edge_agent_file_transfer_received_bytes_total 100",
            "edge_agent_file_transfer_sent_bytes_total 50",
            "edge_agent_file_transfers_total{direction=\"upload\"} 1",
            "edge_agent_file_transfer_refused_total{reason=\"quota\"} 1",
            "edge_agent_http_responses_total{route=\"files\",status=\"201\"} 4",
            "edge_agent_operations_ended_total{operation=\"firmware_update\",status=\"successful\"} 2",
            "edge_agent_operations{operation=\"other\",status=\"executing\"} 1",
            "edge_agent_bridge_up{bridge=\"c8y\"} 1",
            "edge_agent_process_resident_memory_bytes 8388608",
            "edge_agent_process_open_fds 12",
        ] {
            assert!(figures.contains(&expected), "no {expected:?} in\n{text}");
        }
        assert!(!text.contains("bridge=\"az\""), "{text}");
    }

    #[test]
    fn parts_that_did_not_answer_are_left_out() {
        let text = render(&Snapshot::default());
        assert!(!text.contains("edge_agent_entities"), "{text}");
        assert!(!text.contains("edge_agent_operations"), "{text}");
        assert!(!text.contains("resident_memory"), "{text}");
        assert!(
            lines(&text).contains(&"edge_agent_mqtt_connected 0"),
            "{text}"
        );
    }
}

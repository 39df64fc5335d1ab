//! A cloud's topic rules: the defaults of its type (spec/bridges.md §3, and for type `mqtt` the
//! `te/` tree of issue #4), merged with the rules of its `topics`; and what the rules do with a
//! concrete topic (`bridge route`) or as a table (`bridge inspect`).
//!
//! Pure: a rule knows its exact `topic` line, and matching follows MQTT filter semantics on the
//! prefixed filters mosquitto builds (prefix and pattern joined as they are).

use std::fmt;

use crate::config::{CloudAuth, CloudConfig, CloudKind, Direction};

/// One `topic` line of a bridge file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// A topic filter, or empty: the rule then maps the topic `local_prefix` to `remote_prefix`.
    pub pattern: String,
    pub direction: Direction,
    pub qos: u8,
    pub local_prefix: String,
    pub remote_prefix: String,
    /// The YAML key that produced it: `topics[i]` for a configured rule, `type` for a default.
    pub key: String,
}

impl Rule {
    fn new(
        pattern: &str,
        direction: Direction,
        qos: u8,
        local_prefix: &str,
        remote_prefix: &str,
    ) -> Rule {
        Rule {
            pattern: pattern.to_owned(),
            direction,
            qos,
            local_prefix: local_prefix.to_owned(),
            remote_prefix: remote_prefix.to_owned(),
            key: "type".to_owned(),
        }
    }

    /// The filter this rule matches on the local broker.
    pub fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.pattern)
    }

    /// The filter this rule matches on the remote broker.
    pub fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.pattern)
    }

    /// The remote topic a local `topic` is published as, if this rule carries it out.
    pub fn route_out(&self, topic: &str) -> Option<String> {
        if !self.direction.goes_out() {
            return None;
        }
        map(
            topic,
            &self.local_prefix,
            &self.remote_prefix,
            &self.pattern,
        )
    }

    /// The local topic a remote `topic` is published as, if this rule carries it in.
    pub fn route_in(&self, topic: &str) -> Option<String> {
        if !self.direction.comes_in() {
            return None;
        }
        map(
            topic,
            &self.remote_prefix,
            &self.local_prefix,
            &self.pattern,
        )
    }
}

fn map(topic: &str, from: &str, to: &str, pattern: &str) -> Option<String> {
    if pattern.is_empty() {
        return (topic == from).then(|| to.to_owned());
    }
    let rest = topic.strip_prefix(from)?;
    matches(pattern, rest).then(|| format!("{to}{rest}"))
}

/// The `topic` line, with `""` for an empty pattern or prefix.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = |s: &str| {
            if s.is_empty() {
                "\"\"".to_owned()
            } else {
                s.to_owned()
            }
        };
        write!(
            f,
            "topic {} {} {} {} {}",
            token(&self.pattern),
            self.direction.as_str(),
            self.qos,
            token(&self.local_prefix),
            token(&self.remote_prefix)
        )
    }
}

/// MQTT filter matching (`+` one level, `#` the rest, including the parent level).
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut levels = topic.split('/');
    for part in filter.split('/') {
        match (part, levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (part, Some(level)) if part == level => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

/// True when `topic` holds a wildcard, so it names no single topic.
pub fn is_filter(topic: &str) -> bool {
    topic.contains(['+', '#'])
}

/// The rules of `cloud`: its type's defaults (unless `default_topics` is off), a default replaced
/// by the configured rule of the same pattern and direction (which keeps the default's prefixes
/// unless it gives its own), then the other configured rules in order. `topic_root` is the local
/// root of the `te/` tree (`mqtt.topic_root`).
pub fn rules(cloud: &CloudConfig, topic_root: &str) -> Vec<Rule> {
    let defaults = if cloud.default_topics {
        default_rules(cloud, topic_root)
    } else {
        Vec::new()
    };
    let mut replaced = vec![false; cloud.topics.len()];
    let mut rules: Vec<Rule> = defaults
        .into_iter()
        .map(|default| {
            let found = cloud
                .topics
                .iter()
                .position(|t| t.pattern == default.pattern && t.direction == default.direction);
            match found {
                None => default,
                Some(i) => {
                    replaced[i] = true;
                    configured(cloud, i, &default.local_prefix, &default.remote_prefix)
                }
            }
        })
        .collect();
    for (i, _) in replaced.iter().enumerate().filter(|(_, r)| !**r) {
        rules.push(configured(
            cloud,
            i,
            &cloud.local_prefix,
            &cloud.remote_prefix,
        ));
    }
    rules
}

/// Rule `i` of `topics`, its missing prefixes taken from those given.
fn configured(cloud: &CloudConfig, i: usize, local: &str, remote: &str) -> Rule {
    let t = &cloud.topics[i];
    Rule {
        pattern: t.pattern.clone(),
        direction: t.direction,
        qos: t.qos,
        local_prefix: t.local_prefix.clone().unwrap_or_else(|| local.to_owned()),
        remote_prefix: t.remote_prefix.clone().unwrap_or_else(|| remote.to_owned()),
        key: format!("topics[{i}]"),
    }
}

fn default_rules(cloud: &CloudConfig, topic_root: &str) -> Vec<Rule> {
    use Direction::{Both, In, Out};
    let p = cloud.local_prefix.as_str();
    let id = cloud.device_id.as_str();
    match cloud.kind {
        CloudKind::C8y => {
            let mut rules: Vec<Rule> = C8Y_OUT
                .iter()
                .map(|t| Rule::new(t, Out, 1, p, ""))
                .chain(C8Y_IN.iter().map(|t| Rule::new(t, In, 1, p, "")))
                .chain([Rule::new("s/e", In, 0, p, "")])
                .collect();
            // JWT requests and answers: only a certificate-authenticated device asks for a token.
            if matches!(cloud.auth, CloudAuth::Certificate { .. }) {
                rules.push(Rule::new("s/uat", Out, 0, p, ""));
                rules.push(Rule::new("s/dat", In, 0, p, ""));
            }
            rules
        }
        CloudKind::Azure => {
            let device = format!("devices/{id}/");
            vec![
                Rule::new("messages/events/#", Out, 1, p, &device),
                Rule::new("messages/devicebound/#", In, 1, p, &device),
                Rule::new("methods/POST/#", In, 1, p, "$iothub/"),
                Rule::new("methods/res/#", Out, 1, p, "$iothub/"),
                Rule::new("twin/res/#", In, 1, p, "$iothub/"),
                Rule::new("twin/GET/#", Out, 1, p, "$iothub/"),
                Rule::new("twin/PATCH/#", Out, 1, p, "$iothub/"),
            ]
        }
        CloudKind::Aws => {
            let thing = format!("thinedge/{id}/");
            let echo = format!("thinedge/devices/{id}/test-connection");
            vec![
                Rule::new("td/#", Out, 1, p, &thing),
                Rule::new("cmd/#", In, 1, p, &thing),
                Rule::new("shadow/#", Both, 1, p, &format!("$aws/things/{id}/")),
                // The connectivity check: a message on <p>test-connection comes back on
                // <p>connection-success once the bridge is up.
                Rule::new("", Out, 1, &format!("{p}test-connection"), &echo),
                Rule::new("", In, 1, &format!("{p}connection-success"), &echo),
            ]
        }
        CloudKind::Mqtt => {
            let local = format!("{topic_root}/");
            let remote = format!("{}{topic_root}/", cloud.remote_prefix);
            let mut rules: Vec<Rule> = MQTT_OUT
                .iter()
                .map(|t| {
                    // Health goes out at QoS 0, so it is not queued during an outage: the
                    // bridge's own `0`, queued, would reach the cloud after its reconnection `1`
                    // and stay there as the retained value. A health is a state, retained
                    // locally; the next one brings the cloud up to date.
                    let qos = if *t == MQTT_HEALTH { 0 } else { 1 };
                    Rule::new(t, Out, qos, &local, &remote)
                })
                .collect();
            rules.push(Rule::new(MQTT_COMMANDS, In, 1, &local, &remote));
            rules
        }
    }
}

const C8Y_OUT: &[&str] = &[
    "s/us/#",
    "s/ut/#",
    "t/us/#",
    "q/us/#",
    "c/us/#",
    "s/uc/#",
    "t/uc/#",
    "q/uc/#",
    "c/uc/#",
    "inventory/managedObjects/update/#",
    "measurement/measurements/create",
    "measurement/measurements/createBulk",
    "event/events/create",
    "event/events/createBulk",
    "alarm/alarms/create",
    "alarm/alarms/createBulk",
];

const C8Y_IN: &[&str] = &[
    "s/dt",
    "s/ds",
    "s/dc/#",
    "devicecontrol/notifications",
    "error",
];

/// Command instances: they come in, and their status updates go back out on the same topic.
/// mosquitto never sends a message back to the bridge it came from, so this is no loop.
const MQTT_COMMANDS: &str = "+/+/+/+/cmd/+/+";

/// The health of every entity.
const MQTT_HEALTH: &str = "+/+/+/+/status/health";

/// What a gateway shares with an MQTT cloud: registrations, twin, telemetry (with its meta),
/// health, capabilities and command status.
const MQTT_OUT: &[&str] = &[
    "+/+/+/+",
    "+/+/+/+/twin/+",
    "+/+/+/+/m/#",
    "+/+/+/+/e/#",
    "+/+/+/+/a/#",
    MQTT_HEALTH,
    "+/+/+/+/cmd/+",
    MQTT_COMMANDS,
];

/// One row of `bridge inspect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub local: String,
    pub arrow: &'static str,
    pub remote: String,
    pub qos: u8,
}

/// The rules as a table: local topic ↔ remote topic, direction and QoS.
pub fn table(rules: &[Rule]) -> Vec<Row> {
    rules
        .iter()
        .map(|r| Row {
            local: r.local_filter(),
            arrow: match r.direction {
                Direction::Out => "->",
                Direction::In => "<-",
                Direction::Both => "<->",
            },
            remote: r.remote_filter(),
            qos: r.qos,
        })
        .collect()
}

/// The table as aligned text, with a header line.
pub fn format_table(rows: &[Row]) -> String {
    let local_w = rows.iter().map(|r| r.local.len()).max().unwrap_or(0).max(5);
    let remote_w = rows
        .iter()
        .map(|r| r.remote.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let mut out = format!(
        "{:<local_w$}  {:<3}  {:<remote_w$}  QOS\n",
        "LOCAL", "DIR", "REMOTE"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<local_w$}  {:<3}  {:<remote_w$}  {}\n",
            r.local, r.arrow, r.remote, r.qos
        ));
    }
    out
}

/// Where a concrete topic goes through one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'r> {
    /// True when `topic` was read as a local topic going out; false: a remote one coming in.
    pub outgoing: bool,
    pub to: String,
    pub rule: &'r Rule,
}

impl fmt::Display for Route<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (from, to) = match self.outgoing {
            true => ("local", "remote"),
            false => ("remote", "local"),
        };
        write!(
            f,
            "{from} -> {to} {} (qos {}; {}: {})",
            self.to, self.rule.qos, self.rule.key, self.rule
        )
    }
}

/// Every way `topic` is bridged: read as a local topic (out rules) and as a remote one (in
/// rules). The caller refuses wildcards first ([`is_filter`]).
pub fn route<'r>(rules: &'r [Rule], topic: &str) -> Vec<Route<'r>> {
    let out = rules.iter().filter_map(|rule| {
        rule.route_out(topic).map(|to| Route {
            outgoing: true,
            to,
            rule,
        })
    });
    let incoming = rules.iter().filter_map(|rule| {
        rule.route_in(topic).map(|to| Route {
            outgoing: false,
            to,
            rule,
        })
    });
    out.chain(incoming).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_yaml_str;

    fn cloud(yaml: &str) -> CloudConfig {
        let text = format!("device: {{id: gw-1}}\nbridge:\n  clouds:\n    - {yaml}\n");
        let mut config = from_yaml_str(&text, &[]).unwrap();
        config.bridge.clouds.remove(0)
    }

    #[test]
    fn filters_match_like_mqtt() {
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("+/+/+/+", "device/main//"));
        assert!(!matches("+/+/+/+", "device/main/service/x/m/"));
        assert!(matches("+/+/+/+/cmd/+/+", "device/c1///cmd/restart/r1"));
        assert!(!matches("+/+/+/+/cmd/+/+", "device/c1///cmd/restart"));
        assert!(matches("s/us", "s/us"));
        assert!(!matches("s/us", "s/us/x"));
        assert!(matches("#", "anything/at/all"));
    }

    #[test]
    fn mqtt_type_carries_the_te_tree_under_the_device_prefix() {
        let rules = rules(&cloud("{name: cloud, type: mqtt, url: h}"), "te");
        let out = |t: &str| {
            route(&rules, t)
                .into_iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            out("te/device/main///m/env"),
            ["local -> remote gw-1/te/device/main///m/env (qos 1; type: topic +/+/+/+/m/# out 1 te/ gw-1/te/)"]
        );
        assert_eq!(
            out("gw-1/te/device/child1///cmd/restart/r1"),
            ["remote -> local te/device/child1///cmd/restart/r1 (qos 1; type: topic +/+/+/+/cmd/+/+ in 1 te/ gw-1/te/)"]
        );
        // A command status update goes back out on the same topic.
        assert_eq!(out("te/device/child1///cmd/restart/r1").len(), 1);
        assert!(out("te/device/main///cmd/restart/r1/extra").is_empty());
        assert!(out("other/topic").is_empty());
        // Wrong direction: a remote registration does not come in.
        assert!(out("gw-1/te/device/main//").is_empty());
    }

    #[test]
    fn a_configured_rule_replaces_the_default_of_the_same_pattern_and_direction() {
        let c = cloud(
            "{name: c, type: mqtt, url: h, topics: [{pattern: '+/+/+/+/m/#', direction: out, qos: 0, remote_prefix: x/}, {pattern: 'extra/#', direction: out}, {pattern: '+/+/+/+/e/#', direction: out, qos: 2}]}",
        );
        let rules = rules(&c, "te");
        let m: Vec<&Rule> = rules
            .iter()
            .filter(|r| r.pattern == "+/+/+/+/m/#")
            .collect();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].to_string(), "topic +/+/+/+/m/# out 0 te/ x/");
        assert_eq!(m[0].key, "topics[0]");
        // Without prefixes of its own, a replacement keeps the default's.
        let e: Vec<String> = rules
            .iter()
            .filter(|r| r.pattern == "+/+/+/+/e/#")
            .map(ToString::to_string)
            .collect();
        assert_eq!(e, ["topic +/+/+/+/e/# out 2 te/ gw-1/te/"]);
        let last = rules.last().unwrap();
        assert_eq!(last.to_string(), "topic extra/# out 1 c/ gw-1/");
        let no_defaults = cloud("{name: c, type: mqtt, url: h, default_topics: false}");
        assert!(super::rules(&no_defaults, "te").is_empty());
    }

    #[test]
    fn aws_maps_the_connection_check_with_empty_patterns() {
        let c = cloud("{name: aws, type: aws, url: h, auth: {cert_file: /c, key_file: /k}}");
        let rules = rules(&c, "te");
        let lines: Vec<String> = rules.iter().map(ToString::to_string).collect();
        assert!(lines.contains(
            &"topic \"\" out 1 aws/test-connection thinedge/devices/gw-1/test-connection"
                .to_owned()
        ));
        let routes = route(&rules, "thinedge/devices/gw-1/test-connection");
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].to, "aws/connection-success");
        assert_eq!(
            route(&rules, "aws/test-connection")[0].to,
            "thinedge/devices/gw-1/test-connection"
        );
        let shadow = route(&rules, "aws/shadow/update");
        assert_eq!(shadow[0].to, "$aws/things/gw-1/shadow/update");
    }

    #[test]
    fn c8y_asks_for_tokens_only_with_a_certificate() {
        let cert = cloud("{name: c8y, type: c8y, url: h, auth: {cert_file: /c, key_file: /k}}");
        let pass =
            cloud("{name: c8y, type: c8y, url: h, auth: {username: t/u, password_file: /p}}");
        let has_jwt = |c: &CloudConfig| rules(c, "te").iter().any(|r| r.pattern == "s/uat");
        assert!(has_jwt(&cert));
        assert!(!has_jwt(&pass));
        assert_eq!(rules(&pass, "te").len(), 22);
    }

    #[test]
    fn the_table_aligns_its_columns() {
        let c = cloud("{name: c, type: mqtt, url: h, default_topics: false, topics: [{pattern: 'a/#', direction: both, qos: 2}, {pattern: b, direction: in}]}");
        assert_eq!(
            format_table(&table(&rules(&c, "te"))),
            "LOCAL  DIR  REMOTE    QOS\nc/a/#  <->  gw-1/a/#  2\nc/b    <-   gw-1/b    1\n"
        );
    }
}

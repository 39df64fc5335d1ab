//! The child runner's settings: the command line as typed ([`ChildArgs`]) turned into checked
//! [`Settings`] in one place, every problem reported at once; and [`HandlerSpec`], the
//! `<op>=<command>` of `--handler`.
//!
//! Pure: no I/O, nothing is connected or created here. The topics the runner uses are derived
//! from the settings here, so that the runner and its tests agree on them.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use reqwest::Url;

use crate::cli::ChildArgs;
use crate::topic::{Channel, EntityTopicId};

/// `<op>=<command>`: the operation a handler serves and the shell command that serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerSpec {
    pub op: String,
    pub command: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidHandler {
    #[error("expected <op>=<command>, like firmware_update=/usr/bin/flash \"$EDGE_FILE\"")]
    NoEquals,
    #[error("the operation name {0:?} is not a single non-empty topic level (no '/', '+', '#')")]
    BadOp(String),
    #[error("`health` is the health-check channel (cmd/health/check), not an operation")]
    Health,
    #[error("the command for {0} is empty")]
    EmptyCommand(String),
}

impl FromStr for HandlerSpec {
    type Err = InvalidHandler;

    /// Splits at the first `=`: operation names have none, commands may.
    fn from_str(text: &str) -> Result<HandlerSpec, InvalidHandler> {
        let (op, command) = text.split_once('=').ok_or(InvalidHandler::NoEquals)?;
        if !crate::topic::is_plain_level(op) {
            return Err(InvalidHandler::BadOp(op.to_owned()));
        }
        if op == "health" {
            return Err(InvalidHandler::Health);
        }
        if command.trim().is_empty() {
            return Err(InvalidHandler::EmptyCommand(op.to_owned()));
        }
        Ok(HandlerSpec {
            op: op.to_owned(),
            command: command.to_owned(),
        })
    }
}

impl fmt::Display for HandlerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.op, self.command)
    }
}

/// Checked settings of `edge-agent child`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `device/<name>//`.
    pub entity: EntityTopicId,
    /// `<name>`.
    pub name: String,
    pub parent: Option<EntityTopicId>,
    /// The gateway's base URL, under which the file transfer route lives.
    pub gateway: Url,
    pub mqtt_host: String,
    pub mqtt_port: u16,
    pub topic_root: String,
    /// One per operation, in the order given.
    pub handlers: Vec<HandlerSpec>,
    pub handler_timeout: Duration,
    pub shutdown_grace: Duration,
    pub work_dir: PathBuf,
}

/// Everything wrong with the command line, one problem per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid child settings:\n  {}", .0.join("\n  "))]
pub struct SettingsError(pub Vec<String>);

impl Settings {
    /// Checks what clap cannot: the entity's shape, the parent, the topic root, one handler per
    /// operation; fills in the defaults that depend on other options.
    pub fn resolve(args: ChildArgs) -> Result<Settings, SettingsError> {
        let mut problems = Vec::new();
        let name = match args.entity.default_device_name() {
            Some(name) => name.to_owned(),
            None => {
                problems.push(format!(
                    "--entity {}: a child device's topic id is device/<name>//",
                    args.entity
                ));
                String::new()
            }
        };
        if args.parent.as_ref() == Some(&args.entity) {
            problems.push(format!(
                "--parent {}: a device cannot be its own parent",
                args.entity
            ));
        }
        let root = &args.topic_root;
        if root.is_empty() || root.contains(['/', '+', '#', '\0']) {
            problems.push(format!(
                "--topic-root {root:?}: a single non-empty topic level (no '/', '+', '#')"
            ));
        }
        let mut handlers: Vec<HandlerSpec> = Vec::new();
        for handler in args.handlers {
            if handlers.iter().any(|h| h.op == handler.op) {
                problems.push(format!(
                    "--handler {handler}: {} has a handler already",
                    handler.op
                ));
            } else {
                handlers.push(handler);
            }
        }
        // `Base` checked it is http(s) with a host; it prints as a URL that parses again.
        let gateway = Url::parse(&args.gateway_url.to_string());
        let mqtt_host = match (&args.mqtt_host, &gateway) {
            (Some(host), _) if host.trim().is_empty() => {
                problems.push("--mqtt-host: empty".to_owned());
                String::new()
            }
            (Some(host), _) => host.clone(),
            // An IPv6 host is bracketed in a URL, bare for a socket address.
            (None, Ok(url)) => url
                .host_str()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            (None, Err(_)) => String::new(),
        };
        let gateway = match gateway {
            Ok(url) => url,
            Err(e) => {
                problems.push(format!("--gateway-url {}: {e}", args.gateway_url));
                return Err(SettingsError(problems));
            }
        };
        if !problems.is_empty() {
            return Err(SettingsError(problems));
        }
        Ok(Settings {
            entity: args.entity,
            name,
            parent: args.parent,
            gateway,
            mqtt_host,
            mqtt_port: args.mqtt_port,
            topic_root: args.topic_root,
            handlers,
            handler_timeout: args.handler_timeout,
            shutdown_grace: args.shutdown_grace,
            work_dir: args.work_dir.unwrap_or_else(std::env::temp_dir),
        })
    }

    /// `edge-agent-child-<name>`: stable, for the persistent session.
    pub fn client_id(&self) -> String {
        format!("edge-agent-child-{}", self.name)
    }

    pub fn handler(&self, op: &str) -> Option<&HandlerSpec> {
        self.handlers.iter().find(|h| h.op == op)
    }

    /// The registration: topic and retained payload.
    pub fn registration(&self) -> (String, Vec<u8>) {
        let mut payload = serde_json::Map::new();
        if let Some(parent) = &self.parent {
            payload.insert("@parent".into(), parent.as_str().into());
        }
        payload.insert("@type".into(), "child-device".into());
        payload.insert("name".into(), self.name.clone().into());
        let topic = self.entity.topic(&self.topic_root, &Channel::Registration);
        (
            topic,
            serde_json::Value::Object(payload).to_string().into_bytes(),
        )
    }

    /// One capability per handler: `<root>/<entity>/cmd/<op>` with `{}`, retained.
    pub fn capabilities(&self) -> Vec<(String, Vec<u8>)> {
        self.handlers
            .iter()
            .map(|h| {
                let channel = Channel::Capability(h.op.clone());
                (
                    self.entity.topic(&self.topic_root, &channel),
                    b"{}".to_vec(),
                )
            })
            .collect()
    }

    /// Every command instance of this entity: `<root>/<entity>/cmd/+/+`.
    pub fn command_filter(&self) -> String {
        format!("{}/{}/cmd/+/+", self.topic_root, self.entity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler(text: &str) -> HandlerSpec {
        text.parse().unwrap()
    }

    fn args(entity: &str) -> ChildArgs {
        ChildArgs {
            entity: entity.parse().unwrap(),
            gateway_url: "http://gw.local:8000".parse().unwrap(),
            mqtt_host: None,
            mqtt_port: 1883,
            topic_root: "te".into(),
            parent: None,
            handlers: vec![handler("firmware_update=flash \"$EDGE_FILE\"")],
            handler_timeout: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(10),
            work_dir: Some("/var/tmp".into()),
        }
    }

    #[test]
    fn a_handler_is_split_at_its_first_equals_sign_and_prints_back_as_given() {
        let h = handler("config_update=install --mode=fast \"$EDGE_FILE\"");
        assert_eq!(h.op, "config_update");
        assert_eq!(h.command, "install --mode=fast \"$EDGE_FILE\"");
        assert_eq!(h.to_string().parse::<HandlerSpec>(), Ok(h));
    }

    #[test]
    fn handlers_without_an_operation_or_a_command_are_refused() {
        let err = |t: &str| t.parse::<HandlerSpec>().unwrap_err();
        assert_eq!(err("firmware_update"), InvalidHandler::NoEquals);
        assert_eq!(err("=cmd"), InvalidHandler::BadOp(String::new()));
        assert_eq!(err("a/b=cmd"), InvalidHandler::BadOp("a/b".into()));
        assert_eq!(err("a+=cmd"), InvalidHandler::BadOp("a+".into()));
        assert_eq!(err("health=cmd"), InvalidHandler::Health);
        assert_eq!(
            err("restart=  "),
            InvalidHandler::EmptyCommand("restart".into())
        );
    }

    #[test]
    fn settings_take_the_name_from_the_entity_and_the_broker_from_the_gateway_url() {
        let s = Settings::resolve(args("device/child1//")).unwrap();
        assert_eq!(s.name, "child1");
        assert_eq!(s.client_id(), "edge-agent-child-child1");
        assert_eq!(s.mqtt_host, "gw.local");
        assert_eq!(s.gateway.as_str(), "http://gw.local:8000/");
        assert_eq!(
            s.registration(),
            (
                "te/device/child1//".to_owned(),
                br#"{"@type":"child-device","name":"child1"}"#.to_vec()
            )
        );
        assert_eq!(
            s.capabilities(),
            [(
                "te/device/child1///cmd/firmware_update".to_owned(),
                b"{}".to_vec()
            )]
        );
        assert_eq!(s.command_filter(), "te/device/child1///cmd/+/+");

        let mut a = args("device/child1");
        a.gateway_url = "http://[::1]:8000".parse().unwrap();
        a.parent = Some("device/gw2//".parse().unwrap());
        a.topic_root = "root".into();
        let s = Settings::resolve(a).unwrap();
        assert_eq!(s.mqtt_host, "::1");
        assert_eq!(
            s.registration(),
            (
                "root/device/child1//".to_owned(),
                br#"{"@parent":"device/gw2//","@type":"child-device","name":"child1"}"#.to_vec()
            )
        );
    }

    #[test]
    fn every_problem_of_the_command_line_is_reported_at_once() {
        let mut a = args("device/c1/service/s");
        a.parent = Some("device/c1/service/s".parse().unwrap());
        a.topic_root = "a/b".into();
        a.handlers.push(handler("firmware_update=other"));
        assert_eq!(
            Settings::resolve(a).unwrap_err().to_string(),
            "invalid child settings:\n  \
             --entity device/c1/service/s: a child device's topic id is device/<name>//\n  \
             --parent device/c1/service/s: a device cannot be its own parent\n  \
             --topic-root \"a/b\": a single non-empty topic level (no '/', '+', '#')\n  \
             --handler firmware_update=other: firmware_update has a handler already"
        );
    }
}

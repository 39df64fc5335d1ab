//! From a configuration to the bridge files it asks for: pick the clouds, read the installed
//! mosquitto's version, check each cloud's files, render. Shared by `bridge render`, `bridge
//! validate` and the live re-rendering of `run`; writing or proving the result is theirs.
//!
//! Either every selected cloud renders, or nothing does and every problem is returned.

use std::path::Path;

use chrono::Utc;

use super::check::{self, Finding};
use super::prove::ProofFile;
use super::render::{self, Context, Rendered};
use super::rules;
use super::version::{self, Version};
use crate::config::{CloudConfig, Config};

/// Rendered files, and what is worth a warning.
#[derive(Debug, Clone)]
pub struct Plan {
    pub files: Vec<Rendered>,
    pub warnings: Vec<Finding>,
    /// All clouds were rendered (no `--name`): files of other clouds may be pruned.
    pub complete: bool,
}

/// How the rendered bridges reach their clouds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Each at its configured `url`.
    Clouds,
    /// All at this closed loopback port (`bridge validate`), so nothing connects anywhere.
    ClosedPort(u16),
}

/// The clouds of `config` selected by `only` (a cloud name), or an error naming the key.
pub fn select<'c>(config: &'c Config, only: Option<&str>) -> Result<Vec<&'c CloudConfig>, Finding> {
    let clouds = &config.bridge.clouds;
    match only {
        None => Ok(clouds.iter().collect()),
        Some(name) => match clouds.iter().find(|c| c.name == name) {
            Some(cloud) => Ok(vec![cloud]),
            None => Err(Finding::new(
                "bridge.clouds",
                format!(
                    "no cloud is named {name:?} (configured: {})",
                    names(config).unwrap_or_else(|| "none".into())
                ),
            )),
        },
    }
}

fn names(config: &Config) -> Option<String> {
    let names: Vec<&str> = config
        .bridge
        .clouds
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    (!names.is_empty()).then(|| names.join(", "))
}

/// The installed mosquitto's version, or [`Version::ASSUMED`] with a warning. Blocking.
pub fn mosquitto_version(config: &Config, warnings: &mut Vec<Finding>) -> Version {
    let version = match version::detect(&config.bridge.mosquitto_bin) {
        Ok(version) => version,
        Err(e) => {
            warnings.push(Finding::new(
                "bridge.mosquitto_bin",
                format!(
                    "{}; rendering for mosquitto {}",
                    chain(&e),
                    Version::ASSUMED
                ),
            ));
            Version::ASSUMED
        }
    };
    if let Some(defect) = version.defect() {
        warnings.push(Finding::new(
            "bridge.mosquitto_bin",
            format!("mosquitto {version}: {defect}"),
        ));
    }
    version
}

/// An error and its sources, as one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The files of `plan`, for [`super::prove::prove`].
pub fn proof_files(plan: &Plan) -> Vec<ProofFile> {
    plan.files
        .iter()
        .map(|f| ProofFile {
            file_name: f.file_name.clone(),
            text: f.text.clone(),
            keys: f.keys.clone(),
            cloud: f.cloud.clone(),
        })
        .collect()
}

/// A loopback port nothing listens on: bound, read, released.
pub fn closed_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.local_addr().map(|a| a.port())
}

/// The main device's name in the default scheme; `main` when it has none (a custom topic id),
/// which keeps the bridge services under the conventional `device/main`.
pub fn main_device_name(config: &Config) -> &str {
    config
        .twin
        .main_device
        .default_device_name()
        .unwrap_or("main")
}

/// Checks and renders the clouds selected by `only`. Blocking (file checks, `mosquitto -h`).
pub fn plan(
    config: &Config,
    config_path: &Path,
    only: Option<&str>,
    target: Target,
) -> Result<Plan, Vec<Finding>> {
    let clouds = select(config, only).map_err(|f| vec![f])?;
    let mut warnings = Vec::new();
    let version = mosquitto_version(config, &mut warnings);
    let now = Utc::now();
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for cloud in clouds {
        let checked = match check::check_cloud(cloud, now) {
            Ok(checked) => checked,
            Err(found) => {
                problems.extend(found);
                continue;
            }
        };
        warnings.extend(checked.warnings.iter().cloned());
        let ctx = Context {
            config_path,
            version,
            topic_root: &config.mqtt.topic_root,
            device: main_device_name(config),
            ca: checked.ca.clone(),
            password: checked.password.as_deref(),
            address: match target {
                Target::Clouds => None,
                Target::ClosedPort(port) => Some(format!("127.0.0.1:{port}")),
            },
        };
        let rules = rules::rules(cloud, &config.mqtt.topic_root);
        files.push(render::render(cloud, &rules, &ctx));
    }
    if problems.is_empty() {
        Ok(Plan {
            files,
            warnings,
            complete: only.is_none(),
        })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_yaml_str;

    fn config(extra: &str) -> Config {
        let text = format!(
            "{extra}bridge:\n  clouds:\n    - {{name: a, type: mqtt, url: h}}\n    - {{name: b, type: mqtt, url: h}}\n"
        );
        from_yaml_str(&text, &[]).unwrap()
    }

    #[test]
    fn the_health_service_is_under_the_main_device_and_the_root() {
        let plan = plan(
            &config("mqtt: {topic_root: tedge}\ntwin: {main_device: device/gw1//}\n"),
            Path::new("/c.yaml"),
            None,
            Target::Clouds,
        )
        .unwrap();
        assert!(plan.files[0].text.contains(
            "\nnotification_topic tedge/device/gw1/service/mosquitto-a-bridge/status/health\n"
        ));
        assert!(plan.complete);
    }

    #[test]
    fn a_closed_port_replaces_every_address_and_a_name_selects_one_cloud() {
        let plan = plan(
            &config(""),
            Path::new("/c.yaml"),
            Some("b"),
            Target::ClosedPort(9),
        )
        .unwrap();
        assert_eq!(plan.files.len(), 1);
        assert_eq!(plan.files[0].cloud, "b");
        assert!(plan.files[0].text.contains("\naddress 127.0.0.1:9\n"));
        assert!(!plan.complete);
        let unknown = select(&config(""), Some("c")).unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "bridge.clouds: no cloud is named \"c\" (configured: a, b)"
        );
    }
}

//! From a configuration to the bridge files it asks for: pick the clouds, read the installed
//! mosquitto's version, check each cloud's files, render. Shared by `bridge render`, `bridge
//! validate` and the live re-rendering of `run`; writing or proving the result is theirs.
//!
//! Either every selected cloud renders, or nothing does and every problem is returned.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;

pub use crate::report::chain;

use super::check::{self, Finding};
use super::prove::{self, ProveError};
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

/// The clouds of `config` selected by `only`, or an error naming the key.
pub fn select<'c>(config: &'c Config, only: Option<&str>) -> Result<Vec<&'c CloudConfig>, Finding> {
    match only {
        None => Ok(config.bridge.clouds.iter().collect()),
        Some(name) => cloud(config, name).map(|c| vec![c]),
    }
}

/// The cloud named `name`, or an error naming the key and the configured names.
pub fn cloud<'c>(config: &'c Config, name: &str) -> Result<&'c CloudConfig, Finding> {
    config
        .bridge
        .clouds
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| {
            Finding::new(
                "bridge.clouds",
                format!(
                    "no cloud is named {name:?} (configured: {})",
                    names(config).unwrap_or_else(|| "none".into())
                ),
            )
        })
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

/// How long mosquitto may take to load the files of a proof.
pub const PROVE_TIMEOUT: Duration = Duration::from_secs(15);

/// Proves the files of `plan` against the installed mosquitto, every bridge pointed at a
/// closed loopback port so that nothing connects anywhere.
pub async fn prove(config: &Config, plan: &Plan) -> Result<(), ProveError> {
    if plan.files.is_empty() {
        return Ok(());
    }
    let address = format!("127.0.0.1:{}", prove::free_port()?);
    let files: Vec<Rendered> = plan
        .files
        .iter()
        .map(|f| f.with_address(&address))
        .collect();
    let bin = version::locate(&config.bridge.mosquitto_bin);
    prove::prove(&bin, &files, PROVE_TIMEOUT).await
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
pub fn plan(config: &Config, config_path: &Path, only: Option<&str>) -> Result<Plan, Vec<Finding>> {
    let clouds = select(config, only).map_err(|f| vec![f])?;
    if clouds.is_empty() {
        return Ok(Plan {
            files: Vec::new(),
            warnings: Vec::new(),
            complete: only.is_none(),
        });
    }
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
        )
        .unwrap();
        assert!(plan.files[0].text.contains(
            "\nnotification_topic tedge/device/gw1/service/mosquitto-a-bridge/status/health\n"
        ));
        assert!(plan.complete);
    }

    #[test]
    fn a_newline_in_the_config_path_stays_inside_the_header_line() {
        let path = Path::new("/etc/x\nlistener 1885 0.0.0.0/c.yaml");
        let plan = plan(&config(""), path, Some("a")).unwrap();
        let text = &plan.files[0].text;
        assert!(text.starts_with(
            "# generated by edge-agent from /etc/x\\nlistener 1885 0.0.0.0/c.yaml (cloud \"a\")"
        ));
        assert!(!text.lines().any(|l| l.starts_with("listener")));
    }

    #[test]
    fn a_name_selects_one_cloud_and_an_address_replaces_only_the_address_line() {
        let plan = plan(&config(""), Path::new("/c.yaml"), Some("b")).unwrap();
        assert_eq!(plan.files.len(), 1);
        assert_eq!(plan.files[0].cloud, "b");
        assert!(!plan.complete);
        let file = &plan.files[0];
        let proof = file.with_address("127.0.0.1:9");
        assert_ne!(proof.text, file.text);
        assert_eq!(
            proof.text,
            file.text
                .replace("\naddress h:8883\n", "\naddress 127.0.0.1:9\n")
        );
        assert_eq!(proof.keys, file.keys);
        let none = from_yaml_str("bridge: {mosquitto_bin: /nonexistent}\n", &[]).unwrap();
        let empty = super::plan(&none, Path::new("/c.yaml"), None).unwrap();
        assert!(empty.files.is_empty() && empty.warnings.is_empty());
        let unknown = select(&config(""), Some("c")).unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "bridge.clouds: no cloud is named \"c\" (configured: a, b)"
        );
    }
}

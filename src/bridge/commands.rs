//! The `edge-agent bridge` commands: what each prints and the exit code it ends with. `main`
//! loads the configuration (exit 64 when it is invalid) and hands it here.
//!
//! Exit codes: 0 done; 1 a problem (each printed on stderr with its YAML key) or a refused
//! file; 2 `route` found no rule for the topic.

use std::io::Write;
use std::path::Path;

use super::check::Finding;
use super::output;
use super::plan::{self, chain};
use super::prove::ProveError;
use super::restart;
use super::rules;
use crate::config::Config;

pub const EXIT_OK: u8 = 0;
pub const EXIT_PROBLEM: u8 = 1;
pub const EXIT_NO_ROUTE: u8 = 2;

/// Where the commands print: stdout for results, stderr for problems and warnings.
pub struct Out<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
}

impl Out<'_> {
    fn problem(&mut self, text: impl std::fmt::Display) {
        let _ = writeln!(self.err, "edge-agent: {text}");
    }

    fn warnings(&mut self, warnings: &[Finding]) {
        for w in warnings {
            let _ = writeln!(self.err, "edge-agent: warning: {w}");
        }
    }

    fn problems(&mut self, found: &[Finding]) -> u8 {
        for f in found {
            self.problem(f);
        }
        EXIT_PROBLEM
    }
}

/// `bridge render [--name N] [--out DIR] [--stdout]`. Files mosquitto refuses are not
/// written: a restart on them would leave the broker down.
pub async fn render(
    config: &Config,
    config_path: &Path,
    name: Option<&str>,
    out_dir: Option<&Path>,
    stdout: bool,
    io: &mut Out<'_>,
) -> u8 {
    let plan = match plan::plan(config, config_path, name) {
        Ok(plan) => plan,
        Err(found) => return io.problems(&found),
    };
    io.warnings(&plan.warnings);
    if stdout {
        for file in &plan.files {
            let _ = io.out.write_all(file.text.as_bytes());
        }
        return EXIT_OK;
    }
    match plan::prove(config, &plan).await {
        Ok(()) => {}
        Err(e @ ProveError::Refused { .. }) => {
            io.problem(e);
            return EXIT_PROBLEM;
        }
        Err(e) => io.warnings(&[Finding::new(
            "",
            format!("the files are written without being proven: {}", chain(&e)),
        )]),
    }
    let dir = out_dir.unwrap_or(&config.bridge.dir);
    let applied = match output::apply(dir, &plan.files, plan.complete) {
        Ok(applied) => applied,
        Err(e) => {
            io.problem(chain(&e));
            return EXIT_PROBLEM;
        }
    };
    for (what, paths) in [
        ("wrote", &applied.written),
        ("unchanged", &applied.unchanged),
        ("removed", &applied.removed),
    ] {
        for path in paths {
            let _ = writeln!(io.out, "{what} {}", path.display());
        }
    }
    if !applied.changed() || out_dir.is_some() {
        return EXIT_OK;
    }
    if config.bridge.restart_command.is_empty() {
        let _ = writeln!(
            io.out,
            "mosquitto reads bridges only when it starts: restart it to apply the change \
             (e.g. systemctl restart mosquitto), or set bridge.restart_command"
        );
        return EXIT_OK;
    }
    match restart::run(&config.bridge.restart_command).await {
        Ok(()) => {
            let _ = writeln!(io.out, "ran {}", config.bridge.restart_command.join(" "));
            EXIT_OK
        }
        Err(e) => {
            io.problem(chain(&e));
            EXIT_PROBLEM
        }
    }
}

/// `bridge validate [--name N]`.
pub async fn validate(
    config: &Config,
    config_path: &Path,
    name: Option<&str>,
    io: &mut Out<'_>,
) -> u8 {
    let plan = match plan::plan(config, config_path, name) {
        Ok(plan) => plan,
        Err(found) => return io.problems(&found),
    };
    if plan.files.is_empty() {
        let _ = writeln!(
            io.out,
            "no clouds are configured (bridge.clouds): nothing to validate"
        );
        return EXIT_OK;
    }
    io.warnings(&plan.warnings);
    let clouds: Vec<&str> = plan.files.iter().map(|f| f.cloud.as_str()).collect();
    match plan::prove(config, &plan).await {
        Ok(()) => {
            let _ = writeln!(
                io.out,
                "mosquitto loaded the bridge files of {}",
                clouds.join(", ")
            );
            EXIT_OK
        }
        Err(e @ ProveError::Refused { .. }) => {
            io.problem(e);
            EXIT_PROBLEM
        }
        Err(e) => {
            io.problem(chain(&e));
            EXIT_PROBLEM
        }
    }
}

/// `bridge inspect NAME`.
pub fn inspect(config: &Config, name: &str, io: &mut Out<'_>) -> u8 {
    let cloud = match plan::cloud(config, name) {
        Ok(cloud) => cloud,
        Err(found) => return io.problems(&[found]),
    };
    let rules = rules::rules(cloud, &config.mqtt.topic_root);
    let _ = io
        .out
        .write_all(rules::format_table(&rules::table(&rules)).as_bytes());
    EXIT_OK
}

/// `bridge route NAME TOPIC`.
pub fn route(config: &Config, name: &str, topic: &str, io: &mut Out<'_>) -> u8 {
    if rules::is_filter(topic) || topic.is_empty() {
        io.problem(format!(
            "{topic:?} is not a topic name: give one concrete topic, without '+' or '#'"
        ));
        return EXIT_PROBLEM;
    }
    let cloud = match plan::cloud(config, name) {
        Ok(cloud) => cloud,
        Err(found) => return io.problems(&[found]),
    };
    let rules = rules::rules(cloud, &config.mqtt.topic_root);
    let routes = rules::route(&rules, topic);
    if routes.is_empty() {
        let _ = writeln!(
            io.out,
            "no rule of {name} carries {topic}, locally or remotely"
        );
        return EXIT_NO_ROUTE;
    }
    for route in routes {
        let _ = writeln!(io.out, "{route}");
    }
    EXIT_OK
}

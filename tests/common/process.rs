//! The real `edge-agent` binary as a child process, for what only a process boundary shows: exit
//! codes, stderr, signals, `kill -9`, and the command line.
//!
//! [`Process`] is a guard around one child: stdout and stderr go to files in its own temp dir (no
//! pipe to drain, readable at any time), and dropping it kills (SIGKILL) and reaps the child, so a
//! failing test leaves no agent behind. [`run`] runs a short command (`config show`, `--version`)
//! to its end. [`AgentSetup`] owns a data dir and starts `edge-agent run` against a broker port, on
//! a free HTTP port, as often as a test likes on the same data dir.
//!
//! The child never inherits `EDGE_AGENT_*` variables from the test process: each test passes its
//! own with `Command::env`, and the test process's environment is never modified. Signals are sent
//! with kill(1), so the tests need no `unsafe`. Every wait has a timeout.

use std::ffi::OsStr;
use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::time::Instant;

use super::http;

/// The binary under test, built by cargo for this test crate.
pub const BINARY: &str = env!("CARGO_BIN_EXE_edge-agent");

/// The bound of a short command, and of an exit after a signal unless the test says otherwise.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// From spawning `edge-agent run` to its HTTP listener answering.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 10;
/// Fine-grained, so that the measured start-up times mean something.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// A port that was free a moment ago: bind `127.0.0.1:0`, take the port, release it.
pub fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .expect("cannot bind 127.0.0.1:0")
        .port()
}

/// Sends `signal` (`TERM`, `INT`, `KILL`…) to `pid` with kill(1).
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill(1) runs");
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

/// One `edge-agent` child process; killed with SIGKILL and reaped on drop if still running.
pub struct Process {
    child: Child,
    output: TempDir,
    started: Instant,
    status: Option<ExitStatus>,
}

impl Process {
    /// Spawns [`BINARY`] with `args`, the test's environment minus its `EDGE_AGENT_*` variables,
    /// plus `env`.
    pub fn spawn<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &str)]) -> Process {
        let output = tempfile::Builder::new()
            .prefix("edge-agent-process-")
            .tempdir()
            .expect("a temp dir for the child's output");
        let stdout = File::create(output.path().join("stdout")).expect("the stdout file");
        let stderr = File::create(output.path().join("stderr")).expect("the stderr file");
        let mut command = Command::new(BINARY);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("EDGE_AGENT_") {
                command.env_remove(name);
            }
        }
        command.envs(env.iter().copied());
        let started = Instant::now();
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {BINARY}: {e}"));
        Process {
            child,
            output,
            started,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When the child was spawned.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Everything the child wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.output.path().join("stdout")).unwrap_or_default()
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.output.path().join("stderr")).unwrap_or_default()
    }

    /// The exit status, if the child has exited (it is reaped then).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait on the child");
        }
        self.status
    }

    /// Waits for the child to exit; panics with its stderr after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "edge-agent (pid {}) did not exit within {timeout:?}; stderr:\n{}",
                    self.pid(),
                    self.stderr()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }

    /// `kill -KILL`, then waits until the child is gone and checks that the signal killed it.
    pub async fn kill9(&mut self) {
        self.signal("KILL");
        let status = self.wait_exit(EXIT_TIMEOUT).await;
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a finished short command left.
#[derive(Debug)]
pub struct Finished {
    /// The exit code; `None` if a signal ended the process.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// The arguments of `edge-agent child` for `entity`, against the agent at `gateway_url` and the
/// broker on `mqtt_port`, working in `work_dir`, with one `--handler` per `op=command`.
pub fn child_args(
    entity: &str,
    gateway_url: &str,
    mqtt_port: u16,
    work_dir: &Path,
    handlers: &[String],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "child",
        "--entity",
        entity,
        "--gateway-url",
        gateway_url,
        "--mqtt-host",
        "127.0.0.1",
        "--mqtt-port",
        &mqtt_port.to_string(),
        "--work-dir",
        &work_dir.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for handler in handlers {
        args.extend(["--handler".to_owned(), handler.clone()]);
    }
    args
}

/// Runs `edge-agent <args>` to its end (at most [`EXIT_TIMEOUT`]).
pub async fn run<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &str)]) -> Finished {
    let mut process = Process::spawn(args, env);
    let status = process.wait_exit(EXIT_TIMEOUT).await;
    Finished {
        code: status.code(),
        stdout: process.stdout(),
        stderr: process.stderr(),
    }
}

/// A data dir and config dir for `edge-agent run` against the broker on `mqtt_port`; each
/// [`AgentSetup::start`] writes a config file with a fresh HTTP port and spawns the agent on the
/// same data dir.
pub struct AgentSetup {
    dir: TempDir,
    mqtt_port: u16,
    /// Top-level YAML appended to every config file written, e.g. a `bridge:` section.
    extra_config: String,
}

impl AgentSetup {
    pub fn new(mqtt_port: u16) -> AgentSetup {
        AgentSetup::with_extra_config(mqtt_port, String::new())
    }

    /// [`AgentSetup::new`], and every config file written ends with `extra_config`: top-level
    /// YAML sections the default test config does not have.
    pub fn with_extra_config(mqtt_port: u16, extra_config: String) -> AgentSetup {
        let dir = tempfile::Builder::new()
            .prefix("edge-agent-binary-")
            .tempdir()
            .expect("a temp dir for the agent");
        AgentSetup {
            dir,
            mqtt_port,
            extra_config,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `<data_dir>/twin`, where the twin is persisted (spec/twin.md §7.1).
    pub fn twin_dir(&self) -> PathBuf {
        self.data_dir().join("twin")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("edge-agent.yaml")
    }

    /// Writes the config file for an agent listening on `127.0.0.1:<http_port>`.
    pub fn write_config(&self, http_port: u16) -> PathBuf {
        write_agent_config(
            &self.config_path(),
            self.mqtt_port,
            http_port,
            &self.data_dir(),
        );
        if !self.extra_config.is_empty() {
            let mut text =
                std::fs::read_to_string(self.config_path()).expect("the config just written");
            text.push_str(&self.extra_config);
            std::fs::write(self.config_path(), text).expect("cannot write the agent's config file");
        }
        self.config_path()
    }

    /// Spawns `edge-agent --config <file> run` and returns once its HTTP listener answers
    /// `/healthz`. If the free port was taken before the agent bound it (the agent exits with 1
    /// and says so), starts again on another port. Panics with the agent's stderr if it exits
    /// otherwise or does not answer within 10 s.
    pub async fn start(&self) -> AgentProcess {
        self.start_with_env(&[]).await
    }

    /// [`AgentSetup::start`], with `env` added to the agent's environment.
    pub async fn start_with_env(&self, env: &[(&str, &str)]) -> AgentProcess {
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let config = self.write_config(port);
            let args = [
                OsStr::new("--config"),
                config.as_os_str(),
                OsStr::new("run"),
            ];
            let mut process = Process::spawn(&args, env);
            let base = format!("http://127.0.0.1:{port}");
            let client = http::client();
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if let Some(status) = process.try_status() {
                    let stderr = process.stderr();
                    if status.code() == Some(1) && stderr.contains("Address already in use") {
                        break;
                    }
                    panic!("edge-agent exited at start-up ({status}); stderr:\n{stderr}");
                }
                let healthz = client.get(format!("{base}/healthz"));
                if matches!(http::try_send(healthz).await, Ok(r) if r.status == 200) {
                    return AgentProcess { process, base };
                }
                if Instant::now() >= deadline {
                    panic!(
                        "edge-agent did not answer on {base} within {START_TIMEOUT:?}; stderr:\n{}",
                        process.stderr()
                    );
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
        panic!("edge-agent found no free HTTP port in {START_ATTEMPTS} attempts");
    }
}

/// Writes a config file: the broker on `127.0.0.1:<mqtt_port>`, HTTP on
/// `127.0.0.1:<http_port>`, the state in `data_dir`, and a fixed `device.id`.
pub fn write_agent_config(path: &Path, mqtt_port: u16, http_port: u16, data_dir: &Path) {
    // A JSON string is a YAML string, whatever the path holds.
    let data_dir = serde_json::to_string(&data_dir.to_string_lossy()).expect("a JSON string");
    let text = format!(
        "device:\n  id: test-device\n\
         mqtt:\n  host: 127.0.0.1\n  port: {mqtt_port}\n\
         http:\n  bind: 127.0.0.1:{http_port}\n\
         data_dir: {data_dir}\n\
         log:\n  level: info\n"
    );
    std::fs::write(path, text).expect("cannot write the agent's config file");
}

/// A running `edge-agent run` and the base URL of its HTTP API.
pub struct AgentProcess {
    pub process: Process,
    base: String,
}

impl AgentProcess {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `GET path`; panics with the agent's stderr if the request fails.
    pub async fn get(&self, path: &str) -> http::Response {
        match http::try_send(http::client().get(self.url(path))).await {
            Ok(response) => response,
            Err(e) => panic!(
                "GET {path} failed: {e:#}; edge-agent's stderr:\n{}",
                self.process.stderr()
            ),
        }
    }

    /// Polls `GET path` until `check` accepts the answer (a failed request counts as a
    /// rejected answer) and returns it; panics after `timeout` with the last answer and the
    /// agent's stderr.
    pub async fn get_until(
        &self,
        path: &str,
        timeout: Duration,
        check: impl Fn(&http::Response) -> bool,
    ) -> http::Response {
        let client = http::client();
        let deadline = Instant::now() + timeout;
        loop {
            let last = match http::try_send(client.get(self.url(path))).await {
                Ok(response) if check(&response) => return response,
                Ok(response) => format!("{} {}", response.status, response.text()),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                panic!(
                    "GET {path} did not match within {timeout:?}; last answer: {last}; \
                     edge-agent's stderr:\n{}",
                    self.process.stderr()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until `/readyz` answers 200 (connected and synced, spec/twin.md §6.3).
    pub async fn wait_ready(&self, timeout: Duration) {
        self.get_until("/readyz", timeout, |r| r.status == 200)
            .await;
    }

    /// The `@topic-id`s of `GET /te/v1/entities`, in the listing's order; asserts a 200.
    pub async fn entity_ids(&self) -> Vec<String> {
        topic_ids(&self.get("/te/v1/entities").await)
    }
}

/// The `@topic-id`s of an entity listing, in order; panics unless it is a 200 with an array.
pub fn topic_ids(listing: &http::Response) -> Vec<String> {
    assert_eq!(listing.status, 200, "listing: {}", listing.text());
    let body = listing.json();
    let entities = body.as_array().expect("the listing is an array");
    entities
        .iter()
        .map(|entity| {
            entity["@topic-id"]
                .as_str()
                .unwrap_or_else(|| panic!("an entity without @topic-id: {entity}"))
                .to_owned()
        })
        .collect()
}

//! A real mosquitto broker per test: free port, private temp dir, child process.
//!
//! The configuration is the harness's own (a loopback listener, persistence in the temp dir,
//! verbose log) plus a test's extra lines, or a whole configuration a test brings
//! ([`Broker::start_from_conf`], e.g. the repository's `mosquitto/mosquitto.conf` with its paths
//! moved into the temp dir). Owns the broker's life cycle (start, clean restart with persistence, restart without it,
//! stop and start again) and its log. It does not talk MQTT: that is `mqtt.rs`.
//!
//! The port comes from binding `127.0.0.1:0` and releasing it; if another socket takes the
//! port before mosquitto binds it, mosquitto exits with "Address already in use" and the start
//! is retried on a new port. Readiness is observed, never slept for: the broker counts as up
//! when its log says "running", the child is still alive and a TCP connect succeeds.

use std::fs::{self, File, OpenOptions};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const HOST: &str = "127.0.0.1";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(10);
const START_ATTEMPTS: usize = 10;
const LOG_FILE: &str = "mosquitto.log";
const CONF_FILE: &str = "mosquitto.conf";
const DB_FILE: &str = "mosquitto.db";

/// A mosquitto child process listening on `127.0.0.1:<port()>`, killed on drop.
pub struct Broker {
    dir: TempDir,
    port: u16,
    /// Further listeners' ports, `{port1}`, `{port2}`... in `extra_conf`.
    extra_ports: Vec<u16>,
    extra_conf: Vec<String>,
    /// A whole configuration replacing the harness's own, with `{port}`, `{port<n>}` and
    /// `{dir}` still to be replaced.
    whole_conf: Option<String>,
    child: Option<Child>,
}

/// Why one start attempt failed.
enum StartError {
    /// Someone else bound the port first: worth retrying on another port.
    PortTaken,
    Other(String),
}

impl Broker {
    /// Starts a broker with the default test configuration on a free port.
    pub async fn start() -> Broker {
        Broker::start_with(&[]).await
    }

    /// Starts a broker with extra lines appended to the configuration, e.g.
    /// `password_file {dir}/passwd`. `{dir}` is replaced by the broker's directory
    /// ([`Broker::dir`]), which already exists when the lines are written; files the broker
    /// needs at start-up must therefore live elsewhere (e.g. the test's own `TempDir`).
    pub async fn start_with(extra_conf_lines: &[&str]) -> Broker {
        Broker::start_with_ports(0, extra_conf_lines).await
    }

    /// [`Broker::start_with`] with `extra_ports` more free ports for listeners of its own:
    /// `{port1}`, `{port2}`... in the lines are replaced by them (e.g. `listener {port1}
    /// 127.0.0.1` and its TLS settings); [`Broker::extra_port`] tells them. All ports are
    /// chosen again if one was taken before mosquitto bound it, and kept across restarts.
    pub async fn start_with_ports(extra_ports: usize, extra_conf_lines: &[&str]) -> Broker {
        let dir = broker_dir();
        let extra_conf = extra_conf_lines
            .iter()
            .map(|line| line.replace("{dir}", &dir.path().display().to_string()))
            .collect();
        Broker::start_in(dir, extra_ports, extra_conf, None).await
    }

    /// Starts a broker on `conf`, a whole configuration used instead of the harness's own:
    /// `{port}` is replaced by the free port the harness waits on (so `conf` must have a
    /// `listener {port} 127.0.0.1`), `{port1}`, `{port2}`... by `extra_ports` more free ports,
    /// and `{dir}` by the broker's directory, which exists before mosquitto starts (create
    /// subdirectories there with [`Broker::dir`] only after the start, or elsewhere). The log
    /// is read for readiness, so `conf` must log notices (the default) to stdout or stderr.
    pub async fn start_from_conf(extra_ports: usize, conf: &str) -> Broker {
        let dir = broker_dir();
        let conf = conf.replace("{dir}", &dir.path().display().to_string());
        Broker::start_in(dir, extra_ports, Vec::new(), Some(conf)).await
    }

    async fn start_in(
        dir: TempDir,
        extra_ports: usize,
        extra_conf: Vec<String>,
        whole_conf: Option<String>,
    ) -> Broker {
        let mut broker = Broker {
            dir,
            port: 0,
            extra_ports: Vec::new(),
            extra_conf,
            whole_conf,
            child: None,
        };
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let mut ports = free_ports(1 + extra_ports);
            broker.port = ports.remove(0);
            broker.extra_ports = ports;
            match broker.spawn_and_wait().await {
                Ok(()) => return broker,
                Err(StartError::PortTaken) => {
                    last = format!("port {} was taken before mosquitto bound it", broker.port);
                }
                Err(StartError::Other(why)) => panic!("{why}"),
            }
        }
        panic!("mosquitto did not start after {START_ATTEMPTS} attempts: {last}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `n`th extra port (`{port<n>}`, from 1) of [`Broker::start_with_ports`].
    pub fn extra_port(&self, n: usize) -> u16 {
        self.extra_ports[n - 1]
    }

    pub fn host(&self) -> &'static str {
        HOST
    }

    /// `127.0.0.1:<port>`
    pub fn addr(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    /// The broker's private directory: config, log and persistence database.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Everything mosquitto logged so far, across restarts; for failing-test diagnostics.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join(LOG_FILE)).unwrap_or_default()
    }

    /// Clean shutdown (SIGTERM, so mosquitto saves its database), then start again on the same
    /// port and directory; returns once the broker accepts connections. Retained messages and
    /// persistent sessions survive.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Stops the broker, deletes its persistence database, and starts it again on the same
    /// port: retained messages and sessions are gone, as after a broker re-install.
    pub async fn restart_without_persistence(&mut self) {
        self.stop().await;
        match fs::remove_file(self.db_path()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot delete {}: {e}", self.db_path().display()),
        }
        self.start_again().await;
    }

    /// Stops the broker cleanly (SIGTERM, database saved) and waits until the process has exited,
    /// so the port is free and clients see the connection drop. SIGKILL after 10 s.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        terminate(&child);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(POLL_INTERVAL).await,
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "mosquitto did not exit within {STOP_TIMEOUT:?} of SIGTERM; log:\n{}",
                        self.log()
                    );
                }
            }
        }
    }

    /// Starts a stopped broker again on the same port and directory (persistence kept).
    /// Panics if the port was taken meanwhile, since clients are configured with it.
    pub async fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "start_again: the broker is already running"
        );
        match self.spawn_and_wait().await {
            Ok(()) => {}
            Err(StartError::PortTaken) => panic!(
                "mosquitto cannot restart: port {} was taken while it was down; log:\n{}",
                self.port,
                self.log()
            ),
            Err(StartError::Other(why)) => panic!("{why}"),
        }
    }

    fn db_path(&self) -> PathBuf {
        self.dir.path().join(DB_FILE)
    }

    fn write_conf(&self) -> PathBuf {
        let path = self.dir.path().join(CONF_FILE);
        if let Some(conf) = &self.whole_conf {
            let conf = self
                .with_ports(conf)
                .replace("{port}", &self.port.to_string());
            fs::write(&path, conf).expect("cannot write mosquitto.conf");
            return path;
        }
        let dir = self.dir.path().display();
        // `user root`: mosquitto started as root otherwise drops to user `mosquitto`, which
        // cannot write into our 0700 temp dir; as non-root the option has no effect.
        // `max_queued_messages` as mosquitto/mosquitto.conf has it, and not 0, for the same
        // reason: with 0, mosquitto 2.0 disconnects a client whose publication an ACL refuses.
        let mut conf = format!(
            "listener {port} {HOST}\n\
             allow_anonymous true\n\
             user root\n\
             persistence true\n\
             persistence_location {dir}/\n\
             persistence_file {DB_FILE}\n\
             autosave_interval 1\n\
             max_queued_messages 1000000\n\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n\
             log_type information\n\
             log_type subscribe\n\
             log_type unsubscribe\n\
             connection_messages true\n\
             log_timestamp true\n\
             log_timestamp_format %H:%M:%S\n",
            port = self.port,
        );
        for line in &self.extra_conf {
            conf.push_str(&self.with_ports(line));
            conf.push('\n');
        }
        fs::write(&path, conf).expect("cannot write mosquitto.conf");
        path
    }

    /// `text` with `{port1}`, `{port2}`... replaced by the extra ports.
    fn with_ports(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (i, port) in self.extra_ports.iter().enumerate() {
            text = text.replace(&format!("{{port{}}}", i + 1), &port.to_string());
        }
        text
    }

    async fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        let conf = self.write_conf();
        let log_path = self.dir.path().join(LOG_FILE);
        let log_start = fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0) as usize;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("cannot open mosquitto.log");
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(clone(&log))
            .stderr(log)
            .spawn()
            .map_err(|e| {
                StartError::Other(format!(
                    "cannot run mosquitto ({e}); install it: apt-get install -y mosquitto"
                ))
            })?;
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let new_log = self.log().get(log_start..).unwrap_or_default().to_owned();
            let child = self.child.as_mut().expect("child just spawned");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(if new_log.contains("Address already in use") {
                    StartError::PortTaken
                } else {
                    StartError::Other(format!(
                        "mosquitto exited at start-up ({status}); log:\n{new_log}"
                    ))
                });
            }
            // "running" is logged after every listener is bound, so a successful connect is to
            // this broker and not to whoever else might hold the port.
            let running = new_log
                .lines()
                .any(|l| l.contains("mosquitto version") && l.ends_with(" running"));
            if running
                && tokio::net::TcpStream::connect((HOST, self.port))
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let mut child = self.child.take().expect("child just spawned");
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartError::Other(format!(
                    "mosquitto did not accept connections on port {} within {READY_TIMEOUT:?}; log:\n{new_log}",
                    self.port
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn broker_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("edge-agent-mosquitto-")
        .tempdir()
        .expect("cannot create a temp dir for mosquitto")
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct ports that were free a moment ago (see the module doc for the race and its
/// retry): all are bound at once, so none is handed out twice.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((HOST, 0)).expect("cannot bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

/// The mosquitto executable: `/usr/sbin/mosquitto` if it exists, else `mosquitto` from `PATH`.
pub fn mosquitto_binary() -> &'static str {
    // Debian installs it in /usr/sbin, which is not on every user's PATH.
    if Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    }
}

fn clone(file: &File) -> File {
    file.try_clone()
        .expect("cannot duplicate the log file handle")
}

/// SIGTERM: mosquitto saves its persistence database on a clean exit, not on SIGKILL. Sent with
/// kill(1) so the tests need no `unsafe`.
fn terminate(child: &Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("kill -TERM {} failed: {status:?}", child.id());
    }
}

//! A gateway's broker bridged to a "cloud" broker, both real mosquitto processes on loopback
//! (spec/bridges.md §7), for the bridge tests (issue 4).
//!
//! - [`CloudBroker`]: the cloud: a TLS listener that requires a client certificate signed by the
//!   test CA (its CN becomes the user name), and a plain listener where the test observes and
//!   injects cloud traffic. Persistent, so stopping and starting it again (same ports) keeps
//!   sessions, their subscriptions and queued messages, and retained messages.
//! - [`LocalBroker`]: the gateway's broker, whose config includes a bridge directory. It runs
//!   under a supervisor thread of the test process, and a restart script (for the agent's
//!   `bridge.restart_command`) restarts it on the same port and config as `systemctl restart`
//!   would, appending a line to a counter file at every run.
//! - [`SessionSubscriber`]: a cloud-side subscriber with a persistent session, which loses
//!   nothing while the cloud restarts.
//! - The names of the bridge under test ([`DEVICE_ID`], [`HEALTH_TOPIC`]...), a hand-written
//!   bridge file for it ([`hand_written_bridge`]) and the agent's `bridge:` config
//!   ([`bridge_yaml`]).
//!
//! Everything runs as a child of the test process and is killed on drop; every wait has a
//! timeout. It does not start the agent (`process.rs`) or speak MQTT on a test's behalf
//! (`mqtt.rs`).

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tempfile::TempDir;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::certs::Pki;
use super::mosquitto::{self, Broker};
use super::mqtt::{describe, topic_matches, Message};

/// The gateway's device id: the bridge's remote client id and its certificate's CN, which the
/// cloud takes as the user name.
pub const DEVICE_ID: &str = "gw-test";
/// The cloud's name in the agent's config: `connection edge_to_cloud`, `cloud-bridge.conf`.
pub const CLOUD_NAME: &str = "cloud";
/// The file the agent renders for [`CLOUD_NAME`] into the bridge directory.
pub const BRIDGE_FILE: &str = "cloud-bridge.conf";
/// Where the local broker publishes the bridge's retained `1` (connected) and `0` (not).
pub const HEALTH_TOPIC: &str = "te/device/main/service/mosquitto-cloud-bridge/status/health";
/// The twin's state document of the bridge's service.
pub const STATE_PATH: &str = "/te/v1/entities/device/main/service/mosquitto-cloud-bridge/state";

/// The bound of starting or restarting a broker.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 10;
const POLL_INTERVAL: Duration = Duration::from_millis(10);
const HOST: &str = "127.0.0.1";

/// The type-`mqtt` default rules of bridge-plan.md with device id [`DEVICE_ID`]:
/// `(pattern, direction)`, all QoS 1, local prefix `te/`, remote prefix `gw-test/te/`.
pub const DEFAULT_RULES: [(&str, &str); 9] = [
    ("+/+/+/+", "out"),
    ("+/+/+/+/twin/+", "out"),
    ("+/+/+/+/m/#", "out"),
    ("+/+/+/+/e/#", "out"),
    ("+/+/+/+/a/#", "out"),
    ("+/+/+/+/status/health", "out"),
    ("+/+/+/+/cmd/+", "out"),
    ("+/+/+/+/cmd/+/+", "out"),
    ("+/+/+/+/cmd/+/+", "in"),
];

/// The gateway's identity towards the cloud: a client certificate with CN [`DEVICE_ID`] and the
/// CA that signed the cloud's server certificate.
pub struct Identity {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Identity {
    pub fn new(pki: &Pki) -> Identity {
        let (cert, key) = pki.client_cert_for(DEVICE_ID);
        Identity {
            ca: pki.ca(),
            cert,
            key,
        }
    }
}

/// The bridge file a person would write for the `mqtt`-type cloud of bridge-plan.md, in the
/// order of spec/bridges.md §1: the reference the rendered file is compared with in behaviour.
pub fn hand_written_bridge(cloud: &CloudBroker, identity: &Identity) -> String {
    let mut text = format!(
        "# written by hand for tests/bridges.rs\n\
         connection edge_to_{CLOUD_NAME}\n\
         address {tls}\n\
         bridge_cafile {ca}\n\
         remote_clientid {DEVICE_ID}\n\
         local_clientid edge_to_{CLOUD_NAME}.local\n\
         bridge_certfile {cert}\n\
         bridge_keyfile {key}\n\
         try_private false\n\
         start_type automatic\n\
         cleansession false\n\
         local_cleansession false\n\
         notifications true\n\
         notifications_local_only true\n\
         notification_topic {HEALTH_TOPIC}\n\
         bridge_attempt_unsubscribe false\n\
         keepalive_interval 60\n\n",
        tls = cloud.tls_addr(),
        ca = identity.ca.display(),
        cert = identity.cert.display(),
        key = identity.key.display(),
    );
    for (pattern, direction) in DEFAULT_RULES {
        text.push_str(&format!(
            "topic {pattern} {direction} 1 te/ {DEVICE_ID}/te/\n"
        ));
    }
    text
}

/// The agent config's `bridge:` section: the local broker's bridge directory and restart
/// script, and one `mqtt`-type cloud named [`CLOUD_NAME`] at `url` (`host:port`, e.g.
/// [`CloudBroker::tls_addr`]) with device id [`DEVICE_ID`], certificate authentication and
/// `clean_session: false`. `cloud_lines` are more keys of that cloud, YAML at the cloud's
/// indentation, e.g. `topics:` and `  - {pattern: "extra/#", direction: out, qos: 1}`.
pub fn bridge_yaml(
    local: &LocalBroker,
    url: &str,
    identity: &Identity,
    cloud_lines: &[&str],
) -> String {
    let mut text = format!(
        "bridge:\n  \
           dir: {dir}\n  \
           mosquitto_bin: {bin}\n  \
           restart_command: [{script}]\n  \
           clouds:\n    \
             - name: {CLOUD_NAME}\n      \
               type: mqtt\n      \
               url: {url}\n      \
               device_id: {DEVICE_ID}\n      \
               ca: {ca}\n      \
               auth:\n        \
                 cert_file: {cert}\n        \
                 key_file: {key}\n      \
               clean_session: false\n",
        dir = yaml_path(local.bridge_dir()),
        bin = yaml_str(mosquitto::mosquitto_binary()),
        script = yaml_path(&local.restart_script()),
        url = yaml_str(url),
        ca = yaml_path(&identity.ca),
        cert = yaml_path(&identity.cert),
        key = yaml_path(&identity.key),
    );
    for line in cloud_lines {
        text.push_str("      ");
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// A JSON string is a YAML string, whatever it holds.
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a JSON string")
}

fn yaml_path(path: &Path) -> String {
    yaml_str(&path.to_string_lossy())
}

/// Replaces `path` with `text` as an editor does: a new file in the same directory, renamed over
/// the old one (so a watcher sees the old inode go away).
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("edited.tmp");
    fs::write(&tmp, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", tmp.display()));
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("cannot rename over {}: {e}", path.display()));
}

/// The cloud broker: TLS with required client certificates on [`CloudBroker::tls_port`], plain
/// MQTT for the test on [`CloudBroker::plain_port`]; killed on drop.
pub struct CloudBroker {
    broker: Broker,
}

impl CloudBroker {
    /// Starts the cloud with `pki`'s server certificate; clients of the TLS listener must
    /// present a certificate signed by `pki`'s CA, and their CN is their user name
    /// (`use_identity_as_username`). Anonymous clients are allowed on the plain listener.
    pub async fn start(pki: &Pki) -> CloudBroker {
        let lines = [
            "listener {port1} 127.0.0.1".to_owned(),
            format!("cafile {}", pki.ca().display()),
            format!("certfile {}", pki.server_cert().display()),
            format!("keyfile {}", pki.server_key().display()),
            "require_certificate true".to_owned(),
            "use_identity_as_username true".to_owned(),
        ];
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        CloudBroker {
            broker: Broker::start_with_ports(1, &lines).await,
        }
    }

    /// The listener for the test's own (plain, anonymous) clients.
    pub fn plain_port(&self) -> u16 {
        self.broker.port()
    }

    pub fn tls_port(&self) -> u16 {
        self.broker.extra_port(1)
    }

    /// `127.0.0.1:<tls port>`, the bridge's `address`.
    pub fn tls_addr(&self) -> String {
        format!("{HOST}:{}", self.tls_port())
    }

    /// SIGTERM (the database is saved) and wait for the exit: the bridge sees its connection
    /// closed at once.
    pub async fn stop(&mut self) {
        self.broker.stop().await;
    }

    /// Start again on the same ports with the saved sessions and retained messages.
    pub async fn start_again(&mut self) {
        self.broker.start_again().await;
    }

    pub fn log(&self) -> String {
        self.broker.log()
    }
}

/// The gateway's mosquitto: `include_dir` of [`LocalBroker::bridge_dir`], a plain listener on a
/// free port, persistence on. A supervisor thread starts it again whenever it exits with
/// status 0, which is what mosquitto does on SIGTERM: so [`LocalBroker::restart_script`]
/// restarts it by sending SIGTERM and waiting for the new process. Any other exit (a config
/// mosquitto refuses, a port taken meanwhile) is final and reported by the next wait.
///
/// Why a supervisor and not `mosquitto -d` with a pid file: a daemon is reparented to pid 1,
/// which in a container may reap nothing, so a stopped daemon could linger as a zombie; the
/// supervisor's children are reaped by the test process itself.
pub struct LocalBroker {
    dir: TempDir,
    bridge_dir: PathBuf,
    port: u16,
    state: Arc<Mutex<Supervised>>,
    supervisor: Option<JoinHandle<()>>,
}

/// What the supervisor thread shares with the harness, under one lock: the stop request is
/// checked, and a new child's pid recorded, under it, so a stop never misses a child.
#[derive(Default)]
struct Supervised {
    stop: bool,
    /// The running mosquitto, if any.
    pid: Option<u32>,
    /// How many times a mosquitto was spawned.
    starts: u64,
    /// Where in the log the latest start's output begins.
    log_start: usize,
    /// Why the supervisor gave up.
    failure: Option<String>,
}

/// The files in the local broker's directory.
const LOCAL_CONF: &str = "mosquitto.conf";
const LOCAL_LOG: &str = "mosquitto.log";
const LOCAL_PID: &str = "mosquitto.pid";
const BRIDGE_DIR: &str = "conf.d";
const RESTART_SCRIPT: &str = "restart-mosquitto.sh";
const RESTART_COUNTER: &str = "restarts";

impl LocalBroker {
    /// The broker's directory with an empty bridge directory and the restart script; nothing
    /// runs yet, so a test can put bridge files in place before [`LocalBroker::start`].
    pub fn new() -> LocalBroker {
        let dir = tempfile::Builder::new()
            .prefix("edge-agent-local-mosquitto-")
            .tempdir()
            .expect("cannot create a temp dir for the local mosquitto");
        let bridge_dir = dir.path().join(BRIDGE_DIR);
        fs::create_dir(&bridge_dir).expect("cannot create the bridge dir");
        let broker = LocalBroker {
            dir,
            bridge_dir,
            port: 0,
            state: Arc::default(),
            supervisor: None,
        };
        broker.write_restart_script();
        broker
    }

    /// Starts the broker on a free port and returns once it accepts connections; panics with its
    /// log if it does not start (e.g. it refuses a bridge file).
    pub async fn start(&mut self) {
        assert!(self.supervisor.is_none(), "the local broker already runs");
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            self.port = mosquitto::free_port();
            self.write_conf();
            self.state = Arc::default();
            let state = self.state.clone();
            let (conf, log, pid) = (
                self.file(LOCAL_CONF),
                self.file(LOCAL_LOG),
                self.file(LOCAL_PID),
            );
            self.supervisor = Some(std::thread::spawn(move || {
                supervise(&state, &conf, &log, &pid)
            }));
            match self.wait_running(1, START_TIMEOUT).await {
                Ok(()) => return,
                Err(why) if why.contains("Address already in use") => {
                    self.shut_down();
                    last = why;
                }
                Err(why) => panic!("{why}"),
            }
        }
        panic!("the local mosquitto did not start after {START_ATTEMPTS} attempts: {last}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where bridge files go: the broker loads every `*.conf` in it at start.
    pub fn bridge_dir(&self) -> &Path {
        &self.bridge_dir
    }

    /// A script that restarts this broker (same port and config), for `bridge.restart_command`:
    /// it appends a line to [`LocalBroker::restart_count`]'s file, sends SIGTERM to the running
    /// mosquitto and returns once the supervisor started the new one (status 1 after 10 s).
    pub fn restart_script(&self) -> PathBuf {
        self.file(RESTART_SCRIPT)
    }

    /// Restarts the broker as the restart script does (SIGTERM, the supervisor starts it
    /// again), without counting it, and returns once the new one accepts connections: e.g. to
    /// load a bridge file rendered after [`LocalBroker::start`].
    pub async fn restart(&self) {
        let starts = {
            let s = lock(&self.state);
            let pid = s.pid.expect("the local broker runs");
            signal(pid, "TERM");
            s.starts
        };
        self.wait_started(starts + 1, START_TIMEOUT).await;
    }

    /// How many times the restart script ran.
    pub fn restart_count(&self) -> usize {
        match fs::read_to_string(self.file(RESTART_COUNTER)) {
            Ok(text) => text.lines().count(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => panic!("cannot read the restart counter: {e}"),
        }
    }

    /// How many times a mosquitto process was started: 1 after [`LocalBroker::start`], one more
    /// per restart.
    pub fn starts(&self) -> u64 {
        lock(&self.state).starts
    }

    /// Waits until the `starts`-th mosquitto (or a later one) runs and accepts connections;
    /// panics with the log after `timeout` or if the supervisor gave up.
    pub async fn wait_started(&self, starts: u64, timeout: Duration) {
        if let Err(why) = self.wait_running(starts, timeout).await {
            panic!("{why}");
        }
    }

    /// Everything mosquitto logged so far, across restarts.
    pub fn log(&self) -> String {
        fs::read_to_string(self.file(LOCAL_LOG)).unwrap_or_default()
    }

    async fn wait_running(&self, starts: u64, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let (current, log_start, failure) = {
                let s = lock(&self.state);
                (s.starts, s.log_start, s.failure.clone())
            };
            let log = self.log();
            if let Some(why) = failure {
                let new = log.get(log_start..).unwrap_or(&log);
                return Err(format!(
                    "the local mosquitto stopped for good: {why}; its last log:\n{new}"
                ));
            }
            let running = current >= starts
                && log.get(log_start..).is_some_and(|new| {
                    new.lines()
                        .any(|l| l.contains("mosquitto version") && l.ends_with(" running"))
                });
            if running
                && tokio::net::TcpStream::connect((HOST, self.port))
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "local mosquitto start {starts} (now {current}) did not accept connections \
                     on port {} within {timeout:?}; log:\n{log}",
                    self.port
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_conf(&self) {
        let dir = self.dir.path().display();
        // per_listener_settings must come before any listener or security line, and the bridge
        // files are included before the listener (spec/bridges.md §4).
        let conf = format!(
            "per_listener_settings false\n\
             include_dir {bridge_dir}\n\
             listener {port} {HOST}\n\
             allow_anonymous true\n\
             user root\n\
             persistence true\n\
             persistence_location {dir}/\n\
             persistence_file mosquitto.db\n\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n\
             log_type information\n\
             log_type subscribe\n\
             connection_messages true\n\
             log_timestamp true\n\
             log_timestamp_format %H:%M:%S\n",
            port = self.port,
            bridge_dir = self.bridge_dir.display(),
        );
        fs::write(self.file(LOCAL_CONF), conf).expect("cannot write the local mosquitto.conf");
    }

    fn write_restart_script(&self) {
        let script = format!(
            "#!/bin/sh\n\
             # Restarts the test's local mosquitto (tests/common/bridge.rs): SIGTERM, and the\n\
             # test's supervisor starts it again on the same port and config.\n\
             set -eu\n\
             echo restart >> '{counter}'\n\
             old=$(cat '{pid}')\n\
             kill -TERM \"$old\"\n\
             i=0\n\
             while [ \"$(cat '{pid}' 2>/dev/null || true)\" = \"$old\" ]; do\n\
             \x20 i=$((i + 1))\n\
             \x20 if [ \"$i\" -gt 200 ]; then echo 'mosquitto was not started again within 10 s' >&2; exit 1; fi\n\
             \x20 sleep 0.05\n\
             done\n",
            counter = self.file(RESTART_COUNTER).display(),
            pid = self.file(LOCAL_PID).display(),
        );
        let path = self.restart_script();
        fs::write(&path, script).expect("cannot write the restart script");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .expect("cannot make the restart script executable");
    }

    /// Stops the supervisor and kills the running mosquitto (SIGKILL), waiting for both.
    fn shut_down(&mut self) {
        {
            let mut s = lock(&self.state);
            s.stop = true;
            if let Some(pid) = s.pid {
                signal(pid, "KILL");
            }
        }
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.join();
        }
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The supervisor thread: start mosquitto, wait for its exit, start it again after a clean exit
/// (SIGTERM), until asked to stop.
fn supervise(state: &Mutex<Supervised>, conf: &Path, log: &Path, pid_file: &Path) {
    loop {
        let mut child = {
            let mut s = lock(state);
            if s.stop {
                return;
            }
            let log_start = fs::metadata(log).map(|m| m.len() as usize).unwrap_or(0);
            let child = match spawn_mosquitto(conf, log) {
                Ok(child) => child,
                Err(why) => {
                    s.failure = Some(why);
                    return;
                }
            };
            // Written atomically: the restart script polls it.
            let tmp = pid_file.with_extension("pid.tmp");
            let written = fs::write(&tmp, format!("{}\n", child.id()))
                .and_then(|()| fs::rename(&tmp, pid_file));
            if let Err(e) = written {
                s.failure = Some(format!("cannot write {}: {e}", pid_file.display()));
            }
            s.pid = Some(child.id());
            s.starts += 1;
            s.log_start = log_start;
            child
        };
        let status = child.wait();
        let mut s = lock(state);
        s.pid = None;
        match status {
            Ok(status) if status.success() && !s.stop => {}
            Ok(status) => {
                if !s.stop {
                    s.failure = Some(format!("mosquitto exited ({status})"));
                }
                return;
            }
            Err(e) => {
                s.failure = Some(format!("cannot wait for mosquitto: {e}"));
                return;
            }
        }
    }
}

fn spawn_mosquitto(conf: &Path, log: &Path) -> Result<Child, String> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    let stdout = log
        .try_clone()
        .map_err(|e| format!("cannot duplicate the log handle: {e}"))?;
    Command::new(mosquitto::mosquitto_binary())
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log)
        .spawn()
        .map_err(|e| {
            format!("cannot run mosquitto ({e}); install it: apt-get install -y mosquitto")
        })
}

/// kill(1) without `unsafe`; a process already gone is not an error here.
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn lock(state: &Mutex<Supervised>) -> MutexGuard<'_, Supervised> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// A subscriber with a persistent session (clean session off, a fixed client id): what the
/// broker routes to it while it is disconnected, e.g. while the cloud restarts, is queued and
/// delivered when it is back, so no delivery races its reconnection. Subscribes once, at QoS 1.
pub struct SessionSubscriber {
    id: String,
    inbox: tokio::sync::Mutex<(mpsc::UnboundedReceiver<Message>, VecDeque<Message>)>,
    task: tokio::task::JoinHandle<()>,
}

const WAIT: Duration = Duration::from_secs(10);

impl SessionSubscriber {
    /// Connects to `127.0.0.1:<port>` as `client_id` and subscribes to `filter`; returns after
    /// the SUBACK. Panics after 10 s.
    pub async fn connect(port: u16, client_id: &str, filter: &str) -> SessionSubscriber {
        let mut options = MqttOptions::new(client_id, HOST, port);
        options
            .set_clean_session(false)
            .set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (inbox_tx, inbox_rx) = mpsc::unbounded_channel();
        let (suback_tx, mut suback_rx) = watch::channel(0u64);
        let (connack_tx, mut connack_rx) = watch::channel(0u64);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => connack_tx.send_modify(|n| *n += 1),
                    Ok(Event::Incoming(Packet::SubAck(_))) => suback_tx.send_modify(|n| *n += 1),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = inbox_tx.send(Message {
                            topic: p.topic,
                            payload: p.payload,
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    // The broker is away (restarting): try again soon; the session waits.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        let connected = tokio::time::timeout(WAIT, connack_rx.wait_for(|n| *n > 0)).await;
        assert!(
            matches!(connected, Ok(Ok(_))),
            "{client_id} did not connect to port {port} within {WAIT:?}"
        );
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("the event loop runs");
        let acked = tokio::time::timeout(WAIT, suback_rx.wait_for(|n| *n > 0)).await;
        assert!(
            matches!(acked, Ok(Ok(_))),
            "{client_id}: no SUBACK for {filter} within {WAIT:?}"
        );
        SessionSubscriber {
            id: client_id.to_owned(),
            inbox: tokio::sync::Mutex::new((inbox_rx, VecDeque::new())),
            task,
        }
    }

    /// The first message on `filter` with exactly `payload`; others stay buffered. Panics after
    /// `timeout`, listing what arrived.
    pub async fn expect_payload(&self, filter: &str, payload: &str, timeout: Duration) -> Message {
        let matches =
            |m: &Message| topic_matches(filter, &m.topic) && m.payload == payload.as_bytes();
        let mut inbox = self.inbox.lock().await;
        let (rx, buffer) = &mut *inbox;
        if let Some(i) = buffer.iter().position(matches) {
            return buffer.remove(i).expect("index from position");
        }
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(m)) if matches(&m) => return m,
                Ok(Some(m)) => buffer.push_back(m),
                _ => panic!(
                    "{}: no {payload:?} on {filter} within {timeout:?}; received:\n{}",
                    self.id,
                    describe(&*buffer)
                ),
            }
        }
    }
}

impl Drop for SessionSubscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

//! Proves rendered bridge files against the real mosquitto (`edge-agent bridge validate`,
//! issue #4): writes them into a fresh temp dir, starts mosquitto on a throw-away config that
//! includes them, and reports whether it got as far as running.
//!
//! mosquitto refuses a bad file at load with `Error: <what>` and `Error found at <file>:<line>.`
//! (spec/bridges.md §4); a refusal is mapped back to the cloud, line and YAML key that produced
//! the line. Rendering, and making sure no bridge address leads anywhere (the renderer points
//! them at a closed loopback port), are the caller's business: this module runs mosquitto only
//! until it reports `running`, then kills it. Problems that appear only at connect time are out
//! of its reach (see [`super::credentials`]).

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;

use super::render::Rendered;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error("cannot run the mosquitto binary {} (bridge.mosquitto_bin)", .bin.display())]
    Binary {
        bin: PathBuf,
        #[source]
        source: io::Error,
    },
    /// mosquitto refused the files; `line` is `None` when mosquitto named no line (e.g. a
    /// bridge with no `topic`: `Invalid bridge configuration: no topics defined.`).
    #[error("{}", refusal(.cloud, .file_name, *.line, .key.as_deref(), .message))]
    Refused {
        cloud: String,
        file_name: String,
        line: Option<usize>,
        key: Option<String>,
        /// mosquitto's own error line(s), without their timestamps, joined by "; ".
        message: String,
    },
    #[error("mosquitto did not report that it was running within {} ms", .timeout.as_millis())]
    Timeout { timeout: Duration },
    #[error("mosquitto could not listen on 127.0.0.1:{port}: the port was taken each time")]
    PortTaken { port: u16 },
    #[error("cannot find a free loopback port for the proof broker")]
    NoPort {
        #[source]
        source: io::Error,
    },
    #[error("mosquitto ({}) stopped before it was running ({status}) without naming a bridge file: {output}", .bin.display())]
    Failed {
        bin: PathBuf,
        status: String,
        /// Its error lines, or its last lines when it printed no error.
        output: String,
    },
    #[error("cannot prove the bridge file {file_name:?}: {reason}")]
    FileName {
        file_name: String,
        reason: &'static str,
    },
    #[error("cannot write the bridge files into a temp dir")]
    TempDir {
        #[source]
        source: io::Error,
    },
}

/// A new port is tried this many times when another process takes the free one first.
const PORT_ATTEMPTS: usize = 3;
/// Lines of mosquitto output kept for a report; the rest is read and dropped.
const MAX_LINES: usize = 200;
const BRIDGE_DIR: &str = "bridges";
const MAIN_CONF: &str = "mosquitto.conf";

/// Starts `mosquitto_bin` on `files` and returns `Ok` once it reports that it is running.
///
/// `timeout` bounds the whole proof, including the extra runs made when mosquitto refuses
/// several files without naming one (each file is then proved alone to find it).
pub async fn prove(
    mosquitto_bin: &Path,
    files: &[Rendered],
    timeout: Duration,
) -> Result<(), ProveError> {
    check_file_names(files)?;
    let deadline = Instant::now() + timeout;
    let report = match run(mosquitto_bin, files, deadline, timeout).await? {
        Outcome::Running => return Ok(()),
        Outcome::Stopped(report) => report,
    };
    if let Some(refused) = report.locate(files) {
        return Err(refused);
    }
    // A place that is not a bridge file (its own config) or no error line at all: mosquitto
    // failed for a reason of its own.
    if report.errors.is_empty() || !report.locations.is_empty() {
        return Err(report.failed(mosquitto_bin));
    }
    // Errors found after every file was read (a bridge without topics) name no place. One file
    // is then the culprit; among several, the first that mosquitto refuses on its own is.
    if let [only] = files {
        return Err(report.refused(only, None));
    }
    for file in files {
        if let Outcome::Stopped(alone) =
            run(mosquitto_bin, std::slice::from_ref(file), deadline, timeout).await?
        {
            return Err(alone
                .locate(std::slice::from_ref(file))
                .unwrap_or_else(|| alone.refused(file, None)));
        }
    }
    Err(report.failed(mosquitto_bin))
}

fn check_file_names(files: &[Rendered]) -> Result<(), ProveError> {
    for (i, file) in files.iter().enumerate() {
        let name = &file.file_name;
        let reason = if name.contains(['/', '\0', '\n', '\r']) {
            Some("a file name may not contain '/', NUL or a line break")
        } else if !name.ends_with(".conf") || name.len() == ".conf".len() {
            Some("mosquitto's include_dir reads only <name>.conf files")
        } else if files[..i].iter().any(|f| f.file_name == *name) {
            Some("two files have this name")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(ProveError::FileName {
                file_name: name.clone(),
                reason,
            });
        }
    }
    Ok(())
}

enum Outcome {
    Running,
    Stopped(Report),
}

/// What a mosquitto that stopped before running said.
struct Report {
    bridge_dir: PathBuf,
    status: String,
    /// The `Error...` lines (without `Error found at`), timestamps removed.
    errors: Vec<String>,
    /// `(path, line)` of every `Error found at <path>:<line>.`, innermost first.
    locations: Vec<(PathBuf, usize)>,
    /// The last lines, for a report when there is no error line.
    tail: Vec<String>,
}

impl Report {
    /// The refusal at the first location that is one of `files`.
    fn locate(&self, files: &[Rendered]) -> Option<ProveError> {
        self.locations.iter().find_map(|(path, line)| {
            let name = path.strip_prefix(&self.bridge_dir).ok()?.to_str()?;
            let file = files.iter().find(|f| f.file_name == name)?;
            Some(self.refused(file, Some(*line)))
        })
    }

    fn refused(&self, file: &Rendered, line: Option<usize>) -> ProveError {
        let key = line
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| file.keys.get(i).cloned())
            .flatten();
        ProveError::Refused {
            cloud: file.cloud.clone(),
            file_name: file.file_name.clone(),
            line,
            key,
            message: self.errors.join("; "),
        }
    }

    fn failed(&self, bin: &Path) -> ProveError {
        let output = match (self.errors.is_empty(), self.tail.is_empty()) {
            (false, _) => self.errors.join("; "),
            (true, false) => self.tail.join("; "),
            (true, true) => "it printed nothing".to_owned(),
        };
        ProveError::Failed {
            bin: bin.to_owned(),
            status: self.status.clone(),
            output,
        }
    }

    fn port_taken(&self) -> bool {
        self.errors
            .iter()
            .any(|e| e.contains("Address already in use"))
    }
}

/// One mosquitto run on `files`, retried on a new port when the free one was taken meanwhile.
async fn run(
    bin: &Path,
    files: &[Rendered],
    deadline: Instant,
    timeout: Duration,
) -> Result<Outcome, ProveError> {
    let dir = write_files(files).await?;
    let mut port = 0;
    for _ in 0..PORT_ATTEMPTS {
        port = free_port()?;
        let conf = dir.path().join(MAIN_CONF);
        let main_text = main_config(port, &dir.path().join(BRIDGE_DIR));
        tokio::fs::write(&conf, main_text)
            .await
            .map_err(|source| ProveError::TempDir { source })?;
        match run_once(bin, &conf, &dir.path().join(BRIDGE_DIR), deadline, timeout).await? {
            Outcome::Stopped(report) if report.port_taken() => continue,
            outcome => return Ok(outcome),
        }
    }
    Err(ProveError::PortTaken { port })
}

/// The throw-away broker: the bridge files first, as a deployment's `include_dir` comes before
/// its listeners (CRATES.md), then a loopback listener, no persistence, and a log on stderr
/// that includes the `running` notice. mosquitto takes one `log_type` per line: a second word
/// on the same line is ignored.
fn main_config(port: u16, bridge_dir: &Path) -> String {
    format!(
        "# edge-agent bridge validate: a throw-away broker that only loads the bridge files\n\
         include_dir {}\n\
         listener {port} 127.0.0.1\n\
         allow_anonymous true\n\
         persistence false\n\
         log_dest stderr\n\
         log_type error\n\
         log_type warning\n\
         log_type notice\n\
         log_type information\n",
        bridge_dir.display()
    )
}

/// A fresh private temp dir with `bridges/<file_name>` for every file. mosquitto reads its
/// configuration before it drops root privileges to the `mosquitto` user (checked with 2.0.11),
/// so the dir can stay private (0700): the files may hold a `remote_password`.
async fn write_files(files: &[Rendered]) -> Result<TempDir, ProveError> {
    let temp_dir = |source| ProveError::TempDir { source };
    let dir = tempfile::Builder::new()
        .prefix("edge-agent-bridge-proof-")
        .tempdir()
        .map_err(temp_dir)?;
    let bridges = dir.path().join(BRIDGE_DIR);
    tokio::fs::create_dir(&bridges).await.map_err(temp_dir)?;
    for file in files {
        tokio::fs::write(bridges.join(&file.file_name), &file.text)
            .await
            .map_err(temp_dir)?;
    }
    Ok(dir)
}

/// A loopback port free right now. Another process may take it before mosquitto binds it:
/// [`run`] then tries another.
pub fn free_port() -> Result<u16, ProveError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|source| ProveError::NoPort { source })
}

async fn run_once(
    bin: &Path,
    conf: &Path,
    bridge_dir: &Path,
    deadline: Instant,
    timeout: Duration,
) -> Result<Outcome, ProveError> {
    let mut command = Command::new(bin);
    crate::service::unmanaged(command.as_std_mut());
    let mut child = command
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ProveError::Binary {
            bin: bin.to_owned(),
            source,
        })?;
    let Some(stderr) = child.stderr.take() else {
        return Err(ProveError::Binary {
            bin: bin.to_owned(),
            source: io::Error::other("its stderr was not captured"),
        });
    };
    let read = tokio::time::timeout_at(deadline, read_log(stderr)).await;
    let Ok(log) = read else {
        // Dropping the child kills it (kill_on_drop).
        return Err(ProveError::Timeout { timeout });
    };
    if log.running {
        // A kill error means it has exited already, which is what was wanted.
        let _ = child.kill().await;
        return Ok(Outcome::Running);
    }
    let status = match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(Ok(status)) => status.to_string(),
        Ok(Err(e)) => format!("its exit status is unknown: {e}"),
        Err(_) => return Err(ProveError::Timeout { timeout }),
    };
    Ok(Outcome::Stopped(Report {
        bridge_dir: bridge_dir.to_owned(),
        status,
        errors: log.errors,
        locations: log.locations,
        tail: log.tail,
    }))
}

#[derive(Default)]
struct Log {
    running: bool,
    errors: Vec<String>,
    locations: Vec<(PathBuf, usize)>,
    tail: Vec<String>,
}

/// Reads mosquitto's log until it says it is running or closes stderr (it exited).
async fn read_log(stderr: impl AsyncRead + Unpin) -> Log {
    let mut reader = BufReader::new(stderr);
    let mut log = Log::default();
    let mut buf = Vec::new();
    let mut kept = 0;
    loop {
        buf.clear();
        // A read error ends the log like an EOF: the exit status tells the rest.
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return log,
            Ok(_) => {}
        }
        let raw = String::from_utf8_lossy(&buf);
        let line = without_timestamp(raw.trim_end());
        if line.starts_with("mosquitto version ") && line.ends_with(" running") {
            log.running = true;
            return log;
        }
        if kept >= MAX_LINES {
            continue;
        }
        kept += 1;
        if let Some(location) = line.strip_prefix("Error found at ") {
            if let Some(location) = parse_location(location) {
                log.locations.push(location);
            }
        } else if line.starts_with("Error") {
            log.errors.push(line.to_owned());
        }
        if log.tail.len() == 5 {
            log.tail.remove(0);
        }
        log.tail.push(line.to_owned());
    }
}

/// `1795330716: Error: ...` -> `Error: ...`.
fn without_timestamp(line: &str) -> &str {
    match line.split_once(": ") {
        Some((stamp, rest)) if !stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit()) => {
            rest
        }
        _ => line,
    }
}

/// `<path>:<line>.` -> `(path, line)`.
fn parse_location(text: &str) -> Option<(PathBuf, usize)> {
    let text = text.strip_suffix('.').unwrap_or(text);
    let (path, line) = text.rsplit_once(':')?;
    Some((PathBuf::from(path), line.parse().ok()?))
}

fn refusal(
    cloud: &str,
    file_name: &str,
    line: Option<usize>,
    key: Option<&str>,
    message: &str,
) -> String {
    let key = key.map(|k| format!("{k}: ")).unwrap_or_default();
    let line = line.map(|n| format!("line {n} of ")).unwrap_or_default();
    format!("{key}mosquitto refused {line}{file_name} (cloud \"{cloud}\"): {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    use std::os::unix::fs::PermissionsExt;

    const MOSQUITTO: &str = "mosquitto";
    const TIMEOUT: Duration = Duration::from_secs(10);

    /// A bridge file as spec/bridges.md §1 renders it, its address a closed loopback port, with
    /// the YAML key of each line; `extra` lines are inserted before the `topic` lines.
    fn c8y_file(cloud: &str, extra: &[(&str, &str)]) -> Rendered {
        let mut lines: Vec<(String, Option<String>)> = Vec::new();
        let key = |k: &str| Some(format!("bridge.clouds[0].{k}"));
        let fixed = [
            format!("# generated by edge-agent from /etc/edge-agent/edge-agent.yaml (cloud \"{cloud}\"); edits are overwritten"),
            format!("connection edge_to_{cloud}"),
        ];
        lines.extend(fixed.into_iter().map(|l| (l, None)));
        lines.extend([
            ("address 127.0.0.1:1".to_owned(), key("url")),
            ("bridge_capath /etc/ssl/certs".to_owned(), key("ca")),
            ("remote_clientid gw-001".to_owned(), key("device_id")),
            (format!("local_clientid edge_to_{cloud}.local"), None),
            ("try_private false".to_owned(), None),
            ("start_type automatic".to_owned(), None),
            ("cleansession true".to_owned(), key("clean_session")),
            ("local_cleansession false".to_owned(), None),
            ("notifications true".to_owned(), None),
            ("notifications_local_only true".to_owned(), None),
            (
                format!("notification_topic te/device/main/service/mosquitto-{cloud}-bridge/status/health"),
                None,
            ),
            ("bridge_attempt_unsubscribe false".to_owned(), None),
            ("keepalive_interval 60".to_owned(), key("keepalive")),
        ]);
        lines.extend(extra.iter().map(|(line, k)| ((*line).to_owned(), key(k))));
        lines.push((String::new(), None));
        lines.push((format!("topic s/us/# out 1 {cloud}/ \"\""), None));
        lines.push((format!("topic s/ds in 1 {cloud}/ \"\""), None));
        proof_file(cloud, lines)
    }

    fn proof_file(cloud: &str, lines: Vec<(String, Option<String>)>) -> Rendered {
        let (text, keys): (Vec<String>, Vec<Option<String>>) = lines.into_iter().unzip();
        Rendered {
            file_name: format!("{cloud}-bridge.conf"),
            text: text.join("\n") + "\n",
            keys,
            cloud: cloud.to_owned(),
            secret: false,
        }
    }

    /// The line number of `needle` in `file`.
    fn line_of(file: &Rendered, needle: &str) -> usize {
        file.text
            .lines()
            .position(|l| l == needle)
            .map(|i| i + 1)
            .expect("line in file")
    }

    async fn prove_files(files: &[Rendered]) -> Result<(), ProveError> {
        prove(Path::new(MOSQUITTO), files, TIMEOUT).await
    }

    #[tokio::test]
    async fn a_valid_bridge_file_loads() {
        prove_files(&[c8y_file("c8y", &[])])
            .await
            .expect("a valid file loads");
    }

    #[tokio::test]
    async fn no_files_load_too() {
        prove_files(&[]).await.expect("an empty bridge dir loads");
    }

    #[tokio::test]
    async fn a_refused_line_is_mapped_to_its_cloud_line_and_key() {
        let cases = [
            (
                "topic a/# upstream 1 x/ y/",
                "topics[0]",
                "Error: Invalid bridge topic direction 'upstream'.",
            ),
            (
                "try_private yes",
                "options.try_private",
                "Error: Invalid try_private value (yes).",
            ),
            (
                "keepalive_interval 70000",
                "options.keepalive_interval",
                "Error: Bridge keepalive value too high.",
            ),
            (
                "restart_timeout 10 5",
                "options.restart_timeout",
                "Error: backoff cap is lower than the base in restart_timeout.",
            ),
            (
                "frobnicate on",
                "options.frobnicate",
                "Error: Unknown configuration variable \"frobnicate\".",
            ),
        ];
        for (bad, key, message) in cases {
            let file = c8y_file("c8y", &[(bad, key)]);
            let err = prove_files(std::slice::from_ref(&file))
                .await
                .expect_err(bad);
            let line = line_of(&file, bad);
            let ProveError::Refused {
                cloud,
                file_name,
                line: refused_line,
                key: refused_key,
                message: refused_message,
            } = &err
            else {
                panic!("{bad}: not a refusal: {err:?}");
            };
            assert_eq!(cloud, "c8y", "{bad}");
            assert_eq!(file_name, "c8y-bridge.conf", "{bad}");
            assert_eq!(*refused_line, Some(line), "{bad}");
            let full_key = format!("bridge.clouds[0].{key}");
            assert_eq!(refused_key.as_deref(), Some(full_key.as_str()), "{bad}");
            assert_eq!(refused_message, message, "{bad}");
            assert_eq!(
                err.to_string(),
                format!("{full_key}: mosquitto refused line {line} of c8y-bridge.conf (cloud \"c8y\"): {message}")
            );
        }
    }

    #[tokio::test]
    async fn a_refused_fixed_line_has_no_key() {
        let mut file = c8y_file("c8y", &[]);
        file.text = file
            .text
            .replace("start_type automatic", "start_type manual");
        let err = prove_files(&[file]).await.expect_err("manual start");
        assert!(
            matches!(
                &err,
                ProveError::Refused { line: Some(8), key: None, message, .. }
                    if message == "Error: Manual start_type not supported."
            ),
            "{err:?}"
        );
        assert!(err
            .to_string()
            .starts_with("mosquitto refused line 8 of c8y-bridge.conf"));
    }

    #[tokio::test]
    async fn a_refusal_in_the_second_file_names_the_second_cloud() {
        let good = c8y_file("a", &[]);
        let bad = c8y_file(
            "b",
            &[(
                "bridge_protocol_version mqttv5",
                "options.bridge_protocol_version",
            )],
        );
        let err = prove_files(&[good, bad])
            .await
            .expect_err("bad second file");
        assert!(
            matches!(&err, ProveError::Refused { cloud, file_name, .. } if cloud == "b" && file_name == "b-bridge.conf"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn two_bridges_with_one_connection_name_are_refused_at_the_second() {
        let first = c8y_file("c8y", &[]);
        let mut second = c8y_file("c8y", &[]);
        second.file_name = "d-bridge.conf".to_owned();
        second.cloud = "d".to_owned();
        let err = prove_files(&[first, second])
            .await
            .expect_err("duplicate name");
        assert!(
            matches!(
                &err,
                ProveError::Refused { cloud, line: Some(2), message, .. }
                    if cloud == "d" && message == "Error: Duplicate bridge name \"edge_to_c8y\"."
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_bridge_without_topics_is_found_among_several_files() {
        let good = c8y_file("a", &[]);
        let mut bad = c8y_file("b", &[]);
        bad.text = bad
            .text
            .lines()
            .filter(|l| !l.starts_with("topic "))
            .collect::<Vec<_>>()
            .join("\n");
        let err = prove_files(&[good, bad]).await.expect_err("no topics");
        assert!(
            matches!(
                &err,
                ProveError::Refused { cloud, line: None, key: None, message, .. }
                    if cloud == "b" && message == "Error: Invalid bridge configuration: no topics defined."
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "mosquitto refused b-bridge.conf (cloud \"b\"): Error: Invalid bridge configuration: no topics defined."
        );
    }

    #[tokio::test]
    async fn a_missing_binary_is_named_with_its_config_key() {
        let err = prove(Path::new("/nonexistent/mosquitto"), &[], TIMEOUT)
            .await
            .expect_err("no binary");
        assert!(matches!(err, ProveError::Binary { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "cannot run the mosquitto binary /nonexistent/mosquitto (bridge.mosquitto_bin)"
        );
        let source = std::error::Error::source(&err).expect("io source");
        assert_eq!(source.to_string(), "No such file or directory (os error 2)");
    }

    /// An executable shell script standing in for mosquitto.
    #[cfg(unix)]
    fn fake_mosquitto(dir: &TempDir, script: &str) -> PathBuf {
        let path = dir.path().join("fake-mosquitto");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// `prove` with a script just written: another test's fork can briefly hold the script's
    /// write descriptor, and exec then fails with ETXTBSY (rust-lang/rust#114554): retried.
    #[cfg(unix)]
    async fn prove_fake(bin: &Path, timeout: Duration) -> Result<(), ProveError> {
        const ETXTBSY: i32 = 26;
        let mut attempts = 0;
        loop {
            match prove(bin, &[], timeout).await {
                Err(ProveError::Binary { source, .. })
                    if source.raw_os_error() == Some(ETXTBSY) && attempts < 5 =>
                {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                result => return result,
            }
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_binary_that_never_runs_times_out() {
        let dir = TempDir::new().expect("temp dir");
        let bin = fake_mosquitto(&dir, "exec sleep 30");
        let started = std::time::Instant::now();
        let err = prove_fake(&bin, Duration::from_millis(300))
            .await
            .expect_err("timeout");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            err.to_string(),
            "mosquitto did not report that it was running within 300 ms"
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_port_taken_every_time_is_reported() {
        let dir = TempDir::new().expect("temp dir");
        let bin = fake_mosquitto(
            &dir,
            "echo '1795330719: Error: Address already in use' >&2; exit 1",
        );
        let err = prove_fake(&bin, TIMEOUT).await.expect_err("port taken");
        assert!(matches!(err, ProveError::PortTaken { .. }), "{err:?}");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_binary_that_exits_without_an_error_line_is_a_failure() {
        let dir = TempDir::new().expect("temp dir");
        let bin = fake_mosquitto(&dir, "echo 'not mosquitto' >&2; exit 0");
        let err = prove_fake(&bin, TIMEOUT).await.expect_err("not mosquitto");
        assert_eq!(
            err.to_string(),
            format!(
                "mosquitto ({}) stopped before it was running (exit status: 0) without naming a bridge file: not mosquitto",
                bin.display()
            )
        );
    }

    #[tokio::test]
    async fn file_names_mosquitto_would_skip_or_misplace_are_refused() {
        for name in ["c8y-bridge", "../c8y-bridge.conf", ".conf", "a\nb.conf"] {
            let mut file = c8y_file("c8y", &[]);
            file.file_name = name.to_owned();
            let err = prove_files(&[file]).await.expect_err(name);
            assert!(
                matches!(err, ProveError::FileName { .. }),
                "{name}: {err:?}"
            );
        }
        let err = prove_files(&[c8y_file("c8y", &[]), c8y_file("c8y", &[])])
            .await
            .expect_err("same name twice");
        assert!(matches!(err, ProveError::FileName { .. }), "{err:?}");
    }

    #[test]
    fn log_lines_lose_their_timestamp_and_locations_parse() {
        assert_eq!(without_timestamp("1795330716: Error: x: y"), "Error: x: y");
        assert_eq!(without_timestamp("Error: x"), "Error: x");
        assert_eq!(without_timestamp(": x"), ": x");
        assert_eq!(
            parse_location("/tmp/a b/bridges/c8y-bridge.conf:18."),
            Some((PathBuf::from("/tmp/a b/bridges/c8y-bridge.conf"), 18))
        );
        assert_eq!(parse_location("main.conf:x."), None);
        assert_eq!(parse_location("nothing"), None);
    }
}

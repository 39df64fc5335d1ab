//! `make bench`, file transfer (issue #3, "Performance"): the agent's `/te/v1/files` against nginx
//! serving the same directory, in the same run, with the same client.
//!
//! One temp dir holds everything on one filesystem: the store (the agent's `files.dir`, nginx's
//! `root`), the agent's data dir, nginx's config, logs and upload temp dir, and the source files
//! (1 GiB and 1 MiB of random-ish bytes, written once and fsynced). nginx 1.22 from Debian is
//! installed with apt when missing, and runs as a child process with its own config: one
//! process (`master_process off`), `sendfile on`, WebDAV `PUT`/`DELETE`. Measured with the curl
//! CLI on loopback, alternating agent and nginx, medians of 3: GET of the 1 GiB file (warm page
//! cache) and PUT of it to a fresh name (deleted after each run); the agent's RSS, sampled every
//! 20 ms, during its uploads and its downloads; then 100 concurrent GETs of the 1 MiB file from
//! each (reqwest, one connection each), checking every body's length.
//!
//! Not here: correctness of the service (the integration tests own it). Whatever fails is a row
//! with a reason, never a panic: the agent's rows say MISSED, nginx's say "-". The temp dir and
//! both child processes go away on every path out (drop guards).

use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::mosquitto::Broker;
use super::{free_port, median, ms, row, rss_kib, spawn_agent, Row};

const BIG: u64 = 1 << 30;
const SMALL: usize = 1 << 20;
const BLOCK: usize = 1 << 20;
const RUNS: usize = 3;
const CONCURRENT: usize = 100;
/// The source file, the stored copy served by GET, one upload and its temp file, with slack.
const MIN_FREE: u64 = 4 << 30;
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// curl's `--max-time` for one 1 GiB transfer; also bounds `sync`.
const TRANSFER_TIMEOUT_SECS: u64 = 300;
const APT_TIMEOUT_SECS: u64 = 600;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const RSS_INTERVAL: Duration = Duration::from_millis(20);
const RSS_TARGET_KIB: u64 = 16 * 1024;

/// Paths inside the store (URL path = path under `files.dir` = path under nginx's root).
const GET_PATH: &str = "bench/get-1GiB.bin";
const SMALL_PATH: &str = "bench/get-1MiB.bin";

/// The file-transfer rows, appended to the bench's table.
pub async fn run(binary: &Path) -> Vec<Row> {
    eprintln!("bench: file transfer (issue #3), agent against nginx");
    match Setup::new() {
        Ok(setup) => measure(binary, &setup).await,
        Err(why) => {
            eprintln!("bench: file transfer skipped: {why}");
            vec![row(
                "files: all file-transfer figures",
                format!("skipped: {why}"),
                "(issue #3)",
                None,
            )]
        }
    }
}

/// The temp dir and the source files: what both servers need before either starts.
struct Setup {
    dir: tempfile::TempDir,
    store: PathBuf,
    big: PathBuf,
    small: PathBuf,
}

impl Setup {
    fn new() -> Result<Setup, String> {
        curl_version()?;
        let dir = tempfile::Builder::new()
            .prefix("edge-agent-bench-files-")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let free = free_bytes(dir.path())?;
        if free < MIN_FREE {
            return Err(format!(
                "{:.1} GiB free under {}, {} GiB needed",
                free as f64 / (1u64 << 30) as f64,
                dir.path().display(),
                MIN_FREE >> 30
            ));
        }
        let store = dir.path().join("store");
        let src = dir.path().join("src");
        for d in [&store, &src] {
            fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        let big = src.join("1GiB.bin");
        let small = src.join("1MiB.bin");
        write_random(&big, BIG)?;
        write_random(&small, SMALL as u64)?;
        Ok(Setup {
            dir,
            store,
            big,
            small,
        })
    }
}

async fn measure(binary: &Path, setup: &Setup) -> Vec<Row> {
    // The agent may need a broker to be ready; the issue-#2 part stopped its own.
    let broker = Broker::start().await;
    let agent = Agent::start(binary, setup, broker.port());
    if let Err(why) = &agent {
        eprintln!("bench: the agent did not start: {why}");
    }
    let nginx = Nginx::start(setup);
    if let Err(why) = &nginx {
        eprintln!("bench: nginx is not available: {why}");
    }
    let agent_side = agent
        .as_ref()
        .map(|a| Side {
            files: format!("{}/te/v1/files", a.base),
        })
        .map_err(Clone::clone);
    let nginx_side = nginx
        .as_ref()
        .map(|n| Side {
            files: n.base.clone(),
        })
        .map_err(Clone::clone);
    let (agent_ok, nginx_ok) = (agent_side.as_ref().ok(), nginx_side.as_ref().ok());
    let agent_pid = agent.as_ref().ok().map(|a| a.child.0.id());

    // Uploads, alternating. The agent's untimed first one stores the file the downloads read
    // (if it cannot, a hard link puts it in place for nginx); nginx gets an untimed first one.
    let mut agent_put = Series::new(&agent_side);
    let mut nginx_put = Series::new(&nginx_side);
    let mut nginx_durable = Series::new(&nginx_side);
    let sampler = agent_pid.map(RssSampler::start);
    if let Some(side) = agent_ok {
        if let Err(why) = put(side, &setup.big, GET_PATH, setup) {
            eprintln!("bench: agent PUT of {GET_PATH} failed: {why}");
        }
    }
    if let Some(side) = nginx_ok {
        let _ = put_and_delete(side, &setup.big, "nginx-warm-up", setup, false);
    }
    for run in 0..RUNS {
        if let Some(side) = agent_ok {
            let name = format!("agent-{run}");
            agent_put.record(|| put_and_delete(side, &setup.big, &name, setup, true));
        }
        if let Some(side) = nginx_ok {
            let name = format!("nginx-{run}");
            nginx_put.record(|| put_and_delete(side, &setup.big, &name, setup, false));
            let name = format!("nginx-durable-{run}");
            nginx_durable.record(|| put_durable_and_delete(side, &setup.big, &name, setup));
        }
    }
    let rss_put = sampler.map(RssSampler::finish);
    place(&setup.big, &setup.store.join(GET_PATH));

    // Downloads of that one file, alternating; one untimed GET from each warms the page cache.
    let mut agent_get = Series::new(&agent_side);
    let mut nginx_get = Series::new(&nginx_side);
    let sampler = agent_pid.map(RssSampler::start);
    for side in [agent_ok, nginx_ok].into_iter().flatten() {
        let _ = get(side, GET_PATH, BIG);
    }
    for _ in 0..RUNS {
        if let Some(side) = agent_ok {
            agent_get.record(|| get(side, GET_PATH, BIG));
        }
        if let Some(side) = nginx_ok {
            nginx_get.record(|| get(side, GET_PATH, BIG));
        }
    }
    let rss_get = sampler.map(RssSampler::finish);

    // 100 concurrent downloads of a 1 MiB file.
    if let Ok(side) = &agent_side {
        if let Err(why) = put(side, &setup.small, SMALL_PATH, setup) {
            eprintln!("bench: agent PUT of {SMALL_PATH} failed: {why}");
        }
    }
    place(&setup.small, &setup.store.join(SMALL_PATH));
    let agent_many = match &agent_side {
        Ok(side) => concurrent_gets(side).await,
        Err(why) => Err(why.clone()),
    };
    let nginx_many = match &nginx_side {
        Ok(side) => concurrent_gets(side).await,
        Err(why) => Err(why.clone()),
    };

    let nginx_name = nginx
        .as_ref()
        .map(|n| n.version.clone())
        .unwrap_or_else(|_| "nginx".into());
    let mut rows = Vec::new();
    throughput_rows(
        &mut rows,
        "GET 1 GiB (page cache), curl",
        &agent_get,
        &nginx_get,
        &nginx_name,
        "sendfile",
        0.8,
    );
    throughput_rows(
        &mut rows,
        "PUT 1 GiB to a new name, curl",
        &agent_put,
        &nginx_put,
        &nginx_name,
        "WebDAV, no fsync",
        0.7,
    );
    // A reference, not the target's baseline: nginx with the durability of the agent's 201.
    let durable = nginx_durable.median();
    rows.push(row(
        &format!(
            "files: PUT 1 GiB, {nginx_name} + fdatasync of the stored file (median of {RUNS})"
        ),
        match (durable, &nginx_durable.failure) {
            (Some(d), _) => format!(
                "{} [{}]{}",
                rate(d),
                nginx_durable.each(),
                agent_put
                    .median()
                    .map(|a| format!(" (agent ratio {:.2})", a / d))
                    .unwrap_or_default()
            ),
            (None, Some(why)) => format!("unavailable: {why}"),
            (None, None) => "no figure".into(),
        },
        "(reference)",
        None,
    ));
    rows.push(rss_row("upload", rss_put, &agent_put));
    rows.push(rss_row("download", rss_get, &agent_get));
    rows.push(concurrent_row("agent", &agent_many, true));
    rows.push(concurrent_row(&nginx_name, &nginx_many, false));
    drop(nginx);
    drop(agent);
    drop(broker);
    rows
}

/// A server under test.
struct Side {
    /// URL prefix of the store, without the trailing `/`.
    files: String,
}

impl Side {
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.files)
    }
}

/// Throughputs of repeated transfers, in bytes/s; the first failure ends the series.
struct Series {
    values: Vec<f64>,
    failure: Option<String>,
}

impl Series {
    fn new<T>(side: &Result<T, String>) -> Series {
        Series {
            values: Vec::new(),
            failure: side.as_ref().err().cloned(),
        }
    }

    fn record(&mut self, transfer: impl FnOnce() -> Result<f64, String>) {
        if self.failure.is_some() {
            return;
        }
        match transfer() {
            Ok(speed) => self.values.push(speed),
            Err(why) => {
                eprintln!("bench: {why}");
                self.failure = Some(why);
            }
        }
    }

    fn median(&self) -> Option<f64> {
        (self.failure.is_none() && !self.values.is_empty()).then(|| median(&self.values))
    }

    fn each(&self) -> String {
        self.values
            .iter()
            .map(|v| rate(*v))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn throughput_rows(
    rows: &mut Vec<Row>,
    what: &str,
    agent: &Series,
    nginx: &Series,
    nginx_name: &str,
    nginx_mode: &str,
    target: f64,
) {
    let (a, n) = (agent.median(), nginx.median());
    let ratio = a.zip(n).map(|(a, n)| a / n);
    rows.push(row(
        &format!("files: {what}, agent (median of {RUNS})"),
        match (a, &agent.failure) {
            (Some(a), _) => format!("{} [{}]", rate(a), agent.each()),
            (None, Some(why)) => format!("failed: {why}"),
            (None, None) => "no figure".into(),
        },
        &format!(">= {target} x nginx"),
        match (ratio, a) {
            (Some(r), _) => Some(r >= target),
            (None, None) => Some(false),
            (None, Some(_)) => None,
        },
    ));
    rows.push(row(
        &format!("files: {what}, {nginx_name} {nginx_mode} (median of {RUNS})"),
        match (n, &nginx.failure) {
            (Some(n), _) => format!(
                "{} [{}]{}",
                rate(n),
                nginx.each(),
                ratio
                    .map(|r| format!(" (agent ratio {r:.2})"))
                    .unwrap_or_default()
            ),
            (None, Some(why)) => format!("unavailable: {why}"),
            (None, None) => "no figure".into(),
        },
        "(baseline)",
        None,
    ));
}

fn rss_row(what: &str, peak: Option<(u64, u64)>, transfers: &Series) -> Row {
    let label = format!("files: agent RSS growth during 1 GiB {what}s (peak - before)");
    match (peak, &transfers.failure) {
        (_, Some(why)) => row(
            &label,
            format!("no {what} completed: {why}"),
            "<= 16 MiB",
            Some(false),
        ),
        (Some((before, peak)), None) => {
            let growth = peak.saturating_sub(before);
            row(
                &label,
                format!(
                    "+{:.1} MiB ({:.1} -> {:.1} MiB)",
                    growth as f64 / 1024.0,
                    before as f64 / 1024.0,
                    peak as f64 / 1024.0
                ),
                "<= 16 MiB",
                Some(growth <= RSS_TARGET_KIB),
            )
        }
        (None, None) => row(&label, "no samples".into(), "<= 16 MiB", None),
    }
}

/// Latencies of one burst of concurrent downloads, sorted, and how many failed.
struct Burst {
    latencies: Vec<Duration>,
    failures: usize,
    first_failure: Option<String>,
    wall: Duration,
}

fn concurrent_row(who: &str, burst: &Result<Burst, String>, is_agent: bool) -> Row {
    let label = format!("files: {CONCURRENT} concurrent 1 MiB GETs, {who}: p50 / p99, failures");
    let (target, verdict_if_failed) = if is_agent {
        ("all complete, p99 reported", Some(false))
    } else {
        ("(reference)", None)
    };
    match burst {
        Ok(b) if !b.latencies.is_empty() => {
            let p = |q: usize| {
                ms(b.latencies[((b.latencies.len() * q) / 100).min(b.latencies.len() - 1)])
            };
            let figure = format!(
                "{:.1} ms / {:.1} ms, {} failed, all done in {:.0} ms{}",
                p(50),
                p(99),
                b.failures,
                ms(b.wall),
                b.first_failure
                    .as_ref()
                    .map(|w| format!(" (first: {w})"))
                    .unwrap_or_default()
            );
            let ok = is_agent.then_some(b.failures == 0);
            row(&label, figure, target, ok)
        }
        Ok(b) => row(
            &label,
            format!(
                "all {} failed (first: {})",
                b.failures,
                b.first_failure.as_deref().unwrap_or("?")
            ),
            target,
            verdict_if_failed,
        ),
        Err(why) => row(
            &label,
            format!("unavailable: {why}"),
            target,
            verdict_if_failed,
        ),
    }
}

async fn concurrent_gets(side: &Side) -> Result<Burst, String> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| format!("no HTTP client: {e}"))?;
    let url = side.url(SMALL_PATH);
    let barrier = Arc::new(tokio::sync::Barrier::new(CONCURRENT + 1));
    let tasks: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let (client, url, barrier) = (client.clone(), url.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let t = Instant::now();
                let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
                let status = response.status();
                let body = response.bytes().await.map_err(|e| e.to_string())?;
                if status != 200 || body.len() != SMALL {
                    return Err(format!("HTTP {status}, {} bytes", body.len()));
                }
                Ok(t.elapsed())
            })
        })
        .collect();
    barrier.wait().await;
    let started = Instant::now();
    let mut burst = Burst {
        latencies: Vec::with_capacity(CONCURRENT),
        failures: 0,
        first_failure: None,
        wall: Duration::ZERO,
    };
    for task in tasks {
        match task.await {
            Ok(Ok(latency)) => burst.latencies.push(latency),
            Ok(Err(why)) => {
                burst.failures += 1;
                burst.first_failure.get_or_insert(why);
            }
            Err(e) => {
                burst.failures += 1;
                burst.first_failure.get_or_insert(e.to_string());
            }
        }
    }
    burst.wall = started.elapsed();
    burst.latencies.sort();
    Ok(burst)
}

/// One timed GET of `path`; bytes/s as curl measured them.
fn get(side: &Side, path: &str, expected: u64) -> Result<f64, String> {
    let url = side.url(path);
    let t = curl(&[&url])?;
    if t.status != 200 || t.downloaded != expected {
        return Err(format!(
            "GET {path}: HTTP {}, {} bytes",
            t.status, t.downloaded
        ));
    }
    Ok(t.download_speed)
}

/// One PUT of `local` to `path`; bytes/s as curl measured them. Checks the stored size.
fn put(side: &Side, local: &Path, path: &str, setup: &Setup) -> Result<f64, String> {
    let url = side.url(path);
    sync();
    let t = curl(&["--upload-file", &local.to_string_lossy(), &url])?;
    let expected = fs::metadata(local).map(|m| m.len()).unwrap_or(0);
    if t.status != 201 && t.status != 204 {
        return Err(format!("PUT {path}: HTTP {}", t.status));
    }
    let stored = fs::metadata(setup.store.join(path))
        .map(|m| m.len())
        .unwrap_or(0);
    if t.uploaded != expected || stored != expected {
        return Err(format!(
            "PUT {path}: sent {} bytes, {stored} stored",
            t.uploaded
        ));
    }
    Ok(t.upload_speed)
}

/// A timed upload to a fresh name, deleted afterwards (through the agent's API, so that its
/// quota accounting sees it, then from disk in case that failed) so the disk does not fill.
fn put_and_delete(
    side: &Side,
    local: &Path,
    name: &str,
    setup: &Setup,
    is_agent: bool,
) -> Result<f64, String> {
    let path = format!("bench/put-{name}.bin");
    let speed = put(side, local, &path, setup);
    if is_agent {
        let _ = curl(&["-X", "DELETE", &side.url(&path)]);
    }
    match fs::remove_file(setup.store.join(&path)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => eprintln!("bench: cannot remove {path}: {e}"),
    }
    speed
}

/// nginx's PUT of `local`, then an fdatasync of the stored file: what it takes nginx to have
/// the file on disk, as the agent has when it answers 201. Bytes/s over both.
fn put_durable_and_delete(
    side: &Side,
    local: &Path,
    name: &str,
    setup: &Setup,
) -> Result<f64, String> {
    let path = format!("bench/put-{name}.bin");
    let stored = setup.store.join(&path);
    let result = put(side, local, &path, setup).and_then(|speed| {
        let size = fs::metadata(local).map_err(|e| e.to_string())?.len() as f64;
        let started = Instant::now();
        fs::File::open(&stored)
            .and_then(|f| f.sync_data())
            .map_err(|e| format!("fdatasync {path}: {e}"))?;
        Ok(size / (size / speed + started.elapsed().as_secs_f64()))
    });
    let _ = fs::remove_file(&stored);
    result
}

/// Puts `source` at `stored` with a hard link when the agent did not store it.
fn place(source: &Path, stored: &Path) {
    if stored.exists() {
        return;
    }
    if let Some(parent) = stored.parent() {
        let _ = fs::create_dir_all(parent);
    }
    if let Err(e) = fs::hard_link(source, stored) {
        eprintln!("bench: cannot link {}: {e}", stored.display());
    }
}

/// What curl reports about one transfer.
struct Transfer {
    status: u16,
    downloaded: u64,
    uploaded: u64,
    download_speed: f64,
    upload_speed: f64,
}

fn curl(args: &[&str]) -> Result<Transfer, String> {
    let output = Command::new("curl")
        .args(["-s", "-S", "-o", "/dev/null", "--max-time"])
        .arg(TRANSFER_TIMEOUT_SECS.to_string())
        .args([
            "-w",
            "%{http_code} %{size_download} %{size_upload} %{speed_download} %{speed_upload}",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run curl: {e}"))?;
    let out = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<&str> = out.split_whitespace().collect();
    let parse = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (parse(0), parse(1), parse(2), parse(3), parse(4)) {
        (Some(status), Some(down), Some(up), Some(down_speed), Some(up_speed))
            if output.status.success() =>
        {
            Ok(Transfer {
                status: status as u16,
                downloaded: down as u64,
                uploaded: up as u64,
                download_speed: down_speed,
                upload_speed: up_speed,
            })
        }
        _ => Err(format!(
            "curl {}: {} {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}

fn curl_version() -> Result<(), String> {
    match Command::new("curl").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("the curl CLI is missing (apt-get install -y curl)".into()),
    }
}

/// Writes back dirty pages before a timed upload, so that an earlier run's writeback does not
/// land in it. Bounded by `timeout`.
fn sync() {
    let _ = Command::new("timeout")
        .arg(TRANSFER_TIMEOUT_SECS.to_string())
        .arg("sync")
        .status();
}

/// Bytes available to us on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> Result<u64, String> {
    let output = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run df: {e}"))?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| format!("cannot read df's answer for {}", dir.display()))
}

/// `len` bytes: one random 1 MiB block, its first 8 bytes replaced by the block number, so no
/// two blocks are equal. Fsynced, so no writeback of it lands in a measurement.
fn write_random(path: &Path, len: u64) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut block = vec![0u8; BLOCK];
    getrandom::fill(&mut block).map_err(|e| format!("no random bytes: {e}"))?;
    let mut file = fs::File::create(path).map_err(fail)?;
    let mut written = 0u64;
    let mut n = 0u64;
    while written < len {
        block[..8].copy_from_slice(&n.to_le_bytes());
        let take = (len - written).min(BLOCK as u64) as usize;
        file.write_all(&block[..take]).map_err(fail)?;
        written += take as u64;
        n += 1;
    }
    file.sync_all().map_err(fail)
}

/// Samples a process's RSS every 20 ms on a thread, from `start` to `finish`.
struct RssSampler {
    before: u64,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let before = rss_kib(pid);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = before;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(RSS_INTERVAL);
            }
            peak.max(rss_kib(pid))
        });
        RssSampler {
            before,
            stop,
            thread,
        }
    }

    /// (RSS before, peak RSS), in KiB.
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let peak = self.thread.join().unwrap_or(0);
        (self.before, peak)
    }
}

/// A child process stopped on drop: SIGTERM, up to [`STOP_TIMEOUT`] to exit, then SIGKILL.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent's release binary with the store as its `files.dir`.
struct Agent {
    child: Reaped,
    base: String,
}

impl Agent {
    fn start(binary: &Path, setup: &Setup, mqtt_port: u16) -> Result<Agent, String> {
        let port = free_port();
        let config = setup.dir.path().join("edge-agent.yaml");
        fs::write(
            &config,
            format!(
                "mqtt:\n  port: {mqtt_port}\nhttp:\n  bind: 127.0.0.1:{port}\ndata_dir: {}\n\
                 files:\n  dir: {}\n  max_file_bytes: 2GiB\n  quota_bytes: 16GiB\nlog:\n  level: warn\n",
                setup.dir.path().join("data").display(),
                setup.store.display()
            ),
        )
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
        let mut child = Reaped(spawn_agent(binary, &config));
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.0.try_wait() {
                return Err(format!("the agent exited: {status}"));
            }
            if let Ok(t) = curl(&[&format!("{base}/readyz")]) {
                if t.status == 200 {
                    return Ok(Agent { child, base });
                }
            }
            if Instant::now() > deadline {
                return Err(format!("not ready within {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// nginx serving the store, as a child process with a config of its own.
struct Nginx {
    _child: Reaped,
    base: String,
    /// e.g. `nginx/1.22.1`.
    version: String,
}

impl Nginx {
    fn start(setup: &Setup) -> Result<Nginx, String> {
        let binary = nginx_binary()?;
        let version = Command::new(&binary)
            .arg("-v")
            .output()
            .ok()
            .and_then(|o| {
                let text = String::from_utf8_lossy(&o.stderr).to_string();
                text.split_whitespace()
                    .find(|w| w.starts_with("nginx/"))
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "nginx".into());
        let dir = setup.dir.path().join("nginx");
        let body = dir.join("body");
        fs::create_dir_all(&body).map_err(|e| format!("cannot create {}: {e}", body.display()))?;
        let port = free_port();
        // Running as root, nginx would switch to `nobody`, which cannot enter the 0700 temp dir.
        let user = if is_root() { "user root root;\n" } else { "" };
        let d = dir.display();
        let config = format!(
            "{user}daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_timeout 65;\n\
             \x20 types {{ }}\n  default_type application/octet-stream;\n\
             \x20 client_max_body_size 0;\n  client_body_temp_path {};\n\
             \x20 proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
             \x20 uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             \x20 server {{\n    listen 127.0.0.1:{port};\n    root {};\n\
             \x20   location / {{\n      dav_methods PUT DELETE;\n      create_full_put_path on;\n\
             \x20     dav_access user:rw;\n    }}\n  }}\n}}\n",
            body.display(),
            setup.store.display()
        );
        let conf = dir.join("nginx.conf");
        fs::write(&conf, config).map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let log = dir.join("stderr.log");
        let stderr = fs::File::create(&log).map_err(|e| format!("cannot create log: {e}"))?;
        let mut child = Reaped(
            Command::new(&binary)
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", binary.display()))?,
        );
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.0.try_wait() {
                let errors = fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                return Err(format!("nginx exited ({status}): {}", errors.trim()));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Nginx {
                    _child: child,
                    base: format!("http://127.0.0.1:{port}"),
                    version,
                });
            }
            if Instant::now() > deadline {
                return Err(format!("nginx did not listen within {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Debian's nginx (its core has the WebDAV module, which has `PUT`), installed when missing.
fn nginx_binary() -> Result<PathBuf, String> {
    let find = || {
        [
            "/usr/sbin/nginx",
            "/usr/local/sbin/nginx",
            "/usr/local/nginx/sbin/nginx",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    };
    if let Some(found) = find() {
        return Ok(found);
    }
    if !is_root() {
        return Err(
            "nginx is not installed and the bench is not root (apt-get install -y nginx)".into(),
        );
    }
    eprintln!("bench: installing nginx with apt-get");
    let install = || {
        Command::new("timeout")
            .arg(APT_TIMEOUT_SECS.to_string())
            .args(["apt-get", "install", "-y", "-q", "nginx"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !install() {
        let _ = Command::new("timeout")
            .arg(APT_TIMEOUT_SECS.to_string())
            .args(["apt-get", "update", "-q"])
            .stdout(Stdio::null())
            .status();
        if !install() {
            return Err("apt-get install -y nginx failed".into());
        }
    }
    find().ok_or_else(|| "nginx installed, but no nginx binary found".into())
}

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Bytes/s as MB/s or GB/s (decimal, like curl's figures).
fn rate(bytes_per_second: f64) -> String {
    if bytes_per_second >= 1e9 {
        format!("{:.2} GB/s", bytes_per_second / 1e9)
    } else {
        format!("{:.0} MB/s", bytes_per_second / 1e6)
    }
}

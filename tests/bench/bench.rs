//! `make bench`: the figures of issue #2, measured against real parts on this machine, printed as
//! a table with their targets and ratios against named baselines.
//!
//! It starts mosquitto (`max_queued_messages 1000000`, so the broker drops nothing) and the release
//! binary of the agent as a separate process, then measures in this order: idle RSS; a burst of
//! 10,000 child registrations with one measurement each (time from the broker's last PUBACK until
//! `GET /te/v1/entities` lists all 10,002); RSS after it; query latency with 10,000 entities;
//! ingest of 200,000 QoS 1 measurements over 1,000 children, against a rumqttc subscriber that
//! only counts (the baseline) and mosquitto_sub (second reference), each on its own copy of the
//! stream; start-up time with 10,000 persisted entities; the stripped binary's size. Then the
//! file transfer figures of issue #3 against nginx (`files.rs`) and the live view of issue #7
//! (`live.rs`). `make bench ONLY=files` or `ONLY=live` runs one part.

mod files;
mod live;
mod page_load;

#[path = "../common/browser.rs"]
#[allow(dead_code)]
mod browser;

#[path = "../common/mosquitto.rs"]
#[allow(dead_code)]
mod mosquitto;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

const CHILDREN_BURST: usize = 10_000;
const INGEST_MESSAGES: usize = 200_000;
const INGEST_CHILDREN: usize = 1_000;
const INGEST_RUNS: usize = 3;
const QUERY_SAMPLES: usize = 200;
const STATE_SAMPLES: usize = 50;
const TIMEOUT: Duration = Duration::from_secs(120);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run());
}

struct Row {
    what: String,
    figure: String,
    target: String,
    verdict: &'static str,
}

fn row(what: &str, figure: String, target: &str, ok: Option<bool>) -> Row {
    Row {
        what: what.into(),
        figure,
        target: target.into(),
        verdict: match ok {
            Some(true) => "ok",
            Some(false) => "MISSED",
            None => "-",
        },
    }
}

async fn run() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let binary = agent_binary();
    // `make bench ONLY=files`: only the file transfer figures (issue #3), for quick iterations.
    match std::env::var("BENCH_ONLY").as_deref() {
        Ok("files") => return print_table(&files::run(&binary).await),
        Ok("live") => return print_table(&live::run(&binary).await),
        _ => {}
    }
    let mut broker = mosquitto::Broker::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let (config, base) = agent_config(dir.path(), broker.port());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    let mut rows = Vec::new();

    let mut agent = spawn_agent(&binary, &config);
    wait_ready(&http, &base).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // let allocations settle before sampling RSS
    let rss_idle = rss_kib(agent.id());
    rows.push(row(
        "memory: RSS idle after start",
        format!("{:.1} MiB", rss_idle as f64 / 1024.0),
        "<= 8 MiB",
        Some(rss_idle <= 8 * 1024),
    ));

    // Registration burst.
    let mut messages = Vec::with_capacity(CHILDREN_BURST * 2);
    for i in 0..CHILDREN_BURST {
        messages.push((
            format!("te/device/child{i}//"),
            br#"{"@type":"child-device"}"#.to_vec(),
            true,
        ));
        messages.push((
            format!("te/device/child{i}///m/environment"),
            format!(r#"{{"temperature":{}.5}}"#, i % 40).into_bytes(),
            false,
        ));
    }
    let (_, acked_at) = publish_all(broker.port(), "bench-burst", messages).await;
    let listed_at = loop {
        let listing = get_json(&http, &format!("{base}/te/v1/entities")).await;
        if listing.as_array().map(Vec::len) == Some(CHILDREN_BURST + 2) {
            break Instant::now();
        }
        assert!(acked_at.elapsed() < TIMEOUT, "the burst never fully listed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let burst = listed_at.saturating_duration_since(acked_at);
    rows.push(row(
        "registration burst: 10,000 children + 1 measurement each, last PUBACK -> all listed",
        format!("{} ms", burst.as_millis()),
        "< 1000 ms",
        Some(burst < Duration::from_secs(1)),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_burst = rss_kib(agent.id());
    let growth = rss_burst.saturating_sub(rss_idle);
    rows.push(row(
        "memory: RSS after the 10,000-entity burst (growth)",
        format!(
            "{:.1} MiB (+{:.1} MiB)",
            rss_burst as f64 / 1024.0,
            growth as f64 / 1024.0
        ),
        "growth <= 5 MiB",
        Some(growth <= 5 * 1024),
    ));

    // Query latency.
    for (route, samples) in [
        ("/te/v1/entities", QUERY_SAMPLES),
        ("/te/v1/state", STATE_SAMPLES),
    ] {
        let mut times = Vec::with_capacity(samples);
        for _ in 0..samples {
            let t = Instant::now();
            let response = http
                .get(format!("{base}{route}"))
                .send()
                .await
                .expect("query");
            let _ = response.bytes().await.expect("query body");
            times.push(t.elapsed());
        }
        times.sort();
        rows.push(row(
            &format!("query: GET {route} with 10,002 entities, median / p99"),
            format!(
                "{:.2} ms / {:.2} ms",
                ms(times[times.len() / 2]),
                ms(times[(times.len() * 99) / 100])
            ),
            "(reported)",
            None,
        ));
    }

    // Ingest: the same stream for the agent and for the baseline, alternately, RUNS times each
    // (the machine's load drifts); medians are compared. Each run has its own topic root for
    // the baseline, so that an earlier run's persistent session does not receive it, and its own
    // sequence numbers for the agent, so that its last message is recognisable.
    let stream = |root: &str, run: usize| -> Vec<(String, Vec<u8>, bool)> {
        (0..INGEST_MESSAGES)
            .map(|n| {
                let child = n % INGEST_CHILDREN;
                let seq = run * INGEST_MESSAGES + n;
                (
                    format!("{root}/device/child{child}///m/environment"),
                    format!(
                        r#"{{"temperature":{}.25,"humidity":{}.5,"pressure":1013.25,"seq":{seq}}}"#,
                        n % 50,
                        n % 90
                    )
                    .into_bytes(),
                    false,
                )
            })
            .collect()
    };
    let mut null_rates = Vec::new();
    let mut agent_rates = Vec::new();
    for run in 0..INGEST_RUNS {
        let root = format!("nul{run}");
        let id = format!("bench-null-{run}");
        null_rates.push(null_rate(broker.port(), &root, &id, stream(&root, run)).await);
        let last_child = (INGEST_MESSAGES - 1) % INGEST_CHILDREN;
        let url = format!("{base}/te/v1/entities/device/child{last_child}///state");
        let expected_seq = (run * INGEST_MESSAGES + INGEST_MESSAGES - 1) as u64;
        let (started, done) =
            agent_ingest(broker.port(), &http, &url, expected_seq, stream("te", run)).await;
        agent_rates.push(INGEST_MESSAGES as f64 / done.duration_since(started).as_secs_f64());
    }
    let lost = count_lost(&http, &base, INGEST_RUNS - 1).await;
    let mosquitto_sub_rate = mosquitto_sub_rate(broker.port(), stream("ms", 0)).await;
    let (agent_rate, null_rate) = (median(&agent_rates), median(&null_rates));
    let ratio = agent_rate / null_rate;
    let each = |rates: &[f64]| {
        rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    rows.push(row(
        "ingest: 200,000 QoS 1 measurements over 1,000 children, agent (median of 3)",
        format!("{agent_rate:.0} msg/s [{}]", each(&agent_rates)),
        ">= 0.9 x null subscriber",
        Some(ratio >= 0.9),
    ));
    rows.push(row(
        "ingest: baseline, rumqttc subscriber that only counts (median of 3)",
        format!(
            "{null_rate:.0} msg/s [{}] (agent ratio {ratio:.2})",
            each(&null_rates)
        ),
        "(baseline)",
        None,
    ));
    rows.push(row(
        "ingest: second reference, mosquitto_sub -q 1 (one run)",
        match mosquitto_sub_rate {
            Some(rate) => format!("{rate:.0} msg/s (agent ratio {:.2})", agent_rate / rate),
            None => "mosquitto_sub not found".into(),
        },
        "(reference)",
        None,
    ));
    rows.push(row(
        "ingest: measurements lost (children whose last seq is missing)",
        format!("{lost}"),
        "0",
        Some(lost == 0),
    ));

    // Start-up with 10,000 persisted entities, after a crash (SIGKILL).
    let _ = agent.kill();
    let _ = agent.wait();
    let t = Instant::now();
    let mut agent = spawn_agent(&binary, &config);
    wait_ready(&http, &base).await;
    let start = t.elapsed();
    let listing = get_json(&http, &format!("{base}/te/v1/entities")).await;
    let persisted = listing.as_array().map(Vec::len).unwrap_or(0);
    rows.push(row(
        "start: process start -> /readyz 200, 10,002 persisted entities (after kill -9)",
        format!("{} ms ({persisted} entities back)", start.as_millis()),
        "< 300 ms, all entities",
        Some(start < Duration::from_millis(300) && persisted == CHILDREN_BURST + 2),
    ));
    // Serving the persisted twin with the broker down, after a crash: from process start to
    // the first complete `GET /te/v1/entities` (issue #2: within 100 ms).
    let _ = agent.kill();
    let _ = agent.wait();
    broker.stop().await;
    let t = Instant::now();
    let mut agent = spawn_agent(&binary, &config);
    let served = loop {
        if let Ok(response) = http.get(format!("{base}/te/v1/entities")).send().await {
            if response.status() == 200 {
                let listing: Value = response.json().await.unwrap_or(Value::Null);
                break (t.elapsed(), listing.as_array().map(Vec::len).unwrap_or(0));
            }
        }
        assert!(t.elapsed() < TIMEOUT, "the persisted twin was never served");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    rows.push(row(
        "start, broker down: process start -> persisted twin served (after kill -9)",
        format!("{} ms ({} entities)", served.0.as_millis(), served.1),
        "< 100 ms, all entities",
        Some(served.0 < Duration::from_millis(100) && served.1 == CHILDREN_BURST + 2),
    ));
    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let _ = agent.wait();

    let size = std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0);
    rows.push(row(
        "binary: release, stripped",
        format!("{:.2} MiB", size as f64 / (1024.0 * 1024.0)),
        "<= 10 MiB",
        Some(size <= 10 * 1024 * 1024),
    ));
    rows.extend(files::run(&binary).await);
    rows.extend(live::run(&binary).await);
    print_table(&rows);
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_table(rows: &[Row]) {
    let w0 = rows.iter().map(|r| r.what.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.figure.len()).max().unwrap_or(0);
    let w2 = rows.iter().map(|r| r.target.len()).max().unwrap_or(0);
    println!();
    println!(
        "{:w0$}  {:w1$}  {:w2$}  verdict",
        "measure", "figure", "target"
    );
    println!("{}", "-".repeat(w0 + w1 + w2 + 13));
    for r in rows {
        println!(
            "{:w0$}  {:w1$}  {:w2$}  {}",
            r.what, r.figure, r.target, r.verdict
        );
    }
    let missed = rows.iter().filter(|r| r.verdict == "MISSED").count();
    println!("\n{missed} target(s) missed");
}

fn agent_binary() -> PathBuf {
    if let Ok(path) = std::env::var("EDGE_AGENT_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let binary = target.join("release").join("edge-agent");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --release` first (make bench does)",
        binary.display()
    );
    binary
}

/// Writes the agent's configuration for a bench in `dir` (broker on `port`, HTTP on a free
/// port, warnings only); returns its path and the agent's base URL.
fn agent_config(dir: &Path, port: u16) -> (PathBuf, String) {
    let http_port = free_port();
    let config = dir.join("edge-agent.yaml");
    std::fs::write(
        &config,
        format!(
            "mqtt:\n  port: {port}\nhttp:\n  bind: 127.0.0.1:{http_port}\ndata_dir: {}\nlog:\n  level: warn\n",
            dir.join("data").display()
        ),
    )
    .expect("write the bench config");
    (config, format!("http://127.0.0.1:{http_port}"))
}

fn spawn_agent(binary: &Path, config: &Path) -> Child {
    Command::new(binary)
        .arg("--config")
        .arg(config)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the agent")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let start = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(start.elapsed() < TIMEOUT, "the agent never became ready");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    match http.get(url).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn mqtt_options(id: &str, port: u16) -> MqttOptions {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_inflight(1000);
    options
}

/// Publishes every message at QoS 1 as fast as the broker acknowledges them; returns when the
/// first was queued and when the last PUBACK arrived.
async fn publish_all(
    port: u16,
    id: &str,
    messages: Vec<(String, Vec<u8>, bool)>,
) -> (Instant, Instant) {
    let total = messages.len();
    let (client, mut eventloop) = AsyncClient::new(mqtt_options(id, port), 10_000);
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) =
            eventloop.poll().await.expect("publisher connects")
        {
            break;
        }
    }
    let started = Instant::now();
    let feeder = tokio::spawn(async move {
        for (topic, payload, retain) in messages {
            client
                .publish(topic, QoS::AtLeastOnce, retain, payload)
                .await
                .expect("queue a publish");
        }
        client
    });
    let mut acked = 0;
    while acked < total {
        if let Event::Incoming(Packet::PubAck(_)) =
            eventloop.poll().await.expect("publisher connection")
        {
            acked += 1;
        }
    }
    let done = Instant::now();
    if let Ok(client) = feeder.await {
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
    }
    (started, done)
}

/// The baseline's rate on `messages` (published under `root`): a rumqttc subscriber that only
/// counts, with the session id `id`.
async fn null_rate(port: u16, root: &str, id: &str, messages: Vec<(String, Vec<u8>, bool)>) -> f64 {
    let total = messages.len();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let counter = tokio::spawn(count_messages(
        port,
        format!("{root}/+/+/+/+/#"),
        id.to_owned(),
        total,
        ready_tx,
    ));
    tokio::time::timeout(TIMEOUT, ready_rx)
        .await
        .expect("the null subscriber subscribes in time")
        .expect("the null subscriber subscribes");
    let (started, _) = publish_all(port, &format!("{id}-pub"), messages).await;
    let done = counter.await.expect("the null subscriber");
    total as f64 / done.duration_since(started).as_secs_f64()
}

/// Publishes `messages` to the agent and waits until the state document at `url` shows the
/// measurement `seq` (the stream's last): when the stream started, and when it was applied.
async fn agent_ingest(
    port: u16,
    http: &reqwest::Client,
    url: &str,
    seq: u64,
    messages: Vec<(String, Vec<u8>, bool)>,
) -> (Instant, Instant) {
    let (started, _) = publish_all(port, "bench-agent", messages).await;
    loop {
        let state = get_json(http, url).await;
        if state["measurements"]["environment"]["seq"]["value"].as_u64() == Some(seq) {
            return (started, Instant::now());
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "the agent never saw the last measurement"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A subscriber that only counts (the baseline); says when subscribed, returns when it received
/// `total` messages. Like for like with the agent: the same rumqttc, a persistent session and
/// the same shape of topic filter (the broker's matching cost depends on it).
async fn count_messages(
    port: u16,
    filter: String,
    client_id: String,
    total: usize,
    subscribed: tokio::sync::oneshot::Sender<()>,
) -> Instant {
    let mut options = mqtt_options(&client_id, port);
    options.set_clean_session(false);
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("queue the subscription");
    let mut subscribed = Some(subscribed);
    let mut seen = 0;
    loop {
        match eventloop.poll().await.expect("subscriber connection") {
            Event::Incoming(Packet::SubAck(_)) => {
                if let Some(tx) = subscribed.take() {
                    let _ = tx.send(());
                }
            }
            Event::Incoming(Packet::Publish(_)) => {
                seen += 1;
                if seen == total {
                    return Instant::now();
                }
            }
            _ => {}
        }
    }
}

/// Children whose last measurement (highest seq) did not reach the twin.
async fn count_lost(http: &reqwest::Client, base: &str, run: usize) -> usize {
    let states = get_json(http, &format!("{base}/te/v1/state")).await;
    let mut lost = 0;
    for child in 0..INGEST_CHILDREN {
        let last = run * INGEST_MESSAGES + INGEST_MESSAGES - INGEST_CHILDREN + child;
        let found = states.as_array().and_then(|all| {
            all.iter()
                .find(|s| s["@topic-id"] == format!("device/child{child}//"))
                .and_then(|s| s["measurements"]["environment"]["seq"]["value"].as_u64())
        });
        if found != Some(last as u64) {
            lost += 1;
        }
    }
    lost
}

/// mosquitto_sub's rate on the same stream, as a second reference. `-d` prints its SUBACK, so
/// the stream starts only once it is subscribed; its output is drained on a thread.
async fn mosquitto_sub_rate(port: u16, messages: Vec<(String, Vec<u8>, bool)>) -> Option<f64> {
    use std::io::BufRead;
    let total = messages.len();
    // stdbuf: mosquitto_sub's stdout is block-buffered into a pipe, which would hide the SUBACK.
    let mut sub = Command::new("stdbuf")
        .args([
            "-oL",
            "mosquitto_sub",
            "-d",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            "ms/+/+/+/+/#",
            "-C",
        ])
        .arg(total.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let stdout = sub.stdout.take()?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let drain = std::thread::spawn(move || {
        let mut ready = Some(ready_tx);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("SUBACK") {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    if tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .is_err()
    {
        let _ = sub.kill();
        return None;
    }
    let (started, _) = publish_all(port, "bench-ms", messages).await;
    let status = tokio::task::spawn_blocking(move || sub.wait())
        .await
        .ok()?
        .ok()?;
    let rate = total as f64 / started.elapsed().as_secs_f64();
    let _ = drain.join();
    status.success().then_some(rate)
}

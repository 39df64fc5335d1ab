//! `make bench` (and `make bench ONLY=live`): the figures of issue #7 with 10,000 entities.
//!
//! A fresh mosquitto and release agent; 10,000 children registered with one measurement each;
//! then 50 clients follow `/te/v1/changes` (real HTTP, Server-Sent Events) while 20,000
//! measurements are published at 2,000 msg/s (QoS 1, paced in 10 ms steps). Reported: whether
//! every client received every change (and how late the last one was), the agent's CPU and RSS
//! during the stream, then the ingest ratio of issue #2 (agent against a rumqttc subscriber that
//! only counts, on the same stream) with the 50 clients still connected, and the page's first
//! render with 10,000 entities in headless chromium (`page_load`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rumqttc::{AsyncClient, Event, Packet, QoS};

use super::{
    agent_ingest, get_json, median, mqtt_options, null_rate, publish_all, row, rss_kib,
    spawn_agent, wait_ready, Row, TIMEOUT,
};

const ENTITIES: usize = 10_000;
const CLIENTS: usize = 50;
const RATE: usize = 2_000;
const STREAM_SECONDS: usize = 10;
const INGEST: usize = 100_000;
const INGEST_RUNS: usize = 3;

/// What one change-stream client counted.
#[derive(Default)]
struct Counts {
    measurements: AtomicU64,
    resets: AtomicU64,
    /// Milliseconds after the bench's epoch when the client had every measurement.
    complete_at: AtomicU64,
}

pub async fn run(binary: &std::path::Path) -> Vec<Row> {
    let mut rows = Vec::new();
    let broker = super::mosquitto::Broker::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let (config, base) = super::agent_config(dir.path(), broker.port());
    let http = reqwest::Client::new();
    let mut agent = spawn_agent(binary, &config);
    wait_ready(&http, &base).await;
    let pid = agent.id();

    let mut burst = Vec::with_capacity(ENTITIES * 2);
    for i in 0..ENTITIES {
        burst.push((
            format!("te/device/child{i}//"),
            br#"{"@type":"child-device"}"#.to_vec(),
            true,
        ));
        burst.push((
            format!("te/device/child{i}///m/environment"),
            br#"{"temperature":20.5}"#.to_vec(),
            false,
        ));
    }
    publish_all(broker.port(), "live-burst", burst).await;
    let start = Instant::now();
    while get_json(&http, &format!("{base}/te/v1/entities"))
        .await
        .as_array()
        .map(Vec::len)
        != Some(ENTITIES + 2)
    {
        assert!(start.elapsed() < TIMEOUT, "the burst never fully listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The page with 10,000 entities, before the clients load the machine.
    rows.extend(super::page_load::run(&base).await);

    let epoch = Instant::now();
    let expected = (RATE * STREAM_SECONDS) as u64;
    let counts: Vec<Arc<Counts>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let mut started = Vec::new();
    for c in &counts {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(follow(
            format!("{base}/te/v1/changes"),
            c.clone(),
            expected,
            epoch,
            tx,
        ));
        started.push(rx);
    }
    for rx in started {
        tokio::time::timeout(TIMEOUT, rx)
            .await
            .expect("a client's stream starts in time")
            .expect("a client's stream starts");
    }

    let (cpu_before, t_before) = (cpu_ticks(pid), Instant::now());
    let sent = paced(broker.port(), expected as usize).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while counts
        .iter()
        .any(|c| c.measurements.load(Ordering::Relaxed) < expected)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (cpu_after, t_after) = (cpu_ticks(pid), Instant::now());
    let rss = rss_kib(pid);
    let complete = counts
        .iter()
        .filter(|c| c.measurements.load(Ordering::Relaxed) >= expected)
        .count();
    let resets: u64 = counts
        .iter()
        .map(|c| c.resets.load(Ordering::Relaxed))
        .sum();
    let fewest = counts
        .iter()
        .map(|c| c.measurements.load(Ordering::Relaxed))
        .min()
        .unwrap_or(0);
    let last_ms = counts
        .iter()
        .map(|c| c.complete_at.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let sent_ms = sent.duration_since(epoch).as_millis() as u64;
    rows.push(row(
        "live: 50 SSE clients, 20,000 measurements at 2,000 msg/s over 10,000 entities",
        format!(
            "{complete}/{CLIENTS} clients got all {expected} changes (fewest {fewest}), {resets} resets, last one {} ms after the last PUBACK",
            last_ms.saturating_sub(sent_ms)
        ),
        "every client every change",
        Some(complete == CLIENTS && resets == 0),
    ));
    let cpu = cpu_seconds(cpu_after.saturating_sub(cpu_before))
        / t_after.duration_since(t_before).as_secs_f64();
    rows.push(row(
        "live: agent CPU and RSS during that stream",
        format!(
            "{:.0}% of one core, RSS {:.1} MiB",
            cpu * 100.0,
            rss as f64 / 1024.0
        ),
        "(reported)",
        None,
    ));

    // The ingest ratio with the clients still connected: they fall behind and are reset, but
    // must not slow the twin.
    let (mut agent_rates, mut null_rates) = (Vec::new(), Vec::new());
    // CPU of the agent and of this process (the 50 readers, the publisher) while the agent
    // ingests at full speed, in core-seconds per second.
    let (mut agent_cpu, mut bench_cpu, mut ingest_time) = (0u64, 0u64, 0f64);
    for run in 0..INGEST_RUNS {
        let root = format!("live-null{run}");
        let id = format!("live-null-{run}");
        null_rates.push(null_rate(broker.port(), &root, &id, stream(&root, run)).await);
        let last = (INGEST - 1) % ENTITIES;
        let url = format!("{base}/te/v1/entities/device/child{last}///state");
        let seq = (run * INGEST + INGEST - 1) as u64;
        let (agent_before, bench_before) = (cpu_ticks(pid), cpu_ticks(std::process::id()));
        let (t0, done) = agent_ingest(broker.port(), &http, &url, seq, stream("te", run)).await;
        agent_rates.push(INGEST as f64 / done.duration_since(t0).as_secs_f64());
        agent_cpu += cpu_ticks(pid).saturating_sub(agent_before);
        bench_cpu += cpu_ticks(std::process::id()).saturating_sub(bench_before);
        ingest_time += done.duration_since(t0).as_secs_f64();
    }
    let ratio = median(&agent_rates) / median(&null_rates);
    let resets_after: u64 = counts
        .iter()
        .map(|c| c.resets.load(Ordering::Relaxed))
        .sum();
    rows.push(row(
        "live: ingest of 100,000 measurements with the 50 clients connected (median of 3)",
        format!(
            "{:.0} msg/s, null subscriber {:.0} msg/s, ratio {ratio:.2} ({} client resets; CPU: agent {:.0}%, readers and publisher {:.0}% of one core)",
            median(&agent_rates),
            median(&null_rates),
            resets_after - resets,
            cpu_seconds(agent_cpu) / ingest_time * 100.0,
            cpu_seconds(bench_cpu) / ingest_time * 100.0,
        ),
        ">= 0.9 x null subscriber",
        Some(ratio >= 0.9),
    ));
    let _ = agent.kill();
    let _ = agent.wait();
    rows
}

fn stream(root: &str, run: usize) -> Vec<(String, Vec<u8>, bool)> {
    (0..INGEST)
        .map(|n| {
            let seq = run * INGEST + n;
            (
                format!("{root}/device/child{}///m/environment", n % ENTITIES),
                format!(r#"{{"temperature":{}.25,"seq":{seq}}}"#, n % 50).into_bytes(),
                false,
            )
        })
        .collect()
}

/// Follows the change stream, counting measurement changes and resets (after the first).
/// Cheap on purpose (a count of markers, carried across chunk edges), so that 50 of them do
/// not starve the agent they measure of CPU.
async fn follow(
    url: String,
    counts: Arc<Counts>,
    expected: u64,
    epoch: Instant,
    started: tokio::sync::oneshot::Sender<()>,
) {
    const CHANGE: &[u8] = b"\"channel\":\"m/environment\"";
    const RESET: &[u8] = b"event: reset";
    let Ok(response) = reqwest::get(&url).await else {
        return;
    };
    let mut body = response.bytes_stream();
    let (change, reset) = (
        memchr::memmem::Finder::new(CHANGE),
        memchr::memmem::Finder::new(RESET),
    );
    let keep = CHANGE.len().max(RESET.len()) - 1;
    // The end of the previous chunk, for markers cut in two.
    let mut tail: Vec<u8> = Vec::new();
    let mut started = Some(started);
    // Markers that straddle the previous chunk's end and this chunk's start: only those, so
    // that none is counted twice.
    let straddling = |finder: &memchr::memmem::Finder, tail: &[u8], chunk: &[u8]| {
        let n = finder.needle().len() - 1;
        let mut edge = tail[tail.len().saturating_sub(n)..].to_vec();
        edge.extend_from_slice(&chunk[..n.min(chunk.len())]);
        finder.find_iter(&edge).count()
    };
    while let Some(Ok(chunk)) = body.next().await {
        let changes =
            (change.find_iter(&chunk).count() + straddling(&change, &tail, &chunk)) as u64;
        let mut resets =
            (reset.find_iter(&chunk).count() + straddling(&reset, &tail, &chunk)) as u64;
        tail = chunk[chunk.len().saturating_sub(keep)..].to_vec();
        if resets > 0 {
            if let Some(tx) = started.take() {
                let _ = tx.send(());
                resets -= 1;
            }
        }
        counts.resets.fetch_add(resets, Ordering::Relaxed);
        let before = counts.measurements.fetch_add(changes, Ordering::Relaxed);
        if before < expected && before + changes >= expected {
            counts
                .complete_at
                .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    }
}

/// Publishes `total` measurements at [`RATE`] per second, in 10 ms steps; returns when the
/// last PUBACK arrived.
async fn paced(port: u16, total: usize) -> Instant {
    let (client, mut eventloop) = AsyncClient::new(mqtt_options("live-paced", port), 10_000);
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = eventloop.poll().await.expect("connects") {
            break;
        }
    }
    let feeder = tokio::spawn(async move {
        let per_step = RATE / 100;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut n = 0;
        while n < total {
            tick.tick().await;
            for _ in 0..per_step.min(total - n) {
                let payload = format!(r#"{{"temperature":{}.5}}"#, n % 40);
                client
                    .publish(
                        format!("te/device/child{}///m/environment", n % ENTITIES),
                        QoS::AtLeastOnce,
                        false,
                        payload,
                    )
                    .await
                    .expect("queue a publish");
                n += 1;
            }
        }
        client
    });
    let mut acked = 0;
    while acked < total {
        if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.expect("connection") {
            acked += 1;
        }
    }
    let done = Instant::now();
    if let Ok(client) = feeder.await {
        let _ = client.disconnect().await;
    }
    done
}

/// User plus system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

fn cpu_seconds(ticks: u64) -> f64 {
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    ticks as f64 / hz
}

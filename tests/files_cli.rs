//! `edge-agent files put|get|rm` (issue #3, "Progress and CLI"): the real binary against an
//! in-process agent on a real socket. Round trips, resuming a partial download (the agent's
//! counters show that only the rest was sent), a complete local file (nothing sent), a corrupt
//! partial file (the digest check fails and says so), and the one-line message and exit code of
//! each failure. stderr is a file here, not a terminal, so progress comes as plain lines.

mod common;

use std::path::Path;

use common::agent::TestAgent;
use common::http;
use common::mosquitto::Broker;
use common::process::{self, Finished};
use edge_agent::files::digest::{Hasher, Sha256};
use reqwest::Method;

const EXIT_FAILURE: i32 = 1;
/// Three 1 MiB blocks and a bit: several progress lines, and an odd size.
const SIZE: usize = 3 * 1024 * 1024 + 123;

/// Bytes that differ at every offset that matters (a simple LCG).
fn content(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> Sha256 {
    let mut h = Hasher::new();
    h.update(bytes);
    h.finish()
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// `edge-agent files <args> --url <agent>`.
async fn files(agent: &TestAgent, args: &[&str]) -> Finished {
    let base = agent.url("");
    let mut all = vec!["files"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--url", &base]);
    process::run(&all, &[]).await
}

fn bytes_out(agent: &TestAgent) -> u64 {
    agent.agent().files().counters().snapshot().bytes_out
}

/// Stores `bytes` at `path` over HTTP.
async fn upload(agent: &TestAgent, path: &str, bytes: &[u8]) {
    let url = agent.url(&format!("/te/v1/files/{path}"));
    let response = http::request(Method::PUT, &url, bytes.to_vec()).await;
    assert_eq!(response.status, 201, "PUT {url}: {}", response.text());
}

/// Asserts plain-line progress: `heading`, then `N% (X of TOTAL bytes)` lines, then the closing
/// `done: SENT bytes in … s (… MB/s), sha256 DIGEST`.
#[track_caller]
fn assert_progress(stderr: &str, heading: &str, total: usize, sent: usize, digest: &Sha256) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.len() >= 3,
        "a heading, a quarter at least and a closing line:\n{stderr}"
    );
    assert_eq!(lines[0], heading, "stderr:\n{stderr}");
    for line in &lines[1..lines.len() - 1] {
        let (percent, rest) = line.split_once("% (").unwrap_or_else(|| panic!("{line:?}"));
        assert!(percent.parse::<u8>().is_ok_and(|p| p < 100), "{line:?}");
        let done = rest
            .strip_suffix(&format!(" of {total} bytes)"))
            .unwrap_or_else(|| panic!("{line:?}"));
        assert!(done.parse::<usize>().is_ok_and(|d| d < total), "{line:?}");
    }
    let last = lines[lines.len() - 1];
    let prefix = format!("done: {sent} bytes in ");
    let suffix = format!(" MB/s), sha256 {digest}");
    assert!(
        last.starts_with(&prefix) && last.ends_with(&suffix) && last.contains(" s ("),
        "closing line: {last:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_then_get_round_trips_the_bytes_with_progress_lines() {
    let broker = Broker::start().await;
    let agent = TestAgent::start(&broker).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let local = dir.path().join("fw.bin");
    let bytes = content(SIZE, 1);
    let digest = sha256(&bytes);
    std::fs::write(&local, &bytes).expect("the local file");
    let url = agent.url("/te/v1/files/child1/firmware%20update/fw%231.bin");

    let put = files(
        &agent,
        &["put", arg(&local), "child1/firmware update/fw#1.bin"],
    )
    .await;

    assert_eq!(put.code, Some(0), "stderr:\n{}", put.stderr);
    assert_eq!(
        put.stdout,
        format!("uploaded {url}: {SIZE} bytes, sha256 {digest}\n")
    );
    let heading = format!("uploading {} to {url}: {SIZE} bytes", local.display());
    assert_progress(&put.stderr, &heading, SIZE, SIZE, &digest);
    let stored = http::get(&url).await;
    assert_eq!(stored.status, 200);
    assert!(stored.body == bytes, "the agent stores the bytes as sent");

    let out = dir.path().join("out.bin");
    let get = files(&agent, &["get", &url, arg(&out)]).await;

    assert_eq!(get.code, Some(0), "stderr:\n{}", get.stderr);
    assert_eq!(
        get.stdout,
        format!(
            "downloaded {url} to {}: {SIZE} bytes, sha256 {digest}\n",
            out.display()
        )
    );
    let heading = format!("downloading {url} to {}: {SIZE} bytes", out.display());
    assert_progress(&get.stderr, &heading, SIZE, SIZE, &digest);
    assert!(std::fs::read(&out).expect("the download") == bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_base_url_comes_from_the_configurations_public_url_without_url() {
    let broker = Broker::start().await;
    let agent = TestAgent::start(&broker).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("edge-agent.yaml");
    std::fs::write(&config, format!("http:\n  public_url: {}\n", agent.url(""))).expect("config");
    upload(&agent, "child1/log.txt", b"hello").await;
    let url = agent.url("/te/v1/files/child1/log.txt");

    let rm = process::run(
        &["files", "rm", "child1/log.txt", "--config", arg(&config)],
        &[],
    )
    .await;

    assert_eq!(rm.code, Some(0), "stderr:\n{}", rm.stderr);
    assert_eq!(
        (rm.stdout.as_str(), rm.stderr.as_str()),
        (format!("removed {url}\n").as_str(), "")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rm_deletes_the_remote_file() {
    let broker = Broker::start().await;
    let agent = TestAgent::start(&broker).await;
    upload(&agent, "child1/config.toml", b"a = 1\n").await;
    let url = agent.url("/te/v1/files/child1/config.toml");

    let rm = files(&agent, &["rm", "child1/config.toml"]).await;

    assert_eq!(rm.code, Some(0), "stderr:\n{}", rm.stderr);
    assert_eq!(
        (rm.stdout.as_str(), rm.stderr.as_str()),
        (format!("removed {url}\n").as_str(), "")
    );
    let gone = http::get(&url).await;
    assert_eq!(
        (gone.status, gone.text()),
        (404, "File not found: \"child1/config.toml\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_resumes_a_partial_local_file_and_the_agent_sends_only_the_rest() {
    let broker = Broker::start().await;
    let agent = TestAgent::start(&broker).await;
    let bytes = content(SIZE, 2);
    let digest = sha256(&bytes);
    upload(&agent, "child1/fw.bin", &bytes).await;
    let url = agent.url("/te/v1/files/child1/fw.bin");
    let dir = tempfile::tempdir().expect("a temp dir");
    let local = dir.path().join("fw.bin");
    let kept = 1_000_000;
    std::fs::write(&local, &bytes[..kept]).expect("the partial file");
    let before = bytes_out(&agent);

    let get = files(&agent, &["get", "child1/fw.bin", arg(&local)]).await;

    assert_eq!(get.code, Some(0), "stderr:\n{}", get.stderr);
    assert_eq!(
        get.stdout,
        format!(
            "downloaded {url} to {}: {SIZE} bytes, sha256 {digest}\n",
            local.display()
        )
    );
    let heading = format!(
        "resuming {url} into {} at byte {kept} of {SIZE}",
        local.display()
    );
    assert_progress(&get.stderr, &heading, SIZE, SIZE - kept, &digest);
    assert!(std::fs::read(&local).expect("the download") == bytes);
    assert_eq!(bytes_out(&agent) - before, (SIZE - kept) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_of_a_complete_local_file_downloads_nothing() {
    let broker = Broker::start().await;
    let agent = TestAgent::start(&broker).await;
    let bytes = content(SIZE, 3);
    let digest = sha256(&bytes);
    upload(&agent, "child1/fw.bin", &bytes).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let local = dir.path().join("fw.bin");
    std::fs::write(&local, &bytes).expect("the complete file");
    let before = bytes_out(&agent);

    let get = files(&agent, &["get", "child1/fw.bin", arg(&local)]).await;

    assert_eq!(get.code, Some(0), "stderr:\n{}", get.stderr);
    assert_eq!(
        (get.stdout, get.stderr),
        (
            format!(
                "{} is already complete: {SIZE} bytes, sha256 {digest}\n",
                local.display()
            ),
            String::new()
        )
    );
    assert_eq!(bytes_out(&agent), before, "no byte was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_partial_file_fails_the_digest_check_and_is_kept_until_the_next_get() {
    let broker = Broker::start().await;
    let agent = TestAgent::start(&broker).await;
    let bytes = content(SIZE, 4);
    let digest = sha256(&bytes);
    upload(&agent, "child1/fw.bin", &bytes).await;
    let url = agent.url("/te/v1/files/child1/fw.bin");
    let dir = tempfile::tempdir().expect("a temp dir");
    let local = dir.path().join("fw.bin");
    let mut corrupt = content(1000, 99);
    std::fs::write(&local, &corrupt).expect("the corrupt partial file");
    corrupt.extend_from_slice(&bytes[1000..]);

    let get = files(&agent, &["get", "child1/fw.bin", arg(&local)]).await;

    assert_eq!(get.code, Some(EXIT_FAILURE), "stderr:\n{}", get.stderr);
    assert_eq!(get.stdout, "");
    assert_eq!(
        get.stderr.lines().last(),
        Some(
            format!(
                "edge-agent: {} does not match {url}: its SHA-256 is {}, the server's is {digest}; \
                 the file is kept: run `files get` again to download it whole",
                local.display(),
                sha256(&corrupt)
            )
            .as_str()
        )
    );
    assert!(std::fs::read(&local).expect("the kept file") == corrupt);

    let again = files(&agent, &["get", "child1/fw.bin", arg(&local)]).await;

    assert_eq!(again.code, Some(0), "stderr:\n{}", again.stderr);
    assert_eq!(
        again.stderr.lines().next(),
        Some(
            format!(
                "{} differs from {url}: downloading it whole",
                local.display()
            )
            .as_str()
        )
    );
    assert!(std::fs::read(&local).expect("the download") == bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_of_a_missing_local_file_fails_naming_the_path() {
    let broker = Broker::start().await;
    let agent = TestAgent::start(&broker).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let missing = dir.path().join("missing.bin");

    let put = files(&agent, &["put", arg(&missing), "child1/fw.bin"]).await;

    assert_eq!(put.code, Some(EXIT_FAILURE));
    assert_eq!(
        (put.stdout.as_str(), put.stderr.as_str()),
        (
            "",
            format!(
                "edge-agent: cannot read {}: No such file or directory (os error 2)\n",
                missing.display()
            )
            .as_str()
        )
    );
    assert_eq!(agent.agent().files().counters().snapshot().uploads, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_of_a_missing_remote_file_fails_with_the_agents_message_and_writes_nothing() {
    let broker = Broker::start().await;
    let agent = TestAgent::start(&broker).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let local = dir.path().join("none.bin");
    let url = agent.url("/te/v1/files/child1/none.bin");

    let get = files(&agent, &["get", "child1/none.bin", arg(&local)]).await;

    assert_eq!(get.code, Some(EXIT_FAILURE));
    assert_eq!(
        (get.stdout.as_str(), get.stderr.as_str()),
        (
            "",
            format!("edge-agent: GET {url}: 404 Not Found: File not found: \"child1/none.bin\"\n")
                .as_str()
        )
    );
    assert!(!local.exists(), "no local file is created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_fails_with_the_agents_message() {
    let broker = Broker::start().await;
    let agent = TestAgent::start(&broker).await;
    upload(&agent, "child1/a/fw.bin", b"x").await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let local = dir.path().join("fw.bin");
    std::fs::write(&local, b"firmware").expect("the local file");
    let url = agent.url("/te/v1/files/child1/a");

    let put = files(&agent, &["put", arg(&local), "child1/a"]).await;

    assert_eq!(put.code, Some(EXIT_FAILURE));
    assert_eq!(put.stdout, "");
    assert_eq!(
        put.stderr.lines().last(),
        Some(
            format!(
                "edge-agent: PUT {url}: 409 Conflict: Cannot upload: \"child1/a\" is a directory, not a file"
            )
            .as_str()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_is_not_listening_is_reported_by_its_url() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let local = dir.path().join("out.bin");
    let url = format!(
        "http://127.0.0.1:{}/te/v1/files/child1/fw.bin",
        process::free_port()
    );

    let get = process::run(&["files", "get", &url, arg(&local)], &[]).await;

    assert_eq!(get.code, Some(EXIT_FAILURE));
    assert_eq!(
        (get.stdout.as_str(), get.stderr.as_str()),
        (
            "",
            format!("edge-agent: cannot reach {url}: Connection refused (os error 111)\n").as_str()
        )
    );
    assert!(!local.exists());
}

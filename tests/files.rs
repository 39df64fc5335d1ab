//! The file transfer service end to end (issue #3): every row of the wire table and every point
//! of "better than the reference", over real HTTP on a socket, against an agent with a real
//! broker and a real file store on disk.

mod common;

use common::data::{bytes, sha256_hex};

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use common::agent::TestAgent;
use common::http::{self, client};
use common::mosquitto::Broker;
use common::raw::{self, Conn};
use reqwest::Method;

const FILES: &str = "/te/v1/files";

/// The SHA-256 as an independent implementation computes it (ring's one-shot digest, not the
/// agent's streaming `Hasher`), so that the tests check the agent rather than agree with it.
fn sha256(bytes: &[u8]) -> ring::digest::Digest {
    ring::digest::digest(&ring::digest::SHA256, bytes)
}

fn sha256_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha256(bytes).as_ref())
}

struct Setup {
    _broker: Broker,
    agent: TestAgent,
}

impl Setup {
    async fn start() -> Setup {
        Self::with(|_| {}).await
    }

    async fn with(adjust: impl FnOnce(&mut edge_agent::config::Config)) -> Setup {
        let broker = Broker::start().await;
        let agent = TestAgent::start_with(&broker, adjust).await;
        Setup {
            _broker: broker,
            agent,
        }
    }

    fn url(&self, path: &str) -> String {
        self.agent.url(&format!("{FILES}/{path}"))
    }

    fn root(&self) -> PathBuf {
        self.agent.config.files.dir.clone()
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root().join(".edge-agent/tmp")
    }

    /// Waits until no upload's temp file is left.
    async fn wait_no_temp_files(&self, what: &str) {
        let dir = self.tmp_dir();
        common::wait_until(what, Duration::from_secs(10), || {
            let dir = dir.clone();
            async move { tmp_entries(&dir) == 0 }
        })
        .await;
    }

    async fn put(&self, path: &str, body: &[u8]) -> http::Response {
        http::request(Method::PUT, &self.url(path), body.to_vec()).await
    }

    async fn get(&self, path: &str) -> http::Response {
        http::get(&self.url(path)).await
    }

    async fn raw(&self, method: &str, target: &str, extra: &[&str], body: &[u8]) -> raw::Answer {
        raw::request(self.agent.http_addr(), method, target, extra, body).await
    }
}

fn tmp_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[track_caller]
fn assert_plain(res: &http::Response, status: u16, body: &str) {
    assert_eq!(
        (res.status, res.header("content-type"), res.text()),
        (status, Some("text/plain; charset=utf-8"), body)
    );
}

#[track_caller]
fn assert_raw_plain(res: &raw::Answer, status: u16, body: &str) {
    assert_eq!(
        (res.status, res.header("content-type"), res.text().as_str()),
        (status, Some("text/plain; charset=utf-8"), body)
    );
}

// ---- the wire table ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_file_is_served_with_its_length_type_time_etag_and_digest() {
    let s = Setup::start().await;
    let body = bytes(300_000, 1);
    let res = s.put("child1/firmware_update/fw-1.2.bin", &body).await;
    assert_eq!((res.status, res.body.len()), (201, 0));

    let res = s.get("child1/firmware_update/fw-1.2.bin").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body.as_ref(), body.as_slice());
    let hex = sha256_hex(&body);
    assert_eq!(res.header("content-length"), Some("300000"));
    assert_eq!(res.header("content-type"), Some("application/octet-stream"));
    assert_eq!(res.header("accept-ranges"), Some("bytes"));
    assert_eq!(res.header("etag"), Some(format!("\"{hex}\"").as_str()));
    assert_eq!(res.header("x-checksum-sha256"), Some(hex.as_str()));
    assert_eq!(
        res.header("repr-digest"),
        Some(format!("sha-256=:{}:", sha256_b64(&body)).as_str())
    );
    let modified = httpdate::parse_http_date(res.header("last-modified").unwrap()).unwrap();
    let age = SystemTime::now().duration_since(modified).unwrap();
    assert!(age < Duration::from_secs(60), "{age:?}");

    // The type follows the extension.
    assert_eq!(s.put("child1/config/app.json", b"{}").await.status, 201);
    let res = s.get("child1/config/app.json").await;
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(res.text(), "{}");
    // The file is where the path says, under files.dir.
    assert_eq!(
        std::fs::read(s.root().join("child1/firmware_update/fw-1.2.bin")).unwrap(),
        body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_over_a_file_replaces_it_and_a_trailing_slash_is_ignored() {
    let s = Setup::start().await;
    assert_eq!(s.put("c/op/f.txt", b"first").await.status, 201);
    let res = s.put("c/op/f.txt/", b"second version").await;
    assert_eq!((res.status, res.text()), (201, ""));
    let res = s.get("c/op/f.txt").await;
    assert_eq!((res.status, res.text()), (200, "second version"));
    assert_eq!(
        res.header("x-checksum-sha256"),
        Some(sha256_hex(b"second version").as_str())
    );
    assert_eq!(s.put("c/empty", b"").await.status, 201);
    let res = s.get("c/empty").await;
    assert_eq!((res.status, res.body.len()), (200, 0));
    assert_eq!(res.header("content-length"), Some("0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_sends_the_headers_of_get_without_the_bytes() {
    let s = Setup::start().await;
    let body = bytes(5000, 2);
    s.put("c/f.bin", &body).await;
    let get = s.raw("GET", "/te/v1/files/c/f.bin", &[], b"").await;
    let head = s.raw("HEAD", "/te/v1/files/c/f.bin", &[], b"").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    for name in [
        "content-length",
        "content-type",
        "etag",
        "last-modified",
        "repr-digest",
        "x-checksum-sha256",
        "accept-ranges",
    ] {
        assert_eq!(head.header(name), get.header(name), "{name}");
    }
    assert_eq!(head.header("content-length"), Some("5000"));
    let head = s.raw("HEAD", "/te/v1/files/c/none", &[], b"").await;
    assert_eq!((head.status, head.body.len()), (404, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_on_a_directory_is_a_conflict_and_a_file_parent_too() {
    let s = Setup::start().await;
    s.put("child1/op/f.bin", b"x").await;
    assert_plain(
        &s.put("child1/op", b"y").await,
        409,
        r#"Cannot upload: "child1/op" is a directory, not a file"#,
    );
    assert_plain(
        &s.put("child1/op/f.bin/inner", b"y").await,
        409,
        r#"Cannot upload: "child1/op/f.bin/inner": "child1/op/f.bin" is a file, not a directory"#,
    );
    assert_eq!(s.get("child1/op/f.bin").await.text(), "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_path_or_a_directory_is_not_found() {
    let s = Setup::start().await;
    s.put("child1/op/f.bin", b"x").await;
    assert_plain(
        &s.get("child1/op/none").await,
        404,
        r#"File not found: "child1/op/none""#,
    );
    assert_plain(
        &s.get("child1/op").await,
        404,
        r#"File not found: "child1/op""#,
    );
    assert_plain(
        &s.get("child1/op/").await,
        404,
        r#"File not found: "child1/op/""#,
    );
    assert_plain(&s.get("").await, 404, r#"File not found: """#);
    assert_plain(
        &s.get("child1/op/f.bin/x").await,
        404,
        r#"File not found: "child1/op/f.bin/x""#,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_a_file_accepts_a_missing_one_and_refuses_a_directory() {
    let s = Setup::start().await;
    s.put("c/op/f.bin", b"x").await;
    let res = http::delete(&s.url("c/op/f.bin")).await;
    assert_eq!((res.status, res.text()), (202, ""));
    assert_eq!(s.get("c/op/f.bin").await.status, 404);
    assert!(!s.root().join("c/op/f.bin").exists());
    let res = http::delete(&s.url("c/op/f.bin")).await;
    assert_eq!((res.status, res.text()), (202, ""));
    assert_plain(
        &http::delete(&s.url("c/op")).await,
        404,
        r#"Cannot delete: "c/op" is a directory, not a file"#,
    );
    assert!(s.root().join("c/op").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_that_escape_the_root_are_invalid_and_reveal_no_server_path() {
    let s = Setup::start().await;
    let outside = s.agent.data_dir().join("secret.txt");
    std::fs::write(&outside, "secret").unwrap();
    let cases = [
        ("/te/v1/files/../secret.txt", "../secret.txt"),
        ("/te/v1/files/a/../../secret.txt", "a/../../secret.txt"),
        ("/te/v1/files/%2e%2e/secret.txt", "../secret.txt"),
        (
            "/te/v1/files/a/%2E%2E/%2e%2e/secret.txt",
            "a/../../secret.txt",
        ),
        ("/te/v1/files//etc/passwd", "/etc/passwd"),
        ("/te/v1/files/%2Fetc%2Fpasswd", "/etc/passwd"),
        ("/te/v1/files/..%2Fsecret.txt", "../secret.txt"),
        ("/te/v1/files/a%00b", "a\\0b"),
        ("/te/v1/files/.edge-agent/tmp/x", ".edge-agent/tmp/x"),
        ("/tedge/file-transfer/../secret.txt", "../secret.txt"),
    ];
    for (target, shown) in cases {
        for method in ["GET", "PUT", "DELETE"] {
            let res = s.raw(method, target, &[], b"evil").await;
            assert_raw_plain(&res, 404, &format!("Invalid file path: \"{shown}\""));
            let root = s.agent.data_dir().to_string_lossy().into_owned();
            assert!(!res.text().contains(&root), "{}", res.text());
        }
    }
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "secret");
    assert!(!s.agent.data_dir().join("etc").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_are_not_allowed_and_list_the_allowed_ones() {
    let s = Setup::start().await;
    for method in ["POST", "PATCH", "OPTIONS"] {
        let res = s.raw(method, "/te/v1/files/c/f", &[], b"x").await;
        assert_raw_plain(&res, 405, "Method Not Allowed");
        assert_eq!(res.header("allow"), Some("GET, HEAD, PUT, DELETE"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_prefix_reaches_the_same_store_and_says_it_is_deprecated() {
    let s = Setup::start().await;
    let legacy = |p: &str| s.agent.url(&format!("/tedge/file-transfer/{p}"));
    let res = http::request(Method::PUT, &legacy("c/op/f.bin"), b"old api".to_vec()).await;
    assert_eq!(res.status, 201);
    assert_eq!(res.header("deprecation"), Some("true"));
    assert_eq!(res.header("sunset"), Some("Thu, 31 Dec 2025 23:59:59 GMT"));
    assert_eq!(
        res.header("link"),
        Some("</te/v1/files>; rel=\"deprecation\"")
    );
    let res = s.get("c/op/f.bin").await;
    assert_eq!((res.status, res.text()), (200, "old api"));
    assert_eq!(res.header("deprecation"), None);
    let res = http::get(&legacy("c/op/f.bin")).await;
    assert_eq!((res.status, res.text()), (200, "old api"));
    assert_eq!(res.header("deprecation"), Some("true"));
    let res = http::get(&legacy("c/none")).await;
    assert_plain(&res, 404, r#"File not found: "c/none""#);
    assert_eq!(res.header("sunset"), Some("Thu, 31 Dec 2025 23:59:59 GMT"));
    assert_eq!(http::delete(&legacy("c/op/f.bin")).await.status, 202);
    assert_eq!(s.get("c/op/f.bin").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_io_failure_is_an_internal_error_without_detail() {
    let s = Setup::start().await;
    // The store's temp directory vanishes: an upload cannot start.
    std::fs::remove_dir(s.tmp_dir()).unwrap();
    assert_plain(&s.put("c/f.bin", b"x").await, 500, "Internal error");
    assert_eq!(s.get("c/f.bin").await.status, 404);
    assert_eq!(
        s.agent
            .agent()
            .files()
            .counters()
            .snapshot()
            .refused
            .get("io"),
        Some(&1)
    );
}

// ---- atomic, durable uploads ----

/// Starts an upload of `total` bytes on a raw connection and sends the first `part` of `body`.
async fn partial_upload(s: &Setup, path: &str, body: &[u8], part: usize) -> Conn {
    let mut conn = Conn::open(s.agent.http_addr()).await;
    let len = format!("content-length: {}", body.len());
    conn.head("PUT", &format!("{FILES}/{path}"), &[&len]).await;
    conn.send(&body[..part]).await;
    conn
}

/// Waits until the upload's temp file holds at least `bytes`.
async fn wait_temp_bytes(s: &Setup, bytes: u64) {
    let dir = s.tmp_dir();
    common::wait_until(
        "the upload to reach its temp file",
        Duration::from_secs(10),
        || {
            let dir = dir.clone();
            async move {
                std::fs::read_dir(&dir)
                    .map(|d| {
                        d.filter_map(Result::ok)
                            .filter_map(|e| e.metadata().ok())
                            .any(|m| m.len() >= bytes)
                    })
                    .unwrap_or(false)
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_aborts_mid_upload_leaves_the_previous_file_whole() {
    let s = Setup::start().await;
    let old = bytes(100_000, 3);
    s.put("c/fw.bin", &old).await;
    let new = bytes(4 << 20, 4);
    let conn = partial_upload(&s, "c/fw.bin", &new, 2 << 20).await;
    wait_temp_bytes(&s, 1 << 20).await;
    assert_eq!(s.get("c/fw.bin").await.body.as_ref(), old.as_slice());
    drop(conn);
    s.wait_no_temp_files("the temp file to be removed").await;
    let res = s.get("c/fw.bin").await;
    assert_eq!(res.body.as_ref(), old.as_slice());
    assert_eq!(
        res.header("x-checksum-sha256"),
        Some(sha256_hex(&old).as_str())
    );
    assert_eq!(
        s.agent
            .agent()
            .files()
            .counters()
            .snapshot()
            .uploads_in_flight,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_during_a_put_serves_the_old_file_whole_then_the_new_one() {
    let s = Setup::start().await;
    let old = bytes(3 << 20, 5);
    s.put("c/fw.bin", &old).await;
    let new = bytes(2 << 20, 6);
    let mut conn = partial_upload(&s, "c/fw.bin", &new, 1 << 20).await;
    wait_temp_bytes(&s, 1 << 20).await;
    let during = s.get("c/fw.bin").await;
    assert_eq!(during.body.as_ref(), old.as_slice());
    conn.send(&new[1 << 20..]).await;
    let answer = conn.answer(false).await;
    assert_eq!(answer.status, 201);
    assert_eq!(s.get("c/fw.bin").await.body.as_ref(), new.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_of_one_path_never_interleave_and_the_last_to_complete_wins() {
    let s = Setup::start().await;
    let a = bytes(2 << 20, 7);
    let b = bytes(2 << 20, 8);
    let mut first = partial_upload(&s, "c/f.bin", &a, 1 << 20).await;
    let mut second = partial_upload(&s, "c/f.bin", &b, 1 << 20).await;
    // The second upload completes first; the first completes last and wins.
    second.send(&b[1 << 20..]).await;
    assert_eq!(second.answer(false).await.status, 201);
    assert_eq!(s.get("c/f.bin").await.body.as_ref(), b.as_slice());
    first.send(&a[1 << 20..]).await;
    assert_eq!(first.answer(false).await.status, 201);
    let res = s.get("c/f.bin").await;
    assert_eq!(res.body.as_ref(), a.as_slice());
    assert_eq!(
        res.header("x-checksum-sha256"),
        Some(sha256_hex(&a).as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_files_left_by_a_dead_agent_are_swept_at_start_and_never_served() {
    let mut s = Setup::start().await;
    s.put("c/f.bin", b"kept").await;
    s.agent.stop().await;
    let stray = s.tmp_dir().join("upload-crashed");
    std::fs::write(&stray, bytes(1000, 9)).unwrap();
    assert_eq!(tmp_entries(&s.tmp_dir()), 1);
    s.agent.relaunch().await;
    s.agent.wait_ready().await;
    assert!(!stray.exists(), "swept at start");
    assert_eq!(s.get("c/f.bin").await.text(), "kept");
    let res = s
        .raw(
            "GET",
            "/te/v1/files/.edge-agent/tmp/upload-crashed",
            &[],
            b"",
        )
        .await;
    assert_eq!(res.status, 404);
}

// ---- integrity ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_whose_announced_digest_does_not_match_is_refused_and_not_stored() {
    let s = Setup::start().await;
    let body = b"firmware image".to_vec();
    let wrong = sha256_hex(b"something else");
    let put = |headers: Vec<(&'static str, String)>, path: &'static str| {
        let mut req = client().put(s.url(path)).body(body.clone());
        for (name, value) in headers {
            req = req.header(name, value);
        }
        http::send(req)
    };
    let res = put(vec![("x-checksum-sha256", wrong.clone())], "c/a.bin").await;
    assert_plain(
        &res,
        400,
        &format!(
            "Digest mismatch: the body's SHA-256 is {}, the request announced {wrong}",
            sha256_hex(&body)
        ),
    );
    assert_eq!(s.get("c/a.bin").await.status, 404);
    let bad_b64 = format!("sha-256=:{}:", sha256_b64(b"other"));
    for name in ["content-digest", "repr-digest"] {
        let res = put(vec![(name, bad_b64.clone())], "c/a.bin").await;
        assert_eq!(res.status, 400, "{name}");
        assert!(res.text().starts_with("Digest mismatch"), "{}", res.text());
    }
    assert_eq!(s.get("c/a.bin").await.status, 404);
    let res = put(vec![("x-checksum-sha256", "xyz".into())], "c/a.bin").await;
    assert_plain(
        &res,
        400,
        "Invalid X-Checksum-Sha256 header: expected 64 hexadecimal digits",
    );
    assert_eq!(tmp_entries(&s.tmp_dir()), 0);

    let good = vec![
        ("x-checksum-sha256", sha256_hex(&body).to_uppercase()),
        (
            "content-digest",
            format!("sha-512=:AAAA:, sha-256=:{}:", sha256_b64(&body)),
        ),
    ];
    assert_eq!(put(good, "c/a.bin").await.status, 201);
    assert_eq!(s.get("c/a.bin").await.body.as_ref(), body.as_slice());
    // A failed upload over an existing file leaves it as it was.
    let res = put(vec![("x-checksum-sha256", wrong)], "c/a.bin").await;
    assert_eq!(res.status, 400);
    assert_eq!(s.get("c/a.bin").await.body.as_ref(), body.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_placed_behind_the_agents_back_is_served_with_its_true_digest() {
    let s = Setup::start().await;
    s.put("c/f.txt", b"via the agent").await;
    std::fs::write(s.root().join("c/f.txt"), b"edited by hand").unwrap();
    std::fs::write(s.root().join("c/new.txt"), b"copied in").unwrap();
    let res = s.get("c/f.txt").await;
    assert_eq!(res.text(), "edited by hand");
    assert_eq!(
        res.header("x-checksum-sha256"),
        Some(sha256_hex(b"edited by hand").as_str())
    );
    let res = s.get("c/new.txt").await;
    assert_eq!(
        res.header("x-checksum-sha256"),
        Some(sha256_hex(b"copied in").as_str())
    );
}

// ---- resume and conditional requests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_resumes_from_an_offset_with_ranges() {
    let s = Setup::start().await;
    let body = bytes(1_000_000, 10);
    s.put("c/fw.bin", &body).await;
    let url = s.url("c/fw.bin");
    let range = |value: &'static str| http::send(client().get(&url).header("range", value));

    // A download cut after 400,000 bytes continues from there.
    let res = range("bytes=400000-").await;
    assert_eq!(res.status, 206);
    assert_eq!(
        res.header("content-range"),
        Some("bytes 400000-999999/1000000")
    );
    assert_eq!(res.header("content-length"), Some("600000"));
    let mut joined = body[..400_000].to_vec();
    joined.extend_from_slice(&res.body);
    assert_eq!(joined, body);
    // The digest still describes the whole file.
    assert_eq!(
        res.header("x-checksum-sha256"),
        Some(sha256_hex(&body).as_str())
    );

    let res = range("bytes=10-19").await;
    assert_eq!((res.status, res.body.as_ref()), (206, &body[10..20]));
    let res = range("bytes=-100").await;
    assert_eq!(
        res.header("content-range"),
        Some("bytes 999900-999999/1000000")
    );
    assert_eq!(res.body.as_ref(), &body[999_900..]);
    let res = range("bytes=1000000-").await;
    assert_plain(&res, 416, "Range Not Satisfiable");
    assert_eq!(res.header("content-range"), Some("bytes */1000000"));
    // Several ranges, or a malformed one: the whole file.
    for value in ["bytes=0-1,5-6", "bytes=abc", "lines=1-2"] {
        let res = range(value).await;
        assert_eq!((res.status, res.body.len()), (200, 1_000_000), "{value}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_answer_conditional_requests_as_rfc_9110_says() {
    let s = Setup::start().await;
    s.put("c/f.bin", b"0123456789").await;
    let first = s.get("c/f.bin").await;
    let etag = first.header("etag").unwrap().to_owned();
    let modified = first.header("last-modified").unwrap().to_owned();
    let url = s.url("c/f.bin");
    let get = |headers: &[(&'static str, &str)]| {
        let mut req = client().get(&url);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        http::send(req)
    };
    let res = get(&[("if-none-match", &etag)]).await;
    assert_eq!((res.status, res.body.len()), (304, 0));
    assert_eq!(res.header("etag"), Some(etag.as_str()));
    assert_eq!(get(&[("if-none-match", "\"other\"")]).await.status, 200);
    assert_eq!(get(&[("if-modified-since", &modified)]).await.status, 304);
    assert_eq!(get(&[("if-match", &etag)]).await.status, 200);
    let res = get(&[("if-match", "\"other\"")]).await;
    assert_plain(&res, 412, "Precondition Failed");
    // If-Range: the range only while the file is the same.
    let res = get(&[("range", "bytes=2-4"), ("if-range", &etag)]).await;
    assert_eq!((res.status, res.text()), (206, "234"));
    let res = get(&[("range", "bytes=2-4"), ("if-range", &modified)]).await;
    assert_eq!((res.status, res.text()), (206, "234"));
    let res = get(&[("range", "bytes=2-4"), ("if-range", "\"old\"")]).await;
    assert_eq!((res.status, res.text()), (200, "0123456789"));

    // Conditional writes: create-only, and replace-only-this-version.
    let put = |value: &'static str, header: &'static str| {
        http::send(client().put(&url).header(header, value).body("new"))
    };
    assert_eq!(put("*", "if-none-match").await.status, 412);
    assert_eq!(put("\"other\"", "if-match").await.status, 412);
    assert_eq!(s.get("c/f.bin").await.text(), "0123456789");
    let res = http::send(client().put(&url).header("if-match", &etag).body("new")).await;
    assert_eq!(res.status, 201);
    assert_eq!(s.get("c/f.bin").await.text(), "new");
    let create = http::send(
        client()
            .put(s.url("c/created.bin"))
            .header("if-none-match", "*")
            .body("once"),
    )
    .await;
    assert_eq!(create.status, 201);
    let res = http::send(client().delete(&url).header("if-match", &etag)).await;
    assert_eq!(res.status, 412, "the file changed since that tag");
}

// ---- bounded disk ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_the_size_limit_is_refused_and_its_bytes_discarded() {
    let s = Setup::with(|c| c.files.max_file_bytes = 100_000).await;
    assert_eq!(s.put("c/ok.bin", &bytes(100_000, 11)).await.status, 201);
    let res = s.put("c/big.bin", &bytes(100_001, 12)).await;
    assert_plain(
        &res,
        413,
        r#"File too large: "c/big.bin" is larger than the limit of 100000 bytes (files.max_file_bytes)"#,
    );
    assert_eq!(s.get("c/big.bin").await.status, 404);

    // Without a Content-Length the limit is applied while reading.
    let mut conn = Conn::open(s.agent.http_addr()).await;
    conn.head(
        "PUT",
        "/te/v1/files/c/chunked.bin",
        &["transfer-encoding: chunked"],
    )
    .await;
    let chunk = bytes(60_000, 13);
    for _ in 0..2 {
        conn.send(format!("{:x}\r\n", chunk.len()).as_bytes()).await;
        conn.send(&chunk).await;
        conn.send(b"\r\n").await;
    }
    conn.send(b"0\r\n\r\n").await;
    assert_eq!(conn.answer(false).await.status, 413);
    assert_eq!(s.get("c/chunked.bin").await.status, 404);
    s.wait_no_temp_files("the partial body to be discarded")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_beyond_the_quota_get_507_and_replacing_a_file_counts_its_old_size() {
    let s = Setup::with(|c| c.files.quota_bytes = 1_000_000).await;
    assert_eq!(s.put("c/a.bin", &bytes(600_000, 14)).await.status, 201);
    let res = s.put("c/b.bin", &bytes(600_000, 15)).await;
    assert_plain(
        &res,
        507,
        r#"Insufficient storage: "c/b.bin" does not fit in the file store's quota of 1000000 bytes (files.quota_bytes)"#,
    );
    assert_eq!(s.get("c/b.bin").await.status, 404);
    // Replacing a.bin frees its 600,000 bytes first.
    let bigger = bytes(900_000, 16);
    assert_eq!(s.put("c/a.bin", &bigger).await.status, 201);
    assert_eq!(s.get("c/a.bin").await.body.as_ref(), bigger.as_slice());
    assert_eq!(s.agent.agent().files().used(), 900_000);
    assert_eq!(http::delete(&s.url("c/a.bin")).await.status, 202);
    assert_eq!(s.agent.agent().files().used(), 0);
    assert_eq!(s.put("c/b.bin", &bytes(600_000, 15)).await.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_older_than_the_ttl_are_swept() {
    let s = Setup::with(|c| c.files.ttl = Some(Duration::from_secs(3600))).await;
    s.put("c/old.bin", b"old").await;
    s.put("c/new.bin", b"new").await;
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(s.root().join("c/old.bin"))
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    // The sweep runs every minute for a 1 h TTL: run one now through a restart, which sweeps.
    let mut s = s;
    s.agent.restart().await;
    assert_eq!(s.get("c/old.bin").await.status, 404);
    assert_eq!(s.get("c/new.bin").await.text(), "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_sweep_removes_expired_files_while_running() {
    let s = Setup::with(|c| c.files.ttl = Some(Duration::from_secs(5))).await;
    s.put("c/f.bin", b"short-lived").await;
    let res = http::get_until(&s.url("c/f.bin"), |r| r.status == 404).await;
    assert_plain(&res, 404, r#"File not found: "c/f.bin""#);
}

// ---- symlinks ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_out_of_the_root_is_refused_like_a_traversal() {
    let s = Setup::start().await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "secret").unwrap();
    std::fs::create_dir_all(s.root().join("c")).unwrap();
    std::os::unix::fs::symlink(outside.path(), s.root().join("c/out")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), s.root().join("c/file-link"))
        .unwrap();
    assert_plain(
        &s.get("c/out/secret").await,
        404,
        r#"Invalid file path: "c/out/secret""#,
    );
    assert_plain(
        &s.get("c/file-link").await,
        404,
        r#"Invalid file path: "c/file-link""#,
    );
    assert_plain(
        &s.put("c/out/new", b"x").await,
        404,
        r#"Invalid file path: "c/out/new""#,
    );
    assert_plain(
        &s.put("c/out/deeper/new", b"x").await,
        404,
        r#"Invalid file path: "c/out/deeper/new""#,
    );
    assert_plain(
        &http::delete(&s.url("c/out/secret")).await,
        404,
        r#"Invalid file path: "c/out/secret""#,
    );
    assert!(!outside.path().join("new").exists());
    assert!(outside.path().join("secret").exists());

    // A symlink that stays inside the root is followed.
    s.put("c/real/f.txt", b"inside").await;
    std::os::unix::fs::symlink(s.root().join("c/real"), s.root().join("c/alias")).unwrap();
    assert_eq!(s.get("c/alias/f.txt").await.text(), "inside");
}

// ---- counters ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_follow_bytes_transfers_and_refusals() {
    let s = Setup::start().await;
    s.put("c/f.bin", &bytes(10_000, 17)).await;
    s.get("c/f.bin").await;
    s.get("c/none").await;
    s.raw("GET", "/te/v1/files/../x", &[], b"").await;
    let counters = s.agent.agent().files().counters().clone();
    common::wait_until(
        "the download to be counted",
        Duration::from_secs(10),
        || {
            let c = counters.clone();
            async move { c.snapshot().downloads == 1 }
        },
    )
    .await;
    let snap = counters.snapshot();
    assert_eq!((snap.bytes_in, snap.bytes_out), (10_000, 10_000));
    assert_eq!((snap.uploads, snap.downloads), (1, 1));
    assert_eq!((snap.uploads_in_flight, snap.downloads_in_flight), (0, 0));
    assert_eq!(
        snap.refused.into_iter().collect::<Vec<_>>(),
        [("invalid_path", 1), ("not_found", 1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_upload_leaves_the_previous_file_and_sweeps_the_rest_at_start() {
    use common::process::AgentSetup;
    let broker = Broker::start().await;
    let setup = AgentSetup::new(broker.port());
    let mut agent = setup.start().await;
    let old = bytes(200_000, 18);
    let url = agent.url("/te/v1/files/c/fw.bin");
    assert_eq!(
        http::request(Method::PUT, &url, old.clone()).await.status,
        201
    );

    let addr: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let new = bytes(4 << 20, 19);
    let mut conn = Conn::open(addr).await;
    let len = format!("content-length: {}", new.len());
    conn.head("PUT", "/te/v1/files/c/fw.bin", &[&len]).await;
    conn.send(&new[..2 << 20]).await;
    let tmp = setup.data_dir().join("file-transfer/.edge-agent/tmp");
    let probe = tmp.clone();
    common::wait_until(
        "the upload to reach its temp file",
        Duration::from_secs(10),
        || {
            let dir = probe.clone();
            async move {
                std::fs::read_dir(&dir)
                    .map(|d| {
                        d.filter_map(Result::ok)
                            .any(|e| e.metadata().is_ok_and(|m| m.len() > 0))
                    })
                    .unwrap_or(false)
            }
        },
    )
    .await;
    agent.process.kill9().await;
    drop(conn);
    assert_eq!(
        tmp_entries(&tmp),
        1,
        "the dead agent's temp file is still there"
    );
    assert_eq!(
        std::fs::read(setup.data_dir().join("file-transfer/c/fw.bin")).unwrap(),
        old,
        "the previous file is intact"
    );

    let agent = setup.start().await;
    assert_eq!(tmp_entries(&tmp), 0, "swept at start");
    let res = http::get(&agent.url("/te/v1/files/c/fw.bin")).await;
    assert_eq!(res.body.as_ref(), old.as_slice());
    assert_eq!(
        res.header("x-checksum-sha256"),
        Some(sha256_hex(&old).as_str())
    );
}

// ---- hostile or unlucky clients (second review) ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_neither_block_other_requests_nor_pile_up_without_bound() {
    let s = Setup::start().await;
    s.put("c/kept.bin", b"still served").await;
    // Every upload slot taken by a client that sends 2 bytes of 1000 and stops.
    let mut stalled = Vec::new();
    for i in 0..edge_agent::files::store::MAX_UPLOADS {
        let body = vec![b'x'; 1000];
        stalled.push(partial_upload(&s, &format!("c/stalled-{i}.bin"), &body, 2).await);
    }
    let counters = s.agent.agent().files().counters().clone();
    common::wait_until("every stalled upload to be in flight", Duration::from_secs(10), || {
        let c = counters.clone();
        async move { c.snapshot().uploads_in_flight == edge_agent::files::store::MAX_UPLOADS as u64 }
    })
    .await;
    // Reads, deletes and the twin API still answer at once.
    let res = s.get("c/kept.bin").await;
    assert_eq!((res.status, res.text()), (200, "still served"));
    assert_eq!(http::delete(&s.url("c/none")).await.status, 202);
    assert_eq!(http::get(&s.agent.url("/te/v1/entities")).await.status, 200);
    // One upload more is refused until a slot frees.
    let res = s.put("c/one-more.bin", b"x").await;
    assert_plain(&res, 503, "Too many uploads in progress, retry later");
    assert_eq!(res.header("retry-after"), Some("5"));
    drop(stalled);
    common::wait_until("the slots to free", Duration::from_secs(10), || {
        let c = counters.clone();
        async move { c.snapshot().uploads_in_flight == 0 }
    })
    .await;
    assert_eq!(s.put("c/one-more.bin", b"x").await.status, 201);
    s.wait_no_temp_files("the stalled uploads' temp files to go")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_describes_the_whole_file_even_with_a_range() {
    let s = Setup::start().await;
    s.put("c/f.bin", b"0123456789").await;
    for range in ["bytes=0-0", "bytes=9-", "bytes=100-"] {
        let res = s
            .raw(
                "HEAD",
                "/te/v1/files/c/f.bin",
                &[&format!("range: {range}")],
                b"",
            )
            .await;
        assert_eq!(res.status, 200, "{range}");
        assert_eq!(res.header("content-length"), Some("10"));
        assert_eq!(res.header("content-range"), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stores_own_files_stay_out_of_reach_through_a_symlink_to_the_root() {
    let s = Setup::start().await;
    std::os::unix::fs::symlink(s.root(), s.root().join("loop")).unwrap();
    s.put("c/f.bin", b"x").await;
    assert_eq!(s.get("loop/c/f.bin").await.text(), "x");
    let meta = std::fs::read_dir(s.root().join(".edge-agent/meta"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .to_string_lossy()
        .into_owned();
    let path = format!("loop/.edge-agent/meta/{meta}");
    assert_plain(
        &s.get(&path).await,
        404,
        &format!("Invalid file path: \"{path}\""),
    );
    let res = s.put("loop/.edge-agent/tmp/evil", b"x").await;
    assert_eq!(res.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_too_long_for_the_file_system_is_refused_before_the_body() {
    let s = Setup::start().await;
    let name = "n".repeat(300);
    let res = s.put(&format!("c/{name}"), &bytes(100_000, 20)).await;
    assert_plain(&res, 404, &format!("Invalid file path: \"c/{name}\""));
    assert_eq!(s.agent.agent().files().counters().snapshot().bytes_in, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_concurrent_create_only_uploads_one_wins_and_the_other_gets_412() {
    let s = Setup::start().await;
    let a = bytes(2 << 20, 21);
    let b = bytes(2 << 20, 22);
    let start = |body: &[u8]| {
        let len = format!("content-length: {}", body.len());
        let addr = s.agent.http_addr();
        let first = body[..1 << 20].to_vec();
        async move {
            let mut conn = Conn::open(addr).await;
            conn.head(
                "PUT",
                "/te/v1/files/c/once.bin",
                &[&len, "if-none-match: *"],
            )
            .await;
            conn.send(&first).await;
            conn
        }
    };
    let mut first = start(&a).await;
    let mut second = start(&b).await;
    wait_temp_bytes(&s, 1 << 20).await;
    first.send(&a[1 << 20..]).await;
    assert_eq!(first.answer(false).await.status, 201);
    second.send(&b[1 << 20..]).await;
    let refused = second.answer(false).await;
    assert_raw_plain(&refused, 412, "Precondition Failed");
    assert_eq!(s.get("c/once.bin").await.body.as_ref(), a.as_slice());
}

//! The downloader of operations (issue #5, "Making the file available") against a real HTTP
//! origin on a socket: exact bytes and digests, one download shared by concurrent callers, the
//! cache, resuming after a cut or a stall, retries, refusals, and a cache left clean by failures.

mod common;

use common::data::{bytes, sha256_hex};

use std::path::Path;
use std::time::Duration;

use common::origin::{Origin, MODIFIED, TAG};
use edge_agent::ops::fetch::{FetchError, FetchOptions, Fetched, Fetcher};
use futures_util::future::join_all;
use tempfile::TempDir;

/// The longest any fetch of these tests may take.
const WAIT: Duration = Duration::from_secs(10);

/// Tiny pauses: the tests wait on the fetch itself, never on time.
fn options() -> FetchOptions {
    FetchOptions {
        retries: 3,
        backoff: Duration::from_millis(1),
        max_bytes: 1 << 20,
        idle_timeout: Duration::from_secs(5),
    }
}

struct Cache {
    dir: TempDir,
    fetcher: Fetcher,
}

impl Cache {
    fn new(options: FetchOptions) -> Cache {
        let dir = tempfile::tempdir().expect("a temp dir");
        let fetcher = Fetcher::new(dir.path().join("cache"), options).expect("a fetcher");
        Cache { dir, fetcher }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("cache")
    }

    async fn fetch(&self, url: &str, sha256: Option<&str>) -> Result<Fetched, FetchError> {
        fetch(&self.fetcher, url, sha256).await
    }

    /// The names in the cache directory, temp files included.
    fn files(&self) -> Vec<String> {
        files_in(&self.path())
    }
}

async fn fetch(fetcher: &Fetcher, url: &str, sha256: Option<&str>) -> Result<Fetched, FetchError> {
    tokio::time::timeout(WAIT, fetcher.fetch(url, sha256))
        .await
        .unwrap_or_else(|_| panic!("fetching {url} took more than {WAIT:?}"))
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[track_caller]
fn assert_file(fetched: &Fetched, cache: &Cache, body: &[u8]) {
    assert_eq!(fetched.path.parent(), Some(cache.path().as_path()));
    assert_eq!(
        std::fs::read(&fetched.path).expect("the fetched file"),
        body,
        "the file's bytes"
    );
    assert_eq!(fetched.sha256, sha256_hex(body));
    assert_eq!(fetched.size, body.len() as u64);
}

/// `(range, if_range, status)` of each request the origin saw.
fn exchanges(origin: &Origin) -> Vec<(Option<String>, Option<String>, u16)> {
    origin
        .requests()
        .into_iter()
        .map(|s| (s.range, s.if_range, s.status))
        .collect()
}

#[tokio::test]
async fn a_download_gives_the_exact_bytes_and_their_digest() {
    let body = bytes(300_000, 1);
    let origin = Origin::start(body.clone()).await;
    let cache = Cache::new(options());
    let fetched = cache
        .fetch(&origin.url(), Some(&sha256_hex(&body)))
        .await
        .unwrap();
    assert_file(&fetched, &cache, &body);
    assert_eq!(
        cache.files().len(),
        1,
        "no temp file left: {:?}",
        cache.files()
    );
    assert_eq!(exchanges(&origin), [(None, None, 200)]);
    assert_eq!(origin.full_downloads(), 1);
}

#[tokio::test]
async fn without_a_digest_the_file_is_downloaded_and_its_digest_computed() {
    let body = bytes(70_000, 2);
    let origin = Origin::start(body.clone()).await;
    origin.without_length();
    let cache = Cache::new(options());
    let fetched = cache.fetch(&origin.url(), None).await.unwrap();
    assert_file(&fetched, &cache, &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_fetches_of_one_url_and_digest_download_it_once() {
    let body = bytes(500_000, 3);
    let digest = sha256_hex(&body);
    let origin = Origin::start(body.clone()).await;
    let cache = Cache::new(options());
    let url = origin.url();
    let results = join_all((0..10).map(|_| {
        let fetcher = cache.fetcher.clone();
        let (url, digest) = (url.clone(), digest.clone());
        tokio::spawn(async move { fetch(&fetcher, &url, Some(&digest)).await })
    }))
    .await;
    let fetched: Vec<Fetched> = results
        .into_iter()
        .map(|r| r.expect("the task").expect("the fetch"))
        .collect();
    assert_file(&fetched[0], &cache, &body);
    assert!(fetched.iter().all(|f| *f == fetched[0]), "{fetched:?}");
    assert_eq!(origin.request_count(), 1);
    assert_eq!(origin.full_downloads(), 1);
}

#[tokio::test]
async fn a_later_fetch_is_answered_from_the_cache_without_a_request() {
    let body = bytes(10_000, 4);
    let digest = sha256_hex(&body);
    let origin = Origin::start(body.clone()).await;
    let cache = Cache::new(options());
    let first = cache.fetch(&origin.url(), Some(&digest)).await.unwrap();
    let again = cache.fetch(&origin.url(), Some(&digest)).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(origin.request_count(), 1);

    // After a restart: the file is found on disk and hashed, still without a request.
    let restarted = Fetcher::new(cache.path(), options()).unwrap();
    let found = fetch(&restarted, &origin.url(), Some(&digest))
        .await
        .unwrap();
    assert_eq!(found, first);
    assert_eq!(origin.request_count(), 1);
}

#[tokio::test]
async fn the_same_url_with_and_without_a_digest_are_two_entries() {
    let body = bytes(10_000, 5);
    let origin = Origin::start(body.clone()).await;
    let cache = Cache::new(options());
    let verified = cache
        .fetch(&origin.url(), Some(&sha256_hex(&body)))
        .await
        .unwrap();
    let plain = cache.fetch(&origin.url(), None).await.unwrap();
    assert_ne!(verified.path, plain.path);
    assert_file(&plain, &cache, &body);
    assert_eq!(origin.request_count(), 2);
}

#[tokio::test]
async fn a_connection_cut_half_way_is_resumed_with_one_range_request() {
    let body = bytes(200_000, 6);
    let origin = Origin::start(body.clone()).await;
    origin.cut_first_after(100_000);
    let cache = Cache::new(options());
    let fetched = cache
        .fetch(&origin.url(), Some(&sha256_hex(&body)))
        .await
        .unwrap();
    assert_file(&fetched, &cache, &body);
    assert_eq!(
        exchanges(&origin),
        [
            (None, None, 200),
            (Some("bytes=100000-".into()), Some(TAG.into()), 206)
        ]
    );
    assert_eq!(origin.full_downloads(), 0, "the whole file was never sent");
}

#[tokio::test]
async fn a_body_that_stalls_is_resumed_after_the_idle_timeout() {
    let body = bytes(120_000, 7);
    let origin = Origin::start(body.clone()).await;
    origin.stall_first_after(50_000);
    let cache = Cache::new(FetchOptions {
        idle_timeout: Duration::from_millis(300),
        ..options()
    });
    let fetched = cache.fetch(&origin.url(), None).await.unwrap();
    assert_file(&fetched, &cache, &body);
    assert_eq!(
        exchanges(&origin),
        [
            (None, None, 200),
            (Some("bytes=50000-".into()), Some(TAG.into()), 206)
        ]
    );
}

#[tokio::test]
async fn without_an_etag_the_resume_is_conditional_on_last_modified() {
    let body = bytes(80_000, 8);
    let origin = Origin::start(body.clone()).await;
    origin.without_etag();
    origin.cut_first_after(30_000);
    let cache = Cache::new(options());
    let fetched = cache.fetch(&origin.url(), None).await.unwrap();
    assert_file(&fetched, &cache, &body);
    assert_eq!(
        exchanges(&origin),
        [
            (None, None, 200),
            (Some("bytes=30000-".into()), Some(MODIFIED.into()), 206)
        ]
    );
}

#[tokio::test]
async fn a_whole_file_sent_instead_of_the_rest_restarts_from_zero() {
    let body = bytes(90_000, 9);
    let origin = Origin::start(body.clone()).await;
    origin.ignore_ranges();
    origin.cut_first_after(40_000);
    let cache = Cache::new(options());
    let fetched = cache
        .fetch(&origin.url(), Some(&sha256_hex(&body)))
        .await
        .unwrap();
    assert_file(&fetched, &cache, &body);
    assert_eq!(
        exchanges(&origin),
        [
            (None, None, 200),
            (Some("bytes=40000-".into()), Some(TAG.into()), 200)
        ]
    );
    assert_eq!(origin.full_downloads(), 1);
}

#[tokio::test]
async fn two_server_errors_then_success() {
    let body = bytes(5_000, 10);
    let origin = Origin::start(body.clone()).await;
    origin.fail_next(2);
    let cache = Cache::new(options());
    let fetched = cache.fetch(&origin.url(), None).await.unwrap();
    assert_file(&fetched, &cache, &body);
    assert_eq!(
        exchanges(&origin),
        [(None, None, 500), (None, None, 500), (None, None, 200)]
    );
}

#[tokio::test]
async fn server_errors_beyond_the_retries_give_up_with_the_last_one() {
    let origin = Origin::start(bytes(5_000, 11)).await;
    origin.fail_next(100);
    let cache = Cache::new(FetchOptions {
        retries: 2,
        ..options()
    });
    let url = origin.url();
    let error = cache.fetch(&url, None).await.unwrap_err();
    assert!(
        matches!(&error, FetchError::GaveUp { attempts: 3, .. }),
        "{error:?}"
    );
    assert_eq!(error.to_string(), "gave up after 3 attempts");
    assert_eq!(
        error.last().to_string(),
        format!("GET {url}: 500 Internal Server Error")
    );
    assert_eq!(origin.request_count(), 3);
    assert_eq!(cache.files(), Vec::<String>::new());
}

#[tokio::test]
async fn a_404_is_an_error_at_once_without_retries() {
    let origin = Origin::start(bytes(5_000, 12)).await;
    origin.not_found();
    let cache = Cache::new(options());
    let url = origin.url();
    let error = cache.fetch(&url, None).await.unwrap_err();
    assert_eq!(error.to_string(), format!("GET {url}: 404 Not Found"));
    assert!(
        matches!(&error, FetchError::Status { status, .. } if status.as_u16() == 404),
        "{error:?}"
    );
    assert_eq!(origin.request_count(), 1);
    assert_eq!(cache.files(), Vec::<String>::new());
}

#[tokio::test]
async fn a_digest_mismatch_is_an_error_and_leaves_nothing_in_the_cache() {
    let body = bytes(64_000, 13);
    let origin = Origin::start(body.clone()).await;
    let cache = Cache::new(options());
    let url = origin.url();
    let wrong = sha256_hex(b"another file");
    let error = cache.fetch(&url, Some(&wrong)).await.unwrap_err();
    match &error {
        FetchError::DigestMismatch {
            url: u,
            expected,
            actual,
        } => {
            assert_eq!((u, expected, actual), (&url, &wrong, &sha256_hex(&body)));
        }
        other => panic!("not a digest mismatch: {other:?}"),
    }
    assert_eq!(cache.files(), Vec::<String>::new());
    // Nothing was cached: asking again downloads again (and fails again).
    assert!(cache.fetch(&url, Some(&wrong)).await.is_err());
    assert_eq!(origin.request_count(), 2);
    assert_eq!(cache.files(), Vec::<String>::new());
}

#[tokio::test]
async fn a_file_larger_than_max_bytes_is_refused_by_its_length() {
    let origin = Origin::start(bytes(5_000, 14)).await;
    let cache = Cache::new(FetchOptions {
        max_bytes: 4_999,
        ..options()
    });
    let url = origin.url();
    let error = cache.fetch(&url, None).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("{url} is larger than the limit of 4999 bytes")
    );
    assert_eq!(origin.request_count(), 1);
    assert_eq!(cache.files(), Vec::<String>::new());
}

#[tokio::test]
async fn a_file_larger_than_max_bytes_is_refused_while_streaming() {
    let origin = Origin::start(bytes(50_000, 15)).await;
    origin.without_length();
    let cache = Cache::new(FetchOptions {
        max_bytes: 20_000,
        ..options()
    });
    let error = cache.fetch(&origin.url(), None).await.unwrap_err();
    assert!(
        matches!(error, FetchError::TooLarge { limit: 20_000, .. }),
        "{error:?}"
    );
    assert_eq!(origin.request_count(), 1);
    assert_eq!(cache.files(), Vec::<String>::new());

    // Exactly the limit is accepted.
    let cache = Cache::new(FetchOptions {
        max_bytes: 50_000,
        ..options()
    });
    assert!(cache.fetch(&origin.url(), None).await.is_ok());
}

#[tokio::test]
async fn only_http_and_https_urls_are_fetched() {
    let cache = Cache::new(options());
    let error = cache
        .fetch("ftp://example.com/fw.bin", None)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot download \"ftp://example.com/fw.bin\": only http and https URLs are supported"
    );
    let error = cache
        .fetch("http://example.com/fw.bin", Some("abc"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, FetchError::InvalidDigest { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_retried_then_given_up() {
    // A port that was free a moment ago: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let cache = Cache::new(FetchOptions {
        retries: 2,
        ..options()
    });
    let url = format!("http://{addr}/fw.bin");
    let error = cache.fetch(&url, None).await.unwrap_err();
    assert!(
        matches!(&error, FetchError::GaveUp { attempts: 3, .. }),
        "{error:?}"
    );
    assert!(
        matches!(error.last(), FetchError::Unreachable { .. }),
        "{error:?}"
    );
    assert_eq!(cache.files(), Vec::<String>::new());
}

#[tokio::test]
async fn an_evicted_file_is_removed_and_downloaded_again_when_asked_for() {
    let body = bytes(10_000, 16);
    let digest = sha256_hex(&body);
    let origin = Origin::start(body.clone()).await;
    let cache = Cache::new(options());
    let fetched = cache.fetch(&origin.url(), Some(&digest)).await.unwrap();
    cache.fetcher.evict(&fetched).unwrap();
    assert!(!fetched.path.exists());
    assert_eq!(cache.files(), Vec::<String>::new());
    cache.fetcher.evict(&fetched).unwrap();

    let again = cache.fetch(&origin.url(), Some(&digest)).await.unwrap();
    assert_file(&again, &cache, &body);
    assert_eq!(origin.request_count(), 2);
}

#[tokio::test]
async fn a_cached_file_deleted_behind_the_fetchers_back_is_downloaded_again() {
    let body = bytes(10_000, 17);
    let origin = Origin::start(body.clone()).await;
    let cache = Cache::new(options());
    let fetched = cache.fetch(&origin.url(), None).await.unwrap();
    std::fs::remove_file(&fetched.path).unwrap();
    let again = cache.fetch(&origin.url(), None).await.unwrap();
    assert_file(&again, &cache, &body);
    assert_eq!(origin.request_count(), 2);
}

#[tokio::test]
async fn a_cut_after_progress_does_not_use_up_a_retry() {
    let body = bytes(60_000, 18);
    let origin = Origin::start(body.clone()).await;
    origin.cut_first_after(20_000);
    let cache = Cache::new(FetchOptions {
        retries: 0,
        ..options()
    });
    let fetched = cache.fetch(&origin.url(), None).await.unwrap();
    assert_file(&fetched, &cache, &body);
    assert_eq!(origin.request_count(), 2);
}

#[tokio::test]
async fn a_server_that_always_cuts_at_the_same_place_is_given_up_on() {
    let origin = Origin::start(bytes(60_000, 19)).await;
    origin.ignore_ranges();
    origin.cut_every_after(20_000);
    let cache = Cache::new(FetchOptions {
        retries: 2,
        ..options()
    });
    let error = cache.fetch(&origin.url(), None).await.unwrap_err();
    // The first cut was progress; the two retries and the last attempt were not.
    assert!(
        matches!(&error, FetchError::GaveUp { attempts: 4, .. }),
        "{error:?}"
    );
    assert!(
        matches!(
            error.last(),
            FetchError::Interrupted {
                received: 20_000,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(origin.request_count(), 4);
    assert_eq!(cache.files(), Vec::<String>::new());
}

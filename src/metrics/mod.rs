//! `GET /metrics` (issue #7, "Metrics and logs"): what the agent counts, gathered at each
//! scrape from the parts that own the figures, and shown in the OpenMetrics text format, which
//! Prometheus reads.
//!
//! The twin, the file store and the operations keep their own counters and answer for them
//! when asked ([`crate::twin::TwinHandle::stats`], the file store's counters,
//! [`crate::ops::task::OpsHandle::stats`]). What no single owner sees is counted here, in a
//! [`Metrics`] handle shared by the tasks: connections to the broker, and HTTP responses by
//! route group and status. A part that does not answer within [`ASK_TIMEOUT`] is left out of
//! that scrape rather than holding it up.
//!
//! # Layout
//! - `render`: a [`render::Snapshot`] as text (pure).
//! - `process`: the agent's resident memory and open descriptors, from /proc.

mod process;
pub mod render;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::files::Store as FileStore;
use crate::ops::task::OpsHandle;
use crate::readiness::Readiness;
use crate::twin::feed::ChangeFeed;
use crate::twin::TwinHandle;

/// The longest a scrape waits for the twin or the operations to answer.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The figures counted outside their owners; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    connects: AtomicU64,
    responses: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// The configured clouds, whose bridges are shown.
    bridges: Vec<String>,
}

impl Metrics {
    /// A handle showing the bridges of the clouds named `bridges` (the configuration's).
    pub fn new(bridges: Vec<String>) -> Metrics {
        Metrics {
            inner: Arc::new(Inner {
                bridges,
                ..Inner::default()
            }),
        }
    }

    /// Counts a successful connection to the broker.
    pub fn connected(&self) {
        self.inner.connects.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one HTTP response to a request for `path`.
    pub fn response(&self, path: &str, status: u16) {
        let group = route_group(path);
        if let Ok(mut responses) = self.inner.responses.lock() {
            *responses.entry((group, status)).or_default() += 1;
        }
    }

    /// The text of one scrape.
    pub async fn scrape(
        &self,
        twin: &TwinHandle,
        files: &FileStore,
        ops: &OpsHandle,
        feed: &ChangeFeed,
    ) -> String {
        let (twin_stats, ops_stats) = tokio::join!(
            tokio::time::timeout(ASK_TIMEOUT, twin.stats()),
            tokio::time::timeout(ASK_TIMEOUT, ops.stats()),
        );
        let twin_stats = twin_stats.ok().and_then(Result::ok);
        let bridges = self
            .inner
            .bridges
            .iter()
            .map(|name| {
                let service = format!("mosquitto-{name}-bridge");
                let up = twin_stats.as_ref().and_then(|stats| {
                    stats.bridges.iter().find_map(|(id, up)| {
                        let (_, s) = id.default_service_names()?;
                        (s == service).then_some(*up)
                    })
                });
                (name.clone(), up)
            })
            .collect();
        let http = match self.inner.responses.lock() {
            Ok(responses) => responses.clone(),
            Err(_) => BTreeMap::new(),
        };
        let snapshot = render::Snapshot {
            twin: twin_stats,
            files: files.counters().snapshot(),
            ops: ops_stats.ok().and_then(Result::ok),
            connected: !matches!(twin.readiness(), Readiness::Disconnected(_))
                && !twin.readiness().is_loading(),
            connects: self.inner.connects.load(Ordering::Relaxed),
            http,
            bridges,
            sse_clients: feed.clients() as u64,
            rss_bytes: process::rss_bytes(),
            open_fds: process::open_fds(),
        };
        render::render(&snapshot)
    }
}

/// The route group of a request path: a fixed set of labels, whatever the path.
pub fn route_group(path: &str) -> &'static str {
    let path = path.trim_start_matches('/');
    let first = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if first("te/v1/files") || first("tedge/file-transfer") {
        "files"
    } else if first("te/v1/entities") || first("te/v1/state") {
        "entities"
    } else if first("te/v1/operations") {
        "operations"
    } else if first("te/v1/changes") {
        "changes"
    } else if path.is_empty() || first("ui") {
        "page"
    } else if path == "healthz" || path == "readyz" {
        "probes"
    } else if path == "metrics" {
        "metrics"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fall_in_a_fixed_set_of_route_groups() {
        for (path, group) in [
            ("/te/v1/files/child1/fw.bin", "files"),
            ("/tedge/file-transfer/a", "files"),
            ("/te/v1/filesystem", "other"),
            ("/te/v1/entities", "entities"),
            ("/te/v1/entities/device/child1//twin", "entities"),
            ("/te/v1/state", "entities"),
            ("/te/v1/operations/abc", "operations"),
            ("/healthz", "probes"),
            ("/readyz", "probes"),
            ("/metrics", "metrics"),
            ("/", "page"),
            ("/ui/app.js", "page"),
            ("/uix", "other"),
            ("/te/v1/changes", "changes"),
            ("/../../etc/passwd", "other"),
        ] {
            assert_eq!(route_group(path), group, "{path}");
        }
    }

    #[test]
    fn responses_are_counted_by_group_and_status() {
        let metrics = Metrics::new(Vec::new());
        metrics.response("/te/v1/files/a", 201);
        metrics.response("/te/v1/files/b", 201);
        metrics.response("/nope", 404);
        let responses = metrics.inner.responses.lock().unwrap().clone();
        assert_eq!(responses.get(&("files", 201)), Some(&2));
        assert_eq!(responses.get(&("other", 404)), Some(&1));
        assert_eq!(responses.len(), 2);
    }
}

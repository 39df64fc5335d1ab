//! The file transfer service's store (issue #3): files under `files.dir`, addressed by the
//! `/te/v1/files/<path>` URLs, uploaded atomically and durably, served with their digest,
//! validators and byte ranges, bounded by a size limit, a quota and a TTL.
//!
//! # Layout
//! - `path`: the URL's path → a [`StorePath`] that cannot leave the root (pure).
//! - `conditional`: RFC 9110 preconditions and byte ranges (pure).
//! - `digest`: SHA-256 values and the digest header fields (pure).
//! - `meta`: the digest record kept beside each file.
//! - `store`: the disk: locating paths (symlinks), opening, committing, deleting, quota, sweeps.
//! - `buffers`: the recycled blocks of an upload.
//! - `upload`: streaming a request body into a temp file, then committing it.
//! - `download`: streaming a file (or a range of it) into a response body.
//! - `counters`: bytes, transfers in flight and refusals, for metrics.
//! - `error`: what a request can fail with; statuses are chosen in `http::error`.
//!
//! The HTTP routes are `http::files`'; this module knows nothing of warp but the body's error type.

mod buffers;
pub mod conditional;
pub mod counters;
pub mod digest;
pub mod download;
pub mod error;
mod meta;
pub mod path;
pub mod store;
pub mod upload;

use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

pub use error::FileError;
pub use path::StorePath;
pub use store::{OpenError, Store};

/// Removes expired files every [`Store::sweep_interval`] until `stop`; nothing to do without a
/// TTL.
pub async fn sweep_task(store: Store, stop: CancellationToken) {
    let Some(every) = store.sweep_interval() else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = store.clone();
        let _ = tokio::task::spawn_blocking(move || s.sweep(SystemTime::now())).await;
    }
}

/// Runs a store call on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FileError> + Send + 'static,
) -> Result<T, FileError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(FileError::io("a file task", std::io::Error::other(e))))
}

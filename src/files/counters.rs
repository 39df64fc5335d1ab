//! The file transfer service's counters, kept for the metrics endpoint (issue #7): bytes in and
//! out, transfers in flight, refused requests by reason. Lock-free; read with [`Counters::snapshot`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct Counters {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    uploads_in_flight: AtomicU64,
    downloads_in_flight: AtomicU64,
    uploads: AtomicU64,
    downloads: AtomicU64,
    /// Reason → count; the reasons are a fixed set of labels (`FileError::reason`).
    refused: Mutex<BTreeMap<&'static str, u64>>,
}

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub uploads_in_flight: u64,
    pub downloads_in_flight: u64,
    /// Uploads stored.
    pub uploads: u64,
    /// Downloads that sent their last byte.
    pub downloads: u64,
    pub refused: BTreeMap<&'static str, u64>,
}

/// Counts one transfer in flight until dropped.
pub struct InFlight {
    counters: Arc<Counters>,
    upload: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let c = &self.counters;
        let gauge = if self.upload {
            &c.uploads_in_flight
        } else {
            &c.downloads_in_flight
        };
        gauge.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Counters {
    pub fn received(&self, bytes: u64) {
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn sent(&self, bytes: u64) {
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn stored(&self) {
        self.uploads.fetch_add(1, Ordering::Relaxed);
    }

    pub fn served(&self) {
        self.downloads.fetch_add(1, Ordering::Relaxed);
    }

    pub fn upload(self: &Arc<Self>) -> InFlight {
        self.uploads_in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            counters: self.clone(),
            upload: true,
        }
    }

    pub fn download(self: &Arc<Self>) -> InFlight {
        self.downloads_in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            counters: self.clone(),
            upload: false,
        }
    }

    pub fn refused(&self, reason: &'static str) {
        let mut map = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(reason).or_default() += 1;
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            uploads_in_flight: self.uploads_in_flight.load(Ordering::Relaxed),
            downloads_in_flight: self.downloads_in_flight.load(Ordering::Relaxed),
            uploads: self.uploads.load(Ordering::Relaxed),
            downloads: self.downloads.load(Ordering::Relaxed),
            refused: self
                .refused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

//! The journal of recent changes that `/te/v1/changes` clients read (issue #7).
//!
//! The twin's owner task appends each batch's events ([`ChangeFeed::publish`]); every client
//! reads from the journal at its own pace with its own position, so a slow client costs the
//! agent nothing: it only finds, when it comes back, that its position has left the bounded
//! journal, and is told to start again (`reset`). Event texts are made only while someone
//! follows the stream, or did so within [`GRACE`], so that a client reconnecting after a short
//! break resumes without a gap; outside that, the numbering goes on and the journal records the
//! gap.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

/// How long event texts are still made after the last client left.
pub const GRACE: Duration = Duration::from_secs(60);
/// The most a client is handed in one read.
const READ_MAX: usize = 256 << 10;

#[derive(Clone)]
pub struct ChangeFeed {
    shared: Arc<Shared>,
}

struct Shared {
    journal: Mutex<Journal>,
    latest: watch::Sender<u64>,
    clients: AtomicUsize,
    /// When the last client left, in milliseconds since `epoch`; 0: never, or clients remain.
    left_at: AtomicU64,
    epoch: Instant,
}

struct Journal {
    events: VecDeque<(u64, Bytes)>,
    kept: usize,
    /// Every change after this number is in `events`.
    complete_after: u64,
    /// The number of the last change.
    latest: u64,
}

/// What a client at position `after` gets from [`ChangeFeed::read`].
#[derive(Debug, PartialEq)]
pub enum Read {
    /// The events after its position, concatenated, and the number of the last one.
    Events(Bytes, u64),
    /// Nothing new yet.
    UpToDate,
    /// Its position is no longer (or never was) in the journal: the client starts again from
    /// the given number, the latest.
    Reset(u64),
}

impl ChangeFeed {
    /// A feed whose numbering continues after `latest`, keeping at most `kept` events.
    pub fn new(kept: usize, latest: u64) -> ChangeFeed {
        let (tx, _) = watch::channel(latest);
        ChangeFeed {
            shared: Arc::new(Shared {
                journal: Mutex::new(Journal {
                    events: VecDeque::new(),
                    kept: kept.max(1),
                    complete_after: latest,
                    latest,
                }),
                latest: tx,
                clients: AtomicUsize::new(0),
                left_at: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
        }
    }

    /// Whether the twin should make event texts: a client follows, or left within [`GRACE`].
    pub fn wanted(&self) -> bool {
        self.wanted_at(self.millis())
    }

    fn wanted_at(&self, now: u64) -> bool {
        if self.shared.clients.load(Ordering::Relaxed) > 0 {
            return true;
        }
        let left = self.shared.left_at.load(Ordering::Relaxed);
        left > 0 && now < left.saturating_add(GRACE.as_millis() as u64)
    }

    /// Appends a batch of events, in order; `latest` is the twin's last number, which is above
    /// the last event when changes were numbered without text.
    pub fn publish(&self, events: Vec<(u64, String)>, latest: u64) {
        let mut journal = self.journal();
        if events.is_empty() && latest == journal.latest {
            return;
        }
        for (seq, text) in events {
            if seq != journal.latest.wrapping_add(1) {
                journal.restart(seq.saturating_sub(1));
            }
            journal.events.push_back((seq, Bytes::from(text)));
            journal.latest = seq;
            if journal.events.len() > journal.kept {
                if let Some((dropped, _)) = journal.events.pop_front() {
                    journal.complete_after = dropped;
                }
            }
        }
        if latest != journal.latest {
            journal.restart(latest);
        }
        let latest = journal.latest;
        drop(journal);
        self.shared.latest.send_replace(latest);
    }

    /// The events after `after`, up to a read's worth.
    pub fn read(&self, after: u64) -> Read {
        let journal = self.journal();
        if after == journal.latest {
            return Read::UpToDate;
        }
        if after < journal.complete_after || after > journal.latest {
            return Read::Reset(journal.latest);
        }
        // Numbers in the journal are consecutive: the position is found by arithmetic.
        let first = journal.events.front().map_or(journal.latest, |(s, _)| *s);
        let skip = usize::try_from(after + 1 - first).unwrap_or(usize::MAX);
        let mut buf = BytesMut::new();
        let mut last = after;
        for (seq, text) in journal.events.iter().skip(skip) {
            if !buf.is_empty() && buf.len() + text.len() > READ_MAX {
                break;
            }
            buf.extend_from_slice(text);
            last = *seq;
        }
        Read::Events(buf.freeze(), last)
    }

    /// The last change's number now, and a receiver told of every new one.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.shared.latest.subscribe()
    }

    /// The number of the last change.
    pub fn latest(&self) -> u64 {
        self.journal().latest
    }

    /// Counts a client until the returned guard is dropped.
    pub fn client(&self) -> Client {
        self.shared.clients.fetch_add(1, Ordering::Relaxed);
        self.shared.left_at.store(0, Ordering::Relaxed);
        Client(self.clone())
    }

    /// Clients following the stream now.
    pub fn clients(&self) -> usize {
        self.shared.clients.load(Ordering::Relaxed)
    }

    fn millis(&self) -> u64 {
        // 1 at least: 0 means "nobody left".
        (self.shared.epoch.elapsed().as_millis() as u64).max(1)
    }

    fn journal(&self) -> MutexGuard<'_, Journal> {
        // The journal stays consistent at every step, so a panic elsewhere leaves it usable.
        self.shared
            .journal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Journal {
    /// Forgets the events: the journal is complete only after `latest`.
    fn restart(&mut self, latest: u64) {
        self.events.clear();
        self.complete_after = latest;
        self.latest = latest;
    }
}

/// A client of the stream; counted while it lives.
pub struct Client(ChangeFeed);

impl Drop for Client {
    fn drop(&mut self) {
        let shared = &self.0.shared;
        if shared.clients.fetch_sub(1, Ordering::Relaxed) == 1 {
            shared.left_at.store(self.0.millis(), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> (u64, String) {
        (seq, format!("e{seq};"))
    }

    #[test]
    fn clients_read_from_their_position_and_are_reset_when_it_left_the_journal() {
        let feed = ChangeFeed::new(3, 10);
        assert_eq!(feed.read(10), Read::UpToDate);
        assert_eq!(feed.read(9), Read::Reset(10));
        feed.publish(vec![event(11), event(12)], 12);
        assert_eq!(feed.read(10), Read::Events(Bytes::from("e11;e12;"), 12));
        assert_eq!(feed.read(11), Read::Events(Bytes::from("e12;"), 12));
        feed.publish(vec![event(13), event(14)], 14);
        // 11 was dropped: a client at 10 missed it, one at 11 did not.
        assert_eq!(feed.read(10), Read::Reset(14));
        assert_eq!(feed.read(11), Read::Events(Bytes::from("e12;e13;e14;"), 14));
        // A number from the future (another run) is unknown.
        assert_eq!(feed.read(99), Read::Reset(14));
        assert_eq!(*feed.watch().borrow(), 14);
    }

    #[test]
    fn changes_numbered_without_text_are_a_gap() {
        let feed = ChangeFeed::new(10, 0);
        feed.publish(vec![event(1)], 1);
        feed.publish(Vec::new(), 5);
        assert_eq!(feed.read(1), Read::Reset(5));
        feed.publish(vec![event(6)], 6);
        assert_eq!(feed.read(5), Read::Events(Bytes::from("e6;"), 6));
        feed.publish(vec![event(9)], 9);
        assert_eq!(feed.read(6), Read::Reset(9));
    }

    #[test]
    fn texts_are_wanted_while_a_client_follows_and_for_a_grace_period_after() {
        let feed = ChangeFeed::new(10, 0);
        assert!(!feed.wanted());
        let client = feed.client();
        assert_eq!(feed.clients(), 1);
        assert!(feed.wanted());
        drop(client);
        assert_eq!(feed.clients(), 0);
        assert!(feed.wanted());
        let left = feed.shared.left_at.load(Ordering::Relaxed);
        let grace = GRACE.as_millis() as u64;
        assert!(feed.wanted_at(left + grace - 1));
        assert!(!feed.wanted_at(left + grace));
    }

    #[test]
    fn a_read_is_bounded() {
        let feed = ChangeFeed::new(1000, 0);
        let big = "x".repeat(100 << 10);
        feed.publish((1..=4).map(|s| (s, big.clone())).collect(), 4);
        let Read::Events(bytes, last) = feed.read(0) else {
            panic!("no events")
        };
        assert_eq!((bytes.len(), last), (2 * big.len(), 2));
    }
}

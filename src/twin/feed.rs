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
/// The most the journal holds, whatever `kept` says: events carry values (a twin fragment, a
/// measurement type's series) that may be large, and the journal is memory.
const MAX_BYTES: usize = 16 << 20;

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
    /// One entry per batch of the twin: its events' texts, back to back.
    batches: VecDeque<Batch>,
    /// Events in `batches`, and their bytes.
    len: usize,
    bytes: usize,
    kept: usize,
    /// Every change after this number is in `batches`.
    complete_after: u64,
    /// The number of the last change.
    latest: u64,
}

/// Consecutive events, as one buffer that readers share.
struct Batch {
    first: u64,
    last: u64,
    text: Bytes,
    /// Where each event starts in `text`.
    offsets: Vec<u32>,
}

/// What a client at position `after` gets from [`ChangeFeed::read`].
#[derive(Debug, PartialEq)]
pub enum Read {
    /// The events after its position, as slices of the journal's buffers (nothing copied), and
    /// the number of the last one.
    Events(Vec<Bytes>, u64),
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
                    batches: VecDeque::new(),
                    len: 0,
                    bytes: 0,
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
        let mut events = events.into_iter().peekable();
        while let Some((first, text)) = events.next() {
            if first != journal.latest.wrapping_add(1) {
                journal.restart(first.saturating_sub(1));
            }
            // The run of consecutive numbers from `first` becomes one batch.
            let mut buf = BytesMut::from(text.as_bytes());
            let mut offsets = vec![0u32];
            let mut last = first;
            while let Some((seq, text)) = events.next_if(|(seq, _)| *seq == last + 1) {
                offsets.push(u32::try_from(buf.len()).unwrap_or(u32::MAX));
                buf.extend_from_slice(text.as_bytes());
                last = seq;
            }
            journal.push(Batch {
                first,
                last,
                text: buf.freeze(),
                offsets,
            });
        }
        if latest != journal.latest {
            journal.restart(latest);
        }
        let latest = journal.latest;
        drop(journal);
        self.shared.latest.send_replace(latest);
    }

    /// The events after `after`, up to a read's worth (at least one batch's rest).
    pub fn read(&self, after: u64) -> Read {
        let mut parts = Vec::new();
        // Slices share the journal's buffers: the lock is held for a few reference counts.
        let last = {
            let journal = self.journal();
            if after == journal.latest {
                return Read::UpToDate;
            }
            if after < journal.complete_after || after > journal.latest {
                return Read::Reset(journal.latest);
            }
            let from = journal.batches.partition_point(|b| b.last <= after);
            let mut size = 0;
            let mut last = after;
            for batch in journal.batches.iter().skip(from) {
                if size > 0 && size + batch.text.len() > READ_MAX {
                    break;
                }
                let index = usize::try_from(after.saturating_add(1).saturating_sub(batch.first))
                    .unwrap_or(0);
                let offset = batch.offsets.get(index).copied().unwrap_or(0) as usize;
                let part = batch.text.slice(offset..);
                size += part.len();
                parts.push(part);
                last = batch.last;
            }
            last
        };
        Read::Events(parts, last)
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
        self.batches.clear();
        self.len = 0;
        self.bytes = 0;
        self.complete_after = latest;
        self.latest = latest;
    }

    /// Appends a batch that follows the last one, then drops the oldest batches while the
    /// others still hold `kept` events, or while the journal is above [`MAX_BYTES`] (the newest
    /// batch always stays).
    fn push(&mut self, batch: Batch) {
        self.latest = batch.last;
        self.len += batch.offsets.len();
        self.bytes += batch.text.len();
        self.batches.push_back(batch);
        while let Some(front) = self.batches.front() {
            let n = front.offsets.len();
            let too_big = self.bytes > MAX_BYTES && self.batches.len() > 1;
            if self.len - n < self.kept && !too_big {
                break;
            }
            self.complete_after = front.last;
            self.len -= n;
            self.bytes -= front.text.len();
            self.batches.pop_front();
        }
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

    /// A read with its parts joined, to compare texts.
    fn joined(read: Read) -> Read {
        match read {
            Read::Events(parts, last) => Read::Events(vec![parts.concat().into()], last),
            other => other,
        }
    }

    fn event(seq: u64) -> (u64, String) {
        (seq, format!("e{seq};"))
    }

    #[test]
    fn clients_read_from_their_position_and_are_reset_when_it_left_the_journal() {
        let feed = ChangeFeed::new(3, 10);
        assert_eq!(joined(feed.read(10)), Read::UpToDate);
        assert_eq!(joined(feed.read(9)), Read::Reset(10));
        feed.publish(vec![event(11), event(12)], 12);
        assert_eq!(
            joined(feed.read(10)),
            Read::Events(vec![Bytes::from("e11;e12;")], 12)
        );
        // From the middle of a batch.
        assert_eq!(
            joined(feed.read(11)),
            Read::Events(vec![Bytes::from("e12;")], 12)
        );
        feed.publish(vec![event(13), event(14)], 14);
        assert_eq!(
            joined(feed.read(10)),
            Read::Events(vec![Bytes::from("e11;e12;e13;e14;")], 14)
        );
        // Whole batches go once the others hold the 3 kept: 11 and 12 are gone.
        feed.publish(vec![event(15)], 15);
        assert_eq!(joined(feed.read(10)), Read::Reset(15));
        assert_eq!(joined(feed.read(11)), Read::Reset(15));
        assert_eq!(
            joined(feed.read(12)),
            Read::Events(vec![Bytes::from("e13;e14;e15;")], 15)
        );
        assert_eq!(
            joined(feed.read(13)),
            Read::Events(vec![Bytes::from("e14;e15;")], 15)
        );
        // A number from the future (another run) is unknown.
        assert_eq!(joined(feed.read(99)), Read::Reset(15));
        assert_eq!(*feed.watch().borrow(), 15);
    }

    #[test]
    fn changes_numbered_without_text_are_a_gap() {
        let feed = ChangeFeed::new(10, 0);
        feed.publish(vec![event(1)], 1);
        feed.publish(Vec::new(), 5);
        assert_eq!(joined(feed.read(1)), Read::Reset(5));
        feed.publish(vec![event(6)], 6);
        assert_eq!(
            joined(feed.read(5)),
            Read::Events(vec![Bytes::from("e6;")], 6)
        );
        feed.publish(vec![event(9)], 9);
        assert_eq!(joined(feed.read(6)), Read::Reset(9));
        // A gap inside one batch.
        feed.publish(vec![event(10), event(12), event(13)], 13);
        assert_eq!(joined(feed.read(10)), Read::Reset(13));
        assert_eq!(
            joined(feed.read(11)),
            Read::Events(vec![Bytes::from("e12;e13;")], 13)
        );
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
    fn the_journal_is_bounded_in_bytes_too() {
        let feed = ChangeFeed::new(10_000, 0);
        let big = "x".repeat(1 << 20);
        for seq in 1..=20 {
            feed.publish(vec![(seq, big.clone())], seq);
        }
        // 16 of 1 MiB fit; the 4 oldest went although `kept` allows 10,000 events.
        assert_eq!(joined(feed.read(3)), Read::Reset(20));
        let Read::Events(parts, last) = feed.read(4) else {
            panic!("events 5.. are kept")
        };
        assert_eq!(
            (parts.iter().map(Bytes::len).sum::<usize>(), last),
            (1 << 20, 5)
        );
        let journal = feed.journal();
        assert_eq!((journal.len, journal.bytes), (16, 16 << 20));
    }

    #[test]
    fn a_read_is_bounded() {
        let feed = ChangeFeed::new(1000, 0);
        let big = "x".repeat(100 << 10);
        for seq in 1..=4 {
            feed.publish(vec![(seq, big.clone())], seq);
        }
        let Read::Events(parts, last) = feed.read(0) else {
            panic!("no events")
        };
        assert_eq!(
            (parts.iter().map(Bytes::len).sum::<usize>(), last),
            (2 * big.len(), 2)
        );
    }
}

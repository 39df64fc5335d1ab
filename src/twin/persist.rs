//! The twin's durable key-value log (spec/twin.md §7.1, §7.2): `state.json` (a snapshot) plus
//! `journal.jsonl` (records appended since), both in one directory.
//!
//! Owns the on-disk layout, crash safety (torn writes, leftover temporary files, a crash between
//! the snapshot and the journal reset), group commit and the compaction threshold. Keys and values
//! are opaque: it knows nothing of entities, and the store decides what a key like `e/<topic-id>`
//! means. It does no logging either: load anomalies come back as warnings, failures as
//! [`PersistError`], and the caller decides what to log and when to snapshot.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// The journal's write buffer: records are written through it as it fills.
const WRITE_BUFFER: usize = 64 << 10;
const SNAPSHOT: &str = "state.json";
const SNAPSHOT_TMP: &str = "state.json.tmp";
const JOURNAL: &str = "journal.jsonl";
const SNAPSHOT_VERSION: u64 = 1;
/// The journal may always grow to this size before compaction (§7.2), so that a small twin is not
/// rewritten on every batch.
const JOURNAL_MIN_LIMIT: u64 = 8 << 20;

/// One change to the log. Both are idempotent, so replaying a record twice is harmless.
#[derive(Debug, Clone, PartialEq)]
pub enum Op<K, V> {
    Put(K, V),
    Del(K),
}

/// A JSON value kept as its text. The twin serializes an entity once, straight to text, and the
/// journal and snapshot copy that text: no value tree is built on the way to the disk, nor on
/// the way back (a value tree costs several times the text in memory).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<RawJson> {
        serde_json::value::to_raw_value(value).map(RawJson)
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }
}

/// Equal when the texts are: both sides are written compactly by serde_json.
impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// What [`Persist::open`] found on disk.
#[derive(Debug, Default)]
pub struct Loaded {
    pub entries: BTreeMap<String, RawJson>,
    /// Anomalies that were repaired or skipped (torn lines, a corrupt snapshot moved aside...).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot create the state directory {}", .path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot sync {} to disk", .path.display())]
    Sync {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot rename {} to {}", .from.display(), .to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Written by another (newer) agent: refusing to start is the only way not to destroy it.
    #[error("unsupported snapshot version {version} in {}", .path.display())]
    UnknownVersion { path: PathBuf, version: String },
}

/// An open log: the journal file handle plus what is needed to number records and decide when
/// to compact.
#[derive(Debug)]
pub struct Persist {
    dir: PathBuf,
    journal: File,
    next_seq: u64,
    journal_size: u64,
    snapshot_size: u64,
    /// An append failed, so the journal may miss changes the caller holds in memory: only a full
    /// snapshot brings the disk back in line (§7.2 anomalies).
    write_failed: bool,
    /// The journal does not end with a newline; the next append must start a new line or its
    /// first record would be glued to the tail and lost.
    unterminated: bool,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Put,
    Del,
}

#[derive(Serialize)]
struct RecordOut<'a, K, V> {
    seq: u64,
    op: Kind,
    key: &'a K,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a V>,
}

#[derive(Deserialize)]
struct RecordIn {
    seq: u64,
    op: Kind,
    key: String,
    // `Option<Value>` alone would read `"value":null` as absent, and a put of null as corrupt.
    #[serde(default, deserialize_with = "present")]
    value: Option<RawJson>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RawJson>, D::Error> {
    RawJson::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct SnapshotIn {
    version: Value,
    seq: u64,
    entries: BTreeMap<String, RawJson>,
}

/// Only the version, to tell a newer format from a damaged file when the full parse fails.
#[derive(Deserialize)]
struct VersionProbe {
    version: Option<Value>,
}

struct Snapshot {
    seq: u64,
    entries: BTreeMap<String, RawJson>,
    size: u64,
}

enum SnapshotState {
    Missing,
    Loaded(Snapshot),
    MovedAside,
}

impl Persist {
    /// Creates `dir` if missing and loads the snapshot plus the journal records above its
    /// sequence number. A torn or corrupt last journal line is ignored (and cut off, so the next
    /// append starts clean); a corrupt line elsewhere is skipped; a leftover `state.json.tmp` is
    /// removed. An unknown snapshot version is an error and the file is left as it is; a corrupt
    /// snapshot is renamed `state.json.corrupt-<unix secs>`, together with the journal that
    /// depends on it, and loading starts empty.
    pub fn open(dir: &Path) -> Result<(Persist, Loaded), PersistError> {
        let mut warnings = Vec::new();
        let mut dir_changed = false;
        create_dir(dir)?;

        let tmp = dir.join(SNAPSHOT_TMP);
        match fs::remove_file(&tmp) {
            Ok(()) => {
                warnings.push(format!("{}: removed an unfinished snapshot", tmp.display()));
                dir_changed = true;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // Harmless: the next snapshot truncates it.
            Err(e) => warnings.push(format!("{}: cannot remove: {e}", tmp.display())),
        }

        let journal_path = dir.join(JOURNAL);
        let (snapshot_seq, mut entries, snapshot_size) =
            match load_snapshot(&dir.join(SNAPSHOT), &mut warnings)? {
                SnapshotState::Missing => (0, BTreeMap::new(), 0),
                SnapshotState::Loaded(s) => (s.seq, s.entries, s.size),
                SnapshotState::MovedAside => {
                    // The journal only holds changes relative to the lost snapshot; replaying
                    // them onto nothing would give a twin that never existed (§7.2: start empty).
                    if let Some(to) = move_aside(&journal_path)? {
                        warnings.push(format!(
                            "{}: moved to {} with the corrupt snapshot",
                            journal_path.display(),
                            to.display()
                        ));
                    }
                    dir_changed = true;
                    (0, BTreeMap::new(), 0)
                }
            };

        let bytes = match fs::read(&journal_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                dir_changed = true;
                Vec::new()
            }
            // A permission problem is the operator's to fix; throwing the journal away would
            // lose acknowledged changes.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(PersistError::Read {
                    path: journal_path,
                    source: e,
                })
            }
            Err(e) => {
                let to = move_aside(&journal_path)?;
                warnings.push(format!(
                    "{}: unreadable ({e}), moved to {}",
                    journal_path.display(),
                    to.as_deref().unwrap_or(&journal_path).display()
                ));
                dir_changed = true;
                Vec::new()
            }
        };
        let replay = replay(
            &bytes,
            snapshot_seq,
            &mut entries,
            &journal_path,
            &mut warnings,
        );

        let journal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&journal_path)
            .map_err(|source| PersistError::Open {
                path: journal_path.clone(),
                source,
            })?;
        let mut journal_size = bytes.len() as u64;
        let mut unterminated = replay.unterminated;
        if replay.good_len < bytes.len() {
            match journal
                .set_len(replay.good_len as u64)
                .and_then(|()| journal.sync_data())
            {
                Ok(()) => journal_size = replay.good_len as u64,
                Err(e) => {
                    warnings.push(format!(
                        "{}: cannot cut off the bad last line: {e}",
                        journal_path.display()
                    ));
                    unterminated = bytes.last() != Some(&b'\n');
                }
            }
        }
        if dir_changed {
            sync_dir(dir)?;
        }

        let persist = Persist {
            dir: dir.to_path_buf(),
            journal,
            next_seq: snapshot_seq.max(replay.max_seq).saturating_add(1),
            journal_size,
            snapshot_size,
            write_failed: false,
            unterminated,
        };
        Ok((persist, Loaded { entries, warnings }))
    }

    /// Appends `ops` as journal records in one `write` and one `fdatasync` (group commit, §7.1).
    /// On error the journal is rolled back as far as possible, [`Persist::needs_snapshot`]
    /// turns true, and the caller carries on from memory.
    pub fn append<K: Serialize, V: Serialize>(
        &mut self,
        ops: &[Op<K, V>],
    ) -> Result<(), PersistError> {
        if ops.is_empty() {
            return Ok(());
        }
        let first_seq = self.next_seq;
        // Numbers are used up even if the write fails, so a partly written batch can never share
        // a number with a later record, and the next snapshot's number covers it.
        self.next_seq = self.next_seq.saturating_add(ops.len() as u64);
        // Records are serialized straight into a fixed buffer and written as it fills: a burst
        // of 10,000 records builds neither 10,000 small values nor one large buffer, whose
        // leftovers the allocator could not give back. Durability comes from the one fdatasync.
        let mut w = BufWriter::with_capacity(WRITE_BUFFER, &self.journal);
        let written = (|| -> io::Result<u64> {
            let mut n = 0u64;
            if self.unterminated {
                w.write_all(b"\n")?;
                n += 1;
            }
            for (seq, op) in (first_seq..).zip(ops) {
                let record = match op {
                    Op::Put(key, value) => RecordOut {
                        seq,
                        op: Kind::Put,
                        key,
                        value: Some(value),
                    },
                    Op::Del(key) => RecordOut {
                        seq,
                        op: Kind::Del,
                        key,
                        value: None,
                    },
                };
                let mut counter = Counter {
                    inner: &mut w,
                    n: 0,
                };
                serde_json::to_writer(&mut counter, &record)?;
                n += counter.n + 1;
                w.write_all(b"\n")?;
            }
            w.flush()?;
            Ok(n)
        })();
        drop(w);
        let written = match written {
            Ok(n) => n,
            Err(e) => {
                self.write_failed = true;
                self.roll_back();
                return Err(self.write_error(e));
            }
        };
        self.journal_size += written;
        self.unterminated = false;
        // After a failed fdatasync the kernel may have dropped the dirty pages: the records are
        // kept (they match memory) but their durability is unknown, hence the snapshot.
        if let Err(source) = self.journal.sync_data() {
            self.write_failed = true;
            return Err(PersistError::Sync {
                path: self.journal_path(),
                source,
            });
        }
        Ok(())
    }

    /// True when the journal outgrew max(8 MiB, snapshot size), or after a failed append.
    pub fn needs_snapshot(&self) -> bool {
        self.write_failed || self.journal_size > JOURNAL_MIN_LIMIT.max(self.snapshot_size)
    }

    /// Writes a snapshot of all live `entries`, then empties the journal. The snapshot carries the
    /// number of the last record appended, so a crash between the two steps leaves records that
    /// the next load skips as already included.
    pub fn write_snapshot<K: Serialize, V: Serialize, I: IntoIterator<Item = (K, V)>>(
        &mut self,
        entries: I,
    ) -> Result<(), PersistError> {
        let seq = self.next_seq.saturating_sub(1);
        let tmp = self.dir.join(SNAPSHOT_TMP);
        let path = self.dir.join(SNAPSHOT);
        let size = match write_snapshot_file(&tmp, seq, entries) {
            Ok(size) => size,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        fs::rename(&tmp, &path).map_err(|source| PersistError::Rename {
            from: tmp.clone(),
            to: path.clone(),
            source,
        })?;
        sync_dir(&self.dir)?;
        self.snapshot_size = size;
        // From here on the snapshot holds everything, even what a failed append missed.
        self.write_failed = false;

        self.journal
            .set_len(0)
            .map_err(|source| self.write_error(source))?;
        self.journal_size = 0;
        self.unterminated = false;
        self.journal
            .sync_data()
            .map_err(|source| PersistError::Sync {
                path: self.journal_path(),
                source,
            })
    }

    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn journal_path(&self) -> PathBuf {
        self.dir.join(JOURNAL)
    }

    fn write_error(&self, source: io::Error) -> PersistError {
        PersistError::Write {
            path: self.journal_path(),
            source,
        }
    }

    /// Cuts off what a failed write may have left, so that no half record stays in the middle of
    /// the journal; if even that fails, the next append at least starts on a new line.
    fn roll_back(&mut self) {
        if self.journal.set_len(self.journal_size).is_err() {
            self.unterminated = true;
            if let Ok(meta) = self.journal.metadata() {
                self.journal_size = meta.len();
            }
        }
    }
}

/// Counts the bytes serde writes, to keep the journal's size without a second buffer.
struct Counter<'a, W> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn create_dir(dir: &Path) -> Result<(), PersistError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|source| PersistError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    // Without this, a crash soon after the first start could lose the directory with everything
    // that was acknowledged into it.
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => sync_dir(Path::new(".")),
    }
}

fn sync_dir(dir: &Path) -> Result<(), PersistError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| PersistError::Sync {
            path: dir.to_path_buf(),
            source,
        })
}

fn load_snapshot(path: &Path, warnings: &mut Vec<String>) -> Result<SnapshotState, PersistError> {
    let problem = match fs::read(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(SnapshotState::Missing),
        // Not damage: moving the file aside and starting empty would throw the twin away.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(PersistError::Read {
                path: path.to_path_buf(),
                source: e,
            })
        }
        Err(e) => format!("unreadable ({e})"),
        Ok(bytes) => match serde_json::from_slice::<SnapshotIn>(&bytes) {
            Ok(s) => {
                check_version(path, Some(&s.version))?;
                return Ok(SnapshotState::Loaded(Snapshot {
                    seq: s.seq,
                    entries: s.entries,
                    size: bytes.len() as u64,
                }));
            }
            Err(e) => {
                // A newer format need not parse as ours: look at its version before calling it
                // corrupt and moving it away.
                if let Ok(probe) = serde_json::from_slice::<VersionProbe>(&bytes) {
                    if probe.version.is_some() {
                        check_version(path, probe.version.as_ref())?;
                    }
                }
                format!("corrupt ({e})")
            }
        },
    };
    let to = move_aside(path)?;
    warnings.push(format!(
        "{}: {problem}, moved to {}; starting empty",
        path.display(),
        to.as_deref().unwrap_or(path).display()
    ));
    Ok(SnapshotState::MovedAside)
}

fn check_version(path: &Path, version: Option<&Value>) -> Result<(), PersistError> {
    match version {
        Some(v) if v.as_u64() == Some(SNAPSHOT_VERSION) => Ok(()),
        v => Err(PersistError::UnknownVersion {
            path: path.to_path_buf(),
            version: v.map_or_else(|| "(none)".to_string(), Value::to_string),
        }),
    }
}

/// Renames `path` to `<path>.corrupt-<unix secs>`, never over an earlier one. `None` when there
/// was nothing to move.
fn move_aside(path: &Path) -> Result<Option<PathBuf>, PersistError> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = format!("{}.corrupt-{secs}", path.display());
    let mut to = PathBuf::from(&base);
    let mut n = 1;
    while to.symlink_metadata().is_ok() && n < 1000 {
        n += 1;
        to = PathBuf::from(format!("{base}-{n}"));
    }
    match fs::rename(path, &to) {
        Ok(()) => Ok(Some(to)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PersistError::Rename {
            from: path.to_path_buf(),
            to,
            source,
        }),
    }
}

struct Replay {
    /// The highest sequence number seen, applied or not.
    max_seq: u64,
    /// The length to keep: everything but a torn or corrupt last line.
    good_len: usize,
    /// The kept part does not end with a newline.
    unterminated: bool,
}

/// The largest sequence number a journal record may carry (2^62: centuries of records).
const MAX_SEQ: u64 = 1 << 62;

/// Applies the journal records numbered above `snapshot_seq`, in file order.
fn replay(
    bytes: &[u8],
    snapshot_seq: u64,
    entries: &mut BTreeMap<String, RawJson>,
    path: &Path,
    warnings: &mut Vec<String>,
) -> Replay {
    let mut max_seq = 0;
    let mut good_len = bytes.len();
    let mut pos = 0;
    let mut line_no = 0;
    while pos < bytes.len() {
        line_no += 1;
        let (line, next, terminated) = match bytes[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => (&bytes[pos..pos + i], pos + i + 1, true),
            None => (&bytes[pos..], bytes.len(), false),
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            pos = next;
            continue;
        }
        let parsed = serde_json::from_slice::<RecordIn>(line)
            .map_err(|e| e.to_string())
            .and_then(|r| match (r.op, r.value) {
                // Numbers count records written: one this large is corruption, and trusting it
                // would saturate the counter and make later records look older than the snapshot.
                _ if r.seq > MAX_SEQ => Err(format!("a sequence number out of range: {}", r.seq)),
                (Kind::Put, Some(value)) => Ok((r.seq, Op::Put(r.key, value))),
                (Kind::Put, None) => Err("a put without a value".to_string()),
                (Kind::Del, _) => Ok((r.seq, Op::Del(r.key))),
            });
        match parsed {
            Ok((seq, op)) => {
                max_seq = max_seq.max(seq);
                if seq > snapshot_seq {
                    match op {
                        Op::Put(key, value) => {
                            entries.insert(key, value);
                        }
                        Op::Del(key) => {
                            entries.remove(&key);
                        }
                    }
                }
            }
            // Only checked on failure: scanning the rest for every line would be quadratic.
            Err(e) if bytes[next..].iter().all(u8::is_ascii_whitespace) => {
                let what = if terminated { "corrupt" } else { "torn" };
                warnings.push(format!(
                    "{}: line {line_no}: ignored a {what} last line ({e})",
                    path.display()
                ));
                good_len = pos;
                break;
            }
            Err(e) => warnings.push(format!(
                "{}: line {line_no}: skipped a corrupt record ({e})",
                path.display()
            )),
        }
        pos = next;
    }
    Replay {
        max_seq,
        good_len,
        unterminated: good_len > 0 && bytes[good_len - 1] != b'\n',
    }
}

/// Serializes straight into the file: a snapshot of a large twin is never built in memory.
fn write_snapshot_file<K: Serialize, V: Serialize, I: IntoIterator<Item = (K, V)>>(
    tmp: &Path,
    seq: u64,
    entries: I,
) -> Result<u64, PersistError> {
    let write_error = |source: io::Error| PersistError::Write {
        path: tmp.to_path_buf(),
        source,
    };
    let file = File::create(tmp).map_err(|source| PersistError::Open {
        path: tmp.to_path_buf(),
        source,
    })?;
    let mut w = BufWriter::with_capacity(256 << 10, file);
    // One entry per line keeps the file greppable by someone debugging a gateway.
    let result = (|| -> io::Result<()> {
        write!(
            w,
            "{{\"version\":{SNAPSHOT_VERSION},\"seq\":{seq},\"entries\":{{"
        )?;
        for (i, (key, value)) in entries.into_iter().enumerate() {
            w.write_all(if i == 0 { b"\n" } else { b",\n" })?;
            serde_json::to_writer(&mut w, &key)?;
            w.write_all(b":")?;
            serde_json::to_writer(&mut w, &value)?;
        }
        w.write_all(b"\n}}\n")?;
        w.flush()
    })();
    result.map_err(write_error)?;
    let mut file = w.into_inner().map_err(|e| write_error(e.into_error()))?;
    let size = file.stream_position().map_err(write_error)?;
    file.sync_all().map_err(|source| PersistError::Sync {
        path: tmp.to_path_buf(),
        source,
    })?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(value: &Value) -> RawJson {
        RawJson::from_serialize(value).unwrap()
    }

    fn put(key: &str, value: Value) -> Op<String, RawJson> {
        Op::Put(key.to_string(), raw(&value))
    }

    fn del(key: &str) -> Op<String, RawJson> {
        Op::Del(key.to_string())
    }

    fn map(pairs: &[(&str, Value)]) -> BTreeMap<String, RawJson> {
        pairs.iter().map(|(k, v)| (k.to_string(), raw(v))).collect()
    }

    fn reopen(dir: &Path) -> Loaded {
        Persist::open(dir).unwrap().1
    }

    fn journal_seqs(dir: &Path) -> Vec<u64> {
        fs::read_to_string(dir.join(JOURNAL))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    fn corrupt_files(dir: &Path, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("{prefix}.corrupt-")))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn opening_a_missing_directory_creates_it_and_loads_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data/twin");
        let (persist, loaded) = Persist::open(&dir).unwrap();
        assert!(dir.join(JOURNAL).is_file());
        assert_eq!(persist.dir(), dir);
        assert!(loaded.entries.is_empty());
        assert!(loaded.warnings.is_empty());
        assert!(!persist.needs_snapshot());
    }

    #[test]
    fn puts_and_deletions_survive_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut p, _) = Persist::open(tmp.path()).unwrap();
        p.append(&[
            put("main", json!("device/main//")),
            put("e/a", json!({"x": 1})),
        ])
        .unwrap();
        p.append(&[put("e/b", json!([1, 2])), del("e/a"), put("e/b", json!(3))])
            .unwrap();
        p.append(&[del("never-there"), put("null", Value::Null)])
            .unwrap();
        drop(p);

        let loaded = reopen(tmp.path());
        assert_eq!(
            loaded.entries,
            map(&[
                ("main", json!("device/main//")),
                ("e/b", json!(3)),
                ("null", Value::Null)
            ])
        );
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn ten_thousand_puts_in_one_append_are_written_as_one_batch_and_reload_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut p, _) = Persist::open(tmp.path()).unwrap();
        let ops: Vec<Op<String, RawJson>> = (0..10_000)
            .map(|i| {
                put(
                    &format!("e/device/child{i}//"),
                    json!({"@type": "child-device", "n": i}),
                )
            })
            .collect();
        p.append(&ops).unwrap();
        drop(p);

        assert_eq!(journal_seqs(tmp.path()), (1..=10_000).collect::<Vec<_>>());
        let loaded = reopen(tmp.path());
        let expected: BTreeMap<String, RawJson> = (0..10_000)
            .map(|i| {
                (
                    format!("e/device/child{i}//"),
                    raw(&json!({"@type": "child-device", "n": i})),
                )
            })
            .collect();
        assert_eq!(loaded.entries, expected);
    }

    #[test]
    fn an_empty_append_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut p, _) = Persist::open(tmp.path()).unwrap();
        p.append::<String, RawJson>(&[]).unwrap();
        assert_eq!(fs::metadata(tmp.path().join(JOURNAL)).unwrap().len(), 0);
    }

    #[test]
    fn sequence_numbers_continue_across_restarts_and_snapshots() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut p, _) = Persist::open(tmp.path()).unwrap();
        p.append(&[put("a", json!(1)), put("b", json!(2))]).unwrap();
        drop(p);

        let (mut p, _) = Persist::open(tmp.path()).unwrap();
        p.append(&[put("c", json!(3))]).unwrap();
        assert_eq!(journal_seqs(tmp.path()), vec![1, 2, 3]);
        p.write_snapshot([("a".to_string(), raw(&json!(1)))])
            .unwrap();
        drop(p);

        let (mut p, loaded) = Persist::open(tmp.path()).unwrap();
        assert_eq!(loaded.entries, map(&[("a", json!(1))]));
        p.append(&[put("d", json!(4))]).unwrap();
        assert_eq!(journal_seqs(tmp.path()), vec![4]);
    }

    #[test]
    fn a_snapshot_holds_every_entry_and_empties_the_journal() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut p, _) = Persist::open(tmp.path()).unwrap();
        p.append(&[put("a", json!(1)), put("b", json!("two"))])
            .unwrap();
        let live = map(&[
            ("a", json!(1)),
            ("b", json!("two")),
            ("c", json!({"k": [null]})),
        ]);
        p.write_snapshot(live.clone()).unwrap();
        assert_eq!(fs::metadata(tmp.path().join(JOURNAL)).unwrap().len(), 0);
        assert!(!tmp.path().join(SNAPSHOT_TMP).exists());
        p.append(&[del("a")]).unwrap();
        drop(p);

        let snapshot: Value =
            serde_json::from_slice(&fs::read(tmp.path().join(SNAPSHOT)).unwrap()).unwrap();
        assert_eq!(snapshot["version"], json!(1));
        assert_eq!(snapshot["seq"], json!(2));
        let loaded = reopen(tmp.path());
        assert_eq!(
            loaded.entries,
            map(&[("b", json!("two")), ("c", json!({"k": [null]}))])
        );
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn an_empty_snapshot_reloads_as_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut p, _) = Persist::open(tmp.path()).unwrap();
        p.append(&[put("a", json!(1))]).unwrap();
        p.write_snapshot(Vec::<(String, RawJson)>::new()).unwrap();
        drop(p);
        let loaded = reopen(tmp.path());
        assert!(loaded.entries.is_empty());
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn a_crash_between_the_snapshot_and_the_journal_reset_loads_correctly() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut p, _) = Persist::open(tmp.path()).unwrap();
        p.append(&[put("a", json!(1)), put("b", json!(2))]).unwrap();
        p.append(&[put("c", json!(3))]).unwrap();
        let old_journal = fs::read(tmp.path().join(JOURNAL)).unwrap();
        // Deliberately unlike the journal, so that replaying a record the snapshot already
        // includes would show.
        p.write_snapshot(map(&[("b", json!("snap")), ("s", json!(0))]))
            .unwrap();
        drop(p);
        // The journal as it was when the process died after the snapshot's rename.
        fs::write(tmp.path().join(JOURNAL), &old_journal).unwrap();

        let (mut p, loaded) = Persist::open(tmp.path()).unwrap();
        assert_eq!(
            loaded.entries,
            map(&[("b", json!("snap")), ("s", json!(0))])
        );
        assert!(loaded.warnings.is_empty());
        p.append(&[put("a", json!("again"))]).unwrap();
        drop(p);
        assert_eq!(journal_seqs(tmp.path()), vec![1, 2, 3, 4]);
        assert_eq!(
            reopen(tmp.path()).entries,
            map(&[("a", json!("again")), ("b", json!("snap")), ("s", json!(0))])
        );
    }

    #[test]
    fn a_leftover_snapshot_tmp_is_removed_and_the_old_state_loads() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut p, _) = Persist::open(tmp.path()).unwrap();
        p.append(&[put("a", json!(1))]).unwrap();
        p.write_snapshot(map(&[("a", json!(1))])).unwrap();
        p.append(&[put("b", json!(2))]).unwrap();
        drop(p);
        fs::write(
            tmp.path().join(SNAPSHOT_TMP),
            b"{\"version\":1,\"seq\":9,\"entr",
        )
        .unwrap();

        let loaded = reopen(tmp.path());
        assert_eq!(loaded.entries, map(&[("a", json!(1)), ("b", json!(2))]));
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings[0].contains("state.json.tmp"));
        assert!(!tmp.path().join(SNAPSHOT_TMP).exists());
    }

    #[test]
    fn a_journal_cut_at_any_offset_loads_every_complete_record_and_accepts_new_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut p, _) = Persist::open(tmp.path()).unwrap();
        let batches = vec![
            vec![put("a", json!({"v": 1}))],
            vec![put("b", json!("x\ny")), put("c", json!([1, 2, 3]))],
            vec![del("a")],
            vec![put("b", json!(null))],
        ];
        // The state after each record, and the offset where that record's JSON ends.
        let mut states = vec![(0usize, BTreeMap::new())];
        let mut state = BTreeMap::new();
        let mut line_start = 0;
        for batch in &batches {
            p.append(batch).unwrap();
            let text = fs::read(tmp.path().join(JOURNAL)).unwrap();
            for op in batch {
                match op {
                    Op::Put(k, v) => state.insert(k.clone(), v.clone()),
                    Op::Del(k) => state.remove(k),
                };
                let json_end =
                    line_start + text[line_start..].iter().position(|&b| b == b'\n').unwrap();
                states.push((json_end, state.clone()));
                line_start = json_end + 1;
            }
        }
        drop(p);
        let full = fs::read(tmp.path().join(JOURNAL)).unwrap();

        for cut in 0..=full.len() {
            let case = tempfile::tempdir().unwrap();
            fs::write(case.path().join(JOURNAL), &full[..cut]).unwrap();
            let (mut p, loaded) = Persist::open(case.path()).unwrap();
            let expected = &states.iter().rev().find(|(end, _)| *end <= cut).unwrap().1;
            assert_eq!(&loaded.entries, expected, "cut at {cut}");
            let on_boundary = cut == 0
                || states[1..]
                    .iter()
                    .any(|(end, _)| *end == cut || *end + 1 == cut);
            assert_eq!(
                loaded.warnings.len(),
                usize::from(!on_boundary),
                "cut at {cut}"
            );

            p.append(&[put("after", json!(cut))]).unwrap();
            drop(p);
            let mut expected = expected.clone();
            expected.insert("after".to_string(), raw(&json!(cut)));
            let reloaded = reopen(case.path());
            assert_eq!(reloaded.entries, expected, "append after cut at {cut}");
            assert!(reloaded.warnings.is_empty(), "cut at {cut}");
        }
    }

    #[test]
    fn corrupt_lines_in_the_middle_are_skipped_with_a_warning_each() {
        let tmp = tempfile::tempdir().unwrap();
        let journal = [
            &br#"{"seq":1,"op":"put","key":"a","value":1}"#[..],
            b"garbage",
            &[0xff, 0xfe, 0x00, b'{'],
            br#"{"seq":2,"op":"put","key":"b"}"#,
            br#"{"seq":3,"op":"frobnicate","key":"a"}"#,
            b"",
            br#"{"seq":-4,"op":"del","key":"a"}"#,
            br#"{"seq":18446744073709551615,"op":"del","key":"a"}"#,
            br#"{"seq":5,"op":"put","key":"c","value":{"deep":[true]}}"#,
            b"",
        ]
        .join(&b'\n');
        fs::write(tmp.path().join(JOURNAL), &journal).unwrap();

        let (mut p, loaded) = Persist::open(tmp.path()).unwrap();
        assert_eq!(
            loaded.entries,
            map(&[("a", json!(1)), ("c", json!({"deep": [true]}))])
        );
        assert_eq!(loaded.warnings.len(), 6, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].contains("journal.jsonl: line 2: skipped"));
        assert!(
            loaded.warnings[5].contains("a sequence number out of range: 18446744073709551615"),
            "{:?}",
            loaded.warnings
        );
        // Middle lines are left for the next compaction; the numbering carries on after them.
        p.append(&[put("d", json!(4))]).unwrap();
        drop(p);
        let bytes = fs::read(tmp.path().join(JOURNAL)).unwrap();
        assert!(bytes.ends_with(b"\n{\"seq\":6,\"op\":\"put\",\"key\":\"d\",\"value\":4}\n"));
        assert_eq!(
            reopen(tmp.path()).entries,
            map(&[
                ("a", json!(1)),
                ("c", json!({"deep": [true]})),
                ("d", json!(4))
            ])
        );
    }

    #[test]
    fn a_corrupt_last_line_is_ignored_and_cut_off() {
        let tmp = tempfile::tempdir().unwrap();
        let journal = concat!(
            r#"{"seq":1,"op":"put","key":"a","value":1}"#,
            "\n",
            r#"{"seq":2,"op":"put","key":"b","value":2}"#,
            "\n",
            "{\"seq\":3,\"op\":\"put\",\"key\":\"c\",\"val\0\0\0\0\n",
            "\n"
        );
        fs::write(tmp.path().join(JOURNAL), journal).unwrap();

        let loaded = reopen(tmp.path());
        assert_eq!(loaded.entries, map(&[("a", json!(1)), ("b", json!(2))]));
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings[0].contains("line 3: ignored a corrupt last line"));
        assert_eq!(journal_seqs(tmp.path()), vec![1, 2]);
    }

    #[test]
    fn a_valid_last_record_without_its_newline_is_kept_and_the_next_append_starts_a_new_line() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(
            tmp.path().join(JOURNAL),
            r#"{"seq":7,"op":"put","key":"a","value":1}"#,
        )
        .unwrap();
        let (mut p, loaded) = Persist::open(tmp.path()).unwrap();
        assert_eq!(loaded.entries, map(&[("a", json!(1))]));
        assert!(loaded.warnings.is_empty());
        p.append(&[put("b", json!(2))]).unwrap();
        drop(p);
        assert_eq!(journal_seqs(tmp.path()), vec![7, 8]);
        assert_eq!(
            reopen(tmp.path()).entries,
            map(&[("a", json!(1)), ("b", json!(2))])
        );
    }

    #[test]
    fn an_unknown_snapshot_version_is_refused_and_the_file_left_untouched() {
        for content in [
            r#"{"version":2,"seq":1,"entries":{}}"#,
            r#"{"version":2,"records":[1,2,3]}"#,
            r#"{"version":"1","seq":1,"entries":{}}"#,
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join(SNAPSHOT);
            fs::write(&path, content).unwrap();
            fs::write(tmp.path().join(JOURNAL), "").unwrap();
            let err = Persist::open(tmp.path()).unwrap_err();
            assert!(
                matches!(&err, PersistError::UnknownVersion { path: p, .. } if *p == path),
                "{err:?}"
            );
            assert!(err.to_string().starts_with("unsupported snapshot version"));
            assert!(err.to_string().ends_with(&format!("in {}", path.display())));
            assert_eq!(fs::read_to_string(&path).unwrap(), content);
            assert!(corrupt_files(tmp.path(), SNAPSHOT).is_empty());
        }
    }

    #[test]
    fn a_corrupt_snapshot_is_moved_aside_with_its_journal_and_loading_starts_empty() {
        for content in [
            &b"{\"version\":1,\"seq\":3,\"entries\":{\"a\":"[..],
            b"",
            b"\0\0\0\0\0\0",
            b"[1,2]",
            br#"{"version":1,"seq":3,"entries":[]}"#,
            br#"{"seq":3,"entries":{}}"#,
        ] {
            let tmp = tempfile::tempdir().unwrap();
            fs::write(tmp.path().join(SNAPSHOT), content).unwrap();
            fs::write(
                tmp.path().join(JOURNAL),
                "{\"seq\":4,\"op\":\"put\",\"key\":\"b\",\"value\":2}\n",
            )
            .unwrap();

            let (mut p, loaded) = Persist::open(tmp.path()).unwrap();
            assert!(loaded.entries.is_empty());
            assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
            assert!(!tmp.path().join(SNAPSHOT).exists());
            let moved = corrupt_files(tmp.path(), SNAPSHOT);
            assert_eq!(moved.len(), 1);
            assert_eq!(fs::read(tmp.path().join(&moved[0])).unwrap(), content);
            assert_eq!(corrupt_files(tmp.path(), JOURNAL).len(), 1);

            p.append(&[put("c", json!(3))]).unwrap();
            drop(p);
            assert_eq!(reopen(tmp.path()).entries, map(&[("c", json!(3))]));
        }
    }

    #[test]
    fn a_second_corrupt_snapshot_in_the_same_second_does_not_replace_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        for _ in 0..2 {
            fs::write(tmp.path().join(SNAPSHOT), "not json").unwrap();
            reopen(tmp.path());
        }
        assert_eq!(corrupt_files(tmp.path(), SNAPSHOT).len(), 2);
    }

    #[test]
    fn random_bytes_in_either_file_never_fail_the_load() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let tmp = tempfile::tempdir().unwrap();
            let mut garbage = |n: u64| -> Vec<u8> {
                (0..next() % n)
                    .map(|_| b"{}[]\":,\n 0a-.e\\"[(next() % 15) as usize])
                    .collect()
            };
            let snapshot = garbage(64);
            let journal = garbage(512);
            if next() % 2 == 0 {
                fs::write(tmp.path().join(SNAPSHOT), snapshot).unwrap();
            }
            fs::write(tmp.path().join(JOURNAL), journal).unwrap();
            let (mut p, _) = Persist::open(tmp.path()).unwrap();
            p.append(&[put("k", json!(1))]).unwrap();
            drop(p);
            assert_eq!(reopen(tmp.path()).entries.get("k"), Some(&raw(&json!(1))));
        }
    }

    #[test]
    fn a_failed_append_leaves_the_journal_intact_and_asks_for_a_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut p, _) = Persist::open(tmp.path()).unwrap();
        p.append(&[put("a", json!(1))]).unwrap();
        let before = fs::read(tmp.path().join(JOURNAL)).unwrap();
        // A handle that refuses writes stands in for a full disk.
        let writable = std::mem::replace(
            &mut p.journal,
            File::open(tmp.path().join(JOURNAL)).unwrap(),
        );
        let err = p.append(&[put("b", json!(2))]).unwrap_err();
        assert!(matches!(err, PersistError::Write { .. }), "{err:?}");
        assert!(err.to_string().starts_with("cannot write "));
        assert!(err.to_string().ends_with("journal.jsonl"));
        assert!(p.needs_snapshot());
        assert_eq!(fs::read(tmp.path().join(JOURNAL)).unwrap(), before);

        p.journal = writable;
        p.append(&[put("c", json!(3))]).unwrap();
        assert!(p.needs_snapshot());
        let live = map(&[("a", json!(1)), ("b", json!(2)), ("c", json!(3))]);
        p.write_snapshot(live.clone()).unwrap();
        assert!(!p.needs_snapshot());
        drop(p);
        assert_eq!(reopen(tmp.path()).entries, live);
    }

    #[test]
    fn a_journal_larger_than_eight_mib_and_the_snapshot_asks_for_a_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut p, _) = Persist::open(tmp.path()).unwrap();
        p.append(&[put("big", json!("x".repeat(4 << 20)))]).unwrap();
        assert!(!p.needs_snapshot());
        p.append(&[put("big", json!("y".repeat(5 << 20)))]).unwrap();
        assert!(p.needs_snapshot());

        // A snapshot larger than 8 MiB raises the bar to its own size.
        p.write_snapshot([("big".to_string(), raw(&json!("z".repeat(10 << 20))))])
            .unwrap();
        assert!(!p.needs_snapshot());
        p.append(&[put("big", json!("w".repeat(9 << 20)))]).unwrap();
        assert!(!p.needs_snapshot());
        p.append(&[put("big", json!("v".repeat(2 << 20)))]).unwrap();
        assert!(p.needs_snapshot());
    }
}

//! `history.jsonl`, the measurement history on disk (issue #7), next to the twin's state in
//! `<data_dir>/twin`.
//!
//! Owns the file's format, appending, compaction and loading; the points themselves are
//! [`History`]'s. Each write appends one line per series with new points
//! (`{"e":<topic id>,"t":<type>,"s":<series>,"m":<member>,"p":[[<unix ms>,<value>],…]}`) and one
//! per entity whose history is gone (`{"e":<topic id>,"x":true}`). The file is rewritten whole
//! (`history.jsonl.tmp`, fsynced, renamed) when it grows past twice the live history, after a
//! failed write, and after a load that found something to repair. The history is telemetry:
//! it is written with the telemetry flush, so a crash loses at most one flush interval of it,
//! never the file.

use std::borrow::Cow;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::history::{number, History, Point, Track, Unsaved};
use super::model::Name;
use super::store::Store;
use super::time::Timestamp;
use crate::config::HistoryConfig;
use crate::topic::EntityTopicId;

const FILE: &str = "history.jsonl";
const TMP: &str = "history.jsonl.tmp";
/// The file may always grow to this size before it is compacted.
const MIN_COMPACT: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HistoryFileError {
    #[error("cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One line of the file. Names are borrowed when they can be, and owned when the JSON text
/// escapes characters (a quote, a backslash) and so cannot be borrowed.
#[derive(Debug, Serialize, Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    e: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    t: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    s: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    m: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    p: Vec<(i64, serde_json::Number)>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    x: bool,
}

/// What a load read back, in file order.
#[derive(Debug, PartialEq)]
pub enum Entry {
    Points {
        id: EntityTopicId,
        mtype: String,
        name: String,
        member: Option<String>,
        points: Vec<Point>,
    },
    Removed(EntityTopicId),
}

/// What [`HistoryFile::read`] gives the twin's task.
pub struct Loaded {
    pub file: HistoryFile,
    pub history: History,
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("points", &self.history.points())
            .field("warnings", &self.warnings)
            .finish()
    }
}

pub struct HistoryFile {
    dir: PathBuf,
    file: Option<File>,
    size: u64,
    /// The size of the last rewrite: the live history then.
    live: u64,
    rewrite: bool,
}

impl HistoryFile {
    /// Reads the file in `dir` (missing: nothing) into a history of its own, off the twin's
    /// task: the agent serves its twin meanwhile, and [`HistoryFile::merge_into`] adds the
    /// result to the store's history. Lines that cannot be read (a torn last line after a
    /// crash, damage) are skipped with a warning and the file is rewritten at the next write;
    /// an unreadable file is a warning too, and the history starts empty: it is telemetry,
    /// never a reason not to start.
    pub fn read(dir: &Path, cfg: HistoryConfig) -> Loaded {
        let now = Timestamp::now();
        let mut history = History::new(cfg);
        let (file, warnings) = HistoryFile::load(dir, |entry| match entry {
            Entry::Points {
                id,
                mtype,
                name,
                member,
                points,
            } => {
                let key = (Name::from(mtype), Name::from(name), member.map(Name::from));
                history.restore(id, key, points, now);
            }
            Entry::Removed(id) => history.forget(&id),
        });
        Loaded {
            file,
            history,
            warnings,
        }
    }

    /// What the twin gets when reading failed unexpectedly (the reading thread panicked): an
    /// empty history, and new points appended to the file as it is.
    pub fn unread(dir: &Path, cfg: HistoryConfig, why: String) -> Loaded {
        Loaded {
            file: HistoryFile {
                dir: dir.to_path_buf(),
                file: None,
                size: 0,
                live: 0,
                rewrite: false,
            },
            history: History::new(cfg),
            warnings: vec![format!("{}: not read: {why}", dir.join(FILE).display())],
        }
    }

    /// Adds a history read by [`HistoryFile::read`] to the store's, before the points recorded
    /// since the start, keeping the entities the store has. What the file held for others
    /// (removed just before a crash), or left without points, is rewritten away at the next
    /// write, so that it cannot come back with an entity registered again under that id.
    pub fn merge_into(&mut self, loaded: History, store: &mut Store) {
        let (entities, names) = (&store.entities, &mut store.names);
        let stale =
            store
                .history
                .merge(loaded, |id| entities.contains_key(id), |s| names.intern(s));
        self.rewrite |= stale;
    }

    /// Reads the file in `dir`, handing each entry to `apply`, in file order.
    fn load(dir: &Path, mut apply: impl FnMut(Entry)) -> (HistoryFile, Vec<String>) {
        let path = dir.join(FILE);
        let mut warnings = Vec::new();
        let _ = fs::remove_file(dir.join(TMP));
        let mut size = 0u64;
        let mut skipped = 0usize;
        let mut failed = false;
        match File::open(&path) {
            Ok(file) => {
                let mut reader = BufReader::new(file);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) => break,
                        Ok(read) => size += read as u64,
                        Err(e) => {
                            warnings.push(format!("{}: cannot read: {e}", path.display()));
                            failed = true;
                            break;
                        }
                    }
                    match parse(&line) {
                        Some(entry) => apply(entry),
                        None => skipped += 1,
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                warnings.push(format!("{}: cannot read: {e}", path.display()));
                failed = true;
            }
        }
        if skipped > 0 {
            warnings.push(format!(
                "{}: skipped {skipped} unreadable lines; the file will be rewritten",
                path.display()
            ));
        }
        let file = HistoryFile {
            dir: dir.to_path_buf(),
            file: None,
            size,
            live: size,
            rewrite: skipped > 0 || failed,
        };
        (file, warnings)
    }

    /// Writes what the history has not yet written: appended, or the whole history when the
    /// file is due for compaction or a write failed before.
    pub fn write(&mut self, history: &mut History, now: Timestamp) -> Result<(), HistoryFileError> {
        if self.rewrite || self.size > MIN_COMPACT.max(self.live.saturating_mul(2)) {
            return self.rewrite(history, now);
        }
        if !history.has_unsaved() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for unsaved in history.take_unsaved() {
            match unsaved {
                Unsaved::Points(id, track) => {
                    line(&mut buf, id, track, track.unsaved());
                }
                Unsaved::Removed(id) => {
                    let removed = Line {
                        e: Cow::Borrowed(id.as_str()),
                        t: None,
                        s: None,
                        m: None,
                        p: Vec::new(),
                        x: true,
                    };
                    push_line(&mut buf, &removed);
                }
            }
        }
        match self.append(&buf) {
            Ok(()) => {
                history.saved();
                self.size += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                // What reached the file is unknown: the next write replaces it.
                self.rewrite = true;
                self.file = None;
                Err(e)
            }
        }
    }

    fn append(&mut self, buf: &[u8]) -> Result<(), HistoryFileError> {
        let path = self.dir.join(FILE);
        let err = |source| HistoryFileError::Write {
            path: path.clone(),
            source,
        };
        if self.file.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(err)?;
            self.file = Some(file);
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.write_all(buf).map_err(err)?;
        file.sync_data().map_err(err)
    }

    /// Replaces the file with the whole history.
    fn rewrite(&mut self, history: &mut History, now: Timestamp) -> Result<(), HistoryFileError> {
        self.file = None;
        let (tmp, path) = (self.dir.join(TMP), self.dir.join(FILE));
        let result = (|| {
            let mut out = BufWriter::new(File::create(&tmp)?);
            let mut buf = Vec::new();
            let mut size = 0u64;
            for (id, track) in history.all(now) {
                buf.clear();
                line(&mut buf, id, track, track.points.iter());
                out.write_all(&buf)?;
                size += buf.len() as u64;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()?;
            Ok(size)
        })();
        match result {
            Ok(size) => {
                self.size = size;
                self.live = size;
                self.rewrite = false;
                Ok(())
            }
            Err(source) => {
                let _ = fs::remove_file(&tmp);
                self.rewrite = true;
                Err(HistoryFileError::Write { path, source })
            }
        }
    }
}

fn line<'a>(
    buf: &mut Vec<u8>,
    id: &EntityTopicId,
    track: &Track,
    points: impl Iterator<Item = &'a Point>,
) {
    let line = Line {
        e: Cow::Borrowed(id.as_str()),
        t: Some(Cow::Borrowed(&track.mtype)),
        s: Some(Cow::Borrowed(&track.name)),
        m: track.member.as_deref().map(Cow::Borrowed),
        p: points
            .map(|p| (p.time.as_millis(), number(p.value)))
            .collect(),
        x: false,
    };
    push_line(buf, &line);
}

fn push_line(buf: &mut Vec<u8>, line: &Line<'_>) {
    // A line of strings and numbers always serializes.
    if serde_json::to_writer(&mut *buf, line).is_ok() {
        buf.push(b'\n');
    }
}

fn parse(bytes: &[u8]) -> Option<Entry> {
    if bytes.last() != Some(&b'\n') {
        return None;
    }
    let line: Line<'_> = serde_json::from_slice(bytes).ok()?;
    let id: EntityTopicId = line.e.parse().ok()?;
    if line.x {
        return Some(Entry::Removed(id));
    }
    let points = line
        .p
        .iter()
        .filter_map(|(ms, v)| {
            Some(Point {
                time: Timestamp::from_millis(*ms),
                value: v.as_f64()?,
            })
        })
        .collect();
    Some(Entry::Points {
        id,
        mtype: line.t?.into_owned(),
        name: line.s?.into_owned(),
        member: line.m.map(Cow::into_owned),
        points,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::HistoryConfig;
    use crate::twin::history::tests::{rec, Twin};
    use crate::twin::model::Name;

    const NOW: i64 = 1_800_000_000_000;

    fn config() -> HistoryConfig {
        HistoryConfig {
            points: 3,
            max_age: Duration::from_secs(3600),
        }
    }

    fn point(ms: i64, value: f64) -> Point {
        Point {
            time: Timestamp::from_millis(NOW + ms),
            value,
        }
    }

    fn load(dir: &Path) -> (History, HistoryFile, Vec<String>) {
        let mut history = History::new(config());
        let now = Timestamp::from_millis(NOW);
        let (file, warnings) = HistoryFile::load(dir, |entry| match entry {
            Entry::Points {
                id,
                mtype,
                name,
                member,
                points,
            } => history.restore(
                id,
                (mtype.into(), name.into(), member.map(Name::from)),
                points,
                now,
            ),
            Entry::Removed(id) => history.forget(&id),
        });
        assert!(!history.has_unsaved());
        (history, file, warnings)
    }

    #[test]
    fn appended_points_and_removals_load_back_within_the_limits() {
        let mut twin = Twin::new();
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::from_millis(NOW);
        let (a, b): (EntityTopicId, EntityTopicId) =
            ("device/a//".parse().unwrap(), "device/b//".parse().unwrap());
        let (m, t, g, l1) = (
            Name::from("m"),
            Name::from("t"),
            Name::from("g"),
            Name::from("L1"),
        );
        let (mut history, mut file, _) = load(dir.path());
        rec(
            &mut history,
            &mut twin,
            &a,
            (&m, &t, None),
            point(0, 1.0),
            now,
        );
        rec(
            &mut history,
            &mut twin,
            &a,
            (&m, &g, Some(&l1)),
            point(0, 2.5),
            now,
        );
        rec(
            &mut history,
            &mut twin,
            &b,
            (&m, &t, None),
            point(0, 3.0),
            now,
        );
        file.write(&mut history, now).unwrap();
        rec(
            &mut history,
            &mut twin,
            &a,
            (&m, &t, None),
            point(1, 4.0),
            now,
        );
        rec(
            &mut history,
            &mut twin,
            &a,
            (&m, &t, None),
            point(2, 5.0),
            now,
        );
        rec(
            &mut history,
            &mut twin,
            &a,
            (&m, &t, None),
            point(3, 6.0),
            now,
        );
        history.remove(&b);
        file.write(&mut history, now).unwrap();
        assert!(!history.has_unsaved());
        let text = fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.contains(r#"{"e":"device/b//","x":true}"#), "{text}");

        let (loaded, _, warnings) = load(dir.path());
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(loaded.tracks(&b).is_empty());
        let tracks = loaded.tracks(&a);
        let t_points: Vec<f64> = tracks
            .iter()
            .find(|t| &*t.name == "t")
            .unwrap()
            .points
            .iter()
            .map(|p| p.value)
            .collect();
        assert_eq!(t_points, [4.0, 5.0, 6.0]);
        let g_track = tracks.iter().find(|t| &*t.name == "g").unwrap();
        assert_eq!(g_track.member.as_deref(), Some("L1"));
        assert_eq!(g_track.points[0], point(0, 2.5));
    }

    #[test]
    fn names_with_quotes_backslashes_and_controls_load_back() {
        let mut twin = Twin::new();
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::from_millis(NOW);
        let a: EntityTopicId = "device/a\\b//".parse().unwrap();
        let (mut history, mut file, _) = load(dir.path());
        let (t, n, m) = ("ty\"pe", "C:\\", "line\nfeed");
        rec(
            &mut history,
            &mut twin,
            &a,
            (t, n, Some(m)),
            point(0, 1.5),
            now,
        );
        file.write(&mut history, now).unwrap();
        let (loaded, _, warnings) = load(dir.path());
        assert!(warnings.is_empty(), "{warnings:?}");
        let track = &loaded.tracks(&a)[0];
        assert_eq!(
            (&*track.mtype, &*track.name, track.member.as_deref()),
            (t, n, Some(m))
        );
        assert_eq!(track.points[0], point(0, 1.5));
    }

    #[test]
    fn lines_of_entities_the_twin_no_longer_has_are_dropped_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let now = Timestamp::now().as_millis();
        let main =
            format!("{{\"e\":\"device/main//\",\"t\":\"m\",\"s\":\"t\",\"p\":[[{now},1]]}}\n");
        let gone =
            format!("{{\"e\":\"device/gone//\",\"t\":\"m\",\"s\":\"t\",\"p\":[[{now},2]]}}\n");
        fs::write(&path, format!("{main}{gone}")).unwrap();
        let config = crate::config::Config::default();
        let mut store = Store::new(crate::twin::store::StoreConfig::from_config(&config, 1));
        let Loaded {
            mut file,
            history,
            warnings,
        } = HistoryFile::read(dir.path(), config.twin.history);
        assert!(warnings.is_empty(), "{warnings:?}");
        file.merge_into(history, &mut store);
        let gone_id: EntityTopicId = "device/gone//".parse().unwrap();
        assert!(store.history.tracks(&gone_id).is_empty());
        let main_id: EntityTopicId = "device/main//".parse().unwrap();
        assert_eq!(store.history.tracks(&main_id).len(), 1);
        // Rewritten at the next write, even with nothing new: a device registered again as
        // device/gone// must not get the old points back at the next start.
        file.write(&mut store.history, Timestamp::now()).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), main);
    }

    #[test]
    fn a_torn_line_is_skipped_and_the_file_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        fs::write(
            &path,
            format!(
                "{{\"e\":\"device/a//\",\"t\":\"m\",\"s\":\"t\",\"p\":[[{NOW},1]]}}\nnot json\n{{\"e\":\"device/a//\",\"t\":\"m\",\"s\":\"t\",\"p\":[[{},2]"
                , NOW + 1
            ),
        )
        .unwrap();
        let (mut history, mut file, warnings) = load(dir.path());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].ends_with("skipped 2 unreadable lines; the file will be rewritten"));
        file.write(&mut history, Timestamp::from_millis(NOW))
            .unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{{\"e\":\"device/a//\",\"t\":\"m\",\"s\":\"t\",\"p\":[[{NOW},1]]}}\n")
        );
        assert!(!dir.path().join(TMP).exists());
    }

    #[test]
    fn a_failed_write_rewrites_everything_next_time() {
        let mut twin = Twin::new();
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::from_millis(NOW);
        let a: EntityTopicId = "device/a//".parse().unwrap();
        let (m, t) = (Name::from("m"), Name::from("t"));
        let (mut history, mut file, _) = load(dir.path());
        rec(
            &mut history,
            &mut twin,
            &a,
            (&m, &t, None),
            point(0, 1.0),
            now,
        );
        // A directory where the file should be: the append fails.
        fs::create_dir(dir.path().join(FILE)).unwrap();
        assert!(file.write(&mut history, now).is_err());
        fs::remove_dir(dir.path().join(FILE)).unwrap();
        rec(
            &mut history,
            &mut twin,
            &a,
            (&m, &t, None),
            point(1, 2.0),
            now,
        );
        file.write(&mut history, now).unwrap();
        let (loaded, _, _) = load(dir.path());
        let values: Vec<f64> = loaded.tracks(&a)[0]
            .points
            .iter()
            .map(|p| p.value)
            .collect();
        assert_eq!(values, [1.0, 2.0]);
    }
}

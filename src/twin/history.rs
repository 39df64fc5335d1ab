//! The measurement history of the twin (issue #7): for every measurement series, its last
//! points, bounded by `twin.history.points` and `twin.history.max_age`, and what is still to be
//! written to `history.jsonl` (`history_file`).
//!
//! Owned by the store, next to the entities: the store records a point for every accepted
//! measurement value and drops an entity's history with the entity. No I/O here. A point is 16
//! bytes (milliseconds and an `f64`), so a full series of 300 points costs about 5 KiB.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};

use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};

use super::model::{Name, Series, SeriesNode};
use super::time::Timestamp;
use super::vecmap::VecMap;
use crate::config::HistoryConfig;
use crate::topic::EntityTopicId;

/// One point of a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub time: Timestamp,
    pub value: f64,
}

/// The points of one series, in arrival order (which is time order unless a device sends
/// timestamps out of order: queries sort them).
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub mtype: Name,
    pub name: Name,
    /// The member of a group (`current` → `L1`); `None` for a single series.
    pub member: Option<Name>,
    pub points: VecDeque<Point>,
    /// How many of the newest points are not yet written to disk.
    unsaved: usize,
}

impl Track {
    fn new(mtype: Name, name: Name, member: Option<Name>) -> Track {
        Track {
            mtype,
            name,
            member,
            points: VecDeque::new(),
            unsaved: 0,
        }
    }

    /// The order of an entity's tracks: by type, name, then member (a single series first).
    fn key(&self) -> (&str, &str, Option<&str>) {
        (&self.mtype, &self.name, self.member.as_deref())
    }

    /// The points not yet written.
    pub fn unsaved(&self) -> impl Iterator<Item = &Point> {
        self.points.iter().skip(self.points.len() - self.unsaved)
    }

    /// Appends `point`, dropping the oldest beyond `limit` and those older than `cutoff`.
    fn push(&mut self, point: Point, limit: usize, cutoff: Timestamp) {
        if self.points.len() >= limit {
            self.points.pop_front();
        } else if self.points.len() == self.points.capacity() {
            // Grow by at most the room left: a full series then holds exactly `limit` points,
            // not the next power of two.
            let room = limit - self.points.len();
            self.points
                .reserve_exact(self.points.len().max(4).min(room));
        }
        self.points.push_back(point);
        self.unsaved = (self.unsaved + 1).min(self.points.len());
        self.expire(cutoff);
    }

    /// Drops points older than `cutoff` from the front (the oldest arrivals).
    fn expire(&mut self, cutoff: Timestamp) {
        while self.points.front().is_some_and(|p| p.time < cutoff) {
            self.points.pop_front();
        }
        self.unsaved = self.unsaved.min(self.points.len());
    }
}

/// What the history holds, and what it has not yet written.
#[derive(Debug, Default)]
pub struct History {
    cfg: Option<HistoryConfig>,
    tracks: HashMap<EntityTopicId, Vec<Track>>,
    /// Entities with unsaved points.
    dirty: HashSet<EntityTopicId>,
    /// Entities whose history is gone since the last write.
    removed: HashSet<EntityTopicId>,
}

/// One entry of a write to disk.
#[derive(Debug, PartialEq)]
pub enum Unsaved<'a> {
    /// New points of one series.
    Points(&'a EntityTopicId, &'a Track),
    /// The entity's history is gone.
    Removed(EntityTopicId),
}

impl History {
    pub fn new(cfg: HistoryConfig) -> History {
        History {
            cfg: Some(cfg),
            ..History::default()
        }
    }

    fn limits(&self, now: Timestamp) -> Option<(usize, Timestamp)> {
        let cfg = self.cfg.filter(|c| c.points > 0)?;
        let age = i64::try_from(cfg.max_age.as_millis()).unwrap_or(i64::MAX);
        Some((
            cfg.points,
            Timestamp::from_millis(now.as_millis().saturating_sub(age)),
        ))
    }

    /// Records one measurement value at reception time `now`. `series` is (type, name,
    /// member); `previous` is the series' value in the twin before this one, if any; `intern`
    /// makes the names of a new series.
    ///
    /// A series gets a track only with its second value (seeded with `previous`): the twin
    /// keeps the latest value anyway, so the many children that report once cost no history,
    /// and [`History::reply`] shows their one value from the twin.
    pub fn record(
        &mut self,
        id: &EntityTopicId,
        series: (&str, &str, Option<&str>),
        point: Point,
        previous: Option<Point>,
        now: Timestamp,
        mut intern: impl FnMut(&str) -> Name,
    ) {
        let (mtype, name, member) = series;
        let Some((limit, cutoff)) = self.limits(now) else {
            return;
        };
        if point.time < cutoff || !point.value.is_finite() {
            return;
        }
        let existing = self.tracks.get_mut(id).and_then(|tracks| {
            let i = tracks
                .binary_search_by(|t| t.key().cmp(&(mtype, name, member)))
                .ok()?;
            Some(&mut tracks[i])
        });
        match (existing, previous) {
            (Some(track), _) => track.push(point, limit, cutoff),
            (None, None) => return,
            (None, Some(previous)) => {
                let tracks = match self.tracks.get_mut(id) {
                    Some(tracks) => tracks,
                    None => self.tracks.entry(id.clone()).or_default(),
                };
                let i = find_or_insert(tracks, (mtype, name, member), || {
                    Track::new(intern(mtype), intern(name), member.map(&mut intern))
                });
                if previous != point && previous.time >= cutoff && previous.value.is_finite() {
                    tracks[i].push(previous, limit, cutoff);
                }
                tracks[i].push(point, limit, cutoff);
            }
        }
        if !self.dirty.contains(id) {
            self.dirty.insert(id.clone());
        }
    }

    /// Forgets an entity's history (deregistration). The removal is written down even when
    /// nothing is in memory: the file may still hold points that expired since.
    pub fn remove(&mut self, id: &EntityTopicId) {
        if self.cfg.is_some_and(|c| c.points > 0) {
            self.tracks.remove(id);
            self.dirty.remove(id);
            self.removed.insert(id.clone());
        }
    }

    /// Forgets an entity's history without writing that down (loading).
    pub fn forget(&mut self, id: &EntityTopicId) {
        self.tracks.remove(id);
    }

    /// The series of `id`, if it has any.
    pub fn tracks(&self, id: &EntityTopicId) -> &[Track] {
        self.tracks.get(id).map_or(&[], Vec::as_slice)
    }

    /// Every series, for a rewrite of the whole file; marks everything written.
    pub fn all(&mut self, now: Timestamp) -> impl Iterator<Item = (&EntityTopicId, &Track)> {
        self.expire(now);
        self.dirty.clear();
        self.removed.clear();
        for tracks in self.tracks.values_mut() {
            for track in tracks {
                track.unsaved = 0;
            }
        }
        self.tracks
            .iter()
            .flat_map(|(id, tracks)| tracks.iter().map(move |t| (id, t)))
    }

    /// Whether anything is waiting to be written.
    pub fn has_unsaved(&self) -> bool {
        !self.dirty.is_empty() || !self.removed.is_empty()
    }

    /// What changed since the last write (removals first). The points stay unsaved until
    /// [`History::saved`]; after a failed write the caller rewrites everything ([`History::all`]).
    pub fn take_unsaved(&mut self) -> Vec<Unsaved<'_>> {
        let mut out: Vec<Unsaved<'_>> = self.removed.drain().map(Unsaved::Removed).collect();
        let dirty = std::mem::take(&mut self.dirty);
        for (id, tracks) in &self.tracks {
            if !dirty.contains(id) {
                continue;
            }
            out.extend(
                tracks
                    .iter()
                    .filter(|t| t.unsaved > 0)
                    .map(|t| Unsaved::Points(id, t)),
            );
        }
        out
    }

    /// Marks the points handed out by [`History::take_unsaved`] as written.
    pub fn saved(&mut self) {
        for tracks in self.tracks.values_mut() {
            for track in tracks {
                track.unsaved = 0;
            }
        }
    }

    /// How many points are kept, over all series.
    pub fn points(&self) -> usize {
        self.tracks
            .values()
            .flat_map(|t| t.iter())
            .map(|t| t.points.len())
            .sum()
    }

    /// Loads points read back from disk, in file order. Limits apply as for new points.
    pub fn restore(
        &mut self,
        id: EntityTopicId,
        key: (Name, Name, Option<Name>),
        points: impl IntoIterator<Item = Point>,
        now: Timestamp,
    ) {
        let Some((limit, cutoff)) = self.limits(now) else {
            return;
        };
        let tracks = self.tracks.entry(id).or_default();
        let (mtype, name, member) = key;
        let i = find_or_insert(
            tracks,
            (&mtype.clone(), &name.clone(), member.clone().as_deref()),
            || Track::new(mtype, name, member),
        );
        let track = &mut tracks[i];
        for point in points {
            if point.time >= cutoff && point.value.is_finite() {
                track.push(point, limit, cutoff);
            }
        }
        track.unsaved = 0;
    }

    /// Adds `loaded` (read from disk, older) before the points recorded since: for each series,
    /// the loaded points come first and the limits apply to the whole; the points recorded
    /// since stay unsaved. Entities `known` rejects are dropped; true when something was.
    pub fn merge(
        &mut self,
        loaded: History,
        mut known: impl FnMut(&EntityTopicId) -> bool,
        mut intern: impl FnMut(&str) -> Name,
    ) -> bool {
        let Some((limit, _)) = self.limits(Timestamp::now()) else {
            return !loaded.tracks.is_empty();
        };
        let mut dropped = false;
        for (id, tracks) in loaded.tracks {
            if !known(&id) {
                dropped = true;
                continue;
            }
            let mine = self.tracks.entry(id).or_default();
            for old in tracks {
                if old.points.is_empty() {
                    dropped = true;
                    continue;
                }
                let i = find_or_insert(mine, old.key(), || {
                    let member = old.member.as_deref().map(&mut intern);
                    Track::new(intern(&old.mtype), intern(&old.name), member)
                });
                let track = &mut mine[i];
                // A series' first live value was seeded with the twin's previous value, which
                // may be the last point on disk too.
                if track.points.front().is_some() && track.points.front() == old.points.back() {
                    track.points.pop_front();
                }
                let mut points = old.points;
                points.extend(track.points.drain(..));
                let excess = points.len().saturating_sub(limit);
                points.drain(..excess);
                points.shrink_to_fit();
                track.unsaved = track.unsaved.min(points.len());
                track.points = points;
            }
        }
        dropped
    }

    fn expire(&mut self, now: Timestamp) {
        let Some((_, cutoff)) = self.limits(now) else {
            self.tracks.clear();
            return;
        };
        for tracks in self.tracks.values_mut() {
            for track in tracks.iter_mut() {
                track.expire(cutoff);
            }
            tracks.retain(|t| !t.points.is_empty());
        }
        self.tracks.retain(|_, tracks| !tracks.is_empty());
    }

    /// The reply of `GET …/m/<type>`: the series of one type, `since` and `series` applied,
    /// points oldest first, groups nested as in the state document. `current` is the type's
    /// latest values in the twin: a series without a track (one value so far) shows that one.
    pub fn reply<'a>(
        &'a self,
        id: &'a EntityTopicId,
        mtype: &'a str,
        query: (Option<Timestamp>, Option<&'a str>),
        current: Option<&'a VecMap<Name, SeriesNode>>,
        now: Timestamp,
    ) -> Reply<'a> {
        let (since, series) = query;
        let cutoff = self.limits(now).map(|(_, c)| c);
        let from = match (since, cutoff) {
            (Some(s), Some(c)) => Some(s.max(c)),
            (s, c) => s.or(c),
        };
        let wanted = |name: &str| series.is_none_or(|s| name == s);
        let mut tracks: Vec<Cow<'a, Track>> = self
            .tracks(id)
            .iter()
            .filter(|t| &*t.mtype == mtype && wanted(&t.name))
            .map(Cow::Borrowed)
            .collect();
        let mut one = |name: &Name, member: Option<&Name>, s: &Series| {
            let key = (mtype, &**name, member.map(|m| &**m));
            if tracks.iter().any(|t| t.key() == key) || self.cfg.is_none_or(|c| c.points == 0) {
                return;
            }
            let mut track = Track::new(Name::from(mtype), name.clone(), member.cloned());
            track.points.push_back(Point {
                time: s.time,
                value: s.value.as_f64().unwrap_or(f64::NAN),
            });
            tracks.push(Cow::Owned(track));
        };
        for (name, node) in current.into_iter().flat_map(|c| c.iter()) {
            if !wanted(name) {
                continue;
            }
            match node {
                SeriesNode::Single(s) => one(name, None, s),
                SeriesNode::Group(group) => {
                    for (member, s) in group.iter() {
                        one(name, Some(member), s);
                    }
                }
            }
        }
        tracks.sort_by(|a, b| a.key().cmp(&b.key()));
        Reply {
            id,
            mtype,
            tracks,
            from,
        }
    }
}

/// The index of the track `key` in `tracks` (sorted by [`Track::key`]), inserted by `new` when
/// missing: a binary search, so that an entity with thousands of series costs a few
/// comparisons per value, and an insertion that lands at the end (values come in key order).
fn find_or_insert(
    tracks: &mut Vec<Track>,
    key: (&str, &str, Option<&str>),
    new: impl FnOnce() -> Track,
) -> usize {
    match tracks.binary_search_by(|t| t.key().cmp(&key)) {
        Ok(i) => i,
        Err(i) => {
            tracks.insert(i, new());
            i
        }
    }
}

/// `{"@topic-id":…,"type":…,"series":{name: [points] | {member: [points]}}}`.
pub struct Reply<'a> {
    id: &'a EntityTopicId,
    mtype: &'a str,
    tracks: Vec<Cow<'a, Track>>,
    from: Option<Timestamp>,
}

impl Serialize for Reply<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("@topic-id", self.id)?;
        m.serialize_entry("type", self.mtype)?;
        m.serialize_entry("series", &SeriesMap(self))?;
        m.end()
    }
}

struct SeriesMap<'a>(&'a Reply<'a>);

impl Serialize for SeriesMap<'_> {
    /// The tracks come sorted by name then member (an entity's order within one type): each
    /// name's tracks are one run.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let reply = self.0;
        let mut m = s.serialize_map(None)?;
        for run in reply.tracks.chunk_by(|a, b| a.name == b.name) {
            // A name that switched between a single series and a group shows its newer shape,
            // as the state document does.
            let newest = run
                .iter()
                .max_by_key(|t| t.points.back().map(|p| p.time))
                .map(|t| t.member.is_some());
            let shape: Vec<&Track> = run
                .iter()
                .map(|t| &**t)
                .filter(|t| Some(t.member.is_some()) == newest)
                .collect();
            match (newest, shape.first()) {
                (Some(true), _) => m.serialize_entry(&*run[0].name, &Group(&shape, reply.from))?,
                (_, Some(track)) => m.serialize_entry(&*track.name, &Points(track, reply.from))?,
                _ => {}
            }
        }
        m.end()
    }
}

struct Group<'a>(&'a [&'a Track], Option<Timestamp>);

impl Serialize for Group<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for track in self.0 {
            if let Some(member) = &track.member {
                m.serialize_entry(&**member, &Points(track, self.1))?;
            }
        }
        m.end()
    }
}

/// The points of a track from `from` on, sorted by time (stable: equal times keep their
/// arrival order).
struct Points<'a>(&'a Track, Option<Timestamp>);

impl Serialize for Points<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut points: Vec<&Point> = self
            .0
            .points
            .iter()
            .filter(|p| self.1.is_none_or(|from| p.time >= from))
            .collect();
        points.sort_by_key(|p| p.time);
        let mut seq = s.serialize_seq(Some(points.len()))?;
        for point in points {
            seq.serialize_element(&PointJson(point))?;
        }
        seq.end()
    }
}

/// `{"time":"2026-…Z","value":21.5}`.
struct PointJson<'a>(&'a Point);

impl Serialize for PointJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Point", 2)?;
        st.serialize_field("time", &self.0.time)?;
        st.serialize_field("value", &number(self.0.value))?;
        st.end()
    }
}

/// A value as JSON: integral values within `f64`'s exact range print as integers (`25`, not
/// `25.0`), as the device sent them.
pub fn number(value: f64) -> serde_json::Number {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if value.fract() == 0.0 && value.abs() < EXACT {
        serde_json::Number::from(value as i64)
    } else {
        serde_json::Number::from_f64(value).unwrap_or_else(|| serde_json::Number::from(0))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use super::*;

    fn history(points: usize) -> History {
        History::new(HistoryConfig {
            points,
            max_age: Duration::from_secs(3600),
        })
    }

    fn id(s: &str) -> EntityTopicId {
        s.parse().unwrap()
    }

    fn name(s: &str) -> Name {
        Name::from(s)
    }

    fn at(ms: i64, value: f64) -> Point {
        Point {
            time: Timestamp::from_millis(ms),
            value,
        }
    }

    const NOW: i64 = 1_800_000_000_000;

    /// Records as the store does, except that a series' first value starts its track (as if
    /// the twin had it before): these tests are about what tracks keep.
    pub(in crate::twin) type Twin =
        std::collections::HashMap<(String, String, String, Option<String>), Point>;

    pub(in crate::twin) fn rec(
        h: &mut History,
        twin: &mut Twin,
        id: &EntityTopicId,
        key: (&str, &str, Option<&str>),
        point: Point,
        now: Timestamp,
    ) {
        let k = (
            id.as_str().to_owned(),
            key.0.to_owned(),
            key.1.to_owned(),
            key.2.map(str::to_owned),
        );
        let previous = twin.insert(k, point).or(Some(point));
        h.record(id, key, point, previous, now, |s: &str| Name::from(s));
    }

    #[test]
    fn a_series_keeps_its_newest_points_and_sorts_them_by_time() {
        let mut twin = Twin::new();
        let mut h = history(3);
        let (c, env, temp) = (id("device/c//"), name("env"), name("temperature"));
        let now = Timestamp::from_millis(NOW);
        for (ms, v) in [
            (NOW - 40, 1.0),
            (NOW - 10, 2.5),
            (NOW - 30, 3.0),
            (NOW - 20, 4.0),
        ] {
            rec(&mut h, &mut twin, &c, (&env, &temp, None), at(ms, v), now);
        }
        let track = &h.tracks(&c)[0];
        assert_eq!(track.points.len(), 3);
        let text = serde_json::to_string(&h.reply(&c, "env", (None, None), None, now)).unwrap();
        assert_eq!(
            text,
            r#"{"@topic-id":"device/c//","type":"env","series":{"temperature":[{"time":"2027-01-15T07:59:59.970Z","value":3},{"time":"2027-01-15T07:59:59.980Z","value":4},{"time":"2027-01-15T07:59:59.990Z","value":2.5}]}}"#
        );
    }

    #[test]
    fn since_series_and_max_age_select_points() {
        let mut twin = Twin::new();
        let mut h = History::new(HistoryConfig {
            points: 10,
            max_age: Duration::from_secs(60),
        });
        let (c, env) = (id("device/c//"), name("env"));
        let now = Timestamp::from_millis(NOW);
        rec(
            &mut h,
            &mut twin,
            &c,
            (&env, "t", None),
            at(NOW - 61_000, 1.0),
            now,
        );
        rec(
            &mut h,
            &mut twin,
            &c,
            (&env, "t", None),
            at(NOW - 30_000, 2.0),
            now,
        );
        rec(
            &mut h,
            &mut twin,
            &c,
            (&env, "t", None),
            at(NOW - 1_000, 3.0),
            now,
        );
        rec(
            &mut h,
            &mut twin,
            &c,
            (&env, "current", Some("L2")),
            at(NOW, 9.5),
            now,
        );
        rec(
            &mut h,
            &mut twin,
            &c,
            (&env, "current", Some("L1")),
            at(NOW, 10.0),
            now,
        );
        rec(
            &mut h,
            &mut twin,
            &c,
            ("other", "t", None),
            at(NOW, 7.0),
            now,
        );
        let all = serde_json::to_value(h.reply(&c, "env", (None, None), None, now)).unwrap();
        assert_eq!(all["series"]["t"].as_array().unwrap().len(), 2);
        assert_eq!(
            all["series"]["current"],
            serde_json::json!({
                "L1": [{"time": "2027-01-15T08:00:00.000Z", "value": 10}],
                "L2": [{"time": "2027-01-15T08:00:00.000Z", "value": 9.5}],
            })
        );
        let since = Timestamp::from_millis(NOW - 2_000);
        let some =
            serde_json::to_value(h.reply(&c, "env", (Some(since), Some("t")), None, now)).unwrap();
        assert_eq!(
            some["series"],
            serde_json::json!({"t": [{"time": "2027-01-15T07:59:59.000Z", "value": 3}]})
        );
        let later = Timestamp::from_millis(NOW + 45_000);
        let aged =
            serde_json::to_value(h.reply(&c, "env", (None, Some("t")), None, later)).unwrap();
        assert_eq!(aged["series"]["t"].as_array().unwrap().len(), 1);
        let none = serde_json::to_value(h.reply(&c, "missing", (None, None), None, now)).unwrap();
        assert_eq!(none["series"], serde_json::json!({}));
    }

    #[test]
    fn unsaved_points_are_handed_out_once_and_removals_are_remembered() {
        let mut twin = Twin::new();
        let mut h = history(5);
        let (a, b, m, t) = (id("device/a//"), id("device/b//"), name("m"), name("t"));
        let now = Timestamp::from_millis(NOW);
        rec(&mut h, &mut twin, &a, (&m, &t, None), at(NOW, 1.0), now);
        rec(&mut h, &mut twin, &a, (&m, &t, None), at(NOW + 1, 2.0), now);
        rec(&mut h, &mut twin, &b, (&m, &t, None), at(NOW, 3.0), now);
        let unsaved = h.take_unsaved();
        assert_eq!(unsaved.len(), 2);
        let Some(Unsaved::Points(_, track)) = unsaved
            .iter()
            .find(|u| matches!(u, Unsaved::Points(id, _) if **id == a))
        else {
            panic!("no points of device/a//: {unsaved:?}")
        };
        let values: Vec<f64> = track.unsaved().map(|p| p.value).collect();
        assert_eq!(values, [1.0, 2.0]);
        h.saved();
        assert!(!h.has_unsaved());
        rec(&mut h, &mut twin, &a, (&m, &t, None), at(NOW + 2, 4.0), now);
        h.remove(&b);
        let unsaved = h.take_unsaved();
        assert_eq!(unsaved[0], Unsaved::Removed(b.clone()));
        let Unsaved::Points(_, track) = &unsaved[1] else {
            panic!("{unsaved:?}")
        };
        assert_eq!(track.unsaved().map(|p| p.value).collect::<Vec<_>>(), [4.0]);
    }

    #[test]
    fn a_history_read_later_goes_before_the_points_recorded_since() {
        let mut twin = Twin::new();
        let now = Timestamp::now();
        let ms = now.as_millis();
        let (c, gone) = (id("device/c//"), id("device/gone//"));
        let mut loaded = history(3);
        loaded.restore(
            c.clone(),
            (name("m"), name("t"), None),
            [at(ms - 30, 1.0), at(ms - 20, 2.0)],
            now,
        );
        loaded.restore(
            gone.clone(),
            (name("m"), name("t"), None),
            [at(ms, 9.0)],
            now,
        );
        let mut live = history(3);
        rec(
            &mut live,
            &mut twin,
            &c,
            ("m", "t", None),
            at(ms - 10, 3.0),
            now,
        );
        rec(&mut live, &mut twin, &c, ("m", "t", None), at(ms, 4.0), now);
        let dropped = live.merge(loaded, |i| *i == c, |s: &str| Name::from(s));
        assert!(dropped, "device/gone// is not known");
        let track = &live.tracks(&c)[0];
        let values: Vec<f64> = track.points.iter().map(|p| p.value).collect();
        assert_eq!(values, [2.0, 3.0, 4.0]);
        // The points recorded since the start are still to be written, and only those.
        let unsaved = live.take_unsaved();
        let Some(Unsaved::Points(_, track)) = unsaved.first() else {
            panic!("{unsaved:?}")
        };
        assert_eq!(
            track.unsaved().map(|p| p.value).collect::<Vec<_>>(),
            [3.0, 4.0]
        );
        assert!(live.tracks(&gone).is_empty());
    }

    #[test]
    fn a_series_gets_a_track_with_its_second_value_and_shows_its_first_from_the_twin() {
        let mut h = history(5);
        let c = id("device/c//");
        let now = Timestamp::from_millis(NOW);
        let intern = |s: &str| Name::from(s);
        h.record(&c, ("env", "t", None), at(NOW - 10, 1.0), None, now, intern);
        assert!(h.tracks(&c).is_empty());
        assert!(!h.has_unsaved());
        // The twin holds that one value: the reply shows it.
        let mut current: VecMap<Name, SeriesNode> = VecMap::new();
        current.insert(
            name("t"),
            SeriesNode::Single(Series {
                value: 1.into(),
                time: Timestamp::from_millis(NOW - 10),
            }),
        );
        let one = serde_json::to_value(h.reply(&c, "env", (None, None), Some(&current), now));
        assert_eq!(
            one.unwrap()["series"],
            serde_json::json!({"t": [{"time": "2027-01-15T07:59:59.990Z", "value": 1}]})
        );
        // The second value starts the track with the first.
        h.record(
            &c,
            ("env", "t", None),
            at(NOW, 2.0),
            Some(at(NOW - 10, 1.0)),
            now,
            intern,
        );
        let values: Vec<f64> = h.tracks(&c)[0].points.iter().map(|p| p.value).collect();
        assert_eq!(values, [1.0, 2.0]);
        let both = serde_json::to_value(h.reply(&c, "env", (None, None), Some(&current), now));
        assert_eq!(
            both.unwrap()["series"]["t"].as_array().map(Vec::len),
            Some(2)
        );
    }

    #[test]
    fn no_history_is_kept_with_zero_points() {
        let mut twin = Twin::new();
        let mut h = history(0);
        let c = id("device/c//");
        let now = Timestamp::from_millis(NOW);
        rec(&mut h, &mut twin, &c, ("m", "t", None), at(NOW, 1.0), now);
        assert!(h.tracks(&c).is_empty());
        assert!(!h.has_unsaved());
    }

    #[test]
    fn numbers_print_as_sent() {
        assert_eq!(number(25.0).to_string(), "25");
        assert_eq!(number(-3.0).to_string(), "-3");
        assert_eq!(number(2.5).to_string(), "2.5");
        assert_eq!(number(1e300).to_string(), "1e+300");
    }
}

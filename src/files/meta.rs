//! The digest kept beside every stored file (issue #3 "Integrity").
//!
//! One small JSON record per file in `<root>/.edge-agent/meta/`, named by the SHA-256 of the
//! file's relative path (a flat directory, so records never collide with the tree's shape). A
//! record names the file's inode, size and modification time: it is trusted only while all three
//! still match the open file, so a file replaced or edited behind the agent's back is hashed again
//! rather than served with a stale digest. Records are written to a temp file and renamed.

use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::digest::{Hasher, Sha256};

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    path: String,
    sha256: String,
    size: u64,
    ino: u64,
    mtime_ns: i128,
}

/// The identity of a file's content, as far as the file system tells: inode, size, mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl Stamp {
    pub fn of(meta: &Metadata) -> Stamp {
        Stamp {
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// The records' directory.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    pub fn new(dir: PathBuf) -> Records {
        Records { dir }
    }

    fn record_path(&self, rel: &str) -> PathBuf {
        let mut h = Hasher::new();
        h.update(rel.as_bytes());
        self.dir.join(h.finish().to_string())
    }

    /// The digest of `rel` if its record matches `stamp`.
    pub fn get(&self, rel: &str, stamp: Stamp) -> Option<Sha256> {
        let text = fs::read(self.record_path(rel)).ok()?;
        let r: Record = serde_json::from_slice(&text).ok()?;
        let recorded = Stamp {
            ino: r.ino,
            size: r.size,
            mtime_ns: r.mtime_ns,
        };
        (r.path == rel && recorded == stamp)
            .then(|| r.sha256.parse().ok())
            .flatten()
    }

    /// Records `digest` for `rel` as of `stamp`: temp file, fsync, rename.
    pub fn put(&self, rel: &str, stamp: Stamp, digest: Sha256) -> io::Result<()> {
        let record = Record {
            path: rel.to_owned(),
            sha256: digest.to_string(),
            size: stamp.size,
            ino: stamp.ino,
            mtime_ns: stamp.mtime_ns,
        };
        let text = serde_json::to_vec(&record).map_err(io::Error::other)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".rec-")
            .tempfile_in(&self.dir)?;
        tmp.write_all(&text)?;
        tmp.as_file().sync_data()?;
        tmp.persist(self.record_path(rel))
            .map_err(|e| e.error)
            .map(drop)
    }

    /// Forgets `rel`'s record; a missing one is fine.
    pub fn remove(&self, rel: &str) {
        let _ = fs::remove_file(self.record_path(rel));
    }

    /// The relative paths of every record, with the record's own file, for the sweep.
    pub fn list(&self) -> Vec<(String, PathBuf)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let text = fs::read(e.path()).ok()?;
                let r: Record = serde_json::from_slice(&text).ok()?;
                Some((r.path, e.path()))
            })
            .collect()
    }
}

/// Hashes an open file from its start; leaves the position at its end.
pub fn hash_file(file: &mut File) -> io::Result<Sha256> {
    use std::io::Seek;
    file.seek(io::SeekFrom::Start(0))?;
    let mut hasher = Hasher::new();
    hasher.read_from(file)?;
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_trusted_only_while_the_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::new(dir.path().to_path_buf());
        let file = dir.path().join("f");
        fs::write(&file, b"abc").unwrap();
        let stamp = Stamp::of(&fs::metadata(&file).unwrap());
        let digest = hash_file(&mut File::open(&file).unwrap()).unwrap();
        records.put("a/f", stamp, digest).unwrap();

        assert_eq!(records.get("a/f", stamp), Some(digest));
        assert_eq!(records.get("a/g", stamp), None);
        let grown = Stamp { size: 4, ..stamp };
        assert_eq!(records.get("a/f", grown), None);
        let other_inode = Stamp {
            ino: stamp.ino + 1,
            ..stamp
        };
        assert_eq!(records.get("a/f", other_inode), None);
        assert_eq!(records.list().len(), 1);
        assert_eq!(records.list()[0].0, "a/f");

        records.remove("a/f");
        assert_eq!(records.get("a/f", stamp), None);
        records.remove("a/f");
    }
}

//! The operations' table on disk: `<data_dir>/operations.json`, rewritten whole (atomically:
//! temp file, fsync, rename, fsync of the directory) after each change. Operations are few and
//! change at human pace; what matters is that one in flight survives a restart (issue #5).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::model::Operation;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a list of operations", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The file in `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("operations.json")
}

/// The operations saved at `path`; none when there is no file.
pub fn load(path: &Path) -> Result<Vec<Operation>, PersistError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(PersistError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes).map_err(|source| PersistError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// [`load`], except that a file that is not a list of operations (damaged by hand, or by a
/// disk) is renamed `<file>.bad` with an error in the log, and the agent starts with none:
/// one bad file must not keep the agent, and its twin, from starting.
pub fn load_or_set_aside(path: &Path) -> Result<Vec<Operation>, PersistError> {
    match load(path) {
        Err(PersistError::Parse { source, .. }) => {
            let aside = path.with_extension("json.bad");
            tracing::error!(
                path = %path.display(),
                aside = %aside.display(),
                "the operations file is damaged ({source}); set aside, starting with no operations"
            );
            fs::rename(path, &aside).map_err(|source| PersistError::Write {
                path: path.to_owned(),
                source,
            })?;
            Ok(Vec::new())
        }
        other => other,
    }
}

/// Replaces the file at `path` with `ops`.
pub fn save(path: &Path, ops: &[&Operation]) -> Result<(), PersistError> {
    let write_error = |source| PersistError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(write_error)?;
    let mut temp = tempfile::Builder::new()
        .prefix(".operations-")
        .tempfile_in(dir)
        .map_err(write_error)?;
    let bytes = serde_json::to_vec(ops).map_err(|e| write_error(io::Error::other(e)))?;
    temp.write_all(&bytes)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(write_error)?;
    temp.persist(path).map_err(|e| write_error(e.error))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_no_operations_and_a_bad_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path());
        assert!(load(&file).unwrap().is_empty());
        save(&file, &[]).unwrap();
        assert!(load(&file).unwrap().is_empty());
        fs::write(&file, "{").unwrap();
        assert!(matches!(load(&file), Err(PersistError::Parse { .. })));
        assert!(load_or_set_aside(&file).unwrap().is_empty());
        assert!(!file.exists());
        assert_eq!(
            fs::read_to_string(file.with_extension("json.bad")).unwrap(),
            "{"
        );
    }
}

//! The local side of a transfer: a file's SHA-256, or its first bytes', in one pass on the
//! blocking pool, reading large blocks. Errors name the path.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::files::digest::{Hasher, Sha256};

use super::ClientError;

/// Bytes read at a time, for hashing and for upload bodies.
pub const BLOCK: usize = 1 << 20;

/// The length of the regular file at `path` and the SHA-256 of its first `limit` bytes (all of
/// them when `None`). The hasher is returned unfinished so that a download can go on from there.
pub async fn hash(path: &Path, limit: Option<u64>) -> Result<(u64, Hasher), ClientError> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || hash_blocking(&owned, limit))
        .await
        .unwrap_or_else(|e| Err(read_error(path.to_owned(), io::Error::other(e))))
}

/// The SHA-256 of the whole file at `path`, and its length.
pub async fn digest(path: &Path) -> Result<(u64, Sha256), ClientError> {
    let (len, hasher) = hash(path, None).await?;
    Ok((len, hasher.finish()))
}

fn hash_blocking(path: &PathBuf, limit: Option<u64>) -> Result<(u64, Hasher), ClientError> {
    let fail = |source| read_error(path.clone(), source);
    let file = File::open(path).map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    if !meta.is_file() {
        return Err(ClientError::NotAFile { path: path.clone() });
    }
    let mut reader = file.take(limit.unwrap_or(u64::MAX));
    let mut hasher = Hasher::new();
    let len = hasher.read_from(&mut reader).map_err(fail)?;
    if limit.is_some_and(|limit| len < limit) {
        return Err(fail(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file became shorter while being read",
        )));
    }
    Ok((len, hasher))
}

pub fn read_error(path: PathBuf, source: io::Error) -> ClientError {
    ClientError::ReadLocal { path, source }
}

pub fn write_error(path: &Path, source: io::Error) -> ClientError {
    ClientError::WriteLocal {
        path: path.to_owned(),
        source,
    }
}

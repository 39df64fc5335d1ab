//! Sending a stored file (issue #3): the response body reads the open file in blocks, on the
//! async worker when the block is in the page cache and on the blocking pool when it is not.
//!
//! `preadv2(RWF_NOWAIT)` reads only what the page cache holds and never waits for the disk, so
//! a cached file (the common case: a firmware image many children fetch) is read and sent by
//! the same thread while the block is still in that core's cache; a block that needs the disk is
//! read by `spawn_blocking` instead, so async workers never wait on I/O. Blocks are recycled:
//! a download holds a few blocks whatever the file's size. The file was opened before the
//! response started: a file replaced meanwhile is still sent whole, as it was.

use std::fs::File;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use rustix::io::ReadWriteFlags;
use tokio::task::JoinHandle;

use super::counters::{Counters, InFlight};

/// Bytes read at a time: small enough to stay in a core's L2 cache between the read and the
/// socket write.
const BLOCK: usize = 256 << 10;
/// Blocks kept for reuse per download.
const SPARE: usize = 8;

/// Blocks whose bytes were sent, ready to be read into again.
type Spares = Arc<Mutex<Vec<Vec<u8>>>>;
/// A block read on the blocking pool, and how many of its bytes are the file's.
type DiskRead = JoinHandle<io::Result<(Vec<u8>, usize)>>;

/// The bytes `start..start + len` of `file`, as a body stream.
pub fn stream(file: File, start: u64, len: u64, counters: Arc<Counters>) -> Blocks {
    Blocks {
        file: Arc::new(file),
        pos: start,
        end: start + len,
        spares: Arc::default(),
        pending: None,
        nowait: true,
        _in_flight: counters.download(),
        counters,
    }
}

/// The response body: a `Stream` of blocks of the file.
pub struct Blocks {
    file: Arc<File>,
    pos: u64,
    end: u64,
    spares: Spares,
    /// A block being read from the disk on the blocking pool.
    pending: Option<DiskRead>,
    /// False once `preadv2(RWF_NOWAIT)` proved unusable here (a kernel before 4.14, a seccomp
    /// filter): every block is then read on the blocking pool.
    nowait: bool,
    counters: Arc<Counters>,
    _in_flight: InFlight,
}

/// A block handed to the socket; back to the spares when the socket is done with it.
struct Sent {
    buf: Vec<u8>,
    len: usize,
    spares: Spares,
}

impl AsRef<[u8]> for Sent {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Sent {
    fn drop(&mut self) {
        let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        if spares.len() < SPARE {
            spares.push(std::mem::take(&mut self.buf));
        }
    }
}

impl Blocks {
    fn block(&self) -> Vec<u8> {
        let spare = self.spares.lock().unwrap_or_else(|e| e.into_inner()).pop();
        spare.unwrap_or_else(|| vec![0; BLOCK])
    }

    fn sent(&mut self, buf: Vec<u8>, n: usize) -> Poll<Option<io::Result<Bytes>>> {
        if n == 0 {
            self.pos = self.end;
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file became shorter while being sent",
            ))));
        }
        self.pos += n as u64;
        self.counters.sent(n as u64);
        if self.pos >= self.end {
            self.counters.served();
        }
        let sent = Sent {
            buf,
            len: n,
            spares: self.spares.clone(),
        };
        Poll::Ready(Some(Ok(Bytes::from_owner(sent))))
    }
}

impl Stream for Blocks {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(pending) = &mut self.pending {
            let result = ready!(Pin::new(pending).poll(cx));
            self.pending = None;
            return match result {
                Ok(Ok((buf, n))) => self.sent(buf, n),
                Ok(Err(e)) => {
                    self.pos = self.end;
                    Poll::Ready(Some(Err(e)))
                }
                Err(e) => {
                    self.pos = self.end;
                    Poll::Ready(Some(Err(io::Error::other(e))))
                }
            };
        }
        if self.pos >= self.end {
            return Poll::Ready(None);
        }
        let want = usize::try_from(self.end - self.pos).map_or(BLOCK, |left| left.min(BLOCK));
        let mut buf = self.block();
        if self.nowait {
            let cached = rustix::io::preadv2(
                &*self.file,
                &mut [IoSliceMut::new(&mut buf[..want])],
                self.pos,
                ReadWriteFlags::NOWAIT,
            );
            match cached {
                Ok(n) => return self.sent(buf, n),
                // Not (all) in the page cache: read it where waiting is allowed.
                Err(rustix::io::Errno::AGAIN) => {}
                // No RWF_NOWAIT here; a real read error shows again in the blocking read.
                Err(_) => self.nowait = false,
            }
        }
        let file = self.file.clone();
        let pos = self.pos;
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let n = file.read_at(&mut buf[..want], pos)?;
            Ok((buf, n))
        }));
        self.poll_next(cx)
    }
}

//! Sending a stored file (issue #3): a reader thread reads the open file from an offset in large
//! blocks and hands them to the response body through a small queue, so a download holds a few
//! MiB at most whatever the file's size, and the async workers never wait on the disk. The file
//! was opened before the response started: a file replaced meanwhile is still sent whole, as it
//! was. A client that goes away closes the queue, which ends the thread.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

use super::counters::Counters;

/// Bytes read at a time. Large blocks keep the per-block cost (a queue hand-over, a wake-up)
/// small next to the copy itself.
const BLOCK: u64 = 1 << 20;
/// Blocks read ahead of the socket.
const AHEAD: usize = 2;

/// The bytes `start..start + len` of `file`, as a body stream.
pub fn stream(file: File, start: u64, len: u64, counters: Arc<Counters>) -> Blocks {
    let (tx, rx) = mpsc::channel(AHEAD);
    let in_flight = counters.download();
    tokio::task::spawn_blocking(move || {
        let _in_flight = in_flight;
        if read(file, start, len, &tx, &counters) {
            counters.served();
        }
    });
    Blocks { rx }
}

/// Reads and queues; true when every byte was handed over.
fn read(
    mut file: File,
    start: u64,
    len: u64,
    tx: &mpsc::Sender<io::Result<Bytes>>,
    counters: &Counters,
) -> bool {
    if let Err(e) = file.seek(SeekFrom::Start(start)) {
        let _ = tx.blocking_send(Err(e));
        return false;
    }
    let mut left = len;
    while left > 0 {
        let want = left.min(BLOCK);
        let mut buf = Vec::with_capacity(want as usize);
        match (&mut file).take(want).read_to_end(&mut buf) {
            Ok(0) => {
                let _ = tx.blocking_send(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file became shorter while being sent",
                )));
                return false;
            }
            Ok(n) => {
                left -= n as u64;
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return false;
                }
                counters.sent(n as u64);
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return false;
            }
        }
    }
    true
}

/// The receiving end: a `Stream` of blocks for the response body.
pub struct Blocks {
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl Stream for Blocks {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

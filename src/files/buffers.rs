//! The buffers of one upload: a few fixed-size blocks that go round between the request body and
//! the writer and hasher threads, instead of a fresh allocation per block. A block is shared by
//! both threads and comes home when the last of them lets go of it, so an upload holds at most
//! `count × size` bytes whatever its length, and its memory is allocated once (glibc keeps
//! blocks freed on another thread in that thread's arena, which made RSS grow by tens of MiB
//! during a 1 GiB upload before this pool).

use std::ops::Deref;
use std::sync::Arc;

use tokio::sync::mpsc;

/// Hands out blocks, making up to `count` of them, then waiting for one to come home.
pub struct Pool {
    home: mpsc::Sender<Vec<u8>>,
    returned: mpsc::Receiver<Vec<u8>>,
    made: usize,
    count: usize,
    size: usize,
}

/// A full block, shared between its readers; back to its pool when the last one drops it.
pub struct Block {
    data: Vec<u8>,
    home: mpsc::Sender<Vec<u8>>,
}

impl Pool {
    pub fn new(count: usize, size: usize) -> Pool {
        let (home, returned) = mpsc::channel(count.max(1));
        Pool {
            home,
            returned,
            made: 0,
            count,
            size,
        }
    }

    /// The block size.
    pub fn size(&self) -> usize {
        self.size
    }

    /// An empty block with `size()` bytes of capacity.
    pub async fn take(&mut self) -> Vec<u8> {
        if let Ok(block) = self.returned.try_recv() {
            return block;
        }
        if self.made < self.count {
            self.made += 1;
            return Vec::with_capacity(self.size);
        }
        // The pool holds a sender itself, so this waits rather than ending.
        match self.returned.recv().await {
            Some(block) => block,
            None => Vec::with_capacity(self.size),
        }
    }

    /// Shares a filled block with the threads that read it.
    pub fn share(&self, data: Vec<u8>) -> Arc<Block> {
        Arc::new(Block {
            data,
            home: self.home.clone(),
        })
    }
}

impl Deref for Block {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        let mut data = std::mem::take(&mut self.data);
        data.clear();
        // Full only if the pool is gone or over-filled: then the block is simply freed.
        let _ = self.home.try_send(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blocks_come_home_when_their_last_reader_drops_them() {
        let mut pool = Pool::new(2, 16);
        let mut a = pool.take().await;
        a.extend_from_slice(b"abc");
        let a_ptr = a.as_ptr();
        let shared = pool.share(a);
        let second_reader = shared.clone();
        assert_eq!(&**shared, b"abc");
        let b = pool.take().await;
        assert_eq!(b.capacity(), 16);
        drop(shared);
        // One reader still holds it: the pool is exhausted until it lets go.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), pool.take()).await;
        assert!(waiting.is_err());
        drop(second_reader);
        let again = pool.take().await;
        assert_eq!(
            (again.len(), again.as_ptr()),
            (0, a_ptr),
            "the same block, emptied"
        );
        drop(b);
    }
}

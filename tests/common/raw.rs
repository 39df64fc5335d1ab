//! Raw HTTP/1.1 over a TCP socket, for what a well-behaved client cannot send: paths with `..`
//! or `%2e%2e` left as they are (reqwest normalizes them), bodies sent in parts, clients that
//! disappear mid-upload. Every read has a timeout.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed answer: status, lower-case header pairs, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One connection.
pub struct Conn {
    stream: TcpStream,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect within 10 s")
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Conn { stream }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    /// Sends a request head; `extra` are whole header lines without CRLF.
    pub async fn head(&mut self, method: &str, target: &str, extra: &[&str]) {
        let mut head = format!("{method} {target} HTTP/1.1\r\nhost: test\r\n");
        for line in extra {
            head.push_str(line);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        self.send(head.as_bytes()).await;
    }

    /// Reads one answer (a `Content-Length` body, or none for 1xx/204/304 and `head_only`).
    pub async fn answer(&mut self, head_only: bool) -> Answer {
        tokio::time::timeout(TIMEOUT, self.read_answer(head_only))
            .await
            .expect("an answer within 10 s")
    }

    async fn read_answer(&mut self, head_only: bool) -> Answer {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed before an answer: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        if status == 100 {
            buf.drain(..head_end);
            assert!(buf.is_empty(), "pipelined data after 100 Continue");
            return Box::pin(self.read_answer(head_only)).await;
        }
        let len: usize = if head_only || status == 204 || status == 304 {
            0
        } else {
            headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0)
        };
        let mut body = buf[head_end..].to_vec();
        while body.len() < len {
            let mut chunk = vec![0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed inside the body");
            body.extend_from_slice(&chunk[..n]);
        }
        Answer {
            status,
            headers,
            body,
        }
    }
}

/// One request on a fresh connection, body included, and its answer.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    extra: &[&str],
    body: &[u8],
) -> Answer {
    let mut conn = Conn::open(addr).await;
    let length = format!("content-length: {}", body.len());
    let mut lines = extra.to_vec();
    if !body.is_empty() {
        lines.push(&length);
    }
    conn.head(method, target, &lines).await;
    conn.send(body).await;
    conn.answer(method == "HEAD").await
}

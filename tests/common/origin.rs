//! A remote HTTP origin for the downloader's tests: hyper on `127.0.0.1:0`, serving one file at
//! any path, with `ETag` and `Last-Modified`, `Range: bytes=<n>-` and `If-Range`.
//!
//! It records every request ([`Seen`]) and counts whole downloads (200 answers sent in full), and
//! it can be told to misbehave: cut or stall the first answer with a body after so many bytes
//! (or cut every one),
//! answer 500 a number of times, answer 404, send no `ETag`, no `Content-Length`, or ignore
//! ranges. A cut answer declares its full `Content-Length` and ends early, so hyper flushes what
//! was sent and closes the connection: the client has exactly those bytes. Everything stops when
//! the [`Origin`] is dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, ACCEPT_RANGES, CONTENT_RANGE, ETAG, LAST_MODIFIED};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The file's `Last-Modified`, always sent.
pub const MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";
/// The file's `ETag`, unless [`Origin::without_etag`].
pub const TAG: &str = "\"fw-1\"";
/// Where [`Origin::url`] points (any path serves the file).
pub const PATH: &str = "/files/fw.bin";

/// One request the origin answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub status: u16,
}

/// How the first answer with a body ends early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Break {
    /// After `n` body bytes, the connection is closed.
    Cut(usize),
    /// After `n` body bytes, nothing more is sent, and the connection stays open.
    Stall(usize),
}

struct State {
    body: Bytes,
    etag: bool,
    length: bool,
    ranges: bool,
    not_found: bool,
    errors: u32,
    first_break: Option<Break>,
    /// The break applies to every answer with a body, not just the first.
    break_every: bool,
    seen: Vec<Seen>,
    full: usize,
}

pub struct Origin {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    /// Serves `body` on a fresh port, behaving well until told otherwise.
    pub async fn start(body: impl Into<Bytes>) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("cannot bind the origin's listener");
        let addr = listener.local_addr().expect("the origin's address");
        let state = Arc::new(Mutex::new(State {
            body: body.into(),
            etag: true,
            length: true,
            ranges: true,
            not_found: false,
            errors: 0,
            first_break: None,
            break_every: false,
            seen: Vec::new(),
            full: 0,
        }));
        let task = tokio::spawn(accept(listener, state.clone()));
        Origin { addr, state, task }
    }

    /// `http://127.0.0.1:<port>/files/fw.bin`.
    pub fn url(&self) -> String {
        self.url_at(PATH)
    }

    /// The URL of `path` (starting with `/`) on this origin; it serves the same file.
    pub fn url_at(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The first answer with a body closes the connection after `n` of its bytes.
    pub fn cut_first_after(&self, n: usize) {
        self.lock().first_break = Some(Break::Cut(n));
    }

    /// Every answer with a body closes the connection after `n` of its bytes.
    pub fn cut_every_after(&self, n: usize) {
        let mut state = self.lock();
        state.first_break = Some(Break::Cut(n));
        state.break_every = true;
    }

    /// The first answer with a body sends `n` of its bytes, then nothing, without closing.
    pub fn stall_first_after(&self, n: usize) {
        self.lock().first_break = Some(Break::Stall(n));
    }

    /// The next `n` requests are answered 500.
    pub fn fail_next(&self, n: u32) {
        self.lock().errors = n;
    }

    /// Every request is answered 404 from now on.
    pub fn not_found(&self) {
        self.lock().not_found = true;
    }

    /// No `ETag`: `Last-Modified` is the only validator.
    pub fn without_etag(&self) {
        self.lock().etag = false;
    }

    /// No `Content-Length`: bodies are sent chunked. (A cut chunked body would end cleanly,
    /// so do not combine with [`Origin::cut_first_after`].)
    pub fn without_length(&self) {
        self.lock().length = false;
    }

    /// `Range` is ignored: every answer is a 200 with the whole file.
    pub fn ignore_ranges(&self) {
        self.lock().ranges = false;
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    pub fn request_count(&self) -> usize {
        self.lock().seen.len()
    }

    /// 200 answers sent whole (a cut or stalled one is not counted).
    pub fn full_downloads(&self) -> usize {
        self.lock().full
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn accept(listener: TcpListener, state: Arc<Mutex<State>>) {
    // Owned here, so that aborting this task drops every connection too.
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        connections.spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = answer(&state, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

fn answer(state: &Mutex<State>, request: &Request<Incoming>) -> Response<OriginBody> {
    let header = |name| {
        request
            .headers()
            .get(name)
            .map(|v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let range = header("range");
    let if_range = header("if-range");
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    let response = state.respond(request.method(), range.as_deref(), if_range.as_deref());
    state.seen.push(Seen {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        range,
        if_range,
        status: response.status().as_u16(),
    });
    response
}

impl State {
    fn respond(
        &mut self,
        method: &Method,
        range: Option<&str>,
        if_range: Option<&str>,
    ) -> Response<OriginBody> {
        if method != Method::GET {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "GET only");
        }
        if self.not_found {
            return plain(StatusCode::NOT_FOUND, "no such file");
        }
        if self.errors > 0 {
            self.errors -= 1;
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "try again later");
        }
        let len = self.body.len();
        let current = |v: &str| v == MODIFIED || (self.etag && v == TAG);
        let start = range
            .filter(|_| self.ranges && if_range.is_none_or(current))
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok());
        let mut response = match start {
            Some(start) if start >= len => {
                let mut r = plain(StatusCode::RANGE_NOT_SATISFIABLE, "");
                r.headers_mut()
                    .insert(CONTENT_RANGE, value(&format!("bytes */{len}")));
                r
            }
            Some(start) => {
                let mut r = self.body_from(start);
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                r.headers_mut().insert(
                    CONTENT_RANGE,
                    value(&format!("bytes {start}-{}/{len}", len - 1)),
                );
                r
            }
            None => {
                let r = self.body_from(0);
                if r.body().data.as_ref().map_or(0, Bytes::len) == len {
                    self.full += 1;
                }
                r
            }
        };
        let headers = response.headers_mut();
        headers.insert(LAST_MODIFIED, value(MODIFIED));
        if self.etag {
            headers.insert(ETAG, value(TAG));
        }
        if self.ranges {
            headers.insert(ACCEPT_RANGES, value("bytes"));
        }
        response
    }

    /// A 200 with the file from byte `start`, broken as told if it is the first with a body.
    fn body_from(&mut self, start: usize) -> Response<OriginBody> {
        let rest = self.body.slice(start..);
        let declared = self.length.then_some(rest.len() as u64);
        let broken = if self.break_every {
            self.first_break
        } else {
            self.first_break.take()
        };
        let (data, stall) = match broken {
            Some(Break::Cut(n)) if n < rest.len() => (rest.slice(..n), false),
            Some(Break::Stall(n)) if n < rest.len() => (rest.slice(..n), true),
            _ => (rest, false),
        };
        Response::new(OriginBody {
            data: (!data.is_empty()).then_some(data),
            declared,
            stall,
        })
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<OriginBody> {
    let data = Bytes::from_static(text.as_bytes());
    let mut response = Response::new(OriginBody {
        declared: Some(data.len() as u64),
        data: (!data.is_empty()).then_some(data),
        stall: false,
    });
    *response.status_mut() = status;
    response
}

fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("a valid header value")
}

/// A body of one frame. Its size, when declared, goes into `Content-Length` even if the frame is
/// shorter: hyper then closes the connection after sending it (a cut). A stalled body never
/// ends.
pub struct OriginBody {
    data: Option<Bytes>,
    declared: Option<u64>,
    stall: bool,
}

impl Body for OriginBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        match this.data.take() {
            Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            None if this.stall => Poll::Pending,
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && !self.stall
    }

    fn size_hint(&self) -> SizeHint {
        self.declared
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

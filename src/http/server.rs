//! The HTTP server's accept loop (issue #3 "TLS"): connections in, HTTP/1.1 out, with TLS when
//! an acceptor is given.
//!
//! warp 0.4 has no TLS and keeps its accept machinery private, so this loop replaces
//! `warp::serve(..).incoming(..)`: it accepts on the listener `http::bind` made (accepted sockets
//! inherit its `TCP_NODELAY`), spawns one task per connection, and there runs the TLS handshake
//! (bounded by [`HANDSHAKE_TIMEOUT`]) and hyper's HTTP/1.1 connection with keep-alive and a
//! header read timeout. A failed accept (EMFILE…) is logged and retried after a growing pause.
//! On shutdown it stops accepting, abandons handshakes, closes idle keep-alive connections and
//! waits for the requests in flight; the caller bounds that wait (`app`'s grace period).
//!
//! Not here: what is served (the service comes in ready-made) and what the TLS settings are
//! (`tls`).

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The longest a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a client may take to send a request's headers; idle keep-alive connections
/// are closed after this too.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The pause after a failed accept doubles from the first value up to the second, and resets on
/// the next accepted connection: the failure (out of file descriptors) lasts until others close.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));
/// How long the requests in flight get to finish after shutdown; then the connections still
/// open are dropped (a client that stopped reading a response, such as a change stream whose
/// socket is full, would hold the shutdown up for ever).
const DRAIN: Duration = Duration::from_secs(2);

type BoxError = Box<dyn StdError + Send + Sync>;

/// Serves `service` on every connection accepted on `listener`, through `tls` when given,
/// until `shutdown` is cancelled; returns once the requests in flight have been answered, or
/// after [`DRAIN`], dropping the connections still busy.
pub async fn run<S, B>(
    listener: TcpListener,
    service: S,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let graceful = GracefulShutdown::new();
    let drained = CancellationToken::new();
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF.0;
                let task = connection(
                    stream,
                    peer,
                    tls.clone(),
                    service.clone(),
                    graceful.watcher(),
                    shutdown.clone(),
                );
                let drained = drained.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = task => {}
                        () = drained.cancelled() => {
                            tracing::debug!(%peer, "dropped a connection still busy at shutdown");
                        }
                    }
                });
            }
            // The peer gave up before we took its connection: nothing to wait for.
            Err(e) if is_connection_error(&e) => {
                tracing::debug!("a connection was aborted before it was accepted: {e}");
            }
            Err(e) => {
                tracing::warn!("cannot accept connections: {e}; retrying in {backoff:?}");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        drained.cancel();
    }
}

/// One connection, in its own task: the handshake, then HTTP until either side closes it or
/// the graceful shutdown has let its last request finish.
async fn connection<S, B>(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    service: S,
    watcher: Watcher,
    shutdown: CancellationToken,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let Some(acceptor) = tls else {
        return http(stream, peer, service, watcher).await;
    };
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let stream = tokio::select! {
        result = handshake => match result {
            Ok(Ok(stream)) => stream,
            // A client that does not trust us, or that we do not trust, or that speaks plain
            // HTTP: the client's problem, and possibly frequent.
            Ok(Err(e)) => {
                tracing::debug!(%peer, "TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out after {HANDSHAKE_TIMEOUT:?}");
                return;
            }
        },
        // No request has started yet: nothing to finish.
        () = shutdown.cancelled() => return,
    };
    http(stream, peer, service, watcher).await;
}

async fn http<I, S, B>(io: I, peer: SocketAddr, service: S, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let connection = http1::Builder::new()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    // Resets, timeouts and malformed requests are the client's business.
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(%peer, "HTTP connection ended: {e}");
    }
}

/// Errors of `accept` that concern one connection only, not the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;

    use hyper::service::service_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{oneshot, Mutex};

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    /// Reads one answer, up to and including `body`.
    async fn read_answer(stream: &mut TcpStream, body: &str) -> String {
        let mut answer = Vec::new();
        let mut chunk = [0u8; 1024];
        while !answer.ends_with(body.as_bytes()) {
            let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
                .await
                .expect("an answer within 10 s")
                .expect("the answer is read");
            assert_ne!(n, 0, "closed before the answer was complete");
            answer.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// Reads until the peer closes the connection.
    async fn read_to_close(stream: &mut TcpStream) -> String {
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
            .await
            .expect("the server closes the connection within 10 s")
            .expect("the answer is read");
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_closes_idle_connections_and_finishes_requests_in_flight() {
        let listener = crate::http::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        // `/slow` tells the test it has started, then answers when the test releases it.
        let (started_tx, started_rx) = oneshot::channel::<()>();
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let hooks = Arc::new(Mutex::new(Some((started_tx, release_rx))));
        let service = service_fn(move |request: Request<Incoming>| {
            let hooks = hooks.clone();
            async move {
                if request.uri().path() == "/slow" {
                    if let Some((started, release)) = hooks.lock().await.take() {
                        let _ = started.send(());
                        let _ = release.await;
                    }
                }
                Ok::<_, Infallible>(Response::new(format!("done {}", request.uri().path())))
            }
        });
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(run(listener, service, None, shutdown.clone()));

        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET /fast HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_answer(&mut idle, "done /fast").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        let mut busy = TcpStream::connect(addr).await.unwrap();
        busy.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::timeout(WAIT, started_rx)
            .await
            .expect("the slow request starts within 10 s")
            .unwrap();

        shutdown.cancel();
        // The idle keep-alive connection is closed without another answer.
        assert_eq!(read_to_close(&mut idle).await, "");
        // The request in flight is answered whole, and its connection then closed.
        release_tx.send(()).unwrap();
        let answer = read_to_close(&mut busy).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\ndone /slow"), "{answer}");
        tokio::time::timeout(WAIT, server)
            .await
            .expect("the server stops within 10 s")
            .unwrap();
        let refused = TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}

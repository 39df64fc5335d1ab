//! The HTTP server (spec/twin.md §5, §6): the thin-edge.io entity API under `/te/v1/entities`,
//! our state routes, `/healthz` and `/readyz`.
//!
//! This module binds the listener, assembles the warp filters and serves them until shutdown.
//! The filters only extract what a request carries (method, raw path, query, headers, body); the
//! handlers in `entities` and `probes` decide what it means. Paths under `/te/v1/entities/` are
//! parsed by hand (`path`), because warp neither percent-decodes segments nor matches empty ones.
//! Statuses of errors are chosen in `error` only; body limits and parsers are in `body`. The
//! twin itself is reached through a [`TwinHandle`], which also applies the write and loading gates.
//! The accept loop (connections, HTTP/1.1, graceful shutdown) is `server`'s, HTTPS settings are
//! `tls`'s: warp 0.4 has no TLS.
//!
//! The file transfer routes (`/te/v1/files`, issue #3) are in `files`, over a [`Store`].
//! The live twin page (`/` and its assets under `/ui/`, issue #7) is served by `page`.

mod body;
mod changes;
mod entities;
mod error;
mod files;
mod operations;
mod page;
mod path;
mod probes;
mod server;
#[cfg(test)]
mod tests;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;

use futures_util::{Stream, StreamExt};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use warp::http::header::{HeaderValue, CONTENT_TYPE};
use warp::http::StatusCode;
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Buf, Filter, Rejection, Reply};

use crate::files::Store;
use crate::metrics::Metrics;
use crate::ops::task::OpsHandle;
use crate::twin::feed::ChangeFeed;
use crate::twin::TwinHandle;

/// Pending connections the kernel queues before we accept them.
const BACKLOG: i32 = 1024;

/// Binds the HTTP listener. `TCP_NODELAY` is set on the listening socket, which accepted sockets
/// inherit on Linux: without it every small keep-alive response waits ~40 ms for delayed ACKs.
/// Must be called inside a tokio runtime.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// What the routes serve: the twin, the file store, the operations, the metrics and the change
/// feed; cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub twin: TwinHandle,
    pub files: Store,
    pub ops: OpsHandle,
    pub metrics: Metrics,
    pub feed: ChangeFeed,
}

/// Serves the routes on `listener`, over HTTPS only when `tls` is given, until `shutdown` is
/// cancelled, then lets the requests in flight finish (change streams end at once).
pub async fn serve(
    services: Services,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, scheme, "http server listening");
    }
    let service = hyper_util::service::TowerToHyperService::new(warp::service(routes(
        services,
        shutdown.clone(),
    )));
    server::run(listener, service, tls, shutdown).await;
    tracing::info!("http server stopped");
}

/// All routes, with every rejection turned into a JSON error, and every response counted in
/// `metrics`. Change streams end when `shutdown` is cancelled.
pub fn routes(
    services: Services,
    shutdown: CancellationToken,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let Services {
        twin,
        files,
        ops,
        metrics,
        feed,
    } = services;
    let counted = metrics.clone();
    let answered = files::routes(files.clone())
        .or(operations(twin.clone(), ops.clone()))
        .unify()
        .or(scrape(
            metrics,
            twin.clone(),
            files,
            ops.clone(),
            feed.clone(),
        ))
        .unify()
        .or(change_stream(feed, shutdown))
        .unify()
        .or(api(twin, ops))
        .unify()
        .or(page::page())
        .unify()
        .recover(error::recover)
        .unify();
    warp::path::full()
        .and(answered)
        .map(move |path: FullPath, response: Response| {
            counted.response(path.as_str(), response.status().as_u16());
            response
        })
}

/// Any method on `/te/v1/changes` (issue #7).
fn change_stream(
    feed: ChangeFeed,
    shutdown: CancellationToken,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("te" / "v1" / "changes")
        .and(warp::any().map(move || feed.clone()))
        .and(warp::method())
        .and(raw_query())
        .and(warp::header::headers_cloned())
        .and(warp::any().map(move || shutdown.clone()))
        .then(changes::changes)
}

/// Any method on `/metrics` (issue #7); only GET and HEAD are allowed.
fn scrape(
    metrics: Metrics,
    twin: TwinHandle,
    files: Store,
    ops: OpsHandle,
    feed: ChangeFeed,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("metrics")
        .and(warp::method())
        .then(move |method: warp::http::Method| {
            let (metrics, twin, files, ops, feed) = (
                metrics.clone(),
                twin.clone(),
                files.clone(),
                ops.clone(),
                feed.clone(),
            );
            async move { probes::metrics(method, &metrics, &twin, &files, &ops, &feed).await }
        })
}

/// All routes without the final `recover`, for composing with other route sets.
pub fn api(
    twin: TwinHandle,
    ops: OpsHandle,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    entities(twin.clone(), ops)
        .or(states(twin.clone()))
        .unify()
        .or(healthz())
        .unify()
        .or(readyz(twin))
        .unify()
}

/// Any method on `/te/v1/entities` and `/te/v1/entities/{path}` (§5.2, §5.3). Methods are
/// matched by the handler, so that a wrong one is a 405 with the resource's `Allow` list.
fn entities(
    twin: TwinHandle,
    ops: OpsHandle,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("te" / "v1" / "entities" / ..)
        .and(with_twin(twin))
        .and(warp::any().map(move || ops.clone()))
        .and(warp::method())
        .and(warp::path::full())
        .and(raw_query())
        .and(warp::header::headers_cloned())
        .and(request_body())
        .then(entities::entities)
}

/// Any method on `/te/v1/operations` and `/te/v1/operations/<cmd_id>` (issue #5).
fn operations(
    twin: TwinHandle,
    ops: OpsHandle,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let with_ops = {
        let ops = ops.clone();
        warp::any().map(move || ops.clone())
    };
    let collection = warp::path!("te" / "v1" / "operations")
        .and(with_twin(twin))
        .and(with_ops.clone())
        .and(warp::method())
        .and(raw_query())
        .and(warp::header::headers_cloned())
        .and(request_body())
        .then(operations::collection);
    let item = warp::path!("te" / "v1" / "operations" / String)
        .and(with_ops)
        .and(warp::method())
        .then(|id, ops, method| operations::item(ops, method, id));
    collection.or(item).unify()
}

/// Any method on `/te/v1/state` (§6.2); only GET and HEAD are allowed.
fn states(twin: TwinHandle) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("te" / "v1" / "state")
        .and(with_twin(twin))
        .and(warp::method())
        .and(raw_query())
        .then(entities::states)
}

/// Any method on `/healthz` (§6.3); only GET and HEAD are allowed.
fn healthz() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("healthz")
        .and(warp::method())
        .then(probes::healthz)
}

/// Any method on `/readyz` (§6.3); only GET and HEAD are allowed.
fn readyz(twin: TwinHandle) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("readyz")
        .and(with_twin(twin))
        .and(warp::method())
        .then(probes::readyz)
}

/// A response with a JSON body; every body this server sends is JSON (§5.1).
fn json(status: StatusCode, body: String) -> Response {
    let mut res = body.into_response();
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

fn with_twin(twin: TwinHandle) -> impl Filter<Extract = (TwinHandle,), Error = Infallible> + Clone {
    warp::any().map(move || twin.clone())
}

/// The raw query string, `None` when the request has none.
fn raw_query() -> impl Filter<Extract = (Option<String>,), Error = Infallible> + Clone {
    warp::query::raw()
        .map(Some)
        .or(warp::any().map(|| None))
        .unify()
}

/// The body as an unread stream: handlers that need it read it under the limit of `body`.
fn request_body() -> impl Filter<Extract = (body::Body,), Error = Rejection> + Clone {
    warp::body::stream().map(boxed_body)
}

fn boxed_body<S, B>(stream: S) -> body::Body
where
    S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf,
{
    Box::pin(stream.map(|chunk| chunk.map(|mut b| b.copy_to_bytes(b.remaining()))))
}

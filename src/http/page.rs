//! The live twin page of issue #7: `GET /` and its assets under `/ui/`, embedded in the binary.
//!
//! This module owns only the serving of the static files in `page/` (their paths, media types,
//! caching and security headers). What the page shows and how it follows the twin is the page's
//! own business (`page/app.js`): it reads the state, history and change-stream routes of the API
//! like any other client. Scripts and styles are separate files so that the strict
//! `Content-Security-Policy` below needs no `'unsafe-inline'`; nothing is loaded from elsewhere
//! (a gateway may have no internet).

use warp::http::header::{
    HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, X_CONTENT_TYPE_OPTIONS,
};
use warp::http::{Method, StatusCode};
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::error::ApiError;

const ALLOW: &str = "GET, HEAD";

/// Only this origin's scripts, styles, images and connections; no framing, no `<base>`.
const CSP: &str = "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
    /// A strong validator of `body`, computed at compile time.
    etag: u64,
}

impl Asset {
    const fn new(path: &'static str, content_type: &'static str, body: &'static str) -> Asset {
        Asset {
            path,
            content_type,
            body,
            etag: fnv1a(body.as_bytes()),
        }
    }
}

const ASSETS: [Asset; 4] = [
    Asset::new(
        "/",
        "text/html; charset=utf-8",
        include_str!("page/index.html"),
    ),
    Asset::new(
        "/ui/app.js",
        "text/javascript; charset=utf-8",
        include_str!("page/app.js"),
    ),
    Asset::new(
        "/ui/app.css",
        "text/css; charset=utf-8",
        include_str!("page/app.css"),
    ),
    Asset::new(
        "/ui/icon.svg",
        "image/svg+xml",
        include_str!("page/icon.svg"),
    ),
];

/// Any method on `/` and on the asset paths under `/ui/`; only GET and HEAD are allowed. Other
/// paths are not this filter's: it rejects them as not found.
pub fn page() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path::full()
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and_then(
            |path: FullPath, method: Method, headers: HeaderMap| async move {
                match ASSETS.iter().find(|asset| asset.path == path.as_str()) {
                    Some(asset) => Ok(serve(asset, &method, &headers)),
                    None => Err(warp::reject::not_found()),
                }
            },
        )
}

/// The asset, or 304 when the client's copy is current. Every answer is revalidated
/// (`no-cache`): the paths are fixed, so an upgraded agent must not leave an old script cached.
fn serve(asset: &Asset, method: &Method, headers: &HeaderMap) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return ApiError::MethodNotAllowed { allow: ALLOW }.into_response();
    }
    let etag = format!("\"{:016x}\"", asset.etag);
    let fresh = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == etag || t == "*")
        });
    let mut response = if fresh {
        let mut response = Response::new(Default::default());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let mut response = Response::new(asset.body.into());
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        response
    };
    let h = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        h.insert(ETAG, value);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    response
}

/// FNV-1a, 64 bits: enough to tell two versions of a file apart, and usable in a `const`.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn send(method: &str, path: &str) -> warp::http::Response<bytes::Bytes> {
        warp::test::request()
            .method(method)
            .path(path)
            .reply(&page().recover(super::super::error::recover))
            .await
    }

    fn header<'a>(res: &'a warp::http::Response<bytes::Bytes>, name: &str) -> &'a str {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn the_page_is_html_with_a_strict_content_security_policy() {
        let res = send("GET", "/").await;
        assert_eq!(res.status(), 200);
        assert_eq!(header(&res, "content-type"), "text/html; charset=utf-8");
        assert!(header(&res, "content-security-policy").starts_with("default-src 'self';"));
        assert!(!header(&res, "content-security-policy").contains("unsafe"));
        assert_eq!(header(&res, "x-content-type-options"), "nosniff");
        assert_eq!(header(&res, "cache-control"), "no-cache");
        let body = std::str::from_utf8(res.body()).unwrap();
        assert!(body.starts_with("<!doctype html>"), "{body}");
        assert!(body.contains(r#"src="/ui/app.js""#) && body.contains(r#"href="/ui/app.css""#));
    }

    #[tokio::test]
    async fn the_assets_have_their_media_types_and_an_etag() {
        for (path, media_type) in [
            ("/ui/app.js", "text/javascript; charset=utf-8"),
            ("/ui/app.css", "text/css; charset=utf-8"),
            ("/ui/icon.svg", "image/svg+xml"),
        ] {
            let res = send("GET", path).await;
            assert_eq!(res.status(), 200, "{path}");
            assert_eq!(header(&res, "content-type"), media_type, "{path}");
            assert_eq!(header(&res, "x-content-type-options"), "nosniff", "{path}");
            let etag = header(&res, "etag");
            assert!(etag.len() == 18 && etag.starts_with('"'), "{path}: {etag}");
            assert!(!res.body().is_empty(), "{path}");
        }
    }

    #[tokio::test]
    async fn a_current_copy_is_answered_304_without_a_body() {
        let first = send("GET", "/ui/app.js").await;
        let etag = header(&first, "etag").to_owned();
        for tags in [etag.clone(), format!("\"other\", W/{etag}"), "*".to_owned()] {
            let res = warp::test::request()
                .path("/ui/app.js")
                .header("if-none-match", &tags)
                .reply(&page())
                .await;
            assert_eq!(res.status(), 304, "{tags}");
            assert!(res.body().is_empty());
            assert_eq!(header(&res, "etag"), etag);
        }
        let res = warp::test::request()
            .path("/ui/app.js")
            .header("if-none-match", "\"0000000000000000\"")
            .reply(&page())
            .await;
        assert_eq!(res.status(), 200);
    }

    #[tokio::test]
    async fn head_answers_like_get() {
        let get = send("GET", "/ui/app.css").await;
        let head = send("HEAD", "/ui/app.css").await;
        assert_eq!(head.status(), 200);
        assert_eq!(header(&head, "content-type"), header(&get, "content-type"));
        assert_eq!(header(&head, "etag"), header(&get, "etag"));
    }

    #[tokio::test]
    async fn other_methods_are_405_with_the_allowed_ones() {
        for (method, path) in [
            ("POST", "/"),
            ("PUT", "/ui/app.js"),
            ("DELETE", "/ui/app.css"),
        ] {
            let res = send(method, path).await;
            assert_eq!(res.status(), 405, "{method} {path}");
            assert_eq!(header(&res, "allow"), "GET, HEAD");
            assert_eq!(header(&res, "content-type"), "application/json");
        }
    }

    #[tokio::test]
    async fn other_paths_are_not_the_pages() {
        for path in [
            "/ui/",
            "/ui/app.js/x",
            "/ui/missing.js",
            "/index.html",
            "/ui",
        ] {
            assert_eq!(send("GET", path).await.status(), 404, "{path}");
        }
    }

    #[test]
    fn the_validator_tells_versions_apart() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}

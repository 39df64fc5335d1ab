//! What a `files` command addresses on an agent: a [`Remote`], either a path in the file store
//! (`child1/firmware_update/fw.bin`, resolved against a [`Base`] URL) or a full `http(s)://` URL
//! taken as it is.
//!
//! Pure: parsing and URL building only. A store path obeys the server's own rules
//! ([`StorePath`]): no leading `/`, no `..`, no NUL or `\`, not the store's bookkeeping directory;
//! `.` and empty segments are dropped. It is checked here because `.` and `..` segments would
//! otherwise be resolved away by the URL parser and address another route. Each segment is
//! percent-encoded when the URL is built, so any file name survives the trip.

use std::fmt;
use std::str::FromStr;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::Url;

use crate::files::StorePath;

/// The route of the file transfer service, under a base URL.
pub const FILES_ROUTE: &str = "te/v1/files";

/// What stays as it is in a path segment: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A file on an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// A path in the file store, resolved against a [`Base`]: valid for [`StorePath`] and
    /// normalized (`a/b.bin`), as [`StorePath::as_str`] gives it.
    Path(String),
    /// A full URL, used as it is.
    Url(Url),
}

/// The agent's URL, under which the file transfer route lives: `http(s)://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base(Url);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRemote {
    #[error("invalid URL {text:?}: {reason}")]
    Url { text: String, reason: String },
    #[error("invalid URL {0:?}: only http and https are supported")]
    Scheme(String),
    #[error("invalid remote path {0:?}: expected a relative path in the file store, without `..`, like child1/firmware_update/fw.bin")]
    Path(String),
}

impl Remote {
    /// The URL of this file, on `base` for a store path. `None`: a store path without a base.
    pub fn url(&self, base: Option<&Base>) -> Option<Url> {
        match self {
            Remote::Url(url) => Some(url.clone()),
            Remote::Path(path) => base.map(|base| base.file_url(path)),
        }
    }

    /// Whether a base URL is needed to reach this file.
    pub fn needs_base(&self) -> bool {
        matches!(self, Remote::Path(_))
    }
}

impl FromStr for Remote {
    type Err = InvalidRemote;

    fn from_str(text: &str) -> Result<Remote, InvalidRemote> {
        if has_scheme(text) {
            return parse_http_url(text).map(Remote::Url);
        }
        let encoded: String = text.split('/').map(encode).collect::<Vec<_>>().join("/");
        match StorePath::parse(&encoded) {
            Ok(path) if !path.is_root() => Ok(Remote::Path(path.as_str().to_owned())),
            _ => Err(InvalidRemote::Path(text.to_owned())),
        }
    }
}

impl fmt::Display for Remote {
    /// The normalized store path, or the URL: parsing it again gives the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Remote::Path(path) => f.write_str(path),
            Remote::Url(url) => f.write_str(url.as_str()),
        }
    }
}

impl Base {
    /// The URL of `path` (a normalized store path) in the file store:
    /// `<base>/te/v1/files/<encoded segments>`.
    pub fn file_url(&self, path: &str) -> Url {
        let segments: Vec<&str> = path.split('/').collect();
        self.route_url(FILES_ROUTE, &segments)
    }

    /// `<base>/<route>/<encoded segments>` (`route` is taken as it is: `te/v1/operations`).
    pub fn route_url(&self, route: &str, segments: &[&str]) -> Url {
        let mut url = self.0.clone();
        let prefix = url.path().trim_end_matches('/').to_owned();
        let mut path = format!("{prefix}/{route}");
        for segment in segments {
            path.push('/');
            path.push_str(&encode(segment));
        }
        url.set_path(&path);
        url
    }
}

impl FromStr for Base {
    type Err = InvalidRemote;

    fn from_str(text: &str) -> Result<Base, InvalidRemote> {
        let url = parse_http_url(text)?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(InvalidRemote::Url {
                text: text.to_owned(),
                reason: "a base URL has no query or fragment".to_owned(),
            });
        }
        Ok(Base(url))
    }
}

impl fmt::Display for Base {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// `scheme://…`: a URL. No store path needs `://` in it.
fn has_scheme(text: &str) -> bool {
    text.contains("://")
}

/// An absolute `http` or `https` URL with a host (also the operations' downloader's rule).
pub(crate) fn parse_http_url(text: &str) -> Result<Url, InvalidRemote> {
    let url = Url::parse(text).map_err(|e| InvalidRemote::Url {
        text: text.to_owned(),
        reason: e.to_string(),
    })?;
    match url.scheme() {
        "http" | "https" if url.has_host() => Ok(url),
        "http" | "https" => Err(InvalidRemote::Url {
            text: text.to_owned(),
            reason: "no host".to_owned(),
        }),
        _ => Err(InvalidRemote::Scheme(text.to_owned())),
    }
}

fn encode(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(text: &str) -> Base {
        text.parse().unwrap()
    }

    fn url_of(remote: &str, base_text: &str) -> String {
        let remote: Remote = remote.parse().unwrap();
        remote.url(Some(&base(base_text))).unwrap().to_string()
    }

    #[test]
    fn a_store_path_becomes_a_url_under_the_files_route_with_each_segment_encoded() {
        assert_eq!(
            url_of("child1/firmware_update/fw.bin", "http://127.0.0.1:8000"),
            "http://127.0.0.1:8000/te/v1/files/child1/firmware_update/fw.bin"
        );
        assert_eq!(
            url_of("c 1/fw#2?.bin", "https://gw.local:8000/"),
            "https://gw.local:8000/te/v1/files/c%201/fw%232%3F.bin"
        );
        assert_eq!(
            url_of("dir/été%.bin", "http://gw/proxy/"),
            "http://gw/proxy/te/v1/files/dir/%C3%A9t%C3%A9%25.bin"
        );
    }

    #[test]
    fn a_store_path_is_normalized_and_prints_back_as_it_parses() {
        for (text, shown) in [
            ("a/b.bin", "a/b.bin"),
            ("a//./b.bin/", "a/b.bin"),
            ("x y/%41", "x y/%41"),
        ] {
            let remote: Remote = text.parse().unwrap();
            assert_eq!(remote.to_string(), shown);
            assert_eq!(shown.parse::<Remote>().unwrap(), remote);
            assert!(remote.needs_base());
        }
    }

    #[test]
    fn paths_the_store_refuses_are_refused_before_any_request() {
        for text in [
            "",
            "/",
            "/etc/passwd",
            "a/../b",
            "..",
            "a\\b",
            "a\0b",
            ".edge-agent/x",
            "./",
        ] {
            assert_eq!(
                text.parse::<Remote>(),
                Err(InvalidRemote::Path(text.to_owned())),
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_full_url_is_taken_as_it_is_and_needs_no_base() {
        let text = "https://gw:8000/te/v1/files/child1/fw.bin";
        let remote: Remote = text.parse().unwrap();
        assert!(!remote.needs_base());
        assert_eq!(remote.to_string(), text);
        assert_eq!(remote.url(None).unwrap().as_str(), text);
        assert_eq!(remote.to_string().parse::<Remote>().unwrap(), remote);
    }

    #[test]
    fn only_http_urls_with_a_host_are_accepted() {
        assert_eq!(
            "ftp://gw/x".parse::<Remote>(),
            Err(InvalidRemote::Scheme("ftp://gw/x".into()))
        );
        assert!(matches!(
            "http://".parse::<Remote>(),
            Err(InvalidRemote::Url { .. })
        ));
        assert!(matches!(
            "http://gw:99999/".parse::<Base>(),
            Err(InvalidRemote::Url { .. })
        ));
        assert!(matches!(
            "http://gw/?q=1".parse::<Base>(),
            Err(InvalidRemote::Url { .. })
        ));
        assert_eq!(base("http://gw:1").to_string(), "http://gw:1/");
    }

    #[test]
    fn a_route_url_keeps_the_base_prefix_and_encodes_each_segment() {
        assert_eq!(
            base("http://gw:8000")
                .route_url("te/v1/operations", &[])
                .as_str(),
            "http://gw:8000/te/v1/operations"
        );
        assert_eq!(
            base("https://gw/proxy/")
                .route_url("te/v1/operations", &["cli-1/x y"])
                .as_str(),
            "https://gw/proxy/te/v1/operations/cli-1%2Fx%20y"
        );
    }

    #[test]
    fn a_store_path_without_a_base_has_no_url() {
        let remote: Remote = "a/b".parse().unwrap();
        assert_eq!(remote.url(None), None);
    }
}

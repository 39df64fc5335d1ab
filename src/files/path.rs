//! What a file-transfer URL addresses: the raw path after `/te/v1/files/` turned into a
//! [`StorePath`], a relative path that cannot leave the store's root (issue #3).
//!
//! Pure: no I/O. The text is percent-decoded first and checked after, so `%2e%2e` is `..` and
//! `%2F` is a `/`. Refused: a decoded path that is not UTF-8, holds NUL, starts with `/`, or has a
//! `..` segment; and any path into the store's own bookkeeping directory ([`RESERVED`]). Empty
//! and `.` segments are dropped, so a trailing `/` is ignored. Symlinks are the store's business:
//! only the file system knows where one leads.

use std::fmt;
use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;

/// The top-level name the store keeps its temp files and digests under; never addressable.
pub const RESERVED: &str = ".edge-agent";

/// The longest name of one segment, and of a whole path (Linux's `NAME_MAX`, and `PATH_MAX`
/// less room for the store's own root).
const NAME_MAX: usize = 255;
const PATH_MAX: usize = 3072;

/// A validated path inside the store: segments joined by `/`, none of them empty, `.` or `..`.
/// The empty path is the root itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StorePath {
    rel: String,
    /// The decoded path as the client sent it, for messages.
    shown: String,
}

/// A path that would leave the root, or cannot name a file; shown as the client sent it, decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid file path: {0:?}")]
pub struct InvalidPath(pub String);

impl StorePath {
    /// Parses the raw, still percent-encoded path after the route's prefix.
    pub fn parse(raw: &str) -> Result<StorePath, InvalidPath> {
        let bytes: Vec<u8> = percent_decode_str(raw).collect();
        let decoded = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                return Err(InvalidPath(
                    String::from_utf8_lossy(e.as_bytes()).into_owned(),
                ))
            }
        };
        let invalid = || InvalidPath(decoded.clone());
        if decoded.starts_with('/') || decoded.contains('\0') || decoded.contains('\\') {
            return Err(invalid());
        }
        let mut segments = Vec::new();
        for segment in decoded.split('/') {
            match segment {
                "" | "." => {}
                ".." => return Err(invalid()),
                // Longer names than the file system takes fail only at the rename, after the
                // whole body: refused up front.
                s if s.len() > NAME_MAX => return Err(invalid()),
                s => segments.push(s),
            }
        }
        if decoded.len() > PATH_MAX {
            return Err(invalid());
        }
        if segments.first() == Some(&RESERVED) {
            return Err(invalid());
        }
        Ok(StorePath {
            rel: segments.join("/"),
            shown: decoded,
        })
    }

    /// The normalized relative path, `a/b.bin`; empty for the root.
    pub fn as_str(&self) -> &str {
        &self.rel
    }

    /// The path as the client wrote it (decoded), for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    pub fn is_root(&self) -> bool {
        self.rel.is_empty()
    }

    /// The last segment; empty for the root.
    pub fn file_name(&self) -> &str {
        self.rel.rsplit('/').next().unwrap_or_default()
    }

    /// Where this path lives under `root`.
    pub fn under(&self, root: &Path) -> PathBuf {
        if self.rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&self.rel)
        }
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Component;

    fn ok(raw: &str) -> String {
        StorePath::parse(raw).unwrap().as_str().to_owned()
    }

    fn refused(raw: &str) -> String {
        StorePath::parse(raw).unwrap_err().to_string()
    }

    #[test]
    fn paths_are_percent_decoded_and_may_hold_slashes() {
        assert_eq!(
            ok("child1/firmware_update/fw-1.2.bin"),
            "child1/firmware_update/fw-1.2.bin"
        );
        assert_eq!(ok("child1%2Ffw%20v2.bin"), "child1/fw v2.bin");
        assert_eq!(ok("caf%C3%A9.txt"), "café.txt");
        assert_eq!(ok("a+b"), "a+b", "a + in a path is a plus");
    }

    #[test]
    fn a_trailing_slash_and_empty_or_dot_segments_are_ignored() {
        assert_eq!(ok("child1/fw.bin/"), "child1/fw.bin");
        assert_eq!(ok("a//b/./c"), "a/b/c");
        assert!(StorePath::parse("").unwrap().is_root());
        assert!(StorePath::parse("./").unwrap().is_root());
    }

    #[test]
    fn paths_that_escape_the_root_are_refused_as_sent() {
        assert_eq!(
            refused("../etc/passwd"),
            r#"Invalid file path: "../etc/passwd""#
        );
        assert_eq!(
            refused("a/%2e%2e/%2e%2e/x"),
            r#"Invalid file path: "a/../../x""#
        );
        assert_eq!(
            refused("%2Fetc/passwd"),
            r#"Invalid file path: "/etc/passwd""#
        );
        assert_eq!(
            refused("a/..%2F..%2Fb"),
            r#"Invalid file path: "a/../../b""#
        );
        assert_eq!(refused("a%00b"), r#"Invalid file path: "a\0b""#);
        assert_eq!(refused("a%5C..%5Cb"), r#"Invalid file path: "a\\..\\b""#);
        assert_eq!(refused("%FF%FE"), "Invalid file path: \"\u{FFFD}\u{FFFD}\"");
        assert_eq!(refused("a/.."), r#"Invalid file path: "a/..""#);
    }

    #[test]
    fn names_longer_than_the_file_system_takes_are_refused() {
        assert!(StorePath::parse(&"a".repeat(255)).is_ok());
        assert!(StorePath::parse(&"a".repeat(256)).is_err());
        let deep = vec!["abcdefgh"; 400].join("/");
        assert!(StorePath::parse(&deep).is_err());
    }

    #[test]
    fn the_stores_own_directory_is_not_addressable() {
        assert!(StorePath::parse(".edge-agent/tmp/x").is_err());
        assert!(StorePath::parse("./.edge-agent").is_err());
        assert_eq!(ok("a/.edge-agent"), "a/.edge-agent");
        assert_eq!(ok(".edge-agent-x"), ".edge-agent-x");
    }

    #[test]
    fn a_path_knows_its_file_name_and_place() {
        let p = StorePath::parse("child1/op/fw.bin").unwrap();
        assert_eq!(p.file_name(), "fw.bin");
        assert_eq!(
            p.under(Path::new("/root")),
            Path::new("/root/child1/op/fw.bin")
        );
        assert_eq!(p.shown(), "child1/op/fw.bin");
        assert_eq!(p.to_string(), "child1/op/fw.bin");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Whatever the client sends, an accepted path is a plain relative path under the root.
        #[test]
        fn random_paths_never_resolve_outside_the_root(
            raw in proptest::collection::vec(
                prop_oneof![
                    Just("/".to_owned()), Just("..".to_owned()), Just(".".to_owned()),
                    Just("%2e".to_owned()), Just("%2E".to_owned()), Just("%2f".to_owned()),
                    Just("%2F".to_owned()), Just("%00".to_owned()), Just("%5c".to_owned()),
                    Just("\\".to_owned()), Just(RESERVED.to_owned()), Just("%".to_owned()),
                    "[a-z.%0-9]{1,4}", any::<String>(),
                ],
                0..12,
            ).prop_map(|parts| parts.concat())
        ) {
            if let Ok(path) = StorePath::parse(&raw) {
                let root = Path::new("/srv/files");
                let full = path.under(root);
                prop_assert!(full.starts_with(root));
                for c in Path::new(path.as_str()).components() {
                    prop_assert!(matches!(c, Component::Normal(_)), "{raw:?} gave {c:?}");
                }
                prop_assert!(!path.as_str().contains('\0'));
                prop_assert!(Path::new(path.as_str()).components().next()
                    != Some(Component::Normal(RESERVED.as_ref())));
            }
        }
    }
}

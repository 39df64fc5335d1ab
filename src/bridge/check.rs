//! The checks of a cloud that need the file system, done before anything is rendered: the CA,
//! the certificate and its key (readable, matching, not expired; a warning within 30 days of
//! expiry), the password file. mosquitto accepts a file with any of these wrong and fails only
//! when the bridge connects (spec/bridges.md §4), so edge-agent refuses them itself.
//!
//! Each problem is a [`Finding`] naming the YAML key, like the configuration's own problems.

use std::fmt;
use std::io::Read;
use std::path::Path;

use chrono::{DateTime, Utc};

use super::credentials::{self, CaKind, CredentialError};
use super::plan::chain;
use super::render::Ca;
use crate::config::{CloudAuth, CloudConfig};

/// The largest password file read.
const MAX_PASSWORD_BYTES: u64 = 4096;

/// A problem (or a warning) with one key of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Like `bridge.clouds[0].auth.key_file`; empty for the whole bridge section.
    pub key: String,
    pub message: String,
}

impl Finding {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key.is_empty() {
            true => f.write_str(&self.message),
            false => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// What the checks learnt, for the renderer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    pub ca: Option<Ca>,
    pub password: Option<String>,
    pub warnings: Vec<Finding>,
}

/// Checks the files `cloud` names, at time `now`. Blocking file I/O.
pub fn check_cloud(cloud: &CloudConfig, now: DateTime<Utc>) -> Result<Checked, Vec<Finding>> {
    let mut problems = Vec::new();
    let mut checked = Checked::default();
    if let Some(path) = &cloud.ca {
        match credentials::check_ca(path) {
            Ok(CaKind::File) => checked.ca = Some(Ca::File(path.clone())),
            Ok(CaKind::Dir { hashed }) => {
                if !hashed {
                    checked.warnings.push(Finding::new(
                        cloud.key("ca"),
                        format!(
                            "the directory {} has no hashed certificate names (<hash>.0), so \
                             mosquitto will find no CA in it: run `openssl rehash {}`",
                            path.display(),
                            path.display()
                        ),
                    ));
                }
                checked.ca = Some(Ca::Dir(path.clone()));
            }
            Err(e) => problems.push(Finding::new(cloud.key("ca"), chain(&e))),
        }
    }
    match &cloud.auth {
        CloudAuth::None => {}
        CloudAuth::Certificate {
            cert_file,
            key_file,
        } => match credentials::check_identity(cert_file, key_file, now) {
            Ok(identity) => {
                for (key, path) in [("auth.cert_file", cert_file), ("auth.key_file", key_file)] {
                    if root_only(path) {
                        checked.warnings.push(Finding::new(
                            cloud.key(key),
                            format!(
                                "{} is readable by root only, but mosquitto started as root reads \
                                 it when the bridge connects, after switching to its own user: \
                                 make it readable by that user (e.g. chgrp mosquitto, chmod 0640)",
                                path.display()
                            ),
                        ));
                    }
                }
                if identity.expires_soon {
                    checked.warnings.push(Finding::new(
                        cloud.key("auth.cert_file"),
                        format!(
                            "the certificate {} expires on {}: renew it",
                            cert_file.display(),
                            identity.not_after.format("%Y-%m-%dT%H:%M:%SZ")
                        ),
                    ));
                }
            }
            Err(e) => {
                let key = match about_key(&e, key_file) {
                    true => "auth.key_file",
                    false => "auth.cert_file",
                };
                problems.push(Finding::new(cloud.key(key), chain(&e)));
            }
        },
        CloudAuth::Password { password_file, .. } => match read_password(password_file) {
            Ok(password) => checked.password = Some(password),
            Err(message) => problems.push(Finding::new(cloud.key("auth.password_file"), message)),
        },
    }
    if problems.is_empty() {
        Ok(checked)
    } else {
        Err(problems)
    }
}

/// True for a file owned by root that neither its group nor others may read.
fn root_only(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o044 == 0)
}

/// True when an identity error is the key file's fault rather than the certificate's.
fn about_key(e: &CredentialError, key_file: &Path) -> bool {
    use CredentialError as E;
    match e {
        E::KeyMismatch { .. } | E::NoKey { .. } | E::UnsupportedKey { .. } => true,
        E::Read { path, .. }
        | E::IsDirectory { path }
        | E::NotAFile { path }
        | E::TooLarge { path }
        | E::BadPem { path, .. } => path == key_file,
        _ => false,
    }
}

/// The password: the file's first line, which must be the whole file but for a final newline.
fn read_password(path: &Path) -> Result<String, String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PASSWORD_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_PASSWORD_BYTES {
        return Err(format!(
            "{} is larger than {MAX_PASSWORD_BYTES} bytes: not a password file",
            path.display()
        ));
    }
    let password = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if password.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    if password.chars().any(char::is_control) {
        return Err(format!(
            "{} must hold the password on one line, without control characters",
            path.display()
        ));
    }
    if password.trim() != password {
        return Err(format!(
            "the password in {} starts or ends with spaces, which mosquitto would not send",
            path.display()
        ));
    }
    Ok(password.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_owned_file_closed_to_group_and_others_is_root_only() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.key");
        std::fs::write(&path, "key").unwrap();
        let owned_by_root = std::fs::metadata(&path).unwrap().uid() == 0;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(root_only(&path), owned_by_root);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(!root_only(&path));
        assert!(!root_only(&dir.path().join("missing")));
    }

    #[test]
    fn a_password_is_one_line_with_an_optional_final_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        assert_eq!(read_password(&file("a", "s3cret\n")), Ok("s3cret".into()));
        assert_eq!(
            read_password(&file("b", "s3 cret\r\n")),
            Ok("s3 cret".into())
        );
        for (name, text) in [
            ("empty", ""),
            ("newline", "\n"),
            ("two", "a\nb\n"),
            ("space", " a"),
            ("nul", "a\0b"),
        ] {
            assert!(read_password(&file(name, text)).is_err(), "{name}");
        }
        let big = file("big", &"x".repeat(5000));
        assert!(read_password(&big).unwrap_err().contains("larger than"));
        let missing = read_password(&dir.path().join("missing")).unwrap_err();
        assert!(missing.starts_with("cannot read"), "{missing}");
    }
}

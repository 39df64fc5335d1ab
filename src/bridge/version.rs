//! The installed mosquitto's version, read from `mosquitto -h`, and what it means for a bridge
//! file: which options exist (spec/bridges.md §1) and which bridge defects to warn about (§6).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `mosquitto -h` may take: it prints its usage and exits at once.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The most output read from it; a wrong program must not fill the memory.
const MAX_OUTPUT: u64 = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// What is assumed when the version cannot be read: Debian 12's.
    pub const ASSUMED: Version = Version::new(2, 0, 11);

    /// `local_cleansession` exists from 2.0 on.
    pub fn has_local_cleansession(self) -> bool {
        self >= Version::new(2, 0, 0)
    }

    /// `bridge_outgoing_retain` exists from 1.5 on (written for AWS only).
    pub fn has_outgoing_retain(self) -> bool {
        self >= Version::new(1, 5, 0)
    }

    /// A known bridge defect of this version, to warn about.
    pub fn defect(self) -> Option<&'static str> {
        if self < Version::new(2, 0, 15) {
            Some(
                "before 2.0.15 a bridge whose cloud cannot be reached at all does not publish \
                 its 0 health notification, so the bridge service may show up while it is down",
            )
        } else if self == Version::new(2, 0, 15) {
            Some("2.0.15 sometimes does not start a bridge")
        } else {
            None
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The program to run for `bin`: a bare name is looked up in `PATH`, then in the system
/// directories Debian installs the broker in (`/usr/sbin`), which a normal user's `PATH` lacks.
pub fn locate(bin: &Path) -> PathBuf {
    if bin.components().count() != 1 {
        return bin.to_owned();
    }
    let in_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(bin).is_file()))
        .unwrap_or(false);
    if in_path {
        return bin.to_owned();
    }
    ["/usr/sbin", "/usr/local/sbin", "/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(bin))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| bin.to_owned())
}

/// Reads `mosquitto version 2.0.11` out of the usage text.
pub fn parse(output: &str) -> Option<Version> {
    let rest = &output[output.find("mosquitto version ")? + "mosquitto version ".len()..];
    let token = rest.split_whitespace().next()?;
    let mut parts = token.split('.').map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some(Version::new(major, minor, patch))
}

#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error("cannot run {} (bridge.mosquitto_bin)", bin.display())]
    Spawn {
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} -h did not finish within {}s", bin.display(), TIMEOUT.as_secs())]
    Timeout { bin: PathBuf },
    #[error("{} -h printed no mosquitto version", bin.display())]
    NoVersion { bin: PathBuf },
}

/// Runs `<bin> -h` (which exits with status 3 after printing its usage) and reads the version.
/// Blocking: call it from a blocking thread in async code.
pub fn detect(bin: &Path) -> Result<Version, VersionError> {
    let mut child = crate::service::unmanaged(&mut Command::new(locate(bin)))
        .arg("-h")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| VersionError::Spawn {
            bin: bin.to_owned(),
            source,
        })?;
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(out) = stdout {
            let _ = out.take(MAX_OUTPUT).read_to_string(&mut text);
        }
        text
    });
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < TIMEOUT => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(VersionError::Timeout {
                    bin: bin.to_owned(),
                });
            }
        }
    }
    let text = reader.join().unwrap_or_default();
    parse(&text).ok_or_else(|| VersionError::NoVersion {
        bin: bin.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_read_from_the_usage_text() {
        let usage = "mosquitto version 2.0.11\n\nmosquitto is an MQTT v5.0/v3.1.1/v3.1 broker.\n";
        assert_eq!(parse(usage), Some(Version::new(2, 0, 11)));
        assert_eq!(
            parse("mosquitto version 1.6.9\n"),
            Some(Version::new(1, 6, 9))
        );
        assert_eq!(
            parse("mosquitto version 2.1\n"),
            Some(Version::new(2, 1, 0))
        );
        assert_eq!(
            parse("mosquitto version 2.0.18-rc1"),
            Some(Version::new(2, 0, 18))
        );
        assert_eq!(parse("usage: cat"), None);
        assert_eq!(parse("mosquitto version x"), None);
    }

    #[test]
    fn options_and_defects_follow_the_version() {
        assert!(!Version::new(1, 6, 9).has_local_cleansession());
        assert!(Version::new(2, 0, 0).has_local_cleansession());
        assert!(Version::new(2, 0, 11)
            .defect()
            .unwrap()
            .contains("before 2.0.15"));
        assert!(Version::new(2, 0, 15)
            .defect()
            .unwrap()
            .contains("2.0.15 sometimes"));
        assert_eq!(Version::new(2, 0, 18).defect(), None);
    }

    #[test]
    fn a_bare_name_is_found_in_path_or_the_system_directories() {
        assert_eq!(locate(Path::new("/x/mosquitto")), Path::new("/x/mosquitto"));
        assert_eq!(locate(Path::new("./mosquitto")), Path::new("./mosquitto"));
        assert_eq!(
            locate(Path::new("no-such-program-here")),
            Path::new("no-such-program-here")
        );
        let found = locate(Path::new("mosquitto"));
        assert!(
            found == Path::new("mosquitto") || found.is_file(),
            "{}",
            found.display()
        );
    }

    #[test]
    fn the_installed_mosquitto_is_detected_and_a_wrong_program_is_an_error() {
        // CI installs mosquitto; the version is whatever Debian ships.
        let version = detect(Path::new("mosquitto")).unwrap();
        assert!(version.major >= 1, "{version}");
        assert!(matches!(
            detect(Path::new("/nonexistent/mosquitto")),
            Err(VersionError::Spawn { .. })
        ));
        assert!(matches!(
            detect(Path::new("true")),
            Err(VersionError::NoVersion { .. })
        ));
    }
}

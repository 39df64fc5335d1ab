//! Checks of the TLS material a bridge names (issue #4, "No injection"): CA files and
//! directories, and a client certificate with its key.
//!
//! mosquitto only opens these files when a bridge connects, after it has dropped privileges, so
//! a missing CA, a key that belongs to another certificate or an expired certificate passes
//! `bridge validate` and fails later, silently (spec/bridges.md §4). These functions find those
//! problems first. They read files and return typed errors naming the file; they know nothing
//! of YAML keys (the caller adds `bridge.clouds[N]...`) and never panic, whatever the files hold.
//! Whether the CA signs the cloud's certificate can only be seen by connecting: not checked here.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

/// A certificate that expires within this time is still accepted, with
/// [`Identity::expires_soon`] set so the caller can warn.
pub const EXPIRY_WARNING: TimeDelta = TimeDelta::days(30);

/// The largest file read as PEM. A system CA bundle is about 200 KB; anything far larger is not
/// TLS material and is not read into memory.
const MAX_PEM_BYTES: u64 = 4 * 1024 * 1024;

/// What a valid `ca` path is, which decides between `bridge_cafile` and `bridge_capath`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaKind {
    /// A file holding at least one certificate: `bridge_cafile`.
    File,
    /// A directory holding at least one certificate file: `bridge_capath`. OpenSSL looks
    /// certificates up there by subject hash, so without `<hash>.0` names (made by
    /// `openssl rehash`) it finds none: `hashed: false` is worth a warning.
    Dir { hashed: bool },
}

/// A client certificate that matches its key and is valid now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub not_after: DateTime<Utc>,
    /// The first common name of the subject, if it has one that is a string.
    pub subject_cn: Option<String>,
    /// It expires within [`EXPIRY_WARNING`].
    pub expires_soon: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is a directory, not a file", .path.display())]
    IsDirectory { path: PathBuf },
    #[error("{} is not a regular file", .path.display())]
    NotAFile { path: PathBuf },
    #[error("{} is larger than {MAX_PEM_BYTES} bytes, too large for TLS material", .path.display())]
    TooLarge { path: PathBuf },
    #[error("{} is not valid PEM: {reason}", .path.display())]
    BadPem { path: PathBuf, reason: &'static str },
    #[error("{} holds no PEM certificate", .path.display())]
    NoCertificate { path: PathBuf },
    #[error("certificate {index} in {} is not a valid X.509 certificate: {reason}", .path.display())]
    BadCertificate {
        path: PathBuf,
        /// 1 for the first certificate of the file.
        index: usize,
        reason: String,
    },
    #[error("the CA directory {} holds no PEM certificate file", .path.display())]
    NoCertificateInDir { path: PathBuf },
    #[error(
        "{} holds no PEM private key (PKCS#8, SEC1 EC or PKCS#1 RSA; encrypted keys are not supported)",
        .path.display()
    )]
    NoKey { path: PathBuf },
    #[error(
        "the key {} is not an RSA, ECDSA P-256/P-384 or Ed25519 key that edge-agent can check",
        .path.display()
    )]
    UnsupportedKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("the key {} does not match the certificate {}", .key.display(), .cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("the certificate {} expired on {}", .path.display(), rfc3339(.not_after))]
    Expired {
        path: PathBuf,
        not_after: DateTime<Utc>,
    },
    #[error("the certificate {} is not valid before {}", .path.display(), rfc3339(.not_before))]
    NotYetValid {
        path: PathBuf,
        not_before: DateTime<Utc>,
    },
}

/// Checks a `ca` path: a readable file with at least one certificate, or a readable directory
/// with at least one certificate file.
pub fn check_ca(path: &Path) -> Result<CaKind, CredentialError> {
    let meta = fs::metadata(path).map_err(|source| read_error(path, source))?;
    if meta.is_dir() {
        return check_ca_dir(path);
    }
    certificates(path)?;
    Ok(CaKind::File)
}

/// Checks a client certificate and its key: both readable PEM, the key is the one of the first
/// (leaf) certificate, and that certificate is valid at `now`.
pub fn check_identity(
    cert_file: &Path,
    key_file: &Path,
    now: DateTime<Utc>,
) -> Result<Identity, CredentialError> {
    let chain = certificates(cert_file)?;
    let Some(leaf_der) = chain.first() else {
        // `certificates` refuses a file without one; kept total rather than indexing.
        return Err(CredentialError::NoCertificate {
            path: cert_file.to_owned(),
        });
    };
    let leaf = parse_certificate(cert_file, 1, leaf_der)?;

    let key_bytes = read_pem_file(key_file)?;
    let key = match PrivateKeyDer::from_pem_slice(&key_bytes) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => {
            return Err(CredentialError::NoKey {
                path: key_file.to_owned(),
            })
        }
        Err(e) => return Err(bad_pem(key_file, &e)),
    };
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|source| {
        CredentialError::UnsupportedKey {
            path: key_file.to_owned(),
            source,
        }
    })?;
    // The key matches when the SubjectPublicKeyInfo it derives is the leaf's, byte for byte
    // (what rustls' `CertifiedKey::keys_match` does, but that one parses the certificate with
    // webpki, which refuses version 1 certificates that OpenSSL, so mosquitto, accepts).
    // ring's keys always know their public key.
    if signing_key.public_key().as_deref() != Some(leaf.spki.as_slice()) {
        return Err(CredentialError::KeyMismatch {
            key: key_file.to_owned(),
            cert: cert_file.to_owned(),
        });
    }

    if now < leaf.not_before {
        return Err(CredentialError::NotYetValid {
            path: cert_file.to_owned(),
            not_before: leaf.not_before,
        });
    }
    // RFC 5280 §4.1.2.5: the certificate is valid through its notAfter second, inclusive.
    if now > leaf.not_after {
        return Err(CredentialError::Expired {
            path: cert_file.to_owned(),
            not_after: leaf.not_after,
        });
    }
    Ok(Identity {
        not_after: leaf.not_after,
        subject_cn: leaf.subject_cn,
        expires_soon: leaf.not_after - now <= EXPIRY_WARNING,
    })
}

fn check_ca_dir(dir: &Path) -> Result<CaKind, CredentialError> {
    let entries = fs::read_dir(dir).map_err(|source| read_error(dir, source))?;
    let mut hashed = false;
    let mut found = false;
    // Unreadable entries and files that are not certificates are skipped, as OpenSSL does:
    // one usable certificate is enough to make the directory a CA path.
    for entry in entries.flatten() {
        let path = entry.path();
        if !fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        hashed |= is_subject_hash_name(&entry.file_name().to_string_lossy());
        found = found || certificates(&path).is_ok();
        if found && hashed {
            break;
        }
    }
    if !found {
        return Err(CredentialError::NoCertificateInDir {
            path: dir.to_owned(),
        });
    }
    Ok(CaKind::Dir { hashed })
}

/// `<8 hex digits>.<n>`, the name `openssl rehash` gives a certificate (`.r<n>` is a CRL).
fn is_subject_hash_name(name: &str) -> bool {
    let Some((hash, n)) = name.split_once('.') else {
        return false;
    };
    hash.len() == 8
        && hash.bytes().all(|b| b.is_ascii_hexdigit())
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
}

/// Every certificate of a PEM file, each one checked to parse as X.509; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, CredentialError> {
    let bytes = read_pem_file(path)?;
    let mut chain = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        let der = item.map_err(|e| bad_pem(path, &e))?;
        parse_certificate(path, chain.len() + 1, &der)?;
        chain.push(der);
    }
    if chain.is_empty() {
        return Err(CredentialError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

/// What `check_identity` needs from a certificate, owned so the DER can be dropped.
struct Leaf {
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    subject_cn: Option<String>,
    /// The DER SubjectPublicKeyInfo.
    spki: Vec<u8>,
}

fn parse_certificate(
    path: &Path,
    index: usize,
    der: &CertificateDer<'_>,
) -> Result<Leaf, CredentialError> {
    let bad = |reason: String| CredentialError::BadCertificate {
        path: path.to_owned(),
        index,
        reason,
    };
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
    let validity = cert.validity();
    let time = |t: &x509_parser::time::ASN1Time| {
        DateTime::from_timestamp(t.timestamp(), 0)
            .ok_or_else(|| bad(format!("its validity date {t} is out of range")))
    };
    let subject_cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    Ok(Leaf {
        not_before: time(&validity.not_before)?,
        not_after: time(&validity.not_after)?,
        subject_cn,
        spki: cert.public_key().raw.to_vec(),
    })
}

/// Reads a file meant to hold PEM, refusing directories, devices, FIFOs (which would block)
/// and anything larger than [`MAX_PEM_BYTES`].
fn read_pem_file(path: &Path) -> Result<Vec<u8>, CredentialError> {
    let meta = fs::metadata(path).map_err(|source| read_error(path, source))?;
    if meta.is_dir() {
        return Err(CredentialError::IsDirectory {
            path: path.to_owned(),
        });
    }
    if !meta.is_file() {
        return Err(CredentialError::NotAFile {
            path: path.to_owned(),
        });
    }
    let file = fs::File::open(path).map_err(|source| read_error(path, source))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| read_error(path, source))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(CredentialError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

fn read_error(path: &Path, source: io::Error) -> CredentialError {
    CredentialError::Read {
        path: path.to_owned(),
        source,
    }
}

/// pki-types' own messages print the offending line as a list of byte values: name the
/// problem instead.
fn bad_pem(path: &Path, error: &pem::Error) -> CredentialError {
    let reason = match error {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a section is not valid base64",
        pem::Error::SectionTooLarge => "a section is too large",
        _ => "it cannot be decoded",
    };
    CredentialError::BadPem {
        path: path.to_owned(),
        reason,
    }
}

fn rfc3339(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::process::Command;

    use tempfile::TempDir;

    /// Test TLS material made with the `openssl` command, like tests/common/certs.rs: a CA and
    /// certificates it signs with chosen validity dates (`openssl ca -startdate/-enddate`, since
    /// this OpenSSL 3.0 has no `x509 -not_before` and `-days` cannot go negative).
    struct Pki {
        dir: TempDir,
    }

    const CA_CONFIG: &str = "\
[ca]
default_ca = test_ca
[test_ca]
database = index.txt
serial = serial
new_certs_dir = issued
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
";

    const CLIENT_EXTENSIONS: &str = "basicConstraints=critical,CA:FALSE\n\
        keyUsage=critical,digitalSignature\n\
        extendedKeyUsage=clientAuth\n";

    impl Pki {
        fn new() -> Pki {
            let dir = tempfile::Builder::new()
                .prefix("edge-agent-credentials-")
                .tempdir()
                .expect("temp dir");
            let pki = Pki { dir };
            fs::write(pki.path("ca.cnf"), CA_CONFIG).expect("write ca.cnf");
            fs::write(pki.path("index.txt"), "").expect("write index.txt");
            fs::write(pki.path("serial"), "1000\n").expect("write serial");
            fs::create_dir(pki.path("issued")).expect("create issued/");
            pki.openssl(&[
                "req",
                "-x509",
                "-new",
                "-days",
                "2",
                "-subj",
                "/CN=edge-agent test CA",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
            ]);
            pki
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        /// A new P-256 key `<name>.key` (PKCS#8).
        fn ec_key(&self, name: &str) -> PathBuf {
            let key = format!("{name}.key");
            self.openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &key,
            ]);
            self.path(&key)
        }

        /// A version 3 client certificate `<name>.pem` for the key `<name>.key`, signed by the
        /// CA, valid from `start` to `end` (`YYYYMMDDHHMMSSZ`).
        fn cert(&self, name: &str, cn: &str, start: &str, end: &str) -> PathBuf {
            fs::write(self.path("client.ext"), CLIENT_EXTENSIONS).expect("write client.ext");
            self.sign(name, cn, start, end, &["-extfile", "client.ext"])
        }

        /// Like [`Pki::cert`] without extensions, which makes `openssl ca` issue version 1.
        fn cert_v1(&self, name: &str, cn: &str, start: &str, end: &str) -> PathBuf {
            self.sign(name, cn, start, end, &[])
        }

        fn sign(&self, name: &str, cn: &str, start: &str, end: &str, extra: &[&str]) -> PathBuf {
            let (key, csr, cert) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            let subject = format!("/CN={cn}");
            self.openssl(&["req", "-new", "-key", &key, "-subj", &subject, "-out", &csr]);
            let mut args = vec![
                "ca",
                "-batch",
                "-config",
                "ca.cnf",
                "-cert",
                "ca.pem",
                "-keyfile",
                "ca.key",
                "-in",
                &csr,
                "-out",
                &cert,
                "-startdate",
                start,
                "-enddate",
                end,
                "-notext",
            ];
            args.extend(extra);
            self.openssl(&args);
            self.path(&cert)
        }

        /// A P-256 key and a certificate valid from `start` to `end`.
        fn identity(&self, name: &str, start: &str, end: &str) -> (PathBuf, PathBuf) {
            let key = self.ec_key(name);
            (self.cert(name, "gw-001", start, end), key)
        }

        fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
            let path = self.path(name);
            fs::write(&path, contents).expect("write test file");
            path
        }

        fn openssl(&self, args: &[&str]) {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(self.dir.path())
                .output()
                .expect("cannot run openssl; install it: apt-get install -y openssl");
            assert!(
                output.status.success(),
                "openssl {} failed:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test date")
            .with_timezone(&Utc)
    }

    const NOW: &str = "2026-06-01T12:00:00Z";
    const LONG_AGO: &str = "20250101000000Z";
    const NEXT_YEAR: &str = "20270601000000Z";

    #[test]
    fn a_matching_valid_identity_is_accepted_with_its_common_name_and_end_date() {
        let pki = Pki::new();
        let (cert, key) = pki.identity("dev", LONG_AGO, NEXT_YEAR);
        let identity = check_identity(&cert, &key, at(NOW)).expect("valid identity");
        assert_eq!(
            identity,
            Identity {
                not_after: at("2027-06-01T00:00:00Z"),
                subject_cn: Some("gw-001".to_owned()),
                expires_soon: false,
            }
        );
    }

    #[test]
    fn an_rsa_identity_with_a_pkcs1_key_is_accepted() {
        let pki = Pki::new();
        pki.openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa8.key",
        ]);
        // `-traditional` writes `BEGIN RSA PRIVATE KEY`, the PKCS#1 form.
        pki.openssl(&["rsa", "-in", "rsa8.key", "-traditional", "-out", "rsa.key"]);
        let key_text = fs::read_to_string(pki.path("rsa.key")).expect("read rsa.key");
        assert!(key_text.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let cert = pki.cert("rsa", "rsa-device", LONG_AGO, NEXT_YEAR);
        let identity = check_identity(&cert, &pki.path("rsa.key"), at(NOW)).expect("valid");
        assert_eq!(identity.subject_cn.as_deref(), Some("rsa-device"));
    }

    #[test]
    fn a_version_1_certificate_is_checked_like_any_other() {
        let pki = Pki::new();
        let key = pki.ec_key("old");
        let cert = pki.cert_v1("old", "old-device", LONG_AGO, NEXT_YEAR);
        pki.openssl(&[
            "x509", "-in", "old.pem", "-noout", "-text", "-out", "old.txt",
        ]);
        let text = fs::read_to_string(pki.path("old.txt")).expect("read old.txt");
        assert!(text.contains("Version: 1 (0x0)"), "{text}");
        let identity = check_identity(&cert, &key, at(NOW)).expect("valid v1");
        assert_eq!(identity.subject_cn.as_deref(), Some("old-device"));
        let other = pki.ec_key("other");
        assert!(matches!(
            check_identity(&cert, &other, at(NOW)),
            Err(CredentialError::KeyMismatch { .. })
        ));
    }

    #[test]
    fn a_sec1_ec_key_is_accepted() {
        let pki = Pki::new();
        let (cert, key) = pki.identity("dev", LONG_AGO, NEXT_YEAR);
        pki.openssl(&["ec", "-in", "dev.key", "-out", "dev-sec1.key"]);
        let text = fs::read_to_string(pki.path("dev-sec1.key")).expect("read sec1 key");
        assert!(text.contains("BEGIN EC PRIVATE KEY"), "{text}");
        assert!(check_identity(&cert, &pki.path("dev-sec1.key"), at(NOW)).is_ok());
        assert!(check_identity(&cert, &key, at(NOW)).is_ok());
    }

    #[test]
    fn a_certificate_expiring_within_30_days_is_accepted_with_a_warning_flag() {
        let pki = Pki::new();
        let (cert, key) = pki.identity("dev", LONG_AGO, "20260611120000Z");
        let identity = check_identity(&cert, &key, at(NOW)).expect("still valid");
        assert!(identity.expires_soon);
        assert_eq!(identity.not_after, at("2026-06-11T12:00:00Z"));
    }

    #[test]
    fn an_expired_certificate_is_refused_with_its_end_date() {
        let pki = Pki::new();
        let (cert, key) = pki.identity("dev", LONG_AGO, "20260101000000Z");
        let err = check_identity(&cert, &key, at(NOW)).expect_err("expired");
        assert!(matches!(err, CredentialError::Expired { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "the certificate {} expired on 2026-01-01T00:00:00Z",
                cert.display()
            )
        );
    }

    #[test]
    fn a_certificate_not_valid_yet_is_refused() {
        let pki = Pki::new();
        let (cert, key) = pki.identity("dev", "20260701000000Z", NEXT_YEAR);
        let err = check_identity(&cert, &key, at(NOW)).expect_err("not yet valid");
        assert_eq!(
            err.to_string(),
            format!(
                "the certificate {} is not valid before 2026-07-01T00:00:00Z",
                cert.display()
            )
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let pki = Pki::new();
        let (cert, _) = pki.identity("dev", LONG_AGO, NEXT_YEAR);
        let other_key = pki.ec_key("other");
        let err = check_identity(&cert, &other_key, at(NOW)).expect_err("mismatch");
        assert_eq!(
            err.to_string(),
            format!(
                "the key {} does not match the certificate {}",
                other_key.display(),
                cert.display()
            )
        );
    }

    #[test]
    fn the_first_certificate_of_a_chain_file_is_the_one_the_key_must_match() {
        let pki = Pki::new();
        let (cert, key) = pki.identity("dev", LONG_AGO, NEXT_YEAR);
        let leaf = fs::read(&cert).expect("read leaf");
        let ca = fs::read(pki.path("ca.pem")).expect("read ca");
        let chain = pki.write("chain.pem", &[leaf.as_slice(), ca.as_slice()].concat());
        let reversed = pki.write("reversed.pem", &[ca.as_slice(), leaf.as_slice()].concat());
        assert!(check_identity(&chain, &key, at(NOW)).is_ok());
        let err = check_identity(&reversed, &key, at(NOW)).expect_err("CA first");
        assert!(
            matches!(err, CredentialError::KeyMismatch { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn missing_garbage_and_empty_files_are_refused_naming_the_file() {
        let pki = Pki::new();
        let (cert, key) = pki.identity("dev", LONG_AGO, NEXT_YEAR);
        let missing = pki.path("missing.pem");
        let garbage = pki.write("garbage.pem", b"\x00\xff\xfe not a certificate \n\x80");
        let empty = pki.write("empty.pem", b"");

        let err = check_identity(&missing, &key, at(NOW)).expect_err("missing cert");
        assert_eq!(
            err.to_string(),
            format!("cannot read {}", missing.display())
        );
        let source = std::error::Error::source(&err).expect("an io source");
        assert!(source.to_string().contains("No such file or directory"));

        for file in [&garbage, &empty] {
            let err = check_identity(file, &key, at(NOW)).expect_err("no certificate");
            assert_eq!(
                err.to_string(),
                format!("{} holds no PEM certificate", file.display())
            );
            let err = check_identity(&cert, file, at(NOW)).expect_err("no key");
            assert!(matches!(err, CredentialError::NoKey { .. }), "{err:?}");
            assert!(err
                .to_string()
                .starts_with(&format!("{} holds no PEM private key", file.display())));
        }
        let err = check_identity(&cert, &missing, at(NOW)).expect_err("missing key");
        assert!(matches!(err, CredentialError::Read { .. }), "{err:?}");
    }

    #[test]
    fn broken_pem_sections_are_refused_without_panicking() {
        let pki = Pki::new();
        let cases: [(&str, &[u8]); 4] = [
            ("no-end.pem", b"-----BEGIN CERTIFICATE-----\nMIIB\n"),
            (
                "bad-base64.pem",
                b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            ),
            (
                "not-der.pem",
                b"-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
            ),
            (
                "empty-section.pem",
                b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
            ),
        ];
        for (name, contents) in cases {
            let path = pki.write(name, contents);
            let err = check_ca(&path).expect_err(name);
            assert!(
                matches!(
                    err,
                    CredentialError::BadPem { .. } | CredentialError::BadCertificate { .. }
                ),
                "{name}: {err:?}"
            );
            assert!(err.to_string().contains(&path.display().to_string()));
        }
        let bad_key = pki.write(
            "bad.key",
            b"-----BEGIN PRIVATE KEY-----\naGVsbG8gd29ybGQ=\n-----END PRIVATE KEY-----\n",
        );
        let err = check_identity(&pki.path("ca.pem"), &bad_key, at(NOW)).expect_err("bad key");
        assert!(
            matches!(err, CredentialError::UnsupportedKey { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_directory_given_as_a_certificate_or_key_is_refused() {
        let pki = Pki::new();
        let (cert, key) = pki.identity("dev", LONG_AGO, NEXT_YEAR);
        let dir = pki.dir.path().to_owned();
        let err = check_identity(&dir, &key, at(NOW)).expect_err("dir as cert");
        assert_eq!(
            err.to_string(),
            format!("{} is a directory, not a file", dir.display())
        );
        let err = check_identity(&cert, &dir, at(NOW)).expect_err("dir as key");
        assert!(
            matches!(err, CredentialError::IsDirectory { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_device_file_is_refused_without_reading_it() {
        let err = check_ca(Path::new("/dev/zero")).expect_err("a device");
        assert_eq!(err.to_string(), "/dev/zero is not a regular file");
    }

    #[test]
    fn a_ca_file_with_a_certificate_is_a_file_ca() {
        let pki = Pki::new();
        assert_eq!(check_ca(&pki.path("ca.pem")).expect("ca"), CaKind::File);
        let err = check_ca(&pki.path("ca.key")).expect_err("a key is no CA");
        assert_eq!(
            err.to_string(),
            format!("{} holds no PEM certificate", pki.path("ca.key").display())
        );
        let missing = pki.path("nope.pem");
        let err = check_ca(&missing).expect_err("missing");
        assert_eq!(
            err.to_string(),
            format!("cannot read {}", missing.display())
        );
    }

    #[test]
    fn a_ca_directory_reports_whether_it_has_hashed_names() {
        let pki = Pki::new();
        let dir = pki.path("cas");
        fs::create_dir(&dir).expect("mkdir");
        fs::write(dir.join("README"), "not a certificate").expect("write");
        let err = check_ca(&dir).expect_err("no certificate yet");
        assert_eq!(
            err.to_string(),
            format!(
                "the CA directory {} holds no PEM certificate file",
                dir.display()
            )
        );

        fs::copy(pki.path("ca.pem"), dir.join("ca.pem")).expect("copy");
        assert_eq!(
            check_ca(&dir).expect("ca dir"),
            CaKind::Dir { hashed: false }
        );

        pki.openssl(&["rehash", "cas"]);
        assert_eq!(
            check_ca(&dir).expect("ca dir"),
            CaKind::Dir { hashed: true }
        );
    }

    #[test]
    fn the_system_ca_directory_is_a_hashed_ca_path() {
        let system = Path::new("/etc/ssl/certs");
        if system.join("ca-certificates.crt").exists() {
            assert_eq!(
                check_ca(system).expect("system CAs"),
                CaKind::Dir { hashed: true }
            );
            assert_eq!(
                check_ca(&system.join("ca-certificates.crt")).expect("bundle"),
                CaKind::File
            );
        }
    }

    #[test]
    fn subject_hash_names_are_recognised() {
        assert!(is_subject_hash_name("a1b2c3d4.0"));
        assert!(is_subject_hash_name("A1B2C3D4.12"));
        assert!(!is_subject_hash_name("a1b2c3d4.r0"));
        assert!(!is_subject_hash_name("a1b2c3d.0"));
        assert!(!is_subject_hash_name("ca.pem"));
        assert!(!is_subject_hash_name("a1b2c3d4."));
    }
}

//! Test certificates, made at run time with the `openssl` command in a private temp dir, so no
//! key or certificate is ever committed: a CA, a server certificate for `127.0.0.1` and
//! `localhost` and a client certificate (both signed by that CA), and a second, unrelated CA
//! with a client certificate of its own. Client certificates with a chosen common name (a device
//! id, for brokers that take it as the user name) are made on demand.
//!
//! The keys are ECDSA P-256, which rustls and mosquitto's OpenSSL both accept and which take
//! milliseconds to generate, so every test makes its own set. The certificates are valid for
//! one day. This module makes files; what trusts them is the test's business.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use tempfile::TempDir;

const OPENSSL: &str = "openssl";
const DAYS: &str = "1";

const CA_EXTENSIONS: [&str; 4] = [
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
];
/// rustls checks the name the agent dials, `127.0.0.1`, against an IP subjectAltName.
const SERVER_EXTENSIONS: &str = "basicConstraints=critical,CA:FALSE\n\
    keyUsage=critical,digitalSignature\n\
    extendedKeyUsage=serverAuth\n\
    subjectAltName=IP:127.0.0.1,DNS:localhost\n";
const CLIENT_EXTENSIONS: &str = "basicConstraints=critical,CA:FALSE\n\
    keyUsage=critical,digitalSignature\n\
    extendedKeyUsage=clientAuth\n";

/// A set of PEM files in a temp dir, deleted on drop.
pub struct Pki {
    dir: TempDir,
    /// The serial of the next on-demand certificate; the fixed ones use 2 to 4.
    next_serial: AtomicU32,
}

impl Pki {
    /// Generates the CA, the server and client certificates it signs, and the unrelated CA and
    /// the client certificate that one signs.
    /// Panics with openssl's output if any step fails.
    pub fn generate() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("edge-agent-pki-")
            .tempdir()
            .expect("cannot create a temp dir for certificates");
        let pki = Pki {
            dir,
            next_serial: AtomicU32::new(100),
        };
        pki.self_signed_ca("ca", "edge-agent test CA");
        pki.self_signed_ca("other-ca", "edge-agent unrelated CA");
        pki.signed_by_ca("ca", "server", "localhost", SERVER_EXTENSIONS, "2");
        pki.signed_by_ca("ca", "client", "edge-agent", CLIENT_EXTENSIONS, "3");
        pki.signed_by_ca(
            "other-ca",
            "other-client",
            "edge-agent",
            CLIENT_EXTENSIONS,
            "4",
        );
        pki
    }

    /// The CA that signed the server and client certificates.
    pub fn ca(&self) -> PathBuf {
        self.file("ca.pem")
    }

    /// A CA that signed nothing here: trusting only it, no server certificate verifies.
    pub fn other_ca(&self) -> PathBuf {
        self.file("other-ca.pem")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.file("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.file("server.key")
    }

    pub fn client_cert(&self) -> PathBuf {
        self.file("client.pem")
    }

    pub fn client_key(&self) -> PathBuf {
        self.file("client.key")
    }

    /// A client certificate signed by [`Pki::other_ca`], with the same subject as
    /// [`Pki::client_cert`]: only its issuer is wrong.
    pub fn other_client_cert(&self) -> PathBuf {
        self.file("other-client.pem")
    }

    pub fn other_client_key(&self) -> PathBuf {
        self.file("other-client.key")
    }

    /// A new client certificate with the subject `CN=<common_name>`, signed by [`Pki::ca`]:
    /// `(certificate, key)`, e.g. a gateway's identity towards a broker with
    /// `use_identity_as_username true`. `common_name` is also the file name, so letters,
    /// digits, `-` and `_` only.
    pub fn client_cert_for(&self, common_name: &str) -> (PathBuf, PathBuf) {
        assert!(
            !common_name.is_empty()
                && common_name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "client_cert_for: {common_name:?} is not a plain name"
        );
        let name = format!("client-{common_name}");
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed).to_string();
        self.signed_by_ca("ca", &name, common_name, CLIENT_EXTENSIONS, &serial);
        (
            self.file(&format!("{name}.pem")),
            self.file(&format!("{name}.key")),
        )
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn self_signed_ca(&self, name: &str, common_name: &str) {
        let subject = format!("/CN={common_name}");
        let (key, cert) = (format!("{name}.key"), format!("{name}.pem"));
        let mut args = vec!["req", "-x509", "-new", "-days", DAYS, "-subj", &subject];
        args.extend(new_key(&key));
        args.extend(["-out", &cert]);
        args.extend(CA_EXTENSIONS);
        openssl(self.dir.path(), &args);
    }

    /// A certificate `name` signed by the CA `ca` (made by `self_signed_ca`).
    fn signed_by_ca(
        &self,
        ca: &str,
        name: &str,
        common_name: &str,
        extensions: &str,
        serial: &str,
    ) {
        let (ca_cert, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
        let subject = format!("/CN={common_name}");
        let (key, csr, cert, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        let mut args = vec!["req", "-new", "-subj", &subject, "-out", &csr];
        args.extend(new_key(&key));
        openssl(self.dir.path(), &args);
        std::fs::write(self.file(&ext), extensions).expect("cannot write an extensions file");
        openssl(
            self.dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_cert,
                "-CAkey",
                &ca_key,
                "-set_serial",
                serial,
                "-days",
                DAYS,
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
        );
    }
}

/// Arguments for a new unencrypted P-256 key (PKCS#8 PEM) written to `key`.
fn new_key(key: &str) -> [&str; 7] {
    [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
    ]
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new(OPENSSL)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}); install it: apt-get install -y openssl")
        });
    assert!(
        output.status.success(),
        "openssl {} failed ({}):\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

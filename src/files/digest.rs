//! SHA-256 digests of stored files and the HTTP fields that carry them: `Repr-Digest` and
//! `Content-Digest` (RFC 9530: `sha-256=:<base64>:`) and `X-Checksum-Sha256` (hex).
//!
//! Pure, apart from hashing bytes it is given. A [`Sha256`] is the 32-byte value; it prints as
//! lower-case hex, which is also its form in the store's metadata. [`expected`] reads the digest
//! a client announced with an upload, so that a body that does not match is refused.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// A SHA-256 value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sha256(pub [u8; 32]);

/// A digest field that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid {field} header: {reason}")]
pub struct BadDigestField {
    pub field: &'static str,
    pub reason: &'static str,
}

/// The running hash of a stream of bytes.
pub struct Hasher(ring::digest::Context);

impl Hasher {
    pub fn new() -> Hasher {
        Hasher(ring::digest::Context::new(&ring::digest::SHA256))
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Hashes everything `reader` yields, in 1 MiB reads; returns how many bytes that was.
    pub fn read_from(&mut self, reader: &mut impl Read) -> io::Result<u64> {
        let mut buf = vec![0; 1 << 20];
        let mut len = 0u64;
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return Ok(len),
                Ok(n) => {
                    self.update(&buf[..n]);
                    len += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub fn finish(self) -> Sha256 {
        let mut out = [0; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        Sha256(out)
    }
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher::new()
    }
}

impl Sha256 {
    /// The RFC 9530 dictionary member: `sha-256=:<base64>:`.
    pub fn structured(&self) -> String {
        format!("sha-256=:{}:", STANDARD.encode(self.0))
    }

    /// The strong entity tag derived from the content: equal bytes, equal tags.
    pub fn etag(&self) -> String {
        format!("\"{self}\"")
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl FromStr for Sha256 {
    type Err = ();

    /// 64 hex digits, either case.
    fn from_str(s: &str) -> Result<Sha256, ()> {
        let s = s.trim();
        if s.len() != 64 || !s.is_ascii() {
            return Err(());
        }
        let mut out = [0; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(drop)?;
        }
        Ok(Sha256(out))
    }
}

/// The SHA-256 an upload announced, from `Content-Digest`, `Repr-Digest` or `X-Checksum-Sha256`
/// (each given as the field's value, if present). A body is stored only if it matches every one
/// given. A structured field without a `sha-256` member announces nothing we can check.
pub fn expected(
    content_digest: Option<&str>,
    repr_digest: Option<&str>,
    x_checksum: Option<&str>,
) -> Result<Vec<Sha256>, BadDigestField> {
    let mut found = Vec::new();
    for (field, value) in [
        ("Content-Digest", content_digest),
        ("Repr-Digest", repr_digest),
    ] {
        if let Some(value) = value {
            found.extend(structured_sha256(field, value)?);
        }
    }
    if let Some(value) = x_checksum {
        found.push(value.parse().map_err(|()| BadDigestField {
            field: "X-Checksum-Sha256",
            reason: "expected 64 hexadecimal digits",
        })?);
    }
    Ok(found)
}

/// The `sha-256` member of an RFC 9530 dictionary (`sha-256=:<base64>:, sha-512=:…:`).
fn structured_sha256(field: &'static str, value: &str) -> Result<Option<Sha256>, BadDigestField> {
    let bad = |reason| BadDigestField { field, reason };
    for member in value.split(',') {
        let Some((key, value)) = member.split_once('=') else {
            return Err(bad("expected algorithm=:base64:"));
        };
        if key.trim() != "sha-256" {
            continue;
        }
        let inner = value
            .trim()
            .strip_prefix(':')
            .and_then(|v| v.strip_suffix(':'))
            .ok_or(bad("the sha-256 value must be a byte sequence, :base64:"))?;
        let bytes = STANDARD
            .decode(inner)
            .map_err(|_| bad("the sha-256 value is not base64"))?;
        let digest: [u8; 32] = bytes
            .try_into()
            .map_err(|_| bad("the sha-256 value is not 32 bytes long"))?;
        return Ok(Some(Sha256(digest)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-256("abc"), FIPS 180-2's first example.
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const ABC_B64: &str = "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=";

    fn abc() -> Sha256 {
        let mut h = Hasher::new();
        h.update(b"a");
        h.update(b"bc");
        h.finish()
    }

    #[test]
    fn a_digest_prints_as_hex_base64_and_an_etag() {
        let d = abc();
        assert_eq!(d.to_string(), ABC);
        assert_eq!(d.structured(), format!("sha-256=:{ABC_B64}:"));
        assert_eq!(d.etag(), format!("\"{ABC}\""));
        assert_eq!(ABC.parse(), Ok(d));
        assert_eq!(ABC.to_uppercase().parse(), Ok(d));
        assert_eq!("abc".parse::<Sha256>(), Err(()));
        assert_eq!(format!("{}zz", &ABC[..62]).parse::<Sha256>(), Err(()));
    }

    #[test]
    fn a_reader_is_hashed_to_its_end() {
        let mut h = Hasher::new();
        assert_eq!(h.read_from(&mut &b"abc"[..]).unwrap(), 3);
        assert_eq!(h.finish(), abc());
    }

    #[test]
    fn announced_digests_are_read_from_every_field() {
        let structured = format!("sha-512=:AAAA:, sha-256=:{ABC_B64}:");
        assert_eq!(
            expected(Some(&structured), None, Some(ABC)),
            Ok(vec![abc(), abc()])
        );
        assert_eq!(
            expected(None, Some(&format!("sha-256=:{ABC_B64}:")), None),
            Ok(vec![abc()])
        );
        assert_eq!(expected(Some("sha-512=:AAAA:"), None, None), Ok(vec![]));
        assert_eq!(expected(None, None, None), Ok(vec![]));
    }

    #[test]
    fn unreadable_digest_fields_are_errors() {
        let e = expected(Some("sha-256=abc"), None, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Invalid Content-Digest header: the sha-256 value must be a byte sequence, :base64:"
        );
        assert!(expected(None, Some("sha-256=:!!:"), None).is_err());
        assert!(
            expected(None, Some("sha-256=:AAAA:"), None).is_err(),
            "3 bytes"
        );
        assert!(expected(None, Some("garbage"), None).is_err());
        assert_eq!(
            expected(None, None, Some("123")).unwrap_err().field,
            "X-Checksum-Sha256"
        );
    }
}

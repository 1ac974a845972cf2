//! TLS to origins: OpenSSL's certificate verifier with keygate's trust, names and reasons.
//!
//! keygate verifies every origin certificate with OpenSSL's chain builder
//! (`X509_verify_cert`, the verifier behind `curl --cacert` and nginx's
//! `proxy_ssl_trusted_certificate`), so an origin whose own self-signed
//! certificate is the trust anchor (`openssl req -x509`, which OpenSSL 3 marks
//! `CA:TRUE`) verifies, while an expired, untrusted or wrongly named one does
//! not. Names are checked as DNS names (`X509_check_host`, no partial
//! wildcards) or, for an upstream addressed by IP without `sni`, against the
//! certificate's IP SANs (`X509_check_ip`), which Pingora's own name check
//! cannot do.
//!
//! The check runs in Pingora's handshake-complete hook and its verdict travels
//! with the connection ([`Verdict`]); the proxy refuses a connection without a
//! passing verdict in `connected_to_upstream`, which Pingora calls for every
//! new *and* reused connection before a single request byte is written. That
//! is also what lets keygate name the reason in its log (`certificate has
//! expired`, `hostname mismatch`, …), which OpenSSL's in-handshake failure
//! does not carry.

use std::any::Any;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use openssl::stack::{Stack, StackRef};
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::{X509CheckFlags, X509VerifyParam};
use openssl::x509::{X509PurposeId, X509Ref, X509StoreContext, X509};
use pingora::protocols::tls::HandshakeCompleteHook;
use pingora::protocols::Digest;

/// The name an origin's certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExpectedName {
    /// A DNS name (from `sni`, or the host part of `address`).
    Dns(String),
    /// An IP address (the upstream is addressed by IP and sets no `sni`).
    Ip(IpAddr),
}

impl std::fmt::Display for ExpectedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedName::Dns(n) => write!(f, "name `{n}`"),
            ExpectedName::Ip(ip) => write!(f, "IP address {ip}"),
        }
    }
}

/// What to trust for one upstream, and which name to expect.
pub struct OriginTrust {
    store: X509Store,
    expected: ExpectedName,
    fingerprint: u64,
}

impl std::fmt::Debug for OriginTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginTrust")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

/// The outcome of verifying one connection's certificate, kept with the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict(pub Result<(), String>);

/// Read a PEM bundle of CA (or self-signed origin) certificates.
///
/// # Errors
/// A message naming the file when it cannot be read, holds no certificate or a
/// certificate does not parse.
pub fn load_pem_certs(path: &Path) -> Result<Vec<X509>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = X509::stack_from_pem(&data)
        .map_err(|e| format!("{}: not a PEM certificate bundle: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate found", path.display()));
    }
    Ok(certs)
}

/// Check a TLS listener's files: a PEM certificate chain and a PEM private key that
/// belongs to its first certificate.
///
/// # Errors
/// A message naming the file and what is wrong with it.
pub fn check_listener_files(cert: &Path, key: &Path) -> Result<(), String> {
    let certs = load_pem_certs(cert)?;
    let pem = std::fs::read(key).map_err(|e| format!("cannot read {}: {e}", key.display()))?;
    let key_pair = openssl::pkey::PKey::private_key_from_pem(&pem)
        .map_err(|_| format!("{}: no PEM private key found", key.display()))?;
    let leaf_key = certs[0]
        .public_key()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if !leaf_key.public_eq(&key_pair) {
        return Err(format!(
            "{} is not the private key of the first certificate in {}",
            key.display(),
            cert.display()
        ));
    }
    Ok(())
}

impl OriginTrust {
    /// Build the trust for one upstream: `ca` certificates (or the system roots when
    /// `None`) and the name to expect.
    ///
    /// # Errors
    /// OpenSSL's message when the store or the name cannot be set up.
    pub fn new(ca: Option<&[X509]>, expected: ExpectedName) -> Result<OriginTrust, String> {
        let err = |e: openssl::error::ErrorStack| e.to_string();
        let mut b = X509StoreBuilder::new().map_err(err)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        expected.hash(&mut hasher);
        match ca {
            Some(certs) => {
                for c in certs {
                    c.to_der().map_err(err)?.hash(&mut hasher);
                    b.add_cert(c.clone()).map_err(err)?;
                }
            }
            None => b.set_default_paths().map_err(err)?,
        }
        b.set_purpose(X509PurposeId::SSL_SERVER).map_err(err)?;
        let mut param = X509VerifyParam::new().map_err(err)?;
        param.set_hostflags(X509CheckFlags::NO_PARTIAL_WILDCARDS);
        match &expected {
            ExpectedName::Dns(n) => param.set_host(n).map_err(err)?,
            ExpectedName::Ip(ip) => param.set_ip(*ip).map_err(err)?,
        }
        b.set_param(&param).map_err(err)?;
        Ok(OriginTrust {
            store: b.build(),
            expected,
            fingerprint: hasher.finish(),
        })
    }

    /// A value that changes whenever the trusted certificates or the expected name
    /// change; used as the connection pool's group key so a reload never reuses a
    /// connection verified under the old trust.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The name certificates are checked against.
    pub fn expected(&self) -> &ExpectedName {
        &self.expected
    }

    /// Verify `leaf` (with the `chain` the origin sent) at the current time.
    ///
    /// # Errors
    /// OpenSSL's reason (`certificate has expired`, `unable to get local issuer
    /// certificate`, `hostname mismatch`, …) followed by the expected name.
    pub fn verify(&self, leaf: &X509Ref, chain: Option<&StackRef<X509>>) -> Result<(), String> {
        let empty;
        let chain = match chain {
            Some(c) => c,
            None => {
                empty = Stack::new().map_err(|e| e.to_string())?;
                &empty
            }
        };
        let mut ctx = X509StoreContext::new().map_err(|e| e.to_string())?;
        let result = ctx
            .init(&self.store, leaf, chain, |c| {
                Ok(if c.verify_cert()? {
                    Ok(())
                } else {
                    Err(c.error().error_string().to_string())
                })
            })
            .map_err(|e| e.to_string())?;
        result.map_err(|reason| format!("{reason} (expected {})", self.expected))
    }
}

/// A process-wide adjustment applied to every new upstream TLS connection after its
/// handshake, before its verdict is computed. The binary installs one (it needs an
/// FFI call this library does not make, see `main.rs`); without it nothing changes.
static CONNECTION_TUNING: std::sync::OnceLock<fn(&openssl::ssl::SslRef)> =
    std::sync::OnceLock::new();

/// Install the per-connection tuning (first call wins).
pub fn set_connection_tuning(f: fn(&openssl::ssl::SslRef)) {
    let _ = CONNECTION_TUNING.set(f);
}

/// The handshake-complete hook that verifies an origin's certificate with `trust`
/// and attaches the [`Verdict`] to the connection.
pub fn verification_hook(trust: Arc<OriginTrust>) -> HandshakeCompleteHook {
    Arc::new(move |ssl| {
        if let Some(tune) = CONNECTION_TUNING.get() {
            tune(ssl);
        }
        let verdict = match ssl.peer_certificate() {
            Some(leaf) => trust.verify(&leaf, ssl.peer_cert_chain()),
            None => Err("the origin presented no certificate".to_string()),
        };
        Some(Arc::new(Verdict(verdict)) as Arc<dyn Any + Send + Sync>)
    })
}

/// The verdict attached to a TLS connection; fails closed when there is none.
///
/// # Errors
/// The reason the certificate was refused, or that no verification ran.
pub fn verdict(digest: Option<&Digest>) -> Result<(), String> {
    match digest
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|s| s.extension.get::<Verdict>())
    {
        Some(Verdict(v)) => v.clone(),
        None => Err("no certificate verification ran for this connection".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
    use openssl::x509::X509NameBuilder;

    /// A self-signed certificate like `openssl req -x509` makes (CA:TRUE), valid from
    /// `from_days` to `to_days` relative to now.
    fn self_signed(cn: &str, sans: &[&str], ips: &[&str], from_days: i64, to_days: i64) -> X509 {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        b.set_not_before(&Asn1Time::from_unix(now + from_days * 86400).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::from_unix(now + to_days * 86400).unwrap())
            .unwrap();
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        let mut san = SubjectAlternativeName::new();
        for s in sans {
            san.dns(s);
        }
        for i in ips {
            san.ip(i);
        }
        let san = san.build(&b.x509v3_context(None, None)).unwrap();
        b.append_extension(san).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        b.build()
    }

    fn trust(ca: &X509, name: ExpectedName) -> OriginTrust {
        OriginTrust::new(Some(std::slice::from_ref(ca)), name).unwrap()
    }

    #[test]
    fn a_trusted_self_signed_ca_true_leaf_verifies_with_name_and_ip() {
        let cert = self_signed("localhost", &["localhost"], &["127.0.0.1"], -1, 365);
        let dns = trust(&cert, ExpectedName::Dns("localhost".into()));
        assert_eq!(dns.verify(&cert, None), Ok(()));
        let ip = trust(&cert, ExpectedName::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(ip.verify(&cert, None), Ok(()));
    }

    #[test]
    fn wrong_name_ip_expired_and_untrusted_fail_with_a_reason() {
        let cert = self_signed("localhost", &["localhost"], &["127.0.0.1"], -1, 365);
        let e = trust(&cert, ExpectedName::Dns("api.example".into()))
            .verify(&cert, None)
            .unwrap_err();
        assert!(e.contains("hostname mismatch"), "{e}");
        assert!(e.contains("api.example"), "{e}");
        let e = trust(&cert, ExpectedName::Ip("127.0.0.2".parse().unwrap()))
            .verify(&cert, None)
            .unwrap_err();
        assert!(e.contains("IP address mismatch"), "{e}");
        let old = self_signed("localhost", &["localhost"], &[], -30, -1);
        let e = trust(&old, ExpectedName::Dns("localhost".into()))
            .verify(&old, None)
            .unwrap_err();
        assert!(e.contains("expired"), "{e}");
        let other = self_signed("other", &["localhost"], &[], -1, 365);
        let e = trust(&other, ExpectedName::Dns("localhost".into()))
            .verify(&cert, None)
            .unwrap_err();
        assert!(e.contains("self-signed") || e.contains("issuer"), "{e}");
        // A CN without a SAN does not stand in for the SAN of another name.
        let cn_only = self_signed("localhost", &["elsewhere"], &[], -1, 365);
        assert!(trust(&cn_only, ExpectedName::Dns("localhost".into()))
            .verify(&cn_only, None)
            .is_err());
    }

    #[test]
    fn fingerprint_follows_trust_and_name() {
        let a = self_signed("a", &["a"], &[], -1, 1);
        let b = self_signed("b", &["b"], &[], -1, 1);
        let f = |c: &X509, n: &str| trust(c, ExpectedName::Dns(n.into())).fingerprint();
        assert_eq!(f(&a, "x"), f(&a, "x"));
        assert_ne!(f(&a, "x"), f(&b, "x"));
        assert_ne!(f(&a, "x"), f(&a, "y"));
    }

    #[test]
    fn no_verdict_fails_closed() {
        assert!(verdict(None).is_err());
    }
}

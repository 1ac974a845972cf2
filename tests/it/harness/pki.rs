//! Certificates for TLS tests: a private CA with a leaf, self-signed certificates with
//! chosen names and validity, and certificates made elsewhere.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Certificates for TLS tests: a private CA and a leaf for `localhost`/127.0.0.1.
pub struct Pki {
    /// CA certificate, PEM.
    pub ca_pem: String,
    /// CA certificate, DER.
    pub ca_der: CertificateDer<'static>,
    /// Leaf certificate, PEM.
    pub cert_pem: String,
    /// Leaf private key, PEM.
    pub key_pem: String,
    leaf_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Pki {
    /// Generate a CA and a leaf signed by it.
    pub fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "keygate test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
        Pki {
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            cert_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
            leaf_der: leaf.der().clone(),
            key_der: leaf_key.serialize_der(),
        }
    }

    /// A self-signed certificate that is its own CA (`CA:TRUE`), as `openssl req -x509`
    /// makes, for `names` (DNS names or IP addresses), valid between the two dates.
    pub fn self_signed(names: &[&str], valid: (i32, i32)) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("origin"),
        );
        params.not_before = rcgen::date_time_ymd(valid.0, 1, 1);
        params.not_after = rcgen::date_time_ymd(valid.1, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        Pki {
            ca_pem: cert.pem(),
            ca_der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            leaf_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// A certificate and key made elsewhere (e.g. by the `openssl` command), PEM; the
    /// certificate is also its own trust anchor.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Pki {
        use rustls::pki_types::pem::PemObject;
        let leaf = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let key_der = match key {
            PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
            other => panic!("expected a PKCS#8 key, got {other:?}"),
        };
        Pki {
            ca_pem: cert_pem.to_string(),
            ca_der: leaf.clone(),
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            leaf_der: leaf,
            key_der,
        }
    }

    /// A TLS server configuration presenting the leaf (for test origins).
    pub(super) fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.leaf_der.clone()], key)
            .unwrap(),
        )
    }
}

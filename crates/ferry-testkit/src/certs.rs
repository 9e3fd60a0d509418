//! Throwaway X.509 certificates for TLS tests: a private CA and the server and client
//! certificates it signs, written as PEM files into a temporary directory.
//!
//! Nothing here is trusted outside the test that made it: every [`TestCa`] has a fresh key,
//! and its directory is deleted when it is dropped.
//!
//! ```no_run
//! use ferry_testkit::certs::TestCa;
//!
//! let ca = TestCa::new("ferry test CA");
//! let server = ca.issue("server", &["localhost", "127.0.0.1"]);
//! let client = ca.issue_client("client", "ops");
//! // ca.cert_path(), server.cert_path, server.key_path, client.cert_path … are PEM files.
//! ```

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A private certificate authority whose files live in a temporary directory.
pub struct TestCa {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// A certificate and its private key, signed by a [`TestCa`], as PEM text and files.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
    /// The certificate's file.
    pub cert_path: PathBuf,
    /// The key's file (mode 0600).
    pub key_path: PathBuf,
}

impl TestCa {
    /// A new CA named `common_name`, with a fresh key.
    pub fn new(common_name: &str) -> TestCa {
        let key = KeyPair::generate().expect("generate the CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign the CA");
        let dir = tempfile::Builder::new()
            .prefix("ferry-certs-")
            .tempdir()
            .expect("create the certificate directory");
        let cert_pem = cert.pem();
        std::fs::write(dir.path().join("ca.crt"), &cert_pem).expect("write ca.crt");
        TestCa {
            dir,
            issuer: Issuer::new(params, key),
            cert_pem,
        }
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate's file (`ca.crt`).
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The directory holding every file this CA wrote.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server certificate for `names` (DNS names or IP addresses), written as
    /// `<file_stem>.crt` and `<file_stem>.key`.
    pub fn issue(&self, file_stem: &str, names: &[&str]) -> IssuedCert {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("server certificate names");
        params.distinguished_name = name(names.first().map_or("server", String::as_str));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(file_stem, params)
    }

    /// A client certificate whose subject common name is `common_name`, written as
    /// `<file_stem>.crt` and `<file_stem>.key`.
    pub fn issue_client(&self, file_stem: &str, common_name: &str) -> IssuedCert {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client parameters");
        params.distinguished_name = name(common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(file_stem, params)
    }

    fn sign(&self, file_stem: &str, params: CertificateParams) -> IssuedCert {
        let key = KeyPair::generate().expect("generate a key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign the certificate");
        let issued = IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_path: self.dir.path().join(format!("{file_stem}.crt")),
            key_path: self.dir.path().join(format!("{file_stem}.key")),
        };
        std::fs::write(&issued.cert_path, &issued.cert_pem).expect("write the certificate");
        write_private(&issued.key_path, &issued.key_pem);
        issued
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// Writes a key file readable by its owner only (PostgreSQL refuses group/world-readable keys).
fn write_private(path: &Path, contents: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).expect("write the key");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 0600");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_pem_files() {
        let ca = TestCa::new("test CA");
        let server = ca.issue("server", &["localhost", "127.0.0.1"]);
        let client = ca.issue_client("client", "ops");
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        for cert in [&server, &client] {
            assert!(std::fs::read_to_string(&cert.cert_path)
                .unwrap()
                .contains("BEGIN CERTIFICATE"));
            assert!(std::fs::read_to_string(&cert.key_path)
                .unwrap()
                .contains("PRIVATE KEY"));
        }
        assert!(ca.cert_path().exists());
    }
}

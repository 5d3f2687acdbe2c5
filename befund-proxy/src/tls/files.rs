//! Reading certificates, keys and CRLs from the files the configuration names.
//!
//! Every error names the configuration file, the key and the file it points to.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::config::ConfigError;

/// A file named by a configuration key.
#[derive(Clone, Copy, Debug)]
pub struct ConfigFile<'a> {
    /// The configuration file.
    pub config: &'a Path,
    /// Dotted key, e.g. `tls.certificate`.
    pub key: &'a str,
    /// The file the key names.
    pub file: &'a Path,
}

impl<'a> ConfigFile<'a> {
    /// Names `file`, given by `key` in the configuration `config`.
    pub fn new(config: &'a Path, key: &'a str, file: &'a Path) -> Self {
        Self { config, key, file }
    }

    /// An error about this file.
    pub fn error(&self, problem: impl Into<String>) -> ConfigError {
        ConfigError::File {
            path: self.config.to_path_buf(),
            key: self.key.to_owned(),
            file: self.file.to_path_buf(),
            problem: problem.into(),
        }
    }

    /// Reads the whole file.
    pub fn read(&self) -> Result<Vec<u8>, ConfigError> {
        std::fs::read(self.file).map_err(|e| self.error(format!("cannot read the file: {e}")))
    }

    /// Fails if the file is readable by every user on the system.
    pub fn refuse_world_readable(&self) -> Result<(), ConfigError> {
        let meta = std::fs::metadata(self.file)
            .map_err(|e| self.error(format!("cannot read the file: {e}")))?;
        if meta.permissions().mode() & 0o004 != 0 {
            return Err(self.error(format!(
                "the file is readable by every user (mode {:o}); run `chmod o-rwx {}`",
                meta.permissions().mode() & 0o777,
                self.file.display()
            )));
        }
        Ok(())
    }

    /// Reads one or more PEM certificates, in file order.
    pub fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        let bytes = self.read()?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                self.error(format!(
                    "not a valid PEM certificate file: {}",
                    pem_problem(&e)
                ))
            })?;
        if certs.is_empty() {
            return Err(self.error(
                "contains no certificate; expected PEM blocks starting with -----BEGIN CERTIFICATE-----",
            ));
        }
        Ok(certs)
    }

    /// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1). Refuses a key file
    /// that every user can read.
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, ConfigError> {
        let bytes = self.read()?;
        self.refuse_world_readable()?;
        PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
            pem::Error::NoItemsFound => self.error(
                "contains no private key; expected a PEM block such as -----BEGIN PRIVATE KEY-----",
            ),
            e => self.error(format!("not a valid PEM private key: {}", pem_problem(&e))),
        })
    }

    /// Reads a CRL, PEM (`-----BEGIN X509 CRL-----`) or DER.
    pub fn crl(&self) -> Result<CertificateRevocationListDer<'static>, ConfigError> {
        self.crl_from(self.read()?)
    }

    /// Parses `bytes`, read from this file, as a CRL (PEM or DER).
    pub fn crl_from(
        &self,
        bytes: Vec<u8>,
    ) -> Result<CertificateRevocationListDer<'static>, ConfigError> {
        if bytes.starts_with(b"-----BEGIN") || bytes.iter().take(64).all(|b| b.is_ascii()) {
            return CertificateRevocationListDer::from_pem_slice(&bytes).map_err(|e| match e {
                pem::Error::NoItemsFound => self
                    .error("contains no CRL; expected DER or a PEM block -----BEGIN X509 CRL-----"),
                e => self.error(format!("not a valid PEM CRL: {}", pem_problem(&e))),
            });
        }
        Ok(CertificateRevocationListDer::from(bytes))
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.file.to_path_buf()
    }
}

fn pem_problem(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line".to_owned(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".to_owned(),
        pem::Error::Base64Decode(_) => "a PEM block is not valid base64".to_owned(),
        pem::Error::NoItemsFound => "no PEM block found".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn write(dir: &Path, name: &str, content: &[u8], mode: u32) -> PathBuf {
        let path = dir.join(name);
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn missing_file_error_names_config_key_and_file() {
        let file = ConfigFile::new(
            Path::new("/etc/befund/befund.toml"),
            "tls.certificate",
            Path::new("/nonexistent/cert.pem"),
        );
        let err = file.certificates().unwrap_err().to_string();
        assert!(
            err.starts_with(
                "/etc/befund/befund.toml: key `tls.certificate`: /nonexistent/cert.pem: cannot read the file:"
            ),
            "{err}"
        );
    }

    #[test]
    fn file_without_certificates_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "c.pem", b"hello\n", 0o644);
        let err = ConfigFile::new(Path::new("b.toml"), "tls.client_ca", &path)
            .certificates()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "b.toml: key `tls.client_ca`: {}: contains no certificate; expected PEM blocks \
                 starting with -----BEGIN CERTIFICATE-----",
                path.display()
            )
        );
    }

    #[test]
    fn world_readable_private_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let path = write(dir.path(), "k.pem", key.serialize_pem().as_bytes(), 0o644);
        let err = ConfigFile::new(Path::new("b.toml"), "tls.private_key", &path)
            .private_key()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("readable by every user (mode 644); run `chmod o-rwx"),
            "{err}"
        );
    }

    #[test]
    fn private_key_file_with_certificate_only_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let path = write(dir.path(), "k.pem", cert.pem().as_bytes(), 0o600);
        let err = ConfigFile::new(Path::new("b.toml"), "tls.private_key", &path)
            .private_key()
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with(
                "contains no private key; expected a PEM block such as -----BEGIN PRIVATE KEY-----"
            ),
            "{err}"
        );
    }

    #[test]
    fn der_and_pem_crls_are_both_read() {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(params, &ca_key);
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2025, 1, 1),
            next_update: rcgen::date_time_ymd(2035, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![],
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .unwrap();
        drop(ca);
        let der = write(dir.path(), "crl.der", crl.der(), 0o644);
        let pem = write(dir.path(), "crl.pem", crl.pem().unwrap().as_bytes(), 0o644);
        let a = ConfigFile::new(Path::new("b.toml"), "tls.crls", &der)
            .crl()
            .unwrap();
        let b = ConfigFile::new(Path::new("b.toml"), "tls.crls", &pem)
            .crl()
            .unwrap();
        assert_eq!(a.as_ref(), b.as_ref());
    }
}

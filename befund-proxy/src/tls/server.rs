//! The rustls server configuration: protocol versions, cipher suites, the
//! server certificate and the client-certificate verifier.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{NoServerSessionStorage, ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use super::client_auth::RequireClientAuthEku;
use super::crl::{CrlInfo, CrlMonitor};
use super::dn::format_name;
use super::files::ConfigFile;
use crate::config::{Config, ConfigError, CrlExpiredPolicy, TlsConfig};

/// Smallest RSA modulus accepted for the server certificate, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// ALPN protocols offered to clients, preferred first.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The crypto provider: aws-lc-rs limited to AEAD cipher suites with
/// ephemeral key exchange (TLS 1.3 suites; ECDHE with AES-GCM or
/// ChaCha20-Poly1305 for TLS 1.2).
pub fn crypto_provider() -> CryptoProvider {
    use aws_lc_rs::cipher_suite as suite;
    CryptoProvider {
        cipher_suites: vec![
            suite::TLS13_AES_256_GCM_SHA384,
            suite::TLS13_AES_128_GCM_SHA256,
            suite::TLS13_CHACHA20_POLY1305_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..aws_lc_rs::default_provider()
    }
}

/// What the proxy logs about its own certificate at start-up.
#[derive(Clone, Debug)]
pub struct ServerCertificate {
    /// Subject (RFC 4514).
    pub subject: String,
    /// Issuer (RFC 4514).
    pub issuer: String,
    /// notAfter.
    pub not_after: SystemTime,
    /// Key type and size, e.g. `RSA 3072` or `ECDSA P-256`.
    pub key: String,
}

/// Everything TLS needs, loaded from the configured files.
#[derive(Debug)]
pub struct TlsState {
    /// The rustls configuration handed to each accepted connection.
    pub server_config: Arc<ServerConfig>,
    /// The proxy's own certificate.
    pub server_certificate: ServerCertificate,
    /// Subjects of the trusted client CAs (RFC 4514).
    pub client_cas: Vec<String>,
    /// The CRLs and their dates.
    pub crl_monitor: Arc<CrlMonitor>,
    /// The client-certificate check this state's handshakes use.
    client_verifier: Arc<dyn ClientCertVerifier>,
    /// What [`TlsState::with_fresh_crls`] keeps.
    kept: Kept,
}

/// The parts of a state that a CRL change does not touch, and where the
/// CRLs come from.
#[derive(Clone, Debug)]
struct Kept {
    source: PathBuf,
    tls: TlsConfig,
    certified_key: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
    cas: Arc<[ClientCa]>,
}

impl TlsState {
    /// Loads and checks the server certificate and key, the client CA bundle
    /// and the CRLs named in `[tls]`, and builds the server configuration.
    pub fn load(config: &Config) -> Result<Self, ConfigError> {
        let provider = Arc::new(crypto_provider());
        let (certified_key, server_certificate) = load_server_identity(config, &provider)?;
        let (roots, cas) = load_client_cas(config)?;
        let kept = Kept {
            source: config.source.clone(),
            tls: config.tls.clone(),
            certified_key: Arc::new(certified_key),
            roots: Arc::new(roots),
            cas: cas.into(),
        };
        Self::assemble(kept, server_certificate)
    }

    /// The same state with the CRL files read again: what the proxy does when
    /// a CRL file changes. Certificates, keys and CA bundle stay as loaded.
    pub fn with_fresh_crls(&self) -> Result<Self, ConfigError> {
        Self::assemble(self.kept.clone(), self.server_certificate.clone())
    }

    /// The CRL files this state was built from.
    pub fn crl_files(&self) -> &[PathBuf] {
        &self.kept.tls.crls
    }

    /// Checks a client's chain (leaf first) the way a new handshake would
    /// now: chain to a client CA, validity, CRLs, `clientAuth`.
    pub fn verify_client_chain(&self, chain: &[CertificateDer<'_>]) -> Result<(), rustls::Error> {
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or(rustls::Error::NoCertificatesPresented)?;
        self.client_verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map(drop)
    }

    fn assemble(kept: Kept, server_certificate: ServerCertificate) -> Result<Self, ConfigError> {
        let provider = Arc::new(crypto_provider());
        let (crl_ders, crl_infos) = load_crls(&kept)?;
        let verifier = build_verifier(&kept, crl_ders, &provider)?;
        let client_verifier: Arc<dyn ClientCertVerifier> =
            Arc::new(RequireClientAuthEku::new(verifier));

        let mut server_config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| {
                internal(
                    &kept.source,
                    format!("TLS versions rejected by the provider: {e}"),
                )
            })?
            .with_client_cert_verifier(client_verifier.clone())
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                kept.certified_key.as_ref().clone(),
            )));
        server_config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
        server_config.ignore_client_order = true;
        // No session resumption, neither session ids nor tickets: a resumed
        // session skips the client-certificate check, so a certificate revoked
        // since (or a CA dropped from the bundle) would get back in. Every
        // connection runs the full check against the trust state in force.
        server_config.session_storage = Arc::new(NoServerSessionStorage {});
        server_config.send_tls13_tickets = 0;

        let crl_monitor =
            CrlMonitor::new(crl_infos, kept.tls.crl_expired, kept.tls.crl_warning_days);
        Ok(Self {
            server_config: Arc::new(server_config),
            server_certificate,
            client_cas: kept.cas.iter().map(|ca| ca.subject.clone()).collect(),
            crl_monitor: Arc::new(crl_monitor),
            client_verifier,
            kept,
        })
    }
}

fn internal(source: &Path, problem: String) -> ConfigError {
    ConfigError::Invalid {
        path: source.to_path_buf(),
        key: "tls".into(),
        problem,
    }
}

fn load_server_identity(
    config: &Config,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, ServerCertificate), ConfigError> {
    let source = &config.source;
    let cert_file = ConfigFile::new(source, "tls.certificate", &config.tls.certificate);
    let key_file = ConfigFile::new(source, "tls.private_key", &config.tls.private_key);

    let chain = cert_file.certificates()?;
    let summary = check_server_certificate(&cert_file, &chain[0], &config.tls.server_name)?;

    let key_der = key_file.private_key()?;
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| key_file.error(format!("not a usable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|_| {
        key_file.error(format!(
            "the key does not belong to the certificate in {}; give the private key that was \
             issued with that certificate",
            config.tls.certificate.display()
        ))
    })?;
    Ok((certified, summary))
}

/// Checks the key type and size, the validity period and that the certificate
/// names `server_name`.
fn check_server_certificate(
    file: &ConfigFile<'_>,
    der: &CertificateDer<'_>,
    server_name: &str,
) -> Result<ServerCertificate, ConfigError> {
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| file.error(format!("the first certificate is not valid X.509: {e}")))?;

    let key = describe_key(&cert).map_err(|problem| file.error(problem))?;
    let now = SystemTime::now();
    let not_after = unix_to_system_time(cert.validity().not_after.timestamp());
    let not_before = unix_to_system_time(cert.validity().not_before.timestamp());
    if not_after <= now {
        return Err(file.error(format!(
            "the server certificate expired on {}; install a renewed certificate",
            humantime::format_rfc3339_seconds(not_after)
        )));
    }
    if not_before > now {
        return Err(file.error(format!(
            "the server certificate is not valid before {}; check the system clock or the certificate",
            humantime::format_rfc3339_seconds(not_before)
        )));
    }

    let parsed = ParsedCertificate::try_from(der)
        .map_err(|e| file.error(format!("the first certificate is not usable: {e}")))?;
    let name = ServerName::try_from(server_name.to_owned()).map_err(|_| {
        file.error(format!(
            "`{server_name}` (tls.server_name) is not a DNS name"
        ))
    })?;
    rustls::client::verify_server_name(&parsed, &name).map_err(|_| {
        file.error(format!(
            "the certificate does not name `{server_name}` (tls.server_name) in its subject \
             alternative names; issue one for that name"
        ))
    })?;

    Ok(ServerCertificate {
        subject: format_name(cert.subject()),
        issuer: format_name(cert.issuer()),
        not_after,
        key,
    })
}

/// `RSA <bits>` for RSA keys of at least [`MIN_RSA_BITS`], `ECDSA <curve>` for EC keys.
fn describe_key(cert: &X509Certificate<'_>) -> Result<String, String> {
    match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let bits = significant_bits(rsa.modulus);
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "the server certificate has a {bits}-bit RSA key; at least {MIN_RSA_BITS} bits \
                     are required, issue a new certificate with a larger key or an ECDSA key"
                ));
            }
            Ok(format!("RSA {bits}"))
        }
        Ok(PublicKey::EC(point)) => Ok(format!("ECDSA {}-bit", point.key_size())),
        _ => Err(
            "the server certificate's key is neither RSA nor ECDSA; issue one with an RSA (>= 2048 \
             bits) or ECDSA key"
                .into(),
        ),
    }
}

fn significant_bits(big_endian: &[u8]) -> usize {
    let trimmed: &[u8] = match big_endian.iter().position(|b| *b != 0) {
        Some(first) => &big_endian[first..],
        None => return 0,
    };
    trimmed.len() * 8 - trimmed[0].leading_zeros() as usize
}

pub(crate) fn unix_to_system_time(unix: i64) -> SystemTime {
    match u64::try_from(unix) {
        Ok(secs) => SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

/// A trusted client CA.
#[derive(Clone, Debug)]
struct ClientCa {
    subject: String,
    subject_der: Vec<u8>,
}

fn load_client_cas(config: &Config) -> Result<(RootCertStore, Vec<ClientCa>), ConfigError> {
    let file = ConfigFile::new(&config.source, "tls.client_ca", &config.tls.client_ca);
    let certs = file.certificates()?;
    let mut roots = RootCertStore::empty();
    let mut subjects = Vec::with_capacity(certs.len());
    for (index, der) in certs.into_iter().enumerate() {
        let position = index + 1;
        let (_, cert) = X509Certificate::from_der(der.as_ref())
            .map_err(|e| file.error(format!("certificate #{position} is not valid X.509: {e}")))?;
        let subject = format_name(cert.subject());
        if !cert.is_ca() {
            return Err(file.error(format!(
                "certificate #{position} ({subject}) is not a CA certificate (no basicConstraints \
                 CA:TRUE); list only the CA certificates that issue client certificates"
            )));
        }
        let subject_der = cert.subject().as_raw().to_vec();
        drop(cert);
        roots.add(der).map_err(|e| {
            file.error(format!(
                "certificate #{position} ({subject}) cannot be a trust anchor: {e}"
            ))
        })?;
        subjects.push(ClientCa {
            subject,
            subject_der,
        });
    }
    Ok((roots, subjects))
}

fn load_crls(
    kept: &Kept,
) -> Result<(Vec<CertificateRevocationListDer<'static>>, Vec<CrlInfo>), ConfigError> {
    let mut ders = Vec::new();
    let mut infos = Vec::new();
    for path in &kept.tls.crls {
        let file = ConfigFile::new(&kept.source, "tls.crls", path);
        let (info, der) = CrlInfo::load(&file)?;
        // Parse it the way the verifier will, so a bad CRL is blamed on its file.
        WebPkiClientVerifier::builder_with_provider(
            kept.roots.clone(),
            Arc::new(crypto_provider()),
        )
        .with_crls([der.clone()])
        .build()
        .map_err(|e| file.error(format!("the CRL is not usable: {e}")))?;
        let known_issuer = kept.cas.iter().any(|ca| ca.subject_der == info.issuer_der);
        if !known_issuer {
            // Normal for an intermediate CA that clients send along; a typo'd
            // file would show here too, so say it.
            tracing::info!(
                file = %path.display(), issuer = %info.issuer,
                "CRL issuer is not in tls.client_ca; it applies to certificates issued by that \
                 (intermediate) CA"
            );
        }
        ders.push(der);
        infos.push(info);
    }
    Ok((ders, infos))
}

fn build_verifier(
    kept: &Kept,
    crls: Vec<CertificateRevocationListDer<'static>>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, ConfigError> {
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(kept.roots.clone(), provider.clone())
            .with_crls(crls);
    if !kept.tls.crls.is_empty() {
        // A CA without a CRL of its own is not checked for revocation; one CRL
        // per issuing CA is the documented setup.
        builder = builder.allow_unknown_revocation_status();
    }
    if kept.tls.crl_expired == CrlExpiredPolicy::Refuse {
        builder = builder.enforce_revocation_expiration();
    }
    builder.build().map_err(|e| {
        ConfigFile::new(&kept.source, "tls.client_ca", &kept.tls.client_ca)
            .error(format!("cannot build the client-certificate verifier: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn significant_bits_ignores_sign_byte() {
        let mut modulus = vec![0u8; 257];
        modulus[1] = 0x80;
        assert_eq!(significant_bits(&modulus), 2048);
        assert_eq!(significant_bits(&[0x00, 0x01, 0x00]), 9);
        assert_eq!(significant_bits(&[]), 0);
    }

    #[test]
    fn provider_offers_only_aead_suites() {
        for suite in crypto_provider().cipher_suites {
            let name = format!("{:?}", suite.suite());
            assert!(
                name.contains("GCM") || name.contains("CHACHA20_POLY1305"),
                "{name}"
            );
        }
    }
}

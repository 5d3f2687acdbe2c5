//! A throw-away lab PKI made with rcgen: root CA, intermediate CA, server
//! certificate and one client certificate per access-test case.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

/// The server name every test uses.
pub const SERVER_NAME: &str = "befund.test";

/// A certificate with its key and the chain a client sends after it.
pub struct Issued {
    pub der: CertificateDer<'static>,
    pub pem: String,
    pub key: KeyPair,
    /// Further certificates the holder sends (intermediates).
    pub chain: Vec<CertificateDer<'static>>,
}

impl Issued {
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }

    /// Leaf first, then the chain.
    pub fn full_chain(&self) -> Vec<CertificateDer<'static>> {
        let mut all = vec![self.der.clone()];
        all.extend(self.chain.iter().cloned());
        all
    }

    pub fn chain_pem(&self) -> String {
        let mut pem = self.pem.clone();
        for cert in &self.chain {
            pem.push_str(&pem_of(cert));
        }
        pem
    }
}

fn pem_of(der: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// A CA that can issue certificates and CRLs.
pub struct Ca {
    pub cert: Issued,
    issuer: Issuer<'static, KeyPair>,
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "DE");
    dn.push(DnType::OrganizationName, "Labor Test");
    dn.push(DnType::CommonName, cn);
    dn
}

fn ca_params(dn: DistinguishedName) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = OffsetDateTime::now_utc() - Duration::days(30);
    params.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
    params
}

impl Ca {
    pub fn root(cn: &str) -> Self {
        Self::root_with_name(name(cn))
    }

    pub fn root_with_name(dn: DistinguishedName) -> Self {
        let key = KeyPair::generate().unwrap();
        let params = ca_params(dn);
        let cert = params.self_signed(&key).unwrap();
        let pem = cert.pem();
        let der = cert.der().clone();
        let issuer = Issuer::new(params, KeyPair::from_pem(&key.serialize_pem()).unwrap());
        Self {
            cert: Issued {
                der,
                pem,
                key,
                chain: vec![],
            },
            issuer,
        }
    }

    pub fn intermediate(&self, cn: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let params = ca_params(name(cn));
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let issuer = Issuer::new(params, KeyPair::from_pem(&key.serialize_pem()).unwrap());
        Self {
            cert: Issued {
                der: cert.der().clone(),
                pem: cert.pem(),
                key,
                chain: vec![],
            },
            issuer,
        }
    }

    /// Issues a certificate from `params` with a fresh ECDSA key.
    pub fn issue(&self, params: CertificateParams) -> Issued {
        self.issue_with_key(params, KeyPair::generate().unwrap())
    }

    pub fn issue_with_key(&self, params: CertificateParams, key: KeyPair) -> Issued {
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let mut chain = vec![];
        // An intermediate's holders send it along.
        if !self.cert.chain.is_empty() || self.is_intermediate() {
            chain.push(self.cert.der.clone());
        }
        Issued {
            der: cert.der().clone(),
            pem: cert.pem(),
            key,
            chain,
        }
    }

    fn is_intermediate(&self) -> bool {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, cert) = X509Certificate::from_der(self.cert.der.as_ref()).unwrap();
        cert.subject() != cert.issuer()
    }

    /// A CRL listing `revoked` serials, valid from `this_update` to `next_update`.
    pub fn crl(
        &self,
        revoked: &[SerialNumber],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Vec<u8> {
        CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: serial.clone(),
                    revocation_time: OffsetDateTime::now_utc() - Duration::hours(1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .unwrap()
        .pem()
        .unwrap()
        .into_bytes()
    }
}

/// Parameters of a client certificate for `cn`, valid now, EKU clientAuth.
pub fn client_params(cn: &str, serial: u64) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(cn);
    params.serial_number = Some(SerialNumber::from(serial));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
    params.not_after = OffsetDateTime::now_utc() + Duration::days(365);
    params
}

/// Serial of the revoked client certificate.
pub const REVOKED_SERIAL: u64 = 0x0b_ad_c0_de;

/// Serial of the valid client certificate (`Pki::valid`).
pub const VALID_SERIAL: u64 = 0x5f3a_09c2_e1d4_b7a8;

/// Everything the access tests need.
pub struct Pki {
    pub root: Ca,
    pub intermediate: Ca,
    pub server: Issued,
    /// Issued by the intermediate: valid, with its private key.
    pub valid: Issued,
    pub expired: Issued,
    pub not_yet_valid: Issued,
    /// Issued by an unrelated CA.
    pub other_ca: Issued,
    /// Self-signed, with the same subject as `valid`.
    pub self_issued: Issued,
    /// Issued by a forged CA that has the same name as the intermediate.
    pub forged_issuer: Issued,
    /// EKU serverAuth only.
    pub server_auth_only: Issued,
    /// No EKU extension at all.
    pub no_eku: Issued,
    /// Listed in the intermediate's CRL.
    pub revoked: Issued,
}

impl Pki {
    pub fn new() -> Self {
        let root = Ca::root("Befund Test Root CA");
        let intermediate = root.intermediate("Befund Test Client CA");

        let mut server_params = CertificateParams::new(vec![SERVER_NAME.to_owned()]).unwrap();
        server_params.distinguished_name = name(SERVER_NAME);
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
        server_params.not_after = OffsetDateTime::now_utc() + Duration::days(365);
        let rsa =
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
        let server = root.issue_with_key(server_params, rsa);

        let valid = intermediate.issue(client_params("Dr. Erika Muster", VALID_SERIAL));

        let mut params = client_params("Dr. Alt", 11);
        params.not_before = OffsetDateTime::now_utc() - Duration::days(400);
        params.not_after = OffsetDateTime::now_utc() - Duration::days(2);
        let expired = intermediate.issue(params);

        let mut params = client_params("Dr. Neu", 12);
        params.not_before = OffsetDateTime::now_utc() + Duration::days(2);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(400);
        let not_yet_valid = intermediate.issue(params);

        let other = Ca::root("Some Other CA");
        let other_ca = other.issue(client_params("Dr. Erika Muster", 13));

        let self_issued = {
            let key = KeyPair::generate().unwrap();
            let params = client_params("Dr. Erika Muster", VALID_SERIAL);
            let cert = params.self_signed(&key).unwrap();
            Issued {
                der: cert.der().clone(),
                pem: cert.pem(),
                key,
                chain: vec![],
            }
        };

        let forged_ca = {
            let forged_root = Ca::root_with_name(name("Befund Test Root CA"));
            forged_root.intermediate("Befund Test Client CA")
        };
        let forged_issuer = forged_ca.issue(client_params("Dr. Erika Muster", 14));

        let mut params = client_params("Server Zertifikat", 15);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_auth_only = intermediate.issue(params);

        let mut params = client_params("Ohne EKU", 16);
        params.extended_key_usages = vec![];
        let no_eku = intermediate.issue(params);

        let revoked = intermediate.issue(client_params("Dr. Gesperrt", REVOKED_SERIAL));

        Self {
            root,
            intermediate,
            server,
            valid,
            expired,
            not_yet_valid,
            other_ca,
            self_issued,
            forged_issuer,
            server_auth_only,
            no_eku,
            revoked,
        }
    }

    /// CRLs of the root and the intermediate, valid from yesterday for `days_left` more days
    /// (negative: expired that many days ago).
    pub fn crls(&self, days_left: i64) -> (Vec<u8>, Vec<u8>) {
        let now = OffsetDateTime::now_utc();
        let next = now + Duration::days(days_left);
        let this = next.min(now) - Duration::days(7);
        (
            self.root.crl(&[], this, next),
            self.intermediate
                .crl(&[SerialNumber::from(REVOKED_SERIAL)], this, next),
        )
    }
}

/// Writes `content` to `dir/name` with `mode`.
pub fn write_file(dir: &Path, name: &str, content: &[u8], mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

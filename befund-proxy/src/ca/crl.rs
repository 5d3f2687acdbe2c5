//! Certificate revocation lists: every revoked certificate, signed by the CA,
//! numbered from the registry so each CRL's number is larger than the last.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{CertificateRevocationListParams, RevokedCertParams, SerialNumber};
use time::{Duration, OffsetDateTime};

use super::authority::CertificateAuthority;
use super::error::CaError;
use super::files::{PRIVATE_MODE, PUBLIC_MODE, PlacedFile, StagedFile};
use super::inspect::{self, parse_rfc3339};
use super::registry::RegistryTx;

/// Default validity of a CRL. The timer re-issues it daily, so a week leaves
/// six days to notice a failed timer before clients reject the stale CRL.
pub const DEFAULT_CRL_DAYS: u32 = 7;

/// Why a certificate was revoked (RFC 5280 section 5.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationReason {
    /// No reason given (the CRL entry then carries no reason code).
    Unspecified,
    /// The private key was lost, stolen or exposed.
    KeyCompromise,
    /// The CA's own key was compromised.
    CaCompromise,
    /// The holder left the practice, or the practice changed.
    AffiliationChanged,
    /// A new certificate replaces this one.
    Superseded,
    /// The certificate is no longer needed (practice closed, access ended).
    CessationOfOperation,
    /// The holder may no longer access reports.
    PrivilegeWithdrawn,
}

impl RevocationReason {
    /// The name the registry and the CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "key-compromise",
            Self::CaCompromise => "ca-compromise",
            Self::AffiliationChanged => "affiliation-changed",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessation-of-operation",
            Self::PrivilegeWithdrawn => "privilege-withdrawn",
        }
    }

    /// Reads what [`RevocationReason::as_str`] wrote.
    pub fn from_str_opt(text: &str) -> Option<Self> {
        [
            Self::Unspecified,
            Self::KeyCompromise,
            Self::CaCompromise,
            Self::AffiliationChanged,
            Self::Superseded,
            Self::CessationOfOperation,
            Self::PrivilegeWithdrawn,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == text)
    }

    /// The reason code for the CRL entry; RFC 5280 says to leave it out for
    /// `unspecified`.
    fn code(self) -> Option<rcgen::RevocationReason> {
        use rcgen::RevocationReason as R;
        match self {
            Self::Unspecified => None,
            Self::KeyCompromise => Some(R::KeyCompromise),
            Self::CaCompromise => Some(R::CaCompromise),
            Self::AffiliationChanged => Some(R::AffiliationChanged),
            Self::Superseded => Some(R::Superseded),
            Self::CessationOfOperation => Some(R::CessationOfOperation),
            Self::PrivilegeWithdrawn => Some(R::PrivilegeWithdrawn),
        }
    }
}

/// A signed CRL, not yet written anywhere.
#[derive(Debug, Clone)]
pub struct SignedCrl {
    pub number: u64,
    pub this_update: OffsetDateTime,
    pub next_update: OffsetDateTime,
    pub revoked: usize,
    pub pem: String,
}

/// Signs a CRL listing every revoked certificate in the registry, with the
/// next CRL number. Runs inside `tx`, so the number is taken atomically; it
/// is used up once `tx` commits, whether or not the CRL gets written.
pub fn sign_crl(
    ca: &CertificateAuthority,
    tx: &RegistryTx<'_>,
    days: u32,
) -> Result<SignedCrl, CaError> {
    if days == 0 {
        return Err(CaError::invalid(
            "CRL validity",
            "--days must be at least 1",
        ));
    }
    let number = tx.next_crl_number()?;
    let revoked = tx.revoked()?;
    let this_update = inspect::now();
    let next_update = this_update + Duration::days(i64::from(days));

    let revoked_certs: Vec<RevokedCertParams> = revoked
        .iter()
        .map(|entry| RevokedCertParams {
            serial_number: SerialNumber::from_slice(entry.serial.as_bytes()),
            revocation_time: parse_rfc3339(&entry.revoked_at).unwrap_or(this_update),
            reason_code: entry.reason.code(),
            invalidity_date: None,
        })
        .collect();
    let params = CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: ca.key_identifier_method(),
    };
    let crl = params
        .signed_by(ca.issuer())
        .map_err(|source| CaError::Sign {
            what: "CRL",
            source,
        })?;

    Ok(SignedCrl {
        number,
        this_update,
        next_update,
        revoked: revoked.len(),
        pem: crl.pem().map_err(|source| CaError::Sign {
            what: "CRL",
            source,
        })?,
    })
}

/// Serialises CRL publication for one CA directory, so that a CRL with a
/// higher number is never overwritten by one with a lower number.
#[derive(Debug)]
pub struct CrlLock {
    _file: File,
}

impl CrlLock {
    /// Waits for and takes the lock of the CA in `dir`.
    pub fn acquire(dir: &Path) -> Result<Self, CaError> {
        let path = dir.join(".crl.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(PRIVATE_MODE)
            .open(&path)
            .map_err(CaError::io("open lock file", &path))?;
        file.lock().map_err(CaError::io("lock", &path))?;
        Ok(Self { _file: file })
    }
}

/// Writes a signed CRL to `out`, replacing the previous one atomically.
/// Call it while holding the [`CrlLock`].
pub fn write_crl(crl: &SignedCrl, out: &Path) -> Result<PathBuf, CaError> {
    let placed: PlacedFile =
        StagedFile::write(out, crl.pem.as_bytes(), PUBLIC_MODE)?.place(true)?;
    Ok(placed.path().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_round_trip() {
        for name in [
            "unspecified",
            "key-compromise",
            "ca-compromise",
            "affiliation-changed",
            "superseded",
            "cessation-of-operation",
            "privilege-withdrawn",
        ] {
            assert_eq!(RevocationReason::from_str_opt(name).unwrap().as_str(), name);
        }
        assert_eq!(RevocationReason::from_str_opt("certificate-hold"), None);
    }

    #[test]
    fn unspecified_reason_has_no_reason_code() {
        assert_eq!(RevocationReason::Unspecified.code(), None);
        assert_eq!(
            RevocationReason::KeyCompromise.code(),
            Some(rcgen::RevocationReason::KeyCompromise)
        );
    }

    #[test]
    fn each_crl_gets_a_higher_number_and_names_the_ca_key_and_revoked_serials() {
        use crate::ca::{CaDir, CaKeyType, InitOptions};
        let tmp = tempfile::tempdir().unwrap();
        let dir = CaDir::new(tmp.path().join("ca"));
        let options = InitOptions {
            key: CaKeyType::EcdsaP384,
            common_name: "Test CA".into(),
            organization: None,
            days: 30,
        };
        let ca = CertificateAuthority::init(&dir, &options).unwrap();
        let mut registry = ca.registry().unwrap();

        let mut numbers = Vec::new();
        for _ in 0..3 {
            let tx = registry.begin().unwrap();
            let crl = sign_crl(&ca, &tx, 1).unwrap();
            tx.commit().unwrap();
            let der = pem::parse(&crl.pem).unwrap().into_contents();
            let (_, parsed) = x509_parser::parse_x509_crl(&der).unwrap();
            let number = parsed.crl_number().unwrap().to_u64_digits()[0];
            assert_eq!(number, crl.number);
            assert!(crl.this_update < crl.next_update);
            numbers.push(number);
        }

        // `ca init` published number 1.
        assert_eq!(numbers, vec![2, 3, 4]);
        let tx = registry.begin().unwrap();
        assert!(matches!(
            sign_crl(&ca, &tx, 0),
            Err(CaError::InvalidInput { .. })
        ));
    }
}

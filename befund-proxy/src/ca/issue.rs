//! Issuing certificates: a physician's client certificate, bound to a
//! Befundserver account, and the proxy's server certificate.
//!
//! The order makes a failure leave nothing behind: the key is generated
//! first (outside the registry lock, it is the slow part), then under the
//! lock the serial is drawn and checked, the certificate signed and checked,
//! its row inserted and its files moved into place, and only then is the
//! registry change committed. A failure at any step rolls back the row and
//! removes the files.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber,
};
use time::Duration;

use super::authority::{self, BACKDATE, CertificateAuthority};
use super::error::CaError;
use super::files::{self, PRIVATE_MODE, PUBLIC_MODE, PlacedFile, StagedFile};
use super::inspect::{self, CertInfo};
use super::keys::LeafKeyType;
use super::registry::{CertKind, CertRecord, CertStatus, Registry, RegistryTx};
use super::serial::Serial;

/// Mode of the directories holding issued keys.
const KEY_DIR_MODE: u32 = 0o700;

/// Longest validity accepted for a client or server certificate.
const MAX_DAYS: u32 = 3650;

/// How often a fresh random serial is drawn when the first is taken. With
/// 127 random bits a second draw is already never needed in practice.
const SERIAL_ATTEMPTS: usize = 8;

/// A physician's client certificate.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    pub common_name: String,
    /// The Befundserver account the certificate is bound to.
    pub account: String,
    pub organization: Option<String>,
    pub days: u32,
    pub key: LeafKeyType,
    /// Where the files go; the CA's `issued/` by default.
    pub out_dir: Option<PathBuf>,
}

/// The proxy's server certificate.
#[derive(Debug, Clone)]
pub struct ServerRequest {
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub organization: Option<String>,
    pub days: u32,
    pub key: LeafKeyType,
    /// Where the files go; the CA's `server/` by default.
    pub out_dir: Option<PathBuf>,
    /// Replace existing `server.crt`/`server.key`/`server-chain.pem`; the
    /// old ones are kept as `*.previous`.
    pub replace: bool,
}

/// A certificate that was issued and recorded.
#[derive(Debug, Clone)]
pub struct Issued {
    pub record: CertRecord,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub chain_path: Option<PathBuf>,
}

/// Issues a client certificate: clientAuth only, CA:FALSE,
/// digitalSignature, bound to `account` in the registry.
pub fn issue_client(
    ca: &CertificateAuthority,
    registry: &mut Registry,
    request: &ClientRequest,
) -> Result<Issued, CaError> {
    let ClientRequest {
        common_name,
        account,
        organization,
        days,
        key,
        out_dir,
    } = request;
    authority::check_text("CN", common_name, 64)?;
    authority::check_text("account", account, 128)?;
    check_days(*days)?;
    let organization = organization.clone().or_else(|| ca_organization(ca));

    let mut params = CertificateParams::default();
    params.distinguished_name = authority::distinguished_name(common_name, organization.as_deref());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];

    let out_dir = out_dir.clone().unwrap_or_else(|| ca.dir().issued());
    let stem = format!("{}-", file_stem(common_name));
    let plan = Plan {
        kind: CertKind::Client,
        account: Some(account.clone()),
        key_type: *key,
        days: *days,
        out_dir,
        names: FileNames::PerSerial { stem },
        replace: false,
    };
    issue(ca, registry, params, &plan)
}

/// Issues the proxy's server certificate: serverAuth only, the DNS names
/// and addresses as subjectAltName, and a chain file (leaf, then CA).
pub fn issue_server(
    ca: &CertificateAuthority,
    registry: &mut Registry,
    request: &ServerRequest,
) -> Result<Issued, CaError> {
    let ServerRequest {
        dns_names,
        ip_addresses,
        organization,
        days,
        key,
        out_dir,
        replace,
    } = request;
    if dns_names.is_empty() && ip_addresses.is_empty() {
        return Err(CaError::invalid(
            "server name",
            "give at least one --dns or --ip",
        ));
    }
    check_days(*days)?;
    let mut sans = Vec::new();
    for name in dns_names {
        check_dns_name(name)?;
        sans.push(SanType::DnsName(name.clone().try_into().map_err(|_| {
            CaError::invalid("DNS name", format!("`{name}` is not an IA5 string"))
        })?));
    }
    sans.extend(ip_addresses.iter().copied().map(SanType::IpAddress));
    let common_name = dns_names
        .first()
        .cloned()
        .unwrap_or_else(|| ip_addresses[0].to_string());
    let organization = organization.clone().or_else(|| ca_organization(ca));

    let mut params = CertificateParams::default();
    params.distinguished_name =
        authority::distinguished_name(&common_name, organization.as_deref());
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if key.is_rsa() {
        params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];

    let plan = Plan {
        kind: CertKind::Server,
        account: None,
        key_type: *key,
        days: *days,
        out_dir: out_dir.clone().unwrap_or_else(|| ca.dir().server()),
        names: FileNames::Fixed,
        replace: *replace,
    };
    issue(ca, registry, params, &plan)
}

/// How the output files are named.
#[derive(Debug, Clone)]
enum FileNames {
    /// `STEM<serial>.crt` and `.key`: never collide, nothing is overwritten.
    PerSerial { stem: String },
    /// `server.crt`, `server.key`, `server-chain.pem`: the names the proxy's
    /// configuration points at.
    Fixed,
}

#[derive(Debug, Clone)]
struct Plan {
    kind: CertKind,
    account: Option<String>,
    key_type: LeafKeyType,
    days: u32,
    out_dir: PathBuf,
    names: FileNames,
    replace: bool,
}

fn issue(
    ca: &CertificateAuthority,
    registry: &mut Registry,
    mut params: CertificateParams,
    plan: &Plan,
) -> Result<Issued, CaError> {
    let now = inspect::now();
    let not_after = now + Duration::days(i64::from(plan.days));
    let ca_end = ca.info().not_after;
    if not_after > ca_end {
        return Err(CaError::invalid(
            "validity",
            format!(
                "the CA certificate is valid only until {}, before the requested end {}; \
                 ask for fewer --days or create a new CA",
                inspect::rfc3339(ca_end),
                inspect::rfc3339(not_after)
            ),
        ));
    }
    let key = plan.key_type.generate()?;
    files::ensure_dir(&plan.out_dir, KEY_DIR_MODE)?;

    let tx = registry.begin()?;
    let serial = fresh_serial(&tx)?;
    params.serial_number = Some(SerialNumber::from_slice(serial.as_bytes()));
    params.not_before = now - BACKDATE;
    params.not_after = not_after;
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;

    let cert = params
        .signed_by(&key, ca.issuer())
        .map_err(|source| CaError::Sign {
            what: "certificate",
            source,
        })?;
    ca.check_issued(cert.der())?;
    let info = CertInfo::from_der(cert.der()).map_err(CaError::SelfCheck)?;

    let paths = OutputPaths::new(&plan.out_dir, &plan.names, &info.serial);
    let record = record(plan, &info, cert.pem(), &paths, now);
    tx.insert(&record)?;

    let placed = write_files(ca, &paths, &cert.pem(), &key, plan.replace)?;
    if let Err(e) = tx.commit() {
        placed.undo();
        return Err(e);
    }
    placed.keep();

    Ok(Issued {
        record,
        cert_path: paths.cert,
        key_path: paths.key,
        chain_path: paths.chain,
    })
}

fn fresh_serial(tx: &RegistryTx<'_>) -> Result<Serial, CaError> {
    for _ in 0..SERIAL_ATTEMPTS {
        let serial = Serial::random()?;
        if tx.serial_is_free(&serial)? {
            return Ok(serial);
        }
    }
    Err(CaError::invalid(
        "random source",
        "every drawn serial number was taken; the system's random number generator is broken",
    ))
}

fn record(
    plan: &Plan,
    info: &CertInfo,
    cert_pem: String,
    paths: &OutputPaths,
    now: time::OffsetDateTime,
) -> CertRecord {
    CertRecord {
        serial: info.serial.to_string(),
        kind: plan.kind,
        subject: info.subject.clone(),
        cn: info.common_name.clone().unwrap_or_default(),
        account: plan.account.clone(),
        key_type: info.key_type.clone(),
        not_before: inspect::rfc3339(info.not_before),
        not_after: inspect::rfc3339(info.not_after),
        issued_at: inspect::rfc3339(now),
        fingerprint: info.fingerprint.clone(),
        status: CertStatus::Valid,
        revocation: None,
        cert_pem,
        cert_path: Some(absolute(&paths.cert)),
        key_path: Some(absolute(&paths.key)),
    }
}

#[derive(Debug)]
struct OutputPaths {
    cert: PathBuf,
    key: PathBuf,
    chain: Option<PathBuf>,
}

impl OutputPaths {
    fn new(dir: &Path, names: &FileNames, serial: &Serial) -> Self {
        match names {
            FileNames::PerSerial { stem } => Self {
                cert: dir.join(format!("{stem}{serial}.crt")),
                key: dir.join(format!("{stem}{serial}.key")),
                chain: None,
            },
            FileNames::Fixed => Self {
                cert: dir.join("server.crt"),
                key: dir.join("server.key"),
                chain: Some(dir.join("server-chain.pem")),
            },
        }
    }
}

/// Files moved into place, and the previous versions they replaced.
struct Placed {
    files: Vec<PlacedFile>,
    previous: Vec<(PathBuf, PathBuf)>,
}

impl Placed {
    /// Removes the new files and puts the previous ones back.
    fn undo(self) {
        self.files.into_iter().for_each(PlacedFile::undo);
        for (backup, original) in self.previous {
            // Best effort: report the original failure, not this one.
            let _ = fs::rename(backup, original);
        }
    }

    fn keep(self) {}
}

fn write_files(
    ca: &CertificateAuthority,
    paths: &OutputPaths,
    cert_pem: &str,
    key: &KeyPair,
    replace: bool,
) -> Result<Placed, CaError> {
    let mut staged = vec![
        StagedFile::write(&paths.key, key.serialize_pem().as_bytes(), PRIVATE_MODE)?,
        StagedFile::write(&paths.cert, cert_pem.as_bytes(), PUBLIC_MODE)?,
    ];
    if let Some(chain) = &paths.chain {
        let contents = format!("{cert_pem}{}", ca.cert_pem());
        staged.push(StagedFile::write(chain, contents.as_bytes(), PUBLIC_MODE)?);
    }

    let mut previous = Vec::new();
    if replace {
        for file in &staged {
            let original = file.dest().to_owned();
            if original.exists() {
                let backup = PathBuf::from(format!("{}.previous", original.display()));
                fs::rename(&original, &backup).map_err(CaError::io("keep a copy of", &original))?;
                previous.push((backup, original));
            }
        }
    }
    match files::place_all(staged, false) {
        Ok(files) => Ok(Placed { files, previous }),
        Err(e) => {
            Placed {
                files: Vec::new(),
                previous,
            }
            .undo();
            Err(e)
        }
    }
}

/// The CA's organization, used when a request names none.
fn ca_organization(ca: &CertificateAuthority) -> Option<String> {
    ca.info()
        .subject
        .split(',')
        .find_map(|rdn| rdn.strip_prefix("O="))
        .filter(|org| !org.contains('\\'))
        .map(str::to_owned)
}

/// A file name part from a CN: ASCII letters, digits, `.`, `-`, `_`; the
/// rest becomes `_`.
fn file_stem(common_name: &str) -> String {
    let stem: String = common_name
        .chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '_' => c,
            '.' => '.',
            _ => '_',
        })
        .collect();
    stem.trim_start_matches('.').to_owned()
}

fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_owned())
        .display()
        .to_string()
}

fn check_days(days: u32) -> Result<(), CaError> {
    if (1..=MAX_DAYS).contains(&days) {
        Ok(())
    } else {
        Err(CaError::invalid(
            "validity",
            format!("--days must be between 1 and {MAX_DAYS}"),
        ))
    }
}

fn check_dns_name(name: &str) -> Result<(), CaError> {
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let ok = name.len() <= 253 && name.split('.').all(valid_label);
    if ok {
        Ok(())
    } else {
        Err(CaError::invalid(
            "DNS name",
            format!("`{name}` is not a host name (letters, digits, `-`, dots between labels)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{CaDir, CaKeyType, InitOptions};

    fn test_ca(tmp: &tempfile::TempDir) -> CertificateAuthority {
        let options = InitOptions {
            key: CaKeyType::EcdsaP384,
            common_name: "Test CA".into(),
            organization: Some("Labor Test".into()),
            days: 365,
        };
        CertificateAuthority::init(&CaDir::new(tmp.path().join("ca")), &options).unwrap()
    }

    fn server_request(replace: bool) -> ServerRequest {
        ServerRequest {
            dns_names: vec!["befund.example".into()],
            ip_addresses: vec![],
            organization: None,
            days: 30,
            key: LeafKeyType::EcdsaP256,
            out_dir: None,
            replace,
        }
    }

    #[test]
    fn failed_issue_leaves_no_registry_row_and_no_new_file() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = test_ca(&tmp);
        let mut registry = ca.registry().unwrap();
        let server_dir = ca.dir().server();
        fs::create_dir_all(&server_dir).unwrap();
        fs::write(server_dir.join("server-chain.pem"), "old chain").unwrap();

        let err = issue_server(&ca, &mut registry, &server_request(false)).unwrap_err();

        assert!(matches!(err, CaError::OutputExists { .. }), "{err}");
        assert!(registry.list().unwrap().is_empty());
        let names: Vec<_> = fs::read_dir(&server_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["server-chain.pem".to_owned()]);
        assert_eq!(
            fs::read_to_string(server_dir.join("server-chain.pem")).unwrap(),
            "old chain"
        );
    }

    #[test]
    fn certificate_outliving_the_ca_is_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = test_ca(&tmp);
        let mut registry = ca.registry().unwrap();
        let mut request = server_request(false);
        request.days = 366;

        let err = issue_server(&ca, &mut registry, &request).unwrap_err();

        assert!(err.to_string().contains("fewer --days"), "{err}");
        assert!(!ca.dir().server().exists());
        assert!(registry.list().unwrap().is_empty());
    }

    #[test]
    fn replaced_server_certificate_keeps_the_previous_files() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = test_ca(&tmp);
        let mut registry = ca.registry().unwrap();
        let first = issue_server(&ca, &mut registry, &server_request(false)).unwrap();
        let first_pem = fs::read_to_string(&first.cert_path).unwrap();

        let second = issue_server(&ca, &mut registry, &server_request(true)).unwrap();

        assert_ne!(first.record.serial, second.record.serial);
        let previous = PathBuf::from(format!("{}.previous", second.cert_path.display()));
        assert_eq!(fs::read_to_string(previous).unwrap(), first_pem);
        assert_eq!(registry.list().unwrap().len(), 2);
    }

    #[test]
    fn client_certificate_inherits_the_ca_organization_and_is_bound_to_the_account() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = test_ca(&tmp);
        let mut registry = ca.registry().unwrap();
        let request = ClientRequest {
            common_name: "ARZT0001".into(),
            account: "dr.mueller".into(),
            organization: None,
            days: 30,
            key: LeafKeyType::EcdsaP256,
            out_dir: None,
        };

        let issued = issue_client(&ca, &mut registry, &request).unwrap();

        assert_eq!(issued.record.subject, "CN=ARZT0001,O=Labor Test");
        let stored = &registry.find("ARZT0001").unwrap()[0];
        assert_eq!(stored.account.as_deref(), Some("dr.mueller"));
        assert_eq!(stored.fingerprint, issued.record.fingerprint);
        assert_eq!(stored.key_type, "ECDSA P-256");
    }

    #[test]
    fn file_stem_keeps_safe_characters_and_replaces_the_rest() {
        assert_eq!(file_stem("ARZT0001"), "ARZT0001");
        assert_eq!(file_stem("Dr. Müller/Praxis"), "Dr._M_ller_Praxis");
        assert_eq!(file_stem("../etc"), "_etc");
    }

    #[test]
    fn dns_names_must_be_host_names() {
        assert!(check_dns_name("befund.labor.example").is_ok());
        assert!(check_dns_name("localhost").is_ok());
        assert!(check_dns_name("bad_name.example").is_err());
        assert!(check_dns_name("-x.example").is_err());
        assert!(check_dns_name("a..b").is_err());
    }

    #[test]
    fn validity_outside_range_is_refused() {
        assert!(check_days(0).is_err());
        assert!(check_days(MAX_DAYS + 1).is_err());
        assert!(check_days(730).is_ok());
    }
}

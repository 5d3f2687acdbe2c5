//! `befundctl cert`: issue, list, show, revoke and export certificates of
//! the lab's internal CA.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::ca::CaDirArg;
use crate::ca::{
    self, CaError, CertInfo, CertRecord, CertificateAuthority, ClientRequest, CrlLock,
    DEFAULT_CRL_DAYS, LeafKeyType, Password, Pkcs12Mode, Registry, RevocationReason, ServerRequest,
};

/// Issue, list, show, revoke and export certificates.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Issue a physician's client certificate (clientAuth only, CA:FALSE,
    /// digitalSignature), bound to a Befundserver account. Writes the
    /// certificate and its key (mode 0600) and prints serial and fingerprint.
    Issue(IssueArgs),
    /// Issue the proxy's server certificate (serverAuth only) with a chain
    /// file: server.crt, server.key (0600) and server-chain.pem.
    Server(ServerArgs),
    /// List every certificate in the registry.
    List(ListArgs),
    /// Show a certificate: subject, serial, fingerprint, validity, status,
    /// bound account and key type.
    Show(ShowArgs),
    /// Revoke a certificate and publish a fresh CRL to the CA directory's
    /// crl.pem.
    Revoke(RevokeArgs),
    /// Export a client certificate with its key and the CA certificate as
    /// PKCS#12 for Windows, plus FILE.ps1, which imports it with a
    /// non-exportable key.
    Export(ExportArgs),
}

/// Arguments of `befundctl cert issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    #[command(flatten)]
    pub dir: CaDirArg,
    /// Common name, e.g. the physician's certificate ID (ARZT0001).
    #[arg(long, value_name = "NAME")]
    pub cn: String,
    /// The Befundserver account the certificate is bound to.
    #[arg(long, alias = "account", value_name = "ACCOUNT")]
    pub user: String,
    /// Validity in days.
    #[arg(long, value_name = "N", default_value_t = 730)]
    pub days: u32,
    /// Key type; RSA 2048 works on every Windows version and smartcard.
    #[arg(long, value_enum, default_value_t = LeafKeyType::Rsa2048)]
    pub key: LeafKeyType,
    /// Organization (O); defaults to the CA's.
    #[arg(long, value_name = "NAME")]
    pub org: Option<String>,
    /// Output directory (default: DIR/issued).
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Arguments of `befundctl cert server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub dir: CaDirArg,
    /// DNS name clients connect to (repeatable); the first is the CN.
    #[arg(long = "dns", value_name = "NAME")]
    pub dns: Vec<String>,
    /// IP address clients connect to (repeatable).
    #[arg(long = "ip", value_name = "ADDR")]
    pub ip: Vec<IpAddr>,
    /// Validity in days.
    #[arg(long, value_name = "N", default_value_t = 397)]
    pub days: u32,
    /// Key type.
    #[arg(long, value_enum, default_value_t = LeafKeyType::Rsa3072)]
    pub key: LeafKeyType,
    /// Organization (O); defaults to the CA's.
    #[arg(long, value_name = "NAME")]
    pub org: Option<String>,
    /// Output directory (default: DIR/server).
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Replace an existing server certificate; the old files are kept as *.previous.
    #[arg(long)]
    pub replace: bool,
}

/// Arguments of `befundctl cert list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub dir: CaDirArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `befundctl cert show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub dir: CaDirArg,
    /// Serial number (hex) or CN; a CN shows every certificate with it.
    #[arg(value_name = "SERIAL|CN")]
    pub selector: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `befundctl cert revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub dir: CaDirArg,
    /// Serial number (hex) or CN of the certificate.
    #[arg(value_name = "SERIAL|CN")]
    pub selector: String,
    /// Why (RFC 5280).
    #[arg(long, value_enum)]
    pub reason: RevocationReason,
    /// Validity of the new CRL in days.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CRL_DAYS)]
    pub crl_days: u32,
}

/// Arguments of `befundctl cert export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub dir: CaDirArg,
    /// Serial number (hex) or CN of a client certificate.
    #[arg(value_name = "SERIAL|CN")]
    pub selector: String,
    /// The PKCS#12 file to write (mode 0600); FILE.ps1 is written next to it.
    #[arg(long, value_name = "FILE")]
    pub p12: PathBuf,
    /// File holding the password (one line; must not be empty).
    #[arg(long, value_name = "F")]
    pub password_file: PathBuf,
    /// 3DES and SHA-1 instead of AES-256-CBC and PBKDF2/SHA-256, for Windows
    /// versions before Windows 10 1709 / Server 2019.
    #[arg(long)]
    pub legacy: bool,
}

impl CertCommand {
    /// Runs the subcommand.
    pub fn run(self) -> Result<(), CaError> {
        match self {
            Self::Issue(args) => issue(args),
            Self::Server(args) => server(args),
            Self::List(args) => list(args),
            Self::Show(args) => show(args),
            Self::Revoke(args) => revoke(args),
            Self::Export(args) => export(args),
        }
    }
}

fn issue(args: IssueArgs) -> Result<(), CaError> {
    let IssueArgs {
        dir,
        cn,
        user,
        days,
        key,
        org,
        out_dir,
    } = args;
    let ca = CertificateAuthority::open(&dir.ca_dir())?;
    let mut registry = ca.registry()?;
    let request = ClientRequest {
        common_name: cn,
        account: user,
        organization: org,
        days,
        key,
        out_dir,
    };
    let issued = ca::issue_client(&ca, &mut registry, &request)?;

    println!("issued client certificate {}", issued.record.subject);
    println!("  serial:      {}", issued.record.serial);
    println!("  SHA-256:     {}", issued.record.fingerprint);
    println!("  account:     {}", request.account);
    println!("  valid until: {}", issued.record.not_after);
    println!("  certificate: {}", issued.cert_path.display());
    println!("  key:         {} (mode 0600)", issued.key_path.display());
    Ok(())
}

fn server(args: ServerArgs) -> Result<(), CaError> {
    let ServerArgs {
        dir,
        dns,
        ip,
        days,
        key,
        org,
        out_dir,
        replace,
    } = args;
    let ca = CertificateAuthority::open(&dir.ca_dir())?;
    let mut registry = ca.registry()?;
    let request = ServerRequest {
        dns_names: dns,
        ip_addresses: ip,
        organization: org,
        days,
        key,
        out_dir,
        replace,
    };
    let issued = ca::issue_server(&ca, &mut registry, &request)?;

    println!("issued server certificate {}", issued.record.subject);
    println!("  serial:      {}", issued.record.serial);
    println!("  SHA-256:     {}", issued.record.fingerprint);
    println!("  valid until: {}", issued.record.not_after);
    println!("  certificate: {}", issued.cert_path.display());
    println!("  key:         {} (mode 0600)", issued.key_path.display());
    if let Some(chain) = &issued.chain_path {
        println!("  chain:       {}", chain.display());
    }
    Ok(())
}

fn list(args: ListArgs) -> Result<(), CaError> {
    let registry = open_registry(&args.dir)?;
    let records = registry.list()?;
    if args.json {
        return emit(&json(&records));
    }

    let mut out = format!(
        "{:<32}  {:<6}  {:<20}  {:<16}  {:<20}  STATUS\n",
        "SERIAL", "KIND", "CN", "ACCOUNT", "NOT AFTER"
    );
    for record in &records {
        let _ = writeln!(
            out,
            "{:<32}  {:<6}  {:<20}  {:<16}  {:<20}  {}",
            record.serial,
            kind_name(record),
            record.cn,
            record.account.as_deref().unwrap_or("-"),
            record.not_after,
            status(record)
        );
    }
    emit(&out)
}

fn show(args: ShowArgs) -> Result<(), CaError> {
    let registry = open_registry(&args.dir)?;
    let records = registry.find(&args.selector)?;
    if records.is_empty() {
        return Err(CaError::NotFound(args.selector));
    }
    if args.json {
        return emit(&json(&records));
    }

    let shown: Vec<String> = records.iter().map(describe).collect();
    emit(&shown.join("\n"))
}

fn describe(record: &CertRecord) -> String {
    let issuer = CertInfo::from_der(&pem_der(&record.cert_pem))
        .map(|info| info.issuer)
        .unwrap_or_default();
    let status = match &record.revocation {
        Some(revocation) => format!(
            "revoked at {} ({})",
            revocation.at,
            revocation.reason.as_str()
        ),
        None => status(record).to_owned(),
    };
    let mut out = String::new();
    let mut line = |label: &str, value: &str| {
        let _ = writeln!(out, "{label:<12} {value}");
    };
    line("subject:", &record.subject);
    line("issuer:", &issuer);
    line("serial:", &record.serial);
    line("kind:", kind_name(record));
    line("account:", record.account.as_deref().unwrap_or("-"));
    line("key type:", &record.key_type);
    line("SHA-256:", &record.fingerprint);
    line("not before:", &record.not_before);
    line("not after:", &record.not_after);
    line("issued at:", &record.issued_at);
    line("status:", &status);
    if let Some(path) = &record.cert_path {
        line("certificate:", path);
    }
    if let Some(path) = &record.key_path {
        line("key:", path);
    }
    out
}

fn revoke(args: RevokeArgs) -> Result<(), CaError> {
    let RevokeArgs {
        dir,
        selector,
        reason,
        crl_days,
    } = args;
    let ca_dir = dir.ca_dir();
    // The CA key is checked before anything changes.
    let ca = CertificateAuthority::open(&ca_dir)?;
    let _lock = CrlLock::acquire(ca_dir.root())?;
    let mut registry = ca.registry()?;

    let tx = registry.begin()?;
    let record = ca::single_valid(tx.find(&selector)?, &selector)?;
    let now = ca::rfc3339(ca::now());
    tx.revoke(&record.serial, &now, reason)?;
    let crl = ca::sign_crl(&ca, &tx, crl_days)?;
    tx.commit()?;

    println!(
        "revoked {} ({}, account {}) at {now}: {}",
        record.serial,
        record.subject,
        record.account.as_deref().unwrap_or("-"),
        reason.as_str()
    );
    let path = ca::write_crl(&crl, &ca_dir.crl()).map_err(|e| CaError::CrlNotWritten {
        dir: ca_dir.root().to_owned(),
        source: Box::new(e),
    })?;
    println!(
        "wrote CRL number {} to {} ({} revoked, next update {})",
        crl.number,
        path.display(),
        crl.revoked,
        ca::rfc3339(crl.next_update)
    );
    Ok(())
}

fn export(args: ExportArgs) -> Result<(), CaError> {
    let ExportArgs {
        dir,
        selector,
        p12,
        password_file,
        legacy,
    } = args;
    let password = Password::read(&password_file)?;
    let ca_dir = dir.ca_dir();
    let ca_der = ca::read_ca_cert(&ca_dir)?;
    let registry = Registry::open(&ca_dir.registry())?;
    registry.check_belongs_to(&ca::fingerprint(&ca_der))?;
    let record = ca::single_valid(registry.find(&selector)?, &selector)?;
    if let Some(revocation) = record.revocation {
        return Err(CaError::AlreadyRevoked {
            serial: record.serial,
            at: revocation.at,
        });
    }

    let mode = if legacy {
        Pkcs12Mode::Legacy
    } else {
        Pkcs12Mode::Modern
    };
    let exported = ca::export(&record, &ca_der, &p12, &password, mode)?;
    println!(
        "exported {} ({}) to {} ({})",
        record.serial,
        record.subject,
        exported.p12_path.display(),
        match mode {
            Pkcs12Mode::Modern => "AES-256-CBC, PBKDF2/SHA-256",
            Pkcs12Mode::Legacy => "3DES, SHA-1: for older Windows only",
        }
    );
    println!(
        "Windows import script (asks for the password, key not exportable): {}",
        exported.script_path.display()
    );
    Ok(())
}

fn open_registry(dir: &CaDirArg) -> Result<Registry, CaError> {
    let ca_dir = dir.ca_dir();
    let ca_der = ca::read_ca_cert(&ca_dir)?;
    let registry = Registry::open(&ca_dir.registry())?;
    registry.check_belongs_to(&ca::fingerprint(&ca_der))?;
    Ok(registry)
}

fn kind_name(record: &CertRecord) -> &'static str {
    match record.kind {
        ca::CertKind::Client => "client",
        ca::CertKind::Server => "server",
    }
}

/// `revoked`, `expired` or `valid`.
fn status(record: &CertRecord) -> &'static str {
    if record.is_revoked() {
        "revoked"
    } else if record.not_after < ca::rfc3339(ca::now()) {
        "expired"
    } else {
        "valid"
    }
}

fn pem_der(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text)
        .map(pem::Pem::into_contents)
        .unwrap_or_default()
}

fn json<T: serde::Serialize>(value: &T) -> String {
    // Serialising plain strings and options cannot fail.
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> Result<(), CaError> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CaError::Io {
            action: "write to",
            path: PathBuf::from("standard output"),
            source: e,
        }),
        _ => Ok(()),
    }
}

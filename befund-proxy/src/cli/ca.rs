//! `befundctl ca`: create the lab's internal CA or adopt an existing one.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::ca::{CaDir, CaError, CaKeyType, CertificateAuthority, InitOptions};

/// Where the CA lives unless `--dir` or `BEFUND_CA_DIR` says otherwise.
pub const DEFAULT_CA_DIR: &str = "/var/lib/befund/ca";

/// The CA directory argument every CA command takes.
#[derive(Debug, Clone, Args)]
pub struct CaDirArg {
    /// CA directory: ca.crt, ca.key (0600), registry.sqlite3, crl.pem, issued/, server/.
    #[arg(long, value_name = "DIR", env = "BEFUND_CA_DIR", default_value = DEFAULT_CA_DIR)]
    pub dir: PathBuf,
}

impl CaDirArg {
    /// The directory as a [`CaDir`].
    pub fn ca_dir(&self) -> CaDir {
        CaDir::new(&self.dir)
    }
}

/// Create the lab's internal CA, or adopt an existing one (e.g. Easy-RSA's).
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a new CA: key (mode 0600), self-signed certificate (SHA-256 or
    /// better), certificate registry and a first, empty CRL. Refuses to touch
    /// a directory that already holds a CA.
    Init(InitArgs),
    /// Adopt an existing CA so certificates already installed keep working.
    /// The certificate must be a CA (basicConstraints CA:TRUE) signed with
    /// SHA-256 or better, and the key must belong to it; the key is stored
    /// with mode 0600.
    Import(ImportArgs),
}

/// Arguments of `befundctl ca init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub dir: CaDirArg,
    /// Key type of the CA.
    #[arg(long, value_enum, default_value_t = CaKeyType::EcdsaP384)]
    pub key: CaKeyType,
    /// Common name of the CA certificate.
    #[arg(long, value_name = "NAME", default_value = "Befund Gateway CA")]
    pub cn: String,
    /// Organization (O) of the CA certificate, e.g. the lab's name; issued
    /// certificates inherit it.
    #[arg(long, value_name = "NAME")]
    pub org: Option<String>,
    /// Validity of the CA certificate in days.
    #[arg(long, value_name = "N", default_value_t = 3650)]
    pub days: u32,
}

/// Arguments of `befundctl ca import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub dir: CaDirArg,
    /// The CA certificate (PEM or DER), e.g. Easy-RSA's pki/ca.crt.
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// The CA's unencrypted private key (PEM), e.g. Easy-RSA's pki/private/ca.key.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
}

impl CaCommand {
    /// Runs the subcommand.
    pub fn run(self) -> Result<(), CaError> {
        match self {
            Self::Init(args) => init(args),
            Self::Import(args) => import(args),
        }
    }
}

fn init(args: InitArgs) -> Result<(), CaError> {
    let InitArgs {
        dir,
        key,
        cn,
        org,
        days,
    } = args;
    let dir = dir.ca_dir();
    let options = InitOptions {
        key,
        common_name: cn,
        organization: org,
        days,
    };
    let ca = CertificateAuthority::init(&dir, &options)?;
    println!(
        "created CA {} in {}",
        ca.info().subject,
        dir.root().display()
    );
    print_ca(&ca);
    Ok(())
}

fn import(args: ImportArgs) -> Result<(), CaError> {
    let ImportArgs { dir, cert, key } = args;
    let dir = dir.ca_dir();
    let ca = CertificateAuthority::import(&dir, &cert, &key)?;
    println!(
        "imported CA {} into {}",
        ca.info().subject,
        dir.root().display()
    );
    print_ca(&ca);
    Ok(())
}

fn print_ca(ca: &CertificateAuthority) {
    let dir = ca.dir();
    let info = ca.info();
    println!("  certificate: {}", dir.cert().display());
    println!(
        "  key:         {} (mode 0600; keep an offline backup)",
        dir.key().display()
    );
    println!("  registry:    {}", dir.registry().display());
    println!("  CRL:         {}", dir.crl().display());
    println!("  key type:    {}", info.key_type);
    println!("  serial:      {}", info.serial);
    println!("  valid until: {}", crate::ca::rfc3339(info.not_after));
    println!("  SHA-256:     {}", info.fingerprint);
}

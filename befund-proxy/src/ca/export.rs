//! PKCS#12 export for the physicians' Windows machines, and the PowerShell
//! snippet that imports the file with a non-exportable key.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
    PrivateKeyChain,
};
use sha2::{Digest, Sha256};

use super::error::CaError;
use super::files::{self, PRIVATE_MODE, PUBLIC_MODE, StagedFile};
use super::inspect;
use super::registry::CertRecord;

/// PBKDF2 iterations for the default export: costly for someone guessing
/// the password of a stolen file, still well under a second per import.
const MODERN_ITERATIONS: u32 = 100_000;

/// Iterations of the legacy export, as OpenSSL's and older Windows' own
/// exports use.
const LEGACY_ITERATIONS: u32 = 2048;

/// How the PKCS#12 file is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pkcs12Mode {
    /// AES-256-CBC with PBKDF2/HMAC-SHA-256, MAC with HMAC-SHA-256
    /// (Windows 10 1709 / Server 2019 and later).
    Modern,
    /// 3DES with the PKCS#12 SHA-1 KDF, MAC with HMAC-SHA-1, for older
    /// Windows versions that cannot read the modern form.
    Legacy,
}

/// Shortest transport password accepted. The file travels to the
/// physician's machine; a short password falls to an offline guess long
/// before the PBKDF2 iterations matter.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// A PKCS#12 password. Its `Debug` output does not show it.
pub struct Password(String);

impl Password {
    /// Reads the password from a file: the whole file, without one trailing
    /// newline (`\n` or `\r\n`). Refuses an empty password and one with
    /// more than one line.
    pub fn read(path: &Path) -> Result<Self, CaError> {
        let text = fs::read_to_string(path).map_err(CaError::io("read password file", path))?;
        Self::from_file_contents(text, path)
    }

    fn from_file_contents(mut text: String, path: &Path) -> Result<Self, CaError> {
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        if text.is_empty() {
            return Err(CaError::PasswordEmpty {
                path: path.to_owned(),
            });
        }
        if text.contains(['\n', '\r']) {
            return Err(CaError::PasswordMultiLine {
                path: path.to_owned(),
            });
        }
        if text.chars().count() < MIN_PASSWORD_CHARS {
            return Err(CaError::PasswordTooShort {
                path: path.to_owned(),
                min: MIN_PASSWORD_CHARS,
            });
        }
        Ok(Self(text))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub p12_path: PathBuf,
    pub script_path: PathBuf,
}

/// Exports a client certificate with its key and the CA certificate as a
/// PKCS#12 file, and writes `FILE.ps1` next to it.
pub fn export(
    record: &CertRecord,
    ca_cert_der: &[u8],
    p12_path: &Path,
    password: &Password,
    mode: Pkcs12Mode,
) -> Result<Exported, CaError> {
    let key_path = record
        .key_path
        .as_deref()
        .map(PathBuf::from)
        .ok_or_else(|| CaError::LeafKeyMissing {
            serial: record.serial.clone(),
            path: PathBuf::from("(no key recorded)"),
        })?;
    let key_text = files::read_private_key(&key_path).map_err(|e| match e {
        CaError::KeyMissing { path } => CaError::LeafKeyMissing {
            serial: record.serial.clone(),
            path,
        },
        other => other,
    })?;
    let key_der = pem::parse(&key_text)
        .map_err(|e| CaError::KeyParse {
            path: key_path.clone(),
            reason: e.to_string(),
        })?
        .into_contents();
    let leaf_der = inspect::certificates_from(record.cert_pem.as_bytes())
        .map_err(|reason| CaError::CertParse {
            path: PathBuf::from(format!("registry entry {}", record.serial)),
            reason,
        })?
        .remove(0);

    let p12 = pkcs12(&record.cn, &leaf_der, &key_der, ca_cert_der, password, mode)?;
    let script_path = PathBuf::from(format!("{}.ps1", p12_path.display()));
    let p12_name = p12_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let script = powershell_import_script(&p12_name, &record.cn);

    let staged = vec![
        StagedFile::write(p12_path, &p12, PRIVATE_MODE)?,
        StagedFile::write(&script_path, script.as_bytes(), PUBLIC_MODE)?,
    ];
    files::place_all(staged, true)?;
    Ok(Exported {
        p12_path: p12_path.to_owned(),
        script_path,
    })
}

/// Builds the PKCS#12 file: the key (friendly name: the CN) with the chain
/// leaf, CA.
pub fn pkcs12(
    friendly_name: &str,
    leaf_der: &[u8],
    key_pkcs8_der: &[u8],
    ca_der: &[u8],
    password: &Password,
    mode: Pkcs12Mode,
) -> Result<Vec<u8>, CaError> {
    let key = PrivateKey::from_der(key_pkcs8_der)?;
    let chain = [
        Certificate::from_der(leaf_der)?,
        Certificate::from_der(ca_der)?,
    ];
    let local_key_id = Sha256::digest(leaf_der).to_vec();
    let mut store = KeyStore::new();
    store.add_entry(
        friendly_name,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(local_key_id, key, chain)),
    );

    let writer = store.writer(password.expose());
    let writer = match mode {
        Pkcs12Mode::Modern => writer
            .encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
            .encryption_iterations(MODERN_ITERATIONS)
            .mac_algorithm(MacAlgorithm::HmacSha256)
            .mac_iterations(MODERN_ITERATIONS),
        Pkcs12Mode::Legacy => writer
            .encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
            .encryption_iterations(LEGACY_ITERATIONS)
            .mac_algorithm(MacAlgorithm::HmacSha1)
            .mac_iterations(LEGACY_ITERATIONS),
    };
    Ok(writer.write()?)
}

/// A PowerShell script that imports `p12_name` (in the script's folder) into
/// `Cert:\CurrentUser\My`. `Import-PfxCertificate` runs without
/// `-Exportable`, so Windows marks the private key non-exportable. The
/// script asks for the password; it never contains it.
pub fn powershell_import_script(p12_name: &str, common_name: &str) -> String {
    let file = powershell_quote(p12_name);
    let cn = powershell_quote(common_name);
    format!(
        "# Imports {p12_name} into the personal certificate store of the current user\r\n\
         # (Cert:\\CurrentUser\\My). Import-PfxCertificate runs without the flag that\r\n\
         # makes keys exportable, so the private key is stored as non-exportable:\r\n\
         # it cannot be copied off this machine. Keep this script next to {p12_name}; it asks for the password.\r\n\
         $ErrorActionPreference = 'Stop'\r\n\
         $pfxPath = Join-Path -Path $PSScriptRoot -ChildPath {file}\r\n\
         $password = Read-Host -Prompt ('Password for ' + {file}) -AsSecureString\r\n\
         $imported = Import-PfxCertificate -FilePath $pfxPath `\r\n\
         \x20   -CertStoreLocation 'Cert:\\CurrentUser\\My' -Password $password\r\n\
         $leaf = $imported | Where-Object {{ $_.HasPrivateKey }} | Select-Object -First 1\r\n\
         $leaf.FriendlyName = {cn}\r\n\
         Write-Host ('Imported ' + $leaf.Subject + ' (thumbprint ' + $leaf.Thumbprint + '), key not exportable.')\r\n"
    )
}

/// A PowerShell single-quoted string literal.
fn powershell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(contents: &str) -> Result<Password, CaError> {
        Password::from_file_contents(contents.to_owned(), Path::new("pw.txt"))
    }

    #[test]
    fn empty_password_file_is_refused() {
        assert!(matches!(password(""), Err(CaError::PasswordEmpty { .. })));
    }

    #[test]
    fn password_file_with_only_a_newline_is_refused() {
        assert!(matches!(password("\n"), Err(CaError::PasswordEmpty { .. })));
        assert!(matches!(
            password("\r\n"),
            Err(CaError::PasswordEmpty { .. })
        ));
    }

    #[test]
    fn one_trailing_newline_is_not_part_of_the_password() {
        assert_eq!(password("s3cret-pass\n").unwrap().expose(), "s3cret-pass");
        assert_eq!(password("s3cret-pass\r\n").unwrap().expose(), "s3cret-pass");
        assert_eq!(password("s3cret-pass").unwrap().expose(), "s3cret-pass");
        assert_eq!(password(" spaced out ").unwrap().expose(), " spaced out ");
    }

    #[test]
    fn short_password_is_refused() {
        assert!(matches!(
            password("x\n"),
            Err(CaError::PasswordTooShort { .. })
        ));
        assert!(matches!(
            password("123456789"),
            Err(CaError::PasswordTooShort { .. })
        ));
    }

    #[test]
    fn password_file_with_two_lines_is_refused() {
        assert!(matches!(
            password("a\nb\n"),
            Err(CaError::PasswordMultiLine { .. })
        ));
        assert!(matches!(
            password("a\n\n"),
            Err(CaError::PasswordMultiLine { .. })
        ));
    }

    #[test]
    fn password_debug_output_hides_the_password() {
        assert_eq!(
            format!("{:?}", password("s3cret-pass").unwrap()),
            "Password(..)"
        );
    }

    #[test]
    fn import_script_is_non_exportable_and_quotes_names() {
        let script = powershell_import_script("O'Brien.p12", "O'Brien");

        assert!(script.contains("Import-PfxCertificate"));
        assert!(script.contains("Cert:\\CurrentUser\\My"));
        assert!(!script.contains("-Exportable"));
        assert!(script.contains("'O''Brien.p12'"));
        assert!(script.contains("$leaf.FriendlyName = 'O''Brien'"));
    }

    #[test]
    fn pkcs12_reads_back_with_the_password_and_the_cn_as_friendly_name() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::default();
        ca_params.distinguished_name = crate::ca::authority::distinguished_name("Test CA", None);
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf_params = rcgen::CertificateParams::default();
        leaf_params.distinguished_name = crate::ca::authority::distinguished_name("ARZT0001", None);
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let pw = password("correct horse").unwrap();

        for mode in [Pkcs12Mode::Modern, Pkcs12Mode::Legacy] {
            let p12 = pkcs12(
                "ARZT0001",
                leaf.der(),
                leaf_key.serialized_der(),
                ca.der(),
                &pw,
                mode,
            )
            .unwrap();

            let store = KeyStore::from_pkcs12(
                &p12,
                "correct horse",
                p12_keystore::Pkcs12ImportPolicy::Strict,
            )
            .unwrap();
            let (alias, chain) = store.private_key_chain().unwrap();
            assert_eq!(alias, "ARZT0001");
            assert_eq!(chain.certs().len(), 2);
            assert!(KeyStore::from_pkcs12(&p12, "wrong", Default::default()).is_err());
        }
    }
}

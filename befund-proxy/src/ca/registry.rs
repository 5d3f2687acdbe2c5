//! The certificate registry: one SQLite database per CA that records every
//! certificate the CA signed, the account it is bound to, and whether it was
//! revoked. It also holds the CRL number.
//!
//! Rows are never deleted, so a serial, once used, stays taken. Every change
//! runs in an immediate transaction, which takes SQLite's write lock up front;
//! concurrent `befundctl` runs wait for it (busy timeout) instead of failing
//! or interleaving.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Row, TransactionBehavior, params};
use serde::Serialize;

use super::crl::RevocationReason;
use super::error::CaError;
use super::files::PRIVATE_MODE;
use super::serial::Serial;

/// Schema version written to `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a run waits for another run's write lock. Issuing holds it for
/// one signature and a few small files, so this is generous.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

const SCHEMA_V1: &str = "
CREATE TABLE ca_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    ca_fingerprint TEXT NOT NULL,
    ca_serial TEXT NOT NULL,
    ca_subject TEXT NOT NULL,
    crl_number INTEGER NOT NULL DEFAULT 0 CHECK (crl_number >= 0),
    created_at TEXT NOT NULL
);
CREATE TABLE certificates (
    serial TEXT PRIMARY KEY NOT NULL
        CHECK (length(serial) > 0 AND serial NOT GLOB '*[^0-9a-f]*'),
    kind TEXT NOT NULL CHECK (kind IN ('client', 'server')),
    subject TEXT NOT NULL,
    cn TEXT NOT NULL,
    account TEXT CHECK (kind = 'server' OR account IS NOT NULL),
    key_type TEXT NOT NULL,
    not_before TEXT NOT NULL,
    not_after TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'revoked')),
    revoked_at TEXT,
    revocation_reason TEXT,
    cert_pem TEXT NOT NULL,
    cert_path TEXT,
    key_path TEXT,
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL AND revocation_reason IS NOT NULL))
);
CREATE INDEX certificates_cn ON certificates (cn);
CREATE INDEX certificates_account ON certificates (account);
";

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CertKind {
    /// A physician's client certificate.
    Client,
    /// The proxy's server certificate.
    Server,
}

impl CertKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
        }
    }
}

/// Whether a certificate may still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CertStatus {
    Valid,
    Revoked,
}

/// When and why a certificate was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revocation {
    /// RFC 3339, UTC.
    pub at: String,
    pub reason: RevocationReason,
}

/// One registry row.
#[derive(Debug, Clone, Serialize)]
pub struct CertRecord {
    /// Lowercase hex, as the proxy forwards it.
    pub serial: String,
    pub kind: CertKind,
    pub subject: String,
    pub cn: String,
    /// The Befundserver account a client certificate is bound to.
    pub account: Option<String>,
    pub key_type: String,
    pub not_before: String,
    pub not_after: String,
    pub issued_at: String,
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint: String,
    pub status: CertStatus,
    /// Set exactly when `status` is `Revoked`.
    pub revocation: Option<Revocation>,
    #[serde(skip)]
    pub cert_pem: String,
    pub cert_path: Option<String>,
    pub key_path: Option<String>,
}

impl CertRecord {
    /// Whether the certificate has been revoked.
    pub fn is_revoked(&self) -> bool {
        self.status == CertStatus::Revoked
    }

    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        let kind: String = row.get("kind")?;
        let revoked_at: Option<String> = row.get("revoked_at")?;
        let reason: Option<String> = row.get("revocation_reason")?;
        // The schema's CHECK sets both or neither; an unknown reason (from a
        // newer befundctl) still counts as revoked.
        let revocation = revoked_at.map(|at| Revocation {
            at,
            reason: reason
                .as_deref()
                .and_then(RevocationReason::from_str_opt)
                .unwrap_or(RevocationReason::Unspecified),
        });
        Ok(Self {
            serial: row.get("serial")?,
            kind: if kind == "server" {
                CertKind::Server
            } else {
                CertKind::Client
            },
            subject: row.get("subject")?,
            cn: row.get("cn")?,
            account: row.get("account")?,
            key_type: row.get("key_type")?,
            not_before: row.get("not_before")?,
            not_after: row.get("not_after")?,
            issued_at: row.get("issued_at")?,
            fingerprint: row.get("fingerprint")?,
            status: if revocation.is_some() {
                CertStatus::Revoked
            } else {
                CertStatus::Valid
            },
            revocation,
            cert_pem: row.get("cert_pem")?,
            cert_path: row.get("cert_path")?,
            key_path: row.get("key_path")?,
        })
    }
}

/// The CA a registry belongs to.
#[derive(Debug, Clone)]
pub struct CaIdentity {
    pub fingerprint: String,
    pub serial: String,
    pub subject: String,
}

/// A revoked certificate as a CRL lists it.
#[derive(Debug, Clone)]
pub struct RevokedEntry {
    pub serial: Serial,
    pub revoked_at: String,
    pub reason: RevocationReason,
}

/// An open registry.
#[derive(Debug)]
pub struct Registry {
    conn: Connection,
    path: PathBuf,
}

impl Registry {
    /// Creates a new registry at `path` (which must not exist) for `ca`.
    /// The file is created with mode 0600.
    pub fn create(path: &Path, ca: &CaIdentity, now: &str) -> Result<Self, CaError> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE_MODE)
            .open(path)
            .map_err(CaError::io("create", path))?;

        let registry = Self::connect(path)?;
        let err = registry.err("set up");
        registry
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| {
                row.get::<_, String>(0)
            })
            .map_err(err)?;
        registry.migrate()?;
        registry
            .conn
            .execute(
                "INSERT INTO ca_state (id, ca_fingerprint, ca_serial, ca_subject, created_at)
                 VALUES (1, ?1, ?2, ?3, ?4)",
                params![ca.fingerprint, ca.serial, ca.subject, now],
            )
            .map_err(registry.err("record the CA"))?;
        Ok(registry)
    }

    /// Opens an existing registry and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, CaError> {
        if !path.exists() {
            return Err(CaError::Io {
                action: "open certificate registry",
                path: path.to_owned(),
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        let registry = Self::connect(path)?;
        registry.migrate()?;
        Ok(registry)
    }

    fn connect(path: &Path) -> Result<Self, CaError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(path, flags).map_err(|source| CaError::Registry {
                action: "open",
                path: path.to_owned(),
                source,
            })?;
        let registry = Self {
            conn,
            path: path.to_owned(),
        };
        let err = registry.err("configure");
        registry.conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        registry
            .conn
            .execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;")
            .map_err(registry.err("configure"))?;
        Ok(registry)
    }

    /// Applies the schema steps between the file's version and ours.
    fn migrate(&self) -> Result<(), CaError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(self.err("read the schema version"))?;
        if version > SCHEMA_VERSION {
            return Err(CaError::RegistryVersion {
                path: self.path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version == SCHEMA_VERSION {
            return Ok(());
        }

        // Only version 0 (a new file) exists below 1. The version check runs
        // again inside the write lock so two runs cannot both apply it.
        let tx = self.begin_raw()?;
        let current: i64 = tx
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(self.err("read the schema version"))?;
        if current == 0 {
            tx.execute_batch(SCHEMA_V1)
                .and_then(|()| tx.pragma_update(None, "user_version", SCHEMA_VERSION))
                .map_err(self.err("create the schema"))?;
        }
        tx.commit().map_err(self.err("create the schema"))
    }

    fn begin_raw(&self) -> Result<rusqlite::Transaction<'_>, CaError> {
        // `new_unchecked` because this only has `&self`; the connection is
        // private to this registry and no other transaction on it is open.
        rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(self.err("take the write lock"))
    }

    /// Starts a change: takes the write lock now, so everything read inside
    /// stays true until [`RegistryTx::commit`].
    pub fn begin(&mut self) -> Result<RegistryTx<'_>, CaError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|source| CaError::Registry {
                action: "take the write lock",
                path: path.clone(),
                source,
            })?;
        Ok(RegistryTx { tx, path })
    }

    /// The CA this registry belongs to.
    pub fn ca_identity(&self) -> Result<CaIdentity, CaError> {
        self.conn
            .query_row(
                "SELECT ca_fingerprint, ca_serial, ca_subject FROM ca_state WHERE id = 1",
                [],
                |row| {
                    Ok(CaIdentity {
                        fingerprint: row.get(0)?,
                        serial: row.get(1)?,
                        subject: row.get(2)?,
                    })
                },
            )
            .map_err(self.err("read the CA record"))
    }

    /// Refuses a registry that was created for another CA certificate.
    pub fn check_belongs_to(&self, ca_fingerprint: &str) -> Result<(), CaError> {
        let identity = self.ca_identity()?;
        if identity.fingerprint != ca_fingerprint {
            return Err(CaError::RegistryOtherCa {
                path: self.path.clone(),
                expected: identity.fingerprint,
                found: ca_fingerprint.to_owned(),
            });
        }
        Ok(())
    }

    /// Every certificate, oldest first.
    pub fn list(&self) -> Result<Vec<CertRecord>, CaError> {
        select(&self.conn, "ORDER BY issued_at, serial", [], &self.path)
    }

    /// The certificates an operator means by `selector`: the one with that
    /// serial if there is one, else all with that CN (oldest first).
    pub fn find(&self, selector: &str) -> Result<Vec<CertRecord>, CaError> {
        find(&self.conn, selector, &self.path)
    }

    /// The current CRL number (0 before the first CRL).
    pub fn crl_number(&self) -> Result<u64, CaError> {
        let number: i64 = self
            .conn
            .query_row("SELECT crl_number FROM ca_state WHERE id = 1", [], |row| {
                row.get(0)
            })
            .map_err(self.err("read the CRL number"))?;
        Ok(number.unsigned_abs())
    }

    fn err(&self, action: &'static str) -> impl FnOnce(rusqlite::Error) -> CaError + use<> {
        let path = self.path.clone();
        move |source| CaError::Registry {
            action,
            path,
            source,
        }
    }
}

/// A change in progress; dropping it without [`RegistryTx::commit`] rolls
/// everything back.
pub struct RegistryTx<'a> {
    tx: rusqlite::Transaction<'a>,
    path: PathBuf,
}

impl RegistryTx<'_> {
    /// Whether no certificate (and not the CA) has this serial yet.
    pub fn serial_is_free(&self, serial: &Serial) -> Result<bool, CaError> {
        let hex = serial.to_string();
        self.tx
            .query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM certificates WHERE serial = ?1)
                    AND NOT EXISTS (SELECT 1 FROM ca_state WHERE ca_serial = ?1)",
                [&hex],
                |row| row.get(0),
            )
            .map_err(self.err("check the serial"))
    }

    /// Adds a newly signed certificate.
    pub fn insert(&self, record: &CertRecord) -> Result<(), CaError> {
        let CertRecord {
            serial,
            kind,
            subject,
            cn,
            account,
            key_type,
            not_before,
            not_after,
            issued_at,
            fingerprint,
            status: _,
            revocation: _,
            cert_pem,
            cert_path,
            key_path,
        } = record;
        self.tx
            .execute(
                "INSERT INTO certificates (serial, kind, subject, cn, account, key_type,
                    not_before, not_after, issued_at, fingerprint, cert_pem, cert_path, key_path)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    serial,
                    kind.as_str(),
                    subject,
                    cn,
                    account,
                    key_type,
                    not_before,
                    not_after,
                    issued_at,
                    fingerprint,
                    cert_pem,
                    cert_path,
                    key_path
                ],
            )
            .map_err(self.err("record the certificate"))?;
        Ok(())
    }

    /// See [`Registry::find`]; inside the lock.
    pub fn find(&self, selector: &str) -> Result<Vec<CertRecord>, CaError> {
        find(&self.tx, selector, &self.path)
    }

    /// Marks a certificate revoked. Revoking twice is an error.
    pub fn revoke(&self, serial: &str, at: &str, reason: RevocationReason) -> Result<(), CaError> {
        let changed = self
            .tx
            .execute(
                "UPDATE certificates SET status = 'revoked', revoked_at = ?2, revocation_reason = ?3
                 WHERE serial = ?1 AND status = 'valid'",
                params![serial, at, reason.as_str()],
            )
            .map_err(self.err("record the revocation"))?;
        if changed == 1 {
            return Ok(());
        }
        match find(&self.tx, serial, &self.path)?.into_iter().next() {
            Some(CertRecord {
                revocation: Some(Revocation { at, .. }),
                ..
            }) => Err(CaError::AlreadyRevoked {
                serial: serial.to_owned(),
                at,
            }),
            _ => Err(CaError::NotFound(serial.to_owned())),
        }
    }

    /// Every revoked certificate, in revocation order.
    pub fn revoked(&self) -> Result<Vec<RevokedEntry>, CaError> {
        let records = select(
            &self.tx,
            "WHERE status = 'revoked' ORDER BY revoked_at, serial",
            [],
            &self.path,
        )?;
        records
            .into_iter()
            .map(|record| {
                let serial = Serial::parse(&record.serial)
                    .ok_or_else(|| CaError::invalid("registry serial", record.serial.clone()))?;
                let Revocation { at, reason } = record
                    .revocation
                    .ok_or_else(|| CaError::invalid("registry entry", record.serial.clone()))?;
                Ok(RevokedEntry {
                    serial,
                    revoked_at: at,
                    reason,
                })
            })
            .collect()
    }

    /// Increments the CRL number and returns the new one. Under the write
    /// lock, so every CRL gets a number no other CRL had.
    pub fn next_crl_number(&self) -> Result<u64, CaError> {
        // The schema's CHECK keeps the number non-negative.
        let number: i64 = self
            .tx
            .query_row(
                "UPDATE ca_state SET crl_number = crl_number + 1 WHERE id = 1 RETURNING crl_number",
                [],
                |row| row.get(0),
            )
            .map_err(self.err("advance the CRL number"))?;
        Ok(number.unsigned_abs())
    }

    /// Makes the change permanent.
    pub fn commit(self) -> Result<(), CaError> {
        let err = self.err("commit");
        self.tx.commit().map_err(err)
    }

    fn err(&self, action: &'static str) -> impl FnOnce(rusqlite::Error) -> CaError + use<> {
        let path = self.path.clone();
        move |source| CaError::Registry {
            action,
            path,
            source,
        }
    }
}

fn find(conn: &Connection, selector: &str, path: &Path) -> Result<Vec<CertRecord>, CaError> {
    if let Some(serial) = Serial::parse(selector) {
        let by_serial = select(conn, "WHERE serial = ?1", [serial.to_string()], path)?;
        if !by_serial.is_empty() {
            return Ok(by_serial);
        }
    }
    select(
        conn,
        "WHERE cn = ?1 ORDER BY issued_at, serial",
        [selector],
        path,
    )
}

fn select<P: rusqlite::Params>(
    conn: &Connection,
    clause: &str,
    params: P,
    path: &Path,
) -> Result<Vec<CertRecord>, CaError> {
    let err = |source| CaError::Registry {
        action: "read certificates",
        path: path.to_owned(),
        source,
    };
    let sql = format!("SELECT * FROM certificates {clause}");
    let mut statement = conn.prepare(&sql).map_err(err)?;
    let rows = statement
        .query_map(params, CertRecord::from_row)
        .map_err(err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(err)?;
    Ok(rows)
}

/// Looks up one certificate that has not been revoked; refuses when
/// `selector` is unknown or names several.
pub fn single_valid(records: Vec<CertRecord>, selector: &str) -> Result<CertRecord, CaError> {
    if records.is_empty() {
        return Err(CaError::NotFound(selector.to_owned()));
    }
    if records.len() == 1 {
        return Ok(records.into_iter().next().expect("one record"));
    }
    let mut valid: Vec<CertRecord> = records.into_iter().filter(|r| !r.is_revoked()).collect();
    match valid.len() {
        1 => Ok(valid.remove(0)),
        0 => Err(CaError::AllRevoked(selector.to_owned())),
        _ => Err(CaError::Ambiguous {
            selector: selector.to_owned(),
            serials: valid
                .iter()
                .map(|r| r.serial.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

impl std::fmt::Debug for RegistryTx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryTx")
            .field("path", &self.path)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> CaIdentity {
        CaIdentity {
            fingerprint: "ab".repeat(32),
            serial: "01".into(),
            subject: "CN=Test CA".into(),
        }
    }

    fn new_registry(dir: &tempfile::TempDir) -> Registry {
        Registry::create(
            &dir.path().join("registry.sqlite3"),
            &identity(),
            "2026-01-01T00:00:00Z",
        )
        .unwrap()
    }

    fn record(serial: &str, cn: &str) -> CertRecord {
        CertRecord {
            serial: serial.into(),
            kind: CertKind::Client,
            subject: format!("CN={cn}"),
            cn: cn.into(),
            account: Some("arzt".into()),
            key_type: "RSA 2048".into(),
            not_before: "2026-01-01T00:00:00Z".into(),
            not_after: "2028-01-01T00:00:00Z".into(),
            issued_at: format!("2026-01-01T00:00:0{}Z", serial.len() % 10),
            fingerprint: format!("{serial:0>64}"),
            status: CertStatus::Valid,
            revocation: None,
            cert_pem: String::new(),
            cert_path: None,
            key_path: None,
        }
    }

    fn insert(registry: &mut Registry, rec: &CertRecord) -> Result<(), CaError> {
        let tx = registry.begin()?;
        tx.insert(rec)?;
        tx.commit()
    }

    #[test]
    fn new_registry_has_current_schema_version_and_mode_0600() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let registry = new_registry(&dir);

        let version: i64 = registry
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let mode = std::fs::metadata(&registry.path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(registry.crl_number().unwrap(), 0);
    }

    #[test]
    fn registry_from_a_newer_befundctl_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = new_registry(&dir).path;
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);

        let err = Registry::open(&path).unwrap_err();

        assert!(
            matches!(err, CaError::RegistryVersion { found, .. } if found == SCHEMA_VERSION + 1)
        );
    }

    #[test]
    fn certificate_is_found_by_serial_in_any_spelling_and_by_cn() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = new_registry(&dir);
        insert(&mut registry, &record("5f3a09c2e1d4b7a8", "ARZT0001")).unwrap();

        assert_eq!(registry.find("5F:3A:09:C2:E1:D4:B7:A8").unwrap().len(), 1);
        assert_eq!(
            registry.find("ARZT0001").unwrap()[0].serial,
            "5f3a09c2e1d4b7a8"
        );
        assert!(registry.find("ARZT0002").unwrap().is_empty());
    }

    #[test]
    fn serial_cannot_be_used_twice_even_for_another_cn() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = new_registry(&dir);
        insert(&mut registry, &record("0a0b", "ARZT0001")).unwrap();
        let mut again = record("0a0b", "ARZT0002");
        again.fingerprint = "f".repeat(64);

        assert!(insert(&mut registry, &again).is_err());
        let tx = registry.begin().unwrap();
        assert!(!tx.serial_is_free(&Serial::parse("0a0b").unwrap()).unwrap());
        assert!(
            !tx.serial_is_free(&Serial::parse("01").unwrap()).unwrap(),
            "the CA's serial"
        );
        assert!(tx.serial_is_free(&Serial::parse("0c").unwrap()).unwrap());
    }

    #[test]
    fn uppercase_serial_is_rejected_by_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = new_registry(&dir);

        assert!(insert(&mut registry, &record("0A0B", "ARZT0001")).is_err());
    }

    #[test]
    fn client_certificate_without_account_is_rejected_by_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = new_registry(&dir);
        let mut unbound = record("0d", "ARZT0001");
        unbound.account = None;

        assert!(insert(&mut registry, &unbound).is_err());
    }

    #[test]
    fn dropped_transaction_leaves_no_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = new_registry(&dir);

        {
            let tx = registry.begin().unwrap();
            tx.insert(&record("0e", "ARZT0001")).unwrap();
        }

        assert!(registry.list().unwrap().is_empty());
    }

    #[test]
    fn revocation_is_recorded_once_and_listed_for_the_crl() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = new_registry(&dir);
        insert(&mut registry, &record("0f", "ARZT0001")).unwrap();

        let tx = registry.begin().unwrap();
        tx.revoke(
            "0f",
            "2026-02-01T00:00:00Z",
            RevocationReason::KeyCompromise,
        )
        .unwrap();
        let again = tx.revoke("0f", "2026-02-02T00:00:00Z", RevocationReason::Superseded);
        let revoked = tx.revoked().unwrap();
        tx.commit().unwrap();

        assert!(
            matches!(again, Err(CaError::AlreadyRevoked { at, .. }) if at == "2026-02-01T00:00:00Z")
        );
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].reason, RevocationReason::KeyCompromise);
        let stored = &registry.find("0f").unwrap()[0];
        assert!(stored.is_revoked());
        assert_eq!(
            stored.revocation.as_ref().map(|r| r.reason),
            Some(RevocationReason::KeyCompromise)
        );
    }

    #[test]
    fn crl_number_increments_across_connections_and_rolls_back_with_its_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = new_registry(&dir);
        let mut second = Registry::open(&first.path.clone()).unwrap();

        let tx = first.begin().unwrap();
        assert_eq!(tx.next_crl_number().unwrap(), 1);
        tx.commit().unwrap();
        let tx = second.begin().unwrap();
        assert_eq!(tx.next_crl_number().unwrap(), 2);
        drop(tx);
        let tx = first.begin().unwrap();
        assert_eq!(tx.next_crl_number().unwrap(), 2);
        tx.commit().unwrap();

        assert_eq!(second.crl_number().unwrap(), 2);
    }

    #[test]
    fn registry_of_another_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let registry = new_registry(&dir);

        assert!(registry.check_belongs_to(&"ab".repeat(32)).is_ok());
        assert!(matches!(
            registry.check_belongs_to(&"cd".repeat(32)),
            Err(CaError::RegistryOtherCa { .. })
        ));
    }

    #[test]
    fn single_valid_picks_the_one_unrevoked_certificate_of_a_cn() {
        let mut old = record("10", "ARZT0001");
        old.status = CertStatus::Revoked;
        let new = record("11", "ARZT0001");

        assert_eq!(
            single_valid(vec![old.clone(), new.clone()], "ARZT0001")
                .unwrap()
                .serial,
            "11"
        );
        assert!(matches!(
            single_valid(vec![new.clone(), record("12", "ARZT0001")], "ARZT0001"),
            Err(CaError::Ambiguous { .. })
        ));
        assert!(matches!(
            single_valid(vec![old.clone(), old], "ARZT0001"),
            Err(CaError::AllRevoked(_))
        ));
        assert!(matches!(
            single_valid(vec![], "X"),
            Err(CaError::NotFound(_))
        ));
    }
}

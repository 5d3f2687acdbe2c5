//! The Befundserver's SQLite database: user accounts with their bound
//! certificate, lab reports per user, and login sessions.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, Row, params};
use serde::Serialize;

use super::identity::{CertBinding, Fingerprint};
use super::session::TokenDigest;

/// Schema version kept in SQLite's `user_version`; 0 means an empty file.
const SCHEMA_VERSION: i64 = 1;

/// How long a writer waits for another process (say, `add-user` while the
/// server runs) to finish its transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest username accepted; usernames appear in logs and the UI.
const MAX_USERNAME_LEN: usize = 64;

const SCHEMA: &str = "
CREATE TABLE users (
    id               INTEGER PRIMARY KEY,
    username         TEXT NOT NULL UNIQUE,
    password_hash    TEXT NOT NULL,
    -- Bound certificate: either its SHA-256 fingerprint (lowercase hex) ...
    cert_fingerprint TEXT UNIQUE,
    -- ... or its issuer (RFC 4514, as forwarded) and serial (lowercase hex).
    cert_issuer      TEXT,
    cert_serial      TEXT,
    UNIQUE (cert_issuer, cert_serial),
    CHECK ((cert_fingerprint IS NOT NULL AND cert_issuer IS NULL AND cert_serial IS NULL)
        OR (cert_fingerprint IS NULL AND cert_issuer IS NOT NULL AND cert_serial IS NOT NULL))
) STRICT;

CREATE TABLE reports (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title        TEXT NOT NULL,
    patient      TEXT NOT NULL,
    collected_on TEXT NOT NULL,
    body         TEXT NOT NULL
) STRICT;
CREATE INDEX reports_by_user ON reports (user_id);

CREATE TABLE analytes (
    report_id       INTEGER NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
    position        INTEGER NOT NULL,
    name            TEXT NOT NULL,
    value           TEXT NOT NULL,
    unit            TEXT NOT NULL,
    reference_range TEXT,
    PRIMARY KEY (report_id, position)
) STRICT;

CREATE TABLE sessions (
    token_digest     BLOB PRIMARY KEY,
    user_id          INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    cert_fingerprint TEXT NOT NULL,
    expires_at       INTEGER NOT NULL
) STRICT;
";

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file does not exist.
    #[error("database {} does not exist; create it with `befundserver init --db {}`", .0.display(), .0.display())]
    Missing(PathBuf),
    /// The file exists but holds another schema.
    #[error("database {} has schema version {found}, expected {SCHEMA_VERSION}; point --db at a file made by `befundserver init`", path.display())]
    Schema {
        /// The file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
    },
    /// The database file could not be created.
    #[error("failed to create database {}: {source}", path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An SQLite operation failed.
    #[error("failed to {op}: {source}")]
    Sql {
        /// What was being done.
        op: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A user with this name exists already.
    #[error("user {0:?} exists already")]
    UserExists(String),
    /// Another user is bound to this certificate.
    #[error("another user is bound to certificate {0} already; issue a certificate per physician")]
    BindingTaken(String),
    /// No user with this name.
    #[error("no user {0:?}; add it with `befundserver add-user`")]
    NoSuchUser(String),
    /// The username is empty, too long or has whitespace or control characters.
    #[error("username {0:?} is not valid; use 1 to 64 characters without spaces")]
    InvalidUsername(String),
    /// A stored value cannot be read back.
    #[error("database holds an invalid {what} for user {user_id}")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// Whose.
        user_id: i64,
    },
}

/// Shorthand for wrapping an SQLite error with the operation that failed.
fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sql { op, source }
}

/// Row id of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserId(i64);

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Row id.
    pub id: UserId,
    /// Login name.
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// The certificate this account is bound to.
    pub binding: CertBinding,
}

/// One measured value in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Analyte {
    /// What was measured, e.g. `Hämoglobin`.
    pub name: String,
    /// The result as the lab reports it (kept as text: `<0.5` is a result).
    pub value: String,
    /// Unit, e.g. `g/dl`.
    pub unit: String,
    /// Reference range, when the lab gives one.
    pub reference_range: Option<String>,
}

/// A report to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReport {
    /// Short title, e.g. `Kleines Blutbild`.
    pub title: String,
    /// Pseudonym of the patient (never a real name in demo data).
    pub patient: String,
    /// Day the sample was taken, `YYYY-MM-DD`.
    pub collected_on: String,
    /// Free-text findings.
    pub body: String,
    /// Measured values, in report order.
    pub analytes: Vec<Analyte>,
}

/// A report as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportSummary {
    /// Row id.
    pub id: i64,
    /// Title.
    pub title: String,
    /// Patient pseudonym.
    pub patient: String,
    /// Sampling day.
    pub collected_on: String,
}

/// A report with everything in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Row id.
    pub id: i64,
    /// Title.
    pub title: String,
    /// Patient pseudonym.
    pub patient: String,
    /// Sampling day.
    pub collected_on: String,
    /// Free-text findings.
    pub body: String,
    /// Measured values.
    pub analytes: Vec<Analyte>,
}

/// A live session: whose it is and which certificate logged it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The logged-in user.
    pub user: User,
    /// Fingerprint of the certificate presented at login.
    pub fingerprint: Fingerprint,
}

/// The database.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Creates the database file (mode 0600: it holds password hashes) and
    /// its tables. Running it again on an initialised database changes
    /// nothing.
    ///
    /// # Errors
    ///
    /// [`StoreError::Schema`] when the file holds some other database, and
    /// I/O or SQLite errors.
    pub fn init(path: &Path) -> Result<Self, StoreError> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| StoreError::Create {
                path: path.to_owned(),
                source,
            })?;
        let mut store = Self::connect(path)?;
        match store.schema_version()? {
            SCHEMA_VERSION => {}
            0 => store.create_schema()?,
            found => {
                return Err(StoreError::Schema {
                    path: path.to_owned(),
                    found,
                });
            }
        }
        Ok(store)
    }

    /// Opens a database made by [`Store::init`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Missing`] when there is no such file,
    /// [`StoreError::Schema`] when it was not initialised.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing(path.to_owned()));
        }
        let store = Self::connect(path)?;
        let found = store.schema_version()?;
        if found != SCHEMA_VERSION {
            return Err(StoreError::Schema {
                path: path.to_owned(),
                found,
            });
        }
        Ok(store)
    }

    fn connect(path: &Path) -> Result<Self, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(sql("open database"))?;
        Self::configure(conn)
    }

    fn configure(conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql("set busy timeout"))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sql("enable foreign keys"))?;
        Ok(Self { conn })
    }

    fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(sql("read schema version"))
    }

    fn create_schema(&mut self) -> Result<(), StoreError> {
        // WAL lets the CLI add users while the server reads.
        self.conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(sql("enable write-ahead log"))?;
        let tx = self
            .conn
            .transaction()
            .map_err(sql("begin schema creation"))?;
        tx.execute_batch(SCHEMA).map_err(sql("create tables"))?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sql("set schema version"))?;
        tx.commit().map_err(sql("commit schema creation"))
    }

    /// Adds a user bound to a certificate.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidUsername`], [`StoreError::UserExists`],
    /// [`StoreError::BindingTaken`] (one certificate, one account), and
    /// SQLite errors.
    pub fn add_user(
        &mut self,
        username: &str,
        password_hash: &str,
        binding: &CertBinding,
    ) -> Result<UserId, StoreError> {
        validate_username(username)?;
        let (fingerprint, issuer, serial) = binding_columns(binding);

        let tx = self.conn.transaction().map_err(sql("begin adding user"))?;
        let name_taken: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM users WHERE username = ?1)",
                [username],
                |r| r.get(0),
            )
            .map_err(sql("look up username"))?;
        if name_taken {
            return Err(StoreError::UserExists(username.to_owned()));
        }
        let binding_taken: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM users
                  WHERE cert_fingerprint = ?1 OR (cert_issuer = ?2 AND cert_serial = ?3))",
                params![fingerprint, issuer, serial],
                |r| r.get(0),
            )
            .map_err(sql("look up certificate binding"))?;
        if binding_taken {
            return Err(StoreError::BindingTaken(binding.to_string()));
        }
        tx.execute(
            "INSERT INTO users (username, password_hash, cert_fingerprint, cert_issuer, cert_serial)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![username, password_hash, fingerprint, issuer, serial],
        )
        .map_err(sql("insert user"))?;
        let id = UserId(tx.last_insert_rowid());
        tx.commit().map_err(sql("commit user"))?;
        Ok(id)
    }

    /// The user with this name, if any.
    ///
    /// # Errors
    ///
    /// SQLite errors and [`StoreError::Corrupt`].
    pub fn find_user(&self, username: &str) -> Result<Option<User>, StoreError> {
        self.conn
            .query_row(
                "SELECT id, username, password_hash, cert_fingerprint, cert_issuer, cert_serial
                   FROM users WHERE username = ?1",
                [username],
                read_user_columns,
            )
            .optional()
            .map_err(sql("look up user"))?
            .map(UserColumns::into_user)
            .transpose()
    }

    /// Like [`Store::find_user`], but a missing user is an error.
    ///
    /// # Errors
    ///
    /// [`StoreError::NoSuchUser`] and those of [`Store::find_user`].
    pub fn user(&self, username: &str) -> Result<User, StoreError> {
        self.find_user(username)?
            .ok_or_else(|| StoreError::NoSuchUser(username.to_owned()))
    }

    /// Stores a report for a user.
    ///
    /// # Errors
    ///
    /// SQLite errors.
    pub fn add_report(&mut self, user: UserId, report: &NewReport) -> Result<i64, StoreError> {
        let NewReport {
            title,
            patient,
            collected_on,
            body,
            analytes,
        } = report;

        let tx = self
            .conn
            .transaction()
            .map_err(sql("begin adding report"))?;
        tx.execute(
            "INSERT INTO reports (user_id, title, patient, collected_on, body)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![user.0, title, patient, collected_on, body],
        )
        .map_err(sql("insert report"))?;
        let id = tx.last_insert_rowid();
        for (position, a) in (0_i64..).zip(analytes) {
            tx.execute(
                "INSERT INTO analytes (report_id, position, name, value, unit, reference_range)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, position, a.name, a.value, a.unit, a.reference_range],
            )
            .map_err(sql("insert analyte"))?;
        }
        tx.commit().map_err(sql("commit report"))?;
        Ok(id)
    }

    /// The user's own reports, newest sample first.
    ///
    /// # Errors
    ///
    /// SQLite errors.
    pub fn reports_of(&self, user: UserId) -> Result<Vec<ReportSummary>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, title, patient, collected_on FROM reports
                  WHERE user_id = ?1 ORDER BY collected_on DESC, id DESC",
            )
            .map_err(sql("prepare report list"))?;
        let rows = stmt
            .query_map([user.0], |r| {
                Ok(ReportSummary {
                    id: r.get(0)?,
                    title: r.get(1)?,
                    patient: r.get(2)?,
                    collected_on: r.get(3)?,
                })
            })
            .map_err(sql("list reports"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql("read report list"))
    }

    /// One report, only if it belongs to `user`: another user's report is
    /// indistinguishable from one that does not exist.
    ///
    /// # Errors
    ///
    /// SQLite errors.
    pub fn report_of(&self, user: UserId, id: i64) -> Result<Option<Report>, StoreError> {
        let report = self
            .conn
            .query_row(
                "SELECT id, title, patient, collected_on, body FROM reports
                  WHERE id = ?1 AND user_id = ?2",
                params![id, user.0],
                |r| {
                    Ok(Report {
                        id: r.get(0)?,
                        title: r.get(1)?,
                        patient: r.get(2)?,
                        collected_on: r.get(3)?,
                        body: r.get(4)?,
                        analytes: Vec::new(),
                    })
                },
            )
            .optional()
            .map_err(sql("look up report"))?;
        let Some(mut report) = report else {
            return Ok(None);
        };
        report.analytes = self.analytes_of(report.id)?;
        Ok(Some(report))
    }

    fn analytes_of(&self, report: i64) -> Result<Vec<Analyte>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name, value, unit, reference_range FROM analytes
                  WHERE report_id = ?1 ORDER BY position",
            )
            .map_err(sql("prepare analyte list"))?;
        let rows = stmt
            .query_map([report], |r| {
                Ok(Analyte {
                    name: r.get(0)?,
                    value: r.get(1)?,
                    unit: r.get(2)?,
                    reference_range: r.get(3)?,
                })
            })
            .map_err(sql("list analytes"))?;
        rows.collect::<Result<_, _>>().map_err(sql("read analytes"))
    }

    /// Stores a session for `user`, bound to the certificate used at login.
    ///
    /// # Errors
    ///
    /// SQLite errors.
    pub fn create_session(
        &self,
        token: &TokenDigest,
        user: UserId,
        fingerprint: &Fingerprint,
        expires_at: SystemTime,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO sessions (token_digest, user_id, cert_fingerprint, expires_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    token.as_bytes(),
                    user.0,
                    fingerprint.to_string(),
                    unix_seconds(expires_at)
                ],
            )
            .map_err(sql("insert session"))?;
        Ok(())
    }

    /// The session with this token, unless it has expired at `now`.
    ///
    /// # Errors
    ///
    /// SQLite errors and [`StoreError::Corrupt`].
    pub fn find_session(
        &self,
        token: &TokenDigest,
        now: SystemTime,
    ) -> Result<Option<Session>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT u.id, u.username, u.password_hash, u.cert_fingerprint, u.cert_issuer,
                        u.cert_serial, s.cert_fingerprint
                   FROM sessions s JOIN users u ON u.id = s.user_id
                  WHERE s.token_digest = ?1 AND s.expires_at > ?2",
                params![token.as_bytes(), unix_seconds(now)],
                |r| Ok((read_user_columns(r)?, r.get::<_, String>(6)?)),
            )
            .optional()
            .map_err(sql("look up session"))?;
        let Some((columns, fingerprint)) = row else {
            return Ok(None);
        };
        let user = columns.into_user()?;
        let fingerprint = fingerprint.parse().map_err(|_| StoreError::Corrupt {
            what: "session certificate fingerprint",
            user_id: user.id.0,
        })?;
        Ok(Some(Session { user, fingerprint }))
    }

    /// Ends a session; ending one that does not exist is no error.
    ///
    /// # Errors
    ///
    /// SQLite errors.
    pub fn delete_session(&self, token: &TokenDigest) -> Result<(), StoreError> {
        self.conn
            .execute(
                "DELETE FROM sessions WHERE token_digest = ?1",
                [token.as_bytes()],
            )
            .map_err(sql("delete session"))?;
        Ok(())
    }

    /// Removes sessions that expired before `now`; returns how many.
    ///
    /// # Errors
    ///
    /// SQLite errors.
    pub fn purge_expired_sessions(&self, now: SystemTime) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "DELETE FROM sessions WHERE expires_at <= ?1",
                [unix_seconds(now)],
            )
            .map_err(sql("purge expired sessions"))
    }
}

fn validate_username(username: &str) -> Result<(), StoreError> {
    let valid = !username.is_empty()
        && username.chars().count() <= MAX_USERNAME_LEN
        && !username
            .chars()
            .any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(())
    } else {
        Err(StoreError::InvalidUsername(username.to_owned()))
    }
}

/// `(cert_fingerprint, cert_issuer, cert_serial)` column values of a binding.
fn binding_columns(binding: &CertBinding) -> (Option<String>, Option<&str>, Option<String>) {
    match binding {
        CertBinding::Fingerprint(fp) => (Some(fp.to_string()), None, None),
        CertBinding::IssuerSerial { issuer, serial } => {
            (None, Some(issuer.as_str()), Some(serial.to_string()))
        }
    }
}

/// The `users` columns as stored, before the binding is parsed.
struct UserColumns {
    id: i64,
    username: String,
    password_hash: String,
    fingerprint: Option<String>,
    issuer: Option<String>,
    serial: Option<String>,
}

fn read_user_columns(r: &Row<'_>) -> rusqlite::Result<UserColumns> {
    Ok(UserColumns {
        id: r.get(0)?,
        username: r.get(1)?,
        password_hash: r.get(2)?,
        fingerprint: r.get(3)?,
        issuer: r.get(4)?,
        serial: r.get(5)?,
    })
}

impl UserColumns {
    fn into_user(self) -> Result<User, StoreError> {
        let Self {
            id,
            username,
            password_hash,
            fingerprint,
            issuer,
            serial,
        } = self;
        let corrupt = |what| StoreError::Corrupt { what, user_id: id };

        let binding = match (fingerprint, issuer, serial) {
            (Some(fp), None, None) => CertBinding::Fingerprint(
                fp.parse().map_err(|_| corrupt("certificate fingerprint"))?,
            ),
            (None, Some(issuer), Some(serial)) => CertBinding::IssuerSerial {
                issuer,
                serial: serial.parse().map_err(|_| corrupt("certificate serial"))?,
            },
            _ => return Err(corrupt("certificate binding")),
        };
        Ok(User {
            id: UserId(id),
            username,
            password_hash,
            binding,
        })
    }
}

/// Seconds since the Unix epoch; times before it count as 0.
fn unix_seconds(t: SystemTime) -> i64 {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    i64::try_from(secs).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::befundserver::session::SessionToken;

    fn fingerprint(byte: u8) -> Fingerprint {
        Fingerprint::of_der(&[byte])
    }

    fn issuer_serial(serial: &str) -> CertBinding {
        CertBinding::IssuerSerial {
            issuer: "CN=Labor Befund CA,O=Labor".to_owned(),
            serial: serial.parse().unwrap(),
        }
    }

    fn report(title: &str, collected_on: &str) -> NewReport {
        NewReport {
            title: title.to_owned(),
            patient: "P-0001".to_owned(),
            collected_on: collected_on.to_owned(),
            body: "Unauffällig.".to_owned(),
            analytes: vec![
                Analyte {
                    name: "Hämoglobin".to_owned(),
                    value: "13.9".to_owned(),
                    unit: "g/dl".to_owned(),
                    reference_range: Some("12.0-16.0".to_owned()),
                },
                Analyte {
                    name: "CRP".to_owned(),
                    value: "<0.5".to_owned(),
                    unit: "mg/dl".to_owned(),
                    reference_range: None,
                },
            ],
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        path: PathBuf,
        store: Store,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("befund.sqlite");
        let store = Store::init(&path).unwrap();
        Fixture {
            _dir: dir,
            path,
            store,
        }
    }

    #[test]
    fn init_creates_private_file_and_is_idempotent() {
        use std::os::unix::fs::PermissionsExt as _;
        let Fixture {
            path,
            mut store,
            _dir,
        } = fixture();
        store
            .add_user(
                "weber",
                "$argon2id$x",
                &CertBinding::Fingerprint(fingerprint(1)),
            )
            .unwrap();
        drop(store);

        let again = Store::init(&path).unwrap();

        assert!(again.find_user("weber").unwrap().is_some());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn open_refuses_missing_and_uninitialised_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.sqlite");
        let empty = dir.path().join("empty.sqlite");
        std::fs::write(&empty, b"").unwrap();

        assert!(matches!(Store::open(&missing), Err(StoreError::Missing(_))));
        assert!(!missing.exists());
        assert!(matches!(
            Store::open(&empty),
            Err(StoreError::Schema { found: 0, .. })
        ));
    }

    #[test]
    fn users_round_trip_with_both_binding_kinds() {
        let Fixture { mut store, .. } = fixture();
        let by_fp = CertBinding::Fingerprint(fingerprint(1));
        let by_serial = issuer_serial("00:9C:3A");

        store.add_user("weber", "hash-w", &by_fp).unwrap();
        store.add_user("brandt", "hash-b", &by_serial).unwrap();

        let weber = store.user("weber").unwrap();
        let brandt = store.user("brandt").unwrap();
        assert_eq!(
            (weber.password_hash.as_str(), &weber.binding),
            ("hash-w", &by_fp)
        );
        assert_eq!(brandt.binding, issuer_serial("9c3a"));
        assert!(store.find_user("nobody").unwrap().is_none());
        assert!(matches!(
            store.user("nobody"),
            Err(StoreError::NoSuchUser(_))
        ));
    }

    #[test]
    fn duplicate_username_and_shared_certificate_are_refused() {
        let Fixture { mut store, .. } = fixture();
        store
            .add_user("weber", "h", &CertBinding::Fingerprint(fingerprint(1)))
            .unwrap();
        store.add_user("brandt", "h", &issuer_serial("42")).unwrap();

        let same_name = store.add_user("weber", "h", &CertBinding::Fingerprint(fingerprint(2)));
        let same_fp = store.add_user("roth", "h", &CertBinding::Fingerprint(fingerprint(1)));
        let same_serial = store.add_user("roth", "h", &issuer_serial("0042"));

        assert!(matches!(same_name, Err(StoreError::UserExists(_))));
        assert!(matches!(same_fp, Err(StoreError::BindingTaken(_))));
        assert!(matches!(same_serial, Err(StoreError::BindingTaken(_))));
    }

    #[test]
    fn invalid_usernames_are_refused() {
        let Fixture { mut store, .. } = fixture();

        for name in ["", "dr weber", "a\u{7}b", &"x".repeat(65)] {
            let result = store.add_user(name, "h", &CertBinding::Fingerprint(fingerprint(1)));
            assert!(
                matches!(result, Err(StoreError::InvalidUsername(_))),
                "{name:?}"
            );
        }
    }

    #[test]
    fn reports_are_visible_only_to_their_owner() {
        let Fixture { mut store, .. } = fixture();
        let weber = store
            .add_user("weber", "h", &CertBinding::Fingerprint(fingerprint(1)))
            .unwrap();
        let brandt = store.add_user("brandt", "h", &issuer_serial("42")).unwrap();
        let older = store
            .add_report(weber, &report("Blutbild", "2026-11-02"))
            .unwrap();
        let newer = store
            .add_report(weber, &report("Lipide", "2026-11-20"))
            .unwrap();
        let theirs = store
            .add_report(brandt, &report("TSH", "2026-11-21"))
            .unwrap();

        let list = store.reports_of(weber).unwrap();
        let ids: Vec<i64> = list.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![newer, older]);

        let full = store.report_of(weber, older).unwrap().unwrap();
        assert_eq!(full.analytes, report("", "").analytes);
        assert!(store.report_of(weber, theirs).unwrap().is_none());
        assert!(store.report_of(brandt, theirs).unwrap().is_some());
    }

    #[test]
    fn session_is_found_until_it_expires_and_not_after_deletion() {
        let Fixture { mut store, .. } = fixture();
        let weber = store
            .add_user("weber", "h", &CertBinding::Fingerprint(fingerprint(1)))
            .unwrap();
        let token = SessionToken::generate().unwrap().digest();
        let now = SystemTime::now();
        let expires = now + Duration::from_secs(60);
        store
            .create_session(&token, weber, &fingerprint(1), expires)
            .unwrap();

        let live = store.find_session(&token, now).unwrap().unwrap();
        assert_eq!((live.user.id, live.fingerprint), (weber, fingerprint(1)));
        assert!(store.find_session(&token, expires).unwrap().is_none());

        store.delete_session(&token).unwrap();
        assert!(store.find_session(&token, now).unwrap().is_none());
    }

    #[test]
    fn purge_removes_only_expired_sessions() {
        let Fixture { mut store, .. } = fixture();
        let weber = store
            .add_user("weber", "h", &CertBinding::Fingerprint(fingerprint(1)))
            .unwrap();
        let now = SystemTime::now();
        let old = SessionToken::generate().unwrap().digest();
        let live = SessionToken::generate().unwrap().digest();
        store
            .create_session(&old, weber, &fingerprint(1), now - Duration::from_secs(1))
            .unwrap();
        store
            .create_session(&live, weber, &fingerprint(1), now + Duration::from_secs(60))
            .unwrap();

        assert_eq!(store.purge_expired_sessions(now).unwrap(), 1);
        assert!(store.find_session(&live, now).unwrap().is_some());
    }

    #[test]
    fn store_sees_users_added_by_another_connection() {
        let Fixture { path, store, _dir } = fixture();
        let mut cli = Store::open(&path).unwrap();

        cli.add_user("weber", "h", &CertBinding::Fingerprint(fingerprint(1)))
            .unwrap();

        assert!(store.find_user("weber").unwrap().is_some());
    }
}

//! The audit log: one JSON line per request, to stdout or a file.
//!
//! A file is opened for appending once, at start-up (before privileges are
//! dropped), and kept at mode 0640 or stricter. Each line is written with a
//! single write so concurrent requests never interleave.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::{AuditTarget, Config, ConfigError};
use crate::tls::files::ConfigFile;

/// Mode of a newly created audit file, and the loosest mode an existing one keeps.
const AUDIT_FILE_MODE: u32 = 0o640;

/// One request, as recorded in the audit log.
#[derive(Clone, Debug, Serialize)]
pub struct AuditRecord<'a> {
    /// When the request arrived, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The client's address and port.
    pub client: SocketAddr,
    /// The client certificate's subject (RFC 4514).
    pub subject: &'a str,
    /// The client certificate's serial number (hex).
    pub serial: &'a str,
    /// The client certificate's SHA-256 fingerprint (hex).
    pub fingerprint: &'a str,
    /// HTTP method.
    pub method: &'a str,
    /// Request path, without the query string (which may carry patient data).
    pub path: &'a str,
    /// HTTP version the client used (`HTTP/1.1`, `HTTP/2.0`).
    pub version: &'a str,
    /// Status sent to the client.
    pub status: u16,
    /// Response body bytes sent to the client.
    pub bytes: u64,
    /// From request head to the end of the response, in milliseconds.
    pub duration_ms: f64,
    /// From forwarding to the Befundserver's response head, in milliseconds;
    /// absent when the request was not forwarded.
    pub upstream_ms: Option<f64>,
    /// Which side failed, when the proxy answered with an error itself:
    /// `client`, `upstream` or `proxy`.
    pub error_side: Option<&'static str>,
}

enum Sink {
    Stdout,
    File(Mutex<File>),
}

/// Where audit lines go.
pub struct AuditLog {
    sink: Sink,
    last_error_report: AtomicU64,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sink = match self.sink {
            Sink::Stdout => "stdout",
            Sink::File(_) => "file",
        };
        f.debug_struct("AuditLog").field("sink", &sink).finish()
    }
}

impl AuditLog {
    /// Opens the audit target named in `[log] audit`.
    pub fn open(config: &Config) -> Result<Self, ConfigError> {
        let sink = match &config.log.audit {
            AuditTarget::Stdout => Sink::Stdout,
            AuditTarget::File(path) => {
                let file = ConfigFile::new(&config.source, "log.audit", path);
                Sink::File(Mutex::new(open_append(&file)?))
            }
        };
        Ok(Self {
            sink,
            last_error_report: AtomicU64::new(0),
        })
    }

    /// Writes one record as a JSON line.
    pub fn record(&self, record: &AuditRecord<'_>) {
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(e) => return self.report_error(&io::Error::other(e)),
        };
        line.push(b'\n');
        let result = match &self.sink {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(&line).and_then(|()| out.flush())
            }
            Sink::File(file) => file
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .write_all(&line),
        };
        if let Err(e) = result {
            self.report_error(&e);
        }
    }

    /// Logs a write failure, at most once a minute.
    fn report_error(&self, error: &io::Error) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.last_error_report.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 60
            && self
                .last_error_report
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(error = %error, "cannot write the audit log; requests go unrecorded");
        }
    }
}

fn open_append(file: &ConfigFile<'_>) -> Result<File, ConfigError> {
    let handle = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(AUDIT_FILE_MODE)
        .open(file.file)
        .map_err(|e| file.error(format!("cannot open the audit log for appending: {e}")))?;
    let meta = handle
        .metadata()
        .map_err(|e| file.error(format!("cannot read the audit log's metadata: {e}")))?;
    if !meta.is_file() {
        return Err(
            file.error("not a regular file; name a file such as /var/log/befund/audit.jsonl")
        );
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & !AUDIT_FILE_MODE != 0 {
        handle
            .set_permissions(std::fs::Permissions::from_mode(mode & AUDIT_FILE_MODE))
            .map_err(|e| file.error(format!("cannot restrict the audit log to mode 0640: {e}")))?;
    }
    Ok(handle)
}

/// `time` formatted as RFC 3339 UTC with milliseconds.
pub fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn new_audit_file_is_created_with_mode_0640() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let file = ConfigFile::new(Path::new("b.toml"), "log.audit", &path);
        drop(open_append(&file).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[test]
    fn existing_world_readable_audit_file_is_restricted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, b"old line\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let file = ConfigFile::new(Path::new("b.toml"), "log.audit", &path);
        let mut handle = open_append(&file).unwrap();
        handle.write_all(b"new line\n").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "old line\nnew line\n"
        );
    }

    #[test]
    fn audit_directory_that_does_not_exist_names_key_and_file() {
        let file = ConfigFile::new(
            Path::new("b.toml"),
            "log.audit",
            Path::new("/nonexistent/dir/audit.jsonl"),
        );
        let err = open_append(&file).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "b.toml: key `log.audit`: /nonexistent/dir/audit.jsonl: cannot open the audit log"
            ),
            "{err}"
        );
    }
}

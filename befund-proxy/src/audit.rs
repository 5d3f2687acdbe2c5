//! The audit log: one JSON line per request, to stdout or a file.
//!
//! A file is opened for appending once, at start-up (before privileges are
//! dropped), and kept at mode 0640 or stricter. Each line is written with a
//! single write when its response is complete, so concurrent requests never
//! interleave and a line is in the file once its request is done.
//!
//! The members that describe the connection (client address and certificate)
//! are serialized once per connection; each request adds its own.

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

/// The members of an audit line that are the same for every request on one
/// connection (`client`, `subject`, `serial`, `fingerprint`), serialized once
/// when the client is verified.
#[derive(Clone, Debug)]
pub struct ConnectionFields(Box<str>);

impl ConnectionFields {
    /// The fields of a connection from `client` with a certificate of
    /// `subject` (RFC 4514), `serial` (hex) and SHA-256 `fingerprint` (hex).
    pub fn new(client: SocketAddr, subject: &str, serial: &str, fingerprint: &str) -> Self {
        let mut members = Vec::with_capacity(subject.len() + 160);
        write_member(&mut members, "client", &client, false)
            .and_then(|()| write_member(&mut members, "subject", subject, true))
            .and_then(|()| write_member(&mut members, "serial", serial, true))
            .and_then(|()| write_member(&mut members, "fingerprint", fingerprint, true))
            .expect("strings and an address serialize into memory");
        Self(
            String::from_utf8(members)
                .expect("serde_json writes UTF-8")
                .into(),
        )
    }
}

/// What one request adds to its connection's [`ConnectionFields`].
#[derive(Clone, Debug)]
pub struct RequestFields<'a> {
    /// When the request arrived; written as RFC 3339 UTC with milliseconds.
    pub time: SystemTime,
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

/// One audit line: a JSON object with the members `time`, `client`,
/// `subject`, `serial`, `fingerprint`, `method`, `path`, `version`,
/// `status`, `bytes`, `duration_ms`, `upstream_ms` and `error_side`, in
/// this order, and a newline.
fn audit_line(
    connection: &ConnectionFields,
    request: &RequestFields<'_>,
) -> serde_json::Result<Vec<u8>> {
    let RequestFields {
        time,
        method,
        path,
        version,
        status,
        bytes,
        duration_ms,
        upstream_ms,
        error_side,
    } = request;
    let mut line = Vec::with_capacity(connection.0.len() + path.len() + 200);
    line.push(b'{');
    let time = format_args!("{}", humantime::format_rfc3339_millis(*time));
    write_member(&mut line, "time", &time, false)?;
    line.push(b',');
    line.extend_from_slice(connection.0.as_bytes());
    write_member(&mut line, "method", method, true)?;
    write_member(&mut line, "path", path, true)?;
    write_member(&mut line, "version", version, true)?;
    write_member(&mut line, "status", status, true)?;
    write_member(&mut line, "bytes", bytes, true)?;
    write_member(&mut line, "duration_ms", duration_ms, true)?;
    write_member(&mut line, "upstream_ms", upstream_ms, true)?;
    write_member(&mut line, "error_side", error_side, true)?;
    line.extend_from_slice(b"}\n");
    Ok(line)
}

/// Appends `"key":value`, after a comma if `comma` is set; `key` is a plain
/// identifier that needs no escaping.
fn write_member<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    key: &str,
    value: &T,
    comma: bool,
) -> serde_json::Result<()> {
    if comma {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    serde_json::to_writer(out, value)
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

    /// Writes one request's JSON line, with a single write.
    pub fn record(&self, connection: &ConnectionFields, request: &RequestFields<'_>) {
        let line = match audit_line(connection, request) {
            Ok(line) => line,
            Err(e) => return self.report_error(&io::Error::other(e)),
        };
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The audit line's schema as one serializable record: what
    /// [`audit_line`] must write, byte for byte.
    #[derive(Serialize)]
    struct WholeRecord<'a> {
        time: String,
        client: SocketAddr,
        subject: &'a str,
        serial: &'a str,
        fingerprint: &'a str,
        method: &'a str,
        path: &'a str,
        version: &'a str,
        status: u16,
        bytes: u64,
        duration_ms: f64,
        upstream_ms: Option<f64>,
        error_side: Option<&'static str>,
    }

    fn whole_line(client: SocketAddr, subject: &str, request: &RequestFields<'_>) -> String {
        let record = WholeRecord {
            time: humantime::format_rfc3339_millis(request.time).to_string(),
            client,
            subject,
            serial: "5f3a",
            fingerprint: "f02ca7f9",
            method: request.method,
            path: request.path,
            version: request.version,
            status: request.status,
            bytes: request.bytes,
            duration_ms: request.duration_ms,
            upstream_ms: request.upstream_ms,
            error_side: request.error_side,
        };
        serde_json::to_string(&record).unwrap() + "\n"
    }

    #[test]
    fn audit_line_equals_the_whole_record_serialized_at_once() {
        let time = UNIX_EPOCH + std::time::Duration::from_millis(1_827_936_000_123);
        let forwarded = RequestFields {
            time,
            method: "GET",
            path: "/befunde/4711",
            version: "HTTP/1.1",
            status: 200,
            bytes: 1824,
            duration_ms: 8.601,
            upstream_ms: Some(4.022),
            error_side: None,
        };
        let refused = RequestFields {
            method: "PROPFIND",
            path: "/a\"b\\c\u{1}ü",
            version: "HTTP/2.0",
            status: 421,
            bytes: 20,
            duration_ms: 0.0,
            upstream_ms: None,
            error_side: Some("client"),
            ..forwarded.clone()
        };
        for (client, subject) in [
            (
                "198.51.100.7:51778",
                "CN=Dr. M\\c3\\bcller,O=Praxis \"Nord\",C=DE",
            ),
            ("[2001:db8::7]:443", "CN=a\tb"),
        ] {
            let client: SocketAddr = client.parse().unwrap();
            let connection = ConnectionFields::new(client, subject, "5f3a", "f02ca7f9");
            for request in [&forwarded, &refused] {
                let line = audit_line(&connection, request).unwrap();
                assert_eq!(
                    String::from_utf8(line).unwrap(),
                    whole_line(client, subject, request)
                );
            }
        }
    }

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

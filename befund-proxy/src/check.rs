//! `befund-proxy check-config`: validates the configuration and every file it
//! names without binding, attaching or starting anything.

use std::path::Path;
use std::time::SystemTime;

use crate::config::{AuditTarget, Config, ConfigError};
use crate::proxy::{IdentityHeaders, Upstream};
use crate::tls::files::ConfigFile;
use crate::tls::{CrlStanding, TlsState};

/// What a successful check found, one line per fact.
#[derive(Debug)]
pub struct CheckReport {
    /// Human-readable summary lines.
    pub lines: Vec<String>,
}

/// Every problem found; each error names the file, the key and the fix.
#[derive(Debug)]
pub struct CheckFailed {
    /// The problems, in section order.
    pub errors: Vec<ConfigError>,
}

/// Checks the configuration at `path` and everything it names.
pub fn check_config(path: &Path) -> Result<CheckReport, CheckFailed> {
    let config = Config::load(path).map_err(|e| CheckFailed { errors: vec![e] })?;
    let mut lines = Vec::new();
    let mut errors = Vec::new();

    match TlsState::load(&config) {
        Ok(state) => describe_tls(&config, &state, &mut lines),
        Err(e) => errors.push(e),
    }
    match Upstream::load(&config) {
        Ok(_) => lines.push(format!("upstream: {}", config.upstream.url)),
        Err(e) => errors.push(e),
    }
    match IdentityHeaders::load(&config) {
        Ok(headers) => lines.push(format!(
            "identity: shared secret read, sent as {}",
            headers.secret_header()
        )),
        Err(e) => errors.push(e),
    }
    if let Err(e) = check_audit_target(&config) {
        errors.push(e);
    }
    if let Err(e) = check_runtime_user(&config) {
        errors.push(e);
    }

    if errors.is_empty() {
        Ok(CheckReport { lines })
    } else {
        Err(CheckFailed { errors })
    }
}

fn describe_tls(config: &Config, state: &TlsState, lines: &mut Vec<String>) {
    let cert = &state.server_certificate;
    let listen: Vec<String> = config.tls.listen.iter().map(ToString::to_string).collect();
    lines.push(format!("listen: {}", listen.join(", ")));
    lines.push(format!(
        "server certificate: {} ({}), valid until {}",
        cert.subject,
        cert.key,
        humantime::format_rfc3339_seconds(cert.not_after)
    ));
    for ca in &state.client_cas {
        lines.push(format!("client CA: {ca}"));
    }
    let now = SystemTime::now();
    let warning = std::time::Duration::from_secs(u64::from(config.tls.crl_warning_days) * 86_400);
    for crl in state.crl_monitor.crls() {
        let standing = match crl.standing(now, warning) {
            CrlStanding::Fresh => "fresh",
            CrlStanding::ExpiresSoon => "EXPIRES SOON",
            CrlStanding::Expired => "EXPIRED",
        };
        lines.push(format!(
            "CRL {}: issuer {}, {} revoked, next update {} ({standing})",
            crl.file.display(),
            crl.issuer,
            crl.revoked,
            crl.next_update_text()
        ));
    }
}

/// The audit file's directory must exist; the file itself is created at start-up.
fn check_audit_target(config: &Config) -> Result<(), ConfigError> {
    let AuditTarget::File(path) = &config.log.audit else {
        return Ok(());
    };
    let file = ConfigFile::new(&config.source, "log.audit", path);
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => return Ok(()),
        Ok(_) => {
            return Err(
                file.error("not a regular file; name a file such as /var/log/befund/audit.jsonl")
            );
        }
        Err(_) => {}
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("/"));
    if !parent.is_dir() {
        return Err(file.error(format!(
            "the directory {} does not exist; create it",
            parent.display()
        )));
    }
    Ok(())
}

fn check_runtime_user(config: &Config) -> Result<(), ConfigError> {
    let Some(user) = &config.runtime.user else {
        return Ok(());
    };
    match nix::unistd::User::from_name(user) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ConfigError::Invalid {
            path: config.source.clone(),
            key: "runtime.user".into(),
            problem: format!(
                "no user `{user}` on this system; create it (useradd --system {user}) or fix the name"
            ),
        }),
        Err(e) => Err(ConfigError::Invalid {
            path: config.source.clone(),
            key: "runtime.user".into(),
            problem: format!("cannot look up `{user}`: {e}"),
        }),
    }
}

//! `[log]`: the daemon's log and the per-request audit log.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// `[log]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Log filter: a level (`error`, `warn`, `info`, `debug`, `trace`) or a
    /// tracing filter such as `info,befund_proxy::proxy=debug`.
    #[serde(default = "default_level")]
    pub level: String,
    /// Log line format.
    #[serde(default)]
    pub format: LogFormat,
    /// Where the audit log goes: `"stdout"` or an absolute file path (appended, mode 0640).
    #[serde(default)]
    pub audit: AuditTarget,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: default_level(),
            format: LogFormat::default(),
            audit: AuditTarget::default(),
        }
    }
}

fn default_level() -> String {
    "info".to_owned()
}

/// Format of the daemon's log lines (on stderr).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Destination of the audit log: one JSON line per request.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(from = "String")]
pub enum AuditTarget {
    /// Standard output.
    #[default]
    Stdout,
    /// A file, opened for appending.
    File(PathBuf),
}

impl From<String> for AuditTarget {
    fn from(value: String) -> Self {
        if value == "stdout" {
            Self::Stdout
        } else {
            Self::File(PathBuf::from(value))
        }
    }
}

impl LogConfig {
    pub(super) fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.level) {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                key: "log.level".into(),
                problem: format!(
                    "`{}` is not a log filter ({e}); use e.g. \"info\"",
                    self.level
                ),
            });
        }
        if let AuditTarget::File(file) = &self.audit
            && !file.is_absolute()
        {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                key: "log.audit".into(),
                problem: format!(
                    "`{}` is relative; give \"stdout\" or an absolute path, e.g. \
                     \"/var/log/befund/audit.jsonl\"",
                    file.display()
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_target_is_stdout_or_a_path() {
        let log: LogConfig = toml::from_str("audit = \"stdout\"").unwrap();
        assert_eq!(log.audit, AuditTarget::Stdout);
        let log: LogConfig = toml::from_str("audit = \"/var/log/befund/audit.jsonl\"").unwrap();
        assert_eq!(
            log.audit,
            AuditTarget::File("/var/log/befund/audit.jsonl".into())
        );
    }

    #[test]
    fn relative_audit_path_is_rejected() {
        let log: LogConfig = toml::from_str("audit = \"audit.jsonl\"").unwrap();
        let err = log.validate(Path::new("b.toml")).unwrap_err().to_string();
        assert!(
            err.starts_with("b.toml: key `log.audit`: `audit.jsonl` is relative"),
            "{err}"
        );
    }

    #[test]
    fn unknown_format_is_a_parse_error() {
        assert!(toml::from_str::<LogConfig>("format = \"xml\"").is_err());
    }

    #[test]
    fn invalid_level_filter_is_rejected() {
        let log: LogConfig = toml::from_str("level = \"loud[\"").unwrap();
        let err = log.validate(Path::new("b.toml")).unwrap_err().to_string();
        assert!(
            err.starts_with("b.toml: key `log.level`: `loud[` is not a log filter"),
            "{err}"
        );
    }
}

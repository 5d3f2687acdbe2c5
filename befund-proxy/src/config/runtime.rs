//! `[runtime]`: how the daemon runs once its sockets are bound.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// Default location of the pid file.
pub const DEFAULT_PID_FILE: &str = "/run/befund/befund-proxy.pid";

/// `[runtime]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Unprivileged user the daemon switches to after binding its ports and
    /// loading its keys (its primary group becomes the only group). Unset: keep
    /// running as the starting user.
    pub user: Option<String>,
    /// File holding the daemon's process id, locked while it runs;
    /// `befundctl reload` signals the process named there.
    #[serde(default = "default_pid_file")]
    pub pid_file: PathBuf,
    /// Threads serving client connections, each with its own connections.
    /// Unset: one per CPU the daemon may run on.
    pub workers: Option<usize>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            user: None,
            pid_file: default_pid_file(),
            workers: None,
        }
    }
}

fn default_pid_file() -> PathBuf {
    PathBuf::from(DEFAULT_PID_FILE)
}

impl RuntimeConfig {
    /// Most connection worker threads `workers` may ask for: far more than
    /// any appliance has CPUs.
    pub const MAX_WORKERS: usize = 256;

    /// Number of connection worker threads: `workers`, or one per CPU the
    /// daemon may run on.
    pub fn connection_workers(&self) -> NonZeroUsize {
        match self.workers.and_then(NonZeroUsize::new) {
            Some(workers) => workers,
            None => std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
        }
    }

    pub(super) fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: format!("runtime.{key}"),
            problem,
        };
        if let Some(user) = &self.user
            && (user.is_empty() || user == "root")
        {
            return Err(invalid(
                "user",
                format!(
                    "`{user}` is no unprivileged user; name a system user such as \"befund\" or \
                     remove the key"
                ),
            ));
        }
        if let Some(workers) = self.workers
            && !(1..=Self::MAX_WORKERS).contains(&workers)
        {
            return Err(invalid(
                "workers",
                format!(
                    "{workers} threads: it must be 1 to {}; remove the key to run one per CPU",
                    Self::MAX_WORKERS
                ),
            ));
        }
        if !self.pid_file.is_absolute() || self.pid_file.file_name().is_none() {
            return Err(invalid(
                "pid_file",
                format!(
                    "`{}` is not an absolute file path; use e.g. \"{DEFAULT_PID_FILE}\"",
                    self.pid_file.display()
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_as_runtime_user_is_rejected() {
        let runtime = RuntimeConfig {
            user: Some("root".into()),
            ..RuntimeConfig::default()
        };
        let err = runtime
            .validate(Path::new("b.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("b.toml: key `runtime.user`: `root` is no unprivileged user"),
            "{err}"
        );
    }

    #[test]
    fn relative_pid_file_is_rejected() {
        let runtime = RuntimeConfig {
            pid_file: "befund.pid".into(),
            ..RuntimeConfig::default()
        };
        let err = runtime
            .validate(Path::new("b.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("b.toml: key `runtime.pid_file`: `befund.pid` is not an absolute"),
            "{err}"
        );
    }

    #[test]
    fn pid_file_defaults_to_run_befund() {
        assert_eq!(
            RuntimeConfig::default().pid_file,
            Path::new("/run/befund/befund-proxy.pid")
        );
    }
}

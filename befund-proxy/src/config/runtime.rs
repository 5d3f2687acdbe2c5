//! `[runtime]`: how the daemon runs once its sockets are bound.

use std::path::Path;

use serde::Deserialize;

use super::ConfigError;

/// `[runtime]` section.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Unprivileged user the daemon switches to after binding its ports and
    /// loading its keys (its primary group becomes the only group). Unset: keep
    /// running as the starting user.
    pub user: Option<String>,
}

impl RuntimeConfig {
    pub(super) fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        if let Some(user) = &self.user
            && (user.is_empty() || user == "root")
        {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                key: "runtime.user".into(),
                problem: format!(
                    "`{user}` is no unprivileged user; name a system user such as \"befund\" or \
                     remove the key"
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
    fn root_as_runtime_user_is_rejected() {
        let runtime = RuntimeConfig {
            user: Some("root".into()),
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
}

//! The daemon's log on stderr, configured by `[log]`.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `log.level` is not a valid filter.
    #[error("invalid log filter `{filter}`: {message}")]
    Filter {
        /// The filter.
        filter: String,
        /// The parser's message.
        message: String,
    },
    /// A global subscriber was already installed.
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}

/// Installs the global log subscriber: `log.level` as filter (overridden by
/// `RUST_LOG` when set), text or JSON lines on stderr.
pub fn init(config: &LogConfig) -> Result<(), LoggingError> {
    let filter_text = std::env::var("RUST_LOG").unwrap_or_else(|_| config.level.clone());
    let filter = EnvFilter::builder()
        .parse(&filter_text)
        .map_err(|e| LoggingError::Filter {
            filter: filter_text.clone(),
            message: e.to_string(),
        })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| LoggingError::Install(e.to_string()))
}

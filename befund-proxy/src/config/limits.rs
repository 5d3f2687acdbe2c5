//! `[limits]`: timeouts and sizes that bound what a client can make the proxy hold.

use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// `[limits]` section. Every value has a safe default.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Time a client has to complete the TLS handshake after connecting.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Time a client has to send a request's complete headers once it started
    /// sending them (and, after the handshake, to start the first request).
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// An idle keep-alive connection is closed after this long without a request.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Largest request header block accepted, in bytes (HTTP/1.1 head, HTTP/2 header list).
    #[serde(default = "default_max_header_size")]
    pub max_header_size: NonZeroUsize,
    /// Connections served at once; further connections are closed right after accept.
    #[serde(default = "default_max_connections")]
    pub max_connections: NonZeroUsize,
    /// Concurrent HTTP/2 streams per connection.
    #[serde(default = "default_max_streams")]
    pub max_streams_per_connection: u32,
    /// How long a shutdown waits for requests in progress before closing them.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: default_handshake_timeout(),
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
            max_header_size: default_max_header_size(),
            max_connections: default_max_connections(),
            max_streams_per_connection: default_max_streams(),
            shutdown_grace: default_shutdown_grace(),
        }
    }
}

// A handshake is a few round trips; 10 s allows slow mobile links and
// smartcard PIN-less signing while bounding half-open handshakes.
fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

// Browsers send a whole request head in one packet; 10 s only hurts clients
// that trickle headers on purpose.
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}

// Browsers reuse connections for a minute or so; longer only ties up slots.
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

// Generous for cookies of a web application, small enough to bound memory per
// connection.
fn default_max_header_size() -> NonZeroUsize {
    NonZeroUsize::new(16 * 1024).expect("non-zero")
}

// A lab's physicians number in the hundreds; 1024 leaves room for several
// connections each while bounding file descriptors and memory.
fn default_max_connections() -> NonZeroUsize {
    NonZeroUsize::new(1024).expect("non-zero")
}

fn default_max_streams() -> u32 {
    100
}

fn default_shutdown_grace() -> Duration {
    Duration::from_secs(10)
}

/// hyper's smallest read buffer; a header limit below it cannot be enforced.
const MIN_HEADER_SIZE: usize = 8192;

impl LimitsConfig {
    pub(super) fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: format!("limits.{key}"),
            problem,
        };

        for (key, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(
                    key,
                    "a zero timeout would close every connection; use e.g. \"10s\"".into(),
                ));
            }
        }
        if self.max_header_size.get() < MIN_HEADER_SIZE {
            return Err(invalid(
                "max_header_size",
                format!(
                    "{} bytes is below the minimum of {MIN_HEADER_SIZE}; use e.g. 16384",
                    self.max_header_size
                ),
            ));
        }
        if self.max_streams_per_connection == 0 {
            return Err(invalid(
                "max_streams_per_connection",
                "0 would refuse every HTTP/2 request; use e.g. 100".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humantime_durations_and_defaults_are_read() {
        let limits: LimitsConfig =
            toml::from_str("header_read_timeout = \"2s\"\nidle_timeout = \"1m 30s\"").unwrap();
        assert_eq!(limits.header_read_timeout, Duration::from_secs(2));
        assert_eq!(limits.idle_timeout, Duration::from_secs(90));
        assert_eq!(limits.handshake_timeout, Duration::from_secs(10));
        assert_eq!(limits.max_connections.get(), 1024);
    }

    #[test]
    fn duration_without_unit_is_a_parse_error_naming_the_key() {
        let err = toml::from_str::<LimitsConfig>("handshake_timeout = \"10\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("handshake_timeout"), "{err}");
    }

    #[test]
    fn zero_timeout_is_rejected_with_the_key() {
        let limits: LimitsConfig = toml::from_str("idle_timeout = \"0s\"").unwrap();
        let err = limits
            .validate(Path::new("b.toml"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "b.toml: key `limits.idle_timeout`: a zero timeout would close every connection; use e.g. \"10s\""
        );
    }

    #[test]
    fn header_limit_below_hypers_buffer_is_rejected() {
        let limits: LimitsConfig = toml::from_str("max_header_size = 1024").unwrap();
        let err = limits
            .validate(Path::new("b.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1024 bytes is below the minimum of 8192"),
            "{err}"
        );
    }
}

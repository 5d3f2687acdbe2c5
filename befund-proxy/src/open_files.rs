//! The limit on open files (`RLIMIT_NOFILE`).
//!
//! Every client connection holds a socket, and so does every request in
//! progress at the Befundserver. Linux starts processes with a soft limit
//! of 1024 descriptors (systemd too, whatever the hard limit), which would
//! cap the proxy near a thousand connections whatever `limits.max_connections`
//! says. The daemon therefore raises its soft limit to the hard limit at
//! start-up (no privilege needed), and warns when even that is below what
//! `limits.max_connections` needs; the hard limit is the operator's
//! (`LimitNOFILE=` in the systemd unit).

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors the daemon holds besides connections: listeners, the admin
/// listener, the audit log and pid file, the pinned filter's maps and
/// program, the runtime's epoll and event descriptors, files being read at
/// a reload.
pub const RESERVED: u64 = 128;

/// The soft limit before and after [`raise_soft_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFileLimit {
    /// The soft limit the process started with.
    pub before: u64,
    /// The soft limit now in force (the hard limit, if raising worked).
    pub now: u64,
}

/// Why the limit could not be read or raised.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenFileLimitError {
    /// `getrlimit` failed.
    #[error("cannot read the open-file limit: {0}")]
    Read(#[source] nix::Error),
    /// `setrlimit` failed.
    #[error("cannot raise the open-file limit from {from} to {to}: {source}")]
    Raise {
        /// The soft limit in force.
        from: u64,
        /// The hard limit it was to be raised to.
        to: u64,
        /// Why.
        #[source]
        source: nix::Error,
    },
}

/// Raises this process's soft limit on open files to its hard limit.
///
/// # Errors
///
/// [`OpenFileLimitError`] if the limits cannot be read or set; the limit in
/// force is then unchanged.
pub fn raise_soft_limit() -> Result<OpenFileLimit, OpenFileLimitError> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(OpenFileLimitError::Read)?;
    if soft >= hard {
        return Ok(OpenFileLimit {
            before: soft,
            now: soft,
        });
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(|source| OpenFileLimitError::Raise {
        from: soft,
        to: hard,
        source,
    })?;
    Ok(OpenFileLimit {
        before: soft,
        now: hard,
    })
}

/// Descriptors that `max_connections` client connections can need at once:
/// one per connection, one per connection's request at the Befundserver,
/// and [`RESERVED`].
pub fn needed_for(max_connections: usize) -> u64 {
    let connections = u64::try_from(max_connections).unwrap_or(u64::MAX);
    connections.saturating_mul(2).saturating_add(RESERVED)
}

/// The descriptors `max_connections` needs beyond `limit`, if any.
pub fn shortfall(limit: u64, max_connections: usize) -> Option<u64> {
    let needed = needed_for(max_connections);
    (limit < needed).then_some(needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_limit_below_the_hard_limit_is_raised_to_it() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        // One below the hard limit: low enough to need raising, high enough
        // not to starve other tests of this process.
        let lowered = hard - 1;
        setrlimit(Resource::RLIMIT_NOFILE, lowered, hard).unwrap();

        let limit = raise_soft_limit().unwrap();

        assert_eq!(limit.before, lowered);
        assert_eq!(limit.now, hard);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
    }

    #[test]
    fn soft_limit_at_the_hard_limit_is_left_alone() {
        raise_soft_limit().unwrap();
        let limit = raise_soft_limit().unwrap();
        assert_eq!(limit.before, limit.now);
    }

    #[test]
    fn linux_default_soft_limit_cannot_serve_the_default_max_connections() {
        assert_eq!(shortfall(1024, 1024), Some(2 * 1024 + RESERVED));
    }

    #[test]
    fn systemd_unit_limit_serves_ten_thousand_connections() {
        assert_eq!(shortfall(65_536, 10_000), None);
        assert_eq!(needed_for(10_000), 20_128);
    }

    #[test]
    fn huge_max_connections_saturates_instead_of_overflowing() {
        assert_eq!(needed_for(usize::MAX), u64::MAX);
    }
}

//! Dropping root privileges once the sockets are bound and the keys are read.

use nix::unistd::{Gid, Uid, User, getegid, geteuid, getgid, getuid, setgid, setgroups, setuid};

/// Why the switch to the unprivileged user failed.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// The user does not exist.
    #[error(
        "cannot switch to user `{0}`: no such user; create it (e.g. `useradd --system {0}`) or fix runtime.user"
    )]
    NoSuchUser(String),
    /// Looking the user up failed.
    #[error("cannot look up user `{user}`: {source}")]
    Lookup {
        /// The user.
        user: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The user is root.
    #[error("cannot switch to user `{0}`: it has uid 0; name an unprivileged user")]
    IsRoot(String),
    /// Not running as root, and not already running as that user.
    #[error("cannot switch to user `{user}`: the daemon runs as uid {uid}, not as root")]
    NotRoot {
        /// The target user.
        user: String,
        /// The current uid.
        uid: u32,
    },
    /// A system call failed.
    #[error("cannot switch to user `{user}`: {call} failed: {source}")]
    Call {
        /// The target user.
        user: String,
        /// The failing call.
        call: &'static str,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// After the switch the process could still act as root.
    #[error("switching to user `{0}` left the process able to regain root; refusing to run")]
    Regained(String),
}

/// The identity the process runs as after [`drop_to_user`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunningAs {
    /// The real and effective user id.
    pub uid: u32,
    /// The real and effective group id (also the only supplementary group).
    pub gid: u32,
}

/// Switches the whole process to `user`: supplementary groups become just the
/// user's primary group, then the group id, then the user id (in that order,
/// since after `setuid` the others are no longer permitted). Then checks that
/// root cannot be regained.
pub fn drop_to_user(user: &str) -> Result<RunningAs, PrivilegeError> {
    let entry = User::from_name(user)
        .map_err(|source| PrivilegeError::Lookup {
            user: user.to_owned(),
            source,
        })?
        .ok_or_else(|| PrivilegeError::NoSuchUser(user.to_owned()))?;
    if entry.uid.is_root() {
        return Err(PrivilegeError::IsRoot(user.to_owned()));
    }
    let target = RunningAs {
        uid: entry.uid.as_raw(),
        gid: entry.gid.as_raw(),
    };
    if !geteuid().is_root() {
        return if current() == target {
            Ok(target)
        } else {
            Err(PrivilegeError::NotRoot {
                user: user.to_owned(),
                uid: getuid().as_raw(),
            })
        };
    }

    let call = |call: &'static str| {
        move |source| PrivilegeError::Call {
            user: user.to_owned(),
            call,
            source,
        }
    };
    setgroups(&[entry.gid]).map_err(call("setgroups"))?;
    setgid(entry.gid).map_err(call("setgid"))?;
    setuid(entry.uid).map_err(call("setuid"))?;

    if setuid(Uid::from_raw(0)).is_ok() || setgid(Gid::from_raw(0)).is_ok() || current() != target {
        return Err(PrivilegeError::Regained(user.to_owned()));
    }
    tracing::info!(
        user,
        uid = target.uid,
        gid = target.gid,
        "dropped privileges"
    );
    Ok(target)
}

fn current() -> RunningAs {
    let (uid, euid, gid, egid) = (getuid(), geteuid(), getgid(), getegid());
    RunningAs {
        uid: if uid == euid { uid.as_raw() } else { u32::MAX },
        gid: if gid == egid { gid.as_raw() } else { u32::MAX },
    }
}

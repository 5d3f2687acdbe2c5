//! Dropping root privileges once the sockets are bound and the keys are read.
//!
//! The daemon keeps no capability, with one exception: on kernels before
//! 6.5 with `kernel.unprivileged_bpf_disabled` set (Debian's default), every
//! `bpf()` call needs `CAP_BPF`, even an update through a map descriptor the
//! daemon opened while it was root. The daemon then keeps `CAP_BPF` alone
//! (no `CAP_NET_ADMIN`: it cannot attach or detach programs), so a reload
//! can still write the firewall rules and `/metrics` can read the counters.
//! Whether that is needed is probed, not guessed: before the switch the
//! daemon lowers its BPF capabilities, tries to read a map and raises them
//! again ([`works_without_bpf_capability`]).

use std::path::{Path, PathBuf};

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid, User, getegid, geteuid, getgid, getuid, setgid, setgroups, setuid};

use crate::config::Config;

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
    /// Keeping `CAP_BPF` across the switch failed.
    #[error("cannot keep CAP_BPF for user `{user}`: {source}")]
    Capability {
        /// The target user.
        user: String,
        /// Why.
        #[source]
        source: caps::errors::CapsError,
    },
    /// The daemon would not be able to read a CRL after the switch.
    #[error(
        "{config}: key `tls.crls`: {}: user `{user}` (runtime.user) cannot read it, so revocations \
         published there would never take effect; make the file and its directories readable for \
         that user, e.g. `chgrp GROUP FILE; chmod 0640 FILE` with the user's group",
        file.display()
    )]
    CrlUnreadable {
        /// The configuration file.
        config: PathBuf,
        /// The CRL file.
        file: PathBuf,
        /// The runtime user.
        user: String,
    },
}

/// The identity the process runs as after [`drop_to_user`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunningAs {
    /// The real and effective user id.
    pub uid: u32,
    /// The real and effective group id (also the only supplementary group).
    pub gid: u32,
    /// Capabilities kept: none, or `CAP_BPF`.
    pub kept: &'static [&'static str],
}

/// Whether `probe` (a read of an open BPF map) succeeds with `CAP_BPF` and
/// `CAP_SYS_ADMIN` lowered, i.e. whether the running kernel lets an
/// unprivileged process use the map descriptors the daemon holds. True when
/// the process has neither capability to begin with.
pub fn works_without_bpf_capability(probe: impl FnOnce() -> bool) -> bool {
    let held: Vec<Capability> = [Capability::CAP_BPF, Capability::CAP_SYS_ADMIN]
        .into_iter()
        .filter(|cap| caps::has_cap(None, CapSet::Effective, *cap).unwrap_or(false))
        .collect();
    if held.is_empty() {
        return true;
    }
    let lowered = held
        .iter()
        .all(|cap| caps::drop(None, CapSet::Effective, *cap).is_ok());
    let works = lowered && probe();
    for cap in &held {
        let _ = caps::raise(None, CapSet::Effective, *cap);
    }
    works
}

/// Checks, as the user the daemon now runs as, the files a reload or a CRL
/// change re-reads: an unreadable CRL is an error (revocations published
/// there would silently never take effect), an unreadable certificate, key
/// or CA bundle and a firewall state directory it cannot write are warnings
/// (reloads would be rejected until that is fixed or the daemon restarted).
/// Reading the files for real covers modes, owners and directories alike.
pub fn check_files_after_drop(user: &str, config: &Config) -> Result<(), PrivilegeError> {
    let tls = &config.tls;
    for (key, file) in [
        ("tls.certificate", &tls.certificate),
        ("tls.private_key", &tls.private_key),
        ("tls.client_ca", &tls.client_ca),
    ] {
        if let Err(error) = std::fs::read(file) {
            tracing::warn!(
                key, file = %file.display(), user, error = %error,
                "runtime.user cannot read this file; reloads will be rejected until it can \
                 (e.g. `chgrp GROUP FILE; chmod 0640 FILE` with the user's group)"
            );
        }
    }
    for file in &tls.crls {
        if std::fs::read(file).is_err() {
            return Err(PrivilegeError::CrlUnreadable {
                config: config.source.clone(),
                file: file.clone(),
                user: user.to_owned(),
            });
        }
    }
    let state_dir = config
        .firewall
        .state_file
        .parent()
        .unwrap_or(Path::new("/"));
    if let Err(error) = nix::unistd::access(state_dir, nix::unistd::AccessFlags::W_OK) {
        tracing::warn!(
            dir = %state_dir.display(), user, error = %error,
            "runtime.user cannot write the firewall state directory (firewall.state_file); \
             reloads will be rejected until it can (e.g. `chown USER DIR`)"
        );
    }
    Ok(())
}

/// Switches the whole process to `user`: supplementary groups become just the
/// user's primary group, then the group id, then the user id (in that order,
/// since after `setuid` the others are no longer permitted). Then checks that
/// root cannot be regained. With `keep_bpf`, `CAP_BPF` stays permitted and
/// effective and nothing else.
pub fn drop_to_user(user: &str, keep_bpf: bool) -> Result<RunningAs, PrivilegeError> {
    let entry = User::from_name(user)
        .map_err(|source| PrivilegeError::Lookup {
            user: user.to_owned(),
            source,
        })?
        .ok_or_else(|| PrivilegeError::NoSuchUser(user.to_owned()))?;
    if entry.uid.is_root() {
        return Err(PrivilegeError::IsRoot(user.to_owned()));
    }
    let kept: &'static [&'static str] = if keep_bpf { &["CAP_BPF"] } else { &[] };
    let target = RunningAs {
        uid: entry.uid.as_raw(),
        gid: entry.gid.as_raw(),
        kept: &[],
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
    let capability = |source| PrivilegeError::Capability {
        user: user.to_owned(),
        source,
    };
    if keep_bpf {
        caps::securebits::set_keepcaps(true).map_err(capability)?;
    }
    setgroups(&[entry.gid]).map_err(call("setgroups"))?;
    setgid(entry.gid).map_err(call("setgid"))?;
    setuid(entry.uid).map_err(call("setuid"))?;
    let only_bpf: CapsHashSet = if keep_bpf {
        [Capability::CAP_BPF].into_iter().collect()
    } else {
        CapsHashSet::new()
    };
    if keep_bpf {
        caps::set(None, CapSet::Permitted, &only_bpf).map_err(capability)?;
        caps::set(None, CapSet::Effective, &only_bpf).map_err(capability)?;
        caps::clear(None, CapSet::Inheritable).map_err(capability)?;
        caps::securebits::set_keepcaps(false).map_err(capability)?;
    }

    let permitted = caps::read(None, CapSet::Permitted).map_err(capability)?;
    if setuid(Uid::from_raw(0)).is_ok()
        || setgid(Gid::from_raw(0)).is_ok()
        || current() != target
        || permitted != only_bpf
    {
        return Err(PrivilegeError::Regained(user.to_owned()));
    }
    Ok(RunningAs { kept, ..target })
}

fn current() -> RunningAs {
    let (uid, euid, gid, egid) = (getuid(), geteuid(), getgid(), getegid());
    RunningAs {
        uid: if uid == euid { uid.as_raw() } else { u32::MAX },
        gid: if gid == egid { gid.as_raw() } else { u32::MAX },
        kept: &[],
    }
}

//! Attaching the programs so that they outlive the daemon (fail closed), and
//! replacing them in place on restart.
//!
//! The XDP program is attached through a BPF link pinned at
//! `<pin_root>/link`: the kernel keeps the filter while that pin exists,
//! whatever happens to the process. A restarted daemon swaps its freshly
//! loaded program into the pinned link with `BPF_LINK_UPDATE`, which is
//! atomic: every packet sees either the old or the new program.
//!
//! The egress program is a `cls_bpf` filter on the clsact qdisc, attached
//! over netlink (which every kernel from 6.1 on supports). Such a filter is
//! owned by the qdisc, not by the process, and a restart replaces it in place
//! (same priority and handle).

use std::{
    fs, io, mem,
    path::{Path, PathBuf},
};

use aya::programs::{
    ProgramError, SchedClassifier, TcAttachType, Xdp,
    links::{FdLink, PinnedLink},
    tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle},
    xdp::XdpLink,
};
use befund_common::programs;
use nix::sys::statfs::{BPF_FS_MAGIC, statfs};
use tracing::warn;

use super::{
    error::{FirewallError, LinkOrPinError},
    interface::{self, Interface},
    maps::maps_dir,
};
use crate::config::firewall::XdpMode;

/// tc priority of the egress filter. 1 runs it before any other filter on
/// the interface's egress, so it sees every packet the gateway sends.
const TC_PRIORITY: u16 = 1;
/// tc handle of the egress filter; fixed so a restart replaces it in place.
const TC_HANDLE: TcHandle = TcHandle::new(0, 0xbef);

/// Where the XDP link is pinned.
pub fn link_path(pin_root: &Path) -> PathBuf {
    pin_root.join("link")
}

/// What [`attach_xdp`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAttach {
    /// There was no filter; it is attached and pinned now.
    Attached,
    /// The program in the pinned link was swapped atomically.
    Replaced,
}

/// What [`attach_egress`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EgressAttach {
    /// A new filter was added.
    Attached,
    /// The existing filter's program was replaced.
    Replaced,
}

/// Where the pinned XDP link stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XdpState {
    /// Nothing pinned.
    NotPinned,
    /// Pinned and attached.
    Attached {
        /// The interface.
        interface: Interface,
        /// The program in the link.
        program_id: u32,
    },
    /// Pinned, but attached to no interface of this network namespace: its
    /// interface was removed, or it lives in another namespace.
    Defunct,
}

/// Makes sure `pin_root` and its `maps` directory exist on a bpf filesystem.
///
/// # Errors
///
/// [`FirewallError::NotBpffs`] when they cannot be on bpffs.
pub fn prepare_pin_root(pin_root: &Path) -> Result<(), FirewallError> {
    if !pin_root.exists() {
        let parent = pin_root.parent().unwrap_or(Path::new("/"));
        if !is_bpffs(parent) {
            return Err(FirewallError::NotBpffs {
                path: pin_root.to_path_buf(),
            });
        }
    }
    let dir = maps_dir(pin_root);
    fs::create_dir_all(&dir).map_err(|source| FirewallError::PinRoot {
        operation: "create",
        path: dir.clone(),
        source,
    })?;
    if !is_bpffs(pin_root) {
        return Err(FirewallError::NotBpffs {
            path: pin_root.to_path_buf(),
        });
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

/// Reports whether and where the pinned link is attached.
///
/// # Errors
///
/// Failures to open the pin or to read interfaces.
pub fn xdp_state(pin_root: &Path) -> Result<XdpState, FirewallError> {
    let path = link_path(pin_root);
    if !path.exists() {
        return Ok(XdpState::NotPinned);
    }
    let link = open_link(&path)?;
    let program_id = link_program(&path, &link)?;
    Ok(match find_program(program_id)? {
        Some(interface) => XdpState::Attached {
            interface,
            program_id,
        },
        None => XdpState::Defunct,
    })
}

fn open_link(path: &Path) -> Result<FdLink, FirewallError> {
    PinnedLink::from_pin(path)
        .map(FdLink::from)
        .map_err(|e| FirewallError::Link {
            operation: "open",
            path: path.to_path_buf(),
            source: Box::new(e.into()),
        })
}

fn link_program(path: &Path, link: &FdLink) -> Result<u32, FirewallError> {
    link.info()
        .map(|i| i.program_id())
        .map_err(|e| FirewallError::Link {
            operation: "inspect",
            path: path.to_path_buf(),
            source: Box::new(e.into()),
        })
}

fn find_program(program_id: u32) -> Result<Option<Interface>, FirewallError> {
    interface::with_xdp_program(program_id).map_err(|source| FirewallError::Netlink {
        operation: "list interfaces",
        source,
    })
}

/// How [`attach_xdp`] will put the program in place, decided by
/// [`plan_xdp`] before anything changes.
#[derive(Debug)]
pub enum XdpPlan {
    /// Swap the program inside the pinned link.
    Replace(FdLink),
    /// Attach and pin a new link (nothing usable is pinned).
    Attach,
}

/// Decides how to attach to `interface` in `mode` without changing
/// anything, so that a start that cannot succeed fails before it touches the
/// maps.
///
/// # Errors
///
/// When the pinned filter sits on another interface or in another mode, or
/// another XDP program occupies the interface.
pub fn plan_xdp(
    pin_root: &Path,
    interface: &Interface,
    mode: XdpMode,
) -> Result<XdpPlan, FirewallError> {
    let path = link_path(pin_root);
    if path.exists() {
        let link = open_link(&path)?;
        let program_id = link_program(&path, &link)?;
        match find_program(program_id)? {
            Some(pinned)
                if pinned.index == interface.index && pinned_mode(&pinned) == Some(mode) =>
            {
                return Ok(XdpPlan::Replace(link));
            }
            Some(pinned) => {
                return Err(FirewallError::AttachmentMismatch {
                    pinned_mode: pinned_mode(&pinned).map_or("other".into(), |m| m.to_string()),
                    pinned_interface: pinned.name,
                    interface: interface.name.clone(),
                    mode,
                });
            }
            // The link's interface was removed: the link can never filter
            // again, so a new one takes its place.
            None => {}
        }
    }
    if let Some(other) = interface.xdp {
        return Err(FirewallError::ForeignXdp {
            interface: interface.name.clone(),
            program_id: other.id,
        });
    }
    Ok(XdpPlan::Attach)
}

/// Carries out `plan`: swaps `program` into the pinned link, or attaches it
/// to `interface` in `mode` and pins the new link.
///
/// # Errors
///
/// When the kernel refuses; a failed swap leaves the old program in place.
pub fn attach_xdp(
    program: &mut Xdp,
    plan: XdpPlan,
    pin_root: &Path,
    interface: &Interface,
    mode: XdpMode,
) -> Result<XdpAttach, FirewallError> {
    let path = link_path(pin_root);
    match plan {
        XdpPlan::Replace(link) => replace_in_link(program, &path, link),
        XdpPlan::Attach => {
            if path.exists() {
                warn!(path = %path.display(), "pinned XDP link is defunct, attaching anew");
                fs::remove_file(&path).map_err(|e| FirewallError::Link {
                    operation: "remove",
                    path: path.clone(),
                    source: Box::new(e.into()),
                })?;
            }
            attach_new(program, &path, interface, mode)
        }
    }
}

fn pinned_mode(interface: &Interface) -> Option<XdpMode> {
    interface.xdp.and_then(|x| x.mode)
}

fn replace_in_link(
    program: &mut Xdp,
    path: &Path,
    link: FdLink,
) -> Result<XdpAttach, FirewallError> {
    let link = XdpLink::try_from(link).map_err(|e| FirewallError::Link {
        operation: "use",
        path: path.to_path_buf(),
        source: Box::new(e.into()),
    })?;
    let id = program
        .attach_to_link(link)
        .map_err(|source| FirewallError::ReplaceXdp {
            source: Box::new(source),
        })?;
    // Dropping our handle closes its descriptor; the pin keeps the link.
    let _handle = program
        .take_link(id)
        .map_err(|source| FirewallError::ReplaceXdp {
            source: Box::new(source),
        })?;
    Ok(XdpAttach::Replaced)
}

fn attach_new(
    program: &mut Xdp,
    path: &Path,
    interface: &Interface,
    mode: XdpMode,
) -> Result<XdpAttach, FirewallError> {
    let attach_err = |source| FirewallError::AttachXdp {
        interface: interface.name.clone(),
        mode,
        source: Box::new(source),
    };
    let aya_mode = match mode {
        XdpMode::Native => aya::programs::XdpMode::Driver,
        XdpMode::Skb => aya::programs::XdpMode::Skb,
    };
    let id = program
        .attach_to_if_index(interface.index, aya_mode)
        .map_err(attach_err)?;
    let link = program.take_link(id).map_err(attach_err)?;
    let link = FdLink::try_from(link).map_err(|_| FirewallError::NoXdpLink {
        interface: interface.name.clone(),
    })?;
    link.pin(path).map_err(|e| FirewallError::Link {
        operation: "pin",
        path: path.to_path_buf(),
        source: Box::new(e.into()),
    })?;
    Ok(XdpAttach::Attached)
}

/// Attaches the egress program to `interface`, replacing an earlier one in
/// place.
///
/// # Errors
///
/// When the qdisc or filter cannot be set up.
pub fn attach_egress(
    program: &mut SchedClassifier,
    interface: &str,
) -> Result<EgressAttach, FirewallError> {
    let tc_err = |operation, source: Box<dyn std::error::Error + Send + Sync>| FirewallError::Tc {
        operation,
        interface: interface.to_owned(),
        source,
    };
    match tc::qdisc_add_clsact(interface) {
        Ok(()) => {}
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc_eexist()) => {}
        Err(e) => return Err(tc_err("add the clsact qdisc for", Box::new(e))),
    }

    let existing = SchedClassifierLink::attached(
        interface,
        TcAttachType::Egress,
        TC_PRIORITY,
        TC_HANDLE,
        None,
    )
    .map_err(|e| tc_err("find", Box::new(e)))?;
    let (id, outcome) = match program.attach_to_link(existing) {
        Ok(id) => (id, EgressAttach::Replaced),
        Err(ProgramError::TcError(TcError::NetlinkError(e)))
            if e.raw_os_error() == Some(libc_enoent()) =>
        {
            let options = TcAttachOptions::Netlink(NlOptions {
                priority: TC_PRIORITY,
                handle: TC_HANDLE,
                classid: None,
            });
            let id = program
                .attach_with_options(interface, TcAttachType::Egress, options)
                .map_err(|e| tc_err("attach", Box::new(e)))?;
            (id, EgressAttach::Attached)
        }
        Err(e) => return Err(tc_err("replace", Box::new(e))),
    };
    let link = program
        .take_link(id)
        .map_err(|e| tc_err("keep", Box::new(e)))?;
    // Dropping a netlink tc link detaches the filter; the filter must stay
    // when the daemon exits, so the handle is released without running its
    // destructor. It holds no descriptor, only the filter's coordinates.
    mem::forget(link);
    Ok(outcome)
}

/// What [`detach`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Detached {
    /// The pinned XDP link was removed (the filter is off the interface).
    pub xdp: bool,
    /// The egress filter was removed.
    pub egress: bool,
    /// Pinned maps removed.
    pub maps: usize,
}

/// Removes the filter: unpins the link (which detaches XDP), removes the
/// egress filter from `interface` if given, and removes the pinned maps.
///
/// # Errors
///
/// When a pin cannot be removed or the egress filter cannot be listed.
pub fn detach(pin_root: &Path, interface: Option<&str>) -> Result<Detached, FirewallError> {
    let mut done = Detached::default();
    let link = link_path(pin_root);
    match fs::remove_file(&link) {
        Ok(()) => done.xdp = true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(FirewallError::Link {
                operation: "remove",
                path: link,
                source: Box::new(LinkOrPinError::Io(e)),
            });
        }
    }

    if let Some(interface) = interface {
        match tc::qdisc_detach_program(interface, TcAttachType::Egress, programs::WAN_EGRESS) {
            Ok(()) => done.egress = true,
            Err(TcError::IoError(e)) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(FirewallError::Tc {
                    operation: "remove",
                    interface: interface.to_owned(),
                    source: Box::new(e),
                });
            }
        }
    }

    let dir = maps_dir(pin_root);
    let pin_err = |operation, path: &Path, source| FirewallError::PinRoot {
        operation,
        path: path.to_path_buf(),
        source,
    };
    if dir.exists() {
        for entry in fs::read_dir(&dir).map_err(|e| pin_err("read", &dir, e))? {
            let path = entry.map_err(|e| pin_err("read", &dir, e))?.path();
            fs::remove_file(&path).map_err(|e| pin_err("remove", &path, e))?;
            done.maps += 1;
        }
        fs::remove_dir(&dir).map_err(|e| pin_err("remove", &dir, e))?;
    }
    // The pin root itself may be a mount point; leaving it is harmless.
    let _ = fs::remove_dir(pin_root);
    Ok(done)
}

fn libc_eexist() -> i32 {
    nix::errno::Errno::EEXIST as i32
}

fn libc_enoent() -> i32 {
    nix::errno::Errno::ENOENT as i32
}

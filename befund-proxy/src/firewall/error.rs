//! Errors of the firewall: each message says what failed and what to do.

use std::{io, path::PathBuf};

use aya::{
    EbpfError,
    maps::MapError,
    pin::PinError,
    programs::{ProgramError, links::LinkError},
};

use super::{slots::SlotsExhausted, state::StateError};
use crate::config::firewall::XdpMode;

/// A firewall operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The pin root is missing or not on bpffs.
    #[error(
        "{} is not on a bpf filesystem; mount one (`mount -t bpf bpf {}`) or set firewall.pin_root",
        path.display(), path.display()
    )]
    NotBpffs {
        /// The pin root.
        path: PathBuf,
    },
    /// A directory under the pin root could not be created or read.
    #[error("cannot {operation} {}: {source}; check firewall.pin_root", path.display())]
    PinRoot {
        /// What was attempted.
        operation: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `befundctl` found no pinned maps.
    #[error(
        "no filter pinned under {}; start befund-proxy or check firewall.pin_root",
        pin_root.display()
    )]
    NotPinned {
        /// The pin root looked at.
        pin_root: PathBuf,
    },
    /// The configured interface does not exist in this network namespace.
    #[error("interface `{name}` does not exist; check firewall.interface against `ip link`")]
    UnknownInterface {
        /// The configured name.
        name: String,
    },
    /// Reading interfaces over netlink failed.
    #[error("cannot {operation} over netlink: {source}")]
    Netlink {
        /// What was attempted.
        operation: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The embedded object could not be loaded (maps created or reused).
    #[error(
        "cannot load the filter object: {source}; if the maps pinned under {} come from another \
         version, remove them with `befundctl fw detach` and start again",
        pin_root.display()
    )]
    Load {
        /// The pin root in use.
        pin_root: PathBuf,
        /// Why.
        #[source]
        source: Box<EbpfError>,
    },
    /// The embedded object lacks a program or map this version expects.
    #[error("the embedded filter object has no {kind} `{name}`; rebuild befund-proxy")]
    MissingInObject {
        /// `program` or `map`.
        kind: &'static str,
        /// Its name.
        name: &'static str,
    },
    /// The kernel rejected a program.
    #[error("cannot load program `{program}` into the kernel: {source}")]
    LoadProgram {
        /// Program name.
        program: &'static str,
        /// Why (the verifier log is in the source's debug output).
        #[source]
        source: Box<ProgramError>,
    },
    /// Attaching the XDP program failed.
    #[error(
        "cannot attach the filter to {interface} in {mode} mode: {source}; if the driver lacks \
         native XDP set firewall.xdp_mode = \"skb\""
    )]
    AttachXdp {
        /// The interface.
        interface: String,
        /// The requested mode.
        mode: XdpMode,
        /// Why.
        #[source]
        source: Box<ProgramError>,
    },
    /// The kernel attached XDP without a BPF link, which cannot be pinned.
    #[error(
        "the kernel attached the filter to {interface} without a BPF link, so it cannot stay \
         attached when the daemon stops; use Linux 5.9 or newer"
    )]
    NoXdpLink {
        /// The interface.
        interface: String,
    },
    /// Another XDP program occupies the interface.
    #[error(
        "interface {interface} already runs another XDP program (id {program_id}); remove it \
         with `ip link set dev {interface} xdp off` if it is not needed"
    )]
    ForeignXdp {
        /// The interface.
        interface: String,
        /// The other program's id.
        program_id: u32,
    },
    /// The pinned filter sits on another interface or in another mode than
    /// configured.
    #[error(
        "the pinned filter is attached to {pinned_interface} in {pinned_mode} mode but the \
         configuration asks for {interface} in {mode} mode; run `befundctl fw detach` to remove \
         the old filter, then start again"
    )]
    AttachmentMismatch {
        /// Where it is.
        pinned_interface: String,
        /// How it is attached there (`native`, `skb` or `other`).
        pinned_mode: String,
        /// Where the configuration wants it.
        interface: String,
        /// How the configuration wants it.
        mode: XdpMode,
    },
    /// Reading, pinning or updating the pinned link failed.
    #[error("cannot {operation} the pinned XDP link {}: {source}", path.display())]
    Link {
        /// What was attempted.
        operation: &'static str,
        /// The pin path.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<LinkOrPinError>,
    },
    /// Replacing the program in the pinned link failed; the old one stays.
    #[error(
        "cannot replace the filter program in the pinned link (the running filter stays): {source}"
    )]
    ReplaceXdp {
        /// Why.
        #[source]
        source: Box<ProgramError>,
    },
    /// Attaching or replacing the TC egress program failed.
    #[error("cannot {operation} the egress program on {interface}: {source}")]
    Tc {
        /// What was attempted.
        operation: &'static str,
        /// The interface.
        interface: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A map operation failed.
    #[error("cannot {operation} map {map}: {source}")]
    Map {
        /// What was attempted.
        operation: &'static str,
        /// Map name.
        map: &'static str,
        /// Why.
        #[source]
        source: Box<MapError>,
    },
    /// No counter slot is free.
    #[error(transparent)]
    Slots(#[from] SlotsExhausted),
    /// The state file failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// `befundctl` was asked to remove a rule the configuration owns.
    #[error("`{rule}` comes from the configuration file; remove it there and reload befund-proxy")]
    ConfigRule {
        /// The rule.
        rule: String,
    },
    /// `befundctl` was asked to remove a rule that does not exist.
    #[error("there is no rule `{rule}`; `befundctl fw status` lists the rules")]
    NoSuchRule {
        /// The rule.
        rule: String,
    },
    /// A protect rule would cover one of the proxy's own addresses.
    #[error(
        "{cidr} contains the proxy address {address}; protecting it would cut every client off. \
         Protect the lab hosts only (e.g. their /32), not the gateway's WAN prefix"
    )]
    ProtectsProxy {
        /// The prefix asked for.
        cidr: String,
        /// The proxy address it covers.
        address: std::net::IpAddr,
    },
    /// The reload asked for something only a restart can do.
    #[error(
        "changing firewall.{key} needs a restart of befund-proxy; the running filter is unchanged"
    )]
    NeedsRestart {
        /// The key.
        key: &'static str,
    },
}

/// Either of aya's link and pin errors.
#[derive(Debug, thiserror::Error)]
pub enum LinkOrPinError {
    /// A link error.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// A pin error.
    #[error(transparent)]
    Pin(#[from] PinError),
    /// A file system error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

//! `befundctl fw`: firewall rules, counters and the filter's attachment.
//!
//! Every command works on the maps pinned under the pin root, so it takes
//! effect at once whether befund-proxy runs or not; rule changes are also
//! written to the state file so that a restart or reboot restores them.

use std::{fmt::Write as _, num::NonZeroU16, path::PathBuf};

use befund_common::LOCAL_GATEWAY;
use clap::{Args, Subcommand, ValueEnum};

use crate::{
    cidr::Cidr,
    config::{Config, ConfigError, DEFAULT_CONFIG_PATH, FirewallConfig},
    firewall::{
        AllowRule, FirewallError, NamedCounter, Protocol, Rule,
        attach::XdpState,
        control::{self, Added, Status},
        proxy_addresses,
    },
};

/// Firewall rules, counters and the filter's attachment.
#[derive(Args, Debug)]
pub struct FwArgs {
    /// The configuration file (for the pin root, state file and interface).
    #[arg(long, global = true, default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Use the filter pinned under this bpffs directory instead of
    /// firewall.pin_root.
    #[arg(long, global = true, value_name = "DIR")]
    pub pin_root: Option<PathBuf>,
    #[command(subcommand)]
    pub command: FwCommand,
}

/// A `befundctl fw` subcommand.
#[derive(Subcommand, Debug)]
pub enum FwCommand {
    /// Show whether the filter is attached, its settings, rules and counters.
    Status,
    /// Open a port to a source prefix (e.g. SSH from an admin network).
    Allow(AllowArgs),
    /// Remove a rule added with `allow`.
    Disallow(RuleArgs),
    /// Drop everything from a source prefix, before any other rule.
    Block {
        /// Source address or prefix, e.g. 203.0.113.0/24.
        cidr: Cidr,
        /// A note shown by `status`.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Remove a rule added with `block`.
    Unblock {
        /// The prefix given to `block`.
        cidr: Cidr,
    },
    /// Drop everything addressed to an address or prefix, whatever the port.
    Protect {
        /// Destination address or prefix, e.g. 10.10.0.5.
        target: Cidr,
        /// A note shown by `status`.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Remove a rule added with `protect`.
    Unprotect {
        /// The address or prefix given to `protect`.
        target: Cidr,
    },
    /// Close everything but ARP/ND, path MTU and allow rules (on), open the
    /// proxy port again (off), or follow firewall.lockdown (config).
    Lockdown {
        /// on, off or config.
        state: LockdownArg,
    },
    /// Show every counter slot that is in use.
    Counters {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove the filter from the interface and its pinned maps. Until
    /// befund-proxy starts again, the interface is unfiltered.
    Detach,
}

/// `allow`'s arguments.
#[derive(Args, Debug)]
pub struct AllowArgs {
    #[command(flatten)]
    rule: RuleArgs,
    /// A note shown by `status`.
    #[arg(long)]
    comment: Option<String>,
}

/// An allow rule on the command line.
#[derive(Args, Debug)]
pub struct RuleArgs {
    /// Source address or prefix, e.g. 198.51.100.0/24.
    #[arg(long)]
    source: Cidr,
    /// tcp or udp.
    #[arg(long)]
    proto: Protocol,
    /// Destination port on the gateway.
    #[arg(long)]
    port: NonZeroU16,
}

impl RuleArgs {
    fn rule(&self) -> Rule {
        Rule::Allow(AllowRule {
            source: self.source,
            protocol: self.proto,
            port: self.port,
        })
    }
}

/// `lockdown`'s argument.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LockdownArg {
    /// Lockdown on.
    On,
    /// Lockdown off.
    Off,
    /// Follow firewall.lockdown in the configuration file.
    Config,
}

/// A `befundctl fw` command failed.
#[derive(Debug, thiserror::Error)]
pub enum FwError {
    /// The configuration file is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The firewall operation failed.
    #[error(transparent)]
    Firewall(#[from] FirewallError),
}

/// Runs a `befundctl fw` command and returns what to print.
///
/// # Errors
///
/// [`FwError`], whose message is one line saying what to do.
pub fn run(args: FwArgs) -> Result<String, FwError> {
    let FwArgs {
        config,
        pin_root,
        command,
    } = args;
    let mut config = Config::load(&config)?.firewall;
    if let Some(pin_root) = pin_root {
        config.pin_root = pin_root;
    }
    let out = match command {
        FwCommand::Status => format_status(&config, &control::status(&config)?),
        FwCommand::Allow(AllowArgs { rule, comment }) => add(&config, rule.rule(), comment)?,
        FwCommand::Disallow(rule) => remove(&config, rule.rule())?,
        FwCommand::Block { cidr, comment } => add(&config, Rule::Block { source: cidr }, comment)?,
        FwCommand::Unblock { cidr } => remove(&config, Rule::Block { source: cidr })?,
        FwCommand::Protect { target, comment } => add(
            &config,
            Rule::Protect {
                destination: target,
            },
            comment,
        )?,
        FwCommand::Unprotect { target } => remove(
            &config,
            Rule::Protect {
                destination: target,
            },
        )?,
        FwCommand::Lockdown { state } => {
            let wanted = match state {
                LockdownArg::On => Some(true),
                LockdownArg::Off => Some(false),
                LockdownArg::Config => None,
            };
            let on = control::set_lockdown(&config, wanted)?;
            format!("lockdown {}\n", if on { "on" } else { "off" })
        }
        FwCommand::Counters { json } => {
            let counters = control::counters(&config)?;
            if json {
                let doc = serde_json::json!({ "counters": counters });
                format!("{doc:#}\n")
            } else {
                format_counters(&counters)
            }
        }
        FwCommand::Detach => {
            let done = control::detach(&config)?;
            format!(
                "filter removed: XDP link {}, egress filter {}, {} pinned maps removed; rules in \
                 {} stay for the next start\n",
                if done.xdp {
                    "unpinned"
                } else {
                    "was not pinned"
                },
                if done.egress { "removed" } else { "not found" },
                done.maps,
                config.state_file.display()
            )
        }
    };
    Ok(out)
}

fn add(config: &FirewallConfig, rule: Rule, comment: Option<String>) -> Result<String, FwError> {
    Ok(match control::add_rule(config, rule, comment)? {
        Added::New { slot } => format!("{rule}: in force (counter slot {slot})\n"),
        Added::Present { origin } => format!("{rule}: already in force (from {origin})\n"),
    })
}

fn remove(config: &FirewallConfig, rule: Rule) -> Result<String, FwError> {
    control::remove_rule(config, rule)?;
    Ok(format!("{rule}: removed\n"))
}

fn format_status(config: &FirewallConfig, status: &Status) -> String {
    let mut out = String::new();
    let filter = match &status.xdp {
        XdpState::Attached {
            interface,
            program_id,
        } => format!(
            "attached to {} ({} mode), program {program_id}",
            interface.name,
            interface
                .xdp
                .and_then(|x| x.mode)
                .map_or("unknown".into(), |m| m.to_string())
        ),
        XdpState::NotPinned => "NOT attached (no pinned link); start befund-proxy".into(),
        XdpState::Defunct => {
            "NOT attached to any interface of this network namespace (pinned link is defunct, \
             or run befundctl in the gateway's namespace)"
                .into()
        }
    };
    let s = &status.settings;
    let lockdown = if s.lockdown != 0 { "on" } else { "off" };
    let _ = writeln!(out, "filter:        {filter}");
    let _ = writeln!(
        out,
        "configured:    {} ({} mode), pin root {}",
        config.interface,
        config.xdp_mode,
        config.pin_root.display()
    );
    let _ = writeln!(out, "proxy port:    {}", s.proxy_port);
    let _ = writeln!(
        out,
        "lockdown:      {lockdown} (set by {})",
        status.lockdown_origin
    );
    let _ = writeln!(
        out,
        "flow timeouts: tcp {}s, udp {}s; {} outbound flows tracked",
        s.tcp_flow_timeout_secs, s.udp_flow_timeout_secs, status.flows
    );

    let _ = writeln!(
        out,
        "rule entries:  {} protected, {} blocked, {} allow",
        s.protected_entries, s.blocked_entries, s.allow_entries
    );

    let proxy = proxy_addresses(s);
    let _ = writeln!(out, "local addresses:");
    for (addr, flags) in &status.local {
        let mut roles = Vec::new();
        if proxy.contains(addr) {
            roles.push("proxy");
        }
        if flags & LOCAL_GATEWAY != 0 {
            roles.push("gateway");
        }
        let _ = writeln!(out, "  {addr:<40} {}", roles.join(", "));
    }

    let _ = writeln!(out, "rules:");
    let _ = writeln!(
        out,
        "  {:>4}  {:<9}  {:>12}  {:>14}  RULE",
        "SLOT", "ORIGIN", "PACKETS", "BYTES"
    );
    for r in &status.rules {
        let origin = r.origin.map_or("unknown".into(), |o| o.to_string());
        let comment = r
            .comment
            .as_deref()
            .map(|c| format!("  # {c}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:>4}  {origin:<9}  {:>12}  {:>14}  {}{comment}",
            r.slot, r.packets, r.bytes, r.rule
        );
    }
    let _ = writeln!(out, "verdicts:");
    out.push_str(&format_counters(&status.fixed));
    out
}

fn format_counters(counters: &[NamedCounter]) -> String {
    let mut out = format!(
        "  {:>4}  {:>12}  {:>14}  NAME\n",
        "SLOT", "PACKETS", "BYTES"
    );
    for c in counters {
        let _ = writeln!(
            out,
            "  {:>4}  {:>12}  {:>14}  {}",
            c.slot, c.packets, c.bytes, c.name
        );
    }
    out
}

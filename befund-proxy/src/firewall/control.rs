//! The operations behind `befundctl fw`: they work on the pinned maps and the
//! state file, whether the daemon runs or not.

use std::{collections::BTreeMap, net::IpAddr};

use befund_common::FilterSettings;

use super::{
    FirewallError, NamedCounter, Origin, Rule, RuleSet,
    attach::{self, Detached, XdpState},
    maps::FilterMaps,
    named_counters,
    rules::config_rules,
    state::{self, StateLock},
};
use crate::{cidr::unmapped, config::FirewallConfig};

/// What [`add_rule`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    /// The rule is new and in force, counting in `slot`.
    New {
        /// Its counter slot.
        slot: u32,
    },
    /// The rule was already in force.
    Present {
        /// Where it came from.
        origin: Origin,
    },
}

/// Adds `rule` to the running filter and to the state file.
///
/// # Errors
///
/// [`FirewallError::NotPinned`] when no filter is pinned; map and state
/// errors.
pub fn add_rule(
    config: &FirewallConfig,
    rule: Rule,
    comment: Option<String>,
) -> Result<Added, FirewallError> {
    refuse_protecting_the_proxy(config, &rule)?;
    let lock = StateLock::acquire(&config.state_file)?;
    let mut maps = FilterMaps::open(&config.pin_root)?;
    let mut state = lock.load()?;
    if config_rules(config).iter().any(|(r, _)| *r == rule) {
        return Ok(Added::Present {
            origin: Origin::Config,
        });
    }
    if state.rules.contains_key(&rule) && maps.rules().contains_key(&rule) {
        return Ok(Added::Present {
            origin: Origin::Befundctl,
        });
    }

    let assigned = state.slots.assign(rule)?;
    if assigned.fresh {
        maps.zero_counter(assigned.slot)?;
    }
    maps.insert_rule(&rule, assigned.slot)?;
    state.rules.insert(rule, comment);
    lock.save(&state)?;
    Ok(Added::New {
        slot: assigned.slot,
    })
}

/// The same check the configuration file gets: a protected prefix must not
/// contain an address the proxy serves on.
fn refuse_protecting_the_proxy(config: &FirewallConfig, rule: &Rule) -> Result<(), FirewallError> {
    let Rule::Protect { destination } = rule else {
        return Ok(());
    };
    match config
        .proxy_addresses
        .iter()
        .find(|addr| destination.contains(**addr))
    {
        Some(address) => Err(FirewallError::ProtectsProxy {
            cidr: destination.to_string(),
            address: *address,
        }),
        None => Ok(()),
    }
}

/// Removes a rule that `befundctl` added.
///
/// # Errors
///
/// [`FirewallError::ConfigRule`] for a rule from the configuration file,
/// [`FirewallError::NoSuchRule`] for an unknown one; map and state errors.
pub fn remove_rule(config: &FirewallConfig, rule: Rule) -> Result<(), FirewallError> {
    refuse_protecting_the_proxy(config, &rule)?;
    let lock = StateLock::acquire(&config.state_file)?;
    let mut maps = FilterMaps::open(&config.pin_root)?;
    let mut state = lock.load()?;
    if config_rules(config).iter().any(|(r, _)| *r == rule) {
        return Err(FirewallError::ConfigRule {
            rule: rule.to_string(),
        });
    }
    if !state.rules.contains_key(&rule) && !maps.rules().contains_key(&rule) {
        return Err(FirewallError::NoSuchRule {
            rule: rule.to_string(),
        });
    }

    maps.remove_rule(&rule)?;
    state.rules.remove(&rule);
    state.slots.release(&rule);
    lock.save(&state)?;
    Ok(())
}

/// Turns lockdown on or off (`Some`), or hands it back to the configuration
/// (`None`). Returns the lockdown now in force.
///
/// # Errors
///
/// [`FirewallError::NotPinned`] when no filter is pinned; map and state
/// errors.
pub fn set_lockdown(
    config: &FirewallConfig,
    lockdown: Option<bool>,
) -> Result<bool, FirewallError> {
    let lock = StateLock::acquire(&config.state_file)?;
    let mut maps = FilterMaps::open(&config.pin_root)?;
    let mut state = lock.load()?;
    state.lockdown = lockdown;
    let effective = lockdown.unwrap_or(config.lockdown);

    let mut settings = maps.settings()?;
    settings.lockdown = u32::from(effective);
    maps.set_settings(&settings)?;
    lock.save(&state)?;
    Ok(effective)
}

/// Everything `befundctl fw status` shows.
#[derive(Clone, Debug)]
pub struct Status {
    /// Where the pinned link stands.
    pub xdp: XdpState,
    /// Settings in the map.
    pub settings: FilterSettings,
    /// Where the lockdown setting comes from.
    pub lockdown_origin: Origin,
    /// Local addresses with their flags.
    pub local: Vec<(IpAddr, u32)>,
    /// Rules in the maps.
    pub rules: Vec<RuleStatus>,
    /// Fixed counter slots.
    pub fixed: Vec<NamedCounter>,
    /// Flows the gateway opened that are tracked now.
    pub flows: usize,
}

/// One rule as the filter holds it.
#[derive(Clone, Debug)]
pub struct RuleStatus {
    /// The rule.
    pub rule: Rule,
    /// Where it comes from; `None` when neither the configuration nor the
    /// state file knows it (the daemon removes it at its next start).
    pub origin: Option<Origin>,
    /// The operator's note.
    pub comment: Option<String>,
    /// Its counter slot.
    pub slot: u32,
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
}

/// Reads the pinned filter's state.
///
/// # Errors
///
/// [`FirewallError::NotPinned`] when no filter is pinned; map, state and
/// netlink errors.
pub fn status(config: &FirewallConfig) -> Result<Status, FirewallError> {
    let maps = FilterMaps::open(&config.pin_root)?;
    let xdp = attach::xdp_state(&config.pin_root)?;
    let state = state::load(&config.state_file)?;
    let set = RuleSet::combine(config, &state);

    let counters: BTreeMap<u32, NamedCounter> = named_counters(&maps)?
        .into_iter()
        .map(|c| (c.slot, c))
        .collect();
    let rules = maps
        .rules()
        .into_iter()
        .map(|(rule, slot)| {
            let meta = set.rules.get(&rule);
            let counter = counters.get(&slot);
            RuleStatus {
                rule,
                origin: meta.map(|m| m.origin),
                comment: meta.and_then(|m| m.comment.clone()),
                slot,
                packets: counter.map_or(0, |c| c.packets),
                bytes: counter.map_or(0, |c| c.bytes),
            }
        })
        .collect();
    let fixed = counters.into_values().filter(|c| !c.rule).collect();
    let local = maps
        .local()
        .into_iter()
        .map(|(addr, flags)| (unmapped(addr), flags))
        .collect();
    Ok(Status {
        xdp,
        settings: maps.settings()?,
        lockdown_origin: set.lockdown.1,
        local,
        rules,
        fixed,
        flows: maps.flow_count(),
    })
}

/// Every counter slot in use, named.
///
/// # Errors
///
/// [`FirewallError::NotPinned`] when no filter is pinned; map errors.
pub fn counters(config: &FirewallConfig) -> Result<Vec<NamedCounter>, FirewallError> {
    named_counters(&FilterMaps::open(&config.pin_root)?)
}

/// Removes the filter from the interface and the pinned maps. The state file
/// stays, so the next start restores `befundctl`'s rules.
///
/// # Errors
///
/// [`FirewallError::NotPinned`] when nothing is pinned; pin and tc errors.
pub fn detach(config: &FirewallConfig) -> Result<Detached, FirewallError> {
    let pinned = attach::link_path(&config.pin_root).exists()
        || super::maps::maps_dir(&config.pin_root).exists();
    if !pinned {
        return Err(FirewallError::NotPinned {
            pin_root: config.pin_root.clone(),
        });
    }
    let interface = super::interface::by_name(&config.interface)
        .ok()
        .flatten()
        .map(|i| i.name);
    attach::detach(&config.pin_root, interface.as_deref())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::firewall::parse_section;

    fn config() -> FirewallConfig {
        parse_section(
            Path::new("/etc/befund/befund.toml"),
            "[firewall]\ninterface = \"wan0\"\nproxy_addresses = [\"198.51.100.1\", \"2001:db8::1\"]\n\
             pin_root = \"/nonexistent/bpffs\"\nstate_file = \"/nonexistent/fw.json\"\n",
        )
        .expect("valid section")
    }

    #[test]
    fn protecting_a_prefix_with_a_proxy_address_is_refused_before_touching_anything() {
        for cidr in ["198.51.100.1", "198.51.0.0/16", "2001:db8::/32"] {
            let rule = Rule::Protect {
                destination: cidr.parse().expect("cidr"),
            };
            let err = add_rule(&config(), rule, None).expect_err("refused");
            assert!(
                matches!(err, FirewallError::ProtectsProxy { .. }),
                "{cidr}: {err}"
            );
            assert!(err.to_string().contains("cut every client off"), "{err}");
        }
    }

    #[test]
    fn protecting_a_lab_host_passes_the_proxy_check() {
        let rule = Rule::Protect {
            destination: "10.20.0.5".parse().expect("cidr"),
        };
        // Gets past the check and fails only on the missing pin root.
        let err = add_rule(&config(), rule, None).expect_err("no filter pinned here");
        assert!(!matches!(err, FirewallError::ProtectsProxy { .. }), "{err}");
    }
}

//! The XDP WAN filter: loading, attaching, pinning and rule maps.
//!
//! [`Firewall::start`] loads the embedded object with its maps pinned under
//! `<pin_root>/maps` (reusing them when they exist, so rules and counters
//! survive a restart), writes the configuration and the state file's rules
//! into them, and attaches both programs so that they stay when the daemon
//! stops. [`control`] holds the operations of `befundctl fw`, which work on
//! the pinned maps whether the daemon runs or not.

pub mod attach;
pub mod control;
mod error;
pub mod interface;
pub mod maps;
pub mod rules;
pub mod slots;
pub mod state;

use std::{collections::BTreeMap, net::IpAddr, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    programs::{SchedClassifier, Xdp},
};
use befund_common::{
    COUNTER_SLOTS, FIXED_SLOT_NAMES, FilterSettings, LOCAL_GATEWAY, MAX_PROXY_ADDRESSES, names,
    programs,
};
use tracing::{info, warn};

pub use self::{
    attach::{EgressAttach, XdpAttach},
    error::{FirewallError, LinkOrPinError},
    maps::{FilterMaps, SlotCounter},
    rules::{AllowRule, Origin, Protocol, Rule, RuleSet},
    state::{FirewallState, StateError},
};
use self::{interface::Interface, maps::MAP_NAMES, state::StateLock};
use crate::{cidr::mapped, config::FirewallConfig, config::firewall::XdpMode};

/// The compiled filter object, embedded at build time.
pub static FILTER_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/befund-filter"));

/// The running filter as the daemon holds it.
pub struct Firewall {
    config: FirewallConfig,
    maps: FilterMaps,
    /// The loaded object; kept so its program and map descriptors stay valid
    /// for the daemon's lifetime (the attachments do not depend on it).
    _object: Ebpf,
}

/// What [`Firewall::start`] did, for the start-up log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartReport {
    /// The XDP attachment.
    pub xdp: XdpAttach,
    /// The egress attachment.
    pub egress: EgressAttach,
    /// Rules in force.
    pub rules: usize,
    /// Local addresses written.
    pub local_addresses: usize,
    /// Whether lockdown is on (from the configuration or `befundctl`).
    pub lockdown: bool,
}

/// What [`apply`] wrote.
struct Applied {
    rules: usize,
    local_addresses: usize,
    lockdown: bool,
}

/// One counter slot with what it counts.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NamedCounter {
    /// The slot.
    pub slot: u32,
    /// A fixed verdict (`default_drop`, `proxy`, ...) or a rule (`block
    /// 203.0.113.0/24`).
    pub name: String,
    /// Whether the slot belongs to an operator rule.
    pub rule: bool,
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
}

impl Firewall {
    /// Loads, configures and attaches the filter as `config` says, keeping
    /// (and atomically replacing) a filter that an earlier run left pinned.
    ///
    /// # Errors
    ///
    /// [`FirewallError`] naming what failed and what to do. When an error
    /// occurs after a filter was pinned, that filter stays in place.
    pub fn start(config: &FirewallConfig) -> Result<(Self, StartReport), FirewallError> {
        let iface = lookup_interface(&config.interface)?;
        attach::prepare_pin_root(&config.pin_root)?;
        if config.xdp_mode == XdpMode::Skb {
            warn!(
                interface = %config.interface,
                "attaching the filter in skb (generic) mode: slower than native mode, use it \
                 only for drivers without native XDP"
            );
        }

        let plan = attach::plan_xdp(&config.pin_root, &iface, config.xdp_mode)?;
        let mut object = load_object(&config.pin_root)?;
        let mut maps = FilterMaps::open(&config.pin_root)?;
        let lock = StateLock::acquire(&config.state_file)?;
        let mut state = lock.load()?;
        let applied = apply(&mut maps, config, &mut state, &iface)?;
        lock.save(&state)?;
        drop(lock);

        let egress: &mut SchedClassifier = program(&mut object, programs::WAN_EGRESS)?;
        let egress = attach::attach_egress(egress, &config.interface)?;
        let xdp: &mut Xdp = program(&mut object, programs::WAN_INGRESS)?;
        let xdp = attach::attach_xdp(xdp, plan, &config.pin_root, &iface, config.xdp_mode)?;

        let report = StartReport {
            xdp,
            egress,
            rules: applied.rules,
            local_addresses: applied.local_addresses,
            lockdown: applied.lockdown,
        };
        let firewall = Self {
            config: config.clone(),
            maps,
            _object: object,
        };
        Ok((firewall, report))
    }

    /// Applies a changed `[firewall]` section: settings, local addresses and
    /// rules. The interface, mode and pin root change only with a restart.
    ///
    /// # Errors
    ///
    /// [`FirewallError::NeedsRestart`] for those keys (nothing is changed);
    /// otherwise the first map or state error.
    pub fn reload(&mut self, config: &FirewallConfig) -> Result<usize, FirewallError> {
        let prepared = self.prepare(config)?;
        self.commit(prepared)
    }

    /// Checks a changed `[firewall]` section and works out what to write,
    /// without changing anything: the interface exists, the state file can
    /// be read and locked, every rule gets a counter slot. The state file
    /// stays locked until the result is committed or dropped.
    ///
    /// # Errors
    ///
    /// [`FirewallError::NeedsRestart`] for a changed interface, mode or pin
    /// root; interface, state and slot errors.
    pub fn prepare(&self, config: &FirewallConfig) -> Result<PreparedFirewall, FirewallError> {
        for (key, changed) in [
            ("interface", config.interface != self.config.interface),
            ("xdp_mode", config.xdp_mode != self.config.xdp_mode),
            ("pin_root", config.pin_root != self.config.pin_root),
        ] {
            if changed {
                return Err(FirewallError::NeedsRestart { key });
            }
        }
        let iface = lookup_interface(&config.interface)?;
        let lock = StateLock::acquire(&config.state_file)?;
        let mut state = lock.load()?;
        let plan = plan(config, &mut state, &iface)?;
        Ok(PreparedFirewall {
            config: config.clone(),
            lock,
            state,
            plan,
        })
    }

    /// Writes a prepared change into the maps and the state file.
    ///
    /// # Errors
    ///
    /// The first map or state error; the maps may then hold part of the
    /// change (new rules go in before stale ones come out).
    pub fn commit(&mut self, prepared: PreparedFirewall) -> Result<usize, FirewallError> {
        let PreparedFirewall {
            config,
            lock,
            state,
            plan,
        } = prepared;
        let applied = write(&mut self.maps, &plan)?;
        lock.save(&state)?;
        self.config = config;
        info!(
            rules = applied.rules,
            local_addresses = applied.local_addresses,
            lockdown = applied.lockdown,
            "firewall configuration reloaded"
        );
        Ok(applied.rules)
    }

    /// Every counter slot in use, named.
    ///
    /// # Errors
    ///
    /// The map error.
    pub fn counters(&self) -> Result<Vec<NamedCounter>, FirewallError> {
        named_counters(&self.maps)
    }

    /// Whether the maps can be read through the descriptors held (used to
    /// probe which capabilities the daemon must keep).
    pub fn maps_usable(&self) -> bool {
        self.maps.settings().is_ok()
    }

    /// The configuration in force.
    pub fn config(&self) -> &FirewallConfig {
        &self.config
    }
}

fn lookup_interface(name: &str) -> Result<Interface, FirewallError> {
    interface::by_name(name)
        .map_err(|source| FirewallError::Netlink {
            operation: "look up interfaces",
            source,
        })?
        .ok_or_else(|| FirewallError::UnknownInterface {
            name: name.to_owned(),
        })
}

fn load_object(pin_root: &Path) -> Result<Ebpf, FirewallError> {
    unpin_outdated_settings(pin_root)?;
    let paths: Vec<_> = MAP_NAMES
        .iter()
        .map(|name| (*name, maps::map_path(pin_root, name)))
        .collect();
    let mut loader = EbpfLoader::new();
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut object = loader
        .load(FILTER_OBJECT)
        .map_err(|source| FirewallError::Load {
            pin_root: pin_root.to_path_buf(),
            source: Box::new(source),
        })?;
    for name in MAP_NAMES {
        if object.map(name).is_none() {
            return Err(FirewallError::MissingInObject { kind: "map", name });
        }
    }
    load_program::<Xdp>(&mut object, programs::WAN_INGRESS)?;
    load_program::<SchedClassifier>(&mut object, programs::WAN_EGRESS)?;
    Ok(object)
}

/// A settings map pinned by a filter with another settings layout cannot
/// serve this one (the kernel would reject the program); it is unpinned so
/// that loading creates a new one, which [`apply`] then writes in full.
fn unpin_outdated_settings(pin_root: &Path) -> Result<(), FirewallError> {
    let path = maps::map_path(pin_root, names::SETTINGS);
    if !path.exists() {
        return Ok(());
    }
    let map_err = |operation| {
        move |source| FirewallError::Map {
            operation,
            map: names::SETTINGS,
            source: Box::new(source),
        }
    };
    let data = aya::maps::MapData::from_pin(&path).map_err(map_err("open the pinned"))?;
    let value_size = data
        .info()
        .map_err(map_err("inspect the pinned"))?
        .value_size();
    if usize::try_from(value_size).ok() == Some(std::mem::size_of::<FilterSettings>()) {
        return Ok(());
    }
    info!(
        path = %path.display(),
        "replacing the pinned filter settings of an older layout"
    );
    std::fs::remove_file(&path).map_err(|source| FirewallError::PinRoot {
        operation: "remove the outdated settings map",
        path,
        source,
    })
}

trait Loadable {
    fn load_into_kernel(&mut self) -> Result<(), aya::programs::ProgramError>;
}

impl Loadable for Xdp {
    fn load_into_kernel(&mut self) -> Result<(), aya::programs::ProgramError> {
        self.load()
    }
}

impl Loadable for SchedClassifier {
    fn load_into_kernel(&mut self) -> Result<(), aya::programs::ProgramError> {
        self.load()
    }
}

fn program<'a, P>(object: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, FirewallError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program>,
{
    object
        .program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or(FirewallError::MissingInObject {
            kind: "program",
            name,
        })
}

fn load_program<P: Loadable>(object: &mut Ebpf, name: &'static str) -> Result<(), FirewallError>
where
    for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program>,
{
    program::<P>(object, name)?
        .load_into_kernel()
        .map_err(|source| FirewallError::LoadProgram {
            program: name,
            source: Box::new(source),
        })
}

/// A checked `[firewall]` section with everything worked out that
/// [`Firewall::commit`] writes; holds the state file's lock.
pub struct PreparedFirewall {
    config: FirewallConfig,
    lock: StateLock,
    state: FirewallState,
    plan: Plan,
}

/// What goes into the maps.
struct Plan {
    wanted: BTreeMap<Rule, u32>,
    fresh_slots: Vec<u32>,
    local: BTreeMap<[u8; 16], u32>,
    settings: FilterSettings,
}

/// Writes settings, local addresses and rules (configuration plus state)
/// into the maps, assigning counter slots.
fn apply(
    maps: &mut FilterMaps,
    config: &FirewallConfig,
    state: &mut FirewallState,
    iface: &Interface,
) -> Result<Applied, FirewallError> {
    let plan = plan(config, state, iface)?;
    write(maps, &plan)
}

/// Works out the rules with their slots (assigning new ones in `state`),
/// the local addresses and the settings.
fn plan(
    config: &FirewallConfig,
    state: &mut FirewallState,
    iface: &Interface,
) -> Result<Plan, FirewallError> {
    let set = RuleSet::combine(config, state);
    state.slots.retain(|r| set.rules.contains_key(r));
    let mut wanted = BTreeMap::new();
    let mut fresh_slots = Vec::new();
    for rule in set.rules.keys() {
        let assigned = state.slots.assign(*rule)?;
        if assigned.fresh {
            fresh_slots.push(assigned.slot);
        }
        wanted.insert(*rule, assigned.slot);
    }
    let own = interface::addresses(iface.index).map_err(|source| FirewallError::Netlink {
        operation: "list the interface's addresses",
        source,
    })?;
    Ok(Plan {
        wanted,
        fresh_slots,
        local: local_addresses(&config.proxy_addresses, &own),
        settings: settings(config, set.lockdown.0),
    })
}

fn write(maps: &mut FilterMaps, plan: &Plan) -> Result<Applied, FirewallError> {
    for slot in &plan.fresh_slots {
        maps.zero_counter(*slot)?;
    }
    maps.sync_rules(&plan.wanted)?;
    maps.sync_local(&plan.local)?;
    maps.set_settings(&plan.settings)?;
    Ok(Applied {
        rules: plan.wanted.len(),
        local_addresses: plan.local.len(),
        lockdown: plan.settings.lockdown != 0,
    })
}

/// The local-address map: every address of the gateway, the proxy's
/// included, receives path-MTU messages. (The proxy's addresses themselves
/// are in the settings.)
fn local_addresses(proxy: &[IpAddr], own: &[IpAddr]) -> BTreeMap<[u8; 16], u32> {
    own.iter()
        .chain(proxy)
        .map(|addr| (mapped(*addr), LOCAL_GATEWAY))
        .collect()
}

/// The settings for `config`; the entry counts are left to
/// [`FilterMaps::set_settings`].
fn settings(config: &FirewallConfig, lockdown: bool) -> FilterSettings {
    let secs = |d: std::time::Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    let mut settings = FilterSettings {
        proxy_port: config.proxy_port,
        lockdown: u32::from(lockdown),
        tcp_flow_timeout_secs: secs(config.tcp_flow_timeout),
        udp_flow_timeout_secs: secs(config.udp_flow_timeout),
        ..FilterSettings::default()
    };
    set_proxy_addresses(&mut settings, &config.proxy_addresses);
    settings
}

/// The proxy addresses listed in `settings`, IPv4 first.
pub fn proxy_addresses(settings: &FilterSettings) -> Vec<IpAddr> {
    let v4 = settings
        .proxy_ipv4
        .iter()
        .take(usize::from(settings.proxy_ipv4_count))
        .map(|w| IpAddr::from(w.to_ne_bytes()));
    let v6 = settings
        .proxy_ipv6
        .iter()
        .take(usize::from(settings.proxy_ipv6_count))
        .map(|words| {
            let mut octets = [0u8; 16];
            for (chunk, word) in octets.chunks_exact_mut(4).zip(words) {
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            IpAddr::from(octets)
        });
    v4.chain(v6).collect()
}

/// Lists `proxy` in `settings` as the filter compares them: by family, an
/// IPv4-mapped address as IPv4, each address once. Addresses beyond
/// [`MAX_PROXY_ADDRESSES`] of a family are left out; the configuration's
/// validation refuses them.
pub fn set_proxy_addresses(settings: &mut FilterSettings, proxy: &[IpAddr]) {
    let (v4, v6) = crate::cidr::split_proxy_addresses(proxy);
    settings.proxy_ipv4 = [0; MAX_PROXY_ADDRESSES];
    settings.proxy_ipv6 = [[0; 4]; MAX_PROXY_ADDRESSES];
    for (slot, addr) in settings.proxy_ipv4.iter_mut().zip(&v4) {
        *slot = u32::from_ne_bytes(addr.octets());
    }
    for (slot, addr) in settings.proxy_ipv6.iter_mut().zip(&v6) {
        let o = addr.octets();
        let word = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
        *slot = [word(0), word(4), word(8), word(12)];
    }
    let count = |n: usize| u16::try_from(n.min(MAX_PROXY_ADDRESSES)).unwrap_or(0);
    settings.proxy_ipv4_count = count(v4.len());
    settings.proxy_ipv6_count = count(v6.len());
}

/// The fixed slots, every slot owned by a rule in the maps, and any other
/// slot that counted something.
pub(crate) fn named_counters(maps: &FilterMaps) -> Result<Vec<NamedCounter>, FirewallError> {
    let by_slot: BTreeMap<u32, Rule> = maps.rules().into_iter().map(|(r, s)| (s, r)).collect();
    let fixed: BTreeMap<u32, &str> = FIXED_SLOT_NAMES.into_iter().collect();
    Ok(maps
        .counters()?
        .into_iter()
        .filter(|c| c.slot < COUNTER_SLOTS)
        .filter_map(
            |SlotCounter {
                 slot,
                 packets,
                 bytes,
             }| {
                let (name, rule) = if let Some(name) = fixed.get(&slot) {
                    ((*name).to_owned(), false)
                } else if let Some(rule) = by_slot.get(&slot) {
                    (rule.to_string(), true)
                } else if packets > 0 {
                    (format!("slot {slot} (no rule)"), false)
                } else {
                    return None;
                };
                Some(NamedCounter {
                    slot,
                    name,
                    rule,
                    packets,
                    bytes,
                })
            },
        )
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_addresses_are_gateway_addresses() {
        let proxy: IpAddr = "192.0.2.10".parse().unwrap();
        let own: IpAddr = "192.0.2.1".parse().unwrap();
        let local = local_addresses(&[proxy], &[own, proxy]);
        assert_eq!(local[&mapped(proxy)], LOCAL_GATEWAY);
        assert_eq!(local[&mapped(own)], LOCAL_GATEWAY);
        assert_eq!(local.len(), 2);
    }

    #[test]
    fn settings_carry_port_lockdown_and_timeouts_in_seconds() {
        let config = crate::config::firewall::parse_section(
            Path::new("t.toml"),
            "[firewall]\ninterface = \"wan0\"\nproxy_addresses = [\"192.0.2.10\"]\n\
             proxy_port = 8443\ntcp_flow_timeout = \"2m\"\nudp_flow_timeout = \"20s\"\n",
        )
        .unwrap();
        assert_eq!(
            settings(&config, true),
            FilterSettings {
                proxy_port: 8443,
                reserved: 0,
                lockdown: 1,
                tcp_flow_timeout_secs: 120,
                udp_flow_timeout_secs: 20,
                proxy_ipv4_count: 1,
                proxy_ipv4: [u32::from_ne_bytes([192, 0, 2, 10]), 0, 0, 0],
                ..FilterSettings::default()
            }
        );
    }

    #[test]
    fn settings_list_proxy_addresses_by_family_and_mapped_ones_as_ipv4() {
        let config = crate::config::firewall::parse_section(
            Path::new("t.toml"),
            "[firewall]\ninterface = \"wan0\"\n\
             proxy_addresses = [\"2001:db8::10\", \"::ffff:192.0.2.11\", \"192.0.2.10\"]\n",
        )
        .unwrap();
        let s = settings(&config, false);
        assert_eq!((s.proxy_ipv4_count, s.proxy_ipv6_count), (2, 1));
        let listed: Vec<String> = proxy_addresses(&s)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(listed, ["192.0.2.11", "192.0.2.10", "2001:db8::10"]);
        assert_eq!(
            s.proxy_ipv4[..2],
            [
                u32::from_ne_bytes([192, 0, 2, 11]),
                u32::from_ne_bytes([192, 0, 2, 10])
            ]
        );
        assert_eq!(
            s.proxy_ipv6[0],
            [
                u32::from_ne_bytes([0x20, 0x01, 0x0d, 0xb8]),
                0,
                0,
                u32::from_ne_bytes([0, 0, 0, 0x10])
            ]
        );
    }
}
